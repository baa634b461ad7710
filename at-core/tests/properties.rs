//! Property tests: round trips for headers, frames and bodies, and the
//! decoder's independence from how bytes are chunked.

use at_core::{
    BodyError, ErrorBody, Frame, FrameDecoder, FrameError, HEADER_LEN, Header, JsonStr, Kind,
    Reply, Request, Value,
};
use proptest::prelude::*;

mod common;

const LIMIT: u32 = 1024;

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![Just(Kind::Request), Just(Kind::Response), Just(Kind::Error)]
}

fn encode(kind: Kind, seq: u32, body: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; HEADER_LEN + body.len()];
    let n = at_core::encode_frame(kind, seq, body, &mut out).unwrap();
    assert_eq!(n, out.len());
    out
}

/// Owned arguments, so strategies can produce them.
#[derive(Clone, Debug)]
enum Arg {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
}

impl Arg {
    fn value(&self) -> Value<'_> {
        match self {
            Arg::Null => Value::Null,
            Arg::Bool(b) => Value::Bool(*b),
            Arg::Int(i) => Value::Int(*i),
            Arg::Float(x) => Value::Float(*x),
            Arg::Str(s) => Value::str(s),
        }
    }
}

fn finite_f64() -> impl Strategy<Value = f64> {
    any::<f64>().prop_filter("finite", |x| x.is_finite())
}

fn arg() -> impl Strategy<Value = Arg> {
    prop_oneof![
        Just(Arg::Null),
        any::<bool>().prop_map(Arg::Bool),
        any::<i64>().prop_map(Arg::Int),
        finite_f64().prop_map(Arg::Float),
        any::<String>().prop_map(Arg::Str),
    ]
}

/// Equality that tells 10 from 10.0 and compares doubles by bits.
fn same(a: &Value<'_>, b: &Value<'_>) -> bool {
    match (a, b) {
        (Value::Float(x), Value::Float(y)) => x.to_bits() == y.to_bits(),
        (Value::Str(x), Value::Str(y)) => x.chars().eq(y.chars()),
        _ => a == b,
    }
}

proptest! {
    #![proptest_config(common::proptest_config())]

    #[test]
    fn header_round_trips(magic: u16, flags: u16, seq: u32, length: u32, crc: u32) {
        let h = Header { magic, flags, seq, length, crc };
        prop_assert_eq!(Header::from_bytes(&h.to_bytes()), h);
    }

    #[test]
    fn frame_round_trips(kind in kind(), seq: u32, body in proptest::collection::vec(any::<u8>(), 0..=LIMIT as usize)) {
        let wire = encode(kind, seq, &body);
        let frame = Frame::parse(&wire, LIMIT).unwrap();
        prop_assert_eq!(frame.kind, kind);
        prop_assert_eq!(frame.seq(), seq);
        prop_assert_eq!(frame.body, &body[..]);
    }

    #[test]
    fn any_single_bit_flip_in_a_body_is_caught(body in proptest::collection::vec(any::<u8>(), 1..200), bit: usize) {
        let mut wire = encode(Kind::Request, 1, &body);
        let bit = bit % (body.len() * 8);
        wire[HEADER_LEN + bit / 8] ^= 1 << (bit % 8);
        let caught = matches!(Frame::parse(&wire, LIMIT), Err(FrameError::ChecksumMismatch { seq: 1, .. }));
        prop_assert!(caught);
    }

    #[test]
    fn decoder_is_independent_of_chunking(
        frames in proptest::collection::vec((kind(), any::<u32>(), proptest::collection::vec(any::<u8>(), 0..300)), 0..20),
        chunks in proptest::collection::vec(1usize..64, 1..50),
    ) {
        let wire: Vec<u8> = frames.iter().flat_map(|(k, s, b)| encode(*k, *s, b)).collect();
        let mut decoder = FrameDecoder::<[u8; 512]>::new(496);
        let mut got = Vec::new();
        let mut rest = &wire[..];
        let mut sizes = chunks.iter().cycle();
        while !rest.is_empty() {
            let n = (*sizes.next().unwrap()).min(rest.len());
            let mut chunk = &rest[..n];
            rest = &rest[n..];
            while !chunk.is_empty() {
                let taken = decoder.push(chunk);
                chunk = &chunk[taken..];
                while let Some(f) = decoder.next_frame().unwrap() {
                    got.push((f.kind, f.seq(), f.body.to_vec()));
                }
            }
        }
        prop_assert_eq!(decoder.buffered(), 0);
        prop_assert_eq!(got, frames);
    }

    #[test]
    fn decoder_resynchronises_after_garbage(
        frames in proptest::collection::vec((any::<u32>(), proptest::collection::vec(any::<u8>(), 0..100),
            // Garbage without the magic's first byte cannot look like a frame.
            proptest::collection::vec(any::<u8>().prop_filter("not 'A'", |b| *b != b'A'), 0..40)), 1..15),
        chunk in 1usize..40,
    ) {
        let mut wire = Vec::new();
        for (seq, body, garbage) in &frames {
            wire.extend_from_slice(garbage);
            wire.extend(encode(Kind::Request, *seq, body));
        }
        let mut decoder = FrameDecoder::<[u8; 256]>::new(200);
        let mut got = Vec::new();
        for piece in wire.chunks(chunk) {
            let mut piece = piece;
            while !piece.is_empty() {
                let n = decoder.push(piece);
                piece = &piece[n..];
                loop {
                    match decoder.next_frame() {
                        Ok(Some(f)) => got.push((f.seq(), f.body.to_vec())),
                        Ok(None) => break,
                        Err(e) => {
                            prop_assert!(e.loses_sync(), "{:?}", e);
                            prop_assert!(decoder.resync() > 0);
                        }
                    }
                }
            }
        }
        let want: Vec<_> = frames.iter().map(|(s, b, _)| (*s, b.clone())).collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn request_round_trips(func: String, args in proptest::collection::vec(arg(), 0..=at_core::MAX_ARGS)) {
        let values: Vec<Value<'_>> = args.iter().map(Arg::value).collect();
        let mut out = vec![0u8; 64 + func.len() * 6 + args.len() * 64 + args.iter().map(|a| match a { Arg::Str(s) => s.len() * 6, _ => 0 }).sum::<usize>()];
        let n = Request::write(&func, &values, &mut out).unwrap();
        let request = Request::parse(&out[..n]).unwrap();
        prop_assert!(request.func == func.as_str());
        prop_assert_eq!(request.args.len(), values.len());
        for (got, want) in request.args.iter().zip(&values) {
            prop_assert!(same(got, want), "{:?} != {:?}", got, want);
        }
        // serde_json agrees that the body is valid JSON with the same strings.
        let parsed: serde_json::Value = serde_json::from_slice(&out[..n]).unwrap();
        prop_assert_eq!(parsed["func"].as_str(), Some(func.as_str()));
    }

    #[test]
    fn doubles_are_written_shortest_and_never_as_integers(x in finite_f64()) {
        let mut out = [0u8; 80];
        let n = Reply::Success(Value::Float(x)).write(&mut out).unwrap();
        let text = std::str::from_utf8(&out[..n]).unwrap();
        let number = &text[r#"{"status": "success", "result": "#.len()..n - 1];
        prop_assert!(number.contains(['.', 'e', 'E']), "{}", number);
        prop_assert_eq!(number.parse::<f64>().unwrap().to_bits(), x.to_bits());
        prop_assert_eq!(Reply::parse(&out[..n]).unwrap(), Reply::Success(Value::Float(x)));
    }

    #[test]
    fn error_replies_round_trip(code: String, message: String) {
        let mut out = vec![0u8; 64 + (code.len() + message.len()) * 6];
        let e = ErrorBody { code: JsonStr::new(&code), message: JsonStr::new(&message) };
        let n = Reply::Error(e).write(&mut out).unwrap();
        let Reply::Error(back) = Reply::parse(&out[..n]).unwrap() else { panic!("not an error") };
        prop_assert!(back.code == code.as_str());
        prop_assert!(back.message == message.as_str());
    }

    #[test]
    fn request_parser_never_panics(body in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = Request::parse(&body);
        let _ = Reply::parse(&body);
    }

    #[test]
    fn request_parser_agrees_with_serde_json_on_validity(text in "[\\[\\]{}\",:0-9a-z .eE+\\-\\\\]{0,40}") {
        let body = format!(r#"{{"func": "f", "args": [], "x": {text}}}"#);
        let ours = Request::parse(body.as_bytes());
        let theirs = serde_json::from_str::<serde_json::Value>(&body);
        match (&ours, &theirs) {
            (Ok(_), Ok(_)) => {}
            (Err(BodyError::Syntax { .. } | BodyError::TooDeep), Err(_)) => {}
            // serde_json reads integers outside i64 as doubles; the contract
            // skips unknown members, so both accept.
            _ => prop_assert!(false, "ours {:?}, serde_json {:?}, body {}", ours, theirs.is_ok(), body),
        }
    }
}

#[test]
fn strings_unescape_surrogate_pairs_and_all_escapes() {
    let body = br#"{"func": "\"\\\/\b\f\n\r\t\u0041\u00e9\u20ac\ud83d\ude00"}"#;
    let r = Request::parse(body).unwrap();
    assert!(r.func == "\"\\/\u{8}\u{c}\n\r\tAé€😀");
    assert_eq!(r.func.len(), "\"\\/\u{8}\u{c}\n\r\tAé€😀".len());
}

#[test]
fn malformed_strings_are_rejected() {
    for body in [
        &br#"{"func": "\ud83d"}"#[..],  // lone high surrogate
        br#"{"func": "\ude00"}"#,       // lone low surrogate
        br#"{"func": "\ud83d\u0041"}"#, // high surrogate, then not a low one
        br#"{"func": "\x"}"#,           // unknown escape
        br#"{"func": "\u12"}"#,         // short \u
        b"{\"func\": \"a\nb\"}",        // raw control character
        b"{\"func\": \"\xff\"}",        // not UTF-8
        br#"{"func": "abc}"#,           // unterminated
    ] {
        let r = Request::parse(body);
        assert!(
            matches!(r, Err(BodyError::Syntax { .. } | BodyError::NotUtf8)),
            "{:?} -> {:?}",
            String::from_utf8_lossy(body),
            r
        );
    }
}

#[test]
fn numbers_follow_their_text() {
    let r = Request::parse(
        br#"{"func": "f", "args": [10, 10.0, 1e3, -0, -9223372036854775808, 1E-2, 0.5e+1]}"#,
    )
    .unwrap();
    assert_eq!(
        r.args.as_slice(),
        &[
            Value::Int(10),
            Value::Float(10.0),
            Value::Float(1000.0),
            Value::Int(0),
            Value::Int(i64::MIN),
            Value::Float(0.01),
            Value::Float(5.0)
        ]
    );
    for bad in [
        "01", "1.", ".5", "+1", "1e", "--1", "0x10", "NaN", "Infinity", "1.e3",
    ] {
        let body = format!(r#"{{"func": "f", "args": [{bad}]}}"#);
        assert!(
            matches!(
                Request::parse(body.as_bytes()),
                Err(BodyError::Syntax { .. })
            ),
            "{bad}"
        );
    }
    let big = br#"{"func": "f", "args": [-9223372036854775809]}"#;
    assert_eq!(Request::parse(big), Err(BodyError::IntegerOverflow));
    // An out-of-range integer in an ignored member is no error.
    assert!(Request::parse(br#"{"func": "f", "n": 99999999999999999999}"#).is_ok());
}

#[test]
fn structure_errors() {
    let cases: [(&[u8], BodyError); 8] = [
        (b"[1]", BodyError::NotAnObject),
        (b"\"x\"", BodyError::NotAnObject),
        (br#"{"args": [1]}"#, BodyError::Missing { member: "func" }),
        (
            br#"{"func": ["add"]}"#,
            BodyError::WrongType { member: "func" },
        ),
        (
            br#"{"func": "f", "args": {"a": 1}}"#,
            BodyError::WrongType { member: "args" },
        ),
        (
            br#"{"func": "f", "func": "g"}"#,
            BodyError::Duplicate { member: "func" },
        ),
        (
            br#"{"func": "f", "args": [1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17]}"#,
            BodyError::TooManyArgs,
        ),
        (br#"{"func": "f"} x"#, BodyError::Syntax { offset: 14 }),
    ];
    for (body, want) in cases {
        assert_eq!(
            Request::parse(body),
            Err(want),
            "{}",
            String::from_utf8_lossy(body)
        );
    }
    let deep = format!(
        r#"{{"func": "f", "x": {}{}}}"#,
        "[".repeat(40),
        "]".repeat(40)
    );
    assert_eq!(Request::parse(deep.as_bytes()), Err(BodyError::TooDeep));
    let ok = format!(
        r#"{{"func": "f", "x": {}{}}}"#,
        "[".repeat(32),
        "]".repeat(32)
    );
    assert!(Request::parse(ok.as_bytes()).is_ok());
}

#[test]
fn nested_arguments_arrive_as_raw_json() {
    let r = Request::parse(br#"{"func": "f", "args": [[1, 2], {"a": "b"}]}"#).unwrap();
    assert_eq!(
        r.args[0],
        Value::Raw(at_core::RawJson::parse("[1, 2]").unwrap())
    );
    assert_eq!(
        r.args[1],
        Value::Raw(at_core::RawJson::parse(r#"{"a": "b"}"#).unwrap())
    );
}

#[test]
fn decoder_reports_oversize_from_the_header_alone() {
    let mut decoder = FrameDecoder::<[u8; 64]>::new(1000);
    assert_eq!(decoder.max_body(), 48);
    let header = Header {
        length: 49,
        ..Header::new(Kind::Request, 5, b"")
    };
    decoder.push(&header.to_bytes());
    let e = decoder.next_frame().unwrap_err();
    assert_eq!(e.code(), at_core::ErrorCode::FrameTooLarge);
    assert_eq!(e.seq(), 5);
    assert!(e.loses_sync());
}

#[test]
fn decoder_reports_bad_magic_after_two_bytes() {
    let mut decoder = FrameDecoder::<[u8; 64]>::new(48);
    decoder.push(b"G");
    assert!(decoder.next_frame().unwrap().is_none());
    decoder.push(b"E");
    assert!(matches!(
        decoder.next_frame(),
        Err(FrameError::Header { seq: 0, .. })
    ));
    // Sticky until resync.
    assert!(decoder.next_frame().is_err());
    assert_eq!(decoder.resync(), 2);
    assert_eq!(decoder.buffered(), 0);
}

#[test]
fn decoder_keeps_step_after_a_bad_crc() {
    let mut wire = encode(Kind::Request, 1, b"{}");
    wire[HEADER_LEN] ^= 0xff;
    wire.extend(encode(Kind::Request, 2, b"[]"));
    let mut decoder = FrameDecoder::<[u8; 64]>::new(48);
    decoder.push(&wire);
    assert!(matches!(
        decoder.next_frame(),
        Err(FrameError::ChecksumMismatch { seq: 1, .. })
    ));
    assert_eq!(decoder.next_frame().unwrap().unwrap().seq(), 2);
}

#[test]
fn resync_keeps_a_trailing_magic_byte() {
    let mut decoder = FrameDecoder::<[u8; 64]>::new(48);
    decoder.push(b"xyzA");
    assert!(decoder.next_frame().is_err());
    assert_eq!(decoder.resync(), 3);
    decoder.push(&encode(Kind::Request, 9, b"{}")[1..]);
    assert_eq!(decoder.next_frame().unwrap().unwrap().seq(), 9);
}
