//! The section 10 commands of at-host against the device servers (the very
//! `TcpServer` and `UdpServer` a board runs, on the desktop, loopback):
//! `notify` runs a function unanswered (exit 0 once sent), `call
//! --deadline 0` is `deadline_exceeded` and runs nothing, `topics` lists
//! the board's topics and `watch` prints its events, over TCP and UDP.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use at_core::{CallError, Function, Value as V};
use at_embedded_example::desktop;
use at_tests::at_host_bin;
use at_tests::peers::{run, text};

static RUNS: AtomicI64 = AtomicI64::new(0);

fn count<'a>(_: &[V<'a>]) -> Result<V<'a>, CallError> {
    Ok(V::Int(RUNS.fetch_add(1, Ordering::SeqCst) + 1))
}

static TABLE: [Function; 2] = [at_core::calculator::ADD, Function::new("count", count)];

/// `at-host SUBCOMMAND [--udp] --server ADDR ARGS...`.
fn at_host(udp: bool, addr: &str, subcommand: &str, args: &[&str]) -> std::process::Output {
    let mut command = Command::new(at_host_bin());
    command.arg(subcommand);
    if udp {
        command.arg("--udp");
    }
    command.args(["--server", addr]).args(args);
    run(&mut command, Duration::from_secs(20))
}

#[test]
fn notify_deadline_topics_and_watch_against_the_device_servers() {
    let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let running = desktop::start_with(Some(loopback), Some(loopback), &TABLE).unwrap();
    let tcp = running.tcp_addr().unwrap().to_string();
    let udp = running.udp_addr().unwrap().to_string();
    for (udp, addr) in [(false, &tcp), (true, &udp)] {
        let before = RUNS.load(Ordering::SeqCst);
        let out = at_host(udp, addr, "notify", &["count"]);
        assert_eq!(
            (out.status.code(), text(&out.stdout)),
            (Some(0), String::new()),
            "{out:?}"
        );
        // The notification ran once: the next call counts two.
        let out = at_host(udp, addr, "call", &["count"]);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        assert_eq!(
            text(&out.stdout).trim(),
            (before + 2).to_string(),
            "udp {udp}"
        );
        let out = at_host(udp, addr, "call", &["--deadline", "0", "count"]);
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        assert!(
            text(&out.stderr).starts_with("error: deadline_exceeded"),
            "{out:?}"
        );
        assert_eq!(
            RUNS.load(Ordering::SeqCst),
            before + 2,
            "deadline 0 ran nothing"
        );
        let out = at_host(udp, addr, "call", &["--deadline", "5000", "add", "2", "3"]);
        assert_eq!(
            (out.status.code(), text(&out.stdout)),
            (Some(0), "5\n".into()),
            "{out:?}"
        );
        let out = at_host(udp, addr, "watch", &["--count", "2", "uptime"]);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        let stdout = text(&out.stdout);
        let ns: Vec<&str> = stdout.lines().filter_map(|l| l.split(' ').next()).collect();
        assert_eq!(ns, ["1", "2"], "{out:?}");
    }
    let out = at_host(false, &tcp, "topics", &[]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let listing = text(&out.stdout);
    assert!(
        listing.contains("uptime") && listing.contains("calls"),
        "{listing}"
    );
    running.stop();
}
