//! Discovery on a real link (contract section 8): three network namespaces
//! made by the test, a bridge in the client's joining two servers' veth
//! ends. Two `at-host serve`s named `alpha` and `beta` listen on `[::]`
//! (IPv4 and IPv6); `at-host discover --interface` in the client's
//! namespace must list exactly both, over IPv4 and over IPv6; a broadcast
//! request that would be answered with an error gets no answer at all,
//! while the same request sent to one server gets its error.
//!
//! Needs root and iproute2; skips with a message otherwise (a failure
//! under `AT_REQUIRE_ALL=1`). Nothing leaves the namespaces.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use at_tests::{KillOnDrop, at_host_bin, skip};

fn run(args: &[&str]) -> Result<Output, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{}: {e}", args[0]))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!(
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A client namespace with bridge `br0` and two server namespaces on it;
/// removed on drop.
struct Lan {
    client: String,
    servers: [String; 2],
}

impl Drop for Lan {
    fn drop(&mut self) {
        for ns in std::iter::once(&self.client).chain(&self.servers) {
            let _ = run(&["ip", "netns", "del", ns]);
        }
    }
}

impl Lan {
    fn new() -> Result<Lan, String> {
        let id = std::process::id() % 100_000;
        let lan = Lan {
            client: format!("at_dc_{id}"),
            servers: [format!("at_d1_{id}"), format!("at_d2_{id}")],
        };
        for ns in std::iter::once(&lan.client).chain(&lan.servers) {
            run(&["ip", "netns", "add", ns])?;
            // Addresses usable at once: no duplicate address detection.
            for key in ["all", "default"] {
                let sysctl = format!("net.ipv6.conf.{key}.accept_dad=0");
                run(&["ip", "netns", "exec", ns, "sysctl", "-qw", &sysctl])?;
            }
            run(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
        }
        let c = &lan.client;
        run(&["ip", "-n", c, "link", "add", "br0", "type", "bridge"])?;
        run(&["ip", "-n", c, "addr", "add", "10.77.0.1/24", "dev", "br0"])?;
        run(&["ip", "-n", c, "link", "set", "br0", "up"])?;
        for (i, ns) in lan.servers.iter().enumerate() {
            let (near, far) = (format!("atb{i}_{id}"), format!("ate{i}_{id}"));
            run(&[
                "ip", "link", "add", &near, "type", "veth", "peer", "name", &far,
            ])?;
            run(&["ip", "link", "set", &near, "netns", c])?;
            run(&["ip", "link", "set", &far, "netns", ns])?;
            run(&["ip", "-n", c, "link", "set", &near, "master", "br0"])?;
            run(&["ip", "-n", c, "link", "set", &near, "up"])?;
            let ip = format!("10.77.0.{}/24", i + 2);
            run(&["ip", "-n", ns, "addr", "add", &ip, "dev", &far])?;
            run(&["ip", "-n", ns, "link", "set", &far, "up"])?;
        }
        Ok(lan)
    }

    /// `at-host ARGS` in namespace `ns`.
    fn at_host(&self, ns: &str, args: &[&str]) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", ns])
            .arg(at_host_bin())
            .args(args);
        command
    }
}

fn serve(lan: &Lan, ns: &str, name: &str) -> KillOnDrop {
    let child = lan
        .at_host(
            ns,
            // The default UDP address, [::]:16724: discovered over IPv4
            // and IPv6 with no option.
            &["serve", "--tcp", "none", "--name", name],
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start at-host serve");
    let mut guard = KillOnDrop(child);
    // Wait for its `listening on` line.
    use std::io::BufRead;
    let stdout = guard.0.stdout.take().expect("stdout");
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .expect("a listening line");
    assert!(line.starts_with("listening on udp://"), "{line:?}");
    guard
}

/// `at-host discover ARGS` in the client namespace: its stdout lines.
fn discover(lan: &Lan, args: &[&str]) -> Vec<String> {
    let mut full = vec!["discover", "--interface", "br0", "--timeout", "1"];
    full.extend_from_slice(args);
    let out = lan
        .at_host(&lan.client, &full)
        .output()
        .expect("run discover");
    assert!(out.status.success(), "discover {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Sends `body` as a request to `to` (port 16724) from the client
/// namespace, with SO_BROADCAST, `times` times from one socket (a client
/// retransmitting, 100 ms apart); how many replies came in 600 ms after the
/// last, and the first one's body.
fn probe(lan: &Lan, to: &str, body: &str, times: u32) -> (usize, String) {
    let script = r#"
import socket, struct, sys, time, zlib
to, body, times = sys.argv[1], sys.argv[2].encode(), int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"br0")
frame = struct.pack(">HHIII", 0x4154, 1, 7, len(body), zlib.crc32(body)) + body
for i in range(times):
    if i:
        time.sleep(0.1)
    s.sendto(frame, (to, 16724))
s.settimeout(0.1)
replies, first, end = 0, b"", time.time() + 0.6
while time.time() < end:
    try:
        data = s.recv(65536)
    except socket.timeout:
        continue
    replies += 1
    first = first or data[16:]
print(replies)
print(first.decode())
"#;
    let out = run(&[
        "ip",
        "netns",
        "exec",
        &lan.client,
        "python3",
        "-c",
        script,
        to,
        body,
        &times.to_string(),
    ])
    .expect("probe");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = text.lines();
    let count = lines.next().and_then(|n| n.parse().ok()).unwrap_or(0);
    (count, lines.next().unwrap_or("").to_owned())
}

#[test]
fn discover_finds_exactly_the_servers_on_the_link() {
    let lan = match Lan::new() {
        Ok(lan) => lan,
        Err(why) => {
            skip(&format!("network namespaces need root and iproute2: {why}"));
            return;
        }
    };
    let _alpha = serve(&lan, &lan.servers[0], "alpha");
    let _beta = serve(&lan, &lan.servers[1], "beta");

    let v4 = discover(&lan, &["--ipv4"]);
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        v4,
        [
            format!("10.77.0.2:16724  alpha  at-host {version}  auth=off"),
            format!("10.77.0.3:16724  beta   at-host {version}  auth=off"),
        ],
        "IPv4 discovery"
    );
    let v6 = discover(&lan, &["--ipv6"]);
    assert_eq!(v6.len(), 2, "IPv6 discovery: {v6:?}");
    let mut names = Vec::new();
    for line in &v6 {
        assert!(line.starts_with("[fe80::"), "{line}");
        assert!(line.contains("%"), "a scoped link-local address: {line}");
        let columns: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(columns[2..], ["at-host", version, "auth=off"], "{line}");
        names.push(columns[1]);
    }
    // Sorted by address, which is random here: compare as a set.
    names.sort();
    assert_eq!(names, ["alpha", "beta"]);
    let both = discover(&lan, &["--json"]);
    let found: serde_json::Value = serde_json::from_str(&both.join("")).unwrap();
    assert_eq!(found.as_array().map(Vec::len), Some(4), "{found}");

    // A broadcast that would get an error gets nothing; unicast gets it.
    let (replies, _) = probe(&lan, "255.255.255.255", r#"{"func": "nope"}"#, 1);
    assert_eq!(replies, 0, "an error answered to a broadcast");
    // Nor to its retransmission (the remembered reply is an error too).
    let (replies, _) = probe(&lan, "255.255.255.255", r#"{"func": "nope"}"#, 2);
    assert_eq!(replies, 0, "a remembered error answered to a broadcast");
    let (replies, body) = probe(&lan, "10.77.0.2", r#"{"func": "nope"}"#, 1);
    assert_eq!(replies, 1);
    assert!(body.contains("unknown_function"), "{body}");
    // And a good broadcast request is answered by both.
    let (replies, body) = probe(&lan, "255.255.255.255", r#"{"func": "rpc.ping"}"#, 1);
    assert_eq!(
        (replies, body.as_str()),
        (2, r#"{"status": "success", "result": true}"#)
    );
    std::thread::sleep(Duration::from_millis(10));
}
