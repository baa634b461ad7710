//! The firmware for tests: building `at-embedded-firmware` for the
//! Cortex-M4, its `size` figures, and what running it under QEMU needs.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::peers::{repo_root, run, text};
use crate::{at_host_bin, profile_dir};

/// The firmware's Rust target.
pub const TARGET: &str = "thumbv7em-none-eabihf";
/// The firmware's binary.
pub const BIN: &str = "at-embedded-firmware";

/// A TCP port free on 127.0.0.1 now (for QEMU's sockets and forwards).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().unwrap().port()
}

/// Berkeley `size` figures of an ELF32 file: (text, data, bss).
pub fn elf_size(path: &Path) -> (u64, u64, u64) {
    let elf = std::fs::read(path).expect("read the firmware");
    assert_eq!(&elf[..5], b"\x7fELF\x01", "a 32-bit ELF");
    let u16_at = |at: usize| u64::from(u16::from_le_bytes([elf[at], elf[at + 1]]));
    let u32_at = |at: usize| u64::from(u32::from_le_bytes(elf[at..at + 4].try_into().unwrap()));
    let (shoff, shentsize, shnum) = (u32_at(0x20), u16_at(0x2E), u16_at(0x30));
    let (mut text, mut data, mut bss) = (0, 0, 0);
    for i in 0..shnum {
        let sh = (shoff + i * shentsize) as usize;
        let (kind, flags, size) = (u32_at(sh + 4), u32_at(sh + 8), u32_at(sh + 20));
        const WRITE: u64 = 1;
        const ALLOC: u64 = 2;
        const NOBITS: u64 = 8;
        if flags & ALLOC == 0 {
            continue;
        }
        if kind == NOBITS {
            bss += size;
        } else if flags & WRITE != 0 {
            data += size;
        } else {
            text += size;
        }
    }
    (text, data, bss)
}

/// Builds the firmware (`extra` cargo flags, `env` build-time settings)
/// into this test's target directory and returns a copy of the ELF that
/// later builds do not touch.
pub fn build_firmware(extra: &[&str], env: &[(&str, &str)], copy_as: &str) -> PathBuf {
    // Tests of one binary run on parallel threads, and every variant is
    // built to the same path: build and copy as one step, or a test could
    // copy another's variant.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let target_root = profile_dir().parent().expect("target dir").to_path_buf();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--quiet",
            "-p",
            "at-embedded-example",
            "--bin",
            BIN,
            "--target",
            TARGET,
            "--profile",
            "firmware",
            "--target-dir",
        ])
        .arg(&target_root)
        .args(extra)
        .envs(env.iter().copied())
        .status()
        .expect("run cargo build");
    assert!(status.success(), "building the firmware {extra:?} failed");
    let elf = target_root.join(TARGET).join("firmware").join(BIN);
    let copy = target_root.join(TARGET).join("firmware").join(copy_as);
    std::fs::copy(&elf, &copy).expect("copy the firmware");
    copy
}

/// Why the test cannot run here, if it cannot.
pub fn missing_tools() -> Option<String> {
    let qemu = Command::new("qemu-system-arm")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !qemu.is_ok_and(|s| s.success()) {
        return Some(
            "qemu-system-arm is not installed (Debian: apt-get install qemu-system-arm)".into(),
        );
    }
    let sysroot = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())?;
    if !Path::new(&sysroot)
        .join("lib/rustlib")
        .join(TARGET)
        .exists()
    {
        return Some(format!(
            "the Rust target {TARGET} is not installed (rustup target add {TARGET})"
        ));
    }
    None
}

/// Checks the firmware's peak stack with `scripts/stack-peak.py` (its own
/// QEMU; RAM dumped through the monitor after start-up and after serving;
/// `args` adds the key of a keyed build, or `--uart` for a UART-only one):
/// fails the test if a figure is over `max_start` or `max_serving` bytes.
/// Skips without Python 3.
pub fn check_stack_peak(elf: &Path, args: &[&str], max_start: u64, max_serving: u64) {
    // The script needs only the standard library: any python3 will do.
    if !crate::peers::works("python3", &["--version"]) {
        crate::skip("python3 is needed to measure the stack (scripts/stack-peak.py)");
        return;
    }
    let mut measure = Command::new("python3");
    measure
        .arg(repo_root().join("scripts").join("stack-peak.py"))
        .arg(elf)
        .args(args)
        .args(["--max-start", &max_start.to_string()])
        .args(["--max-serving", &max_serving.to_string()])
        .env("AT_HOST", at_host_bin());
    let out = run(&mut measure, std::time::Duration::from_secs(60));
    eprint!("stack-peak.py {}: {}", elf.display(), text(&out.stdout));
    assert!(
        out.status.success(),
        "the stack is over budget ({max_start} bytes at start-up, {max_serving} serving), or \
         stack-peak.py failed: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}
