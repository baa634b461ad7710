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
