//! `at-host bench fleet`: N simulated devices in this process, each one
//! MQTT connection serving the calculator under its own AT name
//! (`dev-0001`...), called by name through one Mosquitto, against the same
//! number of calls over direct TCP to an in-process at-host server.
//!
//! Every device is a whole [`Server`] built with [`ServerBuilder::mqtt`]
//! (what `at-host serve --mqtt` runs), all on one runtime with one worker
//! thread. The callers are one [`MqttClient`] per device (each its own
//! broker connection, as separate callers would be), on a current-thread
//! runtime of their own. So the broker carries 2N connections.
//!
//! Without `--broker` the bench starts its own `mosquitto` on a free
//! loopback port with a config file it writes, and kills it at the end.
//! Every wait is bounded: the bench stops by itself.
//!
//! [`ServerBuilder::mqtt`]: at_host::ServerBuilder::mqtt

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use at_host::{Client, MqttBroker, MqttClient, Server, UdpConfig};

use super::ARGS;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What `bench fleet` measures.
pub struct FleetOptions {
    /// Simulated devices (one MQTT connection each).
    pub devices: usize,
    /// A running broker, `mqtt://HOST:PORT`; none: start a Mosquitto.
    pub broker: Option<String>,
    /// Calls per scenario.
    pub calls: u64,
    /// Callers in flight at once in the concurrent scenarios.
    pub concurrency: usize,
    /// Print machine-readable JSON.
    pub json: bool,
}

/// Broker connections opened at once while setting up.
const CONNECTS_AT_ONCE: usize = 64;

/// A call that takes longer than this fails the bench.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// One measured scenario.
struct Figures {
    key: &'static str,
    name: String,
    calls: u64,
    elapsed: Duration,
    /// Sorted, nanoseconds.
    latencies: Vec<u64>,
    /// CPU seconds of this process during the run.
    our_cpu: f64,
    /// CPU seconds of the broker during the run (own broker only).
    broker_cpu: Option<f64>,
}

impl Figures {
    fn rate(&self) -> f64 {
        self.calls as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile_us(&self, p: f64) -> f64 {
        super::percentile_us(&self.latencies, p)
    }

    /// CPU as a share of one core, in percent.
    fn share(&self, seconds: f64) -> f64 {
        100.0 * seconds / self.elapsed.as_secs_f64()
    }
}

/// Setup times, in seconds.
struct Setup {
    fd_limit: u64,
    devices_ready: f64,
    callers_ready: f64,
    first_round: f64,
}

/// Runs the fleet bench; false (after saying why) if anything failed.
pub fn run(o: FleetOptions) -> bool {
    match run_inner(&o) {
        Ok(()) => true,
        Err(e) => {
            eprintln!("bench fleet: {e}");
            false
        }
    }
}

fn run_inner(o: &FleetOptions) -> Result<(), BoxError> {
    // Two broker connections per device here, as many in the broker, plus
    // the TCP scenario's and some slack.
    let need = 2 * o.devices as u64 + o.concurrency as u64 + 64;
    let fd_limit = raise_fd_limit(need)?;
    let own = match &o.broker {
        Some(_) => None,
        None => Some(OwnBroker::start()?),
    };
    let url = match (&o.broker, &own) {
        (Some(url), _) => url.clone(),
        (None, Some(own)) => format!("mqtt://127.0.0.1:{}", own.port),
        (None, None) => return Err("no broker".into()),
    };
    let broker_pid = own.as_ref().map(|b| b.child.id());
    if !o.json {
        eprintln!(
            "bench fleet: {} devices through {url}{}",
            o.devices,
            if own.is_some() {
                " (own mosquitto)"
            } else {
                ""
            }
        );
    }
    let devices_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let callers_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let names: Vec<String> = (1..=o.devices).map(|i| format!("dev-{i:04}")).collect();
    let broker = MqttBroker::new(url.clone());

    // A broker that cannot be reached or refuses us fails here, at once,
    // rather than after the devices' wait.
    callers_rt.block_on(async {
        let probe = MqttBroker::new(url.clone()).name("bench-fleet-probe");
        let config = UdpConfig {
            timeout: CALL_TIMEOUT,
            ..UdpConfig::default()
        };
        MqttClient::connect(&probe, "dev-0001", config)
            .await
            .map(drop)
    })?;

    // The devices: whole servers, all on one runtime.
    let started = Instant::now();
    let (servers, tcp) = devices_rt.block_on(start_devices(&broker, &names))?;
    let devices_ready = started.elapsed().as_secs_f64();

    // The callers: one MqttClient per device.
    let started = Instant::now();
    let clients = callers_rt.block_on(connect_callers(&url, &names))?;
    let callers_ready = started.elapsed().as_secs_f64();
    let clients = Arc::new(clients);

    // One call to each device first: proves every one answers, and warms.
    let started = Instant::now();
    callers_rt.block_on(mqtt_sequential(&clients, clients.len() as u64))?;
    let first_round = started.elapsed().as_secs_f64();
    let setup = Setup {
        fd_limit,
        devices_ready,
        callers_ready,
        first_round,
    };

    let mut results = Vec::new();
    let c = o.concurrency.max(1);
    let measure = |key, name: String, f: &mut dyn FnMut() -> Result<Vec<u64>, BoxError>| {
        let (cpu0, b0) = (self_cpu(), broker_pid.and_then(proc_cpu));
        let t = Instant::now();
        let mut latencies = f()?;
        let elapsed = t.elapsed();
        let (cpu1, b1) = (self_cpu(), broker_pid.and_then(proc_cpu));
        latencies.sort_unstable();
        Ok::<_, BoxError>(Figures {
            key,
            name,
            calls: latencies.len() as u64,
            elapsed,
            latencies,
            our_cpu: cpu1.unwrap_or(0.0) - cpu0.unwrap_or(0.0),
            broker_cpu: b0.zip(b1).map(|(a, b)| b - a),
        })
    };
    results.push(measure(
        "mqtt_sequential",
        format!("mqtt, {} devices in turn, sequential", o.devices),
        &mut || callers_rt.block_on(mqtt_sequential(&clients, o.calls)),
    )?);
    results.push(measure(
        "tcp_sequential",
        "tcp, 1 connection, sequential".into(),
        &mut || callers_rt.block_on(tcp_concurrent(tcp, 1, o.calls)),
    )?);
    results.push(measure(
        "mqtt_concurrent",
        format!("mqtt, {c} callers across {} devices", o.devices),
        &mut || callers_rt.block_on(mqtt_concurrent(&clients, c, o.calls)),
    )?);
    results.push(measure(
        "tcp_concurrent",
        format!("tcp, {c} connections, sequential"),
        &mut || callers_rt.block_on(tcp_concurrent(tcp, c, o.calls)),
    )?);
    if o.json {
        print_json(o, &setup, &results);
    } else {
        print_table(o, &setup, &results);
    }

    // Tear down, bounded: callers first, then the devices (each publishes
    // its offline status), then the broker (on drop).
    drop(callers_rt);
    drop(clients);
    devices_rt.block_on(async {
        let all = async {
            let mut set = tokio::task::JoinSet::new();
            for server in servers {
                set.spawn(server.shutdown());
            }
            while set.join_next().await.is_some() {}
        };
        if tokio::time::timeout(Duration::from_secs(10), all)
            .await
            .is_err()
        {
            eprintln!("bench fleet: some devices took over 10 s to shut down");
        }
    });
    devices_rt.shutdown_timeout(Duration::from_secs(2));
    drop(own);
    Ok(())
}

/// Starts one server per name through `broker` and the TCP comparison
/// server; waits (bounded) until every device is subscribed and online.
async fn start_devices(
    broker: &MqttBroker,
    names: &[String],
) -> Result<(Vec<Server>, SocketAddr), BoxError> {
    let mut servers = Vec::with_capacity(names.len());
    for name in names {
        let server = Server::builder()
            .calculator()
            .name(name.clone())
            .mqtt(broker.clone().name(name.clone()))
            .start()
            .await?;
        servers.push(server);
    }
    let budget = Duration::from_secs(10) + Duration::from_millis(30) * names.len() as u32;
    let ready = async {
        for s in &servers {
            s.mqtt_ready().await;
        }
    };
    if tokio::time::timeout(budget, ready).await.is_err() {
        return Err(format!(
            "the devices were not all online through the broker within {} s",
            budget.as_secs()
        )
        .into());
    }
    let loopback: SocketAddr = ([127, 0, 0, 1], 0).into();
    let tcp = Server::builder()
        .calculator()
        .max_per_address(usize::MAX)
        .tcp(loopback)
        .start()
        .await?;
    let addr = tcp.tcp_addr().ok_or("the TCP server has no address")?;
    servers.push(tcp);
    Ok((servers, addr))
}

/// One [`MqttClient`] per device, [`CONNECTS_AT_ONCE`] connecting at once.
async fn connect_callers(url: &str, names: &[String]) -> Result<Vec<MqttClient>, BoxError> {
    let mut clients: Vec<Option<MqttClient>> = (0..names.len()).map(|_| None).collect();
    let mut set = tokio::task::JoinSet::new();
    let mut next = 0;
    let mut done = 0;
    while done < names.len() {
        while next < names.len() && set.len() < CONNECTS_AT_ONCE {
            let (i, device) = (next, names[next].clone());
            let broker = MqttBroker::new(url).name(format!("caller-{}", i + 1));
            set.spawn(async move {
                let config = UdpConfig {
                    timeout: CALL_TIMEOUT,
                    ..UdpConfig::default()
                };
                (i, MqttClient::connect(&broker, &device, config).await)
            });
            next += 1;
        }
        match set.join_next().await {
            Some(Ok((i, Ok(client)))) => clients[i] = Some(client),
            Some(Ok((i, Err(e)))) => {
                return Err(format!("caller of {}: {e}", names[i]).into());
            }
            Some(Err(e)) => return Err(e.to_string().into()),
            None => break,
        }
        done += 1;
    }
    clients
        .into_iter()
        .map(|c| c.ok_or_else(|| "a caller did not connect".into()))
        .collect()
}

/// `calls` calls, one at a time, to device 1, 2, ... N, 1, 2, ...
async fn mqtt_sequential(clients: &[MqttClient], calls: u64) -> Result<Vec<u64>, BoxError> {
    let mut latencies = Vec::with_capacity(calls as usize);
    for i in 0..calls {
        let client = &clients[(i % clients.len() as u64) as usize];
        let t = Instant::now();
        client
            .call("add", &ARGS)
            .await
            .map_err(|e| format!("{}: {e}", client.device()))?;
        latencies.push(t.elapsed().as_nanos() as u64);
    }
    Ok(latencies)
}

/// `callers` tasks making `calls` calls in all; caller j calls devices j,
/// j + callers, ... in turn, so calls spread over every device.
async fn mqtt_concurrent(
    clients: &Arc<Vec<MqttClient>>,
    callers: usize,
    calls: u64,
) -> Result<Vec<u64>, BoxError> {
    let mut set = tokio::task::JoinSet::new();
    for j in 0..callers as u64 {
        let clients = Arc::clone(clients);
        set.spawn(async move {
            let n = clients.len() as u64;
            let mut latencies = Vec::new();
            let mut k = j;
            while k < calls {
                let client = &clients[(k % n) as usize];
                let t = Instant::now();
                client
                    .call("add", &ARGS)
                    .await
                    .map_err(|e| format!("{}: {e}", client.device()))?;
                latencies.push(t.elapsed().as_nanos() as u64);
                k += callers as u64;
            }
            Ok::<_, String>(latencies)
        });
    }
    let mut all = Vec::with_capacity(calls as usize);
    while let Some(r) = set.join_next().await {
        all.extend(r.map_err(|e| e.to_string())??);
    }
    Ok(all)
}

/// `calls` calls in all over `connections` TCP connections to `addr`, one
/// at a time on each.
async fn tcp_concurrent(
    addr: SocketAddr,
    connections: usize,
    calls: u64,
) -> Result<Vec<u64>, BoxError> {
    let mut set = tokio::task::JoinSet::new();
    for j in 0..connections as u64 {
        set.spawn(async move {
            let client = Client::connect(addr, CALL_TIMEOUT)
                .await
                .map_err(|e| e.to_string())?;
            let mut latencies = Vec::new();
            let mut k = j;
            while k < calls {
                let t = Instant::now();
                client.call("add", &ARGS).await.map_err(|e| e.to_string())?;
                latencies.push(t.elapsed().as_nanos() as u64);
                k += connections as u64;
            }
            Ok::<_, String>(latencies)
        });
    }
    let mut all = Vec::with_capacity(calls as usize);
    while let Some(r) = set.join_next().await {
        all.extend(r.map_err(|e| e.to_string())??);
    }
    Ok(all)
}

/// Raises RLIMIT_NOFILE's soft limit to its hard limit (before the broker
/// is started, so that it inherits it); an error if that is below `need`.
fn raise_fd_limit(need: u64) -> Result<u64, BoxError> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < need {
        return Err(format!(
            "open files limit is {soft} (hard {hard}), this fleet needs about {need}: \
             raise the hard limit (ulimit -Hn, /etc/security/limits.conf) or use fewer --devices"
        )
        .into());
    }
    Ok(soft)
}

/// Clock ticks per second of /proc's CPU times (Linux's USER_HZ).
const TICKS: f64 = 100.0;

/// User + system CPU seconds of process `pid` so far, from /proc.
fn proc_cpu(pid: u32) -> Option<f64> {
    cpu_of(Path::new(&format!("/proc/{pid}/stat")))
}

fn self_cpu() -> Option<f64> {
    cpu_of(Path::new("/proc/self/stat"))
}

fn cpu_of(path: &Path) -> Option<f64> {
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
    let user: f64 = fields.get(11)?.parse().ok()?;
    let system: f64 = fields.get(12)?.parse().ok()?;
    Some((user + system) / TICKS)
}

/// A Mosquitto this bench started: killed and its files removed on drop.
struct OwnBroker {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl OwnBroker {
    /// Starts `mosquitto` (from the PATH, else /usr/sbin) on a free
    /// loopback port; waits (at most 5 s) until it accepts connections.
    fn start() -> Result<OwnBroker, BoxError> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let dir = std::env::temp_dir().join(format!("at-bench-fleet-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\nmax_connections -1\n"),
        )?;
        let binary = ["mosquitto", "/usr/sbin/mosquitto"]
            .into_iter()
            .find(|b| {
                Command::new(b)
                    .arg("-h")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok()
            })
            .ok_or("mosquitto is not installed (Debian: apt-get install mosquitto), or give --broker mqtt://HOST:PORT")?;
        let child = Command::new(binary)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let broker = OwnBroker { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(5);
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if Instant::now() >= deadline {
                return Err(format!("mosquitto did not listen on port {port} within 5 s").into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(broker)
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn print_table(o: &FleetOptions, s: &Setup, results: &[Figures]) {
    println!(
        "setup: {} devices online in {:.2} s, {} callers connected in {:.2} s, \
         first call to each in {:.2} s (open files limit {})",
        o.devices, s.devices_ready, o.devices, s.callers_ready, s.first_round, s.fd_limit
    );
    println!(
        "{:<44} {:>10} {:>8} {:>8} {:>8} {:>9} {:>8} {:>7} {:>7}",
        "scenario", "calls/s", "p50 us", "p90 us", "p99 us", "max us", "vs tcp", "our%", "broker%"
    );
    for (i, r) in results.iter().enumerate() {
        // Each MQTT row is followed by its TCP twin.
        let ratio = (i % 2 == 0)
            .then(|| results.get(i + 1))
            .flatten()
            .map(|t| format!("{:.2}x", r.rate() / t.rate()))
            .unwrap_or_default();
        println!(
            "{:<44} {:>10.0} {:>8.1} {:>8.1} {:>8.1} {:>9.1} {:>8} {:>7.0} {:>7}",
            r.name,
            r.rate(),
            r.percentile_us(0.5),
            r.percentile_us(0.9),
            r.percentile_us(0.99),
            r.percentile_us(1.0),
            ratio,
            r.share(r.our_cpu),
            r.broker_cpu
                .map(|b| format!("{:.0}", r.share(b)))
                .unwrap_or_else(|| "-".into())
        );
    }
}

fn print_json(o: &FleetOptions, s: &Setup, results: &[Figures]) {
    let items: Vec<String> = results
        .iter()
        .map(|r| {
            format!(
                "{{\"scenario\": \"{}\", \"calls\": {}, \"seconds\": {:.6}, \"calls_per_sec\": {:.1}, \"p50_us\": {:.2}, \"p90_us\": {:.2}, \"p99_us\": {:.2}, \"max_us\": {:.2}, \"our_cpu_percent\": {:.1}, \"broker_cpu_percent\": {}}}",
                r.key,
                r.calls,
                r.elapsed.as_secs_f64(),
                r.rate(),
                r.percentile_us(0.5),
                r.percentile_us(0.9),
                r.percentile_us(0.99),
                r.percentile_us(1.0),
                r.share(r.our_cpu),
                r.broker_cpu
                    .map(|b| format!("{:.1}", r.share(b)))
                    .unwrap_or_else(|| "null".into())
            )
        })
        .collect();
    println!(
        "{{\"devices\": {}, \"concurrency\": {}, \"fd_limit\": {}, \"devices_ready_s\": {:.3}, \"callers_ready_s\": {:.3}, \"first_round_s\": {:.3}, \"results\": [{}]}}",
        o.devices,
        o.concurrency,
        s.fd_limit,
        s.devices_ready,
        s.callers_ready,
        s.first_round,
        items.join(", ")
    );
}
