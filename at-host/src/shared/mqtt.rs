//! What the MQTT client and server sides share (contract section 11):
//! [`MqttBroker`] (where the broker is and how to log in), the topic
//! names, the connect options, and the reconnect backoff.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::io;
use std::net::{Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use rumqttc::v5::MqttOptions;

use crate::addr::{MqttUrl, check_name};

/// A broker to reach AT peers through (contract section 11).
///
/// ```
/// let broker = at_host::MqttBroker::new("mqtt://127.0.0.1:1883").user("fleet", "secret");
/// assert_eq!(broker.prefix, "at");
/// ```
#[derive(Clone)]
pub struct MqttBroker {
    /// `mqtt://HOST[:PORT]` (port 1883 when missing) or `mqtts://HOST[:PORT]`
    /// (TLS, port 8883); a `/DEVICE` after it is ignored here.
    pub url: String,
    /// This participant's AT name, also its MQTT client id (1 to 64 of
    /// `A-Z a-z 0-9 - _ .`). Default: a client is `at-host-<pid>-<random
    /// hex>`, a server its [`ServerConfig::name`](crate::ServerConfig::name).
    pub name: Option<String>,
    /// The broker user, if it asks for one.
    pub user: Option<String>,
    /// The broker password (with `user`); never shown by `Debug`.
    pub password: Option<String>,
    /// With `mqtts://`: a PEM file of the CA certificates to trust
    /// (default: the system's).
    pub ca_file: Option<PathBuf>,
    /// The topic prefix, one per fleet. Default `at`.
    pub prefix: String,
}

impl std::fmt::Debug for MqttBroker {
    /// Everything but the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttBroker")
            .field("url", &self.url)
            .field("name", &self.name)
            .field("user", &self.user)
            .field("ca_file", &self.ca_file)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl MqttBroker {
    /// The broker at `url`, anonymous, prefix `at`, default name.
    pub fn new(url: impl Into<String>) -> MqttBroker {
        MqttBroker {
            url: url.into(),
            name: None,
            user: None,
            password: None,
            ca_file: None,
            prefix: "at".into(),
        }
    }

    /// With this AT name (and MQTT client id).
    pub fn name(mut self, name: impl Into<String>) -> MqttBroker {
        self.name = Some(name.into());
        self
    }

    /// With a broker user and password.
    pub fn user(mut self, user: impl Into<String>, password: impl Into<String>) -> MqttBroker {
        self.user = Some(user.into());
        self.password = Some(password.into());
        self
    }

    /// The parsed URL; an error names what is wrong.
    pub(crate) fn parsed(&self) -> io::Result<MqttUrl> {
        MqttUrl::parse(&self.url).map_err(invalid)
    }

    /// The connect options for client id `name` (checked), announcing
    /// `max_packet` as the largest packet this side takes.
    pub(crate) fn options(&self, name: &str, max_packet: u32) -> io::Result<MqttOptions> {
        check_name(name).map_err(invalid)?;
        check_prefix(&self.prefix)?;
        let url = self.parsed()?;
        let mut options = MqttOptions::new(name, url.host.clone(), url.port);
        options
            .set_clean_start(true)
            .set_session_expiry_interval(None)
            .set_keep_alive(KEEP_ALIVE)
            .set_connection_timeout(CONNECT_TIMEOUT_SECS)
            .set_request_channel_capacity(REQUEST_QUEUE)
            .set_outgoing_inflight_upper_limit(OUTGOING_INFLIGHT)
            .set_max_packet_size(Some(max_packet));
        match (&self.user, &self.password) {
            (Some(user), password) => {
                options.set_credentials(user.clone(), password.clone().unwrap_or_default());
            }
            (None, Some(_)) => return Err(invalid("a broker password needs a user".into())),
            (None, None) => {}
        }
        if url.tls {
            options.set_transport(tls::transport(self.ca_file.as_deref())?);
        } else if self.ca_file.is_some() {
            return Err(invalid("a CA file is for mqtts:// only".into()));
        }
        Ok(options)
    }
}

/// Keep-alive announced to the broker: it closes a connection silent 1.5
/// times this long, and so publishes the will of a server gone silent.
const KEEP_ALIVE: Duration = Duration::from_secs(30);

/// Seconds to wait for the broker's CONNACK.
const CONNECT_TIMEOUT_SECS: u64 = 5;

/// QoS 1 publishes awaiting their PUBACK at most. Only the retained
/// status frames are QoS 1 (a handful at once); rumqttc's default,
/// `u16::MAX`, preallocates a slot per packet id: about 13 MB per
/// connection, which a fleet of 1,000 connections in one process (the
/// fleet bench) cannot afford.
const OUTGOING_INFLIGHT: u16 = 16;

/// Requests (publishes) queued for the connection; a full queue drops the
/// next one as a datagram is dropped (a call retransmits).
pub(crate) const REQUEST_QUEUE: usize = 256;

/// Room in a PUBLISH for what is not the frame: the fixed header, the
/// topic (two 64-character names and the prefix) and the properties.
pub(crate) const PUBLISH_OVERHEAD: u32 = 512;

/// The topic `<prefix>/<callee>/<dir>/<caller>` (`dir` is `req` or `rep`).
pub(crate) fn topic(prefix: &str, callee: &str, dir: &str, caller: &str) -> String {
    format!("{prefix}/{callee}/{dir}/{caller}")
}

/// The status topic of `name`.
pub(crate) fn status_topic(prefix: &str, name: &str) -> String {
    format!("{prefix}/{name}/status")
}

/// A prefix is one or more topic levels without wildcards.
fn check_prefix(prefix: &str) -> io::Result<()> {
    let ok = !prefix.is_empty()
        && !prefix.contains(['+', '#', '\0'])
        && prefix.split('/').all(|level| !level.is_empty());
    match ok {
        true => Ok(()),
        false => Err(invalid(format!("{prefix:?} is not a topic prefix"))),
    }
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

/// Capped exponential backoff between reconnects (0.5 s doubling to 30
/// s), reset after a CONNACK.
#[derive(Debug)]
pub(crate) struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            next: BACKOFF_FIRST,
        }
    }
}

/// The first pause after losing the broker.
const BACKOFF_FIRST: Duration = Duration::from_millis(500);
/// The longest pause.
const BACKOFF_CAP: Duration = Duration::from_secs(30);

impl Backoff {
    /// The pause before the next attempt (doubling the one after).
    pub(crate) fn next(&mut self) -> Duration {
        let pause = self.next;
        self.next = (self.next * 2).min(BACKOFF_CAP);
        pause
    }

    /// After a CONNACK: the next loss waits the first pause again.
    pub(crate) fn reset(&mut self) {
        self.next = BACKOFF_FIRST;
    }
}

/// A connection error in words.
pub(crate) fn describe(e: &rumqttc::v5::ConnectionError) -> String {
    match e {
        rumqttc::v5::ConnectionError::ConnectionRefused(code) => {
            format!("connection refused: {code:?}")
        }
        other => other.to_string(),
    }
}

/// A random 32-bit hex string, for default names.
pub(crate) fn random_hex() -> String {
    let mut bytes = [0u8; 4];
    if getrandom::fill(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        bytes = nanos.to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(feature = "mqtts")]
mod tls {
    //! `mqtts://`: rustls (with the ring provider) to the broker.
    use std::io;
    use std::path::Path;
    use std::sync::Arc;

    use rumqttc::{TlsConfiguration, Transport};

    /// The TLS transport, trusting `ca_file`'s certificates (PEM) or the
    /// system's.
    pub(super) fn transport(ca_file: Option<&Path>) -> io::Result<Transport> {
        let mut roots = rustls::RootCertStore::empty();
        match ca_file {
            Some(path) => {
                let pem = std::fs::read(path)
                    .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
                let mut reader = std::io::BufReader::new(&pem[..]);
                for cert in rustls_pemfile::certs(&mut reader) {
                    roots.add(cert?).map_err(|e| {
                        io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("{}: {e}", path.display()),
                        )
                    })?;
                }
                if roots.is_empty() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{}: no PEM certificate in it", path.display()),
                    ));
                }
            }
            None => {
                for cert in rustls_native_certs::load_native_certs().certs {
                    let _ = roots.add(cert);
                }
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(io::Error::other)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Transport::Tls(TlsConfiguration::Rustls(Arc::new(config))))
    }
}

#[cfg(not(feature = "mqtts"))]
mod tls {
    //! Built without the `mqtts` feature: no TLS.
    use std::io;
    use std::path::Path;

    use rumqttc::Transport;

    /// Always an error: this build has no TLS.
    pub(super) fn transport(_ca_file: Option<&Path>) -> io::Result<Transport> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "mqtts:// needs at-host built with the `mqtts` feature",
        ))
    }
}

/// The address standing for caller `name` in the caches: `100::/64` and a
/// keyed hash of the name, port 0.
pub(crate) fn peer_of(hasher: &RandomState, name: &str) -> SocketAddr {
    let h = hasher.hash_one(name);
    let ip = Ipv6Addr::new(
        0x100,
        0,
        0,
        0,
        (h >> 48) as u16,
        (h >> 32) as u16,
        (h >> 16) as u16,
        h as u16,
    );
    SocketAddr::from((ip, 0))
}

/// Whether `peer` is an address [`peer_of`] made: an MQTT caller, not a
/// UDP peer (the server's subscriptions give it no credit: contract 11).
pub(crate) fn is_mqtt_peer(peer: &SocketAddr) -> bool {
    match peer {
        SocketAddr::V6(v6) => v6.ip().segments()[..4] == [0x100, 0, 0, 0] && v6.port() == 0,
        SocketAddr::V4(_) => false,
    }
}
