//! `udplock lock NAME -- CMD`: the command runs under the lock with its token in the
//! environment, its exit code passes through, udplock's own outcomes use 123 to 127, a second
//! run waits for the first, and a command is stopped when the lock is being lost, before the
//! lease's validity ends.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use udplock::Client;

use super::start_node;

const BIN: &str = env!("CARGO_BIN_EXE_udplock");

fn lock_cmd(servers: &str, args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command.arg("lock").args(["--servers", servers]).args(args);
    command
}

/// Waits until `what` holds, up to a generous bound.
fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(Instant::now() < end, "{what}: not within 30 s");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Reads the child's stdout up to its first line.
fn first_line(child: &mut Child) -> String {
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    line
}

#[test]
fn the_command_gets_the_token_and_its_exit_code_passes_through() {
    let node = start_node();
    let servers = node.local_addr().to_string();
    let out = lock_cmd(
        &servers,
        &[
            "lk/env",
            "--",
            "sh",
            "-c",
            "echo \"$UDPLOCK_FENCING_TOKEN $UDPLOCK_RESOURCE\"; exit 7",
        ],
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let (token, resource) = stdout.trim().split_once(' ').unwrap();
    assert!(token.parse::<u64>().unwrap() > 0, "{stdout}");
    assert_eq!(resource, "lk/env");
    // Released when the command exited.
    let client = Client::connect(&[node.local_addr()]).unwrap();
    assert_eq!(client.status("lk/env").unwrap().hold_count, 0);
    let ok = lock_cmd(&servers, &["lk/env", "--", "true"])
        .status()
        .unwrap();
    assert_eq!(ok.code(), Some(0));
    // Killed by a signal: 128 + N, as a shell says.
    let killed = lock_cmd(&servers, &["lk/env", "--", "sh", "-c", "kill -9 $$"])
        .status()
        .unwrap();
    assert_eq!(killed.code(), Some(128 + 9));
}

#[test]
fn udplocks_own_outcomes_use_123_to_127() {
    let node = start_node();
    let servers = node.local_addr().to_string();
    let code = |args: &[&str]| {
        let out = lock_cmd(&servers, args).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (status, stderr) = code(&["lk/own", "--", "/no/such/command"]);
    assert_eq!(status, Some(127), "{stderr}");
    let (status, stderr) = code(&["lk/own", "--", "/"]);
    assert_eq!(status, Some(126), "{stderr}");
    let (status, stderr) = code(&[
        "lk/own",
        "--ttl",
        "1s",
        "--kill-after",
        "500ms",
        "--",
        "true",
    ]);
    assert_eq!(status, Some(125), "{stderr}");
    assert!(stderr.contains("--kill-after"), "{stderr}");
    let (status, stderr) = code(&["lk/own", "--ttl", "5 fortnights", "--", "true"]);
    assert_eq!(status, Some(125), "usage error: {stderr}");
    let (status, _) = code(&["lk/own"]);
    assert_eq!(status, Some(125), "no command");
    let client = Client::connect(&[node.local_addr()]).unwrap();
    client.acquire("lk/own", "someone", 1_000, None).unwrap();
    let (status, stderr) = code(&["lk/own", "--wait", "0", "--", "true"]);
    assert_eq!(status, Some(124), "{stderr}");
    assert!(stderr.contains("not acquired"), "{stderr}");
    let unreachable = lock_cmd("127.0.0.1:9", &["lk/own", "--wait", "0", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(unreachable.status.code(), Some(125));
}

/// A second `udplock lock` queues behind the first and runs once the first's command exits.
#[test]
fn a_second_lock_waits_for_the_first() {
    let node = start_node();
    let servers = node.local_addr().to_string();
    let mut first = lock_cmd(
        &servers,
        &["lk/wait", "--", "sh", "-c", "echo held; read x; exit 0"],
    )
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    assert_eq!(first_line(&mut first), "held\n");
    let mut second = lock_cmd(
        &servers,
        &["lk/wait", "--wait", "60s", "--", "sh", "-c", "echo second"],
    )
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    let client = Client::connect(&[node.local_addr()]).unwrap();
    wait_until("the second run queues", || {
        client.status("lk/wait").unwrap().waiter_count == 1
    });
    assert!(
        second.try_wait().unwrap().is_none(),
        "ran while the first held the lock"
    );
    drop(first.stdin.take());
    assert_eq!(first.wait().unwrap().code(), Some(0));
    let out = second.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "second\n");
    assert_eq!(
        client
            .try_acquire("lk/wait", "third", None)
            .map(|l| l.hold_count),
        Ok(1)
    );
}

/// The node stops: the renewals go unanswered, and the command is stopped (SIGTERM; SIGKILL
/// for one that ignores it) before the lease's validity can have ended: within the TTL of
/// the stop, since the last renewal was sent before it.
#[test]
fn the_command_is_stopped_before_the_lease_ends_when_the_lock_is_lost() {
    for script in [
        "echo held; exec sleep 60",
        "trap '' TERM; echo held; while :; do sleep 0.1; done",
    ] {
        let node = start_node();
        let servers = node.local_addr().to_string();
        let mut run = lock_cmd(
            &servers,
            &[
                "lk/lost",
                "--ttl",
                "5s",
                "--kill-after",
                "1s",
                "--",
                "sh",
                "-c",
                script,
            ],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
        assert_eq!(first_line(&mut run), "held\n");
        let stopped = Instant::now();
        node.shutdown();
        let mut stderr = BufReader::new(run.stderr.take().unwrap());
        let mut line = String::new();
        while !line.contains("was lost") {
            line.clear();
            assert!(stderr.read_line(&mut line).unwrap() > 0, "no loss reported");
        }
        let after = stopped.elapsed();
        assert!(
            after < Duration::from_secs(5),
            "{script}: stopped after {after:?}"
        );
        assert_eq!(run.wait().unwrap().code(), Some(123), "{script}");
    }
}

/// SIGTERM to udplock reaches the command as SIGTERM; once it has exited the lock is
/// released, and udplock exits as the command did (128 + 15).
#[test]
fn a_termination_signal_is_passed_on_and_the_lock_released() {
    let node = start_node();
    let servers = node.local_addr().to_string();
    let mut run = lock_cmd(
        &servers,
        &["lk/term", "--", "sh", "-c", "echo held; exec sleep 60"],
    )
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    assert_eq!(first_line(&mut run), "held\n");
    let term = Command::new("kill")
        .args(["-TERM", &run.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    assert_eq!(run.wait().unwrap().code(), Some(128 + 15));
    let client = Client::connect(&[node.local_addr()]).unwrap();
    assert_eq!(client.status("lk/term").unwrap().hold_count, 0);
}
