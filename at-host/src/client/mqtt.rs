//! The MQTT client, [`MqttClient`]: calls a device by its AT name through
//! a broker (contract section 11). Requests go to `at/<device>/req/<me>`,
//! replies come on `at/<device>/rep/<me>` (subscribed as `at/+/rep/<me>`),
//! one whole frame per QoS 0 message. Everything else is the UDP client's:
//! retransmission of the same bytes under the same seq, the timeouts, the
//! section 9 sessions with a key, notifications; a broker is one more lossy
//! datagram path ([`MqttLink`] under [`UdpClient`]).

use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use log::{debug, warn};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, PublishProperties, SubscribeReasonCode};
use rumqttc::v5::{AsyncClient, ConnectionError, Event, EventLoop};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, watch};

use super::link::Link;
use super::udp::{UdpClient, UdpConfig, UdpStats};
use crate::addr::check_name;
use crate::shared::error::Error;
use crate::shared::mqtt::{
    Backoff, MqttBroker, PUBLISH_OVERHEAD, describe, random_hex, status_topic, topic,
};
use crate::shared::value::{Arg, Value};

/// A client calling one device through an MQTT 5 broker, with the
/// [`UdpClient`]'s API and timing ([`UdpConfig`]): calls are retransmitted
/// until answered or out of time ([`Error::Timeout`], as over UDP); with a
/// key every call is sealed (contract section 9), so the broker sees only
/// sealed frames. Implements [`Caller`](crate::Caller), so the typed API
/// and `#[at_host::service]` clients work over it unchanged.
///
/// The connection to the broker comes back by itself (capped backoff)
/// when the broker goes away; calls made meanwhile time out.
///
/// ```no_run
/// # async fn f() -> Result<(), at_host::Error> {
/// use at_host::{MqttBroker, MqttClient, UdpConfig};
/// let broker = MqttBroker::new("mqtt://127.0.0.1:1883");
/// let board = MqttClient::connect(&broker, "board-1", UdpConfig::default()).await?;
/// let sum: i64 = board.call_as("add", (10, 20)).await?;
/// assert_eq!(sum, 30);
/// # Ok(()) }
/// ```
pub struct MqttClient {
    inner: UdpClient,
    name: String,
    device: String,
    /// At most [`MAX_OUTSTANDING`] calls out at once (contract 11.1 rule 8).
    outstanding: tokio::sync::Semaphore,
}

/// Requests a caller keeps outstanding towards an MQTT peer at most
/// (contract 11.1 rule 8: any MQTT peer may call back).
pub(crate) const MAX_OUTSTANDING: usize = 4;

impl MqttClient {
    /// Connects to `broker` as `broker.name` (default `at-host-<pid>-<random
    /// hex>`) and makes ready to call `device`: waits (at most the config's
    /// `timeout`) for the broker's CONNACK and the subscription to this
    /// client's reply topic. A broker that cannot be reached or refuses the
    /// login or the subscription is an [`Error::Io`].
    pub async fn connect(
        broker: &MqttBroker,
        device: &str,
        config: UdpConfig,
    ) -> Result<MqttClient, Error> {
        check_name(device).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let name = match &broker.name {
            Some(name) => name.clone(),
            None => format!("at-host-{}-{}", std::process::id(), random_hex()),
        };
        let max_packet = at_core::HEADER_LEN as u32
            + config.max_frame
            + at_core::auth::TRAILER_LEN as u32
            + PUBLISH_OVERHEAD;
        let options = broker.options(&name, max_packet)?;
        let (client, eventloop) = AsyncClient::new(options, crate::shared::mqtt::REQUEST_QUEUE);
        let (tx, rx) = mpsc::channel(INCOMING_QUEUE);
        let (ready_tx, mut ready) = watch::channel(Phase::Connecting);
        let status = Arc::new(Mutex::new(DeviceStatus::Unknown));
        let (written_tx, written) = watch::channel(0u64);
        let topics = Topics {
            status: status_topic(&broker.prefix, device),
            replies: topic(&broker.prefix, device, "rep", &name),
            filter: topic(&broker.prefix, "+", "rep", &name),
        };
        let task = tokio::spawn(run(
            eventloop,
            client.clone(),
            topics.clone(),
            tx,
            Arc::clone(&status),
            ready_tx,
            written_tx,
        ));
        let link = MqttLink {
            client,
            device: device.to_owned(),
            requests: topic(&broker.prefix, device, "req", &name),
            replies: topics.replies,
            expiry: u32::try_from(config.timeout.as_millis().div_ceil(1000))
                .unwrap_or(u32::MAX)
                .max(1),
            incoming: tokio::sync::Mutex::new(rx),
            status,
            queued: std::sync::atomic::AtomicU64::new(0),
            written,
            task,
        };
        let timeout = config.timeout;
        let waited = tokio::time::timeout(timeout, async {
            loop {
                match &*ready.borrow_and_update() {
                    Phase::Ready => return Ok(()),
                    Phase::Refused(why) => return Err(why.clone()),
                    // The first attempt failed: say why rather than retry.
                    Phase::Down(why) => return Err(why.clone()),
                    Phase::Connecting => {}
                }
                if ready.changed().await.is_err() {
                    return Err("the broker connection ended".to_owned());
                }
            }
        })
        .await;
        match waited {
            Ok(Ok(())) => {}
            Ok(Err(why)) => {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionRefused,
                    format!("broker {}: {why}", broker.url),
                )
                .into());
            }
            Err(_) => return Err(Error::Timeout(timeout)),
        }
        Ok(MqttClient {
            inner: UdpClient::with_link(Link::Mqtt(link), config),
            name,
            device: device.to_owned(),
            outstanding: tokio::sync::Semaphore::new(MAX_OUTSTANDING),
        })
    }

    /// The devices online on `broker` by their retained status (contract
    /// section 11): subscribes `at/+/status` and collects for `wait`, then
    /// disconnects. Each is its name and its status's `value` (what its
    /// `rpc.info` says), sorted by name; those whose value is `null`
    /// (offline) are left out. A broker that cannot be reached, or refuses
    /// the login or the subscription, is an [`Error::Io`].
    pub async fn discover(
        broker: &MqttBroker,
        wait: std::time::Duration,
    ) -> Result<Vec<(String, serde_json::Value)>, Error> {
        let name = match &broker.name {
            Some(name) => name.clone(),
            None => format!("at-host-{}-{}", std::process::id(), random_hex()),
        };
        let max_packet = at_core::HEADER_LEN as u32 + at_core::DEFAULT_MAX_BODY + PUBLISH_OVERHEAD;
        let options = broker.options(&name, max_packet)?;
        let (client, mut eventloop) = AsyncClient::new(options, 16);
        let filter = status_topic(&broker.prefix, "+");
        let (head, tail) = (format!("{}/", broker.prefix), "/status");
        let until = tokio::time::Instant::now() + wait;
        let mut found = std::collections::BTreeMap::new();
        let refused = |why: String| -> Error {
            io::Error::new(
                io::ErrorKind::ConnectionRefused,
                format!("broker {}: {why}", broker.url),
            )
            .into()
        };
        let mut connected = false;
        while let Ok(event) = tokio::time::timeout_at(until, eventloop.poll()).await {
            match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    connected = true;
                    client
                        .try_subscribe(filter.clone(), QoS::AtMostOnce)
                        .map_err(|e| refused(e.to_string()))?;
                }
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    if let Some(code) = ack
                        .return_codes
                        .iter()
                        .find(|c| !matches!(c, SubscribeReasonCode::Success(_)))
                    {
                        return Err(refused(format!("subscribing {filter} refused: {code:?}")));
                    }
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    let device = std::str::from_utf8(&publish.topic)
                        .ok()
                        .and_then(|t| t.strip_prefix(&head))
                        .and_then(|t| t.strip_suffix(tail))
                        .filter(|d| check_name(d).is_ok());
                    let Some(device) = device else { continue };
                    match status_value(&publish.payload) {
                        Some(serde_json::Value::Object(info)) => {
                            found.insert(device.to_owned(), serde_json::Value::Object(info));
                        }
                        _ => {
                            found.remove(device);
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => return Err(refused(describe(&e))),
            }
        }
        if !connected {
            return Err(Error::Timeout(wait));
        }
        let _ = client.try_disconnect();
        let _ = tokio::time::timeout(std::time::Duration::from_millis(200), eventloop.poll()).await;
        Ok(found.into_iter().collect())
    }

    /// This client's AT name (its MQTT client id).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The device called.
    pub fn device(&self) -> &str {
        &self.device
    }

    /// Counters so far (as [`UdpClient::stats`]).
    pub fn stats(&self) -> UdpStats {
        self.inner.stats()
    }

    /// Calls `func(args)` and waits for its reply, retransmitting as needed
    /// (see [`UdpClient::call`]).
    pub async fn call<A: Arg>(&self, func: &str, args: &[A]) -> Result<Value, Error> {
        let _permit = self.permits(1).await?;
        self.inner.call(func, args).await
    }

    /// `n` of the `MAX_OUTSTANDING` call slots, waited for within the
    /// timeout.
    async fn permits(&self, n: usize) -> Result<tokio::sync::SemaphorePermit<'_>, Error> {
        let timeout = self.inner.timeout();
        match tokio::time::timeout(timeout, self.outstanding.acquire_many(n as u32)).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) => Err(crate::shared::error::ProtocolError::Broken.into()),
            Err(_) => Err(Error::Timeout(timeout)),
        }
    }

    /// [`call`](Self::call) with `"deadline_ms"` (see
    /// [`UdpClient::call_deadline`]).
    pub async fn call_deadline<A: Arg>(
        &self,
        func: &str,
        args: &[A],
        deadline_ms: u32,
    ) -> Result<Value, Error> {
        let _permit = self.permits(1).await?;
        self.inner.call_deadline(func, args, deadline_ms).await
    }

    /// Calls `func` with typed arguments and converts the result (see
    /// [`UdpClient::call_as`]).
    pub async fn call_as<T: DeserializeOwned>(
        &self,
        func: &str,
        args: impl Serialize,
    ) -> Result<T, Error> {
        let _permit = self.permits(1).await?;
        self.inner.call_as(func, args).await
    }

    /// Several calls (see [`UdpClient::call_many`]), 4
    /// at a time, each group within the timeout.
    pub async fn call_many<A: Arg>(
        &self,
        calls: &[(&str, &[A])],
    ) -> Result<Vec<Result<Value, Error>>, Error> {
        let mut results = Vec::with_capacity(calls.len());
        for group in calls.chunks(MAX_OUTSTANDING) {
            let _permit = self.permits(group.len()).await?;
            results.extend(self.inner.call_many(group).await?);
        }
        Ok(results)
    }

    /// Subscribes to the device's `topic` (contract 10.3), as
    /// [`UdpClient::subscribe`] does: events come on this client's reply
    /// topic.
    pub async fn subscribe<T: DeserializeOwned>(
        &self,
        topic: &str,
    ) -> Result<crate::Subscription<'_, T>, Error> {
        self.inner.subscribe(topic).await
    }

    /// [`subscribe`](Self::subscribe) with a lease and an interval of one's
    /// own.
    pub async fn subscribe_with<T: DeserializeOwned>(
        &self,
        topic: &str,
        options: crate::SubscribeOptions,
    ) -> Result<crate::Subscription<'_, T>, Error> {
        self.inner.subscribe_with(topic, options).await
    }

    /// Sends `func(args)` once as a notification (see
    /// [`UdpClient::notify`]); `Ok` once it is written to the broker
    /// (within the timeout), so a process may exit right after.
    pub async fn notify<A: Arg>(&self, func: &str, args: &[A]) -> Result<(), Error> {
        self.inner.notify(func, args).await?;
        self.inner.flush().await
    }
}

impl crate::client::Caller for MqttClient {
    fn call<A: Arg>(
        &self,
        func: &str,
        args: &[A],
    ) -> impl std::future::Future<Output = Result<Value, Error>> + Send {
        MqttClient::call(self, func, args)
    }

    fn call_as<T: DeserializeOwned>(
        &self,
        func: &str,
        args: impl Serialize + Send,
    ) -> impl std::future::Future<Output = Result<T, Error>> + Send {
        MqttClient::call_as(self, func, args)
    }
}

/// Replies queued between the connection's task and the calls; more are
/// dropped (as a full socket buffer drops datagrams).
const INCOMING_QUEUE: usize = 1024;

/// The topics of one client towards one device.
#[derive(Clone)]
struct Topics {
    /// `at/<device>/status`, retained.
    status: String,
    /// `at/<device>/rep/<me>`: the only topic replies are taken from.
    replies: String,
    /// `at/+/rep/<me>`, subscribed.
    filter: String,
}

/// Where the connection is, for [`MqttClient::connect`].
#[derive(Clone, Debug)]
enum Phase {
    Connecting,
    /// Subscribed.
    Ready,
    /// The broker refused the login or the subscription.
    Refused(String),
    /// The connection failed (the task retries).
    Down(String),
}

/// What the device's retained status says (contract section 11).
#[derive(Clone, Copy, Debug)]
enum DeviceStatus {
    /// Nothing retained (yet).
    Unknown,
    /// Online, with its `rpc.info`'s `max_body` if it gave one.
    Online { max_body: Option<u32> },
    /// Its will or its clean disconnect: `value` null.
    Offline,
}

/// The broker path under a [`UdpClient`]: publishes requests, takes the
/// frames the connection's task read from the reply topic.
pub(crate) struct MqttLink {
    client: AsyncClient,
    device: String,
    /// `at/<device>/req/<me>`.
    requests: String,
    /// `at/<device>/rep/<me>`, the Response Topic.
    replies: String,
    /// Message Expiry Interval of each request: the timeout in seconds,
    /// rounded up (no stale calls).
    expiry: u32,
    incoming: tokio::sync::Mutex<mpsc::Receiver<Bytes>>,
    status: Arc<Mutex<DeviceStatus>>,
    /// Publishes queued so far, and (from the task) written to the broker.
    queued: std::sync::atomic::AtomicU64,
    written: watch::Receiver<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MqttLink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MqttLink {
    /// Publishes one frame (QoS 0). A full queue drops it, as a datagram
    /// is dropped: the call retransmits.
    pub(crate) fn send(&self, frame: &[u8]) -> io::Result<()> {
        let properties = PublishProperties {
            payload_format_indicator: Some(0),
            message_expiry_interval: Some(self.expiry),
            response_topic: Some(self.replies.clone()),
            ..PublishProperties::default()
        };
        match self.client.try_publish_with_properties(
            self.requests.clone(),
            QoS::AtMostOnce,
            false,
            frame.to_vec(),
            properties,
        ) {
            Ok(()) => {
                self.queued
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Ok(())
            }
            Err(rumqttc::v5::ClientError::TryRequest(_)) => {
                debug!("mqtt: request queue full: a frame dropped");
                Ok(())
            }
            Err(e) => Err(io::Error::new(io::ErrorKind::BrokenPipe, e.to_string())),
        }
    }

    /// Waits (at most `timeout`) until every frame queued so far has been
    /// written to the broker.
    pub(crate) async fn flush(&self, timeout: std::time::Duration) -> Result<(), Error> {
        let queued = self.queued.load(std::sync::atomic::Ordering::Relaxed);
        let mut written = self.written.clone();
        match tokio::time::timeout(timeout, written.wait_for(|n| *n >= queued)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => {
                Err(io::Error::new(io::ErrorKind::BrokenPipe, "the broker connection ended").into())
            }
            Err(_) => Err(Error::Timeout(timeout)),
        }
    }

    /// The next frame from the reply topic.
    pub(crate) async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        let mut incoming = self.incoming.lock().await;
        match incoming.recv().await {
            Some(payload) => {
                // A longer payload is cut: the frame check drops it.
                let n = payload.len().min(buf.len());
                buf[..n].copy_from_slice(&payload[..n]);
                Ok(n)
            }
            None => Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the broker connection ended",
            )),
        }
    }

    /// Offline devices and frames over the device's `max_body` fail here.
    pub(crate) fn check(&self, frame: &[u8]) -> Result<(), Error> {
        let status = *lock(&self.status);
        match status {
            DeviceStatus::Offline => Err(io::Error::new(
                io::ErrorKind::NotConnected,
                format!("{} is offline (its retained status)", self.device),
            )
            .into()),
            DeviceStatus::Online {
                max_body: Some(max_body),
            } => {
                let Ok(parsed) = at_core::Frame::parse(frame, u32::MAX) else {
                    return Ok(());
                };
                let trailer = match parsed.header.flags & at_core::FLAG_AUTH {
                    0 => 0,
                    _ => at_core::auth::TRAILER_LEN as u32,
                };
                match parsed.header.length > max_body.saturating_add(trailer) {
                    false => Ok(()),
                    true => Err(Error::Remote {
                        code: at_core::ErrorCode::FrameTooLarge.as_str().to_owned(),
                        message: format!(
                            "the request ({} bytes of body) exceeds {}'s max_body ({max_body}): not sent",
                            parsed.header.length, self.device
                        ),
                    }),
                }
            }
            DeviceStatus::Online { max_body: None } | DeviceStatus::Unknown => Ok(()),
        }
    }
}

/// The connection's task: polls the event loop (which reconnects), with
/// capped backoff after a failure; subscribes after each CONNACK (Clean
/// Start: the broker kept nothing); hands reply frames to the calls and
/// reads the device's status.
async fn run(
    mut eventloop: EventLoop,
    client: AsyncClient,
    topics: Topics,
    replies: mpsc::Sender<Bytes>,
    status: Arc<Mutex<DeviceStatus>>,
    ready: watch::Sender<Phase>,
    written: watch::Sender<u64>,
) {
    let mut backoff = Backoff::default();
    // SubAcks since the last CONNACK: the status one, then the replies'.
    let mut acks = 0;
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff.reset();
                acks = 0;
                // Two SUBSCRIBEs, status first: its retained frame comes
                // before the second SUBACK, so a call made once ready sees
                // whether the device is offline.
                for filter in [&topics.status, &topics.filter] {
                    if let Err(e) = client.try_subscribe(filter.clone(), QoS::AtMostOnce) {
                        warn!("mqtt: cannot subscribe {filter}: {e}");
                    }
                }
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                acks += 1;
                let refused = ack
                    .return_codes
                    .iter()
                    .find(|code| !matches!(code, SubscribeReasonCode::Success(_)));
                match (acks, refused) {
                    (1, Some(code)) => {
                        debug!("mqtt: {} not subscribed: {code:?}", topics.status);
                    }
                    (1, None) => {}
                    (_, Some(code)) => {
                        ready.send_replace(Phase::Refused(format!(
                            "subscribing {} refused: {code:?}",
                            topics.filter
                        )));
                    }
                    (_, None) => {
                        ready.send_replace(Phase::Ready);
                    }
                }
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                if publish.topic == topics.replies.as_bytes() {
                    if replies.try_send(publish.payload).is_err() {
                        debug!("mqtt: reply queue full: a frame dropped");
                    }
                } else if publish.topic == topics.status.as_bytes() {
                    *lock(&status) = read_status(&publish.payload);
                    debug!("mqtt: {}: {:?}", topics.status, *lock(&status));
                } else {
                    debug!(
                        "mqtt: ignoring a message on {}",
                        String::from_utf8_lossy(&publish.topic)
                    );
                }
            }
            Ok(Event::Incoming(Packet::Disconnect(d))) => {
                debug!("mqtt: the broker disconnects: {:?}", d.reason_code);
            }
            Ok(Event::Outgoing(rumqttc::Outgoing::Publish(_))) => {
                written.send_modify(|n| *n += 1);
            }
            Ok(_) => {}
            Err(e) => {
                let why = describe(&e);
                debug!("mqtt: connection lost: {why}");
                ready.send_replace(match &e {
                    ConnectionError::ConnectionRefused(_) => Phase::Refused(why),
                    _ => Phase::Down(why),
                });
                tokio::time::sleep(backoff.next()).await;
            }
        }
    }
}

/// The `value` of a status frame (contract section 11), if it is one.
fn status_value(payload: &[u8]) -> Option<serde_json::Value> {
    let frame = at_core::Frame::parse(payload, at_core::DEFAULT_MAX_BODY).ok()?;
    if frame.kind != at_core::Kind::Notify {
        return None;
    }
    let mut body = serde_json::from_slice::<serde_json::Value>(frame.body).ok()?;
    if body.get("topic").and_then(serde_json::Value::as_str) != Some("rpc.status") {
        return None;
    }
    body.get_mut("value").map(serde_json::Value::take)
}

/// What a retained status frame says: its `value` null is offline, an
/// object online (with `max_body`); an empty or bad frame, unknown.
fn read_status(payload: &[u8]) -> DeviceStatus {
    match status_value(payload) {
        Some(serde_json::Value::Null) => DeviceStatus::Offline,
        Some(serde_json::Value::Object(info)) => DeviceStatus::Online {
            max_body: info
                .get("max_body")
                .and_then(serde_json::Value::as_u64)
                .and_then(|n| u32::try_from(n).ok()),
        },
        _ => DeviceStatus::Unknown,
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
