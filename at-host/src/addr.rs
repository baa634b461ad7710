//! Reading `HOST[:PORT]` as users type it.

use std::net::{IpAddr, SocketAddr};

/// Splits `HOST[:PORT]` into host and port, with `default_port` when the port
/// is missing. Accepts `127.0.0.1`, `localhost:9000`, `[::1]:9000`, `::1`.
///
/// ```
/// use at_host::addr::split_host_port;
/// assert_eq!(split_host_port("10.0.0.2", 16724), Ok(("10.0.0.2".into(), 16724)));
/// assert_eq!(split_host_port("box:80", 16724), Ok(("box".into(), 80)));
/// assert_eq!(split_host_port("[::1]:80", 16724), Ok(("::1".into(), 80)));
/// assert_eq!(split_host_port("::1", 16724), Ok(("::1".into(), 16724)));
/// assert!(split_host_port("box:http", 16724).is_err());
/// ```
pub fn split_host_port(text: &str, default_port: u16) -> Result<(String, u16), String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok((addr.ip().to_string(), addr.port()));
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok((ip.to_string(), default_port));
    }
    let bad = || format!("{text:?} is not HOST[:PORT]");
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(bad)?;
        return match after {
            "" => Ok((host.to_owned(), default_port)),
            _ => {
                let port = after.strip_prefix(':').ok_or_else(bad)?;
                Ok((host.to_owned(), port.parse().map_err(|_| bad())?))
            }
        };
    }
    match text.rsplit_once(':') {
        None if !text.is_empty() => Ok((text.to_owned(), default_port)),
        Some((host, port)) if !host.is_empty() && !host.contains(':') => {
            Ok((host.to_owned(), port.parse().map_err(|_| bad())?))
        }
        _ => Err(bad()),
    }
}

/// Reads a listen address: `IP:PORT`, or `none` for "do not listen".
///
/// ```
/// use at_host::addr::parse_listen;
/// assert_eq!(parse_listen("none"), Ok(None));
/// assert_eq!(parse_listen("127.0.0.1:0"), Ok(Some("127.0.0.1:0".parse().unwrap())));
/// assert!(parse_listen("127.0.0.1").is_err());
/// ```
pub fn parse_listen(text: &str) -> Result<Option<SocketAddr>, String> {
    if text.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|_| format!("{text:?} is not IP:PORT or none"))
}

/// A broker address as users type it: `mqtt://HOST[:PORT]` (port 1883 when
/// missing) or `mqtts://HOST[:PORT]` (TLS, port 8883), optionally followed
/// by `/DEVICE`, the AT name of the device to call (contract section 11).
///
/// ```
/// use at_host::addr::MqttUrl;
/// let url = MqttUrl::parse("mqtt://10.0.0.2/board-1").unwrap();
/// assert_eq!((url.host.as_str(), url.port, url.tls), ("10.0.0.2", 1883, false));
/// assert_eq!(url.device.as_deref(), Some("board-1"));
/// let url = MqttUrl::parse("mqtts://broker.example:9000").unwrap();
/// assert_eq!((url.port, url.tls, url.device), (9000, true, None));
/// assert!(MqttUrl::parse("tcp://x").is_err());
/// assert!(MqttUrl::parse("mqtt://x/bad name").is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MqttUrl {
    /// TLS to the broker (`mqtts://`).
    pub tls: bool,
    /// The broker's host name or IP address.
    pub host: String,
    /// The broker's port.
    pub port: u16,
    /// The device named after the address, if any.
    pub device: Option<String>,
}

/// The broker's port without TLS.
pub const MQTT_PORT: u16 = 1883;
/// The broker's port with TLS.
pub const MQTTS_PORT: u16 = 8883;

impl MqttUrl {
    /// Whether `text` looks like a broker address (starts `mqtt://` or
    /// `mqtts://`), as opposed to `HOST[:PORT]`.
    pub fn is_mqtt(text: &str) -> bool {
        text.starts_with("mqtt://") || text.starts_with("mqtts://")
    }

    /// Reads `mqtt[s]://HOST[:PORT][/DEVICE]`; an error says what is wrong.
    pub fn parse(text: &str) -> Result<MqttUrl, String> {
        let (tls, rest) = if let Some(rest) = text.strip_prefix("mqtts://") {
            (true, rest)
        } else if let Some(rest) = text.strip_prefix("mqtt://") {
            (false, rest)
        } else {
            return Err(format!(
                "{text:?} is not mqtt://HOST[:PORT] or mqtts://HOST[:PORT]"
            ));
        };
        let (authority, device) = match rest.split_once('/') {
            Some((authority, "")) => (authority, None),
            Some((authority, device)) => {
                check_name(device)?;
                (authority, Some(device.to_owned()))
            }
            None => (rest, None),
        };
        let default = if tls { MQTTS_PORT } else { MQTT_PORT };
        let (host, port) = split_host_port(authority, default)?;
        Ok(MqttUrl {
            tls,
            host,
            port,
            device,
        })
    }
}

/// Checks an AT name for MQTT (contract section 11): 1 to 64 ASCII
/// letters, digits, `-`, `_`, `.`.
///
/// ```
/// use at_host::addr::check_name;
/// assert!(check_name("board-1").is_ok());
/// assert!(check_name("").is_err() && check_name("a/b").is_err() && check_name("+").is_err());
/// ```
pub fn check_name(name: &str) -> Result<(), String> {
    let valid = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    match valid {
        true => Ok(()),
        false => Err(format!(
            "{name:?} is not an AT name (1 to 64 of A-Z a-z 0-9 - _ .)"
        )),
    }
}
