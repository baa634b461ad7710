//! Typed functions and typed calls through a real at-host server on
//! loopback: round trips of every supported type, argument checks with
//! their messages, optional trailing parameters, typed functions (sync and
//! async) that panic, an async function that does not hold up other
//! connections, pipelined typed calls and a typed UDP batch, untyped calls
//! with `at_host::Value`, result conversion errors, and reserved names.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use at_core::ErrorCode;
use at_host::{
    Client, Error, HandlerError, Json, Number, Registry, RegistryError, Server, UdpClient,
    UdpConfig, Value, decode_result,
};
use at_tests::PATIENCE;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Point {
    x: i32,
    y: i32,
    label: String,
}

/// How long the slow async function sleeps.
const SLOW: Duration = Duration::from_millis(600);

async fn start() -> Server {
    Server::builder()
        .calculator()
        .function("i8", |v: i8| v)
        .function("i16", |v: i16| v)
        .function("i32", |v: i32| v)
        .function("i64", |v: i64| v)
        .function("u8", |v: u8| v)
        .function("u16", |v: u16| v)
        .function("u32", |v: u32| v)
        .function("u64", |v: u64| v)
        .function("f64", |v: f64| v)
        .function("bool", |v: bool| !v)
        .function("string", |s: String| s.to_uppercase())
        .function("number", |n: Number| n)
        .function("value", |v: Value| v)
        .function("point", |Json(p): Json<Point>| {
            Json(Point {
                x: p.y,
                y: p.x,
                label: p.label,
            })
        })
        .function("greet", |name: String, times: Option<u8>| {
            format!("hello {name} x{}", times.unwrap_or(1))
        })
        .function("nothing", || ())
        .function("checked_add", |a: i64, b: i64| {
            a.checked_add(b).ok_or(HandlerError::new(
                ErrorCode::Overflow,
                "the sum does not fit",
            ))
        })
        .function("boom", |_: i64| -> i64 {
            panic!("a typed function that panics")
        })
        .async_function("async_boom", |fail: bool| async move {
            tokio::task::yield_now().await;
            if fail {
                panic!("an async function that panics");
            }
            "fine".to_owned()
        })
        .function("maybe", |n: i64| (n > 0).then_some(n))
        .function("greeting", || std::borrow::Cow::Borrowed("hello"))
        .async_function("sleepy", |ms: u64| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            ms
        })
        .tcp("127.0.0.1:0".parse().unwrap())
        .udp("127.0.0.1:0".parse().unwrap())
        .start()
        .await
        .expect("server starts")
}

async fn client(addr: SocketAddr) -> Client {
    Client::connect(addr, PATIENCE).await.expect("connect")
}

fn invalid(e: Error) -> String {
    match e {
        Error::Remote { code, message } if code == "invalid_arguments" => message,
        other => panic!("wanted invalid_arguments, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_supported_type_round_trips() {
    let server = start().await;
    let c = client(server.tcp_addr().unwrap()).await;
    assert_eq!(c.call_as::<i8>("i8", (-128,)).await.unwrap(), -128);
    assert_eq!(c.call_as::<i16>("i16", (32767,)).await.unwrap(), 32767);
    assert_eq!(
        c.call_as::<i32>("i32", (i32::MIN,)).await.unwrap(),
        i32::MIN
    );
    assert_eq!(
        c.call_as::<i64>("i64", (i64::MAX,)).await.unwrap(),
        i64::MAX
    );
    assert_eq!(c.call_as::<u8>("u8", (255,)).await.unwrap(), 255);
    assert_eq!(c.call_as::<u16>("u16", (65535,)).await.unwrap(), 65535);
    assert_eq!(
        c.call_as::<u32>("u32", (u32::MAX,)).await.unwrap(),
        u32::MAX
    );
    assert_eq!(
        c.call_as::<u64>("u64", (1u64 << 62,)).await.unwrap(),
        1 << 62
    );
    assert_eq!(c.call_as::<f64>("f64", (0.1,)).await.unwrap(), 0.1);
    // An integer where a double is expected: a JSON number.
    assert_eq!(c.call_as::<f64>("f64", (7,)).await.unwrap(), 7.0);
    assert!(c.call_as::<bool>("bool", (false,)).await.unwrap());
    assert_eq!(
        c.call_as::<String>("string", ("é\"x",)).await.unwrap(),
        "É\"X"
    );
    assert_eq!(
        c.call_as::<Number>("number", (Number::Int(3),))
            .await
            .unwrap(),
        Number::Int(3)
    );
    assert_eq!(
        c.call_as::<Number>("number", (Number::Float(3.0),))
            .await
            .unwrap(),
        Number::Float(3.0)
    );
    assert_eq!(
        c.call_as::<Value>("value", ([1, 2],)).await.unwrap(),
        Value::Json("[1,2]".into())
    );
    let p = Point {
        x: 1,
        y: -2,
        label: "p".into(),
    };
    let flipped: Point = c.call_as("point", (&p,)).await.unwrap();
    assert_eq!((flipped.x, flipped.y, flipped.label), (-2, 1, "p".into()));
    c.call_as::<()>("nothing", ()).await.unwrap();
    // Option at the end: left out, null, or given.
    assert_eq!(
        c.call_as::<String>("greet", ("ada",)).await.unwrap(),
        "hello ada x1"
    );
    assert_eq!(
        c.call_as::<String>("greet", ("ada", None::<u8>))
            .await
            .unwrap(),
        "hello ada x1"
    );
    assert_eq!(
        c.call_as::<String>("greet", ("ada", 3)).await.unwrap(),
        "hello ada x3"
    );
    // The same over UDP.
    let udp = UdpClient::connect(server.udp_addr().unwrap(), UdpConfig::default())
        .await
        .unwrap();
    assert_eq!(udp.call_as::<u16>("u16", [9]).await.unwrap(), 9);
    assert_eq!(udp.call_as::<f64>("div", (10, 4)).await.unwrap(), 2.5);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_arguments_are_named() {
    let server = start().await;
    let c = client(server.tcp_addr().unwrap()).await;
    let e = c.call_as::<i64>("checked_add", (1, "x")).await.unwrap_err();
    assert_eq!(invalid(e), r#"argument 2: expected an integer, got "x""#);
    let e = c.call_as::<u8>("u8", (300,)).await.unwrap_err();
    assert_eq!(
        invalid(e),
        "argument 1: expected an integer from 0 to 255, got 300"
    );
    let e = c.call_as::<i32>("i32", (1i64 << 40,)).await.unwrap_err();
    assert_eq!(
        invalid(e),
        "argument 1: expected an integer from -2147483648 to 2147483647, got 1099511627776"
    );
    let e = c.call_as::<i64>("i64", (2.5,)).await.unwrap_err();
    assert_eq!(invalid(e), "argument 1: expected an integer, got 2.5");
    let e = c.call_as::<i64>("checked_add", (1,)).await.unwrap_err();
    assert_eq!(invalid(e), "expected 2 arguments, got 1");
    let e = c.call_as::<String>("greet", ()).await.unwrap_err();
    assert_eq!(invalid(e), "expected 1 to 2 arguments, got 0");
    let e = c.call_as::<()>("nothing", (1,)).await.unwrap_err();
    assert_eq!(invalid(e), "expected no arguments, got 1");
    let e = c.call_as::<Point>("point", ([1, 2],)).await.unwrap_err();
    assert_eq!(invalid(e), "argument 1: expected an object, got [1,2]");
    // A handler's own error, and a result that does not fit the client's type.
    let e = c
        .call_as::<i64>("checked_add", (i64::MAX, 1))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Overflow));
    let e = c.call_as::<i64>("div", (10, 4)).await.unwrap_err();
    assert!(
        matches!(&e, Error::Decode { func, expected: "i64", got, .. } if func == "div" && got == "2.5"),
        "{e:?}"
    );
    assert!(
        e.to_string()
            .contains("result of div: expected i64, got 2.5"),
        "{e}"
    );
    // Arguments that are not a list.
    let e = c.call_as::<i64>("i64", 5).await.unwrap_err();
    assert!(matches!(e, Error::Arguments { .. }), "{e:?}");
    // A typed function that panics: internal, and the server goes on.
    let e = c.call_as::<i64>("boom", (1,)).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Internal));
    assert_eq!(c.call_as::<i64>("add", (1, 2)).await.unwrap(), 3);
    // And an async one, on TCP and UDP: internal, the server goes on.
    let e = c
        .call_as::<String>("async_boom", (true,))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Internal));
    assert_eq!(
        c.call_as::<String>("async_boom", (false,)).await.unwrap(),
        "fine"
    );
    let u = UdpClient::connect(server.udp_addr().unwrap(), UdpConfig::default())
        .await
        .unwrap();
    let e = u
        .call_as::<String>("async_boom", (true,))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Internal));
    assert_eq!(
        u.call_as::<String>("async_boom", (false,)).await.unwrap(),
        "fine"
    );
    // Option and Cow<'static, str> results.
    assert_eq!(
        c.call_as::<Option<i64>>("maybe", (5,)).await.unwrap(),
        Some(5)
    );
    assert_eq!(
        c.call_as::<Option<i64>>("maybe", (-5,)).await.unwrap(),
        None
    );
    assert_eq!(c.call_as::<String>("greeting", ()).await.unwrap(), "hello");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_typed_calls() {
    let server = start().await;
    let c = client(server.tcp_addr().unwrap()).await;
    let mut seqs = Vec::new();
    for i in 0..50i64 {
        seqs.push((c.send_as("add", (i, 1)).await.unwrap(), i + 1));
    }
    for _ in 0..seqs.len() {
        let (seq, result) = c.receive().await.unwrap();
        let want = seqs.iter().find(|(s, _)| *s == seq).unwrap().1;
        assert_eq!(decode_result::<i64>("add", result).unwrap(), want);
    }
    server.shutdown().await;
}

/// The untyped calls take the one owned value type, `at_host::Value`, over
/// TCP and UDP (and at-core's borrowed values, passed on without a copy).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untyped_calls_take_at_host_values() {
    let server = Server::builder()
        .calculator()
        .tcp("127.0.0.1:0".parse().unwrap())
        .udp("127.0.0.1:0".parse().unwrap())
        .start()
        .await
        .unwrap();
    let c = client(server.tcp_addr().unwrap()).await;
    let args = [Value::Int(10), Value::Float(2.5)];
    assert_eq!(c.call("add", &args).await.unwrap(), Value::Float(12.5));
    let seq = c.send("mul", &args).await.unwrap();
    let (got, product) = c.receive().await.unwrap();
    assert_eq!((got, product.unwrap()), (seq, Value::Float(25.0)));
    let core = [at_core::Value::Int(1), at_core::Value::Int(2)];
    assert_eq!(c.call("sub", &core).await.unwrap(), Value::Int(-1));
    let u = UdpClient::connect(server.udp_addr().unwrap(), UdpConfig::default())
        .await
        .unwrap();
    assert_eq!(u.call("div", &args).await.unwrap(), Value::Float(4.0));
    let results = u
        .call_many(&[("add", &args[..]), ("sub", &args[..])])
        .await
        .unwrap();
    assert_eq!(
        results.into_iter().map(Result::unwrap).collect::<Vec<_>>(),
        [Value::Float(12.5), Value::Float(7.5)]
    );
    server.shutdown().await;
}

/// A UDP batch, typed: results in the order of the calls, an error reply
/// and a result that does not convert each failing only their own call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typed_udp_batch() {
    let server = start().await;
    let u = UdpClient::connect(server.udp_addr().unwrap(), UdpConfig::default())
        .await
        .unwrap();
    let results = u
        .call_many_as::<i64, _>(&[
            ("add", (1, 2)),
            ("div", (1, 0)),
            ("mul", (6, 7)),
            ("div", (1, 4)),
        ])
        .await
        .unwrap();
    assert_eq!(results[0].as_ref().ok(), Some(&3));
    assert_eq!(
        results[1].as_ref().err().and_then(Error::code),
        Some(ErrorCode::DivisionByZero)
    );
    assert_eq!(results[2].as_ref().ok(), Some(&42));
    assert!(
        matches!(&results[3], Err(Error::Decode { func, .. }) if func == "div"),
        "{:?}",
        results[3]
    );
    server.shutdown().await;
}

/// An async function that sleeps holds up its own connection only: calls
/// on another connection are answered meanwhile (generous bounds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_async_function_does_not_stall_other_connections() {
    let server = start().await;
    let addr = server.tcp_addr().unwrap();
    let slow = client(addr).await;
    let sleeping = tokio::spawn(async move {
        let started = Instant::now();
        let ms = slow
            .call_as::<u64>("sleepy", (SLOW.as_millis() as u64,))
            .await;
        (ms, started.elapsed())
    });
    let fast = client(addr).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    for _ in 0..20 {
        assert_eq!(fast.call_as::<i64>("add", (1, 1)).await.unwrap(), 2);
    }
    let fast_took = started.elapsed();
    let (ms, slow_took) = sleeping.await.unwrap();
    assert_eq!(ms.unwrap(), SLOW.as_millis() as u64);
    assert!(slow_took >= SLOW, "the async function ran {slow_took:?}");
    assert!(
        fast_took < SLOW / 2,
        "20 calls on another connection took {fast_took:?} while a function slept {SLOW:?}"
    );
    eprintln!("20 calls took {fast_took:?} while an async function slept {SLOW:?}");

    // Over UDP too: a datagram loop is not held up by a sleeping function.
    let udp_addr = server.udp_addr().unwrap();
    let sleeper = UdpClient::connect(udp_addr, UdpConfig::default())
        .await
        .unwrap();
    let sleeping = tokio::spawn(async move { sleeper.call_as::<u64>("sleepy", (600,)).await });
    let quick = UdpClient::connect(udp_addr, UdpConfig::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    assert_eq!(quick.call_as::<i64>("add", (2, 2)).await.unwrap(), 4);
    assert!(
        started.elapsed() < SLOW / 2,
        "a UDP call waited {:?}",
        started.elapsed()
    );
    assert_eq!(sleeping.await.unwrap().unwrap(), 600);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_names_are_refused() {
    let mut registry = Registry::new();
    assert!(matches!(
        registry.function("rpc.x", || 1i64),
        Err(RegistryError::Reserved(name)) if name == "rpc.x"
    ));
    assert!(matches!(
        registry.register("rpc.ping", |_| Ok(Value::Null)),
        Err(RegistryError::Reserved(_))
    ));
    assert_eq!(
        registry.function("", || 1i64).err(),
        Some(RegistryError::Empty)
    );
    assert!(!registry.contains("rpc.x"));
    let e = Server::builder()
        .function("rpc.x", || 1i64)
        .tcp("127.0.0.1:0".parse().unwrap())
        .start()
        .await
        .err()
        .expect("start refuses a reserved name");
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    assert!(e.to_string().contains("rpc."), "{e}");
}

#[test]
fn signatures_are_kept() {
    let mut registry = Registry::with_calculator();
    registry
        .function_with_doc("greet", "say hello", |_: String, _: Option<u8>| {
            "hi".to_owned()
        })
        .unwrap();
    registry.register("raw", |_| Ok(Value::Null)).unwrap();
    let sig = registry.signature("greet").unwrap();
    let names: Vec<&str> = sig.params.iter().map(|t| t.as_str()).collect();
    assert_eq!(
        (names, sig.result.as_str(), sig.doc),
        (vec!["string", "integer"], "string", "say hello")
    );
    assert!(!sig.is_optional(0) && sig.is_optional(1));
    assert_eq!(registry.signature("add").unwrap().doc, "a + b");
    assert!(registry.signature("raw").is_none());
    let order: Vec<&str> = registry.names().collect();
    assert_eq!(order, ["add", "sub", "mul", "div", "greet", "raw"]);
}
