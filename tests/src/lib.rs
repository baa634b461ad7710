//! Helpers shared by the tests in `tests/tests/`: raw frames, raw sockets
//! with bounded waits, and the `at-host` binary.

pub mod broker;
pub mod firmware;
pub mod peers;
pub mod relay;
pub mod sealed;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use at_core::{HEADER_LEN, Header, Kind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long any single wait in a test may take before the test fails
/// (a bound against hangs, not a speed assertion).
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A frame of `kind` with `seq` around `body`.
pub fn frame(kind: Kind, seq: u32, body: &[u8]) -> Vec<u8> {
    let mut out = Header::new(kind, seq, body).to_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

/// A request frame.
pub fn request(seq: u32, body: &str) -> Vec<u8> {
    frame(Kind::Request, seq, body.as_bytes())
}

/// A calculator request frame `func(a, b)` with JSON argument texts.
pub fn calc(seq: u32, func: &str, a: &str, b: &str) -> Vec<u8> {
    request(seq, &format!(r#"{{"func": "{func}", "args": [{a}, {b}]}}"#))
}

/// A reply read off the wire.
#[derive(Debug, Clone, PartialEq)]
pub struct RawReply {
    /// The header.
    pub header: Header,
    /// The body as text.
    pub body: String,
}

impl RawReply {
    /// The reply's kind.
    pub fn kind(&self) -> Kind {
        self.header.kind().expect("a reply kind")
    }

    /// The `result` as JSON text, or `error CODE`.
    pub fn outcome(&self) -> String {
        match at_core::Reply::parse(self.body.as_bytes()).expect("a reply body") {
            at_core::Reply::Success(v) => v.to_string(),
            at_core::Reply::Error(e) => format!("error {}", e.code),
        }
    }
}

/// The error code of a reply, if it is an error.
pub fn error_code(reply: &RawReply) -> Option<at_core::ErrorCode> {
    match at_core::Reply::parse(reply.body.as_bytes()).expect("a reply body") {
        at_core::Reply::Error(e) => e.error_code(),
        at_core::Reply::Success(_) => None,
    }
}

/// A TCP connection to `addr` with `TCP_NODELAY`, bounded by [`PATIENCE`].
pub async fn connect(addr: std::net::SocketAddr) -> TcpStream {
    let stream = tokio::time::timeout(PATIENCE, TcpStream::connect(addr))
        .await
        .expect("connect in time")
        .expect("connect");
    stream.set_nodelay(true).expect("TCP_NODELAY");
    stream
}

/// Parses one whole reply frame (checks CRC).
pub fn parse_reply(bytes: &[u8]) -> RawReply {
    let frame = at_core::Frame::parse(bytes, u32::MAX).expect("a valid reply frame");
    RawReply {
        header: frame.header,
        body: String::from_utf8(frame.body.to_vec()).expect("utf-8 body"),
    }
}

/// Reads one frame from a TCP stream, bounded by [`PATIENCE`].
pub async fn read_reply(stream: &mut TcpStream) -> RawReply {
    let mut head = [0u8; HEADER_LEN];
    tokio::time::timeout(PATIENCE, stream.read_exact(&mut head))
        .await
        .expect("a reply within the patience bound")
        .expect("a reply header");
    let header = Header::from_bytes(&head);
    let mut body = vec![0u8; header.length as usize];
    tokio::time::timeout(PATIENCE, stream.read_exact(&mut body))
        .await
        .expect("a reply body within the patience bound")
        .expect("a reply body");
    let mut whole = head.to_vec();
    whole.extend(body);
    parse_reply(&whole)
}

/// Waits until the peer closes the stream (EOF or reset), bounded by
/// [`PATIENCE`]; returns the bytes that came before the close.
pub async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(PATIENCE, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return all,
            Ok(Ok(n)) => all.extend_from_slice(&buf[..n]),
            Err(_) => panic!("the connection was not closed within {PATIENCE:?}"),
        }
    }
}

/// Writes all of `bytes`.
pub async fn write(stream: &mut TcpStream, bytes: &[u8]) {
    stream.write_all(bytes).await.expect("write");
}

/// The `at-host` binary of this build, brought up to date once per test
/// process (`cargo test -p at-tests` alone would not rebuild it).
pub fn at_host_bin() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| build_bin("at-host", "at-host", &[]))
        .clone()
}

/// The directory this test executable was built into (`target/debug`,
/// `target/release`): its `deps` folder's parent.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("target dir")
        .to_path_buf()
}

/// Builds `package`'s binary `bin` (with `features`) into this test run's
/// target directory and profile, and returns its path.
pub fn build_bin(package: &str, bin: &str, features: &[&str]) -> PathBuf {
    let profile_dir = profile_dir();
    let target_root = profile_dir.parent().expect("target root");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    // Not the variables cargo set for this test (CARGO_PKG_VERSION_MAJOR,
    // ...): build scripts that watch them (ring's) would see them change
    // between this build and the shell's, and each would rebuild all.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy().into_owned();
        let ours = name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_MANIFEST_")
            || matches!(
                name.as_str(),
                "CARGO_CRATE_NAME" | "CARGO_PRIMARY_PACKAGE" | "CARGO_TARGET_TMPDIR"
            );
        if ours {
            build.env_remove(&name);
        }
    }
    build.args(["build", "--quiet", "-p", package, "--bin", bin]);
    if !features.is_empty() {
        build.arg("--features").arg(features.join(","));
    }
    build.arg("--target-dir").arg(target_root);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        build.arg("--release");
    }
    let status = build.status().expect("run cargo build");
    assert!(
        status.success(),
        "cargo build -p {package} --bin {bin} failed"
    );
    profile_dir.join(format!("{bin}{}", std::env::consts::EXE_SUFFIX))
}

/// A child process that is killed when dropped, so no test leaves one
/// running.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `program args...` and reads the `listening on tcp://` and
/// `listening on udp://` lines it prints (whichever of them come), until a
/// line of neither kind or until `expect` lines were read.
pub fn spawn_server(mut command: Command, expect: usize) -> (KillOnDrop, Vec<String>) {
    use std::io::BufRead;
    command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .stdin(Stdio::null());
    let mut child = command.spawn().expect("spawn server");
    let stdout = child.stdout.take().expect("stdout");
    let guard = KillOnDrop(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = std::io::BufReader::new(stdout).lines();
        for _ in 0..expect {
            match lines.next() {
                Some(Ok(line)) => {
                    if tx.send(line).is_err() {
                        return;
                    }
                }
                _ => return,
            }
        }
        // Keep reading so the child never blocks on a full pipe.
        for _ in lines {}
    });
    let mut addrs = Vec::new();
    for _ in 0..expect {
        let line = rx.recv_timeout(PATIENCE).expect("a listening line in time");
        let addr = line
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected line {line:?}"))
            .to_owned();
        addrs.push(addr);
    }
    (guard, addrs)
}

/// Skips a test that needs an outside tool: prints why and returns, unless
/// `AT_REQUIRE_ALL=1` (as CI sets it), where a skip is a failure.
pub fn skip(why: &str) {
    if std::env::var("AT_REQUIRE_ALL").is_ok_and(|v| v == "1") {
        panic!("AT_REQUIRE_ALL=1 and this test cannot run: {why}");
    }
    eprintln!("SKIPPED: {why}");
}

/// The calculator calls every AT calculator server must answer alike, over
/// any transport: `(func, args, the result or the error code)`.
pub fn calculator_cases() -> Vec<(
    &'static str,
    Vec<at_core::Value<'static>>,
    Result<at_host::Value, at_core::ErrorCode>,
)> {
    use at_core::ErrorCode as E;
    use at_core::Value::{Float, Int};
    use at_host::Value as R;
    vec![
        ("add", vec![Int(10), Int(20)], Ok(R::Int(30))),
        ("sub", vec![Int(10), Int(20)], Ok(R::Int(-10))),
        ("mul", vec![Int(6), Int(7)], Ok(R::Int(42))),
        ("div", vec![Int(10), Int(4)], Ok(R::Float(2.5))),
        ("div", vec![Int(10), Int(2)], Ok(R::Float(5.0))),
        (
            "add",
            vec![Float(0.1), Float(0.2)],
            Ok(R::Float(0.30000000000000004)),
        ),
        ("div", vec![Int(1), Int(0)], Err(E::DivisionByZero)),
        ("add", vec![Int(i64::MAX), Int(1)], Err(E::Overflow)),
        ("mul", vec![Float(1e300), Float(1e300)], Err(E::Overflow)),
        ("add", vec![Int(1)], Err(E::InvalidArguments)),
        (
            "add",
            vec![Int(1), at_core::Value::str("2")],
            Err(E::InvalidArguments),
        ),
        ("pow", vec![Int(2), Int(3)], Err(E::UnknownFunction)),
    ]
}

/// Checks one outcome against its case from [`calculator_cases`].
pub fn check_case(
    func: &str,
    args: &[at_core::Value<'_>],
    want: &Result<at_host::Value, at_core::ErrorCode>,
    got: Result<at_host::Value, at_host::Error>,
) {
    match (want, got) {
        (Ok(want), Ok(got)) => assert_eq!(&got, want, "{func}{args:?}"),
        (Err(code), Err(e)) => assert_eq!(e.code(), Some(*code), "{func}{args:?}: {e}"),
        (want, got) => panic!("{func}{args:?}: wanted {want:?}, got {got:?}"),
    }
}

/// Runs every [`calculator_cases`] call over a TCP client.
pub async fn check_calculator_tcp(client: &mut at_host::Client) {
    for (func, args, want) in calculator_cases() {
        check_case(func, &args, &want, client.call(func, &args).await);
    }
}

/// Runs every [`calculator_cases`] call over a UDP client.
pub async fn check_calculator_udp(client: &mut at_host::UdpClient) {
    for (func, args, want) in calculator_cases() {
        check_case(func, &args, &want, client.call(func, &args).await);
    }
}
