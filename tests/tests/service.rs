//! A service defined once with `#[at_host::service]`: the calculator as a
//! trait. Its generated client talks to every calculator server there is
//! (at-host's own, a Rust implementation of the trait served through the
//! generated server, the Python peer's and the device server on the
//! desktop) and gets the same answers, over TCP and UDP; the generated
//! server registers the functions with their types and doc lines.

use std::net::SocketAddr;

use at_core::ErrorCode;
use at_embedded_example::desktop;
use at_host::{Client, HandlerError, Number, Registry, Server, Service, UdpClient, UdpConfig};
use at_tests::PATIENCE;
use at_tests::peers::{python, python_server};

/// The AT calculator (contract section 4).
#[at_host::service]
pub trait Calculator {
    /// a + b
    async fn add(&self, a: Number, b: Number) -> Result<Number, HandlerError>;
    /// a - b
    async fn sub(&self, a: Number, b: Number) -> Result<Number, HandlerError>;
    /// a * b
    async fn mul(&self, a: Number, b: Number) -> Result<Number, HandlerError>;
    /// a / b, always a double
    async fn div(&self, a: Number, b: Number) -> Result<f64, HandlerError>;
}

/// The calculator written against the trait, with the contract's number
/// rules.
struct Calc;

fn overflow() -> HandlerError {
    HandlerError::new(ErrorCode::Overflow, "overflow")
}

fn exact(
    a: Number,
    b: Number,
    ints: fn(i64, i64) -> Option<i64>,
    floats: fn(f64, f64) -> f64,
) -> Result<Number, HandlerError> {
    match (a, b) {
        (Number::Int(a), Number::Int(b)) => ints(a, b).map(Number::Int).ok_or_else(overflow),
        _ => Some(floats(a.as_f64(), b.as_f64()))
            .filter(|x| x.is_finite())
            .map(Number::Float)
            .ok_or_else(overflow),
    }
}

impl Calculator for Calc {
    async fn add(&self, a: Number, b: Number) -> Result<Number, HandlerError> {
        exact(a, b, i64::checked_add, |a, b| a + b)
    }
    async fn sub(&self, a: Number, b: Number) -> Result<Number, HandlerError> {
        exact(a, b, i64::checked_sub, |a, b| a - b)
    }
    async fn mul(&self, a: Number, b: Number) -> Result<Number, HandlerError> {
        exact(a, b, i64::checked_mul, |a, b| a * b)
    }
    async fn div(&self, a: Number, b: Number) -> Result<f64, HandlerError> {
        if b.as_f64() == 0.0 {
            return Err(HandlerError::new(
                ErrorCode::DivisionByZero,
                "division by zero",
            ));
        }
        Ok(a.as_f64() / b.as_f64())
    }
}

/// The generated client against a calculator server, over any caller.
async fn check<C: at_host::Caller>(calc: &CalculatorClient<C>, server: &str) {
    let n = Number::from;
    assert_eq!(
        calc.add(n(10), n(20)).await.unwrap(),
        Number::Int(30),
        "{server}"
    );
    assert_eq!(
        calc.sub(n(10), n(20)).await.unwrap(),
        Number::Int(-10),
        "{server}"
    );
    assert_eq!(
        calc.mul(n(6), n(7)).await.unwrap(),
        Number::Int(42),
        "{server}"
    );
    assert_eq!(calc.div(n(10), n(4)).await.unwrap(), 2.5, "{server}");
    assert_eq!(calc.div(n(10), n(2)).await.unwrap(), 5.0, "{server}");
    assert_eq!(
        calc.add(Number::Float(0.1), Number::Float(0.2))
            .await
            .unwrap(),
        Number::Float(0.30000000000000004),
        "{server}"
    );
    let e = calc.div(n(1), n(0)).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::DivisionByZero), "{server}");
    let e = calc.add(n(i64::MAX), n(1)).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Overflow), "{server}");
}

async fn against(tcp: SocketAddr, udp: SocketAddr, server: &str) {
    let client = Client::connect(tcp, PATIENCE).await.expect("connect");
    check(&CalculatorClient::new(client), server).await;
    let udp = UdpClient::connect(udp, UdpConfig::default()).await.unwrap();
    check(&CalculatorClient::new(udp), server).await;
}

const LOOPBACK: &str = "127.0.0.1:0";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_generated_client_against_at_host_and_the_trait_server() {
    // at-host's built-in calculator.
    let builtin = Server::builder()
        .calculator()
        .tcp(LOOPBACK.parse().unwrap())
        .udp(LOOPBACK.parse().unwrap())
        .start()
        .await
        .unwrap();
    against(
        builtin.tcp_addr().unwrap(),
        builtin.udp_addr().unwrap(),
        "at-host",
    )
    .await;
    // The trait implemented in Rust and served by the generated server.
    let served = Server::builder()
        .service(CalculatorServer(Calc))
        .tcp(LOOPBACK.parse().unwrap())
        .udp(LOOPBACK.parse().unwrap())
        .start()
        .await
        .unwrap();
    against(
        served.tcp_addr().unwrap(),
        served.udp_addr().unwrap(),
        "trait",
    )
    .await;
    // The untyped client sees the same bytes from both.
    let raw = Client::connect(served.tcp_addr().unwrap(), PATIENCE)
        .await
        .unwrap();
    let got = raw
        .call("add", &[at_core::Value::str("x"), at_core::Value::Int(1)])
        .await
        .unwrap_err();
    assert_eq!(got.code(), Some(ErrorCode::InvalidArguments));
    assert!(
        got.to_string()
            .contains(r#"argument 1: expected a number, got "x""#),
        "{got}"
    );
    // rpc.functions over the wire shows each function's parameter types
    // and the first line of its doc, from the trait.
    let listed: serde_json::Value = raw.call_as("rpc.functions", ()).await.unwrap();
    let div = listed["functions"]
        .as_array()
        .and_then(|all| all.iter().find(|f| f["name"] == "div"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        div,
        serde_json::json!({"name": "div", "params": ["number", "number"], "result": "double",
                           "doc": "a / b, always a double"}),
        "{listed}"
    );
    builtin.shutdown().await;
    served.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_generated_client_against_the_device_server() {
    let loopback: SocketAddr = LOOPBACK.parse().unwrap();
    let running = desktop::start(Some(loopback), Some(loopback)).expect("device servers start");
    against(
        running.tcp_addr().unwrap(),
        running.udp_addr().unwrap(),
        "device",
    )
    .await;
    running.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_generated_client_against_the_python_server() {
    let Some(python) = python() else { return };
    let served = python_server(python);
    let tcp = served.tcp.parse().unwrap();
    let udp = served.udp.parse().unwrap();
    against(tcp, udp, "python").await;
}

#[test]
fn the_generated_server_keeps_types_and_docs() {
    let mut registry = Registry::new();
    CalculatorServer(Calc).register(&mut registry).unwrap();
    let names: Vec<&str> = registry.names().collect();
    assert_eq!(names, ["add", "sub", "mul", "div"]);
    let sig = registry.signature("div").unwrap();
    let params: Vec<&str> = sig.params.iter().map(|t| t.as_str()).collect();
    assert_eq!(
        (params, sig.result.as_str(), sig.doc),
        (vec!["number", "number"], "double", "a / b, always a double")
    );
    assert_eq!(registry.signature("add").unwrap().result.as_str(), "number");
}

/// A renamed function and a plain return type.
#[at_host::service]
trait Greeter {
    /// Says hello.
    #[at(name = "greet.hello")]
    async fn hello(&self, name: String) -> String;
}

struct Hi;

impl Greeter for Hi {
    async fn hello(&self, name: String) -> String {
        format!("hello, {name}")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renamed_functions_and_plain_results() {
    let server = Server::builder()
        .service(GreeterServer(Hi))
        .tcp(LOOPBACK.parse().unwrap())
        .start()
        .await
        .unwrap();
    let client = Client::connect(server.tcp_addr().unwrap(), PATIENCE)
        .await
        .unwrap();
    let greeter = GreeterClient::new(client);
    assert_eq!(greeter.hello("ada".into()).await.unwrap(), "hello, ada");
    let direct: String = greeter
        .caller()
        .call_as("greet.hello", ("bob",))
        .await
        .unwrap();
    assert_eq!(direct, "hello, bob");
    server.shutdown().await;
}

/// The library's calculator client sends exactly the contract's bytes
/// (section 6: `add(10, 20)`, seq 1), as an untyped call does, once the
/// default deadline (contract 10.4) is off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_calculator_client_sends_the_contract_bytes() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind(LOOPBACK).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let peer = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut request = [0u8; 49];
        stream.read_exact(&mut request).await.unwrap();
        let reply = at_tests::frame(
            at_core::Kind::Response,
            1,
            br#"{"status": "success", "result": 30}"#,
        );
        stream.write_all(&reply).await.unwrap();
        request
    });
    let client = Client::connect(addr, PATIENCE)
        .await
        .unwrap()
        .with_deadlines(false);
    let calc = at_host::calculator::CalculatorClient::new(client);
    assert_eq!(
        calc.add(Number::Int(10), Number::Int(20)).await.unwrap(),
        Number::Int(30)
    );
    let mut want = vec![
        0x41, 0x54, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x21, 0x0b, 0xbc, 0xd0,
        0x47,
    ];
    want.extend_from_slice(br#"{"func": "add", "args": [10, 20]}"#);
    assert_eq!(peer.await.unwrap().to_vec(), want);
}

/// at-core's calculator behind the library's trait, served by the
/// generated server, answers as the built-in one does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_builtin_calculator_service() {
    use at_host::calculator::{Builtin, CalculatorServer};
    let server = Server::builder()
        .service(CalculatorServer(Builtin))
        .tcp(LOOPBACK.parse().unwrap())
        .udp(LOOPBACK.parse().unwrap())
        .start()
        .await
        .unwrap();
    against(
        server.tcp_addr().unwrap(),
        server.udp_addr().unwrap(),
        "builtin service",
    )
    .await;
    server.shutdown().await;
}
