//! The bounded fuzz pass of `cargo test` (issue 12 item 8): a few hundred thousand
//! deterministic mutations of the spec's vectors (bit flips, edge values, truncations,
//! extensions, splices, random bytes) fed to every decoder of each family, with the contract
//! of protocol/src/lib.rs checked on each: no panic, canonical re-encoding. The same checks
//! are the cargo-fuzz targets `client`, `peer` and `log` (fuzz/, README "Fuzzing"), which
//! search without bound; this pass keeps CI on the stable toolchain and under seconds.

mod decoders;

use decoders::{mutation_pass, vector_seeds, CLIENT_VECTORS, LOG_VECTORS, PEER_VECTORS};
use udplock_protocol::{DATAGRAM_LEN_MAX, LOG_COMMAND_LEN_MAX, PEER_DATAGRAM_LEN_MAX};

/// Mutations per family: enough to reach every decoder's error paths from the vectors
/// (each input goes to about ten decoders), few enough for seconds in a debug build.
const MUTATIONS: usize = 200_000;

#[test]
fn client_decoders_hold_their_contract_under_mutations() {
    let seeds = vector_seeds(CLIENT_VECTORS);
    mutation_pass(
        "client",
        0xc11e_0001,
        &seeds,
        MUTATIONS,
        DATAGRAM_LEN_MAX + 64,
        decoders::client,
    );
}

#[test]
fn peer_decoders_hold_their_contract_under_mutations() {
    let seeds = vector_seeds(PEER_VECTORS);
    mutation_pass(
        "peer",
        0x9ee2_0001,
        &seeds,
        MUTATIONS,
        PEER_DATAGRAM_LEN_MAX + 64,
        decoders::peer,
    );
}

#[test]
fn the_log_command_decoder_holds_its_contract_under_mutations() {
    let seeds = vector_seeds(LOG_VECTORS);
    mutation_pass(
        "log command",
        0x1067_0001,
        &seeds,
        MUTATIONS,
        LOG_COMMAND_LEN_MAX + 64,
        decoders::log_command,
    );
}

/// The pass would be worthless if its mutations never decoded: some must, for the canonical
/// checks to run, and most must not, for the error paths to run.
#[test]
fn the_mutations_reach_both_sides_of_the_decoders() {
    let seeds = vector_seeds(CLIENT_VECTORS);
    let mut m = decoders::Mutator::new(7);
    let (mut ok, mut err) = (0, 0);
    for _ in 0..20_000 {
        let input = m.mutate(&seeds, DATAGRAM_LEN_MAX);
        match udplock_protocol::Request::decode(&input) {
            Ok(_) => ok += 1,
            Err(_) => err += 1,
        }
    }
    assert!(ok > 100 && err > 10_000, "decoded {ok}, refused {err}");
}
