//! Settings from `UDPLOCK_*` environment variables and host names, as a service manager or a
//! container runs the `udplock` binary: a server configured by its environment alone
//! answers; a flag wins over its variable; `--help` names every variable.

use std::process::Command;

use super::cli::Server;

const BIN: &str = env!("CARGO_BIN_EXE_udplock");

/// `udplock ARGS` with the environment `vars`: (exit code, stdout, stderr).
fn run(args: &[&str], vars: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let o = Command::new(BIN)
        .args(args)
        .envs(vars.iter().copied())
        .output()
        .expect("udplock runs");
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A server whose every setting comes from its environment (a host name for its address
/// too) answers a client whose every setting comes from its environment.
#[test]
fn a_server_from_environment_variables_only_answers() {
    let server = Server::start_with(
        &[],
        &[
            ("UDPLOCK_LISTEN", "localhost:0"),
            ("UDPLOCK_NO_STATE_FILE", "true"),
            ("UDPLOCK_TTL_DEFAULT_MS", "60000"),
        ],
    );
    let env = [
        ("UDPLOCK_SERVERS", server.addr.as_str()),
        ("UDPLOCK_CLIENT", "from-env"),
        ("UDPLOCK_JSON", "1"),
    ];
    let (code, out, err) = run(&["acquire", "env/1"], &env);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("\"client\":\"from-env\""), "{out}");
    assert!(
        out.contains("\"ttl_ms\":60000"),
        "the server's default TTL came from UDPLOCK_TTL_DEFAULT_MS: {out}"
    );
}

/// A flag wins over its variable: the server's and the client's.
#[test]
fn a_flag_overrides_its_variable() {
    let server = Server::start_with(
        &["--listen", "127.0.0.1:0", "--no-state-file"],
        &[("UDPLOCK_LISTEN", "no-such-host.invalid:1")],
    );
    let env = [
        ("UDPLOCK_SERVERS", "no-such-host.invalid:1"),
        ("UDPLOCK_CLIENT", "from-env"),
    ];
    let (code, out, err) = run(
        &[
            "acquire",
            "env/2",
            "--servers",
            &server.addr,
            "--client",
            "from-flag",
            "--json",
        ],
        &env,
    );
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("\"client\":\"from-flag\""), "{out}");
}

/// `--help` names the variable of every option of `udplock server` and of the client
/// commands.
#[test]
fn help_names_every_variable() {
    let (code, out, _) = run(&["server", "--help"], &[]);
    assert_eq!(code, Some(0));
    for var in [
        "UDPLOCK_LISTEN",
        "UDPLOCK_PEERS",
        "UDPLOCK_NODE_ID",
        "UDPLOCK_DATA_DIR",
        "UDPLOCK_DURABILITY",
        "UDPLOCK_NEW_CLUSTER",
        "UDPLOCK_SWIM_PERIOD",
        "UDPLOCK_DEFAULT_TTL",
        "UDPLOCK_CLUSTER_KEY_FILE",
    ] {
        assert!(
            out.contains(&format!("[env: {var}")),
            "{var} missing:\n{out}"
        );
    }
    let (code, out, _) = run(&["acquire", "--help"], &[]);
    assert_eq!(code, Some(0));
    for var in [
        "UDPLOCK_SERVERS",
        "UDPLOCK_CLIENT",
        "UDPLOCK_TIMEOUT",
        "UDPLOCK_TTL",
    ] {
        assert!(
            out.contains(&format!("[env: {var}")),
            "{var} missing:\n{out}"
        );
    }
}

/// A host name that does not resolve is named in the error (exit code 1, a usage error).
#[test]
fn an_unresolvable_host_is_named() {
    let (code, _, err) = run(
        &["server", "--listen", "no-such-host.invalid:7100"],
        &[("UDPLOCK_NO_STATE_FILE", "1")],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("no-such-host.invalid"), "{err}");
    let (code, _, err) = run(
        &[
            "status",
            "x",
            "--servers",
            "127.0.0.1:1,no-such-host.invalid:7100",
        ],
        &[],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("no-such-host.invalid"), "{err}");
}
