//! The networked firmware is discoverable: QEMU's board on a tap device
//! bridged in a network namespace the test makes (slirp, QEMU's user-mode
//! network, does not pass broadcasts), built with a static address and a
//! name. `at-host discover --interface br0` in that namespace finds it by
//! broadcast, and `at-host list` reads its functions over UDP.
//!
//! Needs root, iproute2, /dev/net/tun and qemu-system-arm; skips with a
//! message otherwise (a failure under `AT_REQUIRE_ALL=1`).

use std::process::{Command, Output, Stdio};

use at_tests::firmware::{build_firmware, missing_tools};
use at_tests::{KillOnDrop, PATIENCE, at_host_bin, skip};

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

/// A namespace with bridge `br0` (10.79.0.1/24) and tap `tap0` on it.
struct Namespace(String);

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = run(&["ip", "netns", "del", &self.0]);
    }
}

fn namespace() -> Result<Namespace, String> {
    let ns = Namespace(format!("at_tap_{}", std::process::id() % 100_000));
    let n = ns.0.as_str();
    run(&["ip", "netns", "add", n])?;
    for step in [
        &["link", "set", "lo", "up"][..],
        &["link", "add", "br0", "type", "bridge"],
        &["addr", "add", "10.79.0.1/24", "dev", "br0"],
        &["link", "set", "br0", "up"],
        &["tuntap", "add", "tap0", "mode", "tap"],
        &["link", "set", "tap0", "master", "br0"],
        &["link", "set", "tap0", "up"],
    ] {
        let mut args = vec!["ip", "-n", n];
        args.extend_from_slice(step);
        run(&args)?;
    }
    Ok(ns)
}

fn at_host_in(ns: &Namespace, args: &[&str]) -> Output {
    Command::new("ip")
        .args(["netns", "exec", &ns.0])
        .arg(at_host_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run at-host")
}

#[test]
fn the_networked_firmware_is_discovered() {
    if let Some(why) = missing_tools() {
        skip(&why);
        return;
    }
    let ns = match namespace() {
        Ok(ns) => ns,
        Err(why) => {
            skip(&format!(
                "a tap device in a network namespace needs root, iproute2 and /dev/net/tun: {why}"
            ));
            return;
        }
    };
    let elf = build_firmware(
        &["--features", "net"],
        &[
            ("AT_STATIC_IP", "10.79.0.10/24"),
            ("AT_NAME", "bench-board"),
        ],
        "at-embedded-firmware-tap",
    );
    let mut qemu = Command::new("ip");
    qemu.args(["netns", "exec", &ns.0, "qemu-system-arm"])
        .args([
            "-machine",
            "mps2-an386",
            "-cpu",
            "cortex-m4",
            "-nographic",
            "-monitor",
            "none",
        ])
        .args([
            "-nic",
            "tap,ifname=tap0,script=no,downscript=no,model=lan9118",
            "-kernel",
        ])
        .arg(&elf)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = qemu.spawn().expect("start qemu-system-arm");
    let stdout = child.stdout.take().expect("stdout");
    let _qemu = KillOnDrop(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        let mut line = String::new();
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(PATIENCE).expect("the firmware starts");
    assert_eq!(
        line.trim_end(),
        "at-embedded-firmware: listening on 10.79.0.10 port 16724 (tcp, udp)"
    );

    let out = at_host_in(
        &ns,
        &["discover", "--interface", "br0", "--ipv4", "--timeout", "1"],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("10.79.0.10:16724  bench-board  at-embedded-example {version}  auth=off\n")
    );
    let out = at_host_in(&ns, &["list", "--server", "10.79.0.10", "--udp"]);
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(listed.contains("led    led(bool) -> bool"), "{listed}");
    assert_eq!(listed.lines().count(), 6, "{listed}");
}
