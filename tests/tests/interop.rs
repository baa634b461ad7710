//! The three implementations against each other, as real processes on
//! loopback with OS-chosen ports: the Python interop suite
//! (`peers/python/tests/interop.py`, run by the installed package's Python) against the Rust and the Python servers, the
//! Python and Rust command lines against each other's servers, the C client
//! against both servers, and the C and Python peers' own test programs.
//!
//! The Python peer is the installed one (`at-rpc` and `import at_rpc` from
//! a virtual environment, see `at_tests::peers::python`). Tests that need
//! `python3` (3.11+) or a C compiler and `make` skip when
//! those are missing, and fail instead under `AT_REQUIRE_ALL=1`.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Instant;

use at_tests::at_host_bin;
use at_tests::peers::{
    CALL_LIMIT, PythonPeer, SUITE_LIMIT, Served, c_toolchain, calc_client, python, python_server,
    repo_root, run, rust_server, text,
};

// ---------------------------------------------------------------------------
// The Python interop suite against both servers

/// Runs interop.py against `server`; asserts every check passed and returns
/// how many ran.
fn interop_suite(python: &PythonPeer, server: &Served, which: &str) -> usize {
    let started = Instant::now();
    let out = run(
        Command::new(&python.python)
            .arg(repo_root().join("peers/python/tests/interop.py"))
            .args(["--tcp", &server.tcp, "--udp", &server.udp, "--exact"]),
        SUITE_LIMIT,
    );
    let stdout = text(&out.stdout);
    let last = stdout.lines().last().unwrap_or("");
    let counts: Vec<usize> = last
        .strip_suffix(" failed")
        .and_then(|s| s.split_once(" passed, "))
        .map(|(p, f)| vec![p.parse().unwrap_or(0), f.parse().unwrap_or(usize::MAX)])
        .unwrap_or_default();
    assert!(
        out.status.success() && counts.len() == 2 && counts[1] == 0,
        "interop.py against the {which} server (exit {:?}):\n{stdout}{}",
        out.status.code(),
        text(&out.stderr)
    );
    // The suite has about 230 checks; far fewer means checks went missing.
    assert!(counts[0] >= 200, "only {} checks ran: {stdout}", counts[0]);
    eprintln!(
        "interop.py against the {which} server: {last} in {:.2?}",
        started.elapsed()
    );
    counts[0]
}

#[test]
fn python_interop_suite_passes_against_at_host_serve() {
    let Some(python) = python() else { return };
    let server = rust_server();
    interop_suite(python, &server, "Rust");
}

#[test]
fn python_interop_suite_passes_against_the_python_server() {
    let Some(python) = python() else { return };
    let server = python_server(python);
    interop_suite(python, &server, "Python");
}

// ---------------------------------------------------------------------------
// The two command lines are interchangeable

/// A CLI case: (args after `call --server ADDR [--udp]`, exit code, stdout,
/// start of stderr), as `at-host call` against `at-host serve` gives them.
type CliCase = (&'static [&'static str], i32, &'static str, &'static str);

const CLI_CASES: &[CliCase] = &[
    (&["add", "10", "20"], 0, "30\n", ""),
    (&["sub", "10", "20"], 0, "-10\n", ""),
    (&["mul", "6", "7"], 0, "42\n", ""),
    (&["div", "10", "4"], 0, "2.5\n", ""),
    (&["div", "10", "2"], 0, "5.0\n", ""),
    (&["add", "10.0", "20"], 0, "30.0\n", ""),
    (&["mul", "6", "7.5"], 0, "45.0\n", ""),
    (&["sub", "-5", "2.5"], 0, "-7.5\n", ""),
    (&["add", "0.1", "0.2"], 0, "0.30000000000000004\n", ""),
    (&["mul", "1e3", "1e297"], 0, "1e300\n", ""),
    (
        &["sub", "-9223372036854775807", "1"],
        0,
        "-9223372036854775808\n",
        "",
    ),
    (
        &["--json", "div", "10", "4"],
        0,
        "{\"status\": \"success\", \"result\": 2.5}\n",
        "",
    ),
    (
        &["div", "1", "0"],
        1,
        "",
        "error: division_by_zero: division by zero\n",
    ),
    (
        &["div", "1.5", "0.0"],
        1,
        "",
        "error: division_by_zero: division by zero\n",
    ),
    (
        &["--json", "div", "1", "0"],
        1,
        "{\"status\": \"error\", \"code\": \"division_by_zero\", \"message\": \"division by zero\"}\n",
        "error: division_by_zero: division by zero\n",
    ),
    (
        &["add", "9223372036854775807", "1"],
        1,
        "",
        "error: overflow: ",
    ),
    (
        &["add", "9223372036854775808", "0"],
        1,
        "",
        "error: overflow: ",
    ),
    (&["mul", "1e300", "1e300"], 1, "", "error: overflow: "),
    (&["add", "1"], 1, "", "error: invalid_arguments: "),
    (&["add"], 1, "", "error: invalid_arguments: "),
    (&["add", "x", "1"], 1, "", "error: invalid_arguments: "),
    (&["add", "true", "2"], 1, "", "error: invalid_arguments: "),
    (&["add", "[1]", "2"], 1, "", "error: invalid_arguments: "),
    (&["pow", "2", "8"], 1, "", "error: unknown_function: "),
];

/// One CLI's `call` as a command: `at-host call` or the installed `at-rpc call`.
#[derive(Clone, Copy)]
enum Cli<'a> {
    Rust,
    Python(&'a PythonPeer),
}

impl Cli<'_> {
    fn call(self, args: &[&str]) -> Output {
        let mut command = match self {
            Cli::Rust => Command::new(at_host_bin()),
            Cli::Python(python) => python.command(),
        };
        command.arg("call").args(args);
        run(&mut command, CALL_LIMIT)
    }

    fn name(self) -> &'static str {
        match self {
            Cli::Rust => "at-host call",
            Cli::Python(_) => "at-rpc call",
        }
    }
}

type Outcome = (Option<i32>, String, String);

fn outcome(out: &Output) -> Outcome {
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

/// `f` over `items` on `workers` threads, results in the items' order.
/// (Most of a CLI call's time is process start-up, mostly waiting: running
/// a few at once keeps the test short even on a busy machine.)
fn parallel<T: Sync, R: Send>(items: &[T], workers: usize, f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<std::sync::Mutex<Option<R>>> =
        items.iter().map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    let r = f(item);
                    *results[i].lock().unwrap() = Some(r);
                }
            });
        }
    });
    results
        .into_iter()
        .map(|r| r.into_inner().unwrap().expect("every item ran"))
        .collect()
}

/// Every case through `cli` against `server`, over TCP and UDP, compared
/// exactly with `at-host call` against `at-host serve` (which must itself
/// give the table's answers).
fn compare_clis(cli: Cli<'_>, server: &Served, server_name: &str) {
    let reference = rust_server();
    let jobs: Vec<(bool, &CliCase)> = [false, true]
        .into_iter()
        .flat_map(|udp| CLI_CASES.iter().map(move |case| (udp, case)))
        .collect();
    let mismatches: Vec<String> = parallel(&jobs, 4, |&(udp, &(args, code, stdout, stderr))| {
        let (addr, ref_addr) = if udp {
            (&server.udp, &reference.udp)
        } else {
            (&server.tcp, &reference.tcp)
        };
        let with = |addr: &str| {
            let mut all = vec!["--server".to_owned(), addr.to_owned()];
            if udp {
                all.push("--udp".to_owned());
            }
            all.extend(args.iter().map(|a| (*a).to_owned()));
            all
        };
        let ref_args = with(ref_addr);
        let ref_args: Vec<&str> = ref_args.iter().map(String::as_str).collect();
        let want = outcome(&Cli::Rust.call(&ref_args));
        assert!(
            want.0 == Some(code) && want.1 == stdout && want.2.starts_with(stderr),
            "at-host call {ref_args:?} against at-host serve gave {want:?}, \
             expected ({code}, {stdout:?}, {stderr:?}...)"
        );
        let these = with(addr);
        let these: Vec<&str> = these.iter().map(String::as_str).collect();
        let got = outcome(&cli.call(&these));
        (got != want).then(|| {
            format!(
                "{} {these:?} against the {server_name} server:\n   got {got:?}\n  want {want:?}",
                cli.name()
            )
        })
    })
    .into_iter()
    .flatten()
    .collect();
    assert!(
        mismatches.is_empty(),
        "{} of {} calls differ from at-host call -> at-host serve:\n{}",
        mismatches.len(),
        jobs.len(),
        mismatches.join("\n")
    );
}

/// Exit codes of failures that never reach a server: usage errors (2) and
/// transport failures (3): refused, and a UDP server that never answers.
fn compare_failure_exit_codes(python: &PythonPeer) {
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent = silent.local_addr().unwrap().to_string();
    let cases: &[(&[&str], i32)] = &[
        (&["--server", &free, "add", "1", "2"], 3),
        (
            &[
                "--udp",
                "--timeout",
                "0.3",
                "--server",
                &silent,
                "add",
                "1",
                "2",
            ],
            3,
        ),
        (&[], 2),
        (&["--bogus", "add"], 2),
        (&["--timeout", "soon", "add", "1", "2"], 2),
        (&["--server", "host:port", "add", "1", "2"], 2),
    ];
    for &(args, code) in cases {
        for cli in [Cli::Rust, Cli::Python(python)] {
            let out = cli.call(args);
            assert_eq!(
                out.status.code(),
                Some(code),
                "{} {args:?}: stdout {:?} stderr {:?}",
                cli.name(),
                text(&out.stdout),
                text(&out.stderr)
            );
            assert!(out.stdout.is_empty(), "{} {args:?}", cli.name());
            assert!(!out.stderr.is_empty(), "{} {args:?}", cli.name());
        }
    }
}

#[test]
fn python_cli_against_at_host_serve_prints_what_at_host_call_prints() {
    let Some(python) = python() else { return };
    let server = rust_server();
    compare_clis(Cli::Python(python), &server, "Rust");
    compare_failure_exit_codes(python);
}

#[test]
fn at_host_call_against_the_python_server_prints_what_it_prints_against_at_host() {
    let Some(python) = python() else { return };
    let server = python_server(python);
    compare_clis(Cli::Rust, &server, "Python");
}

// ---------------------------------------------------------------------------
// The C client against both servers

/// (func, a, b, exit code, stdout, stderr): exactly what calc_client prints.
const C_CASES: &[(&str, &str, &str, i32, &str, &str)] = &[
    ("add", "10", "20", 0, "30\n", ""),
    ("sub", "10", "20", 0, "-10\n", ""),
    ("mul", "6", "7", 0, "42\n", ""),
    ("div", "10", "4", 0, "2.5\n", ""),
    ("div", "10", "2", 0, "5.0\n", ""),
    ("add", "10.0", "20", 0, "30.0\n", ""),
    ("mul", "6", "7.5", 0, "45.0\n", ""),
    ("sub", "-5", "2.5", 0, "-7.5\n", ""),
    ("add", "0.1", "0.2", 0, "0.30000000000000004\n", ""),
    ("mul", "1e3", "1e297", 0, "1e300\n", ""),
    (
        "sub",
        "-9223372036854775807",
        "1",
        0,
        "-9223372036854775808\n",
        "",
    ),
    (
        "div",
        "1",
        "0",
        1,
        "",
        "error: division_by_zero: division by zero\n",
    ),
    (
        "div",
        "1.5",
        "0.0",
        1,
        "",
        "error: division_by_zero: division by zero\n",
    ),
    (
        "add",
        "9223372036854775807",
        "1",
        1,
        "",
        "error: overflow: integer result outside 64-bit range\n",
    ),
    (
        "add",
        "9223372036854775808",
        "0",
        1,
        "",
        "error: overflow: integer argument outside 64-bit range\n",
    ),
    (
        "mul",
        "1e300",
        "1e300",
        1,
        "",
        "error: overflow: result is not a finite number\n",
    ),
    (
        "pow",
        "2",
        "8",
        1,
        "",
        "error: unknown_function: unknown function\n",
    ),
];

fn c_call(client: &Path, udp: bool, addr: &str, args: &[&str]) -> Output {
    let (host, port) = addr.rsplit_once(':').expect("HOST:PORT");
    let mut command = Command::new(client);
    if udp {
        command.arg("--udp");
    }
    command.args([host, port]).args(args);
    run(&mut command, CALL_LIMIT)
}

/// Every C case over TCP and UDP against `server`.
fn c_client_against(client: &Path, server: &Served, server_name: &str) {
    let mut mismatches = Vec::new();
    let mut runs = 0;
    for udp in [false, true] {
        let addr = if udp { &server.udp } else { &server.tcp };
        for &(func, a, b, code, stdout, stderr) in C_CASES {
            let out = c_call(client, udp, addr, &[func, a, b]);
            runs += 1;
            let got = outcome(&out);
            let want = (Some(code), stdout.to_owned(), stderr.to_owned());
            if got != want {
                mismatches.push(format!(
                    "calc_client{} {func} {a} {b} against the {server_name} server:\n   got {got:?}\n  want {want:?}",
                    if udp { " --udp" } else { "" }
                ));
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {runs} calls went wrong:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}

/// invalid_arguments cannot be reached from calc_client: a non-number is its
/// own usage error (exit 2, nothing sent). And its transport failures.
fn c_client_failures(client: &Path) {
    for (a, b) in [("x", "1"), ("1", "true"), ("\"1\"", "2"), ("[1]", "2")] {
        let out = c_call(client, false, "127.0.0.1:1", &["add", a, b]);
        assert_eq!(out.status.code(), Some(2), "calc_client add {a} {b}");
        assert!(out.stdout.is_empty());
    }
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let out = c_call(client, false, &free, &["add", "1", "2"]);
    assert_eq!(out.status.code(), Some(3), "refused: {}", text(&out.stderr));
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let (host, port) = addr.rsplit_once(':').unwrap();
    let out = run(
        Command::new(client)
            .env("AT_TIMEOUT_MS", "300")
            .args(["--udp", host, port, "add", "1", "2"]),
        CALL_LIMIT,
    );
    assert_eq!(out.status.code(), Some(3), "timeout: {}", text(&out.stderr));
    assert!(out.stdout.is_empty());
}

#[test]
fn c_client_against_at_host_serve() {
    let Some(client) = calc_client() else { return };
    let server = rust_server();
    c_client_against(&client, &server, "Rust");
    c_client_failures(&client);
}

#[test]
fn c_client_against_the_python_server() {
    let Some(python) = python() else { return };
    let Some(client) = calc_client() else { return };
    let server = python_server(python);
    c_client_against(&client, &server, "Python");
}

// ---------------------------------------------------------------------------
// The peers' own test programs (both run the shared vectors)

#[test]
fn c_peer_passes_its_vector_tests_under_asan_and_ubsan() {
    if !c_toolchain() {
        return;
    }
    let mut make = Command::new("make");
    make.arg("-C").arg(repo_root().join("peers/c")).arg("test");
    // Its authentication interop script runs the installed Python peer.
    if let Some(python) = python() {
        make.arg(format!("AT_RPC={}", python.at_rpc.display()));
    }
    let out = run(&mut make, SUITE_LIMIT);
    let stdout = text(&out.stdout);
    let summary = stdout
        .lines()
        .rev()
        .find(|l| l.ends_with(" failed"))
        .unwrap_or("");
    assert!(
        out.status.success() && summary.ends_with(" passed, 0 failed"),
        "make -C peers/c test (exit {:?}):\n{stdout}{}",
        out.status.code(),
        text(&out.stderr)
    );
    eprintln!("peers/c test_vectors: {summary}");
}

/// The Python peer's own tests (`peers/python/tests`: the codec, client,
/// server and authentication, the `rpc.*` functions, discovery, the
/// command line, the asyncio client against the Python, at-host and device
/// servers, the package's shape) with pytest, from the virtual environment
/// against the installed package. pytest must be in it (`.ci/run` puts it
/// there; in a venv the tests made it is installed from PyPI once).
#[test]
fn python_peer_passes_its_own_tests() {
    let Some(python) = python() else { return };
    let pytest = python.venv.join("bin/pytest");
    if !pytest.is_file() {
        let out = run(
            Command::new(&python.python).args(["-m", "pip", "install", "--quiet", "pytest"]),
            SUITE_LIMIT,
        );
        if !out.status.success() {
            at_tests::skip(&format!(
                "pytest is not in {} and pip could not install it: {}",
                python.venv.display(),
                text(&out.stderr)
            ));
            return;
        }
    }
    let device = at_tests::build_bin("at-embedded-example", "at-embedded-example", &["std"]);
    let out = run(
        Command::new(&pytest)
            .args([
                "-q",
                "-p",
                "no:cacheprovider",
                "--import-mode=importlib",
                "tests",
            ])
            .env("AT_HOST_BIN", at_host_bin())
            .env("AT_DEVICE_BIN", device)
            .env_remove("AT_KEY")
            .env_remove("AT_LOG")
            .current_dir(repo_root().join("peers/python")),
        SUITE_LIMIT,
    );
    let stdout = text(&out.stdout);
    // pytest's summary, "N passed": every file, not one (exit status 5,
    // nothing collected, is a failure too).
    let passed: usize = stdout
        .lines()
        .rev()
        .find_map(|l| {
            let (n, _) = l.split_once(" passed")?;
            n.rsplit(' ').next()?.parse().ok()
        })
        .unwrap_or(0);
    assert!(
        out.status.success() && passed > 150,
        "pytest in peers/python (exit {:?}, {passed} passed):\n{stdout}{}",
        out.status.code(),
        text(&out.stderr)
    );
    eprintln!("peers/python: {passed} tests passed");
}
