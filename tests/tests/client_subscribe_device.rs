//! The at-host clients' subscriptions against the device servers (the
//! `TcpServer`/`UdpServer` and at-core subscription table a board runs, on
//! the desktop over std-embedded-nal): plain TCP and UDP, where UDP renews
//! on its credit and its padded subscribe buys the event bytes (contract
//! 10.8 rule 1), and sealed on both (events 0x0018 under K_rep).

use std::time::Duration;

use at_embedded_example::desktop::{self, Running};
use at_host::{AuthKey, Client, UdpClient, UdpConfig, Update};
use at_tests::PATIENCE;

const KEY: &str = "watch:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

fn loopback() -> std::net::SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn start() -> Running {
    desktop::start(Some(loopback()), Some(loopback())).expect("servers start")
}

fn start_sealed() -> Running {
    let keys: &'static [at_core::auth::Key<'static>] =
        Box::leak(Box::new([at_core::auth::Key::parse(KEY).unwrap()]));
    desktop::start_with_keys(
        Some(loopback()),
        Some(loopback()),
        &at_core::calculator::CALCULATOR,
        keys,
    )
    .expect("servers start")
}

/// `sub.next()`, bounded, an event expected.
async fn event(sub: &mut at_host::Subscription<'_, i64>) -> (u32, i64) {
    match tokio::time::timeout(PATIENCE, sub.next())
        .await
        .expect("an update in time")
        .expect("an update")
    {
        Update::Event { n, value } => (n, value),
        other => panic!("an event, not {other:?}"),
    }
}

/// Makes a call, then takes the event of topic `calls` it causes: `count`
/// times, contiguous `n`, the count growing.
async fn calls_and_events<C: at_host::Caller>(
    caller: &C,
    sub: &mut at_host::Subscription<'_, i64>,
    count: u32,
) {
    let mut last = None;
    for n in 1..=count {
        let sum: i64 = caller.call_as("add", (n, 1)).await.unwrap();
        assert_eq!(sum, i64::from(n) + 1);
        let (got, value) = event(sub).await;
        assert_eq!(got, n);
        assert!(last.is_none_or(|l| value > l), "{value} after {last:?}");
        last = Some(value);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_events_from_a_device() {
    let running = start();
    let client = Client::connect(running.tcp_addr().unwrap(), PATIENCE)
        .await
        .unwrap();
    let mut sub = client.subscribe::<i64>("calls").await.unwrap();
    assert_eq!(sub.granted().credit, None);
    calls_and_events(&client, &mut sub, 5).await;
    drop(sub);
    running.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_events_from_a_device_past_its_credit() {
    let running = start();
    let client = UdpClient::connect(running.udp_addr().unwrap(), UdpConfig::default())
        .await
        .unwrap();
    let mut sub = client.subscribe::<i64>("calls").await.unwrap();
    let credit = sub.granted().credit.expect("plain UDP has a credit");
    // Twice the credit: only renewals (at half of it) keep it going.
    calls_and_events(&client, &mut sub, 2 * credit + 2).await;
    drop(sub);
    running.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_events_from_a_device_on_both_transports() {
    let running = start_sealed();
    let key = AuthKey::parse(KEY).unwrap();
    let tcp = Client::connect(running.tcp_addr().unwrap(), PATIENCE)
        .await
        .unwrap()
        .with_key(key.clone());
    let mut sub = tcp.subscribe::<i64>("calls").await.unwrap();
    calls_and_events(&tcp, &mut sub, 3).await;
    drop(sub);
    let config = UdpConfig {
        key: Some(key),
        ..UdpConfig::default()
    };
    let udp = UdpClient::connect(running.udp_addr().unwrap(), config)
        .await
        .unwrap();
    let mut sub = udp.subscribe::<i64>("uptime").await.unwrap();
    // A state topic: event 1 at once, then one a second.
    let (n, first) = event(&mut sub).await;
    assert_eq!(n, 1);
    let (n, second) = tokio::time::timeout(Duration::from_secs(5), event(&mut sub))
        .await
        .unwrap();
    assert_eq!(n, 2);
    assert!(second > first);
    drop(sub);
    running.stop();
}
