//! A small MQTT 5 caller for the section 11 device tests (rumqttc's
//! blocking v5 client): publishes whole AT frames to
//! `at/<device>/req/<name>` and reads what comes back on
//! `at/+/rep/<name>` and `at/+/status`.

#![allow(dead_code)] // each test binary uses its own part of the caller

use std::time::{Duration, Instant};

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, Publish, PublishProperties};
use rumqttc::v5::{Client, Connection, Event, MqttOptions};

use at_core::auth::ClientSession;
use at_tests::{PATIENCE, parse_reply, request};

/// A message the caller received.
#[derive(Clone, Debug)]
pub struct Message {
    /// Its topic.
    pub topic: String,
    /// Its payload.
    pub payload: Vec<u8>,
    /// Whether the broker delivered it as retained.
    pub retain: bool,
    /// Its Correlation Data, if any.
    pub correlation: Option<Vec<u8>>,
}

/// A connected caller named `name`.
pub struct Caller {
    client: Client,
    connection: Connection,
    name: String,
}

impl Caller {
    /// Connects to the broker on 127.0.0.1:`port` and subscribes to its
    /// reply topics and to every status; waits for both SUBACKs.
    pub fn connect(port: u16, name: &str) -> Caller {
        Caller::connect_as(port, name, None)
    }

    /// [`Caller::connect`] with a user name and password.
    pub fn connect_as(port: u16, name: &str, login: Option<(&str, &str)>) -> Caller {
        let mut options = MqttOptions::new(name, "127.0.0.1", port);
        if let Some((user, password)) = login {
            options.set_credentials(user, password);
        }
        options.set_keep_alive(Duration::from_secs(5));
        options.set_max_packet_size(Some(4 << 20));
        let (client, connection) = Client::new(options, 64);
        let mut caller = Caller {
            client,
            connection,
            name: name.to_owned(),
        };
        caller
            .client
            .subscribe(format!("at/+/rep/{name}"), QoS::AtMostOnce)
            .expect("subscribe");
        caller
            .client
            .subscribe("at/+/status", QoS::AtLeastOnce)
            .expect("subscribe");
        let deadline = Instant::now() + PATIENCE;
        let mut acks = 0;
        while acks < 2 {
            match caller.event(deadline) {
                Some(Ok(Event::Incoming(Packet::SubAck(_)))) => acks += 1,
                Some(_) => {}
                None => panic!("no SUBACK within {PATIENCE:?}"),
            }
        }
        caller
    }

    /// Subscribes to everything under `at/` (what the broker carries);
    /// waits for the SUBACK.
    pub fn subscribe_all(&mut self) {
        self.client
            .subscribe("at/#", QoS::AtMostOnce)
            .expect("subscribe");
        let deadline = Instant::now() + PATIENCE;
        loop {
            match self.event(deadline) {
                Some(Ok(Event::Incoming(Packet::SubAck(_)))) => return,
                Some(_) => {}
                None => panic!("no SUBACK within {PATIENCE:?}"),
            }
        }
    }

    /// Every message that came, until none came for `quiet`.
    pub fn drain(&mut self, quiet: Duration) -> Vec<Message> {
        let mut all = Vec::new();
        while let Some(m) = self.next(quiet, |_| true) {
            all.push(m);
        }
        all
    }

    fn event(&mut self, deadline: Instant) -> Option<Result<Event, rumqttc::v5::ConnectionError>> {
        let left = deadline.checked_duration_since(Instant::now())?;
        self.connection.recv_timeout(left).ok()
    }

    /// Publishes `payload` to `at/<device>/req/<name>` at QoS 0, with the
    /// Response Topic and Message Expiry Interval a caller sets, and
    /// `correlation` if given.
    pub fn send(&self, device: &str, payload: &[u8], correlation: Option<&[u8]>) {
        let properties = PublishProperties {
            payload_format_indicator: Some(0),
            message_expiry_interval: Some(5),
            response_topic: Some(format!("at/{device}/rep/{}", self.name)),
            correlation_data: correlation.map(|c| c.to_vec().into()),
            ..Default::default()
        };
        self.client
            .publish_with_properties(
                format!("at/{device}/req/{}", self.name),
                QoS::AtMostOnce,
                false,
                payload.to_vec(),
                properties,
            )
            .expect("publish");
    }

    /// Publishes raw bytes to any topic (junk, a status, a replay).
    pub fn publish_raw(&self, topic: &str, payload: Vec<u8>) {
        self.client
            .publish(topic, QoS::AtMostOnce, false, payload)
            .expect("publish");
    }

    /// The next message on a topic accepted by `want`, within `within`
    /// (connection errors, as when the broker restarts, are waited out).
    pub fn next(&mut self, within: Duration, want: impl Fn(&str) -> bool) -> Option<Message> {
        let deadline = Instant::now() + within;
        loop {
            match self.event(deadline)? {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let message = message(p);
                    if want(&message.topic) {
                        return Some(message);
                    }
                }
                Ok(_) => {}
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// The next reply from `device`, within [`PATIENCE`].
    pub fn reply(&mut self, device: &str) -> Option<Message> {
        let topic = format!("at/{device}/rep/{}", self.name);
        self.next(PATIENCE, |t| t == topic)
    }

    /// Whether no reply from `device` comes within `within`.
    pub fn no_reply(&mut self, device: &str, within: Duration) -> bool {
        let topic = format!("at/{device}/rep/{}", self.name);
        self.next(within, |t| t == topic).is_none()
    }

    /// Calls: sends `payload` every second until a reply comes (AT's own
    /// retransmission over QoS 0), within [`PATIENCE`].
    pub fn call(&mut self, device: &str, payload: &[u8]) -> Option<Message> {
        let topic = format!("at/{device}/rep/{}", self.name);
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            self.send(device, payload, None);
            if let Some(m) = self.next(Duration::from_secs(1), |t| t == topic) {
                return Some(m);
            }
        }
        None
    }

    /// The next status frame of `device` for which `accept` holds, within
    /// [`PATIENCE`].
    pub fn status(&mut self, device: &str, accept: impl Fn(&Message) -> bool) -> Option<Message> {
        let topic = format!("at/{device}/status");
        let deadline = Instant::now() + PATIENCE;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let m = self.next(left, |t| t == topic)?;
            if accept(&m) {
                return Some(m);
            }
        }
        None
    }
}

fn message(p: Publish) -> Message {
    Message {
        topic: String::from_utf8_lossy(&p.topic).into_owned(),
        payload: p.payload.to_vec(),
        retain: p.retain,
        correlation: p
            .properties
            .and_then(|props| props.correlation_data)
            .map(|c| c.to_vec()),
    }
}

/// A session made by hand through the broker: the plain hello (seq 1,
/// `kid`, a fixed client nonce), the server's proof checked under `key`.
pub fn hello(caller: &mut Caller, device: &str, key: &at_host::AuthKey) -> ClientSession {
    let nc: [u8; 16] = std::array::from_fn(|i| 0x10 + i as u8);
    let body = format!(
        r#"{{"func": "rpc.hello", "args": ["{}", "101112131415161718191a1b1c1d1e1f"]}}"#,
        key.kid()
    );
    let reply = caller
        .call(device, &request(1, &body))
        .expect("a hello reply");
    let json: serde_json::Value = serde_json::from_str(&parse_reply(&reply.payload).body).unwrap();
    let r = &json["result"];
    assert!(r.is_object(), "the hello answered: {json}");
    ClientSession::from_hello(
        &key.as_core(),
        &nc,
        r["session"].as_str().unwrap(),
        r["nonce"].as_str().unwrap(),
        r["proof"].as_str().unwrap(),
    )
    .expect("the server's proof verifies")
}

/// A sealed reply's body, checked under `session`.
pub fn opened(session: &ClientSession, m: &Message) -> String {
    let frame = at_core::Frame::parse(&m.payload, u32::MAX).expect("a frame");
    let body = session
        .open_reply(&frame)
        .expect("a sealed reply from the session");
    String::from_utf8(body.to_vec()).unwrap()
}
