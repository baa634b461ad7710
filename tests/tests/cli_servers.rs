//! `at-host notify` and `at-host call --deadline` against every server of
//! the project (contract 10.2, 10.4): at-host's own `serve` and the Python
//! peer's `at-rpc serve` here (the device servers in `cli_device.rs`, the
//! firmware under QEMU in `qemu_net.rs`), over TCP and UDP: a notification
//! is sent and exits 0 with nothing printed; a deadline of 0 is
//! `deadline_exceeded` (exit 1); a deadline with time to spare is
//! answered; `watch` prints the server's `calls` events.

use std::process::Command;
use std::time::Duration;

use at_tests::at_host_bin;
use at_tests::peers::{Served, python, python_server, run, rust_server, text};

fn at_host(udp: bool, addr: &str, subcommand: &str, args: &[&str]) -> std::process::Output {
    let mut command = Command::new(at_host_bin());
    command.arg(subcommand);
    if udp {
        command.arg("--udp");
    }
    command.args(["--server", addr]).args(args);
    run(&mut command, Duration::from_secs(20))
}

fn check(name: &str, served: &Served) {
    for (udp, addr) in [(false, &served.tcp), (true, &served.udp)] {
        let what = format!("{name}, udp {udp}");
        let out = at_host(udp, addr, "notify", &["add", "1", "2"]);
        assert_eq!(
            (out.status.code(), text(&out.stdout)),
            (Some(0), String::new()),
            "{what}: {out:?}"
        );
        let out = at_host(udp, addr, "call", &["--deadline", "0", "add", "1", "2"]);
        assert_eq!(out.status.code(), Some(1), "{what}: {out:?}");
        assert!(
            text(&out.stderr).starts_with("error: deadline_exceeded"),
            "{what}: {out:?}"
        );
        let out = at_host(udp, addr, "call", &["--deadline", "5000", "add", "2", "3"]);
        assert_eq!(
            (out.status.code(), text(&out.stdout)),
            (Some(0), "5\n".into()),
            "{what}: {out:?}"
        );
    }
    // Events: the calls answered so far (the calls above made it a state,
    // or its next publish comes within a second).
    let out = at_host(false, &served.tcp, "watch", &["--count", "1", "calls"]);
    assert_eq!(out.status.code(), Some(0), "{name}: {out:?}");
    assert!(text(&out.stdout).starts_with("1 "), "{name}: {out:?}");
}

#[test]
fn at_host_serve() {
    check("at-host serve", &rust_server());
}

#[test]
fn python_serve() {
    // python() says why it skips, and fails under AT_REQUIRE_ALL.
    let Some(py) = python() else { return };
    check("at-rpc serve", &python_server(py));
}
