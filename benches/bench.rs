//! `cargo bench`: the `udplock bench` runner with small parameters against an embedded node,
//! so the runner and every phase keep working (`cargo test` runs it too). For real figures
//! run `cargo run --release -- bench`.

use udplock::bench::{self, BenchConfig};

fn main() {
    let config = BenchConfig {
        iterations: 2_000,
        held: vec![1_000],
        contenders: vec![4, 16],
        contention_ms: 300,
        ..BenchConfig::default()
    };
    println!("{}", bench::table_header());
    let placements = bench::default_placements(None);
    let report = bench::run(&config, &placements, |p| {
        println!("{}", bench::format_phase(p))
    })
    .expect("benchmark run failed");
    // Every phase must have produced samples: an empty phase means the runner is broken.
    for p in &report.phases {
        assert!(p.samples > 0, "phase {} recorded nothing", p.name);
        assert!(p.p50_us > 0.0, "phase {} has no latency", p.name);
    }
    println!("{}", bench::to_json(&report));
}
