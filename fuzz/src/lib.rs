//! The invariants the fuzz targets check, one function per target.
//!
//! Each `check_*` function takes the fuzzer's raw input and panics when
//! at-core breaks one of its promises. The same functions run the saved
//! crash inputs as plain tests: `at-core/tests/fuzz_regressions.rs` includes
//! this file as a module, so it uses only `std`, `at_core` and `serde_json`
//! (and nothing crate-level).
//!
//! Input layouts (the first bytes steer the run, the rest is the data):
//! - [`check_decoder`]: `[mode] [chunk sizes: (mode >> 3) & 15 bytes] stream`;
//!   `mode & 7` picks the body limit, `mode & 0x80` feeds through
//!   `spare`/`commit` instead of `push`
//! - [`check_body`]: the body itself, no prefix
//! - [`check_respond`]: `[max body choice] [reply buffer choice] [chunk size] frame`
//! - [`check_auth`]: a script of ops (see there)
//! - [`check_event`]: the body itself, no prefix (an event body, contract
//!   section 10.3, or any NOTIFY body)

use std::cmp::Ordering;

use at_core::calculator::CALCULATOR;
use at_core::event::{Event as EventBody, OneWay, Payload};
use at_core::{
    BodyError, ErrorCode, Frame, FrameDecoder, FrameError, HEADER_LEN, Header, HeaderError,
    JsonStr, Kind, MAGIC, MIN_REPLY_BUFFER, Reply, Request, Value,
};
use serde_json::Value as Json;

const MAGIC_BYTES: [u8; 2] = MAGIC.to_be_bytes();

/// The body limits the fuzzer picks from (low 3 bits of a config byte).
pub const MAX_BODIES: [u32; 8] = [0, 1, 16, 48, 100, 1000, 65536, u32::MAX];

/// The capacity of the large decoder buffer: a 64 KiB body and its header.
pub const BIG_BUFFER: usize = 65536 + HEADER_LEN;

/// The small array buffer (bodies of at most 48 bytes).
pub const SMALL_BUFFER: usize = 64;

fn take<'a>(data: &mut &'a [u8], n: usize) -> &'a [u8] {
    let n = n.min(data.len());
    let (head, rest) = data.split_at(n);
    *data = rest;
    head
}

fn byte(data: &mut &[u8]) -> u8 {
    take(data, 1).first().copied().unwrap_or(0)
}

/// A chunk size from one byte: 1..=192 bytes, or 1..=63 KiB.
pub fn chunk_size(b: u8) -> usize {
    if b < 0xC0 {
        usize::from(b) + 1
    } else {
        usize::from(b - 0xBF) * 1024
    }
}

// ---------------------------------------------------------------------------
// decoder

/// What the decoder reported, minus what depends on chunking (bad-magic
/// errors and how many bytes each resync skipped).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Event {
    Frame {
        at: usize,
        header: Header,
        kind: Kind,
    },
    Error {
        at: usize,
        error: FrameError,
    },
}

#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    events: Vec<Event>,
    /// Bytes still buffered at the end, and where they start.
    buffered: usize,
    front: usize,
}

/// What the decoder must answer for the buffered bytes `front`
/// (`docs/PROTOCOL.md` section 1, "How a receiver checks a frame").
#[derive(Debug)]
enum Expect {
    Partial,
    BadMagic(u16),
    TooLarge(Header),
    /// Whole frame (header, then exactly `length` body bytes) is buffered.
    Whole(Header),
}

fn expect(front: &[u8], max_body: u32) -> Expect {
    if front.len() < 2 {
        return Expect::Partial;
    }
    let magic = u16::from_be_bytes([front[0], front[1]]);
    if magic != MAGIC {
        return Expect::BadMagic(magic);
    }
    let Some(head) = front.first_chunk::<HEADER_LEN>() else {
        return Expect::Partial;
    };
    let header = Header::from_bytes(head);
    if header.length > max_body {
        return Expect::TooLarge(header);
    }
    if front.len() - HEADER_LEN < header.length as usize {
        return Expect::Partial;
    }
    Expect::Whole(header)
}

/// Checks a frame the decoder (or the datagram parser) returned: it is
/// exactly `wire` (header and body as received), its CRC and kind hold, and
/// both re-encodings of it parse back to the same frame.
fn check_frame(frame: &Frame<'_>, wire: &[u8], max_body: u32) {
    let header = frame.header;
    assert_eq!(frame.body.len(), header.length as usize);
    assert!(header.length <= max_body, "{header:?} over {max_body}");
    assert_eq!(&wire[..HEADER_LEN], &header.to_bytes());
    assert_eq!(&wire[HEADER_LEN..], frame.body);
    assert_eq!(Kind::from_flags(header.flags), Ok(frame.kind));
    assert_eq!(header.magic, MAGIC);
    assert_eq!(at_core::checksum(frame.body), header.crc);
    // Header + body, byte for byte, parse as one datagram.
    let mut again = header.to_bytes().to_vec();
    again.extend_from_slice(frame.body);
    assert_eq!(Frame::parse(&again, max_body).as_ref(), Ok(frame));
    // The encoder writes the same frame (reserved flag bits cleared).
    let mut out = vec![0u8; HEADER_LEN + frame.body.len()];
    let n = at_core::encode_frame(frame.kind, header.seq, frame.body, &mut out)
        .expect("encode_frame into an exact buffer");
    assert_eq!(n, out.len());
    let encoded = Frame::parse(&out, max_body).expect("the encoder's frame parses");
    assert_eq!(
        (encoded.seq(), encoded.kind, encoded.body),
        (header.seq, frame.kind, frame.body)
    );
    assert_eq!(encoded.header.flags, frame.kind.flag());
}

/// Feeds `stream` to `decoder` in pieces of `sizes` (cycled; empty means
/// all at once), takes every frame out, resyncs after each error that loses
/// sync, and checks each answer against [`expect`] and the bytes.
fn run_decoder<B: AsRef<[u8]> + AsMut<[u8]>>(
    decoder: &mut FrameDecoder<B>,
    capacity: usize,
    stream: &[u8],
    sizes: &[usize],
    in_place: bool,
) -> Outcome {
    let max_body = decoder.max_body();
    assert!(max_body as usize <= capacity.saturating_sub(HEADER_LEN));
    let mut events = Vec::new();
    // Bytes pushed so far; the buffer holds stream[pushed - buffered..pushed].
    let mut pushed = 0usize;
    let (mut in_frames, mut in_errors, mut skipped) = (0usize, 0usize, 0usize);
    let mut sizes = sizes.iter().copied().cycle();
    while pushed < stream.len() {
        let n = sizes
            .next()
            .unwrap_or(stream.len())
            .min(stream.len() - pushed);
        let mut chunk = &stream[pushed..pushed + n];
        while !chunk.is_empty() {
            let taken = if in_place {
                // As a driver reading straight into the buffer does.
                let spare = decoder.spare();
                let n = spare.len().min(chunk.len());
                spare[..n].copy_from_slice(&chunk[..n]);
                decoder.commit(n);
                n
            } else {
                decoder.push(chunk)
            };
            // After `next_frame` says "partial" there is always room.
            assert!(
                taken > 0,
                "push took nothing with {} buffered",
                decoder.buffered()
            );
            assert!(decoder.buffered() <= capacity);
            chunk = &chunk[taken..];
            pushed += taken;
            loop {
                let before = decoder.buffered();
                let at = pushed - before;
                let front = &stream[at..pushed];
                let want = expect(front, max_body);
                match decoder.next_frame() {
                    Ok(None) => {
                        assert!(matches!(want, Expect::Partial), "partial, want {want:?}");
                        break;
                    }
                    Ok(Some(frame)) => {
                        let Expect::Whole(header) = want else {
                            panic!("frame {frame:?}, want {want:?}");
                        };
                        assert_eq!(frame.header, header);
                        let total = HEADER_LEN + header.length as usize;
                        check_frame(&frame, &front[..total], max_body);
                        let kind = frame.kind;
                        assert_eq!(decoder.buffered(), before - total);
                        in_frames += total;
                        events.push(Event::Frame { at, header, kind });
                    }
                    Err(error) => {
                        check_decoder_error(&error, &want, front, max_body);
                        if error.loses_sync() {
                            // Sticky until resync.
                            assert_eq!(decoder.next_frame().err(), Some(error));
                            assert_eq!(decoder.buffered(), before);
                            let skip = decoder.resync();
                            assert!(skip >= 1, "resync skipped nothing of {before}");
                            assert_eq!(decoder.buffered(), before - skip);
                            check_resync(&stream[..pushed], at, at + skip);
                            skipped += skip;
                        } else {
                            // The whole frame is consumed.
                            let Expect::Whole(header) = want else {
                                unreachable!()
                            };
                            let total = HEADER_LEN + header.length as usize;
                            assert_eq!(decoder.buffered(), before - total);
                            in_errors += total;
                        }
                        if !matches!(
                            error,
                            FrameError::Header {
                                error: HeaderError::BadMagic { .. },
                                ..
                            }
                        ) {
                            events.push(Event::Error { at, error });
                        }
                    }
                }
            }
        }
    }
    let mut buffered = decoder.buffered();
    assert_eq!(in_frames + in_errors + skipped + buffered, pushed);
    assert!(pushed <= stream.len());
    // A last single byte is judged only when a second one comes (a resync
    // that saw it already skipped it): the same state for comparing runs.
    if buffered == 1 && stream[pushed - 1] != MAGIC_BYTES[0] {
        buffered = 0;
    }
    Outcome {
        events,
        buffered,
        front: pushed - buffered,
    }
}

fn check_decoder_error(error: &FrameError, want: &Expect, front: &[u8], max_body: u32) {
    match (*error, want) {
        (
            FrameError::Header {
                seq: 0,
                error: HeaderError::BadMagic { found },
            },
            Expect::BadMagic(magic),
        ) => assert_eq!(found, *magic),
        (
            FrameError::Header {
                seq,
                error: HeaderError::TooLarge { length, limit },
            },
            Expect::TooLarge(header),
        ) => assert_eq!((seq, length, limit), (header.seq, header.length, max_body)),
        (FrameError::Header { seq, error }, Expect::Whole(header)) => {
            assert_eq!(seq, header.seq);
            assert_eq!(Kind::from_flags(header.flags), Err(error));
        }
        (
            FrameError::ChecksumMismatch {
                seq,
                expected,
                computed,
            },
            Expect::Whole(header),
        ) => {
            assert!(Kind::from_flags(header.flags).is_ok());
            let body = &front[HEADER_LEN..HEADER_LEN + header.length as usize];
            assert_eq!((seq, expected), (header.seq, header.crc));
            assert_eq!(computed, at_core::checksum(body));
            assert_ne!(computed, expected);
        }
        (error, want) => panic!("decoder said {error:?}, want {want:?}"),
    }
    assert!(!matches!(error, FrameError::SizeMismatch { .. }));
    // (The reply to each error is checked by the `respond` target.)
}

/// After a resync from `from` to `to` with `seen` received: nothing skipped
/// could have started a frame, and `to` is the next place one could start
/// (the magic's two bytes, its first byte at the very end, or the end).
fn check_resync(seen: &[u8], from: usize, to: usize) {
    assert!(to > from && to <= seen.len());
    for q in from + 1..to {
        assert!(
            seen.get(q..q + 2) != Some(&MAGIC_BYTES[..])
                && !(q + 1 == seen.len() && seen[q] == MAGIC_BYTES[0]),
            "resync from {from} to {to} skipped a possible frame start at {q}"
        );
    }
    if to < seen.len() {
        assert_eq!(
            seen[to], MAGIC_BYTES[0],
            "resync stopped at {to}, not on a magic"
        );
        if to + 1 < seen.len() {
            assert_eq!(
                seen[to + 1],
                MAGIC_BYTES[1],
                "resync stopped at {to}, not on a magic"
            );
        }
    }
}

/// The `decoder` target: arbitrary bytes in arbitrary chunks into a 64-byte
/// array decoder, a 64 KiB one and one of an odd size; each must agree with
/// a one-shot (or byte-by-byte) feed.
pub fn check_decoder(data: &[u8]) {
    let mut data = data;
    let mode = byte(&mut data);
    let max_body = MAX_BODIES[usize::from(mode & 7)];
    let count = usize::from((mode >> 3) & 15);
    // Top bit: the chunked runs fill `spare()` and `commit()` instead of `push`.
    let in_place = mode & 0x80 != 0;
    let sizes: Vec<usize> = take(&mut data, count)
        .iter()
        .map(|&b| chunk_size(b))
        .collect();
    let stream = data;

    let mut small = FrameDecoder::<[u8; SMALL_BUFFER]>::new(max_body);
    let chunked = run_decoder(&mut small, SMALL_BUFFER, stream, &sizes, in_place);
    let mut small = FrameDecoder::<[u8; SMALL_BUFFER]>::new(max_body);
    let whole = run_decoder(&mut small, SMALL_BUFFER, stream, &[], false);
    assert_eq!(chunked, whole, "the small decoder depends on chunking");

    // Any capacity from a bare header up (below that no frame fits).
    let odd = HEADER_LEN + stream.len() % 251;
    let mut decoder = FrameDecoder::with_buffer(vec![0u8; odd], max_body);
    let chunked = run_decoder(&mut decoder, odd, stream, &sizes, in_place);
    let mut decoder = FrameDecoder::with_buffer(vec![0u8; odd], max_body);
    let whole = run_decoder(&mut decoder, odd, stream, &[], false);
    assert_eq!(chunked, whole, "the {odd}-byte decoder depends on chunking");

    let mut big = FrameDecoder::with_buffer(vec![0u8; BIG_BUFFER], max_body);
    let chunked = run_decoder(&mut big, BIG_BUFFER, stream, &sizes, in_place);
    // Byte by byte too, when that stays cheap.
    let one: &[usize] = if stream.len() <= 4096 { &[1] } else { &[] };
    let mut big = FrameDecoder::with_buffer(vec![0u8; BIG_BUFFER], max_body);
    let whole = run_decoder(&mut big, BIG_BUFFER, stream, one, false);
    assert_eq!(chunked, whole, "the 64 KiB decoder depends on chunking");
    // clear() forgets everything.
    big.clear();
    assert_eq!(big.buffered(), 0);
    assert!(matches!(big.next_frame(), Ok(None)));
}

// ---------------------------------------------------------------------------
// body

/// serde_json's verdict on a body.
enum Verdict {
    Valid(Json),
    /// Valid syntax as far as serde_json read, but a number it cannot hold
    /// (only without its `arbitrary_precision` feature).
    OutOfRange,
    Invalid,
}

fn serde_verdict(data: &[u8]) -> Verdict {
    match serde_json::from_slice::<Json>(data) {
        Ok(json) => Verdict::Valid(json),
        Err(e) if e.to_string().starts_with("number out of range") => Verdict::OutOfRange,
        Err(_) => Verdict::Invalid,
    }
}

/// True when serde_json keeps numbers as their text (`arbitrary_precision`,
/// as the fuzz crate builds it), so doubles can be compared bit for bit.
fn serde_keeps_number_text() -> bool {
    serde_json::from_str::<Json>("1e400").is_ok()
}

/// Equality that tells 10 from 10.0, compares doubles by bits and strings
/// by their characters.
pub fn same(a: &Value<'_>, b: &Value<'_>) -> bool {
    match (a, b) {
        (Value::Float(x), Value::Float(y)) => x.to_bits() == y.to_bits(),
        (Value::Str(x), Value::Str(y)) => x.chars().eq(y.chars()),
        _ => a == b,
    }
}

fn text(s: &JsonStr<'_>) -> String {
    s.chars().collect()
}

/// A string read from a body: its length, unescaping and equality agree
/// with its characters.
fn check_str(s: &JsonStr<'_>) {
    let chars = text(s);
    assert_eq!(s.len(), chars.len());
    assert_eq!(s.is_empty(), chars.is_empty());
    assert!(*s == chars.as_str());
    assert!(*s == JsonStr::new(&chars));
    let mut buf = vec![0u8; chars.len()];
    assert_eq!(s.unescape_into(&mut buf), Some(chars.as_str()));
    if !chars.is_empty() {
        assert_eq!(s.unescape_into(&mut buf[..chars.len() - 1]), None);
    }
    if let Some(plain) = s.as_plain() {
        assert_eq!(plain, chars);
    }
    assert_eq!(s.to_string(), chars);
}

/// A value read from a body: strings as [`check_str`], and its `Display`
/// form (JSON) reads back as the same value.
fn check_read_value(value: &Value<'_>) {
    if let Value::Str(s) = value {
        check_str(s);
    }
    let shown = value.to_string();
    match value {
        Value::Float(x) if !x.is_finite() => assert_eq!(shown, "null"),
        _ => {
            let again = Value::parse(&shown).unwrap_or_else(|e| panic!("{e:?} reading {shown:?}"));
            assert!(same(value, &again), "{value:?} shown as {shown:?}");
        }
    }
}

/// Our value and serde_json's reading of the same text agree.
fn agrees(ours: &Value<'_>, theirs: &Json) {
    match (ours, theirs) {
        (Value::Null, Json::Null) => {}
        (Value::Bool(a), Json::Bool(b)) => assert_eq!(a, b),
        (Value::Int(i), Json::Number(n)) => {
            assert_eq!(n.as_i64(), Some(*i), "{n}");
            if serde_keeps_number_text() {
                assert!(
                    !n.to_string().contains(['.', 'e', 'E']),
                    "{n} read as an integer"
                );
            }
        }
        (Value::Float(x), Json::Number(n)) => {
            if serde_keeps_number_text() {
                let source = n.to_string();
                assert!(
                    source.contains(['.', 'e', 'E']),
                    "{source} read as a double"
                );
                let core: f64 = source.parse().expect("core parses what serde_json read");
                assert_eq!(
                    x.to_bits(),
                    core.to_bits(),
                    "{source}: ours {x:e}, core {core:e}"
                );
            }
        }
        (Value::Str(s), Json::String(t)) => assert_eq!(&text(s), t),
        (Value::Raw(raw), json @ (Json::Array(_) | Json::Object(_))) => {
            let again: Json = serde_json::from_str(raw.as_str()).expect("raw JSON is JSON");
            assert_eq!(&again, json);
        }
        (ours, theirs) => panic!("ours {ours:?}, serde_json {theirs}"),
    }
}

fn is_json_ws(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

fn check_request(data: &[u8]) {
    let parsed = Request::parse(data);
    let verdict = serde_verdict(data);
    let request = match parsed {
        Ok(request) => request,
        Err(BodyError::NotUtf8) => {
            assert!(std::str::from_utf8(data).is_err());
            assert!(matches!(verdict, Verdict::Invalid));
            return;
        }
        Err(BodyError::Syntax { offset }) => {
            assert!(offset <= data.len());
            assert!(
                matches!(verdict, Verdict::Invalid),
                "ours: syntax error at {offset}"
            );
            return;
        }
        Err(BodyError::NotAnObject) => {
            if let Verdict::Valid(json) = verdict {
                assert!(!json.is_object());
            } else {
                assert!(matches!(verdict, Verdict::OutOfRange));
            }
            return;
        }
        Err(
            e @ (BodyError::Missing { .. }
            | BodyError::TooManyArgs
            | BodyError::IntegerOverflow
            | BodyError::FloatUnsupported),
        ) => {
            // Found after the whole body was read: it is valid JSON.
            match verdict {
                Verdict::Valid(json) => match e {
                    BodyError::Missing { member } => assert!(json.get(member).is_none()),
                    BodyError::TooManyArgs => {
                        assert!(json["args"].as_array().expect("args").len() > at_core::MAX_ARGS)
                    }
                    _ => {}
                },
                Verdict::OutOfRange => {}
                Verdict::Invalid => {
                    panic!("ours {e:?} (after reading it all), serde_json: invalid")
                }
            }
            return;
        }
        // Found before the end (or, too deep, past serde's view): no claim.
        Err(BodyError::TooDeep | BodyError::WrongType { .. } | BodyError::Duplicate { .. }) => {
            return;
        }
    };
    assert!(request.args.len() <= at_core::MAX_ARGS);
    check_str(&request.func);
    request.args.iter().for_each(check_read_value);
    match verdict {
        Verdict::Valid(json) => {
            assert_eq!(json["func"].as_str(), Some(text(&request.func).as_str()));
            let args = match json.get("args") {
                None => &[][..],
                Some(args) => args.as_array().expect("args is an array"),
            };
            assert_eq!(args.len(), request.args.len());
            for (ours, theirs) in request.args.iter().zip(args) {
                agrees(ours, theirs);
            }
        }
        Verdict::OutOfRange => {}
        Verdict::Invalid => panic!("ours accepted {request:?}, serde_json rejects it"),
    }

    // Written in the canonical form and read again: the same call.
    let func = text(&request.func);
    let mut out = vec![0u8; data.len() * 2 + 1024];
    let finite = request
        .args
        .iter()
        .all(|v| !matches!(v, Value::Float(x) if !x.is_finite()));
    let n = match Request::write(&func, &request.args, &mut out) {
        Ok(n) => n,
        Err(at_core::EncodeError::NotFinite) if !finite => return,
        Err(e) => panic!("cannot rewrite {request:?}: {e:?}"),
    };
    assert!(finite, "wrote a request with a double that is not finite");
    let written = &out[..n];
    let again = Request::parse(written)
        .unwrap_or_else(|e| panic!("{e:?} reading {:?}", String::from_utf8_lossy(written)));
    assert!(
        again.func == request.func,
        "{:?} != {:?}",
        again.func,
        request.func
    );
    assert_eq!(again.args.len(), request.args.len());
    for (a, b) in again.args.iter().zip(&request.args) {
        assert!(same(a, b), "{a:?} != {b:?}");
    }
    assert!(serde_json::from_slice::<Json>(written).is_ok() || !serde_keeps_number_text());
    // Canonical: writing it again changes nothing.
    let mut twice = vec![0u8; n + 64];
    let m = Request::write(&text(&again.func), &again.args, &mut twice).expect("rewrite");
    assert_eq!(&twice[..m], written);
}

fn check_reply(data: &[u8]) {
    let Ok(reply) = Reply::parse(data) else {
        return;
    };
    match &reply {
        Reply::Success(value) => check_read_value(value),
        Reply::Error(e) => {
            check_str(&e.code);
            check_str(&e.message);
            assert_eq!(e.error_code(), ErrorCode::from_name(&text(&e.code)));
        }
    }
    match serde_verdict(data) {
        Verdict::Valid(json) => match &reply {
            Reply::Success(value) => {
                assert_eq!(json["status"], "success");
                agrees(value, &json["result"]);
            }
            Reply::Error(e) => {
                assert_eq!(json["status"], "error");
                assert_eq!(json["code"].as_str(), Some(text(&e.code).as_str()));
                let message = json.get("message").map(|m| m.as_str().expect("message"));
                assert_eq!(message.unwrap_or(""), text(&e.message));
            }
        },
        Verdict::OutOfRange => {}
        Verdict::Invalid => panic!("ours accepted {reply:?}, serde_json rejects it"),
    }
    let mut out = vec![0u8; data.len() * 2 + 1024];
    let n = match reply.write(&mut out) {
        Ok(n) => n,
        Err(at_core::EncodeError::NotFinite) => {
            assert!(matches!(reply, Reply::Success(Value::Float(x)) if !x.is_finite()));
            return;
        }
        Err(e) => panic!("cannot rewrite {reply:?}: {e:?}"),
    };
    let again = Reply::parse(&out[..n]).expect("a written reply reads back");
    match (&reply, &again) {
        (Reply::Success(a), Reply::Success(b)) => assert!(same(a, b), "{a:?} != {b:?}"),
        (Reply::Error(a), Reply::Error(b)) => {
            assert!(a.code == b.code && a.message == b.message, "{a:?} != {b:?}")
        }
        _ => panic!("{reply:?} read back as {again:?}"),
    }
}

fn check_value(text_in: &str) {
    let verdict = serde_verdict(text_in.as_bytes());
    match at_core::Value::parse(text_in) {
        Ok(value) => {
            check_read_value(&value);
            match &verdict {
                Verdict::Valid(json) => agrees(&value, json),
                Verdict::OutOfRange => {}
                Verdict::Invalid => panic!("ours read {value:?}, serde_json rejects it"),
            }
            // A double is what core's parser makes of its text (this is
            // what tests the `small-float` reader).
            if let Value::Float(x) = value {
                let core: f64 = text_in
                    .trim_matches(is_json_ws)
                    .parse()
                    .expect("core parses it");
                assert_eq!(x.to_bits(), core.to_bits(), "{text_in:?}");
            }
            // Written and read again: the same value.
            let mut out = vec![0u8; text_in.len() * 2 + 128];
            match Reply::Success(value).write(&mut out) {
                Ok(n) => {
                    let again = Reply::parse(&out[..n]).expect("written value reads back");
                    let Reply::Success(again) = again else {
                        panic!()
                    };
                    assert!(same(&value, &again), "{value:?} != {again:?}");
                }
                Err(at_core::EncodeError::NotFinite) => {
                    assert!(matches!(value, Value::Float(x) if !x.is_finite()))
                }
                Err(e) => panic!("cannot write {value:?}: {e:?}"),
            }
        }
        Err(BodyError::Syntax { .. }) => {
            assert!(matches!(verdict, Verdict::Invalid), "ours: syntax error");
        }
        Err(BodyError::IntegerOverflow) => match verdict {
            Verdict::Valid(json) => assert!(json.is_number()),
            Verdict::OutOfRange => {}
            Verdict::Invalid => panic!("ours: integer overflow; serde_json: invalid"),
        },
        Err(_) => {}
    }
}

fn check_raw(text_in: &str) {
    match at_core::RawJson::parse(text_in) {
        Ok(raw) => {
            assert_eq!(raw.as_str(), text_in.trim_matches(is_json_ws));
            match serde_verdict(text_in.as_bytes()) {
                Verdict::Valid(json) => {
                    let again: Json = serde_json::from_str(raw.as_str()).expect("raw is JSON");
                    assert_eq!(again, json);
                }
                Verdict::OutOfRange => {}
                Verdict::Invalid => panic!("ours accepted raw {raw:?}, serde_json rejects it"),
            }
        }
        Err(BodyError::Syntax { .. }) => {
            assert!(matches!(
                serde_verdict(text_in.as_bytes()),
                Verdict::Invalid
            ));
        }
        Err(_) => {}
    }
}

/// The `body` target: request, reply and value readers on any bytes.
pub fn check_body(data: &[u8]) {
    check_request(data);
    check_reply(data);
    if let Ok(text_in) = std::str::from_utf8(data) {
        check_value(text_in);
        check_raw(text_in);
    }
}

// ---------------------------------------------------------------------------
// event

/// Two events are the same: topic by characters, `n`, and the payload
/// (values as [`same`]).
fn same_event(a: &EventBody<'_>, b: &EventBody<'_>) -> bool {
    a.topic.chars().eq(b.topic.chars())
        && a.n == b.n
        && match (&a.payload, &b.payload) {
            (Payload::Value(x), Payload::Value(y)) => same(x, y),
            (Payload::End(x), Payload::End(y)) => x == y,
            _ => false,
        }
}

/// The `event` target: [`EventBody::parse`] and [`OneWay::parse`] on any bytes
/// never panic; an event they accept serde_json accepts and reads the same
/// (topic, `n`, value or end); what they call a syntax error serde_json
/// rejects; an event survives write -> parse unchanged, and the written
/// form is canonical (writing the reread event gives the same bytes).
pub fn check_event(data: &[u8]) {
    let verdict = serde_verdict(data);
    match EventBody::parse(data) {
        Ok(event) => {
            check_str(&event.topic);
            if let Payload::Value(v) = &event.payload {
                check_read_value(v);
            }
            match &verdict {
                Verdict::Valid(json) => {
                    assert_eq!(json["topic"].as_str(), Some(text(&event.topic).as_str()));
                    // As an i64: serde_json (keeping the number's text)
                    // reads `-0`, the integer 0, as no u64 at all.
                    assert_eq!(json["n"].as_i64(), Some(i64::from(event.n)));
                    match &event.payload {
                        Payload::Value(v) => agrees(v, &json["value"]),
                        Payload::End(e) => {
                            assert_eq!(json["end"].as_str(), Some(e.as_str()));
                            assert!(json.get("value").is_none());
                        }
                    }
                }
                Verdict::OutOfRange => {}
                Verdict::Invalid => panic!("ours accepted {event:?}, serde_json rejects it"),
            }
            let mut out = vec![0u8; data.len() * 2 + 1024];
            let n = match event.write(&mut out) {
                Ok(n) => n,
                Err(at_core::EncodeError::NotFinite) => {
                    assert!(
                        matches!(event.payload, Payload::Value(Value::Float(x)) if !x.is_finite())
                    );
                    return;
                }
                Err(e) => panic!("cannot rewrite {event:?}: {e:?}"),
            };
            let again = EventBody::parse(&out[..n])
                .unwrap_or_else(|e| panic!("{e:?} rereading {:?}", text_of(&out[..n])));
            assert!(
                same_event(&event, &again),
                "{event:?} read back as {again:?}"
            );
            let mut twice = vec![0u8; n + 16];
            let m = again.write(&mut twice).expect("a reread event writes");
            assert_eq!(&twice[..m], &out[..n], "the written form is not canonical");
            // A NOTIFY body with topic and no func is this event.
            if let Ok(OneWay::Event(e)) = OneWay::parse(data) {
                assert!(same_event(&event, &e), "{event:?} != {e:?}");
            }
        }
        Err(BodyError::NotUtf8) => {
            assert!(std::str::from_utf8(data).is_err());
        }
        Err(BodyError::Syntax { offset }) => {
            assert!(offset <= data.len());
            assert!(
                matches!(verdict, Verdict::Invalid),
                "ours: syntax error at {offset}"
            );
        }
        Err(_) => {}
    }
    // The NOTIFY reader: a call when `func` is there (as Request::parse),
    // else an event (as EventBody::parse).
    match OneWay::parse(data) {
        Ok(OneWay::Call(request)) => {
            assert_eq!(Request::parse(data).as_ref(), Ok(&request));
        }
        Ok(OneWay::Event(event)) => {
            assert!(matches!(
                Request::parse(data),
                Err(BodyError::Missing { member: "func" })
            ));
            assert!(EventBody::parse(data).is_ok_and(|e| same_event(&e, &event)));
        }
        Err(_) => {}
    }
}

fn text_of(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

// ---------------------------------------------------------------------------
// respond

/// Checks a reply frame: a valid RESPONSE or ERROR frame with `seq`, whose
/// body reads as a reply of the matching kind; returns the reply's outcome.
fn check_reply_frame(wire: &[u8], seq: u32) -> Result<ReplyValue, String> {
    let frame = Frame::parse(wire, u32::MAX).expect("a reply is a valid frame");
    assert_eq!(frame.seq(), seq, "reply seq");
    assert_eq!(
        frame.header.flags,
        frame.kind.flag(),
        "reserved bits are clear"
    );
    // An integers-only build (at-core without `float`) writes double
    // results (`div`) but does not read them: read those here.
    const SUCCESS: &[u8] = b"{\"status\": \"success\", \"result\": ";
    let reply = match Reply::parse(frame.body) {
        Ok(reply) => reply,
        Err(BodyError::FloatUnsupported) if cfg!(not(feature = "float")) => {
            let number = frame
                .body
                .strip_prefix(SUCCESS)
                .and_then(|rest| rest.strip_suffix(b"}"))
                .and_then(|n| std::str::from_utf8(n).ok())
                .expect("a canonical success reply");
            Reply::Success(Value::Float(number.parse().expect("a double")))
        }
        Err(e) => panic!(
            "{e:?} reading reply body {:?}",
            String::from_utf8_lossy(frame.body)
        ),
    };
    assert!(
        serde_json::from_slice::<Json>(frame.body).is_ok(),
        "reply body is JSON"
    );
    assert_eq!(reply.kind(), frame.kind);
    // Canonical: the reply written again is the same body.
    let mut again = vec![0u8; frame.body.len() + 16];
    let n = reply.write(&mut again).expect("rewrite reply");
    assert_eq!(&again[..n], frame.body, "reply body is canonical");
    Ok(match reply {
        Reply::Success(Value::Int(i)) => ReplyValue::Int(i),
        Reply::Success(Value::Float(x)) => ReplyValue::Float(x),
        // Only `rpc.*` answer anything but numbers.
        Reply::Success(other) => ReplyValue::Other(format!("{other:?}")),
        Reply::Error(e) => {
            let code = e.error_code().expect("a contract error code");
            assert!(!e.message.is_empty(), "an error reply has a message");
            return Err(code.as_str().to_owned());
        }
    })
}

#[derive(Debug, PartialEq)]
enum ReplyValue {
    Int(i64),
    Float(f64),
    /// Any other success value (the `rpc.*` functions'), as `Debug` text.
    Other(String),
}

/// The contract's answer to a request body (`docs/PROTOCOL.md` sections 2
/// to 4), computed independently of at-core's calculator.
#[derive(Debug)]
enum Model {
    Answer(Result<ReplyValue, String>),
    /// `div` of two integers (divisor not 0): the correctly rounded quotient,
    /// checked exactly by [`check_quotient`].
    IntDiv(i64, i64),
    /// A call of an `rpc.*` function (contract section 7) with this many
    /// arguments: checked by [`check_rpc`].
    Rpc(String, usize),
}

fn model_reply(body: &[u8]) -> Model {
    let error = |code: ErrorCode| Model::Answer(Err(code.as_str().to_owned()));
    let request = match Request::parse(body) {
        Ok(request) => request,
        Err(e) => return error(e.code()),
    };
    let func = text(&request.func);
    if func.starts_with("rpc.") && func.len() <= at_core::MAX_FUNC_NAME {
        return Model::Rpc(func, request.args.len());
    }
    if func.len() > at_core::MAX_FUNC_NAME || !["add", "sub", "mul", "div"].contains(&func.as_str())
    {
        return error(ErrorCode::UnknownFunction);
    }
    // Ok(integer) or Err(double); booleans are not numbers.
    let number = |v: &Value<'_>| match *v {
        Value::Int(i) => Some(Ok(i)),
        Value::Float(x) => Some(Err(x)),
        _ => None,
    };
    let (a, b) = match request.args.as_slice() {
        [a, b] => match (number(a), number(b)) {
            (Some(a), Some(b)) => (a, b),
            _ => return error(ErrorCode::InvalidArguments),
        },
        _ => return error(ErrorCode::InvalidArguments),
    };
    if cfg!(not(feature = "float")) && (a.is_err() || b.is_err()) {
        return error(ErrorCode::InvalidArguments);
    }
    if func == "div" && (b == Ok(0) || b.is_err_and(|y| y == 0.0)) {
        return error(ErrorCode::DivisionByZero);
    }
    let int = |r: Option<i64>| match r {
        Some(i) => Model::Answer(Ok(ReplyValue::Int(i))),
        None => error(ErrorCode::Overflow),
    };
    let double = |n: Result<i64, f64>| match n {
        Ok(i) => i as f64,
        Err(x) => x,
    };
    let result = match (func.as_str(), a, b) {
        ("div", Ok(a), Ok(b)) => return Model::IntDiv(a, b),
        ("add", Ok(a), Ok(b)) => return int(a.checked_add(b)),
        ("sub", Ok(a), Ok(b)) => return int(a.checked_sub(b)),
        ("mul", Ok(a), Ok(b)) => return int(a.checked_mul(b)),
        ("add", a, b) => double(a) + double(b),
        ("sub", a, b) => double(a) - double(b),
        ("mul", a, b) => double(a) * double(b),
        (_, a, b) => double(a) / double(b),
    };
    if result.is_finite() {
        Model::Answer(Ok(ReplyValue::Float(result)))
    } else {
        error(ErrorCode::Overflow)
    }
}

/// The significand and exponent of a positive finite double: `x = m * 2^e`.
fn decompose(x: f64) -> (u128, i32) {
    let bits = x.to_bits();
    let exp = ((bits >> 52) & 0x7ff) as i32;
    let frac = u128::from(bits & ((1 << 52) - 1));
    if exp == 0 {
        (frac, -1074)
    } else {
        (frac | (1 << 52), exp - 1075)
    }
}

/// Compares n / d with m * 2^k exactly.
fn cmp_ratio(n: u128, d: u128, m: u128, k: i32) -> Ordering {
    if k >= 0 {
        match m
            .checked_mul(d)
            .and_then(|md| md.checked_shl(k as u32).filter(|s| s >> k == md))
        {
            Some(rhs) => n.cmp(&rhs),
            None => Ordering::Less,
        }
    } else {
        let shift = (-k) as u32;
        let lhs = if shift < 128 && n.leading_zeros() >= shift {
            Some(n << shift)
        } else {
            None
        };
        match (lhs, m.checked_mul(d)) {
            (Some(lhs), Some(rhs)) => lhs.cmp(&rhs),
            (None, _) => Ordering::Greater,
            (Some(_), None) => Ordering::Less,
        }
    }
}

/// True when `q` is n / d rounded to nearest, ties to even.
fn is_correctly_rounded(n: u128, d: u128, q: f64) -> bool {
    if !(q.is_finite() && q > 0.0) {
        return false;
    }
    let (m, e) = decompose(q);
    let (mb, eb) = decompose(f64::from_bits(q.to_bits() - 1));
    // The midpoints with the neighbours, as M * 2^k: (below + q) / 2 and
    // (q + above) / 2, where above = (m + 1) * 2^e (also when m + 1 = 2^53).
    let k = e.min(eb);
    let low = ((m << (e - k)) + (mb << (eb - k)), k - 1);
    let high = ((m << 1) + 1, e - 1);
    let even = m & 1 == 0;
    let above_low = match cmp_ratio(n, d, low.0, low.1) {
        Ordering::Greater => true,
        Ordering::Equal => even,
        Ordering::Less => false,
    };
    let below_high = match cmp_ratio(n, d, high.0, high.1) {
        Ordering::Less => true,
        Ordering::Equal => even,
        Ordering::Greater => false,
    };
    above_low && below_high
}

/// Checks a `div` of two integers: the contract's correctly rounded
/// quotient (as Python's `int / int`), zero signed as Python signs it.
fn check_quotient(a: i64, b: i64, q: f64) {
    assert_ne!(b, 0);
    if a == 0 {
        let want = if b < 0 { -0.0f64 } else { 0.0 };
        assert_eq!(q.to_bits(), want.to_bits(), "div({a}, {b})");
        return;
    }
    assert_eq!(
        q.is_sign_negative(),
        (a < 0) != (b < 0),
        "div({a}, {b}) = {q:e}"
    );
    let (n, d) = (u128::from(a.unsigned_abs()), u128::from(b.unsigned_abs()));
    assert!(
        is_correctly_rounded(n, d, q.abs()),
        "div({a}, {b}) = {q:e} is not correctly rounded"
    );
    if a.unsigned_abs() <= 1 << 53 && b.unsigned_abs() <= 1 << 53 {
        assert_eq!(q.to_bits(), ((a as f64) / (b as f64)).to_bits());
    }
}

/// Checks one reply against the contract's answer for `body`.
fn check_answer(body: &[u8], got: &Result<ReplyValue, String>) {
    match (model_reply(body), got) {
        (Model::IntDiv(a, b), Ok(ReplyValue::Float(q))) => check_quotient(a, b, *q),
        (Model::IntDiv(a, b), other) => panic!("div({a}, {b}) answered {other:?}"),
        (Model::Rpc(func, args), got) => check_rpc(&func, args, got),
        (Model::Answer(Ok(ReplyValue::Float(x))), Ok(ReplyValue::Float(y))) => {
            assert_eq!(x.to_bits(), y.to_bits(), "want {x:e}, got {y:e}")
        }
        (Model::Answer(want), got) => {
            assert_eq!(&want, got, "body {:?}", String::from_utf8_lossy(body))
        }
    }
}

/// Checks the answer to `rpc.*` function `func` called with `args`
/// arguments by a server without keys (contract section 7): `rpc.ping`
/// answers `true` or echoes its one argument, `rpc.info` succeeds,
/// `rpc.functions` pages (the last three may instead say `internal`: the
/// reply buffer is too small), and
/// `rpc.hello` is `unauthorized`; wrong arguments are `invalid_arguments`,
/// other `rpc.` names unknown.
fn check_rpc(func: &str, args: usize, got: &Result<ReplyValue, String>) {
    let code = |c: ErrorCode| Err::<ReplyValue, String>(c.as_str().to_owned());
    let ok = match (func, args) {
        ("rpc.ping", 0) => *got == Ok(ReplyValue::Other("Bool(true)".to_owned())),
        // Echoes, the info and pages may not fit a small reply buffer.
        ("rpc.ping", 1) | ("rpc.info", 0) => got.is_ok() || *got == code(ErrorCode::Internal),
        ("rpc.ping", _) | ("rpc.info", _) => *got == code(ErrorCode::InvalidArguments),
        ("rpc.functions", 0 | 1) => {
            got.is_ok()
                || *got == code(ErrorCode::InvalidArguments)
                || *got == code(ErrorCode::Internal)
        }
        ("rpc.functions", _) => *got == code(ErrorCode::InvalidArguments),
        ("rpc.hello", _) => *got == code(ErrorCode::Unauthorized),
        _ => *got == code(ErrorCode::UnknownFunction),
    };
    assert!(ok, "{func} with {args} arguments answered {got:?}");
}

/// Checks the reply to a request frame: with the `AUTH` flag, a server
/// without keys holds no session, so the answer is `unauthorized` whatever
/// the body (contract section 9); otherwise the contract's answer for the body.
fn check_request_answer(frame: &Frame<'_>, got: &Result<ReplyValue, String>) {
    if frame.header.flags & at_core::FLAG_AUTH != 0 {
        assert_eq!(
            got,
            &Err(ErrorCode::Unauthorized.as_str().to_owned()),
            "an AUTH request to a server without keys"
        );
    } else {
        check_answer(frame.body, got);
    }
}

/// True for the one answer a reply buffer smaller than `MIN_REPLY_BUFFER`
/// may turn any reply into: `internal` ("reply too large").
fn shrunk(got: &Result<ReplyValue, String>, roomy: bool) -> bool {
    !roomy && matches!(got, Err(code) if code == ErrorCode::Internal.as_str())
}

/// The error reply to a frame the receiver rejected: its code, and seq 0
/// for a wrong magic, the header's otherwise.
fn check_frame_error_reply(wire: &[u8], error: &FrameError, roomy: bool) {
    let got = check_reply_frame(wire, error.seq());
    if !shrunk(&got, roomy) {
        assert_eq!(
            got,
            Err(error.code().as_str().to_owned()),
            "reply to {error:?}"
        );
    }
}

/// The reply buffer sizes the fuzzer picks from.
pub fn reply_buffer(b: u8) -> usize {
    match b {
        0..=0x7f => MIN_REPLY_BUFFER + usize::from(b) * 8,
        0x80..=0xef => 70_000,
        _ => usize::from(b - 0xf0) * 8,
    }
}

/// The `respond` target: the datagram path (`respond_to_bytes`) and the
/// stream path (decoder, then `respond` or `respond_to_error`).
pub fn check_respond(data: &[u8]) {
    let mut data = data;
    let max_body = MAX_BODIES[usize::from(byte(&mut data) & 7)];
    let out_len = reply_buffer(byte(&mut data));
    let chunk = chunk_size(byte(&mut data));
    let wire = data;
    let mut out = vec![0u8; out_len];
    let roomy = out_len >= MIN_REPLY_BUFFER;

    // The datagram path.
    let parsed = Frame::parse(wire, max_body);
    let answer = at_core::respond_to_bytes(&CALCULATOR, wire, max_body, &mut out);
    match parsed {
        Err(FrameError::SizeMismatch { .. }) => {
            assert_eq!(answer, None, "a wrong-size datagram is dropped")
        }
        Ok(frame) if frame.kind != Kind::Request => {
            assert_eq!(answer, None, "replies are not answered")
        }
        Ok(frame) => {
            check_frame(&frame, wire, max_body);
            match answer {
                Some(n) => {
                    let got = check_reply_frame(&out[..n], frame.seq());
                    // In a small buffer a big reply may shrink to `internal`.
                    if !shrunk(&got, roomy) {
                        check_request_answer(&frame, &got);
                    }
                }
                None => assert!(!roomy, "no reply to a request with {out_len} bytes of room"),
            }
        }
        Err(e) => {
            let seq = match e {
                FrameError::Header {
                    error: HeaderError::BadMagic { .. },
                    ..
                } => 0,
                _ => Header::from_bytes(wire.first_chunk().expect("a header")).seq,
            };
            assert_eq!(e.seq(), seq);
            match answer {
                Some(n) => check_frame_error_reply(&out[..n], &e, roomy),
                None => assert!(!roomy, "no reply to {e:?} with {out_len} bytes of room"),
            }
        }
    }

    // The stream path, in pieces of `chunk` bytes, resyncing like a serial link.
    let mut decoder = FrameDecoder::with_buffer(vec![0u8; BIG_BUFFER], max_body);
    let mut single = vec![0u8; out_len];
    for piece in wire.chunks(chunk) {
        let mut piece = piece;
        while !piece.is_empty() {
            let n = decoder.push(piece);
            assert!(n > 0);
            piece = &piece[n..];
            loop {
                match decoder.next_frame() {
                    Ok(None) => break,
                    Ok(Some(frame)) => {
                        let reply = at_core::respond(&CALCULATOR, &frame, &mut out);
                        if frame.kind != Kind::Request {
                            assert_eq!(reply, None);
                            continue;
                        }
                        // The datagram path answers the same frame the same way.
                        let mut again = frame.header.to_bytes().to_vec();
                        again.extend_from_slice(frame.body);
                        let same_reply =
                            at_core::respond_to_bytes(&CALCULATOR, &again, max_body, &mut single);
                        assert_eq!(reply, same_reply);
                        match reply {
                            Some(n) => {
                                assert_eq!(&out[..n], &single[..n]);
                                let got = check_reply_frame(&out[..n], frame.seq());
                                if !shrunk(&got, roomy) {
                                    check_request_answer(&frame, &got);
                                }
                            }
                            None => assert!(!roomy),
                        }
                    }
                    Err(e) => {
                        match at_core::respond_to_error(&e, &mut out) {
                            Some(n) => check_frame_error_reply(&out[..n], &e, roomy),
                            None => assert!(!roomy, "no reply to {e:?}"),
                        }
                        if e.loses_sync() {
                            assert!(decoder.resync() >= 1);
                        }
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// check_auth: the authenticated request path (contract section 9)

thread_local! {
    /// The seqs `mark` ran for, in this input.
    static MARKED: std::cell::RefCell<Vec<i64>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn mark<'a>(args: &[Value<'a>]) -> Result<Value<'a>, at_core::CallError> {
    if let [Value::Int(seq)] = args {
        MARKED.with(|m| m.borrow_mut().push(*seq));
    }
    Ok(Value::Null)
}

static MARK: [at_core::Function; 1] = [at_core::Function::new("mark", mark)];

/// Drives a server's [`at_core::auth::Guard`] with a script: after a real
/// handshake, each op sends a frame sealed by the client, a raw frame, a
/// sealed frame with one byte changed, or a replay from another address.
/// Input: ops `[op] [args...]`:
/// - `0 n bytes[n]`: a raw frame;
/// - `1 s0 s1`: a sealed `mark(seq)` with seq `s0 s1` (big-endian);
/// - `2 at mask`: the last sealed frame with byte `at` (mod its length)
///   xor `mask` (the CRC recomputed, so the tag must catch it);
/// - `3 port`: the last sealed frame again from another UDP port;
/// - `4`: the clock moves on 61 s.
///
/// Invariants: nothing panics; `mark` runs only for seqs the client sealed,
/// and at most once each, whatever the replays and tampering; every reply
/// to an authenticated request is either a plain `unauthorized` or
/// verifies under the session.
pub fn check_auth(data: &[u8]) {
    use at_core::auth::{
        ClientSession, CounterNonces, FixedReplies, Guard, Key, Origin, Transport,
    };
    static KEYS: [Key<'static>; 1] = [Key {
        kid: "fuzz",
        secret: [0x5a; 32],
    }];
    MARKED.with(|m| m.borrow_mut().clear());
    let mut guard: Guard<&[Key<'static>], CounterNonces, FixedReplies<4, 256>, 2> =
        Guard::new(&KEYS[..], FixedReplies::new(), CounterNonces::new(9));
    let info = at_core::ServerInfo {
        server: "fuzz",
        name: "fuzz",
        auth_required: true,
        max_body: 1024,
        ext: at_core::rpc::Ext::NONE,
    };
    let mut now = 0u64;
    let mut out = [0u8; 256];
    let hello_body =
        br#"{"func": "rpc.hello", "args": ["fuzz", "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf"]}"#;
    let mut hello = [0u8; 128];
    let Ok(n) = at_core::encode_frame(Kind::Request, 1, hello_body, &mut hello) else {
        return;
    };
    let origin = |port: u16| {
        Origin::from(
            Transport::Datagram,
            std::net::SocketAddr::from(([192, 0, 2, 1], port)),
        )
    };
    let tcp = Origin::from(
        Transport::Stream,
        std::net::SocketAddr::from(([192, 0, 2, 1], 9)),
    );
    let frame = Frame::parse(&hello[..n], 1024).expect("a good hello");
    let len = guard
        .respond(
            &MARK,
            &info,
            &frame,
            &mut at_core::Context::new(tcp, now),
            &mut out,
        )
        .expect("a hello reply");
    let reply = Frame::parse(&out[..len], u32::MAX).expect("a hello reply frame");
    let Ok(Reply::Success(Value::Raw(raw))) = Reply::parse(reply.body) else {
        panic!("the hello failed")
    };
    let json: Json = serde_json::from_str(raw.as_str()).expect("hello JSON");
    let nc: [u8; 16] = std::array::from_fn(|i| 0xa0 + i as u8);
    let session = ClientSession::from_hello(
        &KEYS[0],
        &nc,
        json["session"].as_str().unwrap_or(""),
        json["nonce"].as_str().unwrap_or(""),
        json["proof"].as_str().unwrap_or(""),
    )
    .expect("the proof verifies");
    let mut sealed_seqs: Vec<i64> = Vec::new();
    let mut last: Vec<u8> = Vec::new();
    let mut data = data;
    let send = |guard: &mut Guard<_, _, _, 2>, frame_bytes: &[u8], from: &Origin, now: u64| {
        let Ok(frame) = Frame::parse(frame_bytes, 1024) else {
            return;
        };
        let authenticated = frame.header.flags & at_core::FLAG_AUTH != 0;
        let mut out = [0u8; 256];
        if let Some(n) = guard.respond(
            &MARK,
            &info,
            &frame,
            &mut at_core::Context::new(*from, now),
            &mut out,
        ) && authenticated
            && frame.kind == Kind::Request
        {
            let reply = Frame::parse(&out[..n], u32::MAX).expect("replies are frames");
            match session.open_reply(&reply) {
                Ok(_) => {}
                Err(at_core::auth::ReplyProblem::Plain) => {
                    let body = Reply::parse(reply.body).expect("a reply body");
                    let Reply::Error(e) = body else {
                        panic!("a plain success to an authenticated request")
                    };
                    assert!(
                        matches!(e.error_code(), Some(ErrorCode::Unauthorized)),
                        "a plain reply to an authenticated request is unauthorized"
                    );
                }
                Err(p) => panic!("a reply that does not verify: {p:?}"),
            }
        }
    };
    while let Some((&op, rest)) = data.split_first() {
        data = rest;
        match op % 5 {
            0 => {
                let n = usize::from(byte(&mut data));
                let raw = take(&mut data, n).to_vec();
                send(&mut guard, &raw, &origin(1), now);
            }
            1 => {
                let seq = u32::from(byte(&mut data)) << 8 | u32::from(byte(&mut data));
                let body = format!(r#"{{"func": "mark", "args": [{seq}]}}"#);
                let mut frame = vec![0u8; 256];
                if let Ok(n) = session.seal_request(seq, body.as_bytes(), &mut frame) {
                    frame.truncate(n);
                    sealed_seqs.push(i64::from(seq));
                    send(&mut guard, &frame, &origin(1), now);
                    last = frame;
                }
            }
            2 if !last.is_empty() => {
                let at = usize::from(byte(&mut data)) % last.len();
                let mask = byte(&mut data) | 1;
                let mut bad = last.clone();
                bad[at] ^= mask;
                if bad.len() > HEADER_LEN {
                    let crc = at_core::checksum(&bad[HEADER_LEN..]);
                    bad[12..16].copy_from_slice(&crc.to_be_bytes());
                }
                send(&mut guard, &bad, &tcp, now);
            }
            3 if !last.is_empty() => {
                let port = u16::from(byte(&mut data));
                let frame = last.clone();
                send(&mut guard, &frame, &origin(port), now);
            }
            4 => now += 61_000,
            _ => {}
        }
    }
    let marked = MARKED.with(|m| m.borrow().clone());
    let mut seen = std::collections::HashSet::new();
    for seq in &marked {
        assert!(
            sealed_seqs.contains(seq),
            "mark({seq}) ran without the client sealing it"
        );
        assert!(seen.insert(*seq), "mark({seq}) ran twice");
    }
}
