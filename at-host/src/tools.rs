//! The `at-host` verbs that ask a server about itself: `ping`, `info`,
//! `list` (contract section 7), `topics` and `watch` (section 10) and `discover`
//! (section 8). Output formats
//! and exit codes are an interface (docs/TOOLS.md): 0 success, 1 an error
//! reply, 2 usage, 3 no answer (refused, reset, timeout).

use std::io::Write;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use at_core::{Frame, HEADER_LEN, Kind, Reply};
use at_host::{
    AuthKey, Client, Error, MqttBroker, MqttClient, ProtocolError, UdpClient, UdpConfig, Value,
};
use serde_json::Value as Json;

/// The most `rpc.functions` pages `list` asks for.
const MAX_PAGES: usize = 10_000;

/// The server a verb asks: an address (TCP or UDP), or a device through
/// a broker.
pub enum Dest {
    /// `HOST[:PORT]`, resolved.
    Ip {
        /// The address.
        addr: SocketAddr,
        /// Over UDP instead of TCP.
        udp: bool,
    },
    /// `mqtt://HOST[:PORT]/DEVICE` (contract section 11).
    Mqtt {
        /// The broker and how to log in.
        broker: MqttBroker,
        /// The device's AT name.
        device: String,
        /// The URL as given, for messages.
        shown: String,
    },
}

impl std::fmt::Display for Dest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dest::Ip { addr, .. } => write!(f, "{addr}"),
            Dest::Mqtt { shown, .. } => f.write_str(shown),
        }
    }
}

impl Dest {
    /// `tcp`, `udp` or `mqtt`.
    fn transport(&self) -> &'static str {
        match self {
            Dest::Ip { udp: true, .. } => "udp",
            Dest::Ip { udp: false, .. } => "tcp",
            Dest::Mqtt { .. } => "mqtt",
        }
    }
}

/// A connection to one server over TCP, UDP or a broker.
pub enum Link {
    /// TCP.
    Tcp(Client),
    /// UDP.
    Udp(UdpClient),
    /// Through a broker.
    Mqtt(MqttClient),
}

impl Link {
    /// Connects to `dest` (TCP: within `timeout`; UDP: each call gives up
    /// after `timeout`; MQTT: the broker's CONNACK within `timeout`, each
    /// call as UDP's).
    pub async fn connect(
        dest: &Dest,
        timeout: Duration,
        key: Option<AuthKey>,
    ) -> Result<Link, Error> {
        let config = UdpConfig {
            timeout,
            key: key.clone(),
            ..UdpConfig::default()
        };
        let addr = match dest {
            Dest::Mqtt { broker, device, .. } => {
                return MqttClient::connect(broker, device, config)
                    .await
                    .map(Link::Mqtt);
            }
            Dest::Ip { addr, udp: true } => {
                return UdpClient::connect(*addr, config).await.map(Link::Udp);
            }
            Dest::Ip { addr, udp: false } => *addr,
        };
        match tokio::time::timeout(timeout, Client::connect(addr, timeout)).await {
            Ok(Ok(client)) => Ok(Link::Tcp(match key {
                Some(key) => client.with_key(key),
                None => client,
            })),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::Timeout(timeout)),
        }
    }

    /// Calls `func(args)`, giving up after `timeout`.
    pub async fn call(
        &mut self,
        func: &str,
        args: &[Value],
        timeout: Duration,
    ) -> Result<Value, Error> {
        let core: Vec<at_core::Value<'_>> = args.iter().map(Value::as_core).collect();
        let call = async {
            match self {
                Link::Tcp(c) => c.call(func, &core).await,
                Link::Udp(c) => c.call(func, &core).await,
                Link::Mqtt(c) => c.call(func, &core).await,
            }
        };
        match tokio::time::timeout(timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout(timeout)),
        }
    }
}

/// What every command says, after `error: unauthorized: `, when the
/// server's hello proof does not verify (the same in the Python and C
/// clients).
pub const WRONG_KEY: &str = "the server's proof does not verify: it does not hold this key";

/// What a verb failed with, and its exit code.
pub enum Failure {
    /// An error reply (exit 1).
    Remote(String, String),
    /// No answer (exit 3).
    Transport(String),
}

impl Failure {
    fn of(addr: impl std::fmt::Display, e: Error) -> Failure {
        match e {
            Error::Remote { code, message } => Failure::Remote(code, message),
            // A wrong key: as `call` says it.
            Error::Protocol(ProtocolError::BadHello) => {
                Failure::Remote("unauthorized".into(), WRONG_KEY.into())
            }
            other => Failure::Transport(format!("{addr}: {other}")),
        }
    }

    /// Prints it and returns the exit code.
    pub fn report(self) -> ExitCode {
        match self {
            Failure::Remote(code, message) => {
                eprintln!("error: {code}: {message}");
                ExitCode::from(1)
            }
            Failure::Transport(message) => {
                eprintln!("transport error: {message}");
                ExitCode::from(3)
            }
        }
    }
}

fn json_of(value: &Value) -> Json {
    serde_json::to_value(value).unwrap_or(Json::Null)
}

/// `ping`: `count` rpc.ping calls, `interval` apart, each with a string of
/// `size` bytes (none when 0); one line per reply, then ping(8)'s summary.
pub async fn ping(
    addr: &Dest,
    count: u32,
    interval: Duration,
    size: usize,
    timeout: Duration,
    json: bool,
) -> ExitCode {
    let transport = addr.transport();
    if !json {
        println!("PING {addr} ({transport})");
    }
    let args: Vec<Value> = match size {
        0 => Vec::new(),
        n => vec![Value::Str("x".repeat(n))],
    };
    let mut link = None;
    let mut times = Vec::new();
    let mut remote_error = None;
    for seq in 1..=count {
        if seq > 1 {
            tokio::time::sleep(interval).await;
        }
        let started = Instant::now();
        let outcome = async {
            if link.is_none() {
                link = Some(Link::connect(addr, timeout, None).await?);
            }
            match link.as_mut() {
                Some(l) => l.call("rpc.ping", &args, timeout).await,
                None => Err(Error::Timeout(timeout)),
            }
        }
        .await;
        match outcome {
            Ok(_) => {
                let ms = started.elapsed().as_secs_f64() * 1000.0;
                times.push(ms);
                if json {
                    println!(
                        "{}",
                        compact(&serde_json::json!({"seq": seq, "time_ms": round3(ms)}))
                    );
                } else {
                    println!("reply from {addr}: seq={seq} time={ms:.3} ms");
                }
            }
            Err(e) => {
                if e.is_transport() {
                    // Connect again for the next ping.
                    link = None;
                }
                if let Error::Remote { code, message } = &e {
                    remote_error.get_or_insert((code.clone(), message.clone()));
                }
                if json {
                    println!(
                        "{}",
                        serde_json::json!({"seq": seq, "error": e.to_string()})
                    );
                } else {
                    println!("no reply from {addr}: seq={seq}: {e}");
                }
            }
        }
    }
    let (sent, received) = (count as usize, times.len());
    let loss = (sent - received) * 100 / sent.max(1);
    let stats = rtt(&times);
    if json {
        let rtt_ms = stats.map(|(min, avg, max, mdev)| {
            serde_json::json!({"min": round3(min), "avg": round3(avg), "max": round3(max), "mdev": round3(mdev)})
        });
        println!(
            "{}",
            compact(
                &serde_json::json!({"sent": sent, "received": received, "loss_percent": loss, "rtt_ms": rtt_ms})
            )
        );
    } else {
        println!("--- {addr} ping statistics ---");
        match stats {
            Some((min, avg, max, mdev)) => println!(
                "{sent} sent, {received} received, {loss}% loss; rtt min/avg/max/mdev = {min:.3}/{avg:.3}/{max:.3}/{mdev:.3} ms"
            ),
            None => println!("{sent} sent, 0 received, 100% loss"),
        }
    }
    match (remote_error, received) {
        (Some((code, message)), _) => Failure::Remote(code, message).report(),
        (None, 0) => ExitCode::from(3),
        _ => ExitCode::SUCCESS,
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// min, avg, max and mdev (ping(8)'s: the population standard deviation).
fn rtt(times: &[f64]) -> Option<(f64, f64, f64, f64)> {
    if times.is_empty() {
        return None;
    }
    let n = times.len() as f64;
    let min = times.iter().copied().fold(f64::INFINITY, f64::min);
    let max = times.iter().copied().fold(0.0, f64::max);
    let avg = times.iter().sum::<f64>() / n;
    let var = times.iter().map(|t| (t - avg) * (t - avg)).sum::<f64>() / n;
    Some((min, avg, max, var.sqrt()))
}

/// `info`: rpc.info's members as `key: value` lines, or the object.
pub async fn info(addr: &Dest, timeout: Duration, key: Option<AuthKey>, json: bool) -> ExitCode {
    let result = async {
        let mut link = Link::connect(addr, timeout, key).await?;
        link.call("rpc.info", &[], timeout).await
    }
    .await;
    let info = match result {
        Ok(value) => json_of(&value),
        Err(e) => return Failure::of(addr, e).report(),
    };
    if json {
        println!("{}", compact(&info));
        return ExitCode::SUCCESS;
    }
    let Some(members) = info.as_object() else {
        return Failure::Transport(format!("{addr}: rpc.info gave {info}, not an object")).report();
    };
    for (key, value) in members {
        match value {
            Json::String(s) => println!("{key}: {s}"),
            // `ext` (contract section 10.1): its names, or "none".
            Json::Array(items) if items.iter().all(Json::is_string) => {
                let names: Vec<&str> = items.iter().filter_map(Json::as_str).collect();
                match names.is_empty() {
                    true => println!("{key}: none"),
                    false => println!("{key}: {}", names.join(", ")),
                }
            }
            other => println!("{key}: {other}"),
        }
    }
    ExitCode::SUCCESS
}

/// JSON with the contract's separators (`", "` and `": "`).
fn compact(value: &Json) -> String {
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, Spaced);
    if serde::Serialize::serialize(value, &mut ser).is_err() {
        return value.to_string();
    }
    String::from_utf8(out).unwrap_or_default()
}

/// serde_json's compact output with a space after `,` and `:`, as AT bodies.
struct Spaced;

impl serde_json::ser::Formatter for Spaced {
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }
    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }
    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        w.write_all(b": ")
    }
}

/// `list`: every page of rpc.functions, as a table of name, signature and
/// doc, or the JSON array.
pub async fn list(addr: &Dest, timeout: Duration, key: Option<AuthKey>, json: bool) -> ExitCode {
    let result = pages(addr, timeout, key, "rpc.functions", "functions").await;
    let entries = match result {
        Ok(entries) => entries,
        Err(e) => return Failure::of(addr, e).report(),
    };
    if json {
        println!("{}", compact(&Json::Array(entries)));
        return ExitCode::SUCCESS;
    }
    let rows: Vec<[String; 3]> = entries.iter().map(row).collect();
    print!("{}", table(&rows));
    ExitCode::SUCCESS
}

/// Every page of `func` (`rpc.functions`, `rpc.topics`): the entries of
/// each page's `member`, following `next` while it grows.
async fn pages(
    addr: &Dest,
    timeout: Duration,
    key: Option<AuthKey>,
    func: &str,
    member: &str,
) -> Result<Vec<Json>, Error> {
    let mut link = Link::connect(addr, timeout, key).await?;
    let mut entries = Vec::new();
    let mut start = 0i64;
    for _ in 0..MAX_PAGES {
        let page = json_of(&link.call(func, &[Value::Int(start)], timeout).await?);
        if let Some(items) = page[member].as_array() {
            entries.extend(items.iter().cloned());
        }
        match page["next"].as_i64() {
            Some(next) if next > start => start = next,
            _ => break,
        }
    }
    Ok(entries)
}

/// `topics`: every page of rpc.topics (contract section 10.1), as a table
/// of name and doc, or the JSON array.
pub async fn topics(addr: &Dest, timeout: Duration, key: Option<AuthKey>, json: bool) -> ExitCode {
    let entries = match pages(addr, timeout, key, "rpc.topics", "topics").await {
        Ok(entries) => entries,
        Err(e) => return Failure::of(addr, e).report(),
    };
    if json {
        println!("{}", compact(&Json::Array(entries)));
        return ExitCode::SUCCESS;
    }
    let rows: Vec<[String; 2]> = entries
        .iter()
        .map(|entry| {
            let text = |member: &str| entry[member].as_str().unwrap_or("").to_owned();
            [text("name"), text("doc")]
        })
        .collect();
    print!("{}", table(&rows));
    ExitCode::SUCCESS
}

/// What `watch` subscribes with: its flags.
pub struct WatchOptions {
    /// Over UDP instead of TCP.
    pub udp: bool,
    /// Bound on connecting and on each call (the subscribe, renewals).
    pub timeout: Duration,
    /// The lease asked for (renewed at half).
    pub lease: Duration,
    /// The least time between events.
    pub interval: Duration,
    /// Exit 0 after this many events.
    pub count: Option<u64>,
    /// Print each event's whole body.
    pub json: bool,
}

/// `watch`: subscribes to `topic` and prints one line per event, `n value`
/// (or the event's body with `json`), a gap and the end on stderr. Exit 0
/// after `count` events, 3 when the server goes away or ends the
/// subscription, 1 on an error reply.
pub async fn watch(
    addr: SocketAddr,
    topic: &str,
    options: &WatchOptions,
    key: Option<AuthKey>,
) -> ExitCode {
    let dest = Dest::Ip {
        addr,
        udp: options.udp,
    };
    let link = match Link::connect(&dest, options.timeout, key).await {
        Ok(link) => link,
        Err(e) => return Failure::of(addr, e).report(),
    };
    let subscribe = at_host::SubscribeOptions {
        lease: options.lease,
        interval: options.interval,
    };
    let subscribed = match &link {
        Link::Tcp(c) => c.subscribe_with::<Json>(topic, subscribe).await,
        Link::Udp(c) => c.subscribe_with::<Json>(topic, subscribe).await,
        Link::Mqtt(_) => return Failure::Transport("watch: not over MQTT".into()).report(),
    };
    let mut subscription = match subscribed {
        Ok(subscription) => subscription,
        Err(e) => return watch_failure(addr, e, options.json),
    };
    let topic_json = Json::String(topic.to_owned()).to_string();
    let mut seen = 0u64;
    loop {
        if options.count.is_some_and(|count| seen >= count) {
            return ExitCode::SUCCESS;
        }
        match subscription.next().await {
            Ok(at_host::Update::Event { n, value }) => {
                seen += 1;
                let line = if options.json {
                    format!(
                        "{{\"topic\": {topic_json}, \"n\": {n}, \"value\": {}}}",
                        compact(&value)
                    )
                } else {
                    format!("{n} {}", compact(&value))
                };
                // A reader that has had enough (`| head -3`) ends it.
                if writeln!(std::io::stdout().lock(), "{line}").is_err() {
                    return ExitCode::SUCCESS;
                }
            }
            Ok(at_host::Update::Gap { first, last }) => {
                eprintln!("gap: events {first} to {last} lost");
            }
            Ok(at_host::Update::End { reason, .. }) => {
                eprintln!("end: {reason}");
                return ExitCode::from(3);
            }
            Err(e) => return watch_failure(addr, e, options.json),
        }
    }
}

/// An error of `watch`, reported as `call` reports it (with `json`, an
/// error reply's body on stdout too).
fn watch_failure(addr: SocketAddr, e: Error, json: bool) -> ExitCode {
    if json && let Error::Remote { code, message } = &e {
        println!(
            "{}",
            compact(&serde_json::json!({"status": "error", "code": code, "message": message}))
        );
    }
    Failure::of(addr, e).report()
}

/// One `list` row: name, `name(type, type) -> type`, doc.
fn row(entry: &Json) -> [String; 3] {
    let name = entry["name"].as_str().unwrap_or("?").to_owned();
    let types = |v: &Json| v.as_str().unwrap_or("?").to_owned();
    let signature = match entry["params"].as_array() {
        Some(params) => {
            let params: Vec<String> = params.iter().map(types).collect();
            match entry["result"].as_str() {
                Some(result) => format!("{name}({}) -> {result}", params.join(", ")),
                None => format!("{name}({})", params.join(", ")),
            }
        }
        None => format!("{name}(...)"),
    };
    let doc = entry["doc"].as_str().unwrap_or("").to_owned();
    [name, signature, doc]
}

/// Rows as left-aligned columns two spaces apart; no trailing spaces.
fn table<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 < N {
                line.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            } else {
                line.push_str(cell);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// One server found by `discover`.
struct Found {
    address: SocketAddr,
    name: String,
    server: String,
    auth: String,
}

/// `discover`: one rpc.info request to the IPv4 broadcast address and
/// (IPv6) to `ff02::1` on the chosen interface(s), then every answer until
/// `timeout`, one line per server, sorted by address.
pub async fn discover(
    timeout: Duration,
    interface: Option<&str>,
    families: (bool, bool),
    port: u16,
    json: bool,
) -> ExitCode {
    let seq = 1;
    let body = br#"{"func": "rpc.info", "args": []}"#;
    let mut request = vec![0u8; HEADER_LEN + body.len()];
    let n = match at_core::encode_frame(Kind::Request, seq, body, &mut request) {
        Ok(n) => n,
        Err(_) => return ExitCode::from(3),
    };
    request.truncate(n);
    let mut sockets = Vec::new();
    let mut problems = Vec::new();
    if families.0 {
        match broadcast_v4(&request, interface, port) {
            Ok(socket) => sockets.push(socket),
            Err(e) => problems.push(format!("IPv4 broadcast: {e}")),
        }
    }
    if families.1 {
        match multicast_v6(&request, interface, port) {
            Ok(socket) => sockets.push(socket),
            Err(e) => problems.push(format!("IPv6 all-nodes: {e}")),
        }
    }
    if sockets.is_empty() {
        for problem in problems {
            eprintln!("transport error: {problem}");
        }
        return ExitCode::from(3);
    }
    let mut found: Vec<Found> = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buf = vec![0u8; 65_536];
    'collect: loop {
        let mut receives = Vec::new();
        for socket in &sockets {
            receives.push(Box::pin(socket.readable()));
        }
        let ready = tokio::time::timeout_at(deadline, futures_select(receives)).await;
        if ready.is_err() {
            break 'collect;
        }
        for socket in &sockets {
            while let Ok((len, from)) = socket.try_recv_from(&mut buf) {
                if let Some(server) = parse_info(&buf[..len], seq, from)
                    && !found.iter().any(|f| f.address == server.address)
                {
                    found.push(server);
                }
            }
        }
    }
    found.sort_by_key(|f| (f.address.ip(), f.address.port()));
    if json {
        let array: Vec<Json> = found
            .iter()
            .map(|f| serde_json::json!({"address": f.address.to_string(), "name": f.name, "server": f.server, "auth": f.auth}))
            .collect();
        println!("{}", compact(&Json::Array(array)));
    } else {
        let rows: Vec<[String; 4]> = found
            .iter()
            .map(|f| {
                [
                    f.address.to_string(),
                    f.name.clone(),
                    f.server.clone(),
                    format!("auth={}", f.auth),
                ]
            })
            .collect();
        print!("{}", table(&rows));
    }
    if found.is_empty() {
        eprintln!("no server answered within {timeout:?}");
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    }
}

/// `discover --mqtt`: the devices online on `broker` by their retained
/// status, one line each as for the LAN (address `mqtt://HOST:PORT/NAME`,
/// what `--server` takes), sorted by name; exit 3 when none is.
pub async fn discover_mqtt(broker: &MqttBroker, timeout: Duration, json: bool) -> ExitCode {
    let online = match MqttClient::discover(broker, timeout).await {
        Ok(online) => online,
        Err(e) => return Failure::of(&broker.url, e).report(),
    };
    let base = broker.url.trim_end_matches('/');
    let found: Vec<[String; 4]> = online
        .iter()
        .map(|(name, info)| {
            let text = |key: &str| info[key].as_str().unwrap_or("").to_owned();
            [
                format!("{base}/{name}"),
                text("name"),
                text("server"),
                text("auth"),
            ]
        })
        .collect();
    if json {
        let array: Vec<Json> = found
            .iter()
            .map(|[address, name, server, auth]| serde_json::json!({"address": address, "name": name, "server": server, "auth": auth}))
            .collect();
        println!("{}", compact(&Json::Array(array)));
    } else {
        let rows: Vec<[String; 4]> = found
            .into_iter()
            .map(|[address, name, server, auth]| [address, name, server, format!("auth={auth}")])
            .collect();
        print!("{}", table(&rows));
    }
    if online.is_empty() {
        eprintln!("no device online on {}", broker.url);
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    }
}

/// Waits until any of `futures` is ready.
async fn futures_select<F: std::future::Future<Output = std::io::Result<()>> + Unpin>(
    futures: Vec<F>,
) {
    let mut futures = futures;
    std::future::poll_fn(move |cx| {
        for f in futures.iter_mut() {
            if std::pin::Pin::new(f).poll(cx).is_ready() {
                return std::task::Poll::Ready(());
            }
        }
        std::task::Poll::Pending
    })
    .await
}

/// A successful rpc.info reply to `seq` from `from`.
fn parse_info(datagram: &[u8], seq: u32, from: SocketAddr) -> Option<Found> {
    let frame = Frame::parse(datagram, u32::MAX).ok()?;
    if frame.kind != Kind::Response || frame.seq() != seq {
        return None;
    }
    let Ok(Reply::Success(value)) = Reply::parse(frame.body) else {
        return None;
    };
    let info = json_of(&Value::from(value));
    let text = |key: &str| info[key].as_str().unwrap_or("").to_owned();
    let address = match from {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::from((v4, v6.port())),
            None => from,
        },
        v4 => v4,
    };
    Some(Found {
        address,
        name: text("name"),
        server: text("server"),
        auth: text("auth"),
    })
}

/// Sends `request` to 255.255.255.255:`port`, from a socket bound to
/// `interface` if given.
fn broadcast_v4(
    request: &[u8],
    interface: Option<&str>,
    port: u16,
) -> std::io::Result<tokio::net::UdpSocket> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
    socket.set_broadcast(true)?;
    if let Some(name) = interface {
        socket.bind_device(Some(name.as_bytes()))?;
    }
    socket.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)).into())?;
    socket.send_to(
        request,
        &SocketAddr::from((Ipv4Addr::BROADCAST, port)).into(),
    )?;
    socket.set_nonblocking(true)?;
    tokio::net::UdpSocket::from_std(socket.into())
}

/// Sends `request` to `[ff02::1]:port` on `interface`, or on every
/// interface but loopback.
fn multicast_v6(
    request: &[u8],
    interface: Option<&str>,
    port: u16,
) -> std::io::Result<tokio::net::UdpSocket> {
    let socket = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::DGRAM, None)?;
    socket.set_only_v6(true)?;
    socket.bind(&SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)).into())?;
    let indexes: Vec<u32> = match interface {
        Some(name) => vec![interface_index(name)?],
        None => all_interfaces(),
    };
    let all_nodes = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
    let mut sent = 0;
    let mut last_error = None;
    for index in indexes {
        let to = SocketAddr::V6(SocketAddrV6::new(all_nodes, port, 0, index));
        match socket.send_to(request, &to.into()) {
            Ok(_) => sent += 1,
            Err(e) => last_error = Some(e),
        }
    }
    match (sent, last_error) {
        (0, Some(e)) => Err(e),
        (0, None) => Err(std::io::Error::other("no interface to send on")),
        _ => {
            socket.set_nonblocking(true)?;
            tokio::net::UdpSocket::from_std(socket.into())
        }
    }
}

/// The index of network interface `name` (Linux: /sys/class/net).
fn interface_index(name: &str) -> std::io::Result<u32> {
    if name.contains('/') || name.contains("..") {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not an interface name",
        ));
    }
    let text = std::fs::read_to_string(format!("/sys/class/net/{name}/ifindex"))
        .map_err(|e| std::io::Error::new(e.kind(), format!("interface {name}: {e}")))?;
    text.trim()
        .parse()
        .map_err(|_| std::io::Error::other(format!("interface {name}: no index")))
}

/// Every interface's index but loopback's.
fn all_interfaces() -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/sys/class/net") else {
        return Vec::new();
    };
    dir.flatten()
        .filter(|e| e.file_name() != "lo")
        .filter_map(|e| interface_index(&e.file_name().to_string_lossy()).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtt_is_pings() {
        let (min, avg, max, mdev) = rtt(&[1.0, 2.0, 3.0]).unwrap();
        assert_eq!((min, avg, max), (1.0, 2.0, 3.0));
        assert!((mdev - 0.816_496_580_927_726).abs() < 1e-12);
        assert!(rtt(&[]).is_none());
    }

    #[test]
    fn rows_and_tables() {
        let typed = serde_json::json!({"name": "add", "params": ["number", "number"], "result": "number", "doc": "a + b"});
        let untyped =
            serde_json::json!({"name": "echo", "params": null, "result": null, "doc": ""});
        let rows = [row(&typed), row(&untyped)];
        assert_eq!(
            table(&rows),
            "add   add(number, number) -> number  a + b\necho  echo(...)\n"
        );
    }

    #[test]
    fn compact_json_has_the_contract_spacing() {
        let v = serde_json::json!({"a": [1, 2], "b": "x"});
        assert_eq!(compact(&v), r#"{"a": [1, 2], "b": "x"}"#);
    }
}
