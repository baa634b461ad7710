//! The `at-host` command as scripts use it: `serve` on port 0 with its
//! `listening on` lines, `call` with its output and exit codes, `demo`.

use std::process::{Command, Output, Stdio};

use at_tests::{at_host_bin, spawn_server};

fn at_host(args: &[&str]) -> Output {
    Command::new(at_host_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run at-host")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn serve_then_call_over_tcp_and_udp_with_exit_codes() {
    let mut serve = Command::new(at_host_bin());
    serve.args(["serve", "--tcp", "127.0.0.1:0", "--udp", "127.0.0.1:0"]);
    let (_server, addrs) = spawn_server(serve, 2);
    let tcp = addrs[0]
        .strip_prefix("tcp://")
        .expect("a tcp line first")
        .to_owned();
    let udp = addrs[1]
        .strip_prefix("udp://")
        .expect("a udp line second")
        .to_owned();
    assert!(
        tcp.starts_with("127.0.0.1:") && !tcp.ends_with(":0"),
        "{tcp}"
    );

    let ok = at_host(&["call", "--server", &tcp, "add", "10", "20"]);
    assert_eq!(
        (ok.status.code(), text(&ok.stdout)),
        (Some(0), "30\n".to_owned())
    );
    let out = at_host(&["call", "--server", &tcp, "div", "10", "2"]);
    assert_eq!(text(&out.stdout), "5.0\n");
    let out = at_host(&["call", "--server", &tcp, "sub", "-5", "2.5"]);
    assert_eq!(text(&out.stdout), "-7.5\n");
    let out = at_host(&["call", "--server", &tcp, "--json", "div", "10", "4"]);
    assert_eq!(
        text(&out.stdout),
        "{\"status\": \"success\", \"result\": 2.5}\n"
    );

    let err = at_host(&["call", "--server", &tcp, "div", "1", "0"]);
    assert_eq!(err.status.code(), Some(1));
    assert_eq!(
        text(&err.stderr),
        "error: division_by_zero: division by zero\n"
    );
    assert!(err.stdout.is_empty());
    let err = at_host(&["call", "--server", &tcp, "add", "x", "1"]);
    assert_eq!(err.status.code(), Some(1));
    assert!(text(&err.stderr).starts_with("error: invalid_arguments: "));

    let udp_ok = at_host(&["call", "--udp", "--server", &udp, "add", "10", "20"]);
    assert_eq!(
        (udp_ok.status.code(), text(&udp_ok.stdout)),
        (Some(0), "30\n".to_owned())
    );
    let udp_err = at_host(&["call", "--udp", "--server", &udp, "nope"]);
    assert_eq!(udp_err.status.code(), Some(1));
    assert_eq!(
        text(&udp_err.stderr),
        "error: unknown_function: unknown function\n"
    );
}

#[test]
fn transport_failures_exit_3_and_usage_errors_exit_2() {
    // A port nobody listens on: take one from the OS, then free it.
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let refused = at_host(&["call", "--server", &free.to_string(), "add", "1", "2"]);
    assert_eq!(refused.status.code(), Some(3), "{}", text(&refused.stderr));
    assert!(!refused.stderr.is_empty());

    // A UDP server that never answers: the call times out.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let timeout = at_host(&[
        "call",
        "--udp",
        "--timeout",
        "0.3",
        "--server",
        &addr,
        "add",
        "1",
        "2",
    ]);
    assert_eq!(timeout.status.code(), Some(3));
    assert!(
        text(&timeout.stderr).contains("timed out"),
        "{}",
        text(&timeout.stderr)
    );

    for args in [
        &["call"][..],
        &["call", "--bogus", "add"],
        &["call", "--timeout", "soon", "add"],
        &["call", "--server", "host:port", "add"],
        &["serve", "--tcp", "nowhere"],
        &["serve", "--tcp", "none", "--udp", "none"],
        &["frobnicate"],
    ] {
        let out = at_host(args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn demo_calls_over_tcp_and_udp_and_exits_0() {
    let out = at_host(&["demo"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for line in [
        "tcp  add(10, 20) -> 30",
        "tcp  div(10, 4) -> 2.5",
        "tcp  div(1, 0) -> error: division_by_zero: division by zero",
        "udp  add(10, 20) -> 30",
        "udp  div(1, 0) -> error: division_by_zero: division by zero",
    ] {
        assert!(
            stdout.lines().any(|l| l == line),
            "missing {line:?} in:\n{stdout}"
        );
    }
}

#[test]
fn serve_listens_on_tcp_only_when_udp_is_none() {
    let mut serve = Command::new(at_host_bin());
    serve.args(["serve", "--tcp", "127.0.0.1:0", "--udp", "none"]);
    let (_server, addrs) = spawn_server(serve, 1);
    assert!(addrs[0].starts_with("tcp://127.0.0.1:"));
    let tcp = addrs[0].trim_start_matches("tcp://");
    let out = at_host(&["call", "--server", tcp, "mul", "6", "7"]);
    assert_eq!(text(&out.stdout), "42\n");
}

#[test]
fn bench_runs_every_scenario_with_a_baseline_and_prints_json() {
    let out = at_host(&[
        "bench",
        "--calls",
        "300",
        "--connections",
        "4",
        "--depth",
        "8",
        "--baseline",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("bench --json prints JSON");
    let results = report["results"].as_array().expect("results");
    let names: Vec<&str> = results
        .iter()
        .map(|r| r["scenario"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "tcp_sequential",
            "tcp_pipelined",
            "tcp_connections",
            "udp_sequential"
        ]
    );
    for r in results {
        assert!(r["at"]["calls"].as_u64().unwrap() >= 296, "{r}");
        assert!(r["raw"]["calls_per_sec"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["ratio"].as_f64().unwrap() > 0.0, "{r}");
    }
}

/// `ping`, `info` and `list` against a live server and a dead address:
/// their lines, their JSON and their exit codes.
/// `discover` with nobody listening (a port no server uses, broadcast on
/// loopback, which every machine has): exit 3 and a message, `[]` with
/// `--json`. Needs no root; the namespace test (discover.rs) finds real
/// servers.
#[test]
fn discover_with_nobody_answering_exits_3() {
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    for json in [false, true] {
        let mut args = vec![
            "discover",
            "--timeout",
            "0.2",
            "--port",
            &port,
            "--ipv4",
            "--interface",
            "lo",
        ];
        if json {
            args.push("--json");
        }
        let out = at_host(&args);
        assert_eq!(out.status.code(), Some(3), "{out:?}");
        assert_eq!(text(&out.stdout), if json { "[]\n" } else { "" }, "{out:?}");
        assert!(
            text(&out.stderr).contains("no server answered within 200ms"),
            "{out:?}"
        );
    }
    // A bad timeout is a usage error.
    let out = at_host(&["discover", "--timeout", "0"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn ping_info_and_list() {
    let mut serve = Command::new(at_host_bin());
    serve.args([
        "serve",
        "--tcp",
        "127.0.0.1:0",
        "--udp",
        "127.0.0.1:0",
        "--name",
        "bench-psu",
    ]);
    let (_server, addrs) = spawn_server(serve, 2);
    let tcp = addrs[0].strip_prefix("tcp://").unwrap().to_owned();
    let udp = addrs[1].strip_prefix("udp://").unwrap().to_owned();

    for (transport, addr) in [(None, &tcp), (Some("--udp"), &udp)] {
        let mut args = vec![
            "ping",
            "--server",
            addr,
            "--count",
            "3",
            "--interval",
            "0.01",
        ];
        args.extend(transport);
        let out = at_host(&args);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        let stdout = text(&out.stdout);
        let lines: Vec<&str> = stdout.lines().collect();
        let kind = if transport.is_some() { "udp" } else { "tcp" };
        assert_eq!(lines[0], format!("PING {addr} ({kind})"));
        for (i, line) in lines[1..4].iter().enumerate() {
            let prefix = format!("reply from {addr}: seq={} time=", i + 1);
            assert!(line.starts_with(&prefix) && line.ends_with(" ms"), "{line}");
        }
        assert_eq!(lines[4], format!("--- {addr} ping statistics ---"));
        assert!(
            lines[5].starts_with("3 sent, 3 received, 0% loss; rtt min/avg/max/mdev = "),
            "{}",
            lines[5]
        );
    }
    let out = at_host(&[
        "ping",
        "--server",
        &tcp,
        "--count",
        "2",
        "--interval",
        "0",
        "--size",
        "300",
        "--json",
    ]);
    let stdout = text(&out.stdout);
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert_eq!(lines[1]["seq"], 2);
    assert_eq!(
        (lines[2]["sent"].as_u64(), lines[2]["received"].as_u64()),
        (Some(2), Some(2))
    );
    assert!(lines[2]["rtt_ms"]["mdev"].is_number());

    let out = at_host(&["info", "--server", &tcp]);
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        text(&out.stdout),
        format!(
            "protocol: 1\nserver: at-host {version}\nname: bench-psu\nauth: off\nmax_body: 65536\nfunctions: 5\next: notify, events, deadline, cancel, peer\n"
        )
    );
    let out = at_host(&["info", "--server", &udp, "--udp", "--json"]);
    assert_eq!(
        text(&out.stdout),
        format!(
            "{{\"protocol\": 1, \"server\": \"at-host {version}\", \"name\": \"bench-psu\", \"auth\": \"off\", \"max_body\": 65536, \"functions\": 5, \"ext\": [\"notify\", \"events\", \"deadline\", \"cancel\"]}}\n"
        )
    );
    let out = at_host(&["list", "--server", &tcp]);
    assert_eq!(
        text(&out.stdout),
        "add  add(number, number) -> number  a + b\n\
         sub  sub(number, number) -> number  a - b\n\
         mul  mul(number, number) -> number  a * b\n\
         div  div(number, number) -> double  a / b, always a double\n\
         log  log(string) -> null            prints log from ADDR: LINE on the server's stdout\n"
    );
    let out = at_host(&["list", "--server", &udp, "--udp", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list[3]["result"], "double");

    // A dead address: nothing answers (exit 3).
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let out = at_host(&["ping", "--server", &dead, "--count", "2", "--interval", "0"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(
        text(&out.stdout).contains("2 sent, 0 received, 100% loss"),
        "{out:?}"
    );
    for verb in ["info", "list"] {
        let out = at_host(&[verb, "--server", &dead]);
        assert_eq!(out.status.code(), Some(3), "{verb}: {out:?}");
        assert!(
            text(&out.stderr).starts_with("transport error: "),
            "{verb}: {out:?}"
        );
        let out = at_host(&[verb, "--server", &dead, "--udp", "--timeout", "0.3"]);
        assert_eq!(out.status.code(), Some(3), "{verb} --udp: {out:?}");
    }
    // Usage errors (exit 2).
    let out = at_host(&["ping", "--server", &tcp, "--count", "0"]);
    assert_eq!(out.status.code(), Some(2));
    let out = at_host(&["info", "--server", "[::1"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    // rpc.ping is never authenticated: ping takes no key.
    let key = "demo:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    let out = at_host(&["ping", "--server", &tcp, "--key", key]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}
