//! The protocol's own functions (contract section 7) against every Rust
//! server on every transport: at-host over TCP and UDP (with 40 functions
//! and a small frame limit, so `rpc.functions` pages), and the device
//! servers on the desktop. (The firmware's are in qemu.rs and
//! qemu_net.rs, the Python server's in its own tests.)

use std::net::SocketAddr;

use at_core::ErrorCode;
use at_embedded_example::desktop;
use at_host::{Client, Server, UdpClient, UdpConfig, Value};
use at_tests::PATIENCE;

/// Every `rpc.functions` page in turn: the entries, and how many pages.
async fn all_functions(call: &mut impl AsyncCall) -> (Vec<serde_json::Value>, usize) {
    let (mut entries, mut start, mut pages) = (Vec::new(), 0, 0);
    loop {
        let page = call.call("rpc.functions", vec![Value::Int(start)]).await;
        pages += 1;
        entries.extend(page["functions"].as_array().unwrap().iter().cloned());
        match page["next"].as_i64() {
            Some(next) => start = next,
            None => return (entries, pages),
        }
    }
}

/// A TCP or UDP client, giving results as JSON.
trait AsyncCall {
    async fn call(&mut self, func: &str, args: Vec<Value>) -> serde_json::Value;
    async fn error(&mut self, func: &str, args: Vec<Value>) -> Option<ErrorCode>;
}

impl AsyncCall for Client {
    async fn call(&mut self, func: &str, args: Vec<Value>) -> serde_json::Value {
        self.call_as(func, args).await.unwrap()
    }
    async fn error(&mut self, func: &str, args: Vec<Value>) -> Option<ErrorCode> {
        self.call_as::<Value>(func, args).await.unwrap_err().code()
    }
}

impl AsyncCall for UdpClient {
    async fn call(&mut self, func: &str, args: Vec<Value>) -> serde_json::Value {
        self.call_as(func, args).await.unwrap()
    }
    async fn error(&mut self, func: &str, args: Vec<Value>) -> Option<ErrorCode> {
        self.call_as::<Value>(func, args).await.unwrap_err().code()
    }
}

/// What every server must do, whatever it serves.
async fn check(c: &mut impl AsyncCall, name: &str, functions: usize) -> usize {
    assert_eq!(c.call("rpc.ping", vec![]).await, true);
    assert_eq!(c.call("rpc.ping", vec![Value::Str("é".into())]).await, "é");
    let info = c.call("rpc.info", vec![]).await;
    assert_eq!(info["protocol"], 1);
    assert_eq!(info["name"], name);
    assert_eq!(info["auth"], "off");
    assert_eq!(info["functions"], functions);
    assert!(info["max_body"].as_u64().unwrap() > 0);
    let (entries, pages) = all_functions(c).await;
    assert_eq!(entries.len(), functions);
    assert_eq!(entries[0]["name"], "add");
    assert_eq!(
        entries[0]["params"],
        serde_json::json!(["number", "number"])
    );
    for bad in [
        Value::Int(-1),
        Value::Float(0.5),
        Value::Str("0".into()),
        Value::Null,
    ] {
        assert_eq!(
            c.error("rpc.functions", vec![bad.clone()]).await,
            Some(ErrorCode::InvalidArguments),
            "{bad}"
        );
    }
    let past = c
        .call("rpc.functions", vec![Value::Int(functions as i64)])
        .await;
    assert_eq!(past, serde_json::json!({"functions": [], "next": null}));
    assert_eq!(
        c.error("rpc.nope", vec![]).await,
        Some(ErrorCode::UnknownFunction)
    );
    assert_eq!(
        c.error("rpc.info", vec![Value::Int(1)]).await,
        Some(ErrorCode::InvalidArguments)
    );
    pages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_host_answers_rpc_functions_over_tcp_and_udp() {
    let mut builder = Server::builder()
        .calculator()
        .name("rpc-test")
        .max_frame(300);
    for i in 0..36 {
        builder = builder.function(&format!("f{i:02}"), move |x: i64| x + i);
    }
    let server = builder
        .untyped("raw", |_| Ok(Value::Null))
        .tcp("127.0.0.1:0".parse().unwrap())
        .udp("127.0.0.1:0".parse().unwrap())
        .start()
        .await
        .unwrap();
    let mut tcp = Client::connect(server.tcp_addr().unwrap(), PATIENCE)
        .await
        .unwrap();
    let pages = check(&mut tcp, "rpc-test", 41).await;
    assert!(
        pages > 5,
        "a 300-byte frame limit pages the list: {pages} pages"
    );
    let (entries, _) = all_functions(&mut tcp).await;
    assert_eq!(entries[4]["name"], "f00");
    assert_eq!(entries[4]["params"], serde_json::json!(["integer"]));
    assert_eq!(entries[40]["name"], "raw");
    assert_eq!(entries[40]["params"], serde_json::Value::Null);
    let mut udp = UdpClient::connect(server.udp_addr().unwrap(), UdpConfig::default())
        .await
        .unwrap();
    check(&mut udp, "rpc-test", 41).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_device_servers_answer_rpc_functions() {
    let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let running = desktop::start(Some(loopback), Some(loopback)).unwrap();
    let mut tcp = Client::connect(running.tcp_addr().unwrap(), PATIENCE)
        .await
        .unwrap();
    check(&mut tcp, at_embedded_example::DEFAULT_NAME, 4).await;
    let mut udp = UdpClient::connect(running.udp_addr().unwrap(), UdpConfig::default())
        .await
        .unwrap();
    check(&mut udp, at_embedded_example::DEFAULT_NAME, 4).await;
    running.stop();
}
