//! The Wireshark dissector `tools/wireshark/at.lua`, run by `tshark` over a
//! capture this test writes by hand (classic pcap, raw IPv4, zero checksums;
//! no root and no live capture): every field, request/reply links, TCP
//! reassembly and splitting, UDP, the authenticated vectors of the
//! contract's section 9, a bad CRC, a wrong magic and an absurd length, and
//! section 10 (vectors of `tests/vectors/section10.tsv`): notifications
//! (N1), events (E1, sealed E2, end X4), a deadline (D1, D2), a cancel
//! matched to its call (C1, C2), and NOTIFY with another type bit.
//!
//! Without `tshark` on PATH the test skips (a failure under
//! `AT_REQUIRE_ALL=1`). `AT_KEEP_PCAP=FILE` keeps a copy of the capture.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use at_core::{Header, Kind};
use at_tests::{KillOnDrop, calc, frame, request, skip};

const CLIENT: [u8; 4] = [10, 0, 0, 1];
const SERVER: [u8; 4] = [10, 0, 0, 2];
const PORT: u16 = 16724;
/// A second port, decoded through the dissector's `atrpc.port` preference.
const EXTRA_PORT: u16 = 17000;
/// Capture time of frame 0; frame `n` comes `n * STEP_US` later.
const START_SECS: u32 = 1_700_000_000;
const STEP_US: u32 = 10_000;
/// Bound of one tshark run.
const TSHARK_LIMIT: Duration = Duration::from_secs(60);

type Endpoint = ([u8; 4], u16);

/// A classic libpcap file of raw IPv4 packets (LINKTYPE_RAW), built one
/// packet at a time; TCP sequence numbers follow each direction's bytes.
struct Capture {
    bytes: Vec<u8>,
    packets: u32,
    next_seq: HashMap<(Endpoint, Endpoint), u32>,
}

impl Capture {
    fn new() -> Self {
        let mut bytes = Vec::new();
        bytes.extend(0xa1b2_c3d4u32.to_le_bytes()); // microsecond timestamps
        bytes.extend(2u16.to_le_bytes()); // version 2.4
        bytes.extend(4u16.to_le_bytes());
        bytes.extend(0u32.to_le_bytes()); // thiszone
        bytes.extend(0u32.to_le_bytes()); // sigfigs
        bytes.extend(65535u32.to_le_bytes()); // snaplen
        bytes.extend(101u32.to_le_bytes()); // LINKTYPE_RAW
        Capture {
            bytes,
            packets: 0,
            next_seq: HashMap::new(),
        }
    }

    /// Adds an IPv4 packet of protocol `proto`; returns its frame number.
    fn ip(&mut self, proto: u8, from: [u8; 4], to: [u8; 4], payload: &[u8]) -> u32 {
        self.packets += 1;
        let total = u16::try_from(20 + payload.len()).expect("a small packet");
        let mut packet = vec![0x45, 0];
        packet.extend(total.to_be_bytes());
        packet.extend((self.packets as u16).to_be_bytes()); // identification
        packet.extend([0x40, 0, 64, proto, 0, 0]); // DF, TTL, protocol, checksum 0
        packet.extend(from);
        packet.extend(to);
        packet.extend_from_slice(payload);
        let usec = self.packets * STEP_US;
        let len = packet.len() as u32;
        self.bytes
            .extend((START_SECS + usec / 1_000_000).to_le_bytes());
        self.bytes.extend((usec % 1_000_000).to_le_bytes());
        self.bytes.extend(len.to_le_bytes()); // captured length
        self.bytes.extend(len.to_le_bytes()); // original length
        self.bytes.extend(packet);
        self.packets
    }

    /// A TCP segment (PSH+ACK, checksum 0) carrying `payload`.
    fn tcp(&mut self, from: Endpoint, to: Endpoint, payload: &[u8]) -> u32 {
        let seq = *self.next_seq.entry((from, to)).or_insert(1000);
        let ack = *self.next_seq.entry((to, from)).or_insert(1000);
        self.next_seq.insert((from, to), seq + payload.len() as u32);
        let mut segment = Vec::new();
        segment.extend(from.1.to_be_bytes());
        segment.extend(to.1.to_be_bytes());
        segment.extend(seq.to_be_bytes());
        segment.extend(ack.to_be_bytes());
        segment.extend([0x50, 0x18]); // 20-byte header, PSH+ACK
        segment.extend(65535u16.to_be_bytes()); // window
        segment.extend([0, 0, 0, 0]); // checksum, urgent pointer
        segment.extend_from_slice(payload);
        self.ip(6, from.0, to.0, &segment)
    }

    /// A UDP datagram (checksum 0) carrying `payload`.
    fn udp(&mut self, from: Endpoint, to: Endpoint, payload: &[u8]) -> u32 {
        let len = u16::try_from(8 + payload.len()).expect("a small datagram");
        let mut datagram = Vec::new();
        datagram.extend(from.1.to_be_bytes());
        datagram.extend(to.1.to_be_bytes());
        datagram.extend(len.to_be_bytes());
        datagram.extend([0, 0]);
        datagram.extend_from_slice(payload);
        self.ip(17, from.0, to.0, &datagram)
    }
}

/// Bytes from whitespace-separated hex pairs, as the contract prints them.
fn hex(text: &str) -> Vec<u8> {
    text.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).expect("a hex byte"))
        .collect()
}

/// The six frames of the contract's section 9 test vectors: the hello and
/// its reply, then authenticated `add(10, 20)` (seq 2) and `div(1, 0)`
/// (seq 3) with their replies, all under SID c0c1c2c3c4c5c6c7.
fn auth_vectors() -> [Vec<u8>; 6] {
    [
        hex("41 54 00 01 00 00 00 01 00 00 00 4b e5 9b 50 43
             7b 22 66 75 6e 63 22 3a 20 22 72 70 63 2e 68 65
             6c 6c 6f 22 2c 20 22 61 72 67 73 22 3a 20 5b 22
             64 65 6d 6f 22 2c 20 22 61 30 61 31 61 32 61 33
             61 34 61 35 61 36 61 37 61 38 61 39 61 61 61 62
             61 63 61 64 61 65 61 66 22 5d 7d"),
        hex("41 54 00 02 00 00 00 01 00 00 00 9a c6 98 e3 b0
             7b 22 73 74 61 74 75 73 22 3a 20 22 73 75 63 63
             65 73 73 22 2c 20 22 72 65 73 75 6c 74 22 3a 20
             7b 22 73 65 73 73 69 6f 6e 22 3a 20 22 63 30 63
             31 63 32 63 33 63 34 63 35 63 36 63 37 22 2c 20
             22 6e 6f 6e 63 65 22 3a 20 22 62 30 62 31 62 32
             62 33 62 34 62 35 62 36 62 37 62 38 62 39 62 61
             62 62 62 63 62 64 62 65 62 66 22 2c 20 22 70 72
             6f 6f 66 22 3a 20 22 65 35 64 65 61 36 36 65 66
             36 37 32 32 66 37 39 66 34 64 30 32 36 33 38 32
             65 64 32 34 32 62 32 22 7d 7d"),
        hex("41 54 00 09 00 00 00 02 00 00 00 39 62 72 e5 0f
             7b 22 66 75 6e 63 22 3a 20 22 61 64 64 22 2c 20
             22 61 72 67 73 22 3a 20 5b 31 30 2c 20 32 30 5d
             7d c0 c1 c2 c3 c4 c5 c6 c7 62 19 ac 0e 7a 6f db
             0f 3f aa c4 7d 20 f4 2c 37"),
        hex("41 54 00 0a 00 00 00 02 00 00 00 3b dc 1b f5 9a
             7b 22 73 74 61 74 75 73 22 3a 20 22 73 75 63 63
             65 73 73 22 2c 20 22 72 65 73 75 6c 74 22 3a 20
             33 30 7d c0 c1 c2 c3 c4 c5 c6 c7 6e 82 f4 b7 9e
             41 b5 23 5e 62 69 60 a5 d5 b4 4b"),
        hex("41 54 00 09 00 00 00 03 00 00 00 37 3d aa 15 bc
             7b 22 66 75 6e 63 22 3a 20 22 64 69 76 22 2c 20
             22 61 72 67 73 22 3a 20 5b 31 2c 20 30 5d 7d c0
             c1 c2 c3 c4 c5 c6 c7 27 43 72 5f a7 ad 7e f4 dd
             ed e1 b0 17 b7 12 5c"),
        hex("41 54 00 0c 00 00 00 03 00 00 00 66 65 74 43 c8
             7b 22 73 74 61 74 75 73 22 3a 20 22 65 72 72 6f
             72 22 2c 20 22 63 6f 64 65 22 3a 20 22 64 69 76
             69 73 69 6f 6e 5f 62 79 5f 7a 65 72 6f 22 2c 20
             22 6d 65 73 73 61 67 65 22 3a 20 22 64 69 76 69
             73 69 6f 6e 20 62 79 20 7a 65 72 6f 22 7d c0 c1
             c2 c3 c4 c5 c6 c7 86 57 9b d2 97 ce b7 9d 32 08
             74 fb 1c b7 4c 3c"),
    ]
}

/// The frames of `tests/vectors/section10.tsv`, by vector name.
fn section10() -> HashMap<String, Vec<u8>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("vectors/section10.tsv");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let fields: Vec<&str> = l.split('\t').collect();
            assert_eq!(fields.len(), 6, "{l:?}");
            let bytes = (0..fields[5].len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&fields[5][i..i + 2], 16).expect("hex"))
                .collect();
            (fields[0].to_owned(), bytes)
        })
        .collect()
}

fn success(seq: u32, result: &str) -> Vec<u8> {
    let body = format!(r#"{{"status": "success", "result": {result}}}"#);
    frame(Kind::Response, seq, body.as_bytes())
}

fn failure(seq: u32, code: &str, message: &str) -> Vec<u8> {
    let body = format!(r#"{{"status": "error", "code": "{code}", "message": "{message}"}}"#);
    frame(Kind::Error, seq, body.as_bytes())
}

/// Writes the capture; the frame numbers the checks below rely on are
/// asserted as they are made.
fn build_capture() -> Vec<u8> {
    let mut cap = Capture::new();
    let server = (SERVER, PORT);

    // TCP connection A: plain calls.
    let a = (CLIENT, 50001);
    assert_eq!(cap.tcp(a, server, &calc(1, "add", "10", "20")), 1);
    assert_eq!(cap.tcp(server, a, &success(1, "30")), 2);
    assert_eq!(cap.tcp(a, server, &calc(2, "div", "1", "0")), 3);
    let div0 = failure(2, "division_by_zero", "division by zero");
    assert_eq!(cap.tcp(server, a, &div0), 4);
    let mut bad_crc = calc(3, "mul", "6", "7");
    bad_crc[15] ^= 0xff;
    assert_eq!(cap.tcp(a, server, &bad_crc), 5);
    let mismatch = failure(3, "checksum_mismatch", "checksum mismatch");
    assert_eq!(cap.tcp(server, a, &mismatch), 6);
    // One frame over three segments, cut inside the header and the body.
    let split = calc(4, "sub", "10", "20");
    assert_eq!(cap.tcp(a, server, &split[..5]), 7);
    assert_eq!(cap.tcp(a, server, &split[5..25]), 8);
    assert_eq!(cap.tcp(a, server, &split[25..]), 9);
    assert_eq!(cap.tcp(server, a, &success(4, "-10")), 10);
    // Two frames in one segment, each way.
    let two_requests = [calc(5, "add", "1", "2"), calc(6, "mul", "6", "7")].concat();
    assert_eq!(cap.tcp(a, server, &two_requests), 11);
    let two_replies = [success(5, "3"), success(6, "42")].concat();
    assert_eq!(cap.tcp(server, a, &two_replies), 12);

    // TCP connection B: the authenticated session of section 9 (its seqs
    // 1 to 3 also occur on A: links must stay within a conversation).
    let b = (CLIENT, 50002);
    for (i, vector) in auth_vectors().iter().enumerate() {
        let (from, to) = if i % 2 == 0 { (b, server) } else { (server, b) };
        assert_eq!(cap.tcp(from, to, vector), 13 + i as u32);
    }

    // UDP on the default port, and on the preference's port.
    let u = (CLIENT, 50003);
    assert_eq!(cap.udp(u, server, &calc(1, "div", "10", "4")), 19);
    assert_eq!(cap.udp(server, u, &success(1, "2.5")), 20);
    let v = (CLIENT, 50004);
    let extra = (SERVER, EXTRA_PORT);
    let ping = request(7, r#"{"func": "rpc.ping", "args": [{"func": "nested"}]}"#);
    assert_eq!(cap.udp(v, extra, &ping), 21);
    assert_eq!(cap.udp(extra, v, &success(7, r#"{"func": "nested"}"#)), 22);

    // TCP connection C: not AT at all. D: a header announcing ~4 GiB.
    let c = (CLIENT, 50005);
    assert_eq!(
        cap.tcp(c, server, b"GET / HTTP/1.1\r\nHost: at\r\n\r\n"),
        23
    );
    let d = (CLIENT, 50006);
    let mut huge = Header::new(Kind::Request, 9, b"").to_bytes().to_vec();
    huge[8..12].copy_from_slice(&0xffff_fff0u32.to_be_bytes());
    huge.extend_from_slice(b"12345678");
    assert_eq!(cap.tcp(d, server, &huge), 24);

    // TCP connection E: contract section 10 (the vectors' own seqs).
    let v10 = section10();
    let e = (CLIENT, 50007);
    assert_eq!(cap.tcp(e, server, &v10["S1"]), 25);
    // The subscribe's reply and the topic's first event in one segment.
    assert_eq!(
        cap.tcp(server, e, &[&v10["S2"][..], &v10["E1"]].concat()),
        26
    );
    assert_eq!(cap.tcp(e, server, &v10["N1"]), 27);
    assert_eq!(cap.tcp(e, server, &v10["D1"]), 28);
    assert_eq!(cap.tcp(server, e, &v10["D2"]), 29);
    let slow = calc(11, "add", "1", "2");
    assert_eq!(cap.tcp(e, server, &slow), 30);
    assert_eq!(cap.tcp(e, server, &v10["C1"]), 31);
    assert_eq!(cap.tcp(server, e, &v10["C2"]), 32);
    assert_eq!(cap.tcp(server, e, &v10["X4"]), 33);
    // Sealed: the event E2; the NOTIFY call X3.
    assert_eq!(cap.tcp(server, e, &v10["E2"]), 34);
    assert_eq!(cap.tcp(e, server, &v10["X3"]), 35);
    // NOTIFY with REQUEST: no valid type.
    let mut both = v10["N1"].clone();
    both[3] = 0x11;
    assert_eq!(cap.tcp(e, server, &both), 36);
    // A notification over UDP; a cancel from another sender names no call.
    assert_eq!(cap.udp(u, server, &v10["N1"]), 37);
    let stranger = (CLIENT, 50008);
    assert_eq!(cap.udp(stranger, server, &v10["C1"]), 38);
    cap.bytes
}

/// Runs tshark with `args`, bounded by [`TSHARK_LIMIT`]; returns stdout.
fn tshark(args: &[&str]) -> String {
    let child = Command::new("tshark")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tshark");
    let mut guard = KillOnDrop(child);
    let collect = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut all = String::new();
            let _ = pipe.read_to_string(&mut all);
            all
        })
    };
    let stdout = collect(Box::new(guard.0.stdout.take().expect("stdout")));
    let stderr = collect(Box::new(guard.0.stderr.take().expect("stderr")));
    let deadline = Instant::now() + TSHARK_LIMIT;
    let status = loop {
        if let Some(status) = guard.0.try_wait().expect("wait for tshark") {
            break status;
        }
        // The guard kills tshark as the panic unwinds.
        assert!(
            Instant::now() < deadline,
            "tshark ran over {TSHARK_LIMIT:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let (stdout, stderr) = (stdout.join().unwrap(), stderr.join().unwrap());
    assert!(status.success(), "tshark {args:?} failed: {stderr}");
    // A Lua script that fails to load is only reported on stderr.
    assert!(!stderr.contains("Lua"), "tshark stderr: {stderr}");
    stdout
}

/// The fields read per frame; the short names in [`expect`] drop `atrpc.`.
const FIELDS: [&str; 31] = [
    "frame.number",
    "atrpc.magic",
    "atrpc.flags",
    "atrpc.flags.request",
    "atrpc.flags.response",
    "atrpc.flags.error",
    "atrpc.flags.auth",
    "atrpc.flags.notify",
    "atrpc.seq",
    "atrpc.length",
    "atrpc.crc",
    "atrpc.crc.status",
    "atrpc.func",
    "atrpc.status",
    "atrpc.code",
    "atrpc.session",
    "atrpc.tag",
    "atrpc.response_in",
    "atrpc.request_in",
    "atrpc.time",
    "atrpc.notify",
    "atrpc.event.topic",
    "atrpc.event.n",
    "atrpc.event.value",
    "atrpc.event.end",
    "atrpc.deadline_ms",
    "atrpc.cancel.seq",
    "atrpc.cancel.call_in",
    "atrpc.cancelled_in",
    "_ws.expert.message",
    "_ws.col.Info",
];

/// Fields that must be empty wherever [`expect`] does not name them.
const OPTIONAL: [&str; 17] = [
    "func",
    "status",
    "code",
    "session",
    "tag",
    "response_in",
    "request_in",
    "time",
    "notify",
    "event.topic",
    "event.n",
    "event.value",
    "event.end",
    "deadline_ms",
    "cancel.seq",
    "cancel.call_in",
    "cancelled_in",
];

type Rows = HashMap<u32, HashMap<&'static str, String>>;

/// tshark's `-T fields` lines, by frame number. Booleans are read as 1/0
/// (tshark 4.0 prints 1/0, later versions True/False).
fn parse(output: &str) -> Rows {
    let mut rows = Rows::new();
    for line in output.lines() {
        let values: Vec<&str> = line.split('|').collect();
        assert_eq!(values.len(), FIELDS.len(), "line {line:?}");
        let row: HashMap<&'static str, String> = FIELDS
            .iter()
            .zip(values)
            .map(|(name, value)| {
                let value = if name.starts_with("atrpc.flags.") {
                    value.replace("True", "1").replace("False", "0")
                } else {
                    value.to_owned()
                };
                (*name, value)
            })
            .collect();
        let number = row["frame.number"].parse().expect("a frame number");
        rows.insert(number, row);
    }
    rows
}

/// The value of `name` in frame `number` (`info` for the Info column,
/// `expert` for the expert messages, else `atrpc.NAME`).
fn field<'a>(rows: &'a Rows, number: u32, name: &str) -> &'a str {
    let row = rows
        .get(&number)
        .unwrap_or_else(|| panic!("frame {number} was not dissected as atrpc"));
    let full = match name {
        "info" => "_ws.col.Info".to_owned(),
        "expert" => "_ws.expert.message".to_owned(),
        _ => format!("atrpc.{name}"),
    };
    &row[full.as_str()]
}

/// Checks frame `number` field by field against `want`, "NAME=VALUE; ...":
/// each named value exactly, the flag bits against `flags`, and every
/// [`OPTIONAL`] field not named as empty.
fn expect(rows: &Rows, number: u32, want: &str) {
    let want: Vec<(&str, &str)> = want
        .split("; ")
        .map(|pair| pair.split_once('=').expect("NAME=VALUE"))
        .collect();
    for (name, value) in &want {
        assert_eq!(field(rows, number, name), *value, "frame {number}: {name}");
    }
    for name in OPTIONAL {
        if !want.iter().any(|(n, _)| *n == name) {
            assert_eq!(field(rows, number, name), "", "frame {number}: {name}");
        }
    }
    let flags = field(rows, number, "flags");
    if flags.is_empty() {
        for name in ["request", "response", "error", "auth", "notify"] {
            let name = format!("flags.{name}");
            assert_eq!(field(rows, number, &name), "", "frame {number}: {name}");
        }
        return;
    }
    let flags: Vec<u16> = flags
        .split(',')
        .map(|f| u16::from_str_radix(f.trim_start_matches("0x"), 16).expect("hex flags"))
        .collect();
    for (bit, name) in [
        (1, "request"),
        (2, "response"),
        (4, "error"),
        (8, "auth"),
        (16, "notify"),
    ] {
        let bits: Vec<&str> = flags
            .iter()
            .map(|f| if f & bit != 0 { "1" } else { "0" })
            .collect();
        let name = format!("flags.{name}");
        assert_eq!(
            field(rows, number, &name),
            bits.join(","),
            "frame {number}: {name}"
        );
    }
}

fn lua_script() -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/wireshark/at.lua");
    path.canonicalize()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn tshark_dissects_every_kind_of_frame() {
    if Command::new("tshark").arg("--version").output().is_err() {
        return skip("tshark is not installed (Debian: apt-get install tshark)");
    }
    let dir = std::env::temp_dir().join(format!("at-wireshark-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    let pcap = dir.join("at.pcap");
    std::fs::write(&pcap, build_capture()).expect("write the capture");
    if let Ok(keep) = std::env::var("AT_KEEP_PCAP") {
        std::fs::copy(&pcap, keep).expect("copy the capture to AT_KEEP_PCAP");
    }

    let script = format!("lua_script:{}", lua_script().display());
    let extra = format!("atrpc.port:{EXTRA_PORT}");
    let mut args = vec![
        "-2",
        "-r",
        pcap.to_str().expect("a UTF-8 temp path"),
        "-X",
        &script,
        "-o",
        &extra,
        "-Y",
        "atrpc",
        "-T",
        "fields",
        "-E",
        "separator=|",
    ];
    for name in FIELDS {
        args.extend(["-e", name]);
    }
    let rows = parse(&tshark(&args));
    let _ = std::fs::remove_dir_all(&dir);

    // Which frames carry AT at all: the split frame's first two segments do
    // not (it is dissected once, in its last segment).
    let mut numbers: Vec<u32> = rows.keys().copied().collect();
    numbers.sort();
    let want: Vec<u32> = (1..=38).filter(|n| ![7, 8].contains(n)).collect();
    assert_eq!(numbers, want);

    // Connection A.
    let a = [
        "magic=0x4154; flags=0x0001; seq=1; length=33; crc=0x0bbcd047; crc.status=good; \
         func=add; response_in=2; info=Request seq=1 add",
        "flags=0x0002; seq=1; length=35; crc.status=good; status=success; request_in=1; \
         time=0.010000000; info=Response seq=1",
        "seq=2; crc.status=good; func=div; response_in=4",
        "flags=0x0004; seq=2; crc.status=good; status=error; code=division_by_zero; \
         request_in=3; time=0.010000000; info=Error seq=2 division_by_zero",
        "seq=3; crc.status=bad; func=mul; response_in=6; \
         expert=CRC-32 of the body does not match; info=Request seq=3 mul [bad CRC]",
        "seq=3; crc.status=good; status=error; code=checksum_mismatch; request_in=5; \
         time=0.010000000",
    ];
    for (i, want) in a.iter().enumerate() {
        expect(&rows, 1 + i as u32, want);
    }
    expect(
        &rows,
        9,
        "seq=4; length=33; crc.status=good; func=sub; response_in=10; info=Request seq=4 sub",
    );
    expect(
        &rows,
        10,
        "seq=4; crc.status=good; status=success; request_in=9; time=0.010000000",
    );
    expect(
        &rows,
        11,
        "flags=0x0001,0x0001; seq=5,6; length=31,31; crc.status=good,good; func=add,mul; \
         response_in=12,12; info=Request seq=5 add, Request seq=6 mul",
    );
    expect(
        &rows,
        12,
        "flags=0x0002,0x0002; seq=5,6; crc.status=good,good; status=success,success; \
         request_in=11,11; time=0.010000000,0.010000000; info=Response seq=5, Response seq=6",
    );

    // Connection B: the section 9 vectors.
    let sid = "session=c0c1c2c3c4c5c6c7";
    let b = [
        "flags=0x0001; seq=1; length=75; crc=0xe59b5043; crc.status=good; func=rpc.hello; \
         response_in=14"
            .to_owned(),
        "flags=0x0002; seq=1; length=154; crc.status=good; status=success; request_in=13; \
         time=0.010000000"
            .to_owned(),
        format!(
            "flags=0x0009; seq=2; length=57; crc=0x6272e50f; crc.status=good; func=add; {sid}; \
             tag=6219ac0e7a6fdb0f3faac47d20f42c37; response_in=16; info=Request seq=2 add [auth]"
        ),
        format!(
            "flags=0x000a; seq=2; length=59; crc.status=good; status=success; {sid}; \
             tag=6e82f4b79e41b5235e626960a5d5b44b; request_in=15; time=0.010000000"
        ),
        format!(
            "flags=0x0009; seq=3; length=55; crc.status=good; func=div; {sid}; \
             tag=2743725fa7ad7ef4ddede1b017b7125c; response_in=18"
        ),
        format!(
            "flags=0x000c; seq=3; length=102; crc.status=good; status=error; \
             code=division_by_zero; {sid}; tag=86579bd297ceb79d320874fb1cb74c3c; \
             request_in=17; time=0.010000000; info=Error seq=3 division_by_zero [auth]"
        ),
    ];
    for (i, want) in b.iter().enumerate() {
        expect(&rows, 13 + i as u32, want);
    }

    // UDP, on 16724 and on the preference's port; `func` is the top-level
    // member, not the one nested in the arguments.
    let udp = [
        "flags=0x0001; seq=1; crc.status=good; func=div; response_in=20",
        "flags=0x0002; seq=1; crc.status=good; status=success; request_in=19; \
         time=0.010000000",
        "seq=7; crc.status=good; func=rpc.ping; response_in=22",
        "seq=7; crc.status=good; status=success; request_in=21; time=0.010000000",
    ];
    for (i, want) in udp.iter().enumerate() {
        expect(&rows, 19 + i as u32, want);
    }

    // Not AT, and an absurd length: marked, not parsed as frames.
    expect(
        &rows,
        23,
        "magic=0x4745; flags=; seq=; crc.status=; \
         expert=Not AT / out of step: wrong magic; info=Not AT / out of step",
    );
    expect(
        &rows,
        24,
        "seq=9; length=4294967280; crc.status=; \
         expert=Length over the dissector's limit (16 MiB)",
    );

    // Connection E: section 10.
    expect(
        &rows,
        25,
        "flags=0x0001; seq=8; length=53; crc=0xdd297544; crc.status=good; \
         func=rpc.subscribe; response_in=26",
    );
    expect(
        &rows,
        26,
        "flags=0x0002,0x0010; seq=8,1; crc.status=good,good; status=success; \
         request_in=25; time=0.010000000; notify=event; event.topic=temp; event.n=1; \
         event.value=21.5; info=Response seq=8, Event seq=1 temp n=1",
    );
    expect(
        &rows,
        27,
        "flags=0x0010; seq=7; length=33; crc=0xdfc3d876; crc.status=good; notify=call; \
         func=log; info=Notify seq=7 log",
    );
    expect(
        &rows,
        28,
        "flags=0x0001; seq=10; length=51; crc.status=good; func=add; deadline_ms=0; \
         response_in=29; info=Request seq=10 add deadline_ms=0",
    );
    expect(
        &rows,
        29,
        "flags=0x0004; seq=10; crc.status=good; status=error; code=deadline_exceeded; \
         request_in=28; time=0.010000000",
    );
    expect(
        &rows,
        30,
        "flags=0x0001; seq=11; crc.status=good; func=add; response_in=32; cancelled_in=31; \
         info=Request seq=11 add [cancelled]",
    );
    expect(
        &rows,
        31,
        "flags=0x0010; seq=12; length=36; crc=0xa621020b; crc.status=good; notify=call; \
         func=rpc.cancel; cancel.seq=11; cancel.call_in=30; \
         info=Notify seq=12 rpc.cancel(11)",
    );
    expect(
        &rows,
        32,
        "flags=0x0004; seq=11; crc.status=good; status=error; code=cancelled; \
         request_in=30; time=0.020000000",
    );
    expect(
        &rows,
        33,
        "flags=0x0010; seq=2; crc.status=good; notify=event; event.topic=temp; event.n=18; \
         event.end=lease; info=Event seq=2 temp n=18 end=lease",
    );
    expect(
        &rows,
        34,
        &format!(
            "flags=0x0018; seq=1; length=64; crc=0xc19dc75b; crc.status=good; notify=event; \
             event.topic=temp; event.n=1; event.value=21.5; {sid}; \
             tag=22344000ed4efc0b6dd5b00ca541393d; info=Event seq=1 temp n=1 [auth]"
        ),
    );
    expect(
        &rows,
        35,
        &format!(
            "flags=0x0018; seq=7; crc.status=good; notify=call; func=log; {sid}; \
             tag=ec21d1ebf139e5d8e53f8259d71df128; info=Notify seq=7 log [auth]"
        ),
    );
    expect(
        &rows,
        36,
        "flags=0x0011; seq=7; crc.status=good; \
         expert=Flags must carry exactly one type bit (REQUEST, RESPONSE, ERROR, NOTIFY); \
         info=Invalid seq=7",
    );
    expect(
        &rows,
        37,
        "flags=0x0010; seq=7; crc.status=good; notify=call; func=log; info=Notify seq=7 log",
    );
    expect(
        &rows,
        38,
        "flags=0x0010; seq=12; crc.status=good; notify=call; func=rpc.cancel; cancel.seq=11; \
         info=Notify seq=12 rpc.cancel(11)",
    );
}
