//! Typed services with structs, lists, maps, optional parameters and their
//! own error type (issue: "Typed services that take and return structs and
//! lists"): served from an `Arc`, called by the generated client over TCP
//! and UDP; arguments that do not fit are named down to the field; the
//! listing shows each type's shape.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use at_host::{
    AppError, Client, ErrorCode, HandlerError, Server, ServiceError, UdpClient, UdpConfig, Value,
};
use at_tests::PATIENCE;
use serde::{Deserialize, Serialize};

/// One measurement.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    pub sensor: String,
    pub celsius: f64,
    #[serde(default)]
    pub tags: Vec<String>,
}

/// The station's own errors, mapped to contract codes and back.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum StationError {
    #[error("no sensor {0:?}")]
    NoSensor(String),
    #[error("the station is calibrating")]
    Calibrating,
}

impl AppError for StationError {
    fn to_error(&self) -> HandlerError {
        let code = match self {
            StationError::NoSensor(_) => ErrorCode::InvalidArguments,
            StationError::Calibrating => ErrorCode::Busy,
        };
        HandlerError::new(code, self.to_string())
    }

    fn from_error(e: &HandlerError) -> Option<Self> {
        match (e.code, e.message.as_str()) {
            (ErrorCode::Busy, "the station is calibrating") => Some(StationError::Calibrating),
            (ErrorCode::InvalidArguments, m) => {
                let name = m.strip_prefix("no sensor ")?;
                serde_json::from_str(name).ok().map(StationError::NoSensor)
            }
            _ => None,
        }
    }
}

#[at_host::service]
pub trait Station {
    /// The newest reading
    /// of a sensor.
    ///
    /// Only this first paragraph is listed.
    async fn reading(&self, sensor: &str) -> Result<Reading, StationError>;
    /// The sum of the values.
    async fn sum(&self, values: Vec<i32>) -> i64;
    /// Keeps readings (at most `limit`); says how many are kept.
    async fn store(&self, readings: Vec<Reading>, limit: Option<u32>) -> Result<u32, StationError>;
    /// The smallest and the largest value, if any.
    async fn range(&self, values: Vec<f64>) -> Option<(f64, f64)>;
    /// Every sensor's newest reading.
    async fn latest(&self) -> BTreeMap<String, Reading>;
    /// Fails while calibrating.
    async fn calibrate(&self, now: bool) -> Result<(), StationError>;
}

#[derive(Default)]
struct Memory {
    readings: Mutex<Vec<Reading>>,
}

impl Station for Memory {
    async fn reading(&self, sensor: &str) -> Result<Reading, StationError> {
        let all = self.readings.lock().unwrap();
        all.iter()
            .rev()
            .find(|r| r.sensor == sensor)
            .cloned()
            .ok_or_else(|| StationError::NoSensor(sensor.to_owned()))
    }
    async fn sum(&self, values: Vec<i32>) -> i64 {
        values.iter().map(|&v| i64::from(v)).sum()
    }
    async fn store(&self, readings: Vec<Reading>, limit: Option<u32>) -> Result<u32, StationError> {
        let mut all = self.readings.lock().unwrap();
        all.extend(readings);
        if let Some(limit) = limit {
            let excess = all.len().saturating_sub(limit as usize);
            all.drain(..excess);
        }
        Ok(all.len() as u32)
    }
    async fn range(&self, values: Vec<f64>) -> Option<(f64, f64)> {
        let min = values.iter().copied().reduce(f64::min)?;
        let max = values.iter().copied().reduce(f64::max)?;
        Some((min, max))
    }
    async fn latest(&self) -> BTreeMap<String, Reading> {
        let all = self.readings.lock().unwrap();
        all.iter().map(|r| (r.sensor.clone(), r.clone())).collect()
    }
    async fn calibrate(&self, now: bool) -> Result<(), StationError> {
        if now {
            Err(StationError::Calibrating)
        } else {
            Ok(())
        }
    }
}

fn reading(sensor: &str, celsius: f64) -> Reading {
    Reading {
        sensor: sensor.into(),
        celsius,
        tags: vec!["roof".into()],
    }
}

async fn start() -> Server {
    // An implementation shared behind an Arc is served as it is.
    let shared = Arc::new(Memory::default());
    Server::builder()
        .service(StationServer(shared))
        .tcp("127.0.0.1:0".parse().unwrap())
        .udp("127.0.0.1:0".parse().unwrap())
        .start()
        .await
        .unwrap()
}

async fn exercise<C: at_host::Caller>(station: &StationClient<C>) {
    let kept = station
        .store(vec![reading("roof", 21.5), reading("cellar", 12.0)], None)
        .await
        .unwrap();
    assert!(kept >= 2);
    assert_eq!(
        station.reading("roof").await.unwrap(),
        reading("roof", 21.5)
    );
    assert_eq!(
        station.sum(vec![1, 2, i32::MAX]).await.unwrap(),
        2_147_483_650
    );
    assert_eq!(
        station.range(vec![3.0, -1.5, 2.0]).await.unwrap(),
        Some((-1.5, 3.0))
    );
    assert_eq!(station.range(vec![]).await.unwrap(), None);
    let latest = station.latest().await.unwrap();
    assert_eq!(latest["cellar"].celsius, 12.0);
    // The station's own errors come back as themselves.
    match station.reading("attic").await {
        Err(ServiceError::App(e)) => assert_eq!(e, StationError::NoSensor("attic".into())),
        other => panic!("{other:?}"),
    }
    match station.calibrate(true).await {
        Err(ServiceError::App(StationError::Calibrating)) => {}
        other => panic!("{other:?}"),
    }
    station.calibrate(false).await.unwrap();
    // Calls at once on the one shared client (pipelined; shared_client.rs
    // proves that they are in flight together).
    let (a, b, c, d) = tokio::join!(
        station.sum(vec![1, 2]),
        station.reading("cellar"),
        station.range(vec![1.0]),
        station.reading("nowhere"),
    );
    assert_eq!(a.unwrap(), 3);
    assert_eq!(b.unwrap().celsius, 12.0);
    assert_eq!(c.unwrap(), Some((1.0, 1.0)));
    assert!(matches!(
        d,
        Err(ServiceError::App(StationError::NoSensor(_)))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_struct_service_over_tcp_and_udp() {
    let server = start().await;
    let tcp = Client::connect(server.tcp_addr().unwrap(), PATIENCE)
        .await
        .unwrap();
    exercise(&StationClient::new(tcp)).await;
    let udp = UdpClient::connect(server.udp_addr().unwrap(), UdpConfig::default())
        .await
        .unwrap();
    exercise(&StationClient::new(udp)).await;
    // With a limit, and the optional argument left out (above) or given.
    let tcp = Client::connect(server.tcp_addr().unwrap(), PATIENCE)
        .await
        .unwrap();
    let station = StationClient::new(tcp);
    assert_eq!(
        station
            .store(vec![reading("x", 1.0)], Some(1))
            .await
            .unwrap(),
        1
    );
    server.shutdown().await;
}

fn invalid(e: at_host::Error) -> String {
    match e {
        at_host::Error::Remote { code, message } if code == "invalid_arguments" => message,
        other => panic!("not invalid_arguments: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_arguments_are_named_down_to_the_field() {
    let server = start().await;
    let c = Client::connect(server.tcp_addr().unwrap(), PATIENCE)
        .await
        .unwrap();
    let json = |text: &str| Value::json(text).unwrap();
    let e = c
        .call("store", &[json(r#"[{"sensor": "a", "celsius": "x"}]"#)])
        .await
        .unwrap_err();
    assert_eq!(
        invalid(e),
        r#"argument 1: element 1: field "celsius": expected a number, got "x""#
    );
    let e = c
        .call("store", &[json(r#"[{"celsius": 1}]"#)])
        .await
        .unwrap_err();
    assert_eq!(
        invalid(e),
        r#"argument 1: element 1: missing field "sensor""#
    );
    let e = c.call("sum", &[json("[1, 2.5]")]).await.unwrap_err();
    assert_eq!(
        invalid(e),
        "argument 1: element 2: expected an integer from -2147483648 to 2147483647, got 2.5"
    );
    let e = c.call("sum", &[Value::Int(3)]).await.unwrap_err();
    assert_eq!(invalid(e), "argument 1: expected an array, got 3");
    let e = c.call("reading", &[Value::Int(5)]).await.unwrap_err();
    assert_eq!(invalid(e), "argument 1: expected a string, got 5");
    let e = c
        .call("store", &[json("[]"), Value::Int(-1)])
        .await
        .unwrap_err();
    assert_eq!(
        invalid(e),
        "argument 2: expected an integer from 0 to 4294967295, got -1"
    );
    let e = c.call::<Value>("latest", &[Value::Null]).await.unwrap_err();
    assert_eq!(invalid(e), "expected no arguments, got 1");
    // The function never saw any of them; the station still answers.
    assert_eq!(c.call_as::<i64>("sum", ([5, 6],)).await.unwrap(), 11);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listing_shows_shapes_optional_parameters_and_the_first_paragraph() {
    let server = start().await;
    let c = Client::connect(server.tcp_addr().unwrap(), PATIENCE)
        .await
        .unwrap();
    let page: serde_json::Value = c.call_as("rpc.functions", ()).await.unwrap();
    let entry = |name: &str| {
        page["functions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == name)
            .unwrap_or_else(|| panic!("{name} not listed: {page}"))
            .clone()
    };
    let reading = entry("reading");
    assert_eq!(reading["params"], serde_json::json!(["string"]));
    assert_eq!(reading["result"], "object");
    assert_eq!(reading["doc"], "The newest reading of a sensor.");
    let store = entry("store");
    assert_eq!(store["params"], serde_json::json!(["array", "integer?"]));
    assert_eq!(store["result"], "integer");
    assert_eq!(entry("range")["result"], "array");
    assert_eq!(entry("latest")["params"], serde_json::json!([]));
    assert_eq!(entry("latest")["result"], "object");
    assert_eq!(entry("calibrate")["result"], "null");
    server.shutdown().await;
}

#[test]
fn values_compare_by_meaning() {
    let a = Value::json(r#"{"a": 1, "b": [true, null]}"#).unwrap();
    let b = Value::json(r#"{"b":[true,null],"a":1}"#).unwrap();
    assert_eq!(a, b);
    assert_ne!(a, Value::json(r#"{"a": 1.0, "b": [true, null]}"#).unwrap());
    assert_eq!(Value::json("5").unwrap(), Value::Int(5));
    let r = reading("roof", 21.5);
    let v = at_host::to_value(&r).unwrap();
    assert_eq!(at_host::from_value::<Reading>(&v).unwrap(), r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_adds_to_the_builder_and_docs_are_kept() {
    let mut extra = at_host::Registry::new();
    extra
        .function_with_doc("twice", "Doubles\nits argument.\n\nDetail.", |x: i64| x * 2)
        .unwrap();
    let server = Server::builder()
        .calculator()
        .function_with_doc("half", "Halves it.", |x: f64| x / 2.0)
        .registry(extra)
        .tcp("127.0.0.1:0".parse().unwrap())
        .start()
        .await
        .unwrap();
    let c = Client::connect(server.tcp_addr().unwrap(), PATIENCE)
        .await
        .unwrap();
    assert_eq!(c.call_as::<i64>("add", (1, 2)).await.unwrap(), 3);
    assert_eq!(c.call_as::<f64>("half", (3,)).await.unwrap(), 1.5);
    assert_eq!(c.call_as::<i64>("twice", (21,)).await.unwrap(), 42);
    let page: serde_json::Value = c.call_as("rpc.functions", ()).await.unwrap();
    let docs: Vec<&str> = page["functions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["doc"].as_str().unwrap())
        .collect();
    assert_eq!(
        docs,
        [
            "a + b",
            "a - b",
            "a * b",
            "a / b, always a double",
            "Halves it.",
            "Doubles its argument."
        ]
    );
    server.shutdown().await;
}
