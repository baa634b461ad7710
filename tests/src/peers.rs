//! Running the other implementations from tests: bounded child processes,
//! the installed Python peer (`at-rpc` in a virtual environment) and the C
//! peer's `calc_client`, each skipped (a failure under
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

/// The Python peer as a user installs it: `pip install ./peers/python` in
/// a virtual environment, whose `bin/at-rpc` and `bin/python` the tests
/// run (never the source tree).
pub struct PythonPeer {
    /// The virtual environment.
    pub venv: PathBuf,
    /// Its Python (`import at_rpc` gives the installed package).
    pub python: PathBuf,
    /// The installed command line.
    pub at_rpc: PathBuf,
}

impl PythonPeer {
    /// A command running the installed `at-rpc`.
    pub fn command(&self) -> Command {
        Command::new(&self.at_rpc)
    }
}

/// The environment variable naming a virtual environment where
/// `pip install ./peers/python` was run (`.ci/run` sets it); without it
/// the tests make one in the target directory.
pub const VENV_VAR: &str = "AT_PYTHON_VENV";

/// The installed Python peer (see [`PythonPeer`]): the virtual environment
/// of `AT_PYTHON_VENV`, else one made (once, under a lock) in
/// `target/py-venv` with `python3` 3.11 or later. Either way the installed
/// package must equal `peers/python/src/at_rpc` file for file, so a stale
/// install cannot hide a change: the made one is reinstalled when it
/// differs (or pyproject.toml changed), a given one fails the test. Without `python3` 3.11+ it skips
/// (a failure under AT_REQUIRE_ALL=1) and returns None.
pub fn python() -> Option<&'static PythonPeer> {
    static PEER: OnceLock<Result<PythonPeer, String>> = OnceLock::new();
    let peer = PEER.get_or_init(|| match std::env::var_os(VENV_VAR) {
        Some(dir) if !dir.is_empty() => given_venv(PathBuf::from(dir)),
        _ => made_venv(),
    });
    match peer {
        Ok(peer) => Some(peer),
        Err(why) if why.starts_with(SKIP) => {
            skip(&why[SKIP.len()..]);
            None
        }
        Err(why) => panic!("{why}"),
    }
}

const SKIP: &str = "skip: ";

fn venv_peer(venv: PathBuf) -> PythonPeer {
    PythonPeer {
        python: venv.join("bin/python"),
        at_rpc: venv.join("bin/at-rpc"),
        venv,
    }
}

fn given_venv(venv: PathBuf) -> Result<PythonPeer, String> {
    let peer = venv_peer(venv);
    if !peer.at_rpc.is_file() || !peer.python.is_file() {
        return Err(format!(
            "{VENV_VAR}={}: no bin/python and bin/at-rpc there \
             (python3 -m venv DIR && DIR/bin/pip install ./peers/python)",
            peer.venv.display()
        ));
    }
    match installed_differs(&peer) {
        None => Ok(peer),
        Some(why) => Err(format!(
            "{VENV_VAR}={}: the installed at_rpc is not peers/python's ({why}); \
             reinstall: pip install --force-reinstall ./peers/python",
            peer.venv.display()
        )),
    }
}

fn made_venv() -> Result<PythonPeer, String> {
    let version_ok = works(
        "python3",
        &["-c", "import sys; sys.exit(sys.version_info < (3, 11))"],
    );
    if !version_ok {
        return Err(format!("{SKIP}python3 (3.11 or later) is not installed"));
    }
    let target = crate::profile_dir()
        .parent()
        .expect("target root")
        .to_path_buf();
    // One process at a time makes or updates it (test binaries may run at
    // once); the lock goes with the file when this function returns.
    let lock = std::fs::File::create(target.join("py-venv.lock"))
        .map_err(|e| format!("cannot create target/py-venv.lock: {e}"))?;
    lock.lock()
        .map_err(|e| format!("cannot lock target/py-venv.lock: {e}"))?;
    let peer = venv_peer(target.join("py-venv"));
    if !peer.python.is_file() {
        let out = run(
            Command::new("python3")
                .args(["-m", "venv", "--clear"])
                .arg(&peer.venv),
            SUITE_LIMIT,
        );
        if !out.status.success() {
            return Err(format!(
                "{SKIP}python3 -m venv failed (is python3-venv installed?): {}",
                text(&out.stderr)
            ));
        }
    }
    // The package's metadata (the console script, ...) comes from
    // pyproject.toml: a copy of the one installed is kept beside.
    let pyproject = repo_root().join("peers/python/pyproject.toml");
    let stamp = peer.venv.join("at-rpc-pyproject.toml");
    let same_metadata = std::fs::read(&pyproject).ok() == std::fs::read(&stamp).ok();
    if !peer.at_rpc.is_file() || !same_metadata || installed_differs(&peer).is_some() {
        install(&peer, &target)?;
        if let Some(why) = installed_differs(&peer) {
            return Err(format!("after pip install, at_rpc still differs: {why}"));
        }
        std::fs::copy(&pyproject, &stamp)
            .map_err(|e| format!("cannot write {}: {e}", stamp.display()))?;
    }
    Ok(peer)
}

/// `pip install` of a fresh copy of the package's sources (a build in the
/// source tree would leave `build/` there, whose stale files a later
/// build takes along), without network when the venv can build a wheel
/// itself (else pip fetches setuptools from PyPI).
fn install(peer: &PythonPeer, target: &Path) -> Result<(), String> {
    let source = repo_root().join("peers/python");
    let copy = target.join("py-venv-src");
    let _ = std::fs::remove_dir_all(&copy);
    copy_tree(&source.join("src"), &copy.join("src"))
        .and_then(|()| {
            for file in ["pyproject.toml", "README.md"] {
                std::fs::copy(source.join(file), copy.join(file))?;
            }
            Ok(())
        })
        .map_err(|e| format!("cannot copy peers/python to {}: {e}", copy.display()))?;
    // pyproject.toml needs setuptools 77 (an SPDX license string), which
    // builds wheels by itself.
    let offline = works(
        peer.python.to_str().unwrap_or("python3"),
        &[
            "-c",
            "import setuptools; assert int(setuptools.__version__.split('.')[0]) >= 77",
        ],
    );
    let mut pip = Command::new(&peer.python);
    pip.args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--no-deps",
        "--force-reinstall",
    ]);
    if offline {
        pip.arg("--no-build-isolation");
    }
    let out = run(pip.arg(&copy), SUITE_LIMIT);
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "pip install ./peers/python failed:\n{}{}",
            text(&out.stdout),
            text(&out.stderr)
        ))
    }
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name();
        if name == "__pycache__" || name.to_string_lossy().ends_with(".egg-info") {
            continue;
        }
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &to.join(&name))?;
        } else {
            std::fs::copy(entry.path(), to.join(&name))?;
        }
    }
    Ok(())
}

/// Why the venv's installed `at_rpc` is not `peers/python/src/at_rpc`
/// (a file missing, extra or different), or None when they are the same.
fn installed_differs(peer: &PythonPeer) -> Option<String> {
    let out = Command::new(&peer.python)
        .args([
            "-c",
            "import at_rpc, os; print(os.path.dirname(at_rpc.__file__))",
        ])
        .current_dir(&peer.venv)
        .stdin(Stdio::null())
        .output();
    let installed = match out {
        Ok(out) if out.status.success() => PathBuf::from(text(&out.stdout).trim()),
        Ok(out) => return Some(format!("import at_rpc fails: {}", text(&out.stderr))),
        Err(e) => return Some(format!("cannot run {}: {e}", peer.python.display())),
    };
    let source = repo_root().join("peers/python/src/at_rpc");
    let files = |dir: &Path| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.ends_with(".py") || n == "py.typed")
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    };
    let (want, have) = (files(&source), files(&installed));
    if want != have {
        return Some(format!(
            "files {have:?} in {} where the source has {want:?}",
            installed.display()
        ));
    }
    want.into_iter()
        .find(|name| {
            std::fs::read(source.join(name)).ok() != std::fs::read(installed.join(name)).ok()
        })
        .map(|name| format!("{name} differs"))
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

/// The installed `at-rpc serve` on loopback, TCP and UDP, OS-chosen ports.
pub fn python_server(python: &PythonPeer) -> Served {
    let mut serve = python.command();
    serve.args(["serve", "--tcp", "127.0.0.1:0", "--udp", "127.0.0.1:0"]);
    let (guard, addrs) = spawn_server(serve, 2);
    let (tcp, udp) = addresses(&addrs);
    Served {
        _guard: guard,
        tcp,
        udp,
    }
}
