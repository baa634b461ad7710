//! `at-embedded-example`: this crate's device servers, run on a PC over
//! `std-embedded-nal` (one thread per stack; see the `desktop` module).
//!
//! ```text
//! cargo run -p at-embedded-example --features std -- [--tcp ADDR|none] [--udp ADDR|none]
//! ```
//! Both default to `0.0.0.0:16724`. Port 0 lets the OS choose; the lines
//! `listening on tcp://IP:PORT` and `listening on udp://IP:PORT` on stdout
//! give the real ports. Logs go to stderr (`RUST_LOG=debug` for more).

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;

use at_embedded_example::desktop;

const USAGE: &str = "usage: at-embedded-example [--tcp IP:PORT|none] [--udp IP:PORT|none]

Serves the AT calculator (add, sub, mul, div) with the device code of
at-embedded-example, over std-embedded-nal. Defaults: 0.0.0.0:16724 for both;
port 0 lets the OS choose. Prints `listening on tcp://IP:PORT` and
`listening on udp://IP:PORT` once bound.";

fn parse_listen(text: &str) -> Result<Option<SocketAddr>, String> {
    if text.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|_| format!("{text:?} is not IP:PORT or none"))
}

fn parse_args() -> Result<(Option<SocketAddr>, Option<SocketAddr>), String> {
    let default = SocketAddr::from(([0, 0, 0, 0], at_core::DEFAULT_PORT));
    let (mut tcp, mut udp) = (Some(default), Some(default));
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) => (name.to_owned(), Some(value.to_owned())),
            None => (arg.clone(), None),
        };
        let slot = match name.as_str() {
            "--tcp" => &mut tcp,
            "--udp" => &mut udp,
            "-h" | "--help" => return Err(String::new()),
            _ => return Err(format!("unknown argument {arg:?}")),
        };
        let value = match inline.or_else(|| args.next()) {
            Some(value) => value,
            None => return Err(format!("{name} needs a value")),
        };
        *slot = parse_listen(&value)?;
    }
    if tcp.is_none() && udp.is_none() {
        return Err("nothing to serve: --tcp and --udp are both none".into());
    }
    Ok((tcp, udp))
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let (tcp, udp) = match parse_args() {
        Ok(addrs) => addrs,
        Err(message) if message.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("error: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let running = match desktop::start(tcp, udp) {
        Ok(running) => running,
        Err(e) => {
            eprintln!("error: cannot listen: {e}");
            return ExitCode::from(3);
        }
    };
    // These lines are an interface: scripts read the real ports from them.
    let mut stdout = std::io::stdout().lock();
    if let Some(addr) = running.tcp_addr() {
        let _ = writeln!(stdout, "listening on tcp://{addr}");
    }
    if let Some(addr) = running.udp_addr() {
        let _ = writeln!(stdout, "listening on udp://{addr}");
    }
    let _ = stdout.flush();
    drop(stdout);
    running.wait();
    ExitCode::SUCCESS
}
