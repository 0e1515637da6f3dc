//! How a shard replica starts from what its node's storage held (spec §8.5, "Rejoining
//! without state"), as one pure decision that the node and the simulator both make.
//!
//! A replica may act on its Raft state (vote, acknowledge, lead) only if that state is the
//! one it persisted before everything it ever sent. Anything else — no files at all (durability
//! `memory`, a replaced disk, an emptied or mistyped `--data-dir`, another `HOME`), files a
//! shard is missing, or a rejoin that a crash cut short — is *no state*, and a replica with
//! no state must rejoin by the rule of spec §8.5 before it votes or acknowledges anything,
//! whatever the node's durability. Starting such a replica afresh instead is issue 7's item
//! 1: it could vote again in a term it already voted in, or help a node that lacks an
//! acknowledged entry to win an election, and an acknowledged grant is lost.
//!
//! ```text
//!   storage at start                         new_cluster   start
//!   ---------------------------------------  -----------   -------------------------------
//!   anything, last written by an `os` run      (any)       Rejoin   (a power loss may have
//!     in another boot of the machine                                  dropped any of it)
//!   the shard's files, not marked              (any)       Restore: its persisted state
//!   marked "rejoin"                            (any)       Rejoin   (Raft::rejoin)
//!   marked "new"                               (any)       New      (Raft::start_new: a
//!                                                                   first start cut short)
//!   nothing, in a directory that holds         yes         New
//!     nothing at all (or durability memory)    no          Rejoin
//!   nothing, in a directory that held the      (any)       Rejoin   (files lost since)
//!     node before
//! ```
//!
//! A node of a joined cluster (spec §8.1) holds the replicas of some shards only, created when
//! a leader adds it ([`Start::Fresh`]); so a shard it has no trustworthy state of is simply
//! not held, never rejoined ([`decide_joined`]); the shell deletes whatever files it had:
//!
//! ```text
//!   storage at start (joined cluster)          start
//!   -----------------------------------------  ------------------------------------------
//!   anything, last written by an `os` run      not held (files deleted)
//!     in another boot of the machine
//!   the shard's files, not marked              Restore: its persisted state
//!   marked "rejoin" or "new" (a start or a     not held (files deleted)
//!     creation cut short)
//!   nothing                                    not held
//!   nothing in new storage, or marked "new",   New (every shard: `--bootstrap`, a new
//!     with `new_cluster` (the bootstrap          cluster, whose only voter it is; as
//!     node's first start)                        `decide` says)
//! ```
//!
//! A replica that was a voter and is not held after a restart is named by its shard's
//! configuration with its old replica id: a leader sees a crashed voter, and the fresh
//! replica it may later make this node create is a new server (spec §8.5).
//!
//! *New* (spec §8.5 rule 6) is the operator's word (`--new-cluster`) that empty storage is a
//! first start rather than a loss; a directory that says this node was in the cluster (its
//! identity, or any shard's files) never makes a shard new. A new replica still asks every
//! other node and starts fresh only if every one of them answers that it holds no state
//! beyond term 0; next to a running cluster it rejoins like any replica without state, so the
//! flag is safe to leave in a unit file.
//!
//! A shard marked "new" stays new on every later start, flag or no flag, until it stops
//! asking: the mark is the storage's own record that the replica never held state and that
//! the operator let the start that wrote it create the cluster, and that first start is not
//! over. Its operator may well have removed the flag since (the first start is what it was
//! for). Were such a replica to rejoin instead, a first start cut short could never end: in
//! `udplock sim --seed 798 --nodes 3`, node 1 stopped while its replica of a shard was still
//! asking, and so was node 2's, node 3's having started fresh; node 1's rejoining replica
//! waited for two TERM_REPLYs, of which node 2's (asking) never came, and node 2's waited for
//! node 1's to say "new": no leader, ever. Rule 6's safety does not rest on the `new` bit
//! (every answer it counts comes from a node holding nothing beyond term 0, `new` or not);
//! the bit is the operator's consent, which this replica was given.
//!
//! While a replica is recovering, its storage carries a [`Mark`] ([`mark`] says which), so
//! that a crash before it has rejoined makes the next start rejoin again instead of trusting
//! files written meanwhile. A mark is set before the state it covers is persisted and
//! removed only after the recovered state is.
//!
//! # Power loss under durability `os` ([`Boot`])
//!
//! Durability `os` writes to the page cache and never waits for the disk: a process crash
//! loses nothing (the kernel still holds every write), but a power loss (or a kernel crash)
//! may leave the files holding anything older than what the node acknowledged — a vote
//! forgotten, acknowledged entries gone — which is *no state*, not the replica's state. The
//! machine's boot id (`/proc/sys/kernel/random/boot_id`, new at every boot) tells the two
//! apart: an `os` run records it in the data directory (synced) before it writes anything,
//! and a start that finds a record of another boot — or cannot tell, because either id is
//! unknown — does not trust a byte of the files: every shard rejoins. A start in this same
//! boot trusts them, as after any process crash. So `os` survives the power loss of a
//! minority of the nodes at a time, like the loss of a minority's disks; a power loss of a
//! majority loses what they alone held, and the shards wait for an operator (spec §8.5).
//!
//! An `fsync` run needs no record: what it wrote is on the disk before anything leaves. One
//! that starts on files an `os` run wrote in this same boot first syncs them (they are then
//! as good as its own), then removes the record; after a reboot it rejoins like an `os` run
//! (and removes the record once the shards are marked).

use std::sync::Arc;

use crate::core::raft::{Entry, HardState, Raft, SnapshotMeta};
use crate::core::replica::{self, Replica};
use crate::core::time::Instant;

/// What a shard's storage says about a replica that does not hold its state yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mark {
    /// No state, and never any: it may help create the cluster (spec §8.5 rule 6).
    New,
    /// No state it can trust: it rejoins by the rule. Stronger than `New` (a replica that has
    /// learned that the cluster holds state is no longer new).
    Rejoin,
}

/// What the storage held for one shard when the node started.
#[derive(Clone, Debug)]
pub enum Found {
    /// The shard's files, not marked: its persisted state (term 0 and nothing else for a
    /// replica that never heard from anyone).
    Files {
        hard: HardState,
        snapshot: Option<(SnapshotMeta, Arc<Vec<u8>>)>,
        log: Vec<Entry>,
    },
    /// The shard's mark: it was recovering when the node stopped.
    Marked(Mark),
    /// No file of the shard at all.
    Nothing,
}

/// Whether a data directory's files hold everything the node wrote to them (see the module
/// docs, "Power loss under durability `os`").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Boot {
    /// They do: no `os` run wrote to them since they were last synced, or one did during this
    /// boot of the machine, whose page cache still holds its every write.
    Kept,
    /// An `os` run wrote to them during another boot, or one this node cannot tell: a power
    /// loss in between may have dropped any of those writes.
    Changed,
}

/// Compares the boot id an `os` run recorded in the data directory (`recorded`; `None`: no
/// record, no `os` run wrote since the files were last synced) with the machine's current
/// one (`current`; `None`: unknown). An empty or unknown id never matches: a node that cannot
/// tell a reboot from a process crash must assume the reboot.
pub fn boot(recorded: Option<&str>, current: Option<&str>) -> Boot {
    match (recorded, current) {
        (None, _) => Boot::Kept,
        (Some(recorded), Some(current)) if !recorded.is_empty() && recorded == current => {
            Boot::Kept
        }
        (Some(_), _) => Boot::Changed,
    }
}

/// How a replica starts.
#[derive(Clone, Debug)]
pub enum Start {
    /// From its persisted state.
    Restore {
        hard: HardState,
        snapshot: Option<(SnapshotMeta, Arc<Vec<u8>>)>,
        log: Vec<Entry>,
    },
    /// Without state: it rejoins by the rule (spec §8.5 rules 1 to 5).
    Rejoin,
    /// Without state, as a new replica (spec §8.5 rule 6).
    New,
    /// Without state, as a replica a leader is adding to a joined cluster's shard (spec
    /// §8.1, "Replicas on demand"): a new server (thesis §4.2.1) that takes part at once,
    /// without asking anyone first (rule 6 is about new clusters): it is a learner until a
    /// leader promotes it, and safe because counting checks replica ids (spec §8.5). Term
    /// 0, an empty log: what a brand-new replica holds.
    Fresh,
}

impl Start {
    /// The mark a replica starting this way needs before it sends anything (`None`: its
    /// state is its own).
    pub fn mark(&self) -> Option<Mark> {
        match self {
            Start::Restore { .. } => None,
            Start::Rejoin => Some(Mark::Rejoin),
            Start::New => Some(Mark::New),
            // Until its configuration names its node (the node marks it meanwhile).
            Start::Fresh => Some(Mark::Rejoin),
        }
    }
}

/// The decision of the table in the module docs. `storage_new`: the node's storage holds
/// nothing at all — no identity, no shard's files, no mark — which is what a first start
/// sees (and every start of a `memory` node). `new_cluster`: the operator let this start
/// create the cluster (`--new-cluster`). `boot`: what the directory's boot record says
/// ([`boot`]; `Kept` without a directory); with `Changed` nothing the storage holds counts,
/// so the shell need not read the shard's files (`found` is then ignored).
pub fn decide(found: Found, storage_new: bool, new_cluster: bool, boot: Boot) -> Start {
    if boot == Boot::Changed {
        // Files a power loss may have cut short: no state (nor a trustworthy "new" mark).
        return Start::Rejoin;
    }
    match found {
        Found::Files {
            hard,
            snapshot,
            log,
        } => Start::Restore {
            hard,
            snapshot,
            log,
        },
        // A first start cut short, with or without the flag now (module docs).
        Found::Marked(Mark::New) => Start::New,
        Found::Marked(Mark::Rejoin) => Start::Rejoin,
        Found::Nothing if storage_new && new_cluster => Start::New,
        Found::Nothing => Start::Rejoin,
    }
}

/// The decision for a node of a joined cluster (spec §8.1; the table "Joined clusters" in
/// the module docs): `None` where the node holds no replica of the shard, and the shell
/// deletes whatever files it has of it. Only unmarked files a trusted boot kept are the
/// replica's state; anything else is no replica at all, never a rejoin: a leader that wants
/// this node in the shard adds it again, and the replica it then creates is a new server
/// ([`Start::Fresh`]), which replica ids make safe (spec §8.5). The one exception is the
/// bootstrap node's first start (`storage_new` and `new_cluster`: `--bootstrap`), which
/// creates every shard ([`Start::New`]).
pub fn decide_joined(
    found: Found,
    storage_new: bool,
    new_cluster: bool,
    boot: Boot,
) -> Option<Start> {
    if new_cluster && boot == Boot::Kept {
        // The bootstrap node's first start, or one cut short before its shards had started
        // (marked new): as `decide` says.
        if let start @ Start::New = decide(found.clone(), storage_new, true, boot) {
            return Some(start);
        }
    }
    match (boot, found) {
        (
            Boot::Kept,
            Found::Files {
                hard,
                snapshot,
                log,
            },
        ) => Some(Start::Restore {
            hard,
            snapshot,
            log,
        }),
        // A power loss may have cut its files short, a start or a creation was cut short,
        // or there is nothing: not held.
        (Boot::Changed, _) | (_, Found::Marked(_)) | (_, Found::Nothing) => None,
    }
}

/// The mark a running replica's storage must carry: `Some` while it is still recovering.
pub fn mark(raft: &Raft) -> Option<Mark> {
    if !raft.rejoining() {
        None
    } else if raft.asking_as_new() {
        Some(Mark::New)
    } else {
        Some(Mark::Rejoin)
    }
}

impl Replica {
    /// A replica as [`decide`] says. `Err` if a persisted snapshot does not decode.
    pub fn start(
        config: replica::Config,
        rng_seed: u64,
        start: Start,
        now: Instant,
    ) -> Result<Replica, String> {
        match start {
            Start::Restore {
                hard,
                snapshot,
                log,
            } => Replica::restore(config, rng_seed, hard, snapshot, log, now),
            Start::Rejoin => Ok(Replica::rejoin(config, rng_seed, now)),
            Start::New => Ok(Replica::start_new(config, rng_seed, now)),
            Start::Fresh => Ok(Replica::new(
                config,
                rng_seed,
                HardState::default(),
                Vec::new(),
                now,
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> Found {
        Found::Files {
            hard: HardState::default(),
            snapshot: None,
            log: Vec::new(),
        }
    }

    #[test]
    fn only_storage_that_never_held_anything_can_start_new() {
        for new_cluster in [false, true] {
            // Files, even empty ones, are the replica's own state.
            assert!(matches!(
                decide(files(), true, new_cluster, Boot::Kept),
                Start::Restore { .. }
            ));
            assert!(matches!(
                decide(Found::Marked(Mark::Rejoin), true, new_cluster, Boot::Kept),
                Start::Rejoin
            ));
            // Files lost from a directory that held the node before: never new.
            assert!(matches!(
                decide(Found::Nothing, false, new_cluster, Boot::Kept),
                Start::Rejoin
            ));
        }
        // An empty directory (or memory) is a rejoin unless the operator says "new cluster".
        assert!(matches!(
            decide(Found::Nothing, true, false, Boot::Kept),
            Start::Rejoin
        ));
        assert!(matches!(
            decide(Found::Nothing, true, true, Boot::Kept),
            Start::New
        ));
        assert!(matches!(
            decide(Found::Marked(Mark::New), false, true, Boot::Kept),
            Start::New
        ));
        // A first start cut short stays new once the operator removed the flag (module
        // docs; `udplock sim --seed 798 --nodes 3`).
        assert!(matches!(
            decide(Found::Marked(Mark::New), false, false, Boot::Kept),
            Start::New
        ));
        assert!(Mark::Rejoin > Mark::New);
    }

    /// The joined-cluster table of the module docs: only unmarked files of a trusted boot
    /// are held; nothing ever rejoins; the bootstrap node's first start creates.
    #[test]
    fn a_joined_node_holds_only_the_shards_whose_files_it_trusts() {
        for storage_new in [false, true] {
            for new_cluster in [false, true] {
                let held = |found: Found, boot| {
                    let start = decide_joined(found, storage_new, new_cluster, boot);
                    assert!(
                        !matches!(start, Some(Start::Rejoin | Start::Fresh)),
                        "{start:?}"
                    );
                    start
                };
                assert!(matches!(
                    held(files(), Boot::Kept),
                    Some(Start::Restore { .. }) | Some(Start::New)
                ));
                assert!(held(files(), Boot::Changed).is_none(), "a power loss");
                assert!(held(Found::Marked(Mark::Rejoin), Boot::Kept).is_none());
                assert!(held(Found::Nothing, Boot::Changed).is_none());
                let first_start = storage_new && new_cluster;
                assert_eq!(
                    held(Found::Nothing, Boot::Kept).is_some(),
                    first_start,
                    "storage_new {storage_new}, new_cluster {new_cluster}"
                );
                assert_eq!(
                    held(Found::Marked(Mark::New), Boot::Kept).is_some(),
                    new_cluster,
                    "a first start cut short"
                );
            }
        }
        assert!(matches!(
            decide_joined(files(), false, false, Boot::Kept),
            Some(Start::Restore { .. })
        ));
    }

    #[test]
    fn files_an_os_run_wrote_in_another_boot_are_never_trusted() {
        let this = Some("6c7d-this-boot");
        assert_eq!(boot(None, this), Boot::Kept, "no record: fsync runs only");
        assert_eq!(boot(None, None), Boot::Kept);
        assert_eq!(boot(this, this), Boot::Kept, "a process crash in this boot");
        assert_eq!(boot(Some("earlier-boot"), this), Boot::Changed);
        // Unknown on either side: assume the reboot.
        assert_eq!(boot(this, None), Boot::Changed);
        assert_eq!(boot(Some(""), Some("")), Boot::Changed);
        for new_cluster in [false, true] {
            for storage_new in [false, true] {
                for found in [files(), Found::Marked(Mark::New), Found::Nothing] {
                    let kept = decide(found.clone(), storage_new, new_cluster, Boot::Kept);
                    let changed = decide(found, storage_new, new_cluster, Boot::Changed);
                    assert!(
                        matches!(changed, Start::Rejoin),
                        "{changed:?}, else {kept:?}"
                    );
                }
            }
        }
        // The same files in the same boot restore.
        assert!(matches!(
            decide(files(), false, false, Boot::Kept),
            Start::Restore { .. }
        ));
    }
}
