//! Proves at-core's claim of zero allocation: decoding frames and answering
//! requests under a global allocator that counts every allocation.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use at_core::calculator::{ADD, DIV, MUL, SUB};
use at_core::{CallError, FrameDecoder, Function, Kind, Reply, Request, Value, function};

struct Counting;

thread_local! {
    /// Allocations made by this thread (tests run in threads of their own,
    /// so each counts only its own).
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn count_one() {
    // `try_with`: a thread being torn down has no counter left.
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

// SAFETY: forwards to the system allocator, only counting calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_one();
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_one();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by `f` on this thread.
fn allocations_in(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

/// A typed function, as a firmware writes one.
fn scale(x: f64, k: i32, offset: Option<u8>) -> Result<f64, CallError> {
    Ok(x * f64::from(k) + f64::from(offset.unwrap_or(0)))
}

/// The calculator and a typed function.
static FUNCTIONS: [Function; 5] = [ADD, SUB, MUL, DIV, function!("scale", scale, "x times k")];

#[test]
fn decoding_and_dispatching_allocate_nothing() {
    // The counter itself works: a Box is one allocation.
    assert_eq!(
        allocations_in(|| drop(std::hint::black_box(Box::new(7u64)))),
        1
    );

    // Build the input before counting: calls, errors and escaped strings.
    let bodies: [&[u8]; 9] = [
        br#"{"func": "add", "args": [10, 20]}"#,
        br#"{"func": "scale", "args": [1.5, 4]}"#,
        br#"{"func": "scale", "args": [1.5, 4, 7]}"#,
        br#"{"func": "scale", "args": [1.5, 1099511627776]}"#,
        br#"{"func": "div", "args": [1, 0]}"#,
        br#"{"func": "d\u0069v", "args": [10.5, 2], "x": {"y": ["\ud83d\ude00"]}}"#,
        br#"{"func": "nope", "args": ["caf\u00e9"]}"#,
        br#"{"func": "mul", "args": [1e300, 1e300]}"#,
        b"not json",
    ];
    let mut wire = [0u8; 2048];
    let mut len = 0;
    for (seq, body) in bodies.iter().enumerate() {
        len += at_core::encode_frame(Kind::Request, seq as u32, body, &mut wire[len..]).unwrap();
    }
    let mut decoder = FrameDecoder::<[u8; 256]>::new(240);
    let mut out = [0u8; 256];

    let mut replies = 0;
    let count = allocations_in(|| {
        for chunk in wire[..len].chunks(7) {
            decoder.push(chunk);
            while let Some(frame) = decoder.next_frame().unwrap() {
                let n = at_core::respond(&FUNCTIONS, &frame, &mut out).unwrap();
                let reply = at_core::Frame::parse(&out[..n], 240).unwrap();
                let parsed = Reply::parse(reply.body).unwrap();
                std::hint::black_box(parsed);
                replies += 1;
            }
        }
        // The client side too: writing a request and reading values.
        let mut body = [0u8; 64];
        let n = Request::write("add", &[Value::Int(1), Value::Float(2.5)], &mut body).unwrap();
        std::hint::black_box(Request::parse(&body[..n]).unwrap());
    });
    assert_eq!(replies, bodies.len());
    assert_eq!(count, 0, "at-core allocated {count} times");
}

/// An authenticated call through at-core's Guard (the handshake, a
/// sealed request, the check, the call, the sealed and remembered reply, a
/// replay answered from memory) allocates nothing either.
#[test]
fn an_authenticated_call_allocates_nothing() {
    use at_core::auth::{
        ClientSession, CounterNonces, FixedReplies, Guard, Key, Origin, Transport,
    };
    static KEYS: [Key<'static>; 1] = [Key {
        kid: "demo",
        secret: [7; 32],
    }];
    let mut guard: Guard<&[Key<'static>], CounterNonces, FixedReplies<4, 256>, 4> =
        Guard::new(&KEYS[..], FixedReplies::new(), CounterNonces::new(1));
    let info = at_core::ServerInfo {
        server: "t",
        name: "t",
        auth_required: true,
        max_body: 240,
        ext: at_core::rpc::Ext::NONE,
    };
    let origin = Origin::from(Transport::Datagram, "192.0.2.1:5000".parse().unwrap());
    let hello_body =
        br#"{"func": "rpc.hello", "args": ["demo", "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf"]}"#;
    let mut hello = [0u8; 128];
    let n = at_core::encode_frame(Kind::Request, 1, hello_body, &mut hello).unwrap();
    let nc: [u8; 16] = std::array::from_fn(|i| 0xa0 + i as u8);
    let mut out = [0u8; 256];
    let mut request = [0u8; 256];
    let mut ok = false;
    let count = allocations_in(|| {
        let frame = at_core::Frame::parse(&hello[..n], 240).unwrap();
        let len = guard
            .respond(
                &FUNCTIONS,
                &info,
                &frame,
                &mut at_core::Context::new(origin, 0),
                &mut out,
            )
            .unwrap();
        let reply = at_core::Frame::parse(&out[..len], 240).unwrap();
        let Ok(Reply::Success(Value::Raw(raw))) = Reply::parse(reply.body) else {
            return;
        };
        // The members, without a JSON library: "session", "nonce", "proof".
        let text = raw.as_str();
        let member = |name: &str| {
            let start = text.find(name).unwrap() + name.len() + 4;
            &text[start..start + text[start..].find('"').unwrap()]
        };
        let session = ClientSession::from_hello(
            &KEYS[0],
            &nc,
            member("session"),
            member("nonce"),
            member("proof"),
        )
        .unwrap();
        let m = session
            .seal_request(2, br#"{"func": "scale", "args": [1.5, 4]}"#, &mut request)
            .unwrap();
        for _ in 0..2 {
            // The second time, a replay: the remembered reply.
            let frame = at_core::Frame::parse(&request[..m], 240).unwrap();
            let len = guard
                .respond(
                    &FUNCTIONS,
                    &info,
                    &frame,
                    &mut at_core::Context::new(origin, 1),
                    &mut out,
                )
                .unwrap();
            let reply = at_core::Frame::parse(&out[..len], 240).unwrap();
            let body = session.open_reply(&reply).unwrap();
            ok = Reply::parse(body) == Ok(Reply::Success(Value::Float(6.0)));
        }
    });
    assert!(ok, "the authenticated call was answered");
    assert_eq!(count, 0, "authentication allocated {count} times");
}

/// Contract section 10 on a device (the issue's claim): a sealed
/// subscribe through the Guard with the subscription table, the sealed
/// event it makes, and a sealed notification that runs, all without one
/// allocation.
#[test]
fn a_subscription_a_sealed_event_and_a_notification_allocate_nothing() {
    use at_core::auth::{
        ClientSession, CounterNonces, FixedReplies, Guard, Key, Origin, Responder, Transport,
    };
    use at_core::subscriptions::{Subscriptions, Topic, Topics};
    static KEYS: [Key<'static>; 1] = [Key {
        kid: "demo",
        secret: [7; 32],
    }];
    static TOPICS: [Topic; 1] = [Topic::state("temp", "deg C")];
    let mut guard: Guard<&[Key<'static>], CounterNonces, FixedReplies<4, 256>, 4> =
        Guard::new(&KEYS[..], FixedReplies::new(), CounterNonces::new(1));
    let mut table = Subscriptions::<4, 1>::new(&TOPICS);
    let info = at_core::ServerInfo {
        server: "t",
        name: "t",
        auth_required: true,
        max_body: 240,
        ext: at_core::rpc::Ext::NOTIFY.with(at_core::rpc::Ext::EVENTS),
    };
    let origin = Origin::from(Transport::Stream, "192.0.2.1:5000".parse().unwrap());
    let hello_body =
        br#"{"func": "rpc.hello", "args": ["demo", "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf"]}"#;
    let mut hello = [0u8; 128];
    let n = at_core::encode_frame(Kind::Request, 1, hello_body, &mut hello).unwrap();
    let nc: [u8; 16] = std::array::from_fn(|i| 0xa0 + i as u8);
    let (mut out, mut wire) = ([0u8; 256], [0u8; 256]);
    let mut checks = [false; 3];
    let count = allocations_in(|| {
        let frame = at_core::Frame::parse(&hello[..n], 240).unwrap();
        let mut context = at_core::Context::new(origin, 0);
        let len = guard
            .respond(&FUNCTIONS, &info, &frame, &mut context, &mut out)
            .unwrap();
        let reply = at_core::Frame::parse(&out[..len], 240).unwrap();
        let Ok(Reply::Success(Value::Raw(raw))) = Reply::parse(reply.body) else {
            return;
        };
        let text = raw.as_str();
        let member = |name: &str| {
            let start = text.find(name).unwrap() + name.len() + 4;
            &text[start..start + text[start..].find('"').unwrap()]
        };
        let (sid, nonce, proof) = (member("session"), member("nonce"), member("proof"));
        let session = ClientSession::from_hello(&KEYS[0], &nc, sid, nonce, proof).unwrap();
        table.publish("temp", Value::Float(21.5)).unwrap();
        // The sealed subscribe.
        let body = br#"{"func": "rpc.subscribe", "args": ["temp", 60, 0]}"#;
        let m = session.seal_request(2, body, &mut wire).unwrap();
        let frame = at_core::Frame::parse(&wire[..m], 240).unwrap();
        let mut context = at_core::Context {
            topics: Some(&mut table),
            ..at_core::Context::new(origin, 1)
        };
        let len = guard
            .respond(&FUNCTIONS, &info, &frame, &mut context, &mut out)
            .unwrap();
        let reply = at_core::Frame::parse(&out[..len], 240).unwrap();
        checks[0] = session.open_reply(&reply).is_ok();
        // The state, as event 1, sealed in the session.
        let due = table.take_due(1, &|o| *o == origin, &mut out).unwrap();
        let len =
            Responder::seal_server_frame(&mut guard, &session.sid(), 1, &mut out, due.len).unwrap();
        let event = at_core::Frame::parse(&out[..len], 240).unwrap();
        checks[1] = session
            .open_reply(&event)
            .is_ok_and(|b| b == br#"{"topic": "temp", "n": 1, "value": 21.5}"#);
        // A sealed notification: runs, answers nothing.
        let body = br#"{"func": "scale", "args": [1.5, 4]}"#;
        let m = session.seal(Kind::Notify, 3, body, &mut wire).unwrap();
        let frame = at_core::Frame::parse(&wire[..m], 240).unwrap();
        let mut context = at_core::Context::new(origin, 2);
        checks[2] = guard
            .respond(&FUNCTIONS, &info, &frame, &mut context, &mut out)
            .is_none();
    });
    assert_eq!(
        checks, [true; 3],
        "subscribe answered, event verified, notification unanswered"
    );
    assert_eq!(count, 0, "section 10 allocated {count} times");
}
