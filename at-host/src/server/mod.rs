//! The server side: on tokio, calling the functions of a [`Registry`]
//! through at-core's one request -> reply path.
//!
//! This module holds the core every transport shares: [`ServerConfig`],
//! [`ServerBuilder`] (whose `start` binds every socket), the running
//! [`Server`] and its [`ShutdownHandle`], and `Shared` and `Logged`, what
//! each serving task calls through. Below it, one module per transport,
//! serving the sockets `start` bound, and the pieces they need:
//!
//! - [`tcp`]: the accept loop and the per-connection loop;
//! - [`slots`]: the TCP connection table and its limits by address;
//! - [`udp`]: the datagram thread, the datagram rules it shares with
//!   [`mqtt`] and the rationing of error replies;
//! - [`mqtt`]: serving through a broker (contract section 11);
//! - [`cache`]: the UDP reply cache that makes execution at-most-once;
//! - [`registry`]: [`Registry`], [`HandlerError`], [`HostFunction`];
//! - [`peer`]: [`Peer`], calls towards a client that called `rpc.peer`.
//!
//! Nothing here imports the client side.

mod auth;
mod cache;
mod destination;
pub(crate) mod log_limit;
mod mqtt;
mod peer;
mod registry;
mod slots;
mod tcp;
mod topics;
mod typed;
mod udp;
mod woken;

pub use auth::MAX_SESSIONS;
pub use peer::{MAX_PEER_CALLS, PEER_TIMEOUT, Peer};

pub use registry::{HostFunction, Registry, RegistryError, Service, first_paragraph};
pub use topics::{EVENT_QUEUE, MAX_PER_SUBSCRIBER, Topic, TopicError};

use crate::shared::app_error::HandlerError;
use crate::shared::wire::Hints;
pub use typed::{AsyncFunction, Json, Param, Params, Pending, Returns, TypedFunction, kind};
pub use udp::ERROR_REPLIES_PER_SECOND;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use at_core::auth::{Admission, Origin, Seal};
use at_core::{Frame, Functions, Reply};
use log::{debug, info};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::shared::value::Value;

/// Limits and timeouts of a server. The defaults suit a LAN service.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The name `rpc.info` reports. Default: the host name.
    pub name: String,
    /// Largest request body accepted (bytes); longer frames get
    /// `frame_too_large` and, on TCP, a closed connection. Default 65536.
    pub max_frame: u32,
    /// Most TCP connections served at once; more get `busy` and are closed.
    /// Default 1024. When every slot is taken, the longest-idle connection
    /// of the address holding the most is closed for a newcomer from an
    /// address holding fewer.
    pub max_connections: usize,
    /// Most TCP connections from one address at once (an IPv4 peer of a
    /// dual-stack socket counts as its IPv4 address); more get `busy` and
    /// are closed. Default 64.
    pub max_per_address: usize,
    /// A TCP connection with nothing buffered is closed after this long
    /// without a byte. Default 300 s.
    pub idle_timeout: Duration,
    /// A TCP connection that sent part of a frame is closed if the rest does
    /// not arrive within this long; also bounds each write of replies to a
    /// peer that does not read. Default 10 s.
    pub frame_timeout: Duration,
    /// UDP: how many replies the at-most-once cache keeps. Default 4096.
    pub udp_cache_entries: usize,
    /// UDP: how many cached replies one client address may hold at most.
    /// Default 256.
    pub udp_cache_per_client: usize,
    /// UDP: how long a reply stays in the cache. Default 60 s.
    pub udp_cache_age: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            name: host_name(),
            max_frame: at_core::DEFAULT_MAX_BODY,
            max_connections: 1024,
            max_per_address: 64,
            idle_timeout: Duration::from_secs(300),
            frame_timeout: Duration::from_secs(10),
            udp_cache_entries: 4096,
            udp_cache_per_client: 256,
            udp_cache_age: Duration::from_secs(60),
        }
    }
}

/// The implementation and version `rpc.info` reports.
pub const SERVER: &str = concat!("at-host ", env!("CARGO_PKG_VERSION"));

/// This machine's host name (Linux: the kernel's; elsewhere `HOSTNAME`),
/// or `at-host`.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "at-host".to_owned())
}

/// Builds a [`Server`]: what to call, where to listen, and the limits.
///
/// ```no_run
/// # async fn example() -> std::io::Result<()> {
/// use at_host::{Server, Value};
/// let server = Server::builder()
///     .calculator()
///     .function("hello", || "world".to_owned())
///     .tcp("127.0.0.1:0".parse().unwrap())
///     .udp("127.0.0.1:0".parse().unwrap())
///     .start()
///     .await?;
/// println!("listening on tcp://{}", server.tcp_addr().unwrap());
/// server.run_until_ctrl_c().await;
/// # Ok(()) }
/// ```
#[derive(Default)]
pub struct ServerBuilder {
    registry: Registry,
    config: ServerConfig,
    tcp: Option<SocketAddr>,
    udp: Option<SocketAddr>,
    /// The first registration that failed, reported by `start`.
    error: Option<RegistryError>,
    /// With keys, every call but rpc.hello, rpc.ping and rpc.info must be
    /// authenticated (contract section 9).
    keys: Vec<crate::AuthKey>,
    /// The topics published (contract 10.3), and the first bad name.
    topics: Vec<Topic>,
    topic_error: Option<TopicError>,
    /// The topic counting the calls answered, if any.
    calls_topic: Option<Topic>,
    /// The broker to serve through, if any (contract section 11).
    mqtt: Option<crate::MqttBroker>,
}

impl ServerBuilder {
    /// Publishes a topic `name` with `doc` for `rpc.topics` (a bad name
    /// makes [`start`](Self::start) fail); its handle is
    /// [`Server::topic`]. Topics are served on TCP and UDP,
    /// plain and sealed.
    ///
    /// ```
    /// # async fn example() -> std::io::Result<()> {
    /// let server = at_host::Server::builder()
    ///     .topic("temp", "degrees C")
    ///     .tcp("127.0.0.1:0".parse().unwrap())
    ///     .start()
    ///     .await?;
    /// server.topic("temp").unwrap().publish(&21.5).unwrap();
    /// # Ok(()) }
    /// ```
    pub fn topic(mut self, name: &str, doc: &str) -> Self {
        match Topic::new(name, doc) {
            Ok(topic) => self.topics.push(topic),
            Err(e) => {
                self.topic_error.get_or_insert(e);
            }
        }
        self
    }

    /// Publishes topic `name` (a state topic) counting the calls answered
    /// so far, on every transport: a count kept per call (one atomic
    /// addition) and published when it changed, at most once a second.
    /// `at-host serve` publishes it as `calls`.
    ///
    /// ```
    /// let builder = at_host::Server::builder().calls_topic("calls");
    /// ```
    pub fn calls_topic(mut self, name: &str) -> Self {
        match Topic::new(name, "calls answered so far") {
            Ok(topic) => {
                self.topics.push(topic.clone());
                self.calls_topic = Some(topic);
            }
            Err(e) => {
                self.topic_error.get_or_insert(e);
            }
        }
        self
    }

    /// Publishes a topic made before (with [`Topic::new`]), so that
    /// functions registered here can hold its handle.
    ///
    /// ```
    /// let calls = at_host::Topic::new("calls", "").unwrap();
    /// let builder = at_host::Server::builder().with_topic(&calls);
    /// ```
    pub fn with_topic(mut self, topic: &Topic) -> Self {
        self.topics.push(topic.clone());
        self
    }

    /// Registers the calculator's four functions.
    pub fn calculator(mut self) -> Self {
        self.registry.add_calculator();
        self
    }

    /// Registers a typed function under `name` (see
    /// [`Registry::function`]): `.function("add", |a: i64, b: i64| a + b)`.
    /// A reserved name (`rpc.*`) makes [`start`](Self::start) fail.
    pub fn function<Args: Params, K, F: TypedFunction<Args, K>>(
        self,
        name: &str,
        function: F,
    ) -> Self {
        self.function_with_doc(name, "", function)
    }

    /// [`function`](Self::function) with a doc for `rpc.functions` (its
    /// first paragraph is shown).
    pub fn function_with_doc<Args: Params, K, F: TypedFunction<Args, K>>(
        mut self,
        name: &str,
        doc: &str,
        function: F,
    ) -> Self {
        let outcome = self
            .registry
            .function_with_doc(name, doc, function)
            .map(|_| ());
        self.keep_first_error(outcome)
    }

    /// Registers a typed `async` function under `name` (see
    /// [`Registry::async_function`]): it may await I/O without holding up
    /// other connections.
    pub fn async_function<Args: Params, K, F: AsyncFunction<Args, K>>(
        self,
        name: &str,
        function: F,
    ) -> Self {
        self.async_function_with_doc(name, "", function)
    }

    /// [`async_function`](Self::async_function) with a doc for
    /// `rpc.functions`.
    pub fn async_function_with_doc<Args: Params, K, F: AsyncFunction<Args, K>>(
        mut self,
        name: &str,
        doc: &str,
        function: F,
    ) -> Self {
        let outcome = self
            .registry
            .async_function(name, doc, function)
            .map(|_| ());
        self.keep_first_error(outcome)
    }

    /// Registers every function of a service (a `#[service]` trait's
    /// `TraitServer(implementation)`).
    pub fn service(mut self, service: impl Service) -> Self {
        let outcome = service.register(&mut self.registry);
        self.take_registry_topics();
        self.keep_first_error(outcome)
    }

    /// Serves the topics the registry's services declared.
    fn take_registry_topics(&mut self) {
        for topic in self.registry.take_topics() {
            if !self.topics.iter().any(|t| t.name() == topic.name()) {
                self.topics.push(topic);
            }
        }
    }

    /// Registers an untyped function under `name`, for dynamic use (see
    /// [`Registry::register`]).
    pub fn untyped<F>(mut self, name: &str, function: F) -> Self
    where
        F: Fn(&[Value]) -> Result<Value, HandlerError> + Send + Sync + 'static,
    {
        let outcome = self.registry.register(name, function).map(|_| ());
        self.keep_first_error(outcome)
    }

    fn keep_first_error(mut self, outcome: Result<(), RegistryError>) -> Self {
        if let (Err(e), None) = (outcome, &self.error) {
            self.error = Some(e);
        }
        self
    }

    /// Adds every function of `registry` to what was registered so far (a
    /// name registered in both takes `registry`'s function).
    pub fn registry(mut self, registry: Registry) -> Self {
        self.registry.extend(registry);
        self.take_registry_topics();
        self
    }

    /// Sets all limits at once.
    pub fn config(mut self, config: ServerConfig) -> Self {
        self.config = config;
        self
    }

    /// Listens on TCP at `addr` (port 0: the OS chooses).
    pub fn tcp(mut self, addr: SocketAddr) -> Self {
        self.tcp = Some(addr);
        self
    }

    /// Serves through an MQTT 5 broker as well (contract section 11): as
    /// `broker.name`, else the server's name, on `at/<name>/req/+`, with a
    /// retained status and a will; reconnecting with capped backoff while
    /// the broker is away. See [`Server::mqtt_ready`].
    pub fn mqtt(mut self, broker: crate::MqttBroker) -> Self {
        self.mqtt = Some(broker);
        self
    }

    /// Listens on UDP at `addr` (port 0: the OS chooses).
    pub fn udp(mut self, addr: SocketAddr) -> Self {
        self.udp = Some(addr);
        self
    }

    /// Requires authentication with `key` (and any other keys given): see
    /// docs/SECURITY.md. Several keys may be held at once (one per client,
    /// and old and new during a rotation).
    pub fn key(mut self, key: crate::AuthKey) -> Self {
        self.keys.push(key);
        self
    }

    /// Requires authentication with these keys (added to any given before).
    pub fn keys(mut self, keys: impl IntoIterator<Item = crate::AuthKey>) -> Self {
        self.keys.extend(keys);
        self
    }

    /// The name `rpc.info` reports (default: the host name).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.config.name = name.into();
        self
    }

    /// Largest request body, in bytes.
    pub fn max_frame(mut self, bytes: u32) -> Self {
        self.config.max_frame = bytes;
        self
    }

    /// Most TCP connections at once.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.config.max_connections = n;
        self
    }

    /// Most TCP connections from one address at once.
    pub fn max_per_address(mut self, n: usize) -> Self {
        self.config.max_per_address = n;
        self
    }

    /// Idle timeout of TCP connections.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.config.idle_timeout = timeout;
        self
    }

    /// Timeout for the rest of a started frame, and for writes.
    pub fn frame_timeout(mut self, timeout: Duration) -> Self {
        self.config.frame_timeout = timeout;
        self
    }

    /// Binds the sockets and starts serving on the current tokio runtime
    /// (TCP, and UDP's async functions) and, for UDP, on a thread of its
    /// own that blocks in its receive as a plain socket loop does.
    /// Fails with `InvalidInput` if a function could not be registered
    /// (a reserved `rpc.*` name).
    pub async fn start(self) -> io::Result<Server> {
        if let Some(e) = self.error {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, e));
        }
        if let Some(e) = self.topic_error {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, e));
        }
        let auth = (!self.keys.is_empty())
            .then(|| Arc::new(auth::Auth::new(crate::shared::keys::KeySet(self.keys))));
        let shared = Arc::new(Shared {
            registry: self.registry,
            config: self.config,
            hub: topics::Hub::new(self.topics.clone(), auth.clone()),
            auth,
            topics: self.topics.clone(),
            calls: self.calls_topic.as_ref().map(|_| AtomicU64::new(0)),
            peers: Arc::new(peer::Peers::default()),
        });
        let (stop_tx, stop_rx) = watch::channel(false);
        let (alive_tx, alive_rx) = mpsc::channel::<()>(1);
        if let Some(topic) = self.calls_topic {
            tokio::spawn(publish_calls(topic, shared.clone(), stop_rx.clone()));
        }
        let mut tcp_addr = None;
        let mut udp_addr = None;
        if let Some(addr) = self.tcp {
            let listener = bind_tcp(addr)?;
            tcp_addr = Some(listener.local_addr()?);
            tokio::spawn(tcp::accept_loop(
                listener,
                shared.clone(),
                stop_rx.clone(),
                alive_tx.clone(),
            ));
        }
        if let Some(addr) = self.udp {
            let socket = bind_udp(addr)?;
            let bound = socket.local_addr()?;
            udp_addr = Some(bound);
            let (shared, stop, alive) = (shared.clone(), stop_rx.clone(), alive_tx.clone());
            let runtime = tokio::runtime::Handle::current();
            std::thread::Builder::new()
                .name("at-host udp".into())
                .spawn(move || udp::serve(socket, shared, stop, alive, runtime))?;
            tokio::spawn(udp::wake_on_stop(stop_rx.clone(), bound));
        }
        let mut mqtt = None;
        if let Some(broker) = &self.mqtt {
            let name = broker
                .name
                .clone()
                .unwrap_or_else(|| shared.config.name.clone());
            let link = mqtt::link(broker, &name, shared.config.max_frame)?;
            let (ready_tx, ready_rx) = watch::channel(false);
            tokio::spawn(mqtt::serve(
                link,
                shared.clone(),
                stop_rx.clone(),
                alive_tx.clone(),
                ready_tx,
            ));
            mqtt = Some((name, ready_rx));
        }
        Ok(Server {
            peers: shared.peers.clone(),
            topics: self.topics,
            tcp_addr,
            udp_addr,
            mqtt,
            stop: stop_tx,
            alive: alive_rx,
        })
    }
}

/// Receive buffer asked for the UDP socket (the kernel may grant less; on
/// Linux up to `net.core.rmem_max`): room for bursts of about 10,000 small
/// datagrams while the server is busy.
const UDP_RECEIVE_BUFFER: usize = 2 << 20;

/// Pending connections the kernel queues for `accept`.
const TCP_BACKLOG: i32 = 1024;

/// The UDP socket, blocking (its thread waits in `recvmmsg`), with a read
/// timeout so that thread looks at the stop signal now and then.
fn bind_udp(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if let Err(e) = socket.set_recv_buffer_size(UDP_RECEIVE_BUFFER) {
        debug!("udp: cannot enlarge the receive buffer: {e}");
    }
    dual_stack(&socket, addr);
    socket.set_read_timeout(Some(udp::RECEIVE_TIMEOUT))?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

fn bind_tcp(addr: SocketAddr) -> io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // As std and tokio do: a restarted server may bind while old
    // connections linger in TIME-WAIT.
    socket.set_reuse_address(true)?;
    dual_stack(&socket, addr);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(TCP_BACKLOG)?;
    TcpListener::from_std(socket.into())
}

/// A socket for `[::]` takes IPv4 too (mapped addresses), whatever the
/// system's default (`net.ipv6.bindv6only` on Linux, on by default on
/// Windows): one wildcard address serves both families.
fn dual_stack(socket: &socket2::Socket, addr: SocketAddr) {
    if addr.is_ipv6()
        && addr.ip().is_unspecified()
        && let Err(e) = socket.set_only_v6(false)
    {
        debug!("{addr}: cannot take IPv4 as well: {e}");
    }
}

/// What every serving task shares (private: the transport modules below
/// see it, nothing outside the server does).
struct Shared {
    registry: Registry,
    config: ServerConfig,
    /// Present when the server has keys.
    auth: Option<Arc<auth::Auth>>,
    /// Empty: no subscriptions, and nothing on the call path looks.
    topics: Vec<Topic>,
    /// Subscribers by UDP address and by session, and what their events
    /// need (contract 10.3).
    hub: Arc<topics::Hub>,
    /// Calls answered, when a calls topic publishes them.
    calls: Option<AtomicU64>,
    /// The connections that called `rpc.peer` (contract 10.5).
    peers: Arc<peer::Peers>,
}

/// Publishes `shared`'s count of calls answered on `topic` once a second
/// when it changed, until `stop`.
async fn publish_calls(topic: Topic, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut published = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let count = shared
            .calls
            .as_ref()
            .map_or(0, |c| c.load(Ordering::Relaxed));
        if published != Some(count) {
            let _ = topic.publish(&count);
            published = Some(count);
        }
    }
}

/// A running server. Dropping it stops nothing; call
/// [`shutdown`](Server::shutdown) (or use a [`ShutdownHandle`]) to stop.
pub struct Server {
    peers: Arc<peer::Peers>,
    topics: Vec<Topic>,
    tcp_addr: Option<SocketAddr>,
    udp_addr: Option<SocketAddr>,
    /// The AT name served through a broker, and whether it is ready.
    mqtt: Option<(String, watch::Receiver<bool>)>,
    stop: watch::Sender<bool>,
    /// Closed (recv gives None) once every task holding a sender has ended.
    alive: mpsc::Receiver<()>,
}

/// Tells a running server to stop; cheap to clone and send to other tasks.
#[derive(Clone)]
pub struct ShutdownHandle(watch::Sender<bool>, Arc<[Topic]>);

impl ShutdownHandle {
    /// Sends every subscriber an `"end": "server"` event (best effort),
    /// stops accepting, lets each connection answer the requests it has
    /// already received, then closes it.
    pub fn shutdown(&self) {
        topics::end_all(&self.1);
        self.0.send_replace(true);
    }
}

impl Server {
    /// Starts a builder with no functions registered.
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }

    /// The handle of topic `name`, if the server publishes it.
    ///
    /// ```
    /// # async fn example() -> std::io::Result<()> {
    /// let server = at_host::Server::builder().topic("temp", "").start().await?;
    /// assert!(server.topic("temp").is_some() && server.topic("x").is_none());
    /// # Ok(()) }
    /// ```
    pub fn topic(&self, name: &str) -> Option<Topic> {
        self.topics.iter().find(|t| t.name() == name).cloned()
    }

    /// The clients that called `rpc.peer` on a TCP connection still open,
    /// oldest first: each may be called back over its connection
    /// (contract 10.5). See [`Peer`].
    ///
    /// ```
    /// # async fn example() -> std::io::Result<()> {
    /// let server = at_host::Server::builder().tcp("127.0.0.1:0".parse().unwrap()).start().await?;
    /// for peer in server.peers() {
    ///     println!("{} may be called back", peer.addr());
    /// }
    /// # Ok(()) }
    /// ```
    pub fn peers(&self) -> Vec<Peer> {
        self.peers.alive()
    }

    /// The next client to call `rpc.peer`: the oldest such connection,
    /// still open, that this has not returned yet (waiting for one if
    /// there is none). Each peer is returned once (the 64 most recent not
    /// yet taken are kept); [`peers`](Self::peers) lists them all. Bound
    /// the wait with `tokio::time::timeout` as you need.
    ///
    /// ```no_run
    /// # async fn example(server: at_host::Server) -> Result<(), at_host::Error> {
    /// loop {
    ///     let board = server.next_peer().await;
    ///     let uptime: u64 = board.call_as("uptime", ()).await?;
    ///     println!("{} up for {uptime} s", board.addr());
    /// }
    /// # }
    /// ```
    pub async fn next_peer(&self) -> Peer {
        self.peers.next().await
    }

    /// The TCP address really listened on.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp_addr
    }

    /// The UDP address really listened on.
    pub fn udp_addr(&self) -> Option<SocketAddr> {
        self.udp_addr
    }

    /// The AT name served through a broker, if the server has one.
    pub fn mqtt_name(&self) -> Option<&str> {
        self.mqtt.as_ref().map(|(name, _)| name.as_str())
    }

    /// Waits until the broker link has been ready once (subscribed to its
    /// requests, its online status taken by the broker): `false` at once
    /// for a server without one. Bound the wait as you need: while the
    /// broker cannot be reached, the link keeps trying.
    pub async fn mqtt_ready(&self) -> bool {
        let Some((_, ready)) = &self.mqtt else {
            return false;
        };
        let mut ready = ready.clone();
        ready.wait_for(|r| *r).await.is_ok()
    }

    /// A handle that stops the server from anywhere.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(self.stop.clone(), self.topics.clone().into())
    }

    /// Waits until a shutdown is requested, then until every connection has
    /// finished the calls it had received.
    pub async fn wait(mut self) {
        let mut stop = self.stop.subscribe();
        let _ = stop.wait_for(|stopped| *stopped).await;
        // Every task holds a sender; recv() gives None once all have ended.
        let _ = self.alive.recv().await;
    }

    /// Stops the server and waits until the calls in flight are answered
    /// (every subscriber gets an `"end": "server"` event first, best
    /// effort).
    pub async fn shutdown(self) {
        topics::end_all(&self.topics);
        self.stop.send_replace(true);
        self.wait().await;
    }

    /// Serves until Ctrl-C (or SIGTERM on Unix), then shuts down gracefully.
    pub async fn run_until_ctrl_c(self) {
        let handle = self.shutdown_handle();
        tokio::spawn(async move {
            wait_for_signal().await;
            info!("shutting down");
            handle.shutdown();
        });
        self.wait().await;
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Runs a started async function to the end on a task of its own (so it
/// may use the runtime as it likes); a panic there is `internal`.
/// With `deadline`, a function still running then is stopped (its future
/// dropped) and the outcome is `cancelled` (contract 10.4).
/// With `cancel`, a function still running when it fires (`rpc.cancel`)
/// is stopped the same way, and the cancel records that it stopped it.
async fn finish(
    started: Result<Pending, HandlerError>,
    deadline: Option<Instant>,
    cancel: Option<&Cancel>,
    caller: CallerContext,
) -> Result<Value, HandlerError> {
    let mut task = tokio::spawn(CALLER.scope(caller, started?));
    let expired = async {
        match deadline {
            Some(at) => tokio::time::sleep_until(at.into()).await,
            None => std::future::pending().await,
        }
    };
    let cancelled = async {
        match cancel {
            Some(cancel) => cancel.fired.notified().await,
            None => std::future::pending().await,
        }
    };
    let joined = tokio::select! {
        // Biased: a function that has finished keeps its result.
        biased;
        joined = &mut task => joined,
        () = expired => {
            task.abort();
            return Err(cancelled_error());
        }
        () = cancelled => {
            task.abort();
            if let Some(cancel) = cancel {
                cancel.stopped.store(true, Ordering::Relaxed);
            }
            return Err(cancelled_error());
        }
    };
    match joined {
        Ok(outcome) => outcome,
        Err(e) => {
            log::error!("an async function failed: {e}");
            Err(HandlerError::new(
                at_core::ErrorCode::Internal,
                "the function failed",
            ))
        }
    }
}

/// The `cancelled` outcome of a call stopped while it ran (contract 10.4).
fn cancelled_error() -> HandlerError {
    let code = at_core::ErrorCode::Cancelled;
    HandlerError::new(code, code.default_message())
}

/// The `cancelled` reply to `seq` in `out` (a call cancelled before it
/// started); its length.
fn cancelled_reply(seq: u32, out: &mut [u8]) -> usize {
    let code = at_core::ErrorCode::Cancelled;
    at_core::write_error_frame(seq, code, code.default_message(), out).unwrap_or(0)
}

/// How an `rpc.cancel` (contract 10.4) reaches a running async call: the
/// transport that finds a cancel naming the call [`fire`](Cancel::fire)s
/// it; the call, if still running then, is stopped (its future dropped)
/// and answered `cancelled`, and [`stopped`](Cancel::stopped) turns true.
#[derive(Default)]
pub(super) struct Cancel {
    fired: tokio::sync::Notify,
    stopped: std::sync::atomic::AtomicBool,
}

impl Cancel {
    /// Asks the call to stop (kept if the call does not wait yet).
    pub(super) fn fire(&self) {
        self.fired.notify_one();
    }

    /// Whether the cancel stopped the call.
    pub(super) fn stopped(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
    }
}

/// The seq an `rpc.cancel` body names: `None` for any other body;
/// `Some(None)` for an `rpc.cancel` whose arguments are not one seq
/// (1 to 4294967295).
pub(super) fn cancel_target(body: &[u8]) -> Option<Option<u32>> {
    if !Hints::of(body).rpc {
        return None;
    }
    let request = at_core::Request::parse(body).ok()?;
    if request.func != "rpc.cancel" {
        return None;
    }
    let seq = match request.args.as_slice() {
        [at_core::Value::Int(n)] => u32::try_from(*n).ok().filter(|&n| n != 0),
        _ => None,
    };
    Some(seq)
}

/// When a request body's `deadline_ms` runs out, counted from `read_at`;
/// `None` without one. Only bodies naming the member (or holding an
/// escape, which might spell it) are read for it, so a call without a
/// deadline is not parsed a second time.
fn deadline_of(body: &[u8], hints: Hints, read_at: Instant) -> Option<Instant> {
    if !hints.deadline {
        return None;
    }
    let ms = at_core::Request::parse(body).ok()?.deadline_ms?;
    Some(read_at + Duration::from_millis(u64::from(ms)))
}

/// The `deadline_exceeded` reply to `seq` in `out`; its length.
fn deadline_exceeded(seq: u32, out: &mut [u8]) -> usize {
    let code = at_core::ErrorCode::DeadlineExceeded;
    at_core::write_error_frame(seq, code, code.default_message(), out).unwrap_or(0)
}

/// Writes the reply frame for `outcome` into `out`; returns its length (0
/// if not even an error fits, which `out`'s size rules out).
fn write_outcome(seq: u32, outcome: &Result<Value, HandlerError>, out: &mut [u8]) -> usize {
    at_core::write_reply(seq, &registry::reply_of(outcome), out).unwrap_or(0)
}

tokio::task_local! {
    /// Who sent the call being answered, for [`caller_addr`] and
    /// [`caller_peer`].
    static CALLER: CallerContext;
}

/// Who sent a call: its origin, and (over TCP, where peers are) the table
/// to find it among the peers.
#[derive(Clone)]
struct CallerContext {
    origin: Origin,
    peers: Option<Arc<peer::Peers>>,
}

/// The address of the client whose call (or notification) the current
/// function is answering; `None` outside a function a server calls, and
/// on a serial line.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let server = at_host::Server::builder()
///     .function("whoami", || at_host::caller_addr().map(|a| a.to_string()))
///     .tcp("127.0.0.1:0".parse()?)
///     .start()
///     .await?;
/// let client = at_host::Client::connect(server.tcp_addr().unwrap(), std::time::Duration::from_secs(5)).await?;
/// let me: Option<String> = client.call_as("whoami", ()).await?;
/// assert!(me.unwrap().starts_with("127.0.0.1:"));
/// # server.shutdown().await;
/// # Ok(()) }
/// ```
pub fn caller_addr() -> Option<SocketAddr> {
    CALLER.try_with(|c| c.origin.peer).ok().flatten()
}

/// The caller of the current function as a [`Peer`], if it called
/// `rpc.peer` on its TCP connection, so that an `async` function can call
/// its caller back (contract 10.5). `None` otherwise, and outside a
/// function a server calls.
///
/// While an `async` function runs for a peer, its connection keeps
/// reading (replies to the server's calls reach them), and requests the
/// peer sends meanwhile are answered `busy` after the function's reply
/// (contract 10.8 rule 8). A sync function must not wait for a call it
/// makes.
///
/// ```
/// let server = at_host::Server::builder().async_function("ask_back", || async {
///     match at_host::caller_peer() {
///         Some(peer) => peer.call_as::<String>("name", ()).await.map_err(|e| e.to_string()),
///         None => Err("call rpc.peer first".to_owned()),
///     }
/// });
/// ```
pub fn caller_peer() -> Option<Peer> {
    CALLER
        .try_with(|c| {
            let addr = c.origin.peer?;
            c.peers.as_ref()?.find(addr)
        })
        .ok()
        .flatten()
}

impl Shared {
    /// The context of a call from `origin`. Only a TCP client can be a
    /// peer: a datagram's call does without the table (and the two atomic
    /// operations of sharing it).
    fn caller(&self, origin: &Origin) -> CallerContext {
        let stream = origin.transport == at_core::auth::Transport::Stream;
        CallerContext {
            origin: *origin,
            peers: stream.then(|| Arc::clone(&self.peers)),
        }
    }

    /// What `rpc.info` says of this server to a client over `origin`'s
    /// transport: `peer` only over TCP without keys, where `rpc.peer` is
    /// served (contract 10.5).
    fn info(&self, origin: &Origin) -> at_core::ServerInfo<'_> {
        let peer = match origin.transport == at_core::auth::Transport::Stream && self.auth.is_none()
        {
            true => at_core::rpc::Ext::PEER,
            false => at_core::rpc::Ext::NONE,
        };
        // rpc.cancel stops plain calls only: with keys (every call
        // sealed) it is not served, and a sealed one is unknown_function.
        let cancel = match self.auth.is_none() {
            true => at_core::rpc::Ext::CANCEL,
            false => at_core::rpc::Ext::NONE,
        };
        at_core::ServerInfo {
            server: SERVER,
            name: &self.config.name,
            auth_required: self.auth.is_some(),
            max_body: self.config.max_frame,
            ext: match self.topics.is_empty() {
                true => at_core::rpc::Ext::NOTIFY.with(at_core::rpc::Ext::DEADLINE),
                false => at_core::rpc::Ext::NOTIFY
                    .with(at_core::rpc::Ext::EVENTS)
                    .with(at_core::rpc::Ext::DEADLINE),
            }
            .with(cancel)
            .with(peer),
        }
    }

    /// The first step for a request frame: the authentication checks (with
    /// keys), or the plain path's one check (without). Replies it makes
    /// itself go into `out`. With `may_wait`, an authenticated request
    /// whose call is still running (sent again over another connection) is
    /// [`Step::Wait`]; without, the guard answers it as a replay.
    fn admit<'f>(
        &self,
        frame: &Frame<'f>,
        origin: &Origin,
        out: &mut [u8],
        may_wait: bool,
    ) -> Step<'f> {
        let Some(auth) = &self.auth else {
            if frame.header.flags & at_core::FLAG_AUTH != 0 {
                let n = at_core::write_error_frame(
                    frame.seq(),
                    at_core::ErrorCode::Unauthorized,
                    "this server has no keys",
                    out,
                );
                return n.map_or(Step::Drop, Step::Reply);
            }
            return Step::Call {
                body: frame.body,
                seal: None,
                running: None,
            };
        };
        let now = auth.now();
        // Under the guard's lock, so that a call is admitted and marked
        // running in one step.
        let mut guard = auth.lock();
        if may_wait && let Some(done) = auth.running.waiter(frame) {
            return Step::Wait(done);
        }
        match guard.admit(frame, origin, now, out) {
            Admission::Reply(n) => Step::Reply(n),
            Admission::Drop => Step::Drop,
            Admission::Call { body, seal } => {
                let running = seal
                    .as_ref()
                    .map(|s| auth.running.start(s.session(), s.seq()));
                Step::Call {
                    body,
                    seal,
                    running,
                }
            }
        }
    }

    /// The last step for an authenticated request: its reply (`len` bytes
    /// of `out`) tagged and remembered. `out` has room for the trailer.
    fn seal(&self, seal: &Seal, origin: &Origin, out: &mut [u8], len: usize) -> usize {
        match &self.auth {
            Some(auth) => {
                let now = auth.now();
                auth.lock().seal(seal, origin, now, out, len).unwrap_or(0)
            }
            None => len,
        }
    }

    /// Answers an admitted request body that calls a sync function (or
    /// none), sealing the reply when `seal` says; the reply's length in
    /// `out` (0: none).
    ///
    /// `read_at` is when the whole frame had been read: a `deadline_ms`
    /// counts from then, and a call whose deadline has passed is answered
    /// `deadline_exceeded` without being called (contract 10.4).
    fn answer(
        &self,
        seq: u32,
        body: &[u8],
        seal: Option<&Seal>,
        origin: &Origin,
        read_at: Instant,
        out: &mut [u8],
    ) -> usize {
        let hints = Hints::of(body);
        self.answer_hinted(seq, body, hints, seal, origin, read_at, out)
    }

    /// [`answer`](Self::answer) for a body whose [`Hints`] the caller
    /// has already taken (so that the body is not passed over twice).
    #[allow(clippy::too_many_arguments)]
    fn answer_hinted(
        &self,
        seq: u32,
        body: &[u8],
        hints: Hints,
        seal: Option<&Seal>,
        origin: &Origin,
        read_at: Instant,
        out: &mut [u8],
    ) -> usize {
        if let Some(calls) = &self.calls {
            calls.fetch_add(1, Ordering::Relaxed);
        }
        let room = Self::room(seal, out);
        if let Some(at) = deadline_of(body, hints, read_at)
            && Instant::now() >= at
        {
            let n = deadline_exceeded(seq, &mut out[..room]);
            return self.sealed(seal, origin, out, n);
        }
        let calls = Logged {
            registry: &self.registry,
            seq,
        };
        let info = self.info(origin);
        let n = CALLER.sync_scope(self.caller(origin), || {
            at_core::respond_body(&calls, &info, seq, body, &mut out[..room]).unwrap_or(0)
        });
        self.sealed(seal, origin, out, n)
    }

    /// [`answer`](Self::answer) for a body that may call an async function,
    /// awaited on a task of its own.
    /// A deadline is checked before the function starts and stops it
    /// (`cancelled`) if it still runs then.
    ///
    /// With `cancel`, an `rpc.cancel` naming the call stops it while it
    /// runs (contract 10.4).
    #[allow(clippy::too_many_arguments)]
    async fn answer_async(
        &self,
        seq: u32,
        body: &[u8],
        seal: Option<&Seal>,
        origin: &Origin,
        read_at: Instant,
        out: &mut [u8],
        cancel: Option<&Cancel>,
    ) -> usize {
        let deadline = deadline_of(body, Hints::of(body), read_at);
        if deadline.is_some_and(|at| Instant::now() >= at) {
            return self.answer(seq, body, seal, origin, read_at, out);
        }
        match self.registry.start_async(body) {
            Some(started) => {
                if let Some(calls) = &self.calls {
                    calls.fetch_add(1, Ordering::Relaxed);
                }
                let room = Self::room(seal, out);
                let n = write_outcome(
                    seq,
                    &finish(started, deadline, cancel, self.caller(origin)).await,
                    &mut out[..room],
                );
                self.sealed(seal, origin, out, n)
            }
            None => self.answer(seq, body, seal, origin, read_at, out),
        }
    }

    /// Runs the call a plain NOTIFY frame's `body` carries, discarding its
    /// outcome (contract 10.2): nothing is ever answered. A body that is
    /// no call (an event, or no valid request) and `rpc.hello` are dropped
    /// unrun; so is every plain NOTIFY to a server requiring
    /// authentication (10.6). An async function runs on a task of its own,
    /// so the connection goes on at once. `scratch` takes the discarded
    /// reply of a sync call.
    fn notify(
        self: &Arc<Self>,
        seq: u32,
        body: &[u8],
        origin: &Origin,
        read_at: Instant,
        runtime: &tokio::runtime::Handle,
        scratch: &mut [u8],
    ) {
        if self.auth.is_some() {
            log_limit::protocol_warn!(
                "a plain notification to a server requiring authentication: dropped"
            );
            return;
        }
        self.run_notification(seq, body, origin, read_at, runtime, scratch, None);
    }

    /// A sealed NOTIFY `frame`: run as [`notify`](Self::notify) runs a
    /// plain one once it passes section 9's checks (session, tag, window:
    /// a replay is never run again); a failure drops it unanswered.
    fn notify_sealed(
        self: &Arc<Self>,
        frame: &Frame<'_>,
        origin: &Origin,
        read_at: Instant,
        runtime: &tokio::runtime::Handle,
        scratch: &mut [u8],
    ) {
        match self.admit(frame, origin, scratch, false) {
            Step::Call { body, running, .. } => {
                let seq = frame.seq();
                self.run_notification(seq, body, origin, read_at, runtime, scratch, running);
            }
            _ => log_limit::protocol_warn!(
                "a sealed notification (seq {}) failed its checks: dropped",
                frame.seq()
            ),
        }
    }

    /// The call of an admitted notification body, run with its outcome
    /// discarded; `running` (sealed ones) is dropped once it is done.
    #[allow(clippy::too_many_arguments)]
    fn run_notification(
        self: &Arc<Self>,
        seq: u32,
        body: &[u8],
        origin: &Origin,
        read_at: Instant,
        runtime: &tokio::runtime::Handle,
        scratch: &mut [u8],
        running: Option<auth::RunningCall>,
    ) {
        match at_core::event::OneWay::parse(body) {
            Ok(at_core::event::OneWay::Call(request)) => {
                if request.func.as_plain() == Some("rpc.hello") {
                    log_limit::protocol_warn!("rpc.hello by notification: dropped unrun");
                    return;
                }
            }
            Ok(at_core::event::OneWay::Event(_)) => {
                log_limit::protocol_warn!("an event sent to a server: dropped");
                return;
            }
            Err(e) => {
                log_limit::protocol_warn!("a notification that is no call ({e}): dropped");
                return;
            }
        }
        if self.registry.calls_async(body) {
            let (shared, body, origin) = (Arc::clone(self), body.to_vec(), *origin);
            // The reply is discarded: room for a short one is enough.
            let mut out = vec![0u8; at_core::MIN_REPLY_BUFFER];
            runtime.spawn(async move {
                shared
                    .answer_async(seq, &body, None, &origin, read_at, &mut out, None)
                    .await;
                drop(running);
            });
        } else {
            self.answer(seq, body, None, origin, read_at, scratch);
            drop(running);
        }
    }

    /// The body's `rpc.cancel` target when this server serves
    /// `rpc.cancel` (no keys: contract 10.4 for plain calls); `None` for
    /// any other body.
    fn cancel_of(&self, body: &[u8]) -> Option<Option<u32>> {
        match self.auth {
            None => cancel_target(body),
            Some(_) => None,
        }
    }

    /// The reply to a REQUEST `rpc.cancel` (seq `seq`) in `out`: `true`
    /// if it `stopped` the call it names, else `false`;
    /// `invalid_arguments` when `target` is no seq. Its length.
    fn answer_cancel(&self, seq: u32, target: Option<u32>, stopped: bool, out: &mut [u8]) -> usize {
        if let Some(calls) = &self.calls {
            calls.fetch_add(1, Ordering::Relaxed);
        }
        let outcome = match target {
            Some(_) => Ok(Value::Bool(stopped)),
            None => Err(HandlerError::new(
                at_core::ErrorCode::InvalidArguments,
                "rpc.cancel takes one seq (1 to 4294967295)",
            )),
        };
        write_outcome(seq, &outcome, out)
    }

    /// Room for a reply in `out`, leaving the trailer's when it is sealed.
    fn room(seal: Option<&Seal>, out: &[u8]) -> usize {
        match seal {
            Some(_) => out.len().saturating_sub(at_core::auth::TRAILER_LEN),
            None => out.len(),
        }
    }

    fn sealed(&self, seal: Option<&Seal>, origin: &Origin, out: &mut [u8], n: usize) -> usize {
        match seal {
            Some(seal) if n > 0 => self.seal(seal, origin, out, n),
            _ => n,
        }
    }
}

/// What to do with a request frame, after [`Shared::admit`].
enum Step<'f> {
    /// Send `len` bytes already written.
    Reply(usize),
    /// Send nothing.
    Drop,
    /// Answer the body (and seal the reply when there is a seal).
    Call {
        /// The request body, without the trailer.
        body: &'f [u8],
        /// For an authenticated request: what sealing its reply needs.
        seal: Option<Seal>,
        /// For an authenticated request: marks the call running until
        /// dropped, which must come after the reply is sealed.
        running: Option<auth::RunningCall>,
    },
    /// The same authenticated call is running (it came over another
    /// connection): wait until this wakes, then admit the frame again
    /// without waiting, for the remembered reply.
    Wait(watch::Receiver<()>),
}

/// The registry, logging each call at debug level (func, seq, time taken).
struct Logged<'r> {
    registry: &'r Registry,
    seq: u32,
}

impl Functions for Logged<'_> {
    fn count(&self) -> usize {
        self.registry.count()
    }

    fn describe(&self, index: usize) -> Option<at_core::Description<'_>> {
        self.registry.describe(index)
    }

    fn call<R>(
        &self,
        func: &str,
        args: &[at_core::Value<'_>],
        reply: impl FnOnce(Reply<'_>) -> R,
    ) -> R {
        if !log::log_enabled!(log::Level::Debug) {
            return self.registry.call(func, args, reply);
        }
        let started = Instant::now();
        self.registry.call(func, args, |outcome| {
            let status = match &outcome {
                Reply::Success(_) => "success".to_owned(),
                Reply::Error(e) => format!("error {}", e.code),
            };
            debug!(
                "call {func} seq {}: {status} in {:?}",
                self.seq,
                started.elapsed()
            );
            reply(outcome)
        })
    }
}
