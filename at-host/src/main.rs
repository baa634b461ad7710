//! The `at-host` command: `serve`, `call`, `ping`, `info`, `list`,
//! `topics`, `watch`, `notify`, `discover`, `keygen`, `demo`, `bench`.

mod bench;
mod tools;

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use at_host::addr::{parse_listen, split_host_port};
use at_host::{AuthKey, Client, Error, Server, UdpClient, UdpConfig, Value};
use clap::{Parser, Subcommand};

/// AT: call functions on another device.
#[derive(Parser)]
#[command(name = "at-host", version, about)]
struct Cli {
    /// More logging (-v debug, -vv trace); RUST_LOG also works.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Less logging (-q warnings only, -qq errors only).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    quiet: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the calculator over TCP and UDP.
    Serve {
        /// TCP address to listen on, or `none` (default: every address,
        /// IPv6 and IPv4; IPv4 only on a host without IPv6).
        #[arg(long, default_value = "[::]:16724", value_name = "ADDR", value_parser = listen)]
        tcp: Listen,
        /// UDP address to listen on, or `none` (default: as --tcp, so that
        /// discovery by IPv4 broadcast and by IPv6 all-nodes both reach it).
        #[arg(long, default_value = "[::]:16724", value_name = "ADDR", value_parser = listen)]
        udp: Listen,
        /// Largest request body accepted, in bytes.
        #[arg(long, default_value_t = at_core::DEFAULT_MAX_BODY, value_name = "BYTES")]
        max_frame: u32,
        /// Most TCP connections at once; more are answered `busy` (when
        /// full, the longest-idle connection of the address holding the
        /// most is closed for a newcomer from another address).
        #[arg(long, default_value_t = 1024, value_name = "N")]
        max_connections: usize,
        /// Most TCP connections from one address at once; more are
        /// answered `busy`.
        #[arg(long, default_value_t = 64, value_name = "N")]
        max_per_address: usize,
        /// Close TCP connections idle this long, in seconds.
        #[arg(long, default_value_t = 300.0, value_name = "SECS")]
        idle_timeout: f64,
        /// The name rpc.info reports (default: the host name), and with
        /// --mqtt the AT name served through the broker.
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
        /// Require authentication with this key, KID:HEX (repeatable).
        #[arg(long = "key", value_name = "KID:HEX")]
        keys: Vec<String>,
        /// Require authentication with the keys of this file (lines `KID
        /// HEX`; `#` comments); it must not be readable by group or others.
        #[arg(long, value_name = "PATH")]
        key_file: Option<std::path::PathBuf>,
        /// Serve through this MQTT 5 broker too, mqtt://HOST[:PORT] or
        /// mqtts://HOST[:PORT], as --name (contract section 11).
        #[arg(long, value_name = "URL")]
        mqtt: Option<String>,
        #[command(flatten)]
        broker: BrokerArgs,
    },
    /// Print a new key, KID:HEX, from the operating system's CSPRNG.
    Keygen {
        /// The key id (1 to 32 of A-Z a-z 0-9 - _ .).
        #[arg(default_value = "key")]
        kid: String,
    },
    /// Check that a server answers, and how fast (rpc.ping), like ping(8).
    Ping {
        #[command(flatten)]
        target: Target,
        /// How many pings.
        #[arg(long, default_value_t = 4, value_name = "N")]
        count: u32,
        /// Seconds between pings.
        #[arg(long, default_value_t = 1.0, value_name = "SECS")]
        interval: f64,
        /// Bytes of payload in each ping (0: none).
        #[arg(long, default_value_t = 0, value_name = "BYTES")]
        size: usize,
    },
    /// Show what a server says about itself (rpc.info).
    Info {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        key: KeyArgs,
    },
    /// List a server's functions with their signatures (rpc.functions).
    List {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        key: KeyArgs,
    },
    /// List a server's event topics (rpc.topics).
    Topics {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        key: KeyArgs,
    },
    /// Subscribe to a topic and print its events, one line each.
    Watch {
        /// The server, HOST[:PORT] (port 16724 when missing).
        #[arg(long, default_value = "127.0.0.1:16724", value_name = "HOST[:PORT]")]
        server: String,
        /// Subscribe over UDP instead of TCP.
        #[arg(long)]
        udp: bool,
        /// Give up on connecting, subscribing or renewing after this many
        /// seconds.
        #[arg(long, default_value_t = 5.0, value_name = "SECS")]
        timeout: f64,
        /// The lease to ask for, in seconds (1 to 300), renewed at half.
        #[arg(long, default_value_t = 60, value_name = "SECS",
              value_parser = clap::value_parser!(u16).range(1..=300))]
        lease: u16,
        /// At most one event per MS ms (the newest value; 0: every event).
        #[arg(long, default_value_t = 0, value_name = "MS")]
        interval: u32,
        /// Exit 0 after N events (default: watch until the end).
        #[arg(long, value_name = "N",
              value_parser = clap::value_parser!(u64).range(1..))]
        count: Option<u64>,
        /// Print each event's whole body (JSON) instead of `n value`.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        key: KeyArgs,
        /// The topic.
        topic: String,
    },
    /// Find the servers on the local network (rpc.info by broadcast and to
    /// IPv6 all-nodes).
    Discover {
        /// Seconds to wait for answers.
        #[arg(long, default_value_t = 1.0, value_name = "SECS")]
        timeout: f64,
        /// The network interface to ask on (default: IPv4 by the routing
        /// table, IPv6 on every interface but loopback).
        #[arg(long, value_name = "IF")]
        interface: Option<String>,
        /// IPv4 only.
        #[arg(long, conflicts_with = "ipv6")]
        ipv4: bool,
        /// IPv6 only.
        #[arg(long)]
        ipv6: bool,
        /// The port servers listen on.
        #[arg(long, default_value_t = at_core::DEFAULT_PORT, value_name = "PORT")]
        port: u16,
        /// Print a JSON array.
        #[arg(long)]
        json: bool,
        /// List the devices online on this broker instead (their retained
        /// status), mqtt://HOST[:PORT].
        #[arg(long, value_name = "URL")]
        mqtt: Option<String>,
        #[command(flatten)]
        broker: BrokerArgs,
    },
    /// Call one function and print its result.
    #[command(allow_negative_numbers = true)]
    Call {
        /// The server, HOST[:PORT] (port 16724 when missing), or a device
        /// through a broker, mqtt://HOST[:PORT]/DEVICE.
        #[arg(long, default_value = "127.0.0.1:16724", value_name = "HOST[:PORT]")]
        server: String,
        /// Call over UDP instead of TCP.
        #[arg(long)]
        udp: bool,
        /// Give up after this many seconds (the whole call, retries included).
        #[arg(long, default_value_t = 5.0, value_name = "SECS")]
        timeout: f64,
        /// UDP retransmissions before giving up.
        #[arg(long, default_value_t = 4, value_name = "N")]
        retries: u32,
        /// Print the whole reply body instead of the result.
        #[arg(long)]
        json: bool,
        /// Send `"deadline_ms": MS`: a server listing `deadline` does not
        /// start the call once MS ms have passed (0: never).
        #[arg(long, value_name = "MS")]
        deadline: Option<u32>,
        #[command(flatten)]
        key: KeyArgs,
        #[command(flatten)]
        broker: BrokerArgs,
        /// The function's name.
        func: String,
        /// Arguments: JSON values (10, 2.5, true, "x"), or else strings.
        #[arg(allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Send one notification (a call that gets no reply) and exit once sent.
    #[command(allow_negative_numbers = true)]
    Notify {
        /// The server, HOST[:PORT] (port 16724 when missing), or a device
        /// through a broker, mqtt://HOST[:PORT]/DEVICE.
        #[arg(long, default_value = "127.0.0.1:16724", value_name = "HOST[:PORT]")]
        server: String,
        /// Send over UDP instead of TCP.
        #[arg(long)]
        udp: bool,
        /// Give up after this many seconds (connecting, and with a key the
        /// session's hello).
        #[arg(long, default_value_t = 5.0, value_name = "SECS")]
        timeout: f64,
        #[command(flatten)]
        key: KeyArgs,
        #[command(flatten)]
        broker: BrokerArgs,
        /// The function's name.
        func: String,
        /// Arguments: JSON values (10, 2.5, true, "x"), or else strings.
        #[arg(allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Start a server on loopback and call it, over TCP and UDP.
    Demo,
    /// Measure calls/s and latency, optionally against a raw-socket echo.
    Bench {
        #[command(subcommand)]
        tool: Option<BenchTool>,
        /// Bench this server (HOST:PORT, TCP and UDP) instead of an in-process one.
        #[arg(long, value_name = "ADDR")]
        server: Option<SocketAddr>,
        /// Only the UDP scenario.
        #[arg(long)]
        udp: bool,
        /// Only this scenario.
        #[arg(long, value_enum, value_name = "NAME", conflicts_with = "udp")]
        scenario: Option<bench::Shape>,
        /// Call with pre-encoded frames and read replies by their header
        /// (for `--server` an echo-server, or AT called the same way).
        #[arg(long, conflicts_with = "key")]
        raw: bool,
        /// Seal every call with this key, KID:HEX (the in-process server
        /// then requires it).
        #[arg(long, value_name = "KID:HEX")]
        key: Option<String>,
        /// Connections in the many-connections scenario.
        #[arg(long, default_value_t = 100, value_name = "C")]
        connections: usize,
        /// Calls in flight in the pipelined scenario.
        #[arg(long, default_value_t = 64, value_name = "D")]
        depth: usize,
        /// Calls per scenario.
        #[arg(long, default_value_t = 50_000, value_name = "N")]
        calls: u64,
        /// Stop each scenario after this many seconds, even before N calls.
        #[arg(long, value_name = "SECS")]
        duration: Option<f64>,
        /// Also measure a raw TCP/UDP echo in the same shapes, and print ratios.
        #[arg(long)]
        baseline: bool,
        /// Print machine-readable JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `at-host bench`'s helpers.
#[derive(Subcommand)]
enum BenchTool {
    /// A blocking echo server (std threads, one per connection; UDP on the
    /// same port), the baseline of scripts/bench-vs-echo.sh; serves until
    /// killed.
    EchoServer {
        /// Address to listen on (TCP and UDP; port 0: the OS chooses).
        addr: SocketAddr,
    },
    /// N simulated devices (one MQTT connection each, serving the
    /// calculator as dev-0001...) called by name through one broker,
    /// against the same calls over direct TCP.
    Fleet {
        /// Simulated devices.
        #[arg(long, default_value_t = 1000, value_name = "N")]
        devices: usize,
        /// Use this running broker, mqtt://HOST:PORT (default: start a
        /// `mosquitto` of its own on a free loopback port).
        #[arg(long, value_name = "URL")]
        broker: Option<String>,
        /// Calls per scenario.
        #[arg(long, default_value_t = 20_000, value_name = "N")]
        calls: u64,
        /// Callers in flight at once in the concurrent scenarios.
        #[arg(long, default_value_t = 64, value_name = "C")]
        concurrency: usize,
        /// Print machine-readable JSON.
        #[arg(long)]
        json: bool,
    },
}

/// A client's key: `--key`, `--key-file` (its first key) or `AT_KEY`.
#[derive(clap::Args)]
struct KeyArgs {
    /// Authenticate with this key, KID:HEX (else `AT_KEY`).
    #[arg(long, value_name = "KID:HEX", conflicts_with = "key_file")]
    key: Option<String>,
    /// Authenticate with the first key of this file.
    #[arg(long, value_name = "PATH")]
    key_file: Option<std::path::PathBuf>,
}

impl KeyArgs {
    /// The key to use, if any; a usage error (exit 2) names what is wrong
    /// with a bad one, never showing it.
    fn key(&self) -> Result<Option<AuthKey>, ExitCode> {
        if let Some(path) = &self.key_file {
            let keys = AuthKey::read_file(path).map_err(|e| usage(&e.to_string()))?;
            return Ok(keys.into_iter().next());
        }
        let (text, source) = match &self.key {
            Some(text) => (text.clone(), "--key"),
            None => match std::env::var("AT_KEY") {
                Ok(text) if !text.is_empty() => (text, "AT_KEY"),
                _ => return Ok(None),
            },
        };
        AuthKey::parse(&text)
            .map(Some)
            .map_err(|e| usage(&format!("{source}: {e}")))
    }
}

/// The server a `ping`, `info` or `list` asks. `ping` takes no key:
/// `rpc.ping` is answered without authentication (contract section 9).
#[derive(clap::Args)]
struct Target {
    /// The server, HOST[:PORT] (port 16724 when missing), or a device
    /// through a broker, mqtt://HOST[:PORT]/DEVICE.
    #[arg(long, default_value = "127.0.0.1:16724", value_name = "HOST[:PORT]")]
    server: String,
    #[command(flatten)]
    broker: BrokerArgs,
    /// Over UDP instead of TCP.
    #[arg(long)]
    udp: bool,
    /// Give up on each call after this many seconds.
    #[arg(long, default_value_t = 1.0, value_name = "SECS")]
    timeout: f64,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// How to log in to a broker (for `mqtt://` and `mqtts://` addresses).
#[derive(clap::Args)]
struct BrokerArgs {
    /// This caller's AT name and MQTT client id (default
    /// `at-host-<pid>-<random hex>`; a server's is --name).
    #[arg(long, value_name = "NAME")]
    mqtt_name: Option<String>,
    /// The broker user (the password from --mqtt-password-file or
    /// `AT_MQTT_PASSWORD`).
    #[arg(long, value_name = "USER")]
    mqtt_user: Option<String>,
    /// A file whose first line is the broker password.
    #[arg(long, value_name = "PATH")]
    mqtt_password_file: Option<std::path::PathBuf>,
    /// With mqtts://: trust the CA certificates of this PEM file (default:
    /// the system's).
    #[arg(long, value_name = "PATH")]
    ca_file: Option<std::path::PathBuf>,
}

impl BrokerArgs {
    /// The broker at `url` with these login options (exit 2 for a bad URL
    /// or an unreadable password file).
    fn broker(&self, url: &str) -> Result<at_host::MqttBroker, ExitCode> {
        at_host::addr::MqttUrl::parse(url).map_err(|e| usage(&e))?;
        let mut broker = at_host::MqttBroker::new(url);
        let password = match &self.mqtt_password_file {
            Some(path) => match std::fs::read_to_string(path) {
                Ok(text) => Some(text.lines().next().unwrap_or("").to_owned()),
                Err(e) => return Err(usage(&format!("{}: {e}", path.display()))),
            },
            None => std::env::var("AT_MQTT_PASSWORD")
                .ok()
                .filter(|p| !p.is_empty()),
        };
        if password.is_some() && self.mqtt_user.is_none() {
            return Err(usage("a broker password needs --mqtt-user"));
        }
        broker.name = self.mqtt_name.clone();
        broker.user = self.mqtt_user.clone();
        broker.password = password;
        broker.ca_file = self.ca_file.clone();
        Ok(broker)
    }
}

/// `--server` as a destination: `mqtt[s]://HOST[:PORT]/DEVICE` through a
/// broker, else `HOST[:PORT]` resolved (exit 2 for a malformed one, 3 when
/// the name does not resolve).
async fn destination(
    server: &str,
    udp: bool,
    broker: &BrokerArgs,
) -> Result<tools::Dest, ExitCode> {
    if at_host::addr::MqttUrl::is_mqtt(server) {
        let url = at_host::addr::MqttUrl::parse(server).map_err(|e| usage(&e))?;
        let Some(device) = url.device else {
            return Err(usage(&format!(
                "{server:?}: name the device, mqtt://HOST[:PORT]/DEVICE"
            )));
        };
        return Ok(tools::Dest::Mqtt {
            broker: broker.broker(server)?,
            device,
            shown: server.to_owned(),
        });
    }
    let addr = resolve(server).await?;
    Ok(tools::Dest::Ip { addr, udp })
}

/// A listen address, or none (`--tcp none`).
#[derive(Clone, Copy)]
struct Listen(Option<SocketAddr>);

fn listen(text: &str) -> Result<Listen, String> {
    parse_listen(text).map(Listen)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A benchmark logs only problems unless asked: logging each connection
    // would be part of what it measures.
    let base = if matches!(cli.command, Command::Bench { .. }) {
        -1
    } else {
        0
    };
    init_logging(cli.verbose, cli.quiet, base);
    if let Command::Bench {
        tool,
        server,
        udp,
        scenario,
        raw,
        key,
        connections,
        depth,
        calls,
        duration,
        baseline,
        json,
    } = cli.command
    {
        let duration = match duration.map(seconds) {
            Some(None) => return usage("--duration must be a positive number of seconds"),
            Some(d) => d,
            None => None,
        };
        if let Some(BenchTool::Fleet {
            devices,
            broker,
            calls,
            concurrency,
            json,
        }) = tool
        {
            let options = bench::fleet::FleetOptions {
                devices: devices.max(1),
                broker,
                calls: calls.max(1),
                concurrency: concurrency.max(1),
                json,
            };
            return if bench::fleet::run(options) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(3)
            };
        }
        if let Some(BenchTool::EchoServer { addr }) = tool {
            return match bench::echo_server(addr) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => transport(&format!("echo-server: {e}")),
            };
        }
        let key = match key.as_deref().map(AuthKey::parse) {
            Some(Err(e)) => return usage(&format!("--key: {e}")),
            Some(Ok(key)) => Some(key),
            None => None,
        };
        let options = bench::Options {
            server,
            udp_only: udp,
            scenario,
            raw,
            key,
            connections: connections.max(1),
            depth: depth.max(1),
            calls: calls.max(1),
            duration,
            baseline,
            json,
        };
        return if bench::run(options) {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(3)
        };
    }
    let runtime = match runtime_for(&cli.command) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::from(3);
        }
    };
    runtime.block_on(async {
        match cli.command {
            Command::Serve {
                tcp,
                udp,
                max_frame,
                max_connections,
                max_per_address,
                idle_timeout,
                name,
                keys,
                key_file,
                mqtt,
                broker,
            } => {
                let mqtt = match mqtt.as_deref().map(|url| broker.broker(url)) {
                    Some(Ok(broker)) => Some(broker),
                    Some(Err(code)) => return code,
                    None => None,
                };
                let Some(idle) = seconds(idle_timeout) else {
                    return usage("--idle-timeout must be a positive number of seconds");
                };
                let mut all = Vec::new();
                for text in &keys {
                    match AuthKey::parse(text) {
                        Ok(key) => all.push(key),
                        Err(e) => return usage(&format!("--key: {e}")),
                    }
                }
                if let Some(path) = &key_file {
                    match AuthKey::read_file(path) {
                        Ok(keys) => all.extend(keys),
                        Err(e) => return usage(&e.to_string()),
                    }
                }
                let mut kids: Vec<&str> = all.iter().map(AuthKey::kid).collect();
                kids.sort_unstable();
                if kids.windows(2).any(|w| w[0] == w[1]) {
                    return usage("two keys have the same key id");
                }
                let limits = Limits {
                    max_frame,
                    max_connections,
                    max_per_address,
                    idle_timeout: idle,
                };
                serve(tcp.0, udp.0, mqtt, limits, name, all).await
            }
            Command::Keygen { kid } => match AuthKey::generate(&kid) {
                Ok(key) => {
                    println!("{}", key.to_text());
                    ExitCode::SUCCESS
                }
                Err(e) => usage(&e.to_string()),
            },
            Command::Ping {
                target,
                count,
                interval,
                size,
            } => {
                let (Some(timeout), Some(interval)) =
                    (seconds(target.timeout), non_negative(interval))
                else {
                    return usage("--timeout must be positive and --interval not negative");
                };
                if count == 0 {
                    return usage("--count must be at least 1");
                }
                match destination(&target.server, target.udp, &target.broker).await {
                    Ok(addr) => {
                        tools::ping(&addr, count, interval, size, timeout, target.json).await
                    }
                    Err(code) => code,
                }
            }
            Command::Info { target, .. }
            | Command::List { target, .. }
            | Command::Topics { target, .. }
                if seconds(target.timeout).is_none() =>
            {
                usage("--timeout must be a positive number of seconds")
            }
            Command::Info { target, key } => {
                let key = match key.key() {
                    Ok(key) => key,
                    Err(code) => return code,
                };
                match destination(&target.server, target.udp, &target.broker).await {
                    Ok(addr) => {
                        let timeout = seconds(target.timeout).unwrap_or_default();
                        tools::info(&addr, timeout, key, target.json).await
                    }
                    Err(code) => code,
                }
            }
            Command::List { target, key } => {
                let key = match key.key() {
                    Ok(key) => key,
                    Err(code) => return code,
                };
                match destination(&target.server, target.udp, &target.broker).await {
                    Ok(addr) => {
                        let timeout = seconds(target.timeout).unwrap_or_default();
                        tools::list(&addr, timeout, key, target.json).await
                    }
                    Err(code) => code,
                }
            }
            Command::Topics { target, key } => {
                let key = match key.key() {
                    Ok(key) => key,
                    Err(code) => return code,
                };
                match destination(&target.server, target.udp, &target.broker).await {
                    Ok(addr) => {
                        let timeout = seconds(target.timeout).unwrap_or_default();
                        tools::topics(&addr, timeout, key, target.json).await
                    }
                    Err(code) => code,
                }
            }
            Command::Watch {
                server,
                udp,
                timeout,
                lease,
                interval,
                count,
                json,
                key,
                topic,
            } => {
                let Some(timeout) = seconds(timeout) else {
                    return usage("--timeout must be a positive number of seconds");
                };
                let key = match key.key() {
                    Ok(key) => key,
                    Err(code) => return code,
                };
                let options = tools::WatchOptions {
                    udp,
                    timeout,
                    lease: Duration::from_secs(u64::from(lease)),
                    interval: Duration::from_millis(u64::from(interval)),
                    count,
                    json,
                };
                match resolve(&server).await {
                    Ok(addr) => tools::watch(addr, &topic, &options, key).await,
                    Err(code) => code,
                }
            }
            Command::Discover {
                timeout,
                interface,
                ipv4,
                ipv6,
                port,
                json,
                mqtt,
                broker,
            } => {
                let Some(timeout) = seconds(timeout) else {
                    return usage("--timeout must be a positive number of seconds");
                };
                if let Some(url) = mqtt {
                    return match broker.broker(&url) {
                        Ok(broker) => tools::discover_mqtt(&broker, timeout, json).await,
                        Err(code) => code,
                    };
                }
                let families = (ipv4 || !ipv6, ipv6 || !ipv4);
                tools::discover(timeout, interface.as_deref(), families, port, json).await
            }
            Command::Call {
                server,
                udp,
                timeout,
                retries,
                json,
                deadline,
                key,
                broker,
                func,
                args,
            } => {
                let Some(timeout) = seconds(timeout) else {
                    return usage("--timeout must be a positive number of seconds");
                };
                let key = match key.key() {
                    Ok(key) => key,
                    Err(code) => return code,
                };
                let how = Options {
                    udp,
                    timeout,
                    retries,
                    json,
                    deadline,
                };
                if at_host::addr::MqttUrl::is_mqtt(&server) {
                    return match destination(&server, false, &broker).await {
                        Ok(tools::Dest::Mqtt { broker, device, .. }) => {
                            call_mqtt(&broker, &device, &how, key, &func, &args).await
                        }
                        Ok(tools::Dest::Ip { .. }) => usage("not an mqtt:// address"),
                        Err(code) => code,
                    };
                }
                call(&server, &how, key, &func, &args).await
            }
            Command::Notify {
                server,
                udp,
                timeout,
                key,
                broker,
                func,
                args,
            } => {
                let Some(timeout) = seconds(timeout) else {
                    return usage("--timeout must be a positive number of seconds");
                };
                let key = match key.key() {
                    Ok(key) => key,
                    Err(code) => return code,
                };
                if at_host::addr::MqttUrl::is_mqtt(&server) {
                    return match destination(&server, false, &broker).await {
                        Ok(tools::Dest::Mqtt { broker, device, .. }) => {
                            notify_mqtt(&broker, &device, timeout, key, &func, &args).await
                        }
                        Ok(tools::Dest::Ip { .. }) => usage("not an mqtt:// address"),
                        Err(code) => code,
                    };
                }
                notify(&server, udp, timeout, key, &func, &args).await
            }
            Command::Demo => demo().await,
            Command::Bench { .. } => ExitCode::SUCCESS,
        }
    })
}

/// The runtime a command runs on. `serve` on one core (the cores this
/// process may use, as `taskset` sets them) takes a current-thread runtime:
/// the I/O driver and every task on one thread, no work-stealing machinery
/// between a read and its reply. On more cores, a multi-thread runtime
/// with one worker per core spreads connections over them.
fn runtime_for(command: &Command) -> std::io::Result<tokio::runtime::Runtime> {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    if matches!(command, Command::Serve { .. }) && cores == 1 {
        return tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

/// Logging to stderr: info by default (`base` 0; -1 is warn), each -v one
/// level more, each -q one less; RUST_LOG decides when neither is given.
fn init_logging(verbose: u8, quiet: u8, base: i16) {
    let level = match base + i16::from(verbose) - i16::from(quiet) {
        ..=-2 => "error",
        -1 => "warn",
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let env = env_logger::Env::default().default_filter_or(level);
    let mut builder = env_logger::Builder::from_env(env);
    if verbose > 0 || quiet > 0 {
        builder.parse_filters(level);
    }
    builder.init();
}

fn seconds(s: f64) -> Option<Duration> {
    (s.is_finite() && s > 0.0).then(|| Duration::from_secs_f64(s.min(1e9)))
}

fn non_negative(s: f64) -> Option<Duration> {
    (s.is_finite() && s >= 0.0).then(|| Duration::from_secs_f64(s.min(1e9)))
}

/// `HOST[:PORT]` as one socket address (exit 2 for a malformed one, 3 when
/// the name does not resolve).
async fn resolve(server: &str) -> Result<SocketAddr, ExitCode> {
    let (host, port) = split_host_port(server, at_core::DEFAULT_PORT).map_err(|e| usage(&e))?;
    match tokio::net::lookup_host((host.as_str(), port))
        .await
        .map(|mut a| a.next())
    {
        Ok(Some(addr)) => Ok(addr),
        Ok(None) => Err(transport(&format!("{host}: no address"))),
        Err(e) => Err(transport(&format!("{host}: {e}"))),
    }
}

fn usage(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(2)
}

/// The limits `serve` takes from its flags.
struct Limits {
    max_frame: u32,
    max_connections: usize,
    max_per_address: usize,
    idle_timeout: Duration,
}

async fn serve(
    tcp: Option<SocketAddr>,
    udp: Option<SocketAddr>,
    mqtt: Option<at_host::MqttBroker>,
    limits: Limits,
    name: Option<String>,
    keys: Vec<AuthKey>,
) -> ExitCode {
    if tcp.is_none() && udp.is_none() && mqtt.is_none() {
        return usage("nothing to serve: --tcp and --udp are both none");
    }
    if let Some(broker) = &mqtt {
        let served = broker
            .name
            .clone()
            .or_else(|| name.clone())
            .unwrap_or_else(|| at_host::ServerConfig::default().name);
        if let Err(e) = at_host::addr::check_name(&served) {
            return usage(&format!("--mqtt serves as --name: {e}"));
        }
    }
    let (tcp, udp) = (tcp.map(ipv4_without_ipv6), udp.map(ipv4_without_ipv6));
    let mut builder = Server::builder()
        .calculator()
        .function_with_doc("log", LOG_DOC, log_line)
        .calls_topic("calls")
        .max_frame(limits.max_frame)
        .max_connections(limits.max_connections.max(1))
        .max_per_address(limits.max_per_address.max(1))
        .idle_timeout(limits.idle_timeout);
    if let Some(name) = name {
        builder = builder.name(name);
    }
    if !keys.is_empty() {
        log::info!(
            "authentication required; key ids: {}",
            keys.iter().map(AuthKey::kid).collect::<Vec<_>>().join(", ")
        );
        builder = builder.keys(keys);
    }
    if let Some(addr) = tcp {
        builder = builder.tcp(addr);
    }
    if let Some(addr) = udp {
        builder = builder.udp(addr);
    }
    let mqtt_url = mqtt
        .as_ref()
        .and_then(|b| at_host::addr::MqttUrl::parse(&b.url).ok());
    if let Some(broker) = mqtt {
        builder = builder.mqtt(broker);
    }
    let server = match builder.start().await {
        Ok(server) => server,
        Err(e) => {
            eprintln!("error: cannot listen: {e}");
            return ExitCode::from(3);
        }
    };
    // These lines are an interface: scripts read the real ports from them.
    let mut stdout = std::io::stdout().lock();
    if let Some(addr) = server.tcp_addr() {
        let _ = writeln!(stdout, "listening on tcp://{addr}");
    }
    if let Some(addr) = server.udp_addr() {
        let _ = writeln!(stdout, "listening on udp://{addr}");
    }
    let _ = stdout.flush();
    drop(stdout);
    if let (Some(url), Some(name)) = (mqtt_url, server.mqtt_name()) {
        // Once subscribed and announced: callers can reach it from then.
        server.mqtt_ready().await;
        let scheme = if url.tls { "mqtts" } else { "mqtt" };
        let host = match url.host.contains(':') {
            true => format!("[{}]", url.host),
            false => url.host.clone(),
        };
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "listening on {scheme}://{host}:{}/{name}", url.port);
        let _ = stdout.flush();
    }
    server.run_until_ctrl_c().await;
    ExitCode::SUCCESS
}

/// The doc `rpc.functions` shows for `serve`'s `log`.
const LOG_DOC: &str = "prints log from ADDR: LINE on the server's stdout";

/// `serve`'s `log(line)`: a board calling home logs through it (by
/// NOTIFY: `log("boot ...")`). One line on stdout per call, control
/// characters shown escaped so that a line cannot forge others.
fn log_line(line: String) {
    let from = at_host::caller_addr().map_or_else(|| "?".to_owned(), |a| a.to_string());
    let mut shown = String::with_capacity(line.len());
    for c in line.chars() {
        match c.is_control() {
            true => shown.extend(c.escape_default()),
            false => shown.push(c),
        }
    }
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "log from {from}: {shown}");
    let _ = stdout.flush();
}

/// `notify`: sends `func(args)` as a NOTIFY frame; exit 0 once sent, 3 when
/// it could not be (no connection, no session), 2 for usage.
async fn notify(
    server: &str,
    udp: bool,
    timeout: Duration,
    key: Option<AuthKey>,
    func: &str,
    args: &[String],
) -> ExitCode {
    let (host, port) = match split_host_port(server, at_core::DEFAULT_PORT) {
        Ok(pair) => pair,
        Err(e) => return usage(&e),
    };
    let values: Vec<Value> = args.iter().map(|a| Value::from_cli_arg(a)).collect();
    let core: Vec<at_core::Value<'_>> = values.iter().map(Value::as_core).collect();
    let addr = match tokio::net::lookup_host((host.as_str(), port))
        .await
        .map(|mut a| a.next())
    {
        Ok(Some(addr)) => addr,
        Ok(None) => return transport(&format!("{host}: no address")),
        Err(e) => return transport(&format!("{host}: {e}")),
    };
    let deadline = tokio::time::Instant::now() + timeout;
    let attempt = async {
        if udp {
            let config = UdpConfig {
                timeout,
                key,
                ..UdpConfig::default()
            };
            UdpClient::connect(addr, config)
                .await?
                .notify(func, &core)
                .await
        } else {
            let mut client = Client::connect(addr, timeout).await?;
            if let Some(key) = key {
                client = client.with_key(key);
            }
            client.notify(func, &core).await
        }
    };
    let result = match tokio::time::timeout_at(deadline, attempt).await {
        Ok(result) => result,
        Err(_) => Err(Error::Timeout(timeout)),
    };
    notify_exit(result, &addr.to_string())
}

/// `notify` through a broker: exit 0 once written to the broker.
async fn notify_mqtt(
    broker: &at_host::MqttBroker,
    device: &str,
    timeout: Duration,
    key: Option<AuthKey>,
    func: &str,
    args: &[String],
) -> ExitCode {
    let values: Vec<Value> = args.iter().map(|a| Value::from_cli_arg(a)).collect();
    let core: Vec<at_core::Value<'_>> = values.iter().map(Value::as_core).collect();
    let config = UdpConfig {
        timeout,
        key,
        ..UdpConfig::default()
    };
    let attempt = async {
        let client = at_host::MqttClient::connect(broker, device, config).await?;
        client.notify(func, &core).await
    };
    let result = match tokio::time::timeout(timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(Error::Timeout(timeout)),
    };
    notify_exit(result, &broker.url)
}

/// `notify`'s exit code: 0 once sent, 1 for an error the server answered
/// (or a wrong key), 3 for a transport error at `place`.
fn notify_exit(result: Result<(), Error>, place: &str) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Error::Remote { code, message }) => {
            eprintln!("error: {code}: {message}");
            ExitCode::from(1)
        }
        Err(Error::Protocol(at_host::ProtocolError::BadHello)) => {
            eprintln!("error: unauthorized: {}", tools::WRONG_KEY);
            ExitCode::from(1)
        }
        Err(e) => transport(&format!("{place}: {e}")),
    }
}

/// How `call` calls: its flags.
struct Options {
    udp: bool,
    timeout: Duration,
    retries: u32,
    json: bool,
    /// `--deadline`: `deadline_ms` sent as given.
    deadline: Option<u32>,
}

async fn call(
    server: &str,
    how: &Options,
    key: Option<AuthKey>,
    func: &str,
    args: &[String],
) -> ExitCode {
    let Options {
        udp,
        timeout,
        retries,
        json,
        deadline: deadline_ms,
    } = *how;
    let (host, port) = match split_host_port(server, at_core::DEFAULT_PORT) {
        Ok(pair) => pair,
        Err(e) => return usage(&e),
    };
    let values: Vec<Value> = args.iter().map(|a| Value::from_cli_arg(a)).collect();
    let core: Vec<at_core::Value<'_>> = values.iter().map(Value::as_core).collect();
    let addr = match tokio::net::lookup_host((host.as_str(), port))
        .await
        .map(|mut a| a.next())
    {
        Ok(Some(addr)) => addr,
        Ok(None) => return transport(&format!("{host}: no address")),
        Err(e) => return transport(&format!("{host}: {e}")),
    };
    let result = if udp {
        let config = UdpConfig {
            timeout,
            retries,
            key,
            ..UdpConfig::default()
        };
        match UdpClient::connect(addr, config).await {
            Ok(client) => match deadline_ms {
                Some(d) => client.call_deadline(func, &core, d).await,
                None => client.call(func, &core).await,
            },
            Err(e) => Err(e),
        }
    } else {
        let deadline = tokio::time::Instant::now() + timeout;
        let attempt = async {
            let mut client = Client::connect(addr, timeout).await?;
            if let Some(key) = key {
                client = client.with_key(key);
            }
            match deadline_ms {
                Some(d) => client.call_deadline(func, &core, d).await,
                None => client.call(func, &core).await,
            }
        };
        match tokio::time::timeout_at(deadline, attempt).await {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout(timeout)),
        }
    };
    report_call(result, json, &addr.to_string())
}

/// Prints a call's outcome as `call` does; its exit code.
fn report_call(result: Result<Value, Error>, json: bool, addr: &str) -> ExitCode {
    match result {
        Ok(value) if json => {
            println!("{{\"status\": \"success\", \"result\": {value}}}");
            ExitCode::SUCCESS
        }
        Ok(value) => {
            println!("{value}");
            ExitCode::SUCCESS
        }
        Err(Error::Remote { code, message }) => {
            if json {
                let body = at_core::Reply::Error(at_core::ErrorBody {
                    code: at_core::JsonStr::new(&code),
                    message: at_core::JsonStr::new(&message),
                });
                let mut out = vec![0u8; 64 + 6 * (code.len() + message.len())];
                if let Ok(n) = body.write(&mut out) {
                    println!("{}", String::from_utf8_lossy(&out[..n]));
                }
            }
            eprintln!("error: {code}: {message}");
            ExitCode::from(1)
        }
        Err(Error::Protocol(at_host::ProtocolError::BadHello)) => {
            eprintln!("error: unauthorized: {}", tools::WRONG_KEY);
            ExitCode::from(1)
        }
        Err(e) => transport(&format!("{addr}: {e}")),
    }
}

/// `call` through a broker: as over UDP (retransmitted, `--retries`,
/// `--timeout` for the whole call), the same output and exit codes.
async fn call_mqtt(
    broker: &at_host::MqttBroker,
    device: &str,
    how: &Options,
    key: Option<AuthKey>,
    func: &str,
    args: &[String],
) -> ExitCode {
    let values: Vec<Value> = args.iter().map(|a| Value::from_cli_arg(a)).collect();
    let core: Vec<at_core::Value<'_>> = values.iter().map(Value::as_core).collect();
    let config = UdpConfig {
        timeout: how.timeout,
        retries: how.retries,
        key,
        ..UdpConfig::default()
    };
    let deadline = tokio::time::Instant::now() + how.timeout;
    let attempt = async {
        let client = at_host::MqttClient::connect(broker, device, config).await?;
        match how.deadline {
            Some(d) => client.call_deadline(func, &core, d).await,
            None => client.call(func, &core).await,
        }
    };
    let result = match tokio::time::timeout_at(deadline, attempt).await {
        Ok(result) => result,
        Err(_) => Err(Error::Timeout(how.timeout)),
    };
    report_call(result, how.json, &broker.url)
}

/// `[::]:PORT` as `0.0.0.0:PORT` on a host without IPv6 (the default
/// address must work everywhere); any other address as it is.
fn ipv4_without_ipv6(addr: SocketAddr) -> SocketAddr {
    let wildcard_v6 = addr.is_ipv6() && addr.ip().is_unspecified();
    if wildcard_v6 && std::net::UdpSocket::bind((std::net::Ipv6Addr::UNSPECIFIED, 0)).is_err() {
        log::warn!("no IPv6 here: listening on IPv4 only");
        return SocketAddr::from(([0, 0, 0, 0], addr.port()));
    }
    addr
}

fn transport(message: &str) -> ExitCode {
    eprintln!("transport error: {message}");
    ExitCode::from(3)
}

/// The README's first command: a server and a client in one process.
async fn demo() -> ExitCode {
    let loopback: SocketAddr = ([127, 0, 0, 1], 0).into();
    let server = match Server::builder()
        .calculator()
        .tcp(loopback)
        .udp(loopback)
        .start()
        .await
    {
        Ok(server) => server,
        Err(e) => {
            eprintln!("error: cannot start the demo server: {e}");
            return ExitCode::from(3);
        }
    };
    let (Some(tcp), Some(udp)) = (server.tcp_addr(), server.udp_addr()) else {
        return ExitCode::from(3);
    };
    println!("server listening on tcp://{tcp} and udp://{udp}");
    use at_core::Value::{Float, Int};
    let calls: [(&str, [at_core::Value<'static>; 2], &str); 5] = [
        ("add", [Int(10), Int(20)], "30"),
        ("sub", [Int(10), Int(20)], "-10"),
        ("mul", [Int(6), Float(7.5)], "45.0"),
        ("div", [Int(10), Int(4)], "2.5"),
        (
            "div",
            [Int(1), Int(0)],
            "error: division_by_zero: division by zero",
        ),
    ];
    let mut ok = true;
    let timeout = Duration::from_secs(5);
    let tcp_client = match Client::connect(tcp, timeout).await {
        Ok(c) => c,
        Err(e) => return transport(&e.to_string()),
    };
    let udp_client = match UdpClient::connect(udp, UdpConfig::default()).await {
        Ok(c) => c,
        Err(e) => return transport(&e.to_string()),
    };
    for transport_name in ["tcp", "udp"] {
        for (func, args, want) in &calls {
            let result = match transport_name {
                "tcp" => tcp_client.call(func, args).await,
                _ => udp_client.call(func, args).await,
            };
            let shown = match &result {
                Ok(v) => v.to_string(),
                Err(e) => e.to_string(),
            };
            ok &= shown == *want;
            println!(
                "{transport_name}  {func}({}, {}) -> {shown}",
                args[0], args[1]
            );
        }
    }
    server.shutdown().await;
    if ok {
        ExitCode::SUCCESS
    } else {
        eprintln!("demo: some answers were not as expected");
        ExitCode::from(1)
    }
}
