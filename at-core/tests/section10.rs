//! Contract section 10's test vectors (10.7), byte for byte: NOTIFY
//! frames (a one-way call, events), `deadline_ms`, the new error codes,
//! and how each reads back.

use at_core::event::{End, Event, OneWay, Payload};
use at_core::{ErrorCode, Frame, FrameDecoder, JsonStr, Kind, Request, Value, encode_frame};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `frame(flags, seq, body)` of 10.7, through at-core's encoder.
fn frame(kind: Kind, seq: u32, body: &str) -> Vec<u8> {
    let mut out = vec![0u8; 16 + body.len()];
    let n = encode_frame(kind, seq, body.as_bytes(), &mut out).unwrap();
    out.truncate(n);
    out
}

fn header_of(vector: &str) -> String {
    vector.split_whitespace().collect()
}

#[test]
fn notification_n1() {
    let n1 = frame(Kind::Notify, 7, r#"{"func": "log", "args": ["boot"]}"#);
    assert_eq!(
        hex(&n1),
        header_of(
            "41 54 00 10 00 00 00 07 00 00 00 21 df c3 d8 76
             7b 22 66 75 6e 63 22 3a 20 22 6c 6f 67 22 2c 20
             22 61 72 67 73 22 3a 20 5b 22 62 6f 6f 74 22 5d
             7d"
        )
    );
    let parsed = Frame::parse(&n1, 1024).unwrap();
    assert_eq!((parsed.kind, parsed.seq()), (Kind::Notify, 7));
    assert!(!parsed.kind.is_reply());
    match OneWay::parse(parsed.body).unwrap() {
        OneWay::Call(r) => {
            assert!(r.func == "log");
            assert_eq!(r.args[0], Value::str("boot"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn event_e1_and_the_status_frame_m1() {
    let body = r#"{"topic": "temp", "n": 1, "value": 21.5}"#;
    let e1 = frame(Kind::Notify, 1, body);
    assert_eq!(
        hex(&e1[..16]),
        header_of("41 54 00 10 00 00 00 01 00 00 00 28 71 20 f3 15")
    );
    let event = Event {
        topic: JsonStr::new("temp"),
        n: 1,
        payload: Payload::Value(Value::Float(21.5)),
    };
    let mut out = [0u8; 64];
    let len = event.write(&mut out).unwrap();
    assert_eq!(&out[..len], body.as_bytes());
    let parsed = Frame::parse(&e1, 1024).unwrap();
    assert_eq!(OneWay::parse(parsed.body), Ok(OneWay::Event(event)));

    let m1 = frame(
        Kind::Notify,
        0,
        r#"{"topic": "rpc.status", "n": 0, "value": null}"#,
    );
    assert_eq!(
        hex(&m1[..16]),
        header_of("41 54 00 10 00 00 00 00 00 00 00 2e 13 ca eb c9")
    );
    let status = Event::parse(&m1[16..]).unwrap();
    assert_eq!((status.n, status.payload), (0, Payload::Value(Value::Null)));
    let end = Event::parse(br#"{"topic": "temp", "n": 9, "end": "server"}"#).unwrap();
    assert_eq!(end.payload, Payload::End(End::Server));
}

#[test]
fn calls_of_section_10_s1_d1_c1_p1_p3() {
    for (kind, seq, body, header) in [
        (
            Kind::Request,
            8,
            r#"{"func": "rpc.subscribe", "args": ["temp", 60, 1000]}"#,
            "41 54 00 01 00 00 00 08 00 00 00 35 dd 29 75 44",
        ),
        (
            Kind::Request,
            10,
            r#"{"func": "add", "args": [10, 20], "deadline_ms": 0}"#,
            "41 54 00 01 00 00 00 0a 00 00 00 33 ac d2 25 8e",
        ),
        (
            Kind::Notify,
            12,
            r#"{"func": "rpc.cancel", "args": [11]}"#,
            "41 54 00 10 00 00 00 0c 00 00 00 24 a6 21 02 0b",
        ),
        (
            Kind::Request,
            1,
            r#"{"func": "rpc.peer", "args": []}"#,
            "41 54 00 01 00 00 00 01 00 00 00 20 20 54 29 fe",
        ),
        (
            Kind::Request,
            1,
            r#"{"func": "rpc.info", "args": []}"#,
            "41 54 00 01 00 00 00 01 00 00 00 20 d2 da 20 a0",
        ),
    ] {
        let bytes = frame(kind, seq, body);
        assert_eq!(hex(&bytes[..16]), header_of(header), "{body}");
        let request = Request::parse(body.as_bytes()).unwrap();
        let deadline = if body.contains("deadline_ms") {
            Some(0)
        } else {
            None
        };
        assert_eq!(request.deadline_ms, deadline);
    }
}

#[test]
fn replies_of_section_10_s2_p2_d2_c2() {
    let mut out = [0u8; 160];
    let reply = |seq, code: ErrorCode, out: &mut [u8]| {
        let n = at_core::write_error_frame(seq, code, code.default_message(), out).unwrap();
        hex(&out[..16]).to_owned() + &format!("/{}", n)
    };
    assert_eq!(
        reply(10, ErrorCode::DeadlineExceeded, &mut out),
        header_of("41 54 00 04 00 00 00 0a 00 00 00 50 d0 f5 35 5e") + "/96"
    );
    assert_eq!(
        &out[16..96],
        br#"{"status": "error", "code": "deadline_exceeded", "message": "deadline exceeded"}"#
    );
    assert_eq!(
        reply(11, ErrorCode::Cancelled, &mut out),
        header_of("41 54 00 04 00 00 00 0b 00 00 00 40 35 9e 8e d7") + "/80"
    );
    assert_eq!(
        ErrorCode::from_name("unknown_topic"),
        Some(ErrorCode::UnknownTopic)
    );
    for (seq, body, header) in [
        (
            8,
            r#"{"status": "success", "result": {"topic": "temp", "lease": 60, "interval": 1000, "n": 0, "credit": null}}"#,
            "41 54 00 02 00 00 00 08 00 00 00 69 32 7e 78 46",
        ),
        (
            1,
            r#"{"status": "success", "result": {"lease": null}}"#,
            "41 54 00 02 00 00 00 01 00 00 00 30 5a 9a 0d 8c",
        ),
    ] {
        assert_eq!(
            hex(&frame(Kind::Response, seq, body)[..16]),
            header_of(header)
        );
    }
}

#[test]
fn notify_is_a_type_bit_of_its_own() {
    // NOTIFY with REQUEST is two type bits: bad_frame, never a request.
    let mut bytes = frame(Kind::Request, 3, r#"{"func": "add", "args": [1, 2]}"#);
    bytes[3] |= 0x10;
    assert!(Frame::parse(&bytes, 1024).is_err());
    let mut decoder = FrameDecoder::<[u8; 256]>::new(1024);
    decoder.spare()[..bytes.len()].copy_from_slice(&bytes);
    decoder.commit(bytes.len());
    assert!(decoder.next_frame().is_err());
    // A server that serves requests drops a NOTIFY unanswered (10.1).
    let n1 = frame(Kind::Notify, 7, r#"{"func": "add", "args": [1, 2]}"#);
    let mut out = [0u8; 128];
    assert_eq!(
        at_core::respond_to_bytes(&at_core::calculator::CALCULATOR, &n1, 1024, &mut out),
        None
    );
    // A deadline that is no integer from 0 to 4294967295 is bad_request.
    for body in [
        r#"{"func": "add", "args": [1, 2], "deadline_ms": -1}"#,
        r#"{"func": "add", "args": [1, 2], "deadline_ms": 4294967296}"#,
        r#"{"func": "add", "args": [1, 2], "deadline_ms": "5"}"#,
        r#"{"func": "add", "args": [1, 2], "deadline_ms": 1.5}"#,
    ] {
        let bytes = frame(Kind::Request, 4, body);
        let n = at_core::respond_to_bytes(&at_core::calculator::CALCULATOR, &bytes, 1024, &mut out)
            .unwrap();
        let reply = Frame::parse(&out[..n], 1024).unwrap();
        assert_eq!(reply.kind, Kind::Error, "{body}");
        assert!(
            std::str::from_utf8(reply.body)
                .unwrap()
                .contains("bad_request"),
            "{body}"
        );
    }
}

static RUNS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

fn bump<'a>(_: &[Value<'a>]) -> Result<Value<'a>, at_core::CallError> {
    let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
    Ok(Value::Int(i64::from(n)))
}

/// A v1-style receiver (its `ext` lacks `notify`) never runs a
/// notification; one that lists it runs it once and answers nothing. An
/// event body, `rpc.hello` and a body that is no call run nothing either.
#[test]
fn notifications_run_only_where_ext_lists_notify() {
    use at_core::rpc::Ext;
    use at_core::{Context, ServerInfo, auth::Origin};
    static TABLE: [at_core::Function; 1] = [at_core::Function::new("bump", bump)];
    let info = |ext| ServerInfo {
        server: "t",
        name: "t",
        auth_required: false,
        max_body: 1024,
        ext,
    };
    let mut out = [0u8; 256];
    let mut send = |ext, body: &str| {
        let bytes = frame(Kind::Notify, 5, body);
        let frame = Frame::parse(&bytes, 1024).unwrap();
        let mut context = Context::new(Origin::SERIAL, 0);
        at_core::respond_in(&TABLE, &info(ext), &frame, &mut context, &mut out)
    };
    let call = r#"{"func": "bump", "args": []}"#;
    assert_eq!(send(Ext::NONE, call), None);
    assert_eq!(
        RUNS.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "a v1 receiver ran it"
    );
    assert_eq!(send(Ext::NOTIFY, call), None, "never answered");
    assert_eq!(RUNS.load(std::sync::atomic::Ordering::SeqCst), 1);
    for other in [
        r#"{"topic": "temp", "n": 1, "value": 2}"#,
        r#"{"func": "rpc.hello", "args": ["demo", "00"]}"#,
        r#"{"func": "nope"}"#,
        "[1, 2]",
    ] {
        assert_eq!(send(Ext::NOTIFY, other), None, "{other}");
    }
    assert_eq!(RUNS.load(std::sync::atomic::Ordering::SeqCst), 1);
}
