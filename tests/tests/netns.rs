//! A real two-host UDP call: client and server in two network namespaces
//! joined by a veth pair, with the kernel dropping (and, where `netem`
//! exists, duplicating, reordering and delaying) datagrams.
//!
//! Needs root, iproute2, and either the `netem` qdisc or nftables; skips
//! with a message otherwise (a failure under `AT_REQUIRE_ALL=1`, which CI
//! sets after installing the tools).

use std::process::{Command, Stdio};
use std::time::Duration;

use at_core::Value as V;
use at_host::{UdpClient, UdpConfig, Value};
use at_tests::{KillOnDrop, at_host_bin, skip, spawn_server};

fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{}: {e}", args[0]))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Two namespaces and a veth pair, removed on drop.
struct TwoHosts {
    client_ns: String,
    server_ns: String,
}

impl Drop for TwoHosts {
    fn drop(&mut self) {
        let _ = run(&["ip", "netns", "del", &self.client_ns]);
        let _ = run(&["ip", "netns", "del", &self.server_ns]);
    }
}

impl TwoHosts {
    fn new(subnet: u8) -> Result<TwoHosts, String> {
        let id = std::process::id();
        let hosts = TwoHosts {
            client_ns: format!("at_cli_{id}"),
            server_ns: format!("at_srv_{id}"),
        };
        let (a, b) = (&hosts.client_ns, &hosts.server_ns);
        let (va, vb) = (
            format!("atc{}", id % 100_000),
            format!("ats{}", id % 100_000),
        );
        let client_ip = format!("10.{subnet}.0.1/24");
        let server_ip = format!("10.{subnet}.0.2/24");
        run(&["ip", "netns", "add", a])?;
        run(&["ip", "netns", "add", b])?;
        run(&[
            "ip", "link", "add", &va, "type", "veth", "peer", "name", &vb,
        ])?;
        run(&["ip", "link", "set", &va, "netns", a])?;
        run(&["ip", "link", "set", &vb, "netns", b])?;
        run(&["ip", "-n", a, "addr", "add", &client_ip, "dev", &va])?;
        run(&["ip", "-n", b, "addr", "add", &server_ip, "dev", &vb])?;
        for (ns, dev) in [(a, &va), (b, &vb)] {
            run(&["ip", "-n", ns, "link", "set", dev, "up"])?;
            run(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(hosts)
    }

    /// Loss both ways: netem where the kernel has it, else nftables.
    fn impair(&self, port: u16) -> Result<&'static str, String> {
        let netem = |ns: &str, dev: &str| {
            run(&[
                "ip",
                "netns",
                "exec",
                ns,
                "tc",
                "qdisc",
                "add",
                "dev",
                dev,
                "root",
                "netem",
                "loss",
                "20%",
                "duplicate",
                "5%",
                "reorder",
                "25%",
                "delay",
                "5ms",
            ])
        };
        let id = std::process::id() % 100_000;
        let (va, vb) = (format!("atc{id}"), format!("ats{id}"));
        if netem(&self.client_ns, &va).is_ok() && netem(&self.server_ns, &vb).is_ok() {
            return Ok("netem: loss 20%, duplicate 5%, reorder 25%, delay 5ms, each way");
        }
        let port = port.to_string();
        for (ns, field) in [(&self.server_ns, "dport"), (&self.client_ns, "sport")] {
            let nft = |rule: &[&str]| {
                let mut args = vec!["ip", "netns", "exec", ns, "nft"];
                args.extend_from_slice(rule);
                run(&args)
            };
            nft(&["add", "table", "inet", "at"])?;
            nft(&[
                "add",
                "chain",
                "inet",
                "at",
                "in",
                "{ type filter hook input priority 0; }",
            ])?;
            nft(&[
                "add", "rule", "inet", "at", "in", "udp", field, &port, "numgen", "random", "mod",
                "100", "<", "20", "drop",
            ])?;
        }
        Ok("nftables: 20% of datagrams dropped each way (this kernel has no netem)")
    }
}

#[test]
fn udp_calls_between_two_network_namespaces_under_kernel_loss() {
    if std::env::var("AT_NETNS_CLIENT").is_ok() {
        return; // this process is the client helper, see below
    }
    let hosts = match TwoHosts::new(77) {
        Ok(hosts) => hosts,
        Err(e) => {
            return skip(&format!(
                "cannot make network namespaces (needs root and iproute2): {e}"
            ));
        }
    };
    let mut serve = Command::new("ip");
    serve
        .args(["netns", "exec", &hosts.server_ns])
        .arg(at_host_bin())
        .args(["serve", "--tcp", "none", "--udp", "10.77.0.2:0"]);
    let (_server, addrs) = spawn_server(serve, 1);
    let server = addrs[0]
        .strip_prefix("udp://")
        .expect("a udp line")
        .to_owned();
    let port: u16 = server.rsplit(':').next().unwrap().parse().unwrap();
    let how = match hosts.impair(port) {
        Ok(how) => how,
        Err(e) => {
            return skip(&format!(
                "cannot make the kernel lose datagrams (netem or nftables): {e}"
            ));
        }
    };
    eprintln!("impairment: {how}");
    // The client runs in the other namespace: this same test binary,
    // started there, runs `client_helper` below.
    let exe = std::env::current_exe().unwrap();
    let mut client = Command::new("ip");
    client
        .args(["netns", "exec", &hosts.client_ns])
        .arg(exe)
        .args([
            "--exact",
            "client_helper",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("AT_NETNS_CLIENT", &server)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = KillOnDrop(client.spawn().expect("start the client in its namespace"));
    let out = wait_bounded(child, Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "client failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("netns client: 200 calls right"),
        "{stdout}\n{stderr}"
    );
    eprintln!(
        "{}",
        stdout
            .lines()
            .find(|l| l.contains("netns client"))
            .unwrap_or("")
    );
}

fn wait_bounded(mut child: KillOnDrop, limit: Duration) -> std::process::Output {
    let started = std::time::Instant::now();
    loop {
        match child.0.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if started.elapsed() < limit => std::thread::sleep(Duration::from_millis(20)),
            _ => panic!("the namespaced client did not finish within {limit:?}"),
        }
    }
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    use std::io::Read;
    if let Some(mut s) = child.0.stdout.take() {
        let _ = s.read_to_end(&mut stdout);
    }
    if let Some(mut s) = child.0.stderr.take() {
        let _ = s.read_to_end(&mut stderr);
    }
    let status = child.0.wait().expect("client status");
    std::process::Output {
        status,
        stdout,
        stderr,
    }
}

/// Runs only inside the client namespace (`AT_NETNS_CLIENT` names the
/// server); a no-op in a normal test run.
#[test]
fn client_helper() {
    let Ok(server) = std::env::var("AT_NETNS_CLIENT") else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let config = UdpConfig {
            timeout: Duration::from_secs(30),
            initial_timeout: Duration::from_millis(30),
            max_backoff: Duration::from_millis(120),
            retries: 40,
            ..UdpConfig::default()
        };
        let c = UdpClient::connect(server.parse::<std::net::SocketAddr>().unwrap(), config)
            .await
            .unwrap();
        let mut right = 0;
        for batch in 0..10i64 {
            let args: Vec<[V<'_>; 2]> = (0..20)
                .map(|i| [V::Int(batch * 100 + i), V::Int(7)])
                .collect();
            let calls: Vec<(&str, &[V<'_>])> = args.iter().map(|a| ("mul", &a[..])).collect();
            for (i, r) in c.call_many(&calls).await.unwrap().into_iter().enumerate() {
                assert_eq!(r.unwrap(), Value::Int((batch * 100 + i as i64) * 7));
                right += 1;
            }
        }
        let s = c.stats();
        println!(
            "netns client: {right} calls right, {} retransmissions, {} ignored",
            s.retransmitted, s.ignored
        );
    });
}
