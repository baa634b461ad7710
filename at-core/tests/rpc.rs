//! The protocol's own functions through the one request -> reply path:
//! `rpc.ping`, `rpc.info`, `rpc.functions` with paging into small reply
//! buffers, bad `start`s, and unknown `rpc.*` names.

use at_core::calculator::CALCULATOR;
use at_core::{
    Description, Frame, Functions, Kind, Reply, ServerInfo, Signature, Type, Value, respond_as,
};
use proptest::prelude::*;

mod common;

const INFO: ServerInfo<'static> = ServerInfo {
    server: "test 1.0",
    name: "bench \"psu\"",
    auth_required: false,
    max_body: 496,
    ext: at_core::rpc::Ext::NONE,
};

/// `n` functions named f00, f01, ...; every third one without a signature.
struct Many {
    names: Vec<String>,
}

impl Many {
    fn new(n: usize) -> Self {
        Many {
            names: (0..n).map(|i| format!("f{i:02}")).collect(),
        }
    }
}

const SIG: Signature = Signature {
    params: &[Type::Integer, Type::String],
    optional: 0,
    result: Type::Bool,
    doc: "a function with a doc line of some length, to fill pages",
};

impl Functions for Many {
    fn call<R>(&self, _: &str, _: &[Value<'_>], reply: impl FnOnce(Reply<'_>) -> R) -> R {
        reply(Reply::Success(Value::Null))
    }

    fn count(&self) -> usize {
        self.names.len()
    }

    fn describe(&self, index: usize) -> Option<Description<'_>> {
        self.names.get(index).map(|name| Description {
            name,
            signature: (index % 3 != 2).then_some(SIG),
        })
    }
}

/// Calls `body` on `functions` with a reply buffer of `room` bytes; the
/// reply body as JSON.
fn call<F: Functions>(functions: &F, body: &str, room: usize) -> serde_json::Value {
    let mut wire = vec![0u8; 16 + body.len()];
    let n = at_core::encode_frame(Kind::Request, 9, body.as_bytes(), &mut wire).unwrap();
    let frame = Frame::parse(&wire[..n], 4096).unwrap();
    let mut out = vec![0u8; room];
    let m = respond_as(functions, &INFO, &frame, &mut out).expect("a reply");
    let reply = Frame::parse(&out[..m], u32::MAX).unwrap();
    assert_eq!(reply.seq(), 9);
    serde_json::from_slice(reply.body).unwrap()
}

fn result(reply: serde_json::Value) -> serde_json::Value {
    assert_eq!(reply["status"], "success", "{reply}");
    reply["result"].clone()
}

fn error_code(reply: &serde_json::Value) -> &str {
    assert_eq!(reply["status"], "error", "{reply}");
    reply["code"].as_str().unwrap()
}

#[test]
fn ping() {
    assert_eq!(
        result(call(&CALCULATOR, r#"{"func": "rpc.ping"}"#, 128)),
        true
    );
    assert_eq!(
        result(call(
            &CALCULATOR,
            r#"{"func": "rpc.ping", "args": [[1, {"a": "b"}]]}"#,
            128
        )),
        serde_json::json!([1, {"a": "b"}])
    );
    let reply = call(&CALCULATOR, r#"{"func": "rpc.ping", "args": [1, 2]}"#, 128);
    assert_eq!(error_code(&reply), "invalid_arguments");
}

#[test]
fn info() {
    let reply = call(&CALCULATOR, r#"{"func": "rpc.info", "args": []}"#, 256);
    assert_eq!(
        result(reply),
        serde_json::json!({"protocol": 1, "server": "test 1.0", "name": "bench \"psu\"",
            "auth": "off", "max_body": 496, "functions": 4, "ext": []})
    );
    let reply = call(&CALCULATOR, r#"{"func": "rpc.info", "args": [1]}"#, 256);
    assert_eq!(error_code(&reply), "invalid_arguments");
    let reply = call(&CALCULATOR, r#"{"func": "rpc.nope"}"#, 256);
    assert_eq!(error_code(&reply), "unknown_function");
}

#[test]
fn the_calculator_lists_its_signatures() {
    let page = result(call(&CALCULATOR, r#"{"func": "rpc.functions"}"#, 1024));
    assert_eq!(page["next"], serde_json::Value::Null);
    assert_eq!(
        page["functions"][3],
        serde_json::json!({"name": "div", "params": ["number", "number"], "result": "double",
            "doc": "a / b, always a double"})
    );
    let names: Vec<&str> = page["functions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["add", "sub", "mul", "div"]);
}

/// Every page in turn, from `start`, until `next` is null.
fn all_pages<F: Functions>(functions: &F, room: usize) -> (Vec<serde_json::Value>, usize) {
    let mut entries = Vec::new();
    let mut start = 0;
    let mut pages = 0;
    loop {
        let body = format!(r#"{{"func": "rpc.functions", "args": [{start}]}}"#);
        let page = result(call(functions, &body, room));
        pages += 1;
        let got = page["functions"].as_array().unwrap().clone();
        assert!(
            !got.is_empty() || page["next"].is_null(),
            "an empty page with a next"
        );
        entries.extend(got);
        match page["next"].as_u64() {
            Some(next) => start = next as usize,
            None => return (entries, pages),
        }
    }
}

#[test]
fn forty_functions_over_small_pages() {
    let many = Many::new(40);
    // A device's 192-byte reply buffer.
    let (entries, pages) = all_pages(&many, 192);
    assert!(pages > 10, "{pages} pages");
    let names: Vec<&str> = entries
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, many.names);
    assert_eq!(entries[2]["params"], serde_json::Value::Null);
    assert_eq!(
        entries[0]["params"],
        serde_json::json!(["integer", "string"])
    );
    // One big page holds them all.
    let (entries, pages) = all_pages(&many, 16 * 1024);
    assert_eq!((entries.len(), pages), (40, 1));
    // One past the end, and bad starts.
    let page = result(call(
        &many,
        r#"{"func": "rpc.functions", "args": [40]}"#,
        192,
    ));
    assert_eq!(page, serde_json::json!({"functions": [], "next": null}));
    for bad in ["-1", "1.5", "\"0\"", "null", "0, 1"] {
        let body = format!(r#"{{"func": "rpc.functions", "args": [{bad}]}}"#);
        assert_eq!(
            error_code(&call(&many, &body, 192)),
            "invalid_arguments",
            "{bad}"
        );
    }
}

#[test]
fn an_entry_too_long_for_a_page_loses_its_doc_before_it_fails() {
    let many = Many::new(3);
    // Room for the first entry without its doc only (163 bytes; 219 with).
    let page = result(call(&many, r#"{"func": "rpc.functions"}"#, 170));
    assert_eq!(page["functions"][0]["doc"], "", "{page}");
    assert_eq!(page["next"], 1);
    // Not even that: internal.
    let reply = call(&many, r#"{"func": "rpc.functions"}"#, 150);
    assert_eq!(error_code(&reply), "internal");
}

proptest! {
    #![proptest_config(common::proptest_config())]

    /// Whatever the reply buffer, the pages list every function once, in
    /// order.
    #[test]
    fn paging_covers_every_function_once(room in 163usize..2048, n in 0usize..60) {
        let many = Many::new(n);
        let (entries, _) = all_pages(&many, room);
        let names: Vec<&str> = entries.iter().map(|e| e["name"].as_str().unwrap()).collect();
        prop_assert_eq!(names, many.names.iter().map(String::as_str).collect::<Vec<_>>());
    }
}

fn maybe_scale(x: f64, k: Option<i32>) -> f64 {
    x * f64::from(k.unwrap_or(1))
}

static OPTIONAL: [at_core::Function; 1] = [at_core::function!("scale", maybe_scale, "x times k")];

#[test]
fn optional_parameters_are_listed_with_a_question_mark() {
    let page = result(call(&OPTIONAL, r#"{"func": "rpc.functions"}"#, 1024));
    assert_eq!(
        page["functions"][0],
        serde_json::json!({"name": "scale", "params": ["number", "integer?"], "result": "double",
            "doc": "x times k"})
    );
}
