//! Phase 6, `peer keys`: what authenticating node-to-node datagrams costs (spec §8.11), a
//! keyed and a keyless cluster side by side, then forged datagrams dropped for their MAC.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use crate::cluster::keys::KeySet;
use crate::cluster::{ClusterConfig, ClusterNode};
use crate::core::peer_auth::AuthDrop;
use crate::core::raft::NodeId;
use crate::error::LockError;
use udplock_protocol::ClusterKey;

use super::alternate::{alternate, Alternated};
use super::contention::contention;
use super::embedded::wait_for_leaders;
use super::report::{back_to_back_ops_per_sec, summarize, summarize_floor};
use super::rtt::Echo;
use super::usage::NodeCpu;
use super::{BenchConfig, PhaseReport, Servers};

/// Datagrams the keys phase sends to a node before it waits for the node to catch up: far
/// below what its socket buffer holds, so none is lost before the node handles it.
const FORGED_WINDOW: u64 = 256;

/// The two clusters the keys phase compares: one whose nodes authenticate their datagrams
/// with a generated cluster key (spec §8.11), one without a key; and the key.
fn keyed_and_plain(template: &ClusterConfig) -> (ClusterConfig, ClusterConfig, ClusterKey) {
    let key = ClusterKey::new(&crate::cluster::keys::random_key());
    let keyed = ClusterConfig {
        keys: Some(KeySet::single(key.clone())),
        key_file: None,
        ..template.clone()
    };
    let plain = ClusterConfig {
        keys: Some(KeySet::unauthenticated()),
        key_file: None,
        ..template.clone()
    };
    (keyed, plain, key)
}

/// An embedded cluster as [`start_local_cluster`](crate::cluster::start_local_cluster)
/// starts one, and a clone of each node's socket: what the bench sends from a clone comes
/// from that listed node's own address and port, which is how it makes forged node-to-node
/// datagrams reach the authentication checks without raw sockets.
fn start_cluster_with_clones(
    n: usize,
    template: &ClusterConfig,
) -> std::io::Result<(Vec<ClusterNode>, Vec<UdpSocket>, ClusterConfig)> {
    let sockets = (0..n)
        .map(|_| crate::cluster::socket::bind(SocketAddr::from(([127, 0, 0, 1], 0))))
        .collect::<std::io::Result<Vec<_>>>()?;
    let peers = sockets
        .iter()
        .enumerate()
        .map(|(i, s)| Ok((i as NodeId + 1, s.local_addr()?)))
        .collect::<std::io::Result<Vec<_>>>()?;
    let clones = sockets
        .iter()
        .map(UdpSocket::try_clone)
        .collect::<std::io::Result<Vec<_>>>()?;
    let config = ClusterConfig {
        peers,
        new_cluster: true,
        ..template.clone()
    };
    let nodes = sockets
        .into_iter()
        .enumerate()
        .map(|(i, socket)| {
            let node_config = ClusterConfig {
                node_id: i as NodeId + 1,
                ..config.clone()
            };
            ClusterNode::start_on(socket, node_config)
        })
        .collect::<std::io::Result<Vec<_>>>()?;
    Ok((nodes, clones, config))
}

/// A forged PEER datagram from node 1 to node 2 of the cluster `config`, `len_target` bytes
/// long or a little less (heartbeat APPEND records of successive shards; at least one), sealed with `key`
/// and then one MAC bit flipped: everything a receiver checks before the MAC passes, and
/// the MAC, computed over the whole datagram, fails (BadMac) — the most a forgery can cost.
fn forged_datagram(config: &ClusterConfig, key: &ClusterKey, len_target: usize) -> Vec<u8> {
    use udplock_protocol::{AuthTrailer, PeerEntries, PeerHeader, PeerMessage, PeerWriter};
    let mut buf = vec![0u8; udplock_protocol::PEER_DATAGRAM_LEN_MAX];
    let header = PeerHeader {
        cluster_id: config.cluster_id(),
        from: 1,
    };
    let room = udplock_protocol::AUTH_TRAILER_LEN;
    let mut writer = PeerWriter::with_trailer_room(&mut buf, header, room);
    let heartbeat = PeerMessage::Append {
        term: 1,
        prev_log_index: 0,
        prev_log_term: 0,
        leader_commit: 0,
        round: 1,
        transfer_to: None,
        entries: PeerEntries::empty(),
    };
    let mut shard = 0;
    while writer.is_empty() || writer.len() + heartbeat.record_len() + room <= len_target {
        if writer
            .push(shard % config.shards as u16, &heartbeat)
            .is_err()
        {
            break;
        }
        shard += 1;
    }
    let len = writer.finish();
    let trailer = AuthTrailer {
        to: 2,
        incarnation: 1,
        peer_incarnation: 0,
        seq: 1,
        key_id: 0,
    };
    let sealed = key
        .seal(&mut buf, len, &trailer)
        .expect("a forged datagram fits");
    buf.truncate(sealed);
    buf[sealed - 1] ^= 1;
    buf
}

/// Sends `count` copies of `datagram` to node `to` from `from` (a clone of a listed node's
/// socket), never more than [`FORGED_WINDOW`] ahead of what the node has dropped for a bad
/// MAC; returns the node CPU time they cost, net of what the node spends idle for as long.
/// `None` if the node did not drop every one for its MAC.
fn forged_flood(
    from: &UdpSocket,
    to: &ClusterNode,
    datagram: &[u8],
    count: u64,
    cpu: &NodeCpu,
) -> Option<Duration> {
    let dropped = || to.stats().auth_dropped(AuthDrop::BadMac);
    // The node's own work meanwhile (heartbeats): measured idle, for the same time.
    let idle_for = Duration::from_millis(200);
    let idle_before = cpu.read()?;
    std::thread::sleep(idle_for);
    let idle_ns = cpu.read()?.saturating_sub(idle_before);
    let (first, cpu_before, started) = (dropped(), cpu.read()?, Instant::now());
    // A datagram the kernel lost (a full receive buffer) is never counted: the flood waits
    // for the counter only while it moves, and divides by what the node counted.
    let stall_max = Duration::from_millis(500);
    let mut progress = (0, Instant::now());
    let mut caught_up = |ahead_max: u64, sent: u64| -> Option<()> {
        loop {
            let counted = dropped().saturating_sub(first);
            if counted + ahead_max >= sent {
                return Some(());
            }
            if counted != progress.0 {
                progress = (counted, Instant::now());
            } else if progress.1.elapsed() > stall_max {
                return None;
            }
            std::thread::yield_now();
        }
    };
    for sent in 1..=count {
        let _ = from.send_to(datagram, to.local_addr());
        if caught_up(FORGED_WINDOW, sent).is_none() {
            break;
        }
    }
    let _ = caught_up(0, count);
    let counted = dropped().saturating_sub(first);
    let took = started.elapsed();
    let spent = cpu.read()?.saturating_sub(cpu_before);
    let idle = (idle_ns as f64 * took.as_secs_f64() / idle_for.as_secs_f64()) as u64;
    if counted < count / 2 {
        return None;
    }
    Some(Duration::from_nanos(
        spent.saturating_sub(idle) * count / counted,
    ))
}

/// Phase 6 — `peer keys` (embedded clusters of 2 nodes or more): what authenticating the
/// node-to-node traffic costs (issue 8's targets). Two fresh clusters run side by side on the
/// placement's server CPU, one with a generated cluster key and one without; per iteration
/// one raw round trip and one acquire+release on each (in alternating order), so both see
/// the same conditions and the same floor. Reports each acquire's latency, and the node CPU
/// per grant (all nodes' threads) of each cluster alone under 4-client hand-offs. Then forged
/// datagrams from a listed node's own address, each dropped for its MAC, the smallest and
/// the longest: the receiving node's CPU per forged datagram, beside the legitimate request's.
pub(super) fn peer_keys(
    config: &BenchConfig,
    template: &ClusterConfig,
    server_cpu: Option<usize>,
    notes: &mut Vec<String>,
) -> Result<Vec<PhaseReport>, LockError> {
    let failed = |e: std::io::Error| LockError::InternalError(format!("keys phase: {e}"));
    let (keyed_template, plain_template, key) = keyed_and_plain(template);
    // Each cluster's node threads are found once it has leaders: a thread names itself when
    // it starts, so one looked for right after the spawn may not carry its name yet.
    let before = NodeCpu::find();
    let (plain, _, _) = start_cluster_with_clones(config.nodes, &plain_template).map_err(failed)?;
    wait_for_leaders(&plain, &plain_template)?;
    let plain_cpu = NodeCpu::find().without(&before);
    let (keyed, keyed_sockets, keyed_config) =
        start_cluster_with_clones(config.nodes, &keyed_template).map_err(failed)?;
    wait_for_leaders(&keyed, &keyed_template)?;
    let keyed_cpu = NodeCpu::find().without(&before).without(&plain_cpu);
    if plain_cpu.paths.len() != config.nodes || keyed_cpu.paths.len() != config.nodes {
        return Err(LockError::InternalError(
            "keys phase: did not find one thread per node".into(),
        ));
    }
    let servers_of = |nodes: &[ClusterNode]| Servers {
        addrs: nodes.iter().map(ClusterNode::local_addr).collect(),
        shards: config.shards,
        key: config.client_key(),
    };
    let (keyed_servers, plain_servers) = (servers_of(&keyed), servers_of(&plain));
    let (keyed_client, plain_client) = (keyed_servers.client()?, plain_servers.client()?);
    let echo = Echo::start(server_cpu)?;
    let Alternated {
        rtt,
        first: with,
        second: without,
        elapsed,
    } = alternate(config, &keyed_client, &plain_client, &echo, "bench-client")?;
    let mut floor = summarize_floor("raw udp rtt (keys phase)", &rtt, elapsed);
    let floor_p50 = floor.p50_us;
    // Node CPU per grant, each cluster alone, under back-to-back hand-offs of one lock among
    // 4 clients (as the handoff rows): the nodes' idle work (heartbeats of every shard) is
    // then a small share of what they spend, and the two figures compare like with like.
    let cpu_run = Duration::from_millis(config.contention_ms.clamp(200, 1_000));
    let keyed_handoff = contention(&keyed_servers, 4, cpu_run, floor_p50, Some(&keyed_cpu))?;
    let plain_handoff = contention(&plain_servers, 4, cpu_run, floor_p50, Some(&plain_cpu))?;
    let mut with_keys = summarize("acquire, peer keys", &with, elapsed, floor_p50);
    with_keys.server_cpu_us_per_grant = keyed_handoff.server_cpu_us_per_grant;
    with_keys.goal = Some("p50 within 5% of no keys");
    let mut no_keys = summarize("acquire, no keys", &without, elapsed, floor_p50);
    no_keys.server_cpu_us_per_grant = plain_handoff.server_cpu_us_per_grant;
    // The loop interleaves all three.
    for (row, h) in [&mut floor, &mut with_keys, &mut no_keys]
        .into_iter()
        .zip([&rtt, &with, &without])
    {
        row.ops_per_sec = back_to_back_ops_per_sec(h);
    }

    // Forged datagrams, from node 1's address to node 2.
    let victim_cpu = NodeCpu::find_named(|comm| comm == "udplock-node-2").within(&keyed_cpu);
    let count = config.iterations;
    let mut forged = Vec::new();
    // One heartbeat record (the smallest), and as many as fit (the most MAC work).
    for len in [0, udplock_protocol::PEER_DATAGRAM_LEN_MAX] {
        let datagram = forged_datagram(&keyed_config, &key, len);
        let spent = forged_flood(&keyed_sockets[0], &keyed[1], &datagram, count, &victim_cpu);
        forged.push((datagram.len(), spent));
    }
    let us = |d: Option<Duration>| {
        d.map_or("?".to_string(), |d| {
            format!("{:.2}", d.as_secs_f64() * 1e6 / count as f64)
        })
    };
    notes.push(format!(
        "peer keys: acquire p50 {:.1} µs with keys, {:.1} µs without ({:+.1}%); node CPU per \
         grant (4-client hand-offs, all {} nodes) {} µs with keys, {} µs without; a forged peer \
         datagram dropped for its MAC costs the receiving node {} µs ({} B) and {} µs ({} B) \
         of CPU ({count} each)",
        with_keys.p50_us,
        no_keys.p50_us,
        (with_keys.p50_us / no_keys.p50_us.max(1e-9) - 1.0) * 100.0,
        config.nodes,
        with_keys
            .server_cpu_us_per_grant
            .map_or("?".into(), |v| format!("{v:.2}")),
        no_keys
            .server_cpu_us_per_grant
            .map_or("?".into(), |v| format!("{v:.2}")),
        us(forged[0].1),
        forged[0].0,
        us(forged[1].1),
        forged[1].0,
    ));
    Ok(vec![floor, with_keys, no_keys])
}
