//! Partitions by the kernel (`udplock chaos --partitions iptables`): `DROP` rules for UDP
//! from one node's address to another's, in chains of the run's own.
//!
//! Why the nodes talk directly in this mode: the relay's partitions are a user-space
//! decision taken before a datagram reaches a node; a rule in the kernel is what a real
//! partition looks like to the node's own socket. A rule met at `OUTPUT` makes the
//! sender's `sendto(2)` fail (`EPERM`), one met at `INPUT` drops the datagram silently after
//! the sender's call succeeded; the node's IO shell must cope with both, and only a
//! direct path shows it either. So in this mode every node is listed (`--peers`,
//! `--advertise`) at the address it binds, `127.0.1.x`, and node-to-node traffic never
//! passes the relay: loss, duplication and delay (which stay in the relay) reach only the
//! client traffic, which still goes through the relay's `127.0.0.x` addresses. (A hint
//! names a node's own address, so a redirected client may also talk to a node directly.)
//! Client datagrams come from other addresses (the relay's `127.0.2.1`, an admin call's
//! `127.0.0.1`), so no rule here touches them, as in the relay's partitions.
//!
//! Which hook a rule is met at (`INPUT` or `OUTPUT`) is drawn from the run's seed, so both
//! kernel paths are met.
//!
//! Life of the chains `UDPLOCK-CHAOS-<pid>-<k>-I` and `-O`: made, and jumped to from the
//! top of `INPUT` and `OUTPUT` respectively (before any rule that could accept the
//! datagram), by [`Firewall::start`]; rules appended by [`Firewall::block`]; flushed by
//! [`Firewall::heal`] (after their drop counters are read); the jumps and the chains
//! deleted when the [`Firewall`] is dropped, an unwinding panic included. `udplock chaos`
//! deletes its chains on SIGINT/SIGTERM too ([`remove_chains_of`]), and [`Firewall::start`]
//! first deletes the chains of runs whose process is gone (a `kill -9`).

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The program run for every rule.
pub const IPTABLES: &str = "iptables";
/// Every chain of a chaos run starts with it (then `<pid>-<k>-I` or `-O`).
pub const CHAIN_PREFIX: &str = "UDPLOCK-CHAOS-";

/// Chains made by this process so far (the `<k>` of a chain's name): a test process runs
/// several.
static CHAINS_MADE: AtomicU32 = AtomicU32::new(0);

/// Where a `DROP` rule is jumped to from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// On receipt: the sender's call succeeded.
    Input,
    /// On sending: the sender's call fails with `EPERM`.
    Output,
}

impl Hook {
    fn name(self) -> &'static str {
        match self {
            Hook::Input => "INPUT",
            Hook::Output => "OUTPUT",
        }
    }
}

/// The chains of one run (one per hook). Dropping it deletes the chains and their jumps.
pub struct Firewall {
    program: String,
    /// `UDPLOCK-CHAOS-<pid>-<k>`; the chains are `<name>-I` and `<name>-O`.
    name: String,
    /// The chains made so far, each jumped to from its hook once `jumped` (deleted on drop).
    chains: Vec<(Hook, String, bool)>,
    rng: ChaCha8Rng,
    /// Rules added so far, per hook.
    pub rules_input: u64,
    pub rules_output: u64,
    /// Datagrams the rules dropped, as the kernel's counters said before each flush.
    pub dropped: u64,
}

/// Runs `program -w args`, Ok(stdout) on exit code 0, Err(what and why) otherwise.
fn iptables(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .arg("-w")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `{program}`: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{program} -w {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The chaos chains of `iptables -S` output whose process `alive` says is gone.
pub fn stale_chains(listing: &str, alive: impl Fn(u32) -> bool) -> Vec<String> {
    listing
        .lines()
        .filter_map(|l| l.strip_prefix("-N "))
        .filter_map(|chain| {
            let rest = chain.strip_prefix(CHAIN_PREFIX)?;
            let pid: u32 = rest.split('-').next()?.parse().ok()?;
            (!alive(pid)).then(|| chain.to_string())
        })
        .collect()
}

/// The sum of the packet counters of `iptables -L CHAIN -v -n -x` output (the first
/// column of every rule line).
pub fn dropped_packets(listing: &str) -> u64 {
    listing
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// Deletes `chain` and every jump to it (best effort: what is not there is fine).
fn remove_chain(program: &str, chain: &str) -> Result<(), String> {
    for hook in [Hook::Input, Hook::Output] {
        while iptables(program, &["-D", hook.name(), "-j", chain]).is_ok() {}
    }
    let _ = iptables(program, &["-F", chain]);
    iptables(program, &["-X", chain]).map(|_| ())
}

/// Deletes the chains of process `pid` (for a SIGINT/SIGTERM handler: a [`Firewall`] is
/// not dropped when the process exits).
pub fn remove_chains_of(pid: u32) {
    let Ok(listing) = iptables(IPTABLES, &["-S"]) else {
        return;
    };
    for chain in stale_chains(&listing, |p| p != pid) {
        let _ = remove_chain(IPTABLES, &chain);
    }
}

impl Firewall {
    /// Checks that `program` runs and may change the rules, deletes the chains of chaos runs
    /// whose process is gone, then makes this run's chains and jumps to them from the top of
    /// `INPUT` and `OUTPUT` (before any rule that could accept a datagram). An error leaves
    /// nothing behind and says what to do.
    pub fn start(program: &str, seed: u64) -> Result<Firewall, String> {
        let hint = "--partitions iptables needs the `iptables` program and the right to \
                    change the rules (root or CAP_NET_ADMIN); --partitions relay needs neither";
        let listing = iptables(program, &["-S"]).map_err(|e| format!("{e}; {hint}"))?;
        let alive = |pid: u32| std::path::Path::new(&format!("/proc/{pid}")).exists();
        for chain in stale_chains(&listing, alive) {
            if let Err(e) = remove_chain(program, &chain) {
                eprintln!("chaos: cannot delete the stale chain {chain}: {e}");
            }
        }
        let k = CHAINS_MADE.fetch_add(1, Ordering::Relaxed);
        let mut firewall = Firewall {
            program: program.to_string(),
            name: format!("{CHAIN_PREFIX}{}-{k}", std::process::id()),
            chains: Vec::new(),
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0x1b7a_b1e5),
            rules_input: 0,
            rules_output: 0,
            dropped: 0,
        };
        // On an error below, dropping `firewall` undoes what was done.
        for hook in [Hook::Input, Hook::Output] {
            let chain = firewall.chain(hook);
            iptables(program, &["-N", &chain]).map_err(|e| format!("{e}; {hint}"))?;
            firewall.chains.push((hook, chain.clone(), false));
            iptables(program, &["-I", hook.name(), "1", "-j", &chain])
                .map_err(|e| format!("{e}; {hint}"))?;
            firewall.chains.last_mut().expect("pushed").2 = true;
        }
        Ok(firewall)
    }

    /// The chain jumped to from `hook` (at most 26 characters: iptables allows 28).
    pub fn chain(&self, hook: Hook) -> String {
        let suffix = match hook {
            Hook::Input => "I",
            Hook::Output => "O",
        };
        format!("{}-{suffix}", self.name)
    }

    /// From now on no UDP datagram from address `from` reaches address `to`, dropped at
    /// `hook`.
    pub fn block_at(&mut self, from: Ipv4Addr, to: Ipv4Addr, hook: Hook) -> Result<(), String> {
        let (from, to) = (from.to_string(), to.to_string());
        let chain = self.chain(hook);
        iptables(
            &self.program,
            &[
                "-A", &chain, "-p", "udp", "-s", &from, "-d", &to, "-j", "DROP",
            ],
        )?;
        match hook {
            Hook::Input => self.rules_input += 1,
            Hook::Output => self.rules_output += 1,
        }
        Ok(())
    }

    /// [`Self::block_at`] at a hook drawn from the run's seed.
    pub fn block(&mut self, from: Ipv4Addr, to: Ipv4Addr) -> Result<(), String> {
        let hook = if self.rng.gen_bool(0.5) {
            Hook::Input
        } else {
            Hook::Output
        };
        self.block_at(from, to, hook)
    }

    /// Every rule removed (their drop counts added to [`Self::dropped`] first).
    pub fn heal(&mut self) -> Result<(), String> {
        for hook in [Hook::Input, Hook::Output] {
            let chain = self.chain(hook);
            if let Ok(listing) = iptables(&self.program, &["-L", &chain, "-v", "-n", "-x"]) {
                self.dropped += dropped_packets(&listing);
            }
            iptables(&self.program, &["-F", &chain])?;
        }
        Ok(())
    }
}

impl Drop for Firewall {
    fn drop(&mut self) {
        for (hook, chain, jumped) in self.chains.drain(..) {
            if jumped {
                if let Err(e) = iptables(&self.program, &["-D", hook.name(), "-j", &chain]) {
                    eprintln!("chaos: {e}");
                }
            }
            let _ = iptables(&self.program, &["-F", &chain]);
            if let Err(e) = iptables(&self.program, &["-X", &chain]) {
                eprintln!("chaos: {e}; delete the chain by hand");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_chains_are_the_chaos_chains_of_dead_processes() {
        let listing = "-P INPUT ACCEPT\n-P OUTPUT ACCEPT\n-N DOCKER\n-N UDPLOCK-CHAOS-12-0\n\
                       -N UDPLOCK-CHAOS-34-2\n-N UDPLOCK-CHAOS-x-1\n\
                       -A INPUT -j UDPLOCK-CHAOS-12-0\n";
        assert_eq!(
            stale_chains(listing, |pid| pid == 12),
            vec!["UDPLOCK-CHAOS-34-2".to_string()]
        );
        assert_eq!(
            stale_chains(listing, |pid| pid != 12),
            vec!["UDPLOCK-CHAOS-12-0".to_string()]
        );
    }

    #[test]
    fn dropped_packets_sums_the_rules_counters() {
        let listing = "Chain UDPLOCK-CHAOS-1-0 (2 references)\n    \
             pkts      bytes target     prot opt in     out     source               destination\n     \
               5      300 DROP       17   --  *      *       127.0.1.11           127.0.1.12\n    \
              12     1000 DROP       17   --  *      *       127.0.1.12           127.0.1.11\n";
        assert_eq!(dropped_packets(listing), 17);
        assert_eq!(dropped_packets("Chain X (0 references)\n"), 0);
    }

    #[test]
    fn a_missing_program_is_a_clear_error_and_leaves_nothing() {
        let e = Firewall::start("udplock-no-such-iptables", 1)
            .err()
            .expect("no such program");
        assert!(e.contains("cannot run"), "{e}");
        assert!(e.contains("--partitions relay"), "{e}");
    }
}
