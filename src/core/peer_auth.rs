//! Authentication of node-to-node datagrams (spec §8.11), as a pure core: which key a
//! datagram for a peer is sealed with and what its trailer says, and whether a datagram
//! received from a listed peer is accepted or dropped, and why.
//!
//! The codec lays the trailer out and computes the MAC (`udplock_protocol::auth`); this core
//! decides. It holds no clock and draws no randomness: the node's incarnation (the wall clock
//! in µs at start, read by the shell) and the keys (read from the key file by the shell) are
//! passed in.
//!
//! # Sending
//! The shell asks [`PeerAuth::trailer_room`] how much room to keep at the end of a datagram
//! for node `to` (`PeerWriter::with_trailer_room`), encodes it, and hands it to
//! [`PeerAuth::seal`], which appends the trailer: `to`, this node's incarnation, the
//! incarnation `to` was last seen with (0 before any), the next number of one counter that
//! numbers every authenticated datagram this node sends, and the MAC. A node whose key set
//! sends with *none* leaves its datagrams unauthenticated — except to a peer that last
//! authenticated its own datagrams with a key this node accepts (see "Turning keys on").
//!
//! # Receiving
//! [`PeerAuth::check`] runs after the decode and the shell's cluster-id, listed-sender and
//! source-address checks, and before any shard or settings state is touched. In order (spec
//! §8.11):
//!
//! 1. AUTH clear: accepted only if the key set accepts *none*, else [`AuthDrop::Unauthenticated`].
//!    AUTH set: `key_id` must name an accepted key ([`AuthDrop::UnknownKey`]), and the MAC
//!    must verify with it ([`AuthDrop::BadMac`]).
//! 2. `to` must be this node ([`AuthDrop::WrongReceiver`]).
//! 3. `incarnation` below the highest seen from the sender: [`AuthDrop::OldIncarnation`].
//!    Above it: the sender restarted; remember it, with a fresh replay window.
//! 4. `peer_incarnation` must be this node's incarnation ([`AuthDrop::StaleReceiver`]); if it
//!    is above it, this node's clock went back across a restart, and its incarnation is raised
//!    above it (the datagram is still dropped). Step 3 has already learned the sender's
//!    incarnation, so after either end restarts one exchange brings them back in step.
//! 5. `seq` against the sender's sliding replay window of [`REPLAY_WINDOW`] datagrams
//!    (RFC 6479): older than the window, [`AuthDrop::TooOld`]; seen, [`AuthDrop::Replayed`];
//!    else marked seen.
//!
//! Only the authentication state (incarnations, windows, counters) changes before a datagram
//! is accepted.
//!
//! # Turning keys on
//! A cluster without keys turns them on in three steps of its key files (README, "Securing a
//! cluster"): `none` + K everywhere, then K + `none` everywhere, then K. In the middle step a
//! node that already sends with K reaches a node that still sends with *none*; that node
//! learns the sender's incarnation (step 3) but drops the datagram (step 4: it carries
//! `peer_incarnation` 0, since unauthenticated datagrams carry no incarnation to learn). If
//! it went on answering unauthenticated, the sender would never learn its incarnation and
//! would stay cut off until the other node swapped too. So a node that sends with *none*
//! seals its datagrams to a peer with the key that peer last authenticated with, if this node
//! accepts that key: the peer accepts it too (a node always accepts the key it sends with),
//! and the two are in step after one exchange. This only ever adds authentication. Turning
//! keys off, the last step (`none` alone) costs one exchange the other way: a peer still
//! answers with the key until it hears this node send unauthenticated, and those answers are
//! dropped ([`AuthDrop::UnknownKey`]) meanwhile. (Spec §8.11.4 says a node that sends with
//! *none* sends unauthenticated; this exception is proposed for it.)

use udplock_protocol::{AuthTrailer, ClusterKey, AUTH_TRAILER_LEN};

use crate::core::raft::NodeId;

/// Most entries of a key set (a key file's lines): the key a node sends with and one more,
/// which is what a rotation needs (old and new key both accepted while every node swaps).
/// More would let old keys linger after a rotation.
pub const CLUSTER_KEYS_MAX: usize = 2;

/// Datagrams of one sender that the replay window spans (RFC 6479, as WireGuard): a datagram
/// more than this many numbers behind the newest accepted from its sender is dropped as
/// [`AuthDrop::TooOld`]. One counter numbers a node's datagrams to every peer, so this bounds
/// how far one datagram may be overtaken by the sender's later ones (to any node): at a few
/// thousand datagrams a second, a few hundred milliseconds of reordering, far more than a LAN
/// shows, for 136 bytes per peer.
pub const REPLAY_WINDOW: u64 = 1024;

/// Bits of one block of the replay window's ring.
const BLOCK_BITS: u64 = u64::BITS as u64;

/// Blocks of the ring: the window plus one (RFC 6479 §2), so that the block of the oldest
/// datagram still in the window is never the block of the newest.
const WINDOW_BLOCKS: usize = (REPLAY_WINDOW / BLOCK_BITS) as usize + 1;

const _: () = assert!(REPLAY_WINDOW % BLOCK_BITS == 0);

/// Why a node-to-node datagram was dropped by the authentication checks (spec §8.11), in the
/// order of the checks. The names are the spec's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AuthDrop {
    /// AUTH clear, and this node does not accept unauthenticated datagrams (rule 1).
    Unauthenticated,
    /// AUTH set, with a key id that names no key this node accepts (rule 1).
    UnknownKey,
    /// The MAC does not verify with the key the key id names (rule 1): forged or damaged.
    BadMac,
    /// Made for another node (rule 2).
    WrongReceiver,
    /// From an earlier life of its sender (rule 3).
    OldIncarnation,
    /// Made for an earlier life of this node, or before its sender heard from this life
    /// (rule 4).
    StaleReceiver,
    /// Older than the sender's replay window (rule 5).
    TooOld,
    /// Already accepted once (rule 5).
    Replayed,
}

impl AuthDrop {
    /// Every reason, in the order of the checks.
    pub const ALL: [AuthDrop; 8] = [
        AuthDrop::Unauthenticated,
        AuthDrop::UnknownKey,
        AuthDrop::BadMac,
        AuthDrop::WrongReceiver,
        AuthDrop::OldIncarnation,
        AuthDrop::StaleReceiver,
        AuthDrop::TooOld,
        AuthDrop::Replayed,
    ];

    /// The spec's name of the reason (spec §8.11).
    pub const fn name(self) -> &'static str {
        match self {
            AuthDrop::Unauthenticated => "Unauthenticated",
            AuthDrop::UnknownKey => "UnknownKey",
            AuthDrop::BadMac => "BadMac",
            AuthDrop::WrongReceiver => "WrongReceiver",
            AuthDrop::OldIncarnation => "OldIncarnation",
            AuthDrop::StaleReceiver => "StaleReceiver",
            AuthDrop::TooOld => "TooOld",
            AuthDrop::Replayed => "Replayed",
        }
    }

    /// The reason's position in [`AuthDrop::ALL`] (an index into per-reason counters).
    pub const fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for AuthDrop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Datagrams dropped by the checks, per reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AuthDrops {
    counts: [u64; AuthDrop::ALL.len()],
}

impl AuthDrops {
    /// Dropped for `reason`.
    pub fn get(&self, reason: AuthDrop) -> u64 {
        self.counts[reason.index()]
    }

    /// Dropped for any reason.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    fn bump(&mut self, reason: AuthDrop) {
        self.counts[reason.index()] += 1;
    }
}

/// Why a list of keys is not a key set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeySetError {
    /// No entry: a node must at least say what it sends with.
    Empty,
    /// More than [`CLUSTER_KEYS_MAX`] entries.
    TooMany,
    /// The same key (or `none`) twice, or two keys with one key id (a receiver could not
    /// tell which one a datagram names).
    Duplicate,
}

impl std::fmt::Display for KeySetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KeySetError::Empty => "no entry: expected a key (64 hex digits) or `none`",
            KeySetError::TooMany => "more than 2 entries (the key to send with, and one more)",
            KeySetError::Duplicate => "the same entry twice (or two keys with one key id)",
        })
    }
}

impl std::error::Error for KeySetError {}

/// What a node sends with and accepts: 1 to [`CLUSTER_KEYS_MAX`] entries, each a cluster key
/// or `None` (*none*: unauthenticated). The first entry is what the node sends with; every
/// entry is accepted. A key file holds one (`crate::cluster::keys`).
#[derive(Clone, Debug)]
pub struct KeySet {
    entries: Vec<Option<ClusterKey>>,
}

impl KeySet {
    /// The entries in order: the first is sent with, all are accepted.
    pub fn new(entries: Vec<Option<ClusterKey>>) -> Result<KeySet, KeySetError> {
        if entries.is_empty() {
            return Err(KeySetError::Empty);
        }
        if entries.len() > CLUSTER_KEYS_MAX {
            return Err(KeySetError::TooMany);
        }
        let id = |e: &Option<ClusterKey>| e.as_ref().map(ClusterKey::id);
        for (i, e) in entries.iter().enumerate() {
            if entries[..i].iter().any(|other| id(other) == id(e)) {
                return Err(KeySetError::Duplicate);
            }
        }
        Ok(KeySet { entries })
    }

    /// Sends with `key` and accepts it alone: a cluster's steady state.
    pub fn single(key: ClusterKey) -> KeySet {
        KeySet {
            entries: vec![Some(key)],
        }
    }

    /// Sends unauthenticated and accepts only that: a cluster without keys.
    pub fn unauthenticated() -> KeySet {
        KeySet {
            entries: vec![None],
        }
    }

    /// The entries, the one sent with first.
    pub fn entries(&self) -> &[Option<ClusterKey>] {
        &self.entries
    }

    /// The key this node sends with; `None`: unauthenticated.
    pub fn send(&self) -> Option<&ClusterKey> {
        self.entries[0].as_ref()
    }

    /// True if unauthenticated datagrams are accepted.
    pub fn accepts_unauthenticated(&self) -> bool {
        self.entries.iter().any(Option::is_none)
    }

    /// The accepted key with id `key_id`.
    pub fn accepted(&self, key_id: u32) -> Option<&ClusterKey> {
        self.entries.iter().flatten().find(|k| k.id() == key_id)
    }

    /// True if every datagram sent and accepted is authenticated (no entry is *none*).
    pub fn is_authenticated(&self) -> bool {
        !self.accepts_unauthenticated()
    }

    /// "sending with 1a2b3c4d; accepting 1a2b3c4d, 5e6f7a8b": key ids, never key bytes.
    pub fn describe(&self) -> String {
        let name = |e: &Option<ClusterKey>| match e {
            Some(k) => format!("{:08x}", k.id()),
            None => "none".to_string(),
        };
        let accepting: Vec<String> = self.entries.iter().map(name).collect();
        format!(
            "sending with {}; accepting {}",
            name(&self.entries[0]),
            accepting.join(", ")
        )
    }
}

/// The datagrams of one sender's incarnation already accepted: a sliding bitmap over the
/// newest [`REPLAY_WINDOW`] numbers (RFC 6479), kept as a ring of 64-bit blocks so that
/// sliding clears whole blocks instead of shifting bits.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ReplayWindow {
    /// The highest number accepted (0: none yet; numbers start at 1).
    top: u64,
    /// Bit `seq % 64` of block `(seq / 64) % WINDOW_BLOCKS` is set once `seq` is accepted.
    blocks: [u64; WINDOW_BLOCKS],
}

impl ReplayWindow {
    const fn new() -> ReplayWindow {
        ReplayWindow {
            top: 0,
            blocks: [0; WINDOW_BLOCKS],
        }
    }

    fn slot(seq: u64) -> (usize, u64) {
        (
            ((seq / BLOCK_BITS) % WINDOW_BLOCKS as u64) as usize,
            1 << (seq % BLOCK_BITS),
        )
    }

    /// Accepts `seq` once: marks it and slides the window to it if it is the newest.
    fn accept(&mut self, seq: u64) -> Result<(), AuthDrop> {
        // Numbers start at 1 (the codec refuses 0); a 0 is older than anything.
        if seq == 0 {
            return Err(AuthDrop::TooOld);
        }
        if seq > self.top {
            // Clear the blocks the window enters (at most all of them).
            let (from, to) = (self.top / BLOCK_BITS, seq / BLOCK_BITS);
            let entered = (to - from).min(WINDOW_BLOCKS as u64);
            for b in 1..=entered {
                self.blocks[((from + b) % WINDOW_BLOCKS as u64) as usize] = 0;
            }
            self.top = seq;
        } else if self.top - seq >= REPLAY_WINDOW {
            return Err(AuthDrop::TooOld);
        }
        let (block, bit) = ReplayWindow::slot(seq);
        if self.blocks[block] & bit != 0 {
            return Err(AuthDrop::Replayed);
        }
        self.blocks[block] |= bit;
        debug_assert!(self.top >= seq && self.top - seq < REPLAY_WINDOW);
        Ok(())
    }
}

/// What this node knows of one peer.
#[derive(Clone, Debug)]
struct Peer {
    id: NodeId,
    /// The highest incarnation seen in the peer's authenticated datagrams (0: none yet): the
    /// peer's current life, which datagrams to it carry as `peer_incarnation`.
    incarnation: u64,
    /// The datagrams of that incarnation already accepted.
    window: ReplayWindow,
    /// The key the peer authenticated its latest datagram with (`None`: unauthenticated, or
    /// nothing heard): see "Turning keys on" in the module docs.
    key_id: Option<u32>,
}

/// The authentication state of one node: its keys and incarnation, its datagram counter, and
/// per listed peer the incarnation and replay window (see the module docs).
#[derive(Clone, Debug)]
pub struct PeerAuth {
    id: NodeId,
    incarnation: u64,
    keys: KeySet,
    /// The number of the last authenticated datagram sent (to any peer).
    seq: u64,
    /// Every listed node but this one, sorted by id.
    peers: Vec<Peer>,
    drops: AuthDrops,
}

impl PeerAuth {
    /// Node `id` in its life `incarnation` (non-zero; the shell uses the wall clock in µs at
    /// start), with the other listed nodes `peers` (this node's id among them is ignored) and
    /// the key set `keys`.
    pub fn new(
        id: NodeId,
        incarnation: u64,
        peers: impl IntoIterator<Item = NodeId>,
        keys: KeySet,
    ) -> PeerAuth {
        assert!(
            id != 0 && incarnation != 0,
            "node id and incarnation are non-zero"
        );
        let mut ids: Vec<NodeId> = peers.into_iter().filter(|&p| p != id).collect();
        ids.sort_unstable();
        ids.dedup();
        PeerAuth {
            id,
            incarnation,
            keys,
            seq: 0,
            peers: ids
                .into_iter()
                .map(|id| Peer {
                    id,
                    incarnation: 0,
                    window: ReplayWindow::new(),
                    key_id: None,
                })
                .collect(),
            drops: AuthDrops::default(),
        }
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// This node's incarnation: as given at start, or raised by rule 4.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// The key set in force.
    pub fn keys(&self) -> &KeySet {
        &self.keys
    }

    /// Replaces the key set (a reloaded key file). Incarnations, replay windows and the
    /// datagram counter are the senders' numbering, not the keys', so they stay.
    pub fn set_keys(&mut self, keys: KeySet) {
        self.keys = keys;
    }

    /// Datagrams dropped so far, per reason.
    pub fn drops(&self) -> &AuthDrops {
        &self.drops
    }

    /// The incarnation `peer` was last seen with (0: not heard from, or only unauthenticated).
    pub fn peer_incarnation(&self, peer: NodeId) -> u64 {
        self.peer(peer).incarnation
    }

    /// Whether `id` has an entry (a listed peer, or one added by [`PeerAuth::add_peer`]).
    pub fn knows(&self, id: NodeId) -> bool {
        self.peers.binary_search_by_key(&id, |p| p.id).is_ok()
    }

    /// Adds node `id` as a peer (nothing heard from it yet), if it is not one already and
    /// is not this node: a member of a joined cluster, learned from SWIM or from its own
    /// authenticated join (spec §8.3 rule 3). The caller bounds how many it adds.
    pub fn add_peer(&mut self, id: NodeId) {
        if id == self.id {
            return;
        }
        if let Err(at) = self.peers.binary_search_by_key(&id, |p| p.id) {
            self.peers.insert(
                at,
                Peer {
                    id,
                    incarnation: 0,
                    window: ReplayWindow::new(),
                    key_id: None,
                },
            );
        }
    }

    /// Forgets peer `id` (a joiner that never became a member, or a member forgotten):
    /// its incarnation and replay window go with it.
    pub fn remove_peer(&mut self, id: NodeId) {
        if let Ok(at) = self.peers.binary_search_by_key(&id, |p| p.id) {
            self.peers.remove(at);
        }
    }

    /// Rules 1 and 2 of spec §8.11 alone, which need no state of the sender: an
    /// authenticated datagram (a trailer is required here, whatever the key set accepts),
    /// with an accepted key, whose MAC verifies, made for this node. What a node checks of
    /// a sender it does not know before it keeps any state for it (spec §8.3 rule 3).
    /// Counted like [`PeerAuth::check`]'s drops.
    pub fn check_stranger(
        &mut self,
        datagram: &[u8],
        auth: Option<&AuthTrailer>,
    ) -> Result<(), AuthDrop> {
        let checked = (|| {
            let t = auth.ok_or(AuthDrop::Unauthenticated)?;
            let key = self.keys.accepted(t.key_id).ok_or(AuthDrop::UnknownKey)?;
            if !key.verify(datagram) {
                return Err(AuthDrop::BadMac);
            }
            if t.to != self.id {
                return Err(AuthDrop::WrongReceiver);
            }
            Ok(())
        })();
        if let Err(reason) = checked {
            self.drops.bump(reason);
        }
        checked
    }

    fn peer_index(&self, id: NodeId) -> usize {
        match self.peers.binary_search_by_key(&id, |p| p.id) {
            Ok(i) => i,
            // The shell hands over only datagrams of listed senders, and sends only to them.
            Err(_) => panic!("node {id} is not a listed peer of node {}", self.id),
        }
    }

    fn peer(&self, id: NodeId) -> &Peer {
        &self.peers[self.peer_index(id)]
    }

    /// Which entry of the key set a datagram to peer `to` is sealed with (`None`: sent
    /// unauthenticated): the one this node sends with, or, when that is *none*, the key the
    /// peer last authenticated with if it is accepted here (module docs, "Turning keys on").
    fn sending_key(&self, to: NodeId) -> Option<&ClusterKey> {
        self.keys.send().or_else(|| {
            self.peer(to)
                .key_id
                .and_then(|key_id| self.keys.accepted(key_id))
        })
    }

    /// Bytes to keep free at the end of a datagram for peer `to`, for its trailer:
    /// `AUTH_TRAILER_LEN`, or 0 when it goes unauthenticated. Pass it to
    /// `PeerWriter::with_trailer_room`.
    pub fn trailer_room(&self, to: NodeId) -> usize {
        if self.sending_key(to).is_some() {
            AUTH_TRAILER_LEN
        } else {
            0
        }
    }

    /// Authenticates the node-to-node datagram of `len` bytes at the start of `buf`, encoded
    /// for peer `to` with [`PeerAuth::trailer_room`] bytes kept free; returns its new length
    /// (`len` when it goes unauthenticated).
    pub fn seal(&mut self, to: NodeId, buf: &mut [u8], len: usize) -> usize {
        let i = self.peer_index(to);
        let Some(key) = self.sending_key(to) else {
            return len;
        };
        let trailer = AuthTrailer {
            to,
            incarnation: self.incarnation,
            peer_incarnation: self.peers[i].incarnation,
            seq: self.seq + 1,
            key_id: key.id(),
        };
        // The caller kept the room `trailer_room` asked for, and encoded an unauthenticated
        // datagram: anything else is a bug of the shell.
        let sealed = key
            .seal(buf, len, &trailer)
            .expect("a datagram encoded with room for its trailer seals");
        self.seq = trailer.seq;
        assert_eq!(sealed, len + AUTH_TRAILER_LEN);
        sealed
    }

    /// Rules 1 to 5 of spec §8.11 for `datagram`, received from the listed peer `from` at its
    /// listed address (the shell checked both) and decoded (its trailer: `auth`). `Ok`: hand
    /// it on. `Err`: drop it; it is counted, and changed nothing but the authentication
    /// state (a learned incarnation, this node's raised one, a replay window).
    pub fn check(
        &mut self,
        from: NodeId,
        datagram: &[u8],
        auth: Option<&AuthTrailer>,
    ) -> Result<(), AuthDrop> {
        let checked = self.check_rules(from, datagram, auth);
        if let Err(reason) = checked {
            self.drops.bump(reason);
        }
        checked
    }

    fn check_rules(
        &mut self,
        from: NodeId,
        datagram: &[u8],
        auth: Option<&AuthTrailer>,
    ) -> Result<(), AuthDrop> {
        let i = self.peer_index(from);
        // Rule 1: the key.
        let Some(t) = auth else {
            if !self.keys.accepts_unauthenticated() {
                return Err(AuthDrop::Unauthenticated);
            }
            self.peers[i].key_id = None;
            return Ok(());
        };
        let key = self.keys.accepted(t.key_id).ok_or(AuthDrop::UnknownKey)?;
        if !key.verify(datagram) {
            return Err(AuthDrop::BadMac);
        }
        // Rule 2: for this node.
        if t.to != self.id {
            return Err(AuthDrop::WrongReceiver);
        }
        // Rule 3: the sender's life.
        let peer = &mut self.peers[i];
        if t.incarnation < peer.incarnation {
            return Err(AuthDrop::OldIncarnation);
        }
        if t.incarnation > peer.incarnation {
            peer.incarnation = t.incarnation;
            peer.window = ReplayWindow::new();
        }
        peer.key_id = Some(t.key_id);
        // Rule 4: this node's life.
        if t.peer_incarnation != self.incarnation {
            if t.peer_incarnation > self.incarnation {
                // Only this node's own incarnation, learned by the peer, can be above it: the
                // clock went back across a restart. Live above it from now on.
                self.incarnation = t.peer_incarnation.saturating_add(1);
            }
            return Err(AuthDrop::StaleReceiver);
        }
        // Rule 5: once.
        peer.window.accept(t.seq)?;
        debug_assert_eq!(peer.incarnation, t.incarnation);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;
    use udplock_protocol::{PeerHeader, PeerSettings, SettingValues};

    const INCARNATION: u64 = 1_780_000_000_000_000;

    /// Bytes of the test's datagram before sealing: a PEER_SETTINGS with no values.
    const UNSEALED_LEN: usize = 34;

    fn key(byte: u8) -> ClusterKey {
        ClusterKey::new(&[byte; 32])
    }

    fn keyed(byte: u8) -> KeySet {
        KeySet::single(key(byte))
    }

    fn set(entries: &[Option<u8>]) -> KeySet {
        KeySet::new(entries.iter().map(|e| e.map(key)).collect()).unwrap()
    }

    /// Nodes 1..=n, node i in life INCARNATION + i, all with `keys`.
    fn nodes(n: u64, keys: &KeySet) -> Vec<PeerAuth> {
        (1..=n)
            .map(|id| PeerAuth::new(id, INCARNATION + id, 1..=n, keys.clone()))
            .collect()
    }

    /// A datagram from `from` to `to`, sealed (or not) as `from` would.
    fn datagram(from: &mut PeerAuth, to: NodeId) -> Vec<u8> {
        let mut buf = [0u8; 256];
        let settings = PeerSettings {
            header: PeerHeader {
                cluster_id: 0x1234,
                from: from.id(),
            },
            auth: None,
            values: SettingValues::from_slice(&[]),
        };
        let len = settings.encode(&mut buf).unwrap();
        assert!(len + from.trailer_room(to) <= buf.len());
        let len = from.seal(to, &mut buf, len);
        buf[..len].to_vec()
    }

    fn deliver(to: &mut PeerAuth, d: &[u8]) -> Result<(), AuthDrop> {
        let p = PeerSettings::decode(d).unwrap();
        to.check(p.header.from, d, p.auth.as_ref())
    }

    /// A datagram from `from` to `to` and back (both delivered), and the outcomes.
    fn exchange(
        a: &mut PeerAuth,
        b: &mut PeerAuth,
    ) -> (Result<(), AuthDrop>, Result<(), AuthDrop>) {
        let there = datagram(a, b.id());
        let there = deliver(b, &there);
        let back = datagram(b, a.id());
        (there, deliver(a, &back))
    }

    fn pair(keys: &KeySet) -> (PeerAuth, PeerAuth) {
        let mut n = nodes(2, keys);
        let b = n.pop().unwrap();
        (n.pop().unwrap(), b)
    }

    /// The first exchange of two nodes that never heard each other: the first datagram
    /// carries no life of its receiver and is dropped; the answer is accepted.
    fn introduce(a: &mut PeerAuth, b: &mut PeerAuth) {
        assert_eq!(exchange(a, b), (Err(AuthDrop::StaleReceiver), Ok(())));
    }

    /// Two nodes that have exchanged datagrams once (each knows the other's life).
    fn acquainted(keys: &KeySet) -> (PeerAuth, PeerAuth) {
        let (mut a, mut b) = pair(keys);
        introduce(&mut a, &mut b);
        assert_eq!(exchange(&mut a, &mut b), (Ok(()), Ok(())));
        (a, b)
    }

    #[test]
    fn a_datagram_is_accepted_once_both_ends_know_each_others_life() {
        let (mut a, mut b) = pair(&keyed(1));
        // Neither has heard the other: the first datagram carries peer_incarnation 0.
        let first = datagram(&mut a, 2);
        assert_eq!(deliver(&mut b, &first), Err(AuthDrop::StaleReceiver));
        assert_eq!(b.peer_incarnation(1), a.incarnation());
        // The answer carries a's life, and b's own: accepted, and a learns b's.
        let answer = datagram(&mut b, 1);
        assert_eq!(deliver(&mut a, &answer), Ok(()));
        let next = datagram(&mut a, 2);
        assert_eq!(deliver(&mut b, &next), Ok(()));
        assert_eq!(b.drops().total(), 1);
        assert_eq!(a.drops().total(), 0);
    }

    #[test]
    fn rule_1_unauthenticated_unknown_key_and_bad_mac() {
        let (mut a, mut b) = acquainted(&keyed(1));
        // AUTH clear at a node that does not accept none.
        let mut plain = PeerAuth::new(1, INCARNATION + 1, [1, 2], KeySet::unauthenticated());
        let d = datagram(&mut plain, 2);
        assert_eq!(deliver(&mut b, &d), Err(AuthDrop::Unauthenticated));
        // A key b does not accept.
        let mut other = PeerAuth::new(1, INCARNATION + 1, [1, 2], keyed(9));
        let d = datagram(&mut other, 2);
        assert_eq!(deliver(&mut b, &d), Err(AuthDrop::UnknownKey));
        // The right key id, a changed bit (of the sequence number, of the MAC): the MAC
        // fails.
        let seq_at = udplock_protocol::auth::field::SEQ.end - 1;
        for at in [seq_at, AUTH_TRAILER_LEN - 1] {
            let mut d = datagram(&mut a, 2);
            let at = d.len() - AUTH_TRAILER_LEN + at;
            d[at] ^= 1;
            assert_eq!(deliver(&mut b, &d), Err(AuthDrop::BadMac));
        }
        // A forged trailer naming b's key id, without the key.
        let mut d = datagram(&mut other, 2);
        let at = d.len() - AUTH_TRAILER_LEN + udplock_protocol::auth::field::KEY_ID.start;
        d[at..at + 4].copy_from_slice(&key(1).id().to_be_bytes());
        assert_eq!(deliver(&mut b, &d), Err(AuthDrop::BadMac));
        for reason in [
            AuthDrop::Unauthenticated,
            AuthDrop::UnknownKey,
            AuthDrop::BadMac,
        ] {
            assert!(b.drops().get(reason) > 0, "{reason} not counted");
        }
        // None of it disturbed the pair.
        assert_eq!(exchange(&mut a, &mut b), (Ok(()), Ok(())));
    }

    #[test]
    fn rule_1_a_node_that_accepts_none_takes_unauthenticated_datagrams() {
        let mut b = PeerAuth::new(2, INCARNATION, [1, 2], set(&[Some(1), None]));
        let mut plain = PeerAuth::new(1, INCARNATION, [1, 2], KeySet::unauthenticated());
        let d = datagram(&mut plain, 2);
        assert_eq!(d.len(), UNSEALED_LEN, "unauthenticated: no trailer");
        assert_eq!(deliver(&mut b, &d), Ok(()));
        // Unauthenticated datagrams carry no number: a copy is accepted too. That is what
        // accepting none means, and why a cluster ends a rotation without it.
        assert_eq!(deliver(&mut b, &d), Ok(()));
    }

    #[test]
    fn rule_2_a_datagram_for_another_node_is_dropped() {
        let keys = keyed(1);
        let mut n = nodes(3, &keys);
        let (a, rest) = n.split_at_mut(1);
        let (b, c) = rest.split_at_mut(1);
        let (a, b, c) = (&mut a[0], &mut b[0], &mut c[0]);
        introduce(a, b);
        introduce(a, c);
        // a's datagram for b, delivered to c (from a's address, so it reaches c's checks).
        let for_b = datagram(a, 2);
        assert_eq!(deliver(c, &for_b), Err(AuthDrop::WrongReceiver));
        assert_eq!(c.drops().get(AuthDrop::WrongReceiver), 1);
        assert_eq!(deliver(b, &for_b), Ok(()));
    }

    #[test]
    fn rule_3_a_restarted_senders_old_datagrams_are_refused() {
        let (mut a, mut b) = acquainted(&keyed(1));
        let old = datagram(&mut a, 2);
        // a restarts: a later life, a fresh counter.
        let mut a2 = PeerAuth::new(1, a.incarnation() + 1_000_000, [1, 2], keyed(1));
        let (there, back) = exchange(&mut a2, &mut b);
        assert_eq!(
            there,
            Err(AuthDrop::StaleReceiver),
            "a2 had not heard b yet"
        );
        assert_eq!(back, Ok(()));
        assert_eq!(exchange(&mut a2, &mut b), (Ok(()), Ok(())));
        // The old life's datagram, never delivered before: refused.
        assert_eq!(deliver(&mut b, &old), Err(AuthDrop::OldIncarnation));
        assert_eq!(b.drops().get(AuthDrop::OldIncarnation), 1);
        // And the new life's numbers start a fresh window: its seq 1.. were accepted above
        // although the old life had used them.
        assert_eq!(b.peer_incarnation(1), a2.incarnation());
    }

    #[test]
    fn rule_4_datagrams_made_before_the_receiver_restarted_are_refused() {
        let (mut a, b) = acquainted(&keyed(1));
        let made_before = datagram(&mut a, 2);
        // b restarts, in a later life.
        let mut b2 = PeerAuth::new(2, b.incarnation() + 1_000_000, [1, 2], keyed(1));
        assert_eq!(deliver(&mut b2, &made_before), Err(AuthDrop::StaleReceiver));
        // Step 3 learned a's life anyway: b2's answer carries it, and a learns b2's.
        let answer = datagram(&mut b2, 1);
        assert_eq!(deliver(&mut a, &answer), Ok(()));
        assert_eq!(exchange(&mut a, &mut b2), (Ok(()), Ok(())));
        // Still refused later, and counted.
        assert_eq!(deliver(&mut b2, &made_before), Err(AuthDrop::StaleReceiver));
        assert_eq!(b2.drops().get(AuthDrop::StaleReceiver), 2);
    }

    #[test]
    fn rule_4_a_clock_that_went_back_heals_in_one_exchange() {
        let (mut a, b) = acquainted(&keyed(1));
        let old_life = b.incarnation();
        // b restarts with a clock that went back: a lower incarnation than its last life.
        let mut b2 = PeerAuth::new(2, old_life - 5_000_000, [1, 2], keyed(1));
        // b2's datagrams look older than b's to a ...
        let d = datagram(&mut b2, 1);
        assert_eq!(deliver(&mut a, &d), Err(AuthDrop::OldIncarnation));
        // ... but a's carry b's old life, above b2's own: b2 rises above it.
        let d = datagram(&mut a, 2);
        assert_eq!(deliver(&mut b2, &d), Err(AuthDrop::StaleReceiver));
        assert!(b2.incarnation() > old_life);
        // One exchange later both accept.
        let (there, back) = exchange(&mut b2, &mut a);
        assert_eq!(there, Ok(()));
        assert_eq!(back, Ok(()));
        assert_eq!(exchange(&mut a, &mut b2), (Ok(()), Ok(())));
    }

    #[test]
    fn rule_5_replayed_and_too_old() {
        let (mut a, mut b) = acquainted(&keyed(1));
        let d = datagram(&mut a, 2);
        assert_eq!(deliver(&mut b, &d), Ok(()));
        assert_eq!(deliver(&mut b, &d), Err(AuthDrop::Replayed));
        // Held back while a sends a window's worth to b: then too old.
        let late = datagram(&mut a, 2);
        for _ in 0..REPLAY_WINDOW {
            let d = datagram(&mut a, 2);
            assert_eq!(deliver(&mut b, &d), Ok(()));
        }
        assert_eq!(deliver(&mut b, &late), Err(AuthDrop::TooOld));
        assert_eq!(b.drops().get(AuthDrop::Replayed), 1);
        assert_eq!(b.drops().get(AuthDrop::TooOld), 1);
    }

    #[test]
    fn rule_5_reordering_within_the_window_accepts_each_once() {
        let (mut a, mut b) = acquainted(&keyed(1));
        let held: Vec<Vec<u8>> = (0..REPLAY_WINDOW - 1)
            .map(|_| datagram(&mut a, 2))
            .collect();
        let newest = datagram(&mut a, 2);
        assert_eq!(deliver(&mut b, &newest), Ok(()));
        // The oldest held one is REPLAY_WINDOW - 1 behind the newest: still in the window.
        for d in held.iter().rev() {
            assert_eq!(deliver(&mut b, d), Ok(()));
        }
        for d in &held {
            assert_eq!(deliver(&mut b, d), Err(AuthDrop::Replayed));
        }
    }

    #[test]
    fn one_counter_numbers_the_datagrams_to_every_peer() {
        let keys = keyed(1);
        let mut n = nodes(3, &keys);
        let seqs: Vec<u64> = [2, 3, 2, 2, 3]
            .iter()
            .map(|&to| {
                let d = datagram(&mut n[0], to);
                PeerSettings::decode(&d).unwrap().auth.unwrap().seq
            })
            .collect();
        assert_eq!(seqs, [1, 2, 3, 4, 5]);
    }

    #[test]
    fn every_entry_is_accepted_and_the_first_is_sent_with() {
        // Rotation: old key 1, new key 2.
        let (mut a, mut b) = acquainted(&keyed(1));
        let before = a.drops().total() + b.drops().total();
        // Step 1: every node adds the new key second.
        a.set_keys(set(&[Some(1), Some(2)]));
        assert_eq!(exchange(&mut a, &mut b), (Ok(()), Ok(())));
        b.set_keys(set(&[Some(1), Some(2)]));
        assert_eq!(exchange(&mut a, &mut b), (Ok(()), Ok(())));
        // Step 2: swap, one node at a time.
        a.set_keys(set(&[Some(2), Some(1)]));
        let d = datagram(&mut a, 2);
        let t = PeerSettings::decode(&d).unwrap().auth.unwrap();
        assert_eq!(t.key_id, key(2).id());
        assert_eq!(deliver(&mut b, &d), Ok(()));
        assert_eq!(exchange(&mut a, &mut b), (Ok(()), Ok(())));
        b.set_keys(set(&[Some(2), Some(1)]));
        assert_eq!(exchange(&mut a, &mut b), (Ok(()), Ok(())));
        // Step 3: drop the old key.
        a.set_keys(keyed(2));
        assert_eq!(exchange(&mut a, &mut b), (Ok(()), Ok(())));
        b.set_keys(keyed(2));
        assert_eq!(exchange(&mut a, &mut b), (Ok(()), Ok(())));
        assert_eq!(a.drops().total() + b.drops().total(), before);
        // A node that skipped a step is cut off, and says why.
        let mut stale = PeerAuth::new(1, a.incarnation() + 1, [1, 2], keyed(1));
        let d = datagram(&mut stale, 2);
        assert_eq!(deliver(&mut b, &d), Err(AuthDrop::UnknownKey));
    }

    /// Three nodes that start with `start` and then take `steps` (README, "Securing a
    /// cluster"), each node by node with datagrams between every pair after each change, as
    /// a running cluster would; then every pair exchanges once more. Returns the drops of
    /// every node, summed, and the nodes.
    fn walk(start: &KeySet, steps: &[KeySet]) -> (AuthDrops, Vec<PeerAuth>) {
        let mut n = nodes(3, start);
        let mut drops = AuthDrops::default();
        let round = |n: &mut Vec<PeerAuth>, drops: &mut AuthDrops| {
            for i in 0..3 {
                for j in 0..3 {
                    if i != j {
                        let to = n[j].id();
                        let d = datagram(&mut n[i], to);
                        if let Err(reason) = deliver(&mut n[j], &d) {
                            drops.bump(reason);
                        }
                    }
                }
            }
        };
        round(&mut n, &mut drops);
        round(&mut n, &mut drops);
        let introductions = drops;
        for keys in steps {
            for i in 0..3 {
                n[i].set_keys(keys.clone());
                round(&mut n, &mut drops);
                round(&mut n, &mut drops);
            }
        }
        // Every pair now accepts each other's datagrams.
        for i in 0..3 {
            for j in 0..3 {
                if i != j {
                    let to = n[j].id();
                    let d = datagram(&mut n[i], to);
                    assert_eq!(deliver(&mut n[j], &d), Ok(()), "{} to {}", i + 1, to);
                }
            }
        }
        let mut since = AuthDrops::default();
        for r in AuthDrop::ALL {
            since.counts[r.index()] = drops.get(r) - introductions.get(r);
        }
        (since, n)
    }

    #[test]
    fn a_key_rotation_in_a_running_cluster_drops_nothing() {
        let (drops, n) = walk(
            &keyed(1),
            &[set(&[Some(1), Some(2)]), set(&[Some(2), Some(1)]), keyed(2)],
        );
        assert_eq!(drops.total(), 0, "{drops:?}");
        let mut n = n;
        let d = datagram(&mut n[0], 2);
        let t = PeerSettings::decode(&d).unwrap().auth.unwrap();
        assert_eq!(t.key_id, key(2).id());
    }

    #[test]
    fn turning_keys_on_in_a_running_cluster_costs_one_exchange() {
        let (drops, mut n) = walk(
            &KeySet::unauthenticated(),
            &[set(&[None, Some(1)]), set(&[Some(1), None]), keyed(1)],
        );
        // A swapped node's first datagram to a node that has not heard it yet is dropped
        // (StaleReceiver), and only that: at most one per ordered pair (6 of them).
        let stale = drops.get(AuthDrop::StaleReceiver);
        assert_eq!(drops.total(), stale, "{drops:?}");
        assert!(
            stale <= 6,
            "{stale} datagrams dropped while turning keys on"
        );
        let d = datagram(&mut n[0], 2);
        assert_eq!(d.len(), UNSEALED_LEN + AUTH_TRAILER_LEN);
    }

    #[test]
    fn turning_keys_off_in_a_running_cluster_costs_one_exchange() {
        let (drops, mut n) = walk(
            &keyed(1),
            &[
                set(&[Some(1), None]),
                set(&[None, Some(1)]),
                KeySet::unauthenticated(),
            ],
        );
        // A node that no longer accepts the key drops a peer's datagram sealed with it until
        // the peer hears it send unauthenticated: at most one per ordered pair.
        let unknown = drops.get(AuthDrop::UnknownKey);
        assert_eq!(drops.total(), unknown, "{drops:?}");
        assert!(
            unknown <= 6,
            "{unknown} datagrams dropped while turning keys off"
        );
        let d = datagram(&mut n[0], 2);
        assert_eq!(d.len(), UNSEALED_LEN);
    }

    #[test]
    fn a_node_that_sends_none_answers_a_keyed_peer_with_its_key_only_if_it_accepts_it() {
        let mut a = PeerAuth::new(1, INCARNATION, [1, 2], set(&[Some(1), None]));
        let mut b = PeerAuth::new(2, INCARNATION + 1, [1, 2], set(&[None, Some(1)]));
        assert_eq!(b.trailer_room(1), 0);
        let d = datagram(&mut a, 2);
        assert_eq!(deliver(&mut b, &d), Err(AuthDrop::StaleReceiver));
        assert_eq!(b.trailer_room(1), AUTH_TRAILER_LEN);
        // Without the key in its set, b stays unauthenticated.
        b.set_keys(KeySet::unauthenticated());
        assert_eq!(b.trailer_room(1), 0);
        assert_eq!(datagram(&mut b, 1).len(), UNSEALED_LEN);
    }

    #[test]
    fn key_sets_refuse_what_a_key_file_must_not_say() {
        assert_eq!(KeySet::new(vec![]).unwrap_err(), KeySetError::Empty);
        assert_eq!(
            KeySet::new(vec![Some(key(1)), Some(key(2)), None]).unwrap_err(),
            KeySetError::TooMany
        );
        assert_eq!(
            KeySet::new(vec![Some(key(1)), Some(key(1))]).unwrap_err(),
            KeySetError::Duplicate
        );
        assert_eq!(
            KeySet::new(vec![None, None]).unwrap_err(),
            KeySetError::Duplicate
        );
        let s = set(&[Some(1), None]);
        assert!(s.accepts_unauthenticated() && !s.is_authenticated());
        assert_eq!(
            s.describe(),
            format!(
                "sending with {:08x}; accepting {:08x}, none",
                key(1).id(),
                key(1).id()
            )
        );
        assert!(keyed(1).is_authenticated());
    }

    /// The reference model of rule 5: a sequence number is accepted iff it is newer than
    /// every accepted one, or within REPLAY_WINDOW of the newest and not seen.
    #[derive(Default)]
    struct WindowModel {
        top: u64,
        seen: HashSet<u64>,
    }

    impl WindowModel {
        fn accept(&mut self, seq: u64) -> Result<(), AuthDrop> {
            if seq == 0 || (seq <= self.top && self.top - seq >= REPLAY_WINDOW) {
                return Err(AuthDrop::TooOld);
            }
            if !self.seen.insert(seq) {
                return Err(AuthDrop::Replayed);
            }
            self.top = self.top.max(seq);
            Ok(())
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// The bitmap window decides as the model does, for any arrival order: small steps,
        /// jumps across several windows, replays.
        #[test]
        fn the_replay_window_matches_the_model(
            steps in proptest::collection::vec((0u8..4, 0u64..3000), 1..400)
        ) {
            let mut window = ReplayWindow::new();
            let mut model = WindowModel::default();
            let mut last = 0u64;
            for (how, n) in steps {
                let seq = match how {
                    0 => last + 1 + n % 8,
                    1 => last.saturating_sub(n % (2 * REPLAY_WINDOW)),
                    2 => last + n,
                    _ => n,
                };
                last = last.max(seq);
                prop_assert_eq!(window.accept(seq), model.accept(seq), "seq {}", seq);
            }
        }

        /// Across restarts of either end, interleaved with deliveries in any order and
        /// replays of anything ever sent: each datagram is accepted at most once, and only
        /// in the sender's and the receiver's life it was made for.
        #[test]
        fn a_datagram_is_accepted_at_most_once_and_only_in_the_lives_it_was_made_for(
            ops in proptest::collection::vec((0u8..6, any::<u16>()), 1..300)
        ) {
            let keys = keyed(1);
            let mut clock = INCARNATION;
            let mut a = PeerAuth::new(1, clock, [1, 2], keys.clone());
            let mut b = PeerAuth::new(2, clock + 1, [1, 2], keys.clone());
            // b's restarts below start above this life: a node's life is the wall clock in µs
            // at its start, never the same twice (a clock that went back gives a lower one,
            // which rule 4 handles; the same one is a restart that took no time at all).
            clock += 1;
            // Every datagram a made: (bytes, a's life, b's life it was made for).
            let mut made: Vec<(Vec<u8>, u64, u64)> = Vec::new();
            let mut accepted: HashSet<usize> = HashSet::new();
            for (op, n) in ops {
                match op {
                    0 | 1 => {
                        let d = datagram(&mut a, 2);
                        made.push((d, a.incarnation(), a.peer_incarnation(2)));
                    }
                    2 | 3 if !made.is_empty() => {
                        let i = usize::from(n) % made.len();
                        if deliver(&mut b, &made[i].0).is_ok() {
                            prop_assert!(accepted.insert(i), "datagram {} accepted twice", i);
                            prop_assert_eq!(made[i].1, b.peer_incarnation(1));
                            prop_assert_eq!(made[i].2, b.incarnation());
                        }
                    }
                    4 => {
                        // b answers (a learns b's life).
                        let d = datagram(&mut b, 1);
                        let _ = deliver(&mut a, &d);
                    }
                    _ => {
                        // A restart of one end, its clock forward (or back, for a).
                        clock += 1 + u64::from(n);
                        if n % 2 == 0 {
                            b = PeerAuth::new(2, clock, [1, 2], keys.clone());
                        } else {
                            let life = if n % 3 == 0 { clock - 2 * u64::from(n) } else { clock };
                            a = PeerAuth::new(1, life.max(1), [1, 2], keys.clone());
                        }
                    }
                }
            }
        }
    }

    proptest! {
        // Each case seals and checks a window's worth of datagrams.
        #![proptest_config(ProptestConfig::with_cases(16))]

        /// Any order of the datagrams a sender made within one window accepts each exactly
        /// once, and a second delivery of any of them is refused.
        #[test]
        fn any_in_window_order_accepts_each_once(
            order in Just((0..REPLAY_WINDOW as usize).collect::<Vec<_>>()).prop_shuffle(),
            replays in proptest::collection::vec(0..REPLAY_WINDOW as usize, 1..64)
        ) {
            let (mut a, mut b) = acquainted(&keyed(1));
            let made: Vec<Vec<u8>> = (0..REPLAY_WINDOW).map(|_| datagram(&mut a, 2)).collect();
            for &i in &order {
                prop_assert_eq!(deliver(&mut b, &made[i]), Ok(()));
            }
            for &i in &replays {
                prop_assert_eq!(deliver(&mut b, &made[i]), Err(AuthDrop::Replayed));
            }
        }
    }
}
