//! For `target_os = "none"` builds only: hands cortex-m-rt the board's
//! memory map (`memory.x`) and links the firmware binary with its linker
//! scripts; and reads the firmware's key, `AT_KEY` (`KID:HEX`), checks it
//! and hands it to the firmware (`cfg(at_auth)`, `AT_FIRMWARE_KEY`).
//! Without `AT_KEY` authentication is off. With `--features mqtt`: reads
//! the broker, `AT_MQTT_BROKER` (`a.b.c.d:port`, default `10.0.2.2:1883`,
//! the host as QEMU's user network shows it), and checks `AT_NAME` is a
//! name MQTT and section 11 accept (`AT_FIRMWARE_MQTT_BROKER`), and the
//! broker login, `AT_MQTT_USER` with `AT_MQTT_PASSWORD` (`cfg(at_mqtt_login)`).
//! Host builds are untouched.

use std::path::PathBuf;
use std::{env, fs};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=memory.x");
    println!("cargo:rerun-if-env-changed=AT_KEY");
    println!("cargo:rerun-if-env-changed=AT_CALL_HOME");
    println!("cargo:rerun-if-env-changed=AT_MQTT_BROKER");
    println!("cargo:rerun-if-env-changed=AT_MQTT_USER");
    println!("cargo:rerun-if-env-changed=AT_MQTT_PASSWORD");
    println!("cargo:rustc-check-cfg=cfg(at_mqtt_login)");
    println!("cargo:rerun-if-env-changed=AT_NAME");
    println!("cargo:rustc-check-cfg=cfg(at_auth)");
    println!("cargo:rustc-check-cfg=cfg(at_call_home)");
    if env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("none") {
        return;
    }
    if let Ok(key) = env::var("AT_KEY").map(|k| k.trim().to_owned())
        && !key.is_empty()
    {
        if env::var_os("CARGO_FEATURE_NET").is_none() && env::var_os("CARGO_FEATURE_MQTT").is_none()
        {
            panic!(
                "AT_KEY: authentication is built into the networked firmware only (--features net or mqtt)"
            );
        }
        if let Err(why) = check_key(&key) {
            // Never print the key itself.
            panic!("AT_KEY: {why}");
        }
        println!("cargo:rustc-cfg=at_auth");
        println!("cargo:rustc-env=AT_FIRMWARE_KEY={key}");
    }
    if let Ok(home) = env::var("AT_CALL_HOME").map(|h| h.trim().to_owned())
        && !home.is_empty()
    {
        if env::var_os("CARGO_FEATURE_NET").is_none() {
            panic!("AT_CALL_HOME: calling home needs the network (--features net)");
        }
        if env::var("AT_KEY").is_ok_and(|k| !k.trim().is_empty()) {
            panic!(
                "AT_CALL_HOME with AT_KEY: a board calling home does not authenticate to its host yet"
            );
        }
        if home.parse::<std::net::SocketAddrV4>().is_err() {
            panic!("AT_CALL_HOME is HOST:PORT with an IPv4 address, e.g. 10.0.2.2:16724");
        }
        println!("cargo:rerun-if-env-changed=AT_NAME");
        let name = env::var("AT_NAME").unwrap_or_else(|_| "mps2-an386".into());
        println!("cargo:rustc-cfg=at_call_home");
        println!("cargo:rustc-env=AT_FIRMWARE_CALL_HOME={home}");
        println!("cargo:rustc-env=AT_FIRMWARE_BOOT_LINE=boot {name}");
    }
    mqtt();
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    fs::write(out.join("memory.x"), include_bytes!("memory.x")).expect("write memory.x");
    // cortex-m-rt's `device` feature includes device.x (weak aliases for
    // named interrupt handlers); the board module names none.
    fs::write(out.join("device.x"), b"/* no named interrupt handlers */\n")
        .expect("write device.x");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rustc-link-arg-bins=-Tlink.x");
    if env::var_os("CARGO_FEATURE_DEFMT").is_some() {
        println!("cargo:rustc-link-arg-bins=-Tdefmt.x");
    }
}

/// `AT_MQTT_BROKER` and `AT_NAME` for the MQTT firmware.
fn mqtt() {
    let broker = env::var("AT_MQTT_BROKER")
        .map(|b| b.trim().to_owned())
        .unwrap_or_default();
    if env::var_os("CARGO_FEATURE_MQTT").is_none() {
        for var in ["AT_MQTT_BROKER", "AT_MQTT_USER", "AT_MQTT_PASSWORD"] {
            if env::var(var).is_ok_and(|v| !v.trim().is_empty()) {
                panic!("{var}: the MQTT firmware is built with --features mqtt");
            }
        }
        return;
    }
    let broker = if broker.is_empty() {
        println!(
            "cargo:warning=AT_MQTT_BROKER not set: the firmware connects to 10.0.2.2:1883 (the host under QEMU)"
        );
        "10.0.2.2:1883".to_owned()
    } else {
        broker
    };
    match broker.parse::<std::net::SocketAddrV4>() {
        Ok(addr) if addr.port() != 0 && !addr.ip().is_unspecified() => {}
        _ => panic!(
            "AT_MQTT_BROKER is a.b.c.d:port with an IPv4 address and a port, e.g. 10.0.2.2:1883"
        ),
    }
    if let Ok(name) = env::var("AT_NAME") {
        let ok = (1..=64).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !ok {
            panic!("AT_NAME over MQTT is 1 to 64 of A-Z a-z 0-9 - _ . (its client id and topics)");
        }
    }
    println!("cargo:rustc-env=AT_FIRMWARE_MQTT_BROKER={broker}");
    let user = env::var("AT_MQTT_USER").unwrap_or_default();
    let password = env::var("AT_MQTT_PASSWORD").unwrap_or_default();
    match (user.is_empty(), password.is_empty()) {
        (true, true) => {}
        (false, false) if user.len() <= 64 && password.len() <= 64 => {
            // Never printed: rustc-env lines are not shown.
            println!("cargo:rustc-cfg=at_mqtt_login");
            println!("cargo:rustc-env=AT_FIRMWARE_MQTT_USER={user}");
            println!("cargo:rustc-env=AT_FIRMWARE_MQTT_PASSWORD={password}");
        }
        (false, false) => panic!("AT_MQTT_USER and AT_MQTT_PASSWORD are at most 64 bytes each"),
        _ => panic!("AT_MQTT_USER and AT_MQTT_PASSWORD go together"),
    }
}

/// `KID:HEX`: a key id of 1 to 32 of `A-Z a-z 0-9 - _ .`, and 64
/// hexadecimal digits.
fn check_key(key: &str) -> Result<(), &'static str> {
    let (kid, hex) = key.split_once(':').ok_or("a key is KID:HEX")?;
    let kid_ok = (1..=32).contains(&kid.len())
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !kid_ok {
        return Err("a key id is 1 to 32 of A-Z a-z 0-9 - _ .");
    }
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("a key is 64 hexadecimal digits");
    }
    Ok(())
}
