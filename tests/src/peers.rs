//! Running the other implementations from tests: bounded child processes,
//! `python3` and the C peer's `calc_client`, each skipped (a failure under
//! `AT_REQUIRE_ALL=1`) where the tool is missing.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::{KillOnDrop, at_host_bin, skip, spawn_server};

/// Bound of one client command (a call gives up after 5 s by itself).
pub const CALL_LIMIT: Duration = Duration::from_secs(20);
/// Bound of a whole test program (the interop suite takes about a second,
/// the Python peer's tests about 15 s, the C peer's ASan build a few).
pub const SUITE_LIMIT: Duration = Duration::from_secs(180);

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `command` to the end with stdin closed and its output captured; the
/// child is killed (and the test fails) if it runs longer than `limit`.
pub fn run(command: &mut Command, limit: Duration) -> Output {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    let mut guard = KillOnDrop(child);
    let collect = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut all = Vec::new();
            let _ = pipe.read_to_end(&mut all);
            all
        })
    };
    let stdout = collect(Box::new(guard.0.stdout.take().expect("stdout")));
    let stderr = collect(Box::new(guard.0.stderr.take().expect("stderr")));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = guard.0.try_wait().expect("wait for the child") {
            break status;
        }
        // The guard kills the child as the panic unwinds.
        assert!(
            Instant::now() < deadline,
            "{command:?} did not finish within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    Output {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

/// Whether `program args...` runs and exits 0 (quietly).
pub fn works(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `python3` if it is there and at least 3.11 (what at_rpc.py needs);
/// otherwise skips (a failure under AT_REQUIRE_ALL=1) and returns None.
pub fn python() -> Option<&'static str> {
    static OK: OnceLock<bool> = OnceLock::new();
    let ok = *OK.get_or_init(|| {
        works(
            "python3",
            &["-c", "import sys; sys.exit(sys.version_info < (3, 11))"],
        )
    });
    if ok {
        Some("python3")
    } else {
        skip("python3 (3.11 or later) is not installed");
        None
    }
}

/// The C compiler the peer's Makefile uses (`CC`, else `cc`) and `make`, if
/// both are there; otherwise skips and returns false.
pub fn c_toolchain() -> bool {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let ok = works(&cc, &["--version"]) && works("make", &["--version"]);
    if !ok {
        skip(&format!("a C compiler ({cc}) and make are needed"));
    }
    ok
}

/// `peers/c/build/calc_client`, built once per test process with
/// `make -C peers/c`; None (after a skip) without a C toolchain.
pub fn calc_client() -> Option<PathBuf> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    if !c_toolchain() {
        return None;
    }
    let built = BUILT.get_or_init(|| {
        let dir = repo_root().join("peers/c");
        let out = run(Command::new("make").arg("-C").arg(&dir), SUITE_LIMIT);
        if out.status.success() {
            Ok(dir.join("build/calc_client"))
        } else {
            Err(format!(
                "make -C peers/c failed:\n{}{}",
                text(&out.stdout),
                text(&out.stderr)
            ))
        }
    });
    match built {
        Ok(path) => Some(path.clone()),
        Err(why) => panic!("{why}"),
    }
}

/// A running calculator server and its `host:port` addresses.
pub struct Served {
    _guard: KillOnDrop,
    /// `host:port` of its TCP side.
    pub tcp: String,
    /// `host:port` of its UDP side.
    pub udp: String,
}

fn addresses(addrs: &[String]) -> (String, String) {
    let tcp = addrs[0]
        .strip_prefix("tcp://")
        .unwrap_or_else(|| panic!("a tcp line first, got {addrs:?}"));
    let udp = addrs[1]
        .strip_prefix("udp://")
        .unwrap_or_else(|| panic!("a udp line second, got {addrs:?}"));
    (tcp.to_owned(), udp.to_owned())
}

/// `at-host serve` on loopback, TCP and UDP, OS-chosen ports.
pub fn rust_server() -> Served {
    let mut serve = Command::new(at_host_bin());
    serve.args(["serve", "--tcp", "127.0.0.1:0", "--udp", "127.0.0.1:0"]);
    let (guard, addrs) = spawn_server(serve, 2);
    let (tcp, udp) = addresses(&addrs);
    Served {
        _guard: guard,
        tcp,
        udp,
    }
}

/// `at_rpc.py serve` on loopback, TCP and UDP, OS-chosen ports.
pub fn python_server(python: &str) -> Served {
    let mut serve = Command::new(python);
    serve.arg(repo_root().join("peers/python/at_rpc.py")).args([
        "serve",
        "--tcp",
        "127.0.0.1:0",
        "--udp",
        "127.0.0.1:0",
    ]);
    let (guard, addrs) = spawn_server(serve, 2);
    let (tcp, udp) = addresses(&addrs);
    Served {
        _guard: guard,
        tcp,
        udp,
    }
}
