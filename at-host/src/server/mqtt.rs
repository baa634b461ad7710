//! Serving through an MQTT 5 broker (contract section 11): the server
//! connects out as its AT name (Clean Start, no session kept, a will that
//! marks it offline), takes one whole frame per message on
//! `at/<name>/req/+`, and answers each on `at/<name>/rep/<caller>` through
//! the datagram rules of [`Datagrams`] (the UDP server's: the reply cache
//! keyed by (caller, seq), the guard with keys, the notification repeat
//! memory). A broker's redelivery is one more retransmission.
//!
//! The caches key peers by address: each caller name stands for an
//! address of its own in `100::/64` (RFC 6666's discard prefix, never a
//! real peer), from a keyed hash of the name; that address is what
//! [`caller_addr`](crate::caller_addr) shows for an MQTT call.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use log::{debug, info, warn};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{LastWill, Packet, PublishProperties, SubscribeReasonCode};
use rumqttc::v5::{AsyncClient, Event, EventLoop};
use tokio::sync::{mpsc, watch};

use super::Shared;
use super::udp::{Datagrams, Outlet};
use crate::shared::mqtt::{Backoff, MqttBroker, PUBLISH_OVERHEAD, describe, peer_of, status_topic};

/// How long a clean shutdown waits for the broker to take the offline
/// status before it closes the connection anyway.
const GOODBYE: Duration = Duration::from_secs(2);

/// Correlation Data copied into a reply: at most this many bytes (contract
/// 11.1 rule 11); longer is not copied.
const MAX_CORRELATION: usize = 8;

/// A server's broker link, checked and ready to run.
pub(super) struct Link {
    name: String,
    prefix: String,
    client: AsyncClient,
    eventloop: EventLoop,
    url: String,
}

/// Checks `broker` for a server named `name` (the name is valid, the URL
/// reads) and sets up the connection (it is made by [`serve`]).
pub(super) fn link(broker: &MqttBroker, name: &str, max_frame: u32) -> io::Result<Link> {
    let max_packet = at_core::HEADER_LEN as u32
        + max_frame
        + at_core::auth::TRAILER_LEN as u32
        + PUBLISH_OVERHEAD;
    let mut options = broker.options(name, max_packet)?;
    let status = status_topic(&broker.prefix, name);
    options.set_last_will(LastWill::new(
        status,
        status_frame("null"),
        QoS::AtLeastOnce,
        true,
        None,
    ));
    let (client, eventloop) = AsyncClient::new(options, crate::shared::mqtt::REQUEST_QUEUE);
    Ok(Link {
        name: name.to_owned(),
        prefix: broker.prefix.clone(),
        client,
        eventloop,
        url: broker.url.clone(),
    })
}

/// The status frame (contract section 11): a NOTIFY with seq 0 and body
/// `{"topic": "rpc.status", "n": 0, "value": VALUE}`.
fn status_frame(value: &str) -> Vec<u8> {
    let body = format!("{{\"topic\": \"rpc.status\", \"n\": 0, \"value\": {value}}}");
    let mut frame = vec![0u8; at_core::HEADER_LEN + body.len()];
    match at_core::encode_frame(at_core::Kind::Notify, 0, body.as_bytes(), &mut frame) {
        Ok(n) => frame.truncate(n),
        Err(_) => frame.clear(),
    }
    frame
}

/// What `rpc.info` answers a caller over MQTT: its "result" object as
/// JSON text (`null` if it cannot be had).
fn info_json(shared: &Shared) -> String {
    let origin = at_core::auth::Origin {
        transport: at_core::auth::Transport::Datagram,
        peer: None,
        broadcast: false,
    };
    let body = br#"{"func": "rpc.info", "args": []}"#;
    let mut out = vec![0u8; at_core::MIN_REPLY_BUFFER.max(4096)];
    let n = shared.answer(1, body, None, &origin, Instant::now(), &mut out);
    let result = at_core::Frame::parse(&out[..n], u32::MAX)
        .ok()
        .and_then(|frame| serde_json::from_slice::<serde_json::Value>(frame.body).ok())
        .and_then(|mut reply| reply.get_mut("result").map(serde_json::Value::take));
    match result {
        Some(info) => info.to_string(),
        None => "null".to_owned(),
    }
}

/// Where the reply to one message goes: its caller's reply topic, with the
/// request's Correlation Data.
#[derive(Clone)]
struct MqttOutlet {
    client: AsyncClient,
    topic: Arc<str>,
    correlation: Option<Bytes>,
}

impl Outlet for MqttOutlet {
    fn send(&self, reply: &[u8], _runtime: &tokio::runtime::Handle) {
        self.publish(reply);
    }
}

impl MqttOutlet {
    /// Publishes `reply` (QoS 0): whether it was queued.
    fn publish(&self, reply: &[u8]) -> bool {
        let properties = PublishProperties {
            payload_format_indicator: Some(0),
            correlation_data: self.correlation.clone(),
            ..PublishProperties::default()
        };
        if let Err(e) = self.client.try_publish_with_properties(
            &*self.topic,
            QoS::AtMostOnce,
            false,
            reply.to_vec(),
            properties,
        ) {
            // Lost as a datagram is: the caller retransmits and gets the
            // remembered reply.
            debug!("mqtt: reply to {} not sent: {e}", self.topic);
            return false;
        }
        true
    }
}

/// Callers whose reply topics are remembered for their events at most;
/// past this the table starts again (their subscriptions' events are
/// dropped until they call again).
const MAX_ROUTES: usize = 4096;

/// The reply topic of `peer`, remembered for its events.
fn remember(
    routes: &std::sync::Mutex<HashMap<SocketAddr, Arc<str>>>,
    peer: SocketAddr,
    topic: impl FnOnce() -> String,
) -> Arc<str> {
    let mut routes = lock(routes);
    if let Some(known) = routes.get(&peer) {
        return Arc::clone(known);
    }
    if routes.len() >= MAX_ROUTES {
        routes.clear();
    }
    let topic: Arc<str> = topic().into();
    routes.insert(peer, Arc::clone(&topic));
    topic
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs the broker link of `shared`'s server until `stop`: connects (and
/// reconnects with capped backoff), subscribes `at/<name>/req/+`, publishes
/// the online status (retained) after each CONNACK, answers every request,
/// and on shutdown publishes the offline status before disconnecting.
/// `ready` turns true once subscribed and the status is taken.
pub(super) async fn serve(
    link: Link,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    alive: mpsc::Sender<()>,
    ready: watch::Sender<bool>,
) {
    let Link {
        name,
        prefix,
        client,
        mut eventloop,
        url,
    } = link;
    let runtime = tokio::runtime::Handle::current();
    let mut datagrams = Datagrams::new(Arc::clone(&shared), runtime, "mqtt");
    let requests = format!("{prefix}/{name}/req/");
    let filter = format!("{requests}+");
    let status = status_topic(&prefix, &name);
    let online = status_frame(&info_json(&shared));
    let hasher = RandomState::new();
    // Where the events of each caller's subscriptions go (its reply topic).
    let routes: Arc<std::sync::Mutex<HashMap<SocketAddr, Arc<str>>>> = Arc::default();
    let relay = {
        let (routes, client) = (Arc::clone(&routes), client.clone());
        move |peer: SocketAddr, frame: &[u8]| -> Option<bool> {
            let topic = lock(&routes).get(&peer).cloned()?;
            let outlet = MqttOutlet {
                client: client.clone(),
                topic,
                correlation: None,
            };
            Some(outlet.publish(frame))
        }
    };
    shared.hub.set_relay(Some(Arc::new(relay)));
    let mut backoff = Backoff::default();
    let mut warned = false;
    // Whether the status publish (QoS 1) still awaits its PUBACK.
    let mut status_pending = false;
    let mut subscribed = false;
    loop {
        let event = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            event = eventloop.poll() => event,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff.reset();
                if warned {
                    info!("mqtt: connected to {url} again");
                }
                warned = false;
                subscribed = false;
                status_pending = true;
                if let Err(e) = client.try_subscribe(filter.clone(), QoS::AtMostOnce) {
                    warn!("mqtt: cannot subscribe {filter}: {e}");
                }
                let announced =
                    client.try_publish(status.clone(), QoS::AtLeastOnce, true, online.clone());
                if let Err(e) = announced {
                    warn!("mqtt: cannot publish the status: {e}");
                }
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                match ack
                    .return_codes
                    .iter()
                    .find(|c| !matches!(c, SubscribeReasonCode::Success(_)))
                {
                    Some(code) => warn!("mqtt: the broker refused {filter}: {code:?}"),
                    None => subscribed = true,
                }
                if subscribed && !status_pending {
                    ready.send_replace(true);
                }
            }
            Ok(Event::Incoming(Packet::PubAck(_))) => {
                status_pending = false;
                if subscribed {
                    ready.send_replace(true);
                }
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                let read_at = Instant::now();
                let Some(caller) = publish
                    .topic
                    .strip_prefix(requests.as_bytes())
                    .and_then(|c| std::str::from_utf8(c).ok())
                    .filter(|c| crate::addr::check_name(c).is_ok())
                else {
                    debug!(
                        "mqtt: a message on {}: dropped",
                        String::from_utf8_lossy(&publish.topic)
                    );
                    continue;
                };
                let correlation = publish
                    .properties
                    .as_ref()
                    .and_then(|p| p.correlation_data.clone())
                    .filter(|c| c.len() <= MAX_CORRELATION);
                let peer = peer_of(&hasher, caller);
                let topic = remember(&routes, peer, || format!("{prefix}/{name}/rep/{caller}"));
                let outlet = MqttOutlet {
                    client: client.clone(),
                    topic,
                    correlation,
                };
                datagrams.handle(&publish.payload, peer, false, read_at, &outlet);
            }
            Ok(Event::Incoming(Packet::Disconnect(d))) => {
                debug!("mqtt: the broker disconnects: {:?}", d.reason_code);
            }
            Ok(_) => {}
            Err(e) => {
                let pause = backoff.next();
                let why = describe(&e);
                if warned {
                    debug!("mqtt: {url}: {why}; again in {pause:?}");
                } else {
                    warn!("mqtt: {url}: {why}; reconnecting (capped backoff)");
                    warned = true;
                }
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => break,
                    () = tokio::time::sleep(pause) => {}
                }
            }
        }
    }
    shared.hub.set_relay(None);
    goodbye(&client, &mut eventloop, &status).await;
    drop(alive);
}

/// A clean disconnect: the offline status (retained, QoS 1) first, then
/// DISCONNECT (so the broker drops the will), within [`GOODBYE`].
async fn goodbye(client: &AsyncClient, eventloop: &mut EventLoop, status: &str) {
    if client
        .try_publish(status, QoS::AtLeastOnce, true, status_frame("null"))
        .is_err()
    {
        return;
    }
    let until = tokio::time::Instant::now() + GOODBYE;
    let mut disconnecting = false;
    while let Ok(event) = tokio::time::timeout_at(until, eventloop.poll()).await {
        match event {
            Ok(Event::Incoming(Packet::PubAck(_))) if !disconnecting => {
                disconnecting = true;
                if client.try_disconnect().is_err() {
                    return;
                }
            }
            Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => return,
            Ok(_) => {}
            Err(_) => return,
        }
    }
}
