//! `#[at_host::service]` services that declare topics (contract 10.3):
//! the generated `...Topics` makes the handle with the declared name and
//! doc, the registration serves it (listed by `rpc.topics`, `events` in
//! `ext`), and the generated client subscribes to it, typed, over TCP and
//! UDP. A method that returns a topic of another name is refused.

use std::time::Duration;

use at_host::{Client, Server, Topic, UdpClient, UdpConfig, Update};
use at_tests::PATIENCE;

#[at_host::service]
pub trait Thermometer {
    /// Degrees C, once a reading is taken.
    #[at(topic)]
    fn temperature(&self) -> Topic;

    /// Takes a reading now and publishes it.
    async fn read(&self) -> f64;
}

struct Board {
    temperature: Topic,
}

impl Thermometer for Board {
    fn temperature(&self) -> Topic {
        self.temperature.clone()
    }

    async fn read(&self) -> f64 {
        let value = 21.5;
        let _ = self.temperature.publish(&value);
        value
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_topic_is_served_listed_and_subscribed_to() {
    let temperature = ThermometerTopics::temperature();
    assert_eq!(temperature.name(), "temperature");
    let server = Server::builder()
        .service(ThermometerServer(Board {
            temperature: temperature.clone(),
        }))
        .tcp("127.0.0.1:0".parse().unwrap())
        .udp("127.0.0.1:0".parse().unwrap())
        .start()
        .await
        .unwrap();
    let client = ThermometerClient::new(
        Client::connect(server.tcp_addr().unwrap(), PATIENCE)
            .await
            .unwrap(),
    );
    let topics: serde_json::Value = client.caller().call_as("rpc.topics", ()).await.unwrap();
    assert_eq!(
        topics["topics"],
        serde_json::json!([{"name": "temperature", "doc": "Degrees C, once a reading is taken."}])
    );
    let mut events = client.temperature::<f64>().await.unwrap();
    assert_eq!(client.read().await.unwrap(), 21.5);
    let first = tokio::time::timeout(PATIENCE, events.next())
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(first, Update::Event { n: 1, value } if value == 21.5),
        "{first:?}"
    );
    drop(events);
    // The same over UDP.
    let config = UdpConfig {
        timeout: Duration::from_secs(5),
        ..UdpConfig::default()
    };
    let udp = ThermometerClient::new(
        UdpClient::connect(server.udp_addr().unwrap(), config)
            .await
            .unwrap(),
    );
    let mut events = udp.temperature::<f64>().await.unwrap();
    // 21.5 is the topic's state now: event 1 at once.
    let first = tokio::time::timeout(PATIENCE, events.next())
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(first, Update::Event { n: 1, value } if value == 21.5),
        "{first:?}"
    );
    drop(events);
    server.shutdown().await;
}

#[tokio::test]
async fn a_topic_of_another_name_is_refused() {
    let wrong = Topic::new("pressure", "").unwrap();
    let outcome = Server::builder()
        .service(ThermometerServer(Board { temperature: wrong }))
        .tcp("127.0.0.1:0".parse().unwrap())
        .start()
        .await;
    let e = outcome.err().expect("the builder refuses the service");
    assert!(e.to_string().contains("temperature"), "{e}");
}
