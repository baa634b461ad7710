//! Runs every frame in `tests/vectors/frames.json` through the decoder, the
//! datagram parser, the encoder and the calculator server path, and checks
//! each answer byte for byte.

use at_core::calculator::CALCULATOR;
use at_core::{Frame, FrameDecoder, FrameError, HEADER_LEN, Header, Kind};
use serde_json::Value as Json;

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn vectors() -> (u32, Vec<Json>) {
    // Read and parsed once for all the tests (Miri is slow at it).
    static FILE: std::sync::OnceLock<(u32, Vec<Json>)> = std::sync::OnceLock::new();
    FILE.get_or_init(|| {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/vectors/frames.json");
        let text = std::fs::read_to_string(path).expect("read frames.json");
        let file: Json = serde_json::from_str(&text).expect("frames.json is JSON");
        let max_body = file["max_body"].as_u64().expect("max_body") as u32;
        let mut vectors = file["vectors"].as_array().expect("vectors").clone();
        // Under Miri, leave out the one 64 KiB frame (`max_length_body`):
        // fed byte by byte and hex-formatted it alone takes many minutes in
        // the interpreter, and exercises the same code as the small frames.
        if cfg!(miri) {
            vectors.retain(|v| v["frame"].as_str().is_some_and(|hex| hex.len() <= 8192));
        }
        (max_body, vectors)
    })
    .clone()
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Request => "request",
        Kind::Response => "response",
        Kind::Error => "error",
        Kind::Notify => "notify",
    }
}

/// What a decoded frame or error looks like, in the vectors' terms.
fn describe(result: Result<Frame<'_>, FrameError>) -> Json {
    match result {
        Ok(frame) => serde_json::json!({
            "kind": kind_name(frame.kind),
            "flags": frame.header.flags,
            "seq": frame.header.seq,
            "body": std::str::from_utf8(frame.body).expect("utf-8 body"),
        }),
        Err(e) => serde_json::json!({"error": e.code().as_str(), "seq": e.seq()}),
    }
}

#[test]
fn there_are_at_least_twenty_vectors() {
    assert!(vectors().1.len() >= 20);
}

#[test]
fn datagram_parser_matches_every_vector() {
    let (max_body, vectors) = vectors();
    for v in &vectors {
        let wire = unhex(v["frame"].as_str().unwrap());
        let got = match Frame::parse(&wire, max_body) {
            // An oversize header arrives alone: as a datagram its size is
            // wrong too, but the length limit is what a receiver reports.
            Err(FrameError::SizeMismatch { .. }) => {
                let head: &[u8; HEADER_LEN] = wire[..HEADER_LEN].try_into().unwrap();
                let header = Header::from_bytes(head);
                let error = header
                    .check(max_body)
                    .expect_err(v["name"].as_str().unwrap());
                describe(Err(FrameError::Header {
                    seq: header.seq,
                    error,
                }))
            }
            other => describe(other),
        };
        assert_eq!(got, v["decode"], "vector {}", v["name"]);
    }
}

#[test]
fn stream_decoder_matches_every_vector_fed_byte_by_byte() {
    let (max_body, vectors) = vectors();
    let mut decoder =
        FrameDecoder::with_buffer(vec![0u8; HEADER_LEN + max_body as usize], max_body);
    for v in &vectors {
        decoder.clear();
        let wire = unhex(v["frame"].as_str().unwrap());
        let mut got = None;
        for &byte in &wire {
            assert_eq!(decoder.push(&[byte]), 1);
            match decoder.next_frame() {
                Ok(None) => continue,
                other => {
                    got = Some(describe(other.map(|f| f.expect("some"))));
                    break;
                }
            }
        }
        assert_eq!(got.as_ref(), Some(&v["decode"]), "vector {}", v["name"]);
    }
}

#[test]
fn encoder_rebuilds_every_good_frame() {
    let (_, vectors) = vectors();
    for v in vectors.iter().filter(|v| v["decode"]["kind"].is_string()) {
        let d = &v["decode"];
        let body = d["body"].as_str().unwrap().as_bytes();
        let flags = d["flags"].as_u64().unwrap() as u16;
        let kind = Kind::from_flags(flags).unwrap();
        let mut header = Header::new(kind, d["seq"].as_u64().unwrap() as u32, body);
        header.flags = flags;
        let mut wire = header.to_bytes().to_vec();
        wire.extend_from_slice(body);
        assert_eq!(
            hex(&wire),
            v["frame"].as_str().unwrap(),
            "vector {}",
            v["name"]
        );
        if flags == kind.flag() {
            let mut out = vec![0u8; wire.len()];
            let n = at_core::encode_frame(kind, header.seq, body, &mut out).unwrap();
            assert_eq!(&out[..n], &wire[..], "vector {}", v["name"]);
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn calculator_server_answers_every_vector_byte_for_byte() {
    let (max_body, vectors) = vectors();
    let mut decoder =
        FrameDecoder::with_buffer(vec![0u8; HEADER_LEN + max_body as usize], max_body);
    let mut out = [0u8; 512];
    for v in &vectors {
        let wire = unhex(v["frame"].as_str().unwrap());
        let expected = v["reply_frame"].as_str().map(str::to_owned);
        // The stream path: decoder, then respond or respond_to_error.
        decoder.clear();
        decoder.push(&wire);
        let n = match decoder.next_frame() {
            Ok(Some(frame)) => at_core::respond(&CALCULATOR, &frame, &mut out),
            Ok(None) => panic!("vector {} did not decode", v["name"]),
            Err(e) => at_core::respond_to_error(&e, &mut out),
        };
        assert_eq!(n.map(|n| hex(&out[..n])), expected, "vector {}", v["name"]);
        // The reply's meaning, as the vector states it.
        if let Some(n) = n {
            let reply = Frame::parse(&out[..n], max_body).unwrap();
            assert_eq!(
                kind_name(reply.kind),
                v["reply"]["kind"],
                "vector {}",
                v["name"]
            );
            assert_eq!(reply.seq() as u64, v["reply"]["seq"].as_u64().unwrap());
            let body: Json = serde_json::from_slice(reply.body).unwrap();
            match reply.kind {
                Kind::Response => {
                    assert_eq!(body["result"], v["reply"]["result"], "vector {}", v["name"])
                }
                _ => assert_eq!(body["code"], v["reply"]["code"], "vector {}", v["name"]),
            }
        }
        // The datagram path gives the same answer for whole frames.
        if wire.len() >= HEADER_LEN && v["name"] != "oversize_length" {
            let m = at_core::respond_to_bytes(&CALCULATOR, &wire, max_body, &mut out);
            assert_eq!(
                m.map(|m| hex(&out[..m])),
                expected,
                "datagram vector {}",
                v["name"]
            );
        }
    }
}
