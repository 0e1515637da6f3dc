//! `cargo bench`: the `udplock bench` runner with small parameters against an embedded 3-node
//! cluster (every phase, one failover, the disk floor) and then the single unreplicated node,
//! so the runner and every phase keep working (`cargo test` runs it too, in the debug build:
//! keep it short).
//! For real figures run `cargo run --release -- bench`.

use udplock::bench::{self, BenchConfig};

fn main() {
    let cluster = BenchConfig {
        nodes: 3,
        iterations: 300,
        held: vec![100],
        throughput_clients: vec![1, 8],
        throughput_ms: 200,
        contenders: vec![4],
        contention_ms: 200,
        failovers: 1,
        // The disk floor's two rows, in this build's scratch directory.
        disk_floor: Some(env!("CARGO_TARGET_TMPDIR").into()),
        ..BenchConfig::default()
    };
    let single = BenchConfig {
        nodes: 1,
        iterations: 1_000,
        contenders: vec![4, 16],
        throughput_clients: vec![1, 8],
        // Phase 7 (client keys, with and without side by side) on the single node.
        client_keys_both: true,
        disk_floor: None,
        ..cluster.clone()
    };
    for config in [cluster, single] {
        println!("target: {}", config.target_label());
        println!("{}", bench::table_header());
        let placements = bench::default_placements(&config);
        let report = bench::run(&config, &placements, |p| {
            println!("{}", bench::format_phase(p))
        })
        .expect("benchmark run failed");
        // Every phase must have produced samples: an empty phase means the runner is broken.
        for p in &report.phases {
            assert!(p.samples > 0, "phase {} recorded nothing", p.name);
            assert!(p.p50_us > 0.0, "phase {} has no latency", p.name);
        }
        let failovers = report
            .phases
            .iter()
            .filter(|p| p.name.contains("failover"))
            .count();
        let expected = if config.nodes >= 3 {
            placements.len()
        } else {
            0
        };
        assert_eq!(failovers, expected, "one failover phase per placement");
        // Issue 13 item 5: a replicated run puts the replication message-pattern floor
        // beside the raw round trip in every placement, and divides the acquire by it; the
        // single node has no such floor.
        let named = |what: &str| {
            report
                .phases
                .iter()
                .filter(|p| p.name.contains(what))
                .count()
        };
        let replicated = config.nodes >= 2;
        assert_eq!(
            named("replication floor (1 of 2 acks)"),
            if replicated { placements.len() } else { 0 }
        );
        for p in report
            .phases
            .iter()
            .filter(|p| p.name.contains("] acquire ("))
        {
            assert_eq!(
                p.p50_ratio_to_replication_floor.is_some(),
                replicated,
                "{}",
                p.name
            );
        }
        let disk = if config.disk_floor.is_some() { 1 } else { 0 };
        assert_eq!(named("[disk] fdatasync 128 B (1 writer)"), disk);
        assert_eq!(named("[disk] fdatasync 128 B (3 writers at once)"), disk);
        for note in &report.notes {
            println!("note: {note}");
        }
        println!("{}", bench::to_json(&report));
    }
}
