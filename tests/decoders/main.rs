//! The bounded fuzz pass of `cargo test` for the udplock crate's decoders (issue 12 item 8):
//! deterministic mutations of real encoded logs, snapshots and data directory files fed to
//! the `log` and `snapshot` families (`checks.rs`, the same checks as the cargo-fuzz targets
//! of fuzz/), with the contract checked on each input: no panic, reads that read back, the
//! canonical bytes the formats promise, and a bound on what decoding one input allocates.
//!
//! Its own test binary, not a module of tests/tests.rs: the allocation bound needs a counting
//! global allocator, which must not slow or count the other tests.
//!
//! `UDPLOCK_FUZZ_CORPUS=DIR cargo test --all-features --test decoders write_fuzz_corpus`
//! writes every family's seeds as corpus files, `DIR/<target>/<name>` (README "Fuzzing").

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

#[path = "../../protocol/tests/decoders/mod.rs"]
mod decoders;

mod checks;

/// Counts what the running thread holds allocated, and the most it held since the last
/// [`reset_peak`]: per thread, so the tests of this binary running side by side do not
/// count each other's.
struct Counting;

thread_local! {
    static HELD: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded to `System` unchanged; the counters are plain thread-local
// cells without destructors, so touching them never allocates or re-enters the allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        held_add(layout.size());
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        held_add(layout.size());
        System.alloc_zeroed(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        held_sub(layout.size());
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        held_sub(layout.size());
        held_add(new_size);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn held_add(n: usize) {
    let _ = HELD.try_with(|held| {
        let now = held.get().wrapping_add(n);
        held.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

fn held_sub(n: usize) {
    let _ = HELD.try_with(|held| held.set(held.get().wrapping_sub(n)));
}

/// What this thread holds now; the peak starts again from it.
fn reset_peak() -> usize {
    let now = HELD.with(Cell::get);
    PEAK.with(|peak| peak.set(now));
    now
}

/// The most this thread held since [`reset_peak`].
fn peak() -> usize {
    PEAK.with(Cell::get)
}

/// Most bytes one input of `len` bytes may make a decoder hold at once: the fixed structures
/// of a restored replica (its Raft core, a log command buffer) and a small multiple of the
/// input (read into a buffer, copied into entries, a table built from it). A length field
/// that made a decoder reserve what it claims, rather than what the input holds, breaks it.
fn alloc_bound(len: usize) -> usize {
    ALLOC_FIXED_BYTES + ALLOC_PER_INPUT_BYTE * len
}
const ALLOC_FIXED_BYTES: usize = 256 * 1024;
const ALLOC_PER_INPUT_BYTE: usize = 64;

/// Longest input: two of the largest seeds, so splices and extensions stay near real sizes.
fn len_max(seeds: &[Vec<u8>]) -> usize {
    2 * seeds.iter().map(Vec::len).max().unwrap_or(0) + 64
}

/// `count` mutations of `seeds` through `check`, each within the allocation bound; prints
/// the largest allocation seen relative to the input, for tuning the bound.
fn pass(name: &str, seed: u64, seeds: &[Vec<u8>], count: usize, check: fn(&[u8])) {
    let mut worst = (0usize, 0usize);
    decoders::mutation_pass(name, seed, seeds, count, len_max(seeds), |input| {
        let base = reset_peak();
        check(input);
        let used = peak().saturating_sub(base);
        assert!(
            used <= alloc_bound(input.len()),
            "{name}: {used} bytes held at once for an input of {} bytes",
            input.len()
        );
        if used > worst.0 {
            worst = (used, input.len());
        }
    });
    eprintln!(
        "{name}: {count} mutations; most held at once: {} bytes (input {} bytes)",
        worst.0, worst.1
    );
}

/// Mutations per family: each input opens stores and restores replicas several times over,
/// so fewer than the codec's pass, still seconds in a debug build.
const MUTATIONS: usize = 150_000;

#[test]
fn log_decoders_hold_their_contract_under_mutations() {
    pass(
        "log",
        0x1067_0002,
        &checks::log_seeds(),
        MUTATIONS,
        checks::log,
    );
}

#[test]
fn snapshot_decoders_hold_their_contract_under_mutations() {
    pass(
        "snapshot",
        0x5a9_0001,
        &checks::snapshot_seeds(),
        MUTATIONS,
        checks::snapshot,
    );
}

/// The seeds are what they claim: each family's real samples decode as they should, so the
/// mutations start from inputs that reach deep into the decoders.
#[test]
fn the_seeds_are_valid_samples() {
    use udplock::core::lock_table::LockTable;
    let table = checks::table_snapshot();
    let restored = LockTable::restore(Default::default(), &table).expect("the table seed");
    assert_eq!(restored.stats().held, 2);
    let replica = checks::restore_replica(&checks::shard_snapshot()).expect("the shard seed");
    assert_eq!(replica.table().map(|t| t.stats().held), Some(2));
    let log = checks::log_seeds();
    let log_file = log.iter().find(|s| s.starts_with(b"ULLOG")).unwrap();
    let vote = checks::late_vote_file();
    let disk = checks::MemDisk::with(&[("shard-0000.log", log_file), ("shard-0000.state", vote)]);
    let (_, read) = udplock::store::ShardStore::open_on(disk, 0, false).expect("the log seed");
    assert_eq!(read.log.len(), 12);
    let snap = log.iter().find(|s| s.starts_with(b"ULSN")).unwrap();
    let disk = checks::MemDisk::with(&[("shard-0000.snap", snap), ("shard-0000.state", vote)]);
    let (_, read) = udplock::store::ShardStore::open_on(disk, 0, false).expect("the snap seed");
    assert_eq!(read.snapshot.map(|(meta, _)| meta.index), Some(9));
    let wal = log.iter().find(|s| s.starts_with(b"ULWAL")).unwrap();
    let disk = checks::MemDisk::with(&[("wal-0000000000000001", wal)]);
    let mut wal = udplock::store::Wal::open(disk, false, udplock::store::SEGMENT_BYTES)
        .expect("the write-ahead log seed");
    assert_eq!(wal.take(1).expect("shard 1").log.len(), 12);
}

/// The allocation bound is checked for real: the counter sees a large allocation, and frees.
#[test]
fn the_allocation_counter_sees_what_a_decoder_would_hold() {
    let base = reset_peak();
    let held = vec![1u8; 1 << 20];
    assert!(
        peak() - base >= 1 << 20,
        "peak {} after a 1 MiB vector",
        peak()
    );
    drop(held);
    assert!(
        HELD.with(Cell::get) < base + 1024,
        "the vector was not counted as freed"
    );
    assert!(
        alloc_bound(0) < 1 << 20,
        "the bound would miss a 1 MiB reservation"
    );
}

/// Writes every target's seeds under `$UDPLOCK_FUZZ_CORPUS/<target>/` (nothing without it):
/// the spec's vectors for `client`, `peer` and `log`, real encoded samples for `log` and
/// `snapshot`.
#[test]
fn write_fuzz_corpus() {
    let families: [(&str, Vec<Vec<u8>>); 4] = [
        ("client", decoders::vector_seeds(decoders::CLIENT_VECTORS)),
        ("peer", decoders::vector_seeds(decoders::PEER_VECTORS)),
        ("log", checks::log_seeds()),
        ("snapshot", checks::snapshot_seeds()),
    ];
    for (target, seeds) in &families {
        assert!(seeds.len() >= 5, "{target}: {} seeds", seeds.len());
    }
    let Some(dir) = std::env::var_os("UDPLOCK_FUZZ_CORPUS") else {
        return;
    };
    for (target, seeds) in &families {
        let dir = std::path::Path::new(&dir).join(target);
        std::fs::create_dir_all(&dir).unwrap();
        for (i, seed) in seeds.iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i:03}")), seed).unwrap();
        }
        eprintln!("{}: {} seeds", dir.display(), seeds.len());
    }
}
