//! Configuration checks and the public API's refusals.

use super::*;

#[test]
fn config_validation() {
    assert_eq!(Config::default().validate(), Ok(()));
    assert_eq!(config(3, 5).validate(), Ok(()));
    let field = |tweak: &dyn Fn(&mut Config)| {
        let mut config = config(1, 3);
        tweak(&mut config);
        config.validate().map_err(|error| error.field)
    };
    // No static voter: a replica a leader adds to a joined cluster's shard (it learns its
    // configuration from the log, and never campaigns before).
    assert_eq!(field(&|c| c.voters.clear()), Ok(()));
    assert_eq!(field(&|c| c.voters = vec![1, 2, 2]), Err("voters"));
    assert_eq!(field(&|c| c.id = 0), Err("id"));
    assert_eq!(
        field(&|c| c.election_timeout_min = c.election_timeout_max),
        Err("election_timeout_min")
    );
    assert_eq!(
        field(&|c| c.election_timeout_min = ms(400)),
        Err("election_timeout_min")
    );
    assert_eq!(
        field(&|c| c.heartbeat_interval = ms(76)),
        Err("heartbeat_interval")
    );
    assert_eq!(field(&|c| c.heartbeat_interval = ms(75)), Ok(()));
    assert_eq!(
        field(&|c| c.heartbeat_interval = Duration::ZERO),
        Err("heartbeat_interval")
    );
    assert_eq!(
        field(&|c| c.drift_bound_ppm = 1_000_000),
        Err("drift_bound_ppm")
    );
    assert_eq!(field(&|c| c.drift_bound_ppm = 999_999), Ok(()));
    assert_eq!(
        field(&|c| c.entries_per_append_max = 0),
        Err("entries_per_append_max")
    );
    // A node outside the static voters is valid: it joins as a learner (membership.rs).
    assert_eq!(config(4, 3).validate(), Ok(()));
    let error = config(0, 3).validate().unwrap_err();
    assert_eq!(error.to_string(), "config: id must not be 0");
    assert_eq!(field(&|c| c.voters = vec![1, 0]), Err("voters"));
    assert_eq!(field(&|c| c.voters = (1..=17).collect()), Err("voters"));
}

#[test]
#[should_panic(expected = "config: id must not be 0")]
fn new_refuses_an_invalid_config() {
    let _ = Raft::new(
        config(0, 3),
        1,
        HardState::default(),
        Vec::new(),
        Instant::ZERO,
    );
}

#[test]
fn propose_on_a_follower_names_the_leader() {
    let mut net = Net::new(3, 31);
    let leader = net.elect(ms(1_000));
    net.run_for(ms(50));
    let follower = net.ids().into_iter().find(|&id| id != leader).unwrap();
    let now = net.now;
    assert_eq!(
        net.node_mut(follower).propose(now, b"x".to_vec()),
        Err(NotLeader {
            leader_hint: Some(leader)
        })
    );
}
