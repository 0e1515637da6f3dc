//! The `udplock` command as a user runs it: a server process, client commands in separate
//! processes, JSON output and exit codes (0 ok, 3 timeout, 4 not held, 5 no such resource,
//! 6 unavailable), and a closed stdout.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_udplock");

/// A `udplock server` process, killed on drop (also used by `environment.rs`).
pub(super) struct Server {
    child: Child,
    /// The address it listens on, as its first line names it.
    pub(super) addr: String,
}

impl Server {
    /// A server on a free port.
    fn start() -> Server {
        Server::start_with(&["--listen", "127.0.0.1:0"], &[])
    }

    /// A server started with `args` and the environment variables `vars`.
    pub(super) fn start_with(args: &[&str], vars: &[(&str, &str)]) -> Server {
        let mut child = Command::new(BIN)
            .arg("server")
            .args(args)
            .envs(vars.iter().copied())
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("udplock server starts");
        // The server names its address on its first line: "... listening on ADDR ...".
        let mut line = String::new();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        stderr.read_line(&mut line).unwrap();
        // Keep draining the server's stderr, as a terminal would: a server must not depend
        // on it, but a full pipe must not stall it either.
        std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
        let addr = line
            .split_whitespace()
            .skip_while(|w| *w != "on")
            .nth(1)
            .unwrap_or_else(|| panic!("the server did not start: {line:?}"))
            .to_string();
        Server { child, addr }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .args(["--servers", &self.addr])
            .output()
            .expect("udplock runs")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn lock_from_one_process_release_from_another_with_exit_codes() {
    let server = Server::start();
    let o = server.run(&["acquire", "job/1", "--client", "cron-a", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let json = stdout(&o);
    assert!(
        json.starts_with("{\"resource\":\"job/1\",\"client\":\"cron-a\",\"token\":"),
        "{json}"
    );
    assert!(json.contains("\"hold_count\":1"), "{json}");

    // Another client times out (3); a release by a non-holder is refused (4).
    let o = server.run(&[
        "acquire",
        "job/1",
        "--client",
        "cron-b",
        "--timeout-ms",
        "200",
    ]);
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    let o = server.run(&["release", "job/1", "--client", "cron-b"]);
    assert_eq!(o.status.code(), Some(4), "{o:?}");

    // Status names the holder.
    let o = server.run(&["status", "job/1", "--json"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(
        stdout(&o).contains("\"holder\":\"cron-a\""),
        "{}",
        stdout(&o)
    );

    // The holder's id releases it from a new process; then the lock is free (0).
    let o = server.run(&["release", "job/1", "--client", "cron-a"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let o = server.run(&["status", "job/1"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert_eq!(stdout(&o), "job/1: free, 0 waiting\n");

    // Usage errors are exit code 1 and say what is wrong.
    let o = server.run(&["acquire", "job/1"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--client"));
}

#[test]
fn a_holder_that_exits_without_releasing_loses_the_lock_after_its_ttl() {
    let server = Server::start();
    let before_grant = Instant::now();
    let o = server.run(&["acquire", "job/2", "--client", "doomed", "--ttl-ms", "500"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    // The process has exited; the lock is still held until its lease runs out.
    let o = server.run(&["status", "job/2", "--json"]);
    assert!(
        stdout(&o).contains("\"holder\":\"doomed\""),
        "{}",
        stdout(&o)
    );
    let o = server.run(&[
        "acquire",
        "job/2",
        "--client",
        "heir",
        "--timeout-ms",
        "5000",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    // The doomed hold was granted after `before_grant`, so its lease ran out no earlier than
    // 500 ms after it: the heir cannot have had the lock sooner.
    assert!(
        before_grant.elapsed() >= Duration::from_millis(500),
        "granted before the TTL ran out"
    );
}

#[test]
fn no_server_is_exit_code_6() {
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let o = Command::new(BIN)
        .args([
            "release",
            "r",
            "--client",
            "c",
            "--timeout-ms",
            "200",
            "--servers",
            &addr,
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(6), "{o:?}");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("udplock server"), "{stderr}");
    assert!(stderr.contains("--servers"), "{stderr}");
}

/// Issue 7 item 12: the exit codes mean what the README says. Not holding a lock is 4 however
/// it came about (released twice, lease ran out, never acquired); a free lock's status is an
/// answer (0) that says it is free; 5 is only for clearing the configuration of a resource the
/// server does not know.
#[test]
fn errors_mean_what_the_docs_say() {
    let server = Server::start();
    let o = server.run(&["acquire", "job/3", "--client", "a"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let o = server.run(&["release", "job/3", "--client", "a"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    // Released twice.
    let o = server.run(&["release", "job/3", "--client", "a"]);
    assert_eq!(o.status.code(), Some(4), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("does not hold the lock"),
        "{o:?}"
    );
    let o = server.run(&["renew", "job/3", "--client", "a"]);
    assert_eq!(o.status.code(), Some(4), "{o:?}");
    // A free lock: a health probe gets 0 and a body that says free.
    let o = server.run(&["status", "job/3", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert_eq!(
        stdout(&o),
        "{\"resource\":\"job/3\",\"held\":false,\"holder\":null,\"holder_truncated\":false,\
         \"hold_count\":0,\"token\":0,\"remaining_ttl_ms\":0,\"waiters\":0}\n"
    );
    // The lease ran out: the former holder no longer holds it.
    let o = server.run(&["acquire", "job/3", "--client", "a", "--ttl-ms", "1"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let o = server.run(&["status", "job/3"]);
        assert_eq!(o.status.code(), Some(0), "{o:?}");
        if stdout(&o).contains("free") {
            break;
        }
        assert!(Instant::now() < deadline, "a 1 ms lease never ran out");
    }
    let o = server.run(&["release", "job/3", "--client", "a"]);
    assert_eq!(o.status.code(), Some(4), "{o:?}");
    // Nothing to clear on a resource the server does not know.
    let o = server.run(&["configure", "job/never", "--default-ttl-ms", "0"]);
    assert_eq!(o.status.code(), Some(5), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("does not know this resource"),
        "{o:?}"
    );
}

/// Issue 7 item 13: `udplock status | head -1` used to die with "failed printing to stdout:
/// Broken pipe" (exit 101). Every command is run here with a stdout whose reader is already
/// gone, so the first write fails at once (no race with a reader that closes later): each
/// must finish its operation, exit with its usual code and print no panic.
#[test]
fn a_closed_stdout_is_no_crash() {
    use std::os::fd::OwnedFd;
    use std::os::unix::net::UnixStream;
    let server = Server::start();
    let closed_stdout = || {
        // A stream socket whose peer is closed fails every write with EPIPE, as a pipe whose
        // reader exited does (std::io::pipe needs a newer Rust than this crate's minimum).
        let (ours, reader) = UnixStream::pair().unwrap();
        drop(reader);
        Stdio::from(OwnedFd::from(ours))
    };
    let run = |args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .args(["--servers", &server.addr])
            .stdout(closed_stdout())
            .stderr(Stdio::piped())
            .output()
            .expect("udplock runs")
    };
    for (args, code) in [
        (&["acquire", "pipe/1", "--client", "a", "--json"][..], 0),
        (&["status", "pipe/1"], 0),
        (&["status", "pipe/1", "--json"], 0),
        (&["renew", "pipe/1", "--client", "a"], 0),
        (
            &["acquire", "pipe/1", "--client", "b", "--timeout-ms", "0"],
            3,
        ),
        (&["release", "pipe/1", "--client", "a"], 0),
        (&["release", "pipe/1", "--client", "a"], 4),
        (&["configure", "pipe/1", "--default-ttl-ms", "500"], 0),
    ] {
        let o = run(args);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(code), "{args:?}: {o:?}");
        assert!(
            !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
            "{args:?}: {stderr}"
        );
    }
    // The operations took effect although nothing could be printed.
    let o = server.run(&["status", "pipe/1", "--json"]);
    assert!(stdout(&o).contains("\"held\":false"), "{}", stdout(&o));
}

/// Issue 7 item 15: `renew --ttl-ms 5000` printed "lease 5000 ms" while `status` showed the
/// 30 s lease the hold still had. A renewal never shortens a lease, so what renew reports is
/// the lease the holder actually has.
#[test]
fn renew_reports_the_lease_the_holder_has() {
    let server = Server::start();
    let lease_ms = |o: &Output| -> u64 {
        let json = stdout(o);
        let at = json.find("\"ttl_ms\":").expect("ttl_ms in the output") + 9;
        json[at..].trim_end_matches(['}', '\n']).parse().unwrap()
    };
    let o = server.run(&[
        "acquire", "job/4", "--client", "a", "--ttl-ms", "3600000", "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert_eq!(lease_ms(&o), 3_600_000);
    let o = server.run(&[
        "renew", "job/4", "--client", "a", "--ttl-ms", "5000", "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    // What is left of the hour (the time between the two commands is not known, but it is
    // far less than the 59 minutes that would bring the lease down to 5 s).
    let renewed = lease_ms(&o);
    assert!((5_001..=3_600_000).contains(&renewed), "{}", stdout(&o));
    let o = server.run(&["status", "job/4", "--json"]);
    assert!(stdout(&o).contains("\"hold_count\":1"), "{}", stdout(&o));
}

/// The stderr of `udplock ARGS` run without a server (a usage error needs none), and its
/// exit code.
fn refused(args: &[&str]) -> (Option<i32>, String) {
    let o = Command::new(BIN)
        .args(args)
        .env("UDPLOCK_NO_STATE_FILE", "1")
        .output()
        .expect("udplock runs");
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Issue 11 items 1 and 5: every flag that takes a time takes a unit (`5s`, `250ms`) under a
/// unit-free name (`--ttl`, `--timeout`, `--default-ttl`, ...); the old `--*-ms` spellings,
/// bare numbers of milliseconds and the old variable names keep working.
#[test]
fn durations_take_units_and_the_old_spellings_still_work() {
    let server = Server::start_with(
        &[
            "--listen",
            "127.0.0.1:0",
            "--no-state-file",
            "--default-ttl",
            "1m",
            "--ttl-max",
            "10m",
            "--wait-max",
            "30s",
        ],
        &[],
    );
    let ttl_ms = |o: &Output| -> u64 {
        let v: serde_json::Value = serde_json::from_str(&stdout(o)).expect("one JSON object");
        v["ttl_ms"].as_u64().expect("ttl_ms")
    };
    let o = server.run(&[
        "acquire",
        "units/1",
        "--client",
        "a",
        "--ttl",
        "2m",
        "--timeout",
        "1s",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert_eq!(ttl_ms(&o), 120_000);
    // The server's --default-ttl 1m.
    let o = server.run(&["acquire", "units/2", "--client", "a", "--json"]);
    assert_eq!(ttl_ms(&o), 60_000, "{o:?}");
    // The old spellings, bare milliseconds.
    let o = server.run(&[
        "acquire",
        "units/3",
        "--client",
        "a",
        "--ttl-ms",
        "1500",
        "--timeout-ms",
        "1000",
        "--json",
    ]);
    assert_eq!(ttl_ms(&o), 1_500, "{o:?}");
    let o = server.run(&["configure", "units/4", "--default-ttl", "45s", "--json"]);
    assert_eq!(
        stdout(&o),
        "{\"resource\":\"units/4\",\"default_ttl_ms\":45000}\n",
        "{o:?}"
    );
    let o = server.run(&["configure", "units/4", "--default-ttl-ms", "0"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    // A wait from the variable, new name and old: units/1 is held for two minutes.
    for (var, value) in [("UDPLOCK_TIMEOUT", "100ms"), ("UDPLOCK_TIMEOUT_MS", "100")] {
        let o = Command::new(BIN)
            .args([
                "acquire",
                "units/1",
                "--client",
                "b",
                "--servers",
                &server.addr,
            ])
            .env(var, value)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(3), "{var}: {o:?}");
    }
}

/// Issue 11 item 1: a duration out of a flag's range is refused before anything is sent,
/// naming the flag and the limit; so is one with an unknown unit or finer than a millisecond.
#[test]
fn out_of_range_durations_name_the_flag_and_the_limit() {
    let (code, err) = refused(&["acquire", "r", "--client", "a", "--timeout", "10m"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("--timeout") && err.contains("5m (300000 ms)"),
        "{err}"
    );
    let (code, err) = refused(&["acquire", "r", "--client", "a", "--ttl", "1.5s"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("--ttl") && err.contains("unit"), "{err}");
    let (code, err) = refused(&["renew", "r", "--client", "a", "--ttl", "1500us"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("whole number of milliseconds"), "{err}");
    let (code, err) = refused(&["server", "--election-timeout", "2m"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("--election-timeout") && err.contains("1m (60000 ms)"),
        "{err}"
    );
    let (code, err) = refused(&["dev", "--swim-period-ms", "5"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("--swim-period") && err.contains("below the minimum of 10ms"),
        "{err}"
    );
    let (code, err) = refused(&["bench", "--throughput-time", "0s"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("--throughput-time"), "{err}");
}

/// Issue 13 item 5: `bench --disk-floor DIR` measures fdatasync in DIR, which must be a
/// directory (on the nodes' data-directory file system); anything else is refused before a
/// phase runs.
#[test]
fn bench_refuses_a_disk_floor_that_is_not_a_directory() {
    let (code, err) = refused(&["bench", "--disk-floor", "/nonexistent/udplock-disk-floor"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("--disk-floor") && err.contains("not a directory"),
        "{err}"
    );
}

/// Issue 11 item 6: a field the server refuses as out of range (INVALID_ARGUMENT) is named,
/// with the value asked and the server's limit, which the client learns from the node's
/// settings (NODE_SETTINGS) once the refusal came. The CLI adds which flag it was.
#[test]
fn a_refused_field_is_named_with_the_servers_limit() {
    let server = Server::start_with(
        &[
            "--listen",
            "127.0.0.1:0",
            "--no-state-file",
            "--ttl-max",
            "5m",
            "--wait-max",
            "10s",
        ],
        &[],
    );
    let stderr = |o: &Output| String::from_utf8_lossy(&o.stderr).into_owned();
    let o = server.run(&["acquire", "limits/1", "--client", "a", "--ttl", "10m"]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(
        stderr(&o).contains("ttl 600000 ms is above the server's maximum of 300000 ms"),
        "{o:?}"
    );
    assert!(stderr(&o).contains("--ttl"), "{o:?}");
    let o = server.run(&["acquire", "limits/1", "--client", "a", "--timeout", "1m"]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(
        stderr(&o).contains("wait 60000 ms is above the server's maximum of 10000 ms"),
        "{o:?}"
    );
    assert!(stderr(&o).contains("--timeout"), "{o:?}");
    let o = server.run(&["acquire", "limits/1", "--client", "a", "--ttl", "1m"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let o = server.run(&["renew", "limits/1", "--client", "a", "--ttl", "1h"]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(
        stderr(&o).contains("ttl 3600000 ms is above the server's maximum of 300000 ms"),
        "{o:?}"
    );
    let o = server.run(&["configure", "limits/2", "--default-ttl", "6m"]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(
        stderr(&o).contains("default ttl 360000 ms is above the server's maximum of 300000 ms"),
        "{o:?}"
    );
    assert!(stderr(&o).contains("--default-ttl"), "{o:?}");
}

/// Issue 11 item 6: the library's error names the field and the limit in its own words, and
/// says nothing of the CLI's flags.
#[test]
fn the_librarys_refusal_names_no_flag() {
    let server = Server::start_with(
        &[
            "--listen",
            "127.0.0.1:0",
            "--no-state-file",
            "--ttl-max",
            "5m",
        ],
        &[],
    );
    let addr: std::net::SocketAddr = server.addr.parse().unwrap();
    let client = udplock::Client::new(udplock::ClientConfig::new(vec![addr])).unwrap();
    let e = client
        .acquire("limits/3", "a", 1_000, Some(600_000))
        .unwrap_err();
    assert!(matches!(e, udplock::LockError::InvalidArgument(_)), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains("ttl 600000 ms is above the server's maximum of 300000 ms"),
        "{text}"
    );
    assert!(!text.contains("--"), "{text}");
}

/// Issue 11 item 6: a busy port says so, with the address, instead of an OS error number.
#[test]
fn a_busy_port_says_so() {
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, err) = refused(&["server", "--listen", &addr]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "address {addr} is already in use (another udplock server?)"
        )),
        "{err}"
    );
    // A node of a cluster too.
    let peers = format!("1@{addr},2@127.0.0.1:9");
    let (code, err) = refused(&[
        "server",
        "--node-id",
        "1",
        "--peers",
        &peers,
        "--listen",
        &addr,
        "--durability",
        "memory",
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!("address {addr} is already in use")),
        "{err}"
    );
}

/// Issue 11 item 6: a `--listen` host name is resolved, and the server says to which
/// address (the first) it bound.
#[test]
fn a_listen_host_name_is_resolved_and_named() {
    let server = Server::start_with(&["--listen", "localhost:0", "--no-state-file"], &[]);
    let o = server.run(&["acquire", "named/1", "--client", "a"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let mut child = Command::new(BIN)
        .args(["server", "--listen", "localhost:0", "--no-state-file"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(line.contains("localhost:0 resolved to"), "{line}");
}

/// Issue 11 item 7: every `--json` output is one valid JSON object with the fields the
/// README's "JSON output" lists (an id with quotes and control bytes included).
#[test]
fn every_json_output_parses_with_its_documented_fields() {
    let server = Server::start();
    let parse = |o: &Output| -> serde_json::Value {
        assert_eq!(o.status.code(), Some(0), "{o:?}");
        let out = stdout(o);
        assert_eq!(out.lines().count(), 1, "{out}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    };
    let keys = |v: &serde_json::Value| -> Vec<String> {
        v.as_object().expect("an object").keys().cloned().collect()
    };
    let has = |v: &serde_json::Value, fields: &[&str]| {
        let keys = keys(v);
        for f in fields {
            assert!(keys.iter().any(|k| k == f), "{f} missing from {v}");
        }
    };
    let odd = "a \"quoted\"\tid\u{1}";
    let v = parse(&server.run(&["acquire", odd, "--client", odd, "--json"]));
    has(&v, &["resource", "client", "token", "hold_count", "ttl_ms"]);
    assert_eq!(v["resource"], odd);
    let v = parse(&server.run(&["renew", odd, "--client", odd, "--json"]));
    has(&v, &["resource", "client", "token", "hold_count", "ttl_ms"]);
    let v = parse(&server.run(&["status", odd, "--json"]));
    has(
        &v,
        &[
            "resource",
            "held",
            "holder",
            "holder_truncated",
            "hold_count",
            "token",
            "remaining_ttl_ms",
            "waiters",
        ],
    );
    assert_eq!(v["holder"], odd);
    let v = parse(&server.run(&["release", odd, "--client", odd, "--json"]));
    has(&v, &["resource", "client", "hold_count"]);
    let v = parse(&server.run(&["configure", odd, "--default-ttl", "2s", "--json"]));
    has(&v, &["resource", "default_ttl_ms"]);
    let v = parse(&server.run(&["status", "--json"]));
    has(
        &v,
        &[
            "shards_total",
            "shards",
            "nodes",
            "members",
            "settings_differences",
        ],
    );
    has(
        &v["shards"][0],
        &[
            "shard",
            "leader_id",
            "leader_address",
            "term",
            "commit_index",
            "applied_index",
            "held",
            "waiters",
            "reported_by",
            "voters",
            "learners",
        ],
    );
    has(
        &v["nodes"][0],
        &[
            "address",
            "reachable",
            "node_id",
            "shards",
            "holds",
            "learner_in",
            "leads",
        ],
    );
    has(
        &v["members"][0],
        &[
            "id",
            "state",
            "incarnation",
            "address",
            "reported_by",
            "cluster_id",
            "settings",
            "settings_differ",
            "address_validation",
        ],
    );
}

/// Issue 12 item 5: a holder's id is whatever some client sent, and `udplock status` used to
/// print it raw, so any client could put terminal escape sequences (here: clear the screen,
/// then set the window title) in front of an operator. Human-readable output escapes them;
/// JSON carries the id exactly (serde escapes control characters itself).
#[test]
fn a_holder_id_with_escape_sequences_prints_escaped() {
    let server = Server::start();
    let evil = "evil\x1b[2J\x1b]0;pwned\x07";
    let o = server.run(&["acquire", "job/esc", "--client", evil, "--ttl", "60s"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert!(!o.stdout.contains(&0x1b), "{:?}", stdout(&o));
    let o = server.run(&["status", "job/esc"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let text = stdout(&o);
    assert!(
        !o.stdout.contains(&0x1b) && !o.stdout.contains(&0x07),
        "{text:?}"
    );
    assert!(
        text.starts_with("job/esc: held by evil\\x1b[2J\\x1b]0;pwned\\x07 (hold count 1"),
        "{text:?}"
    );
    let o = server.run(&["status", "job/esc", "--json"]);
    assert!(
        stdout(&o).contains(r#""holder":"evil\u001b[2J\u001b]0;pwned\u0007""#),
        "{}",
        stdout(&o)
    );
}
