//! Every vector of tests/vectors/section10.json (the contract's 10.7 and
//! the implementations' own of 10.8 rule 12, written by section10.py)
//! through at-core: each frame is encoded byte for byte and reads back;
//! event bodies parse and are written canonically; sealed ones carry the
//! tag under their direction's key (section 9's vector session) and fail
//! under the other one, as a reflected frame does. Python and C check the
//! same file.

use at_core::auth::crypto::{self, SessionKeys};
use at_core::event::Event;
use at_core::{FLAG_AUTH, Frame, HEADER_LEN, Header, Kind};

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

fn vectors() -> Vec<serde_json::Value> {
    let path = at_tests::peers::repo_root().join("tests/vectors/section10.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The section 9 vector session: key 00..1f, kid "demo", Nc a0..af, Ns
/// b0..bf.
fn session_keys() -> SessionKeys {
    let key: [u8; 32] = std::array::from_fn(|i| i as u8);
    let nc: [u8; 16] = std::array::from_fn(|i| 0xa0 + i as u8);
    let ns: [u8; 16] = std::array::from_fn(|i| 0xb0 + i as u8);
    crypto::derive(&key, "demo", &nc, &ns)
}

const SID: [u8; 8] = [0xc0, 0xc1, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7];

#[test]
fn every_section_10_vector_encodes_decodes_and_verifies() {
    let keys = session_keys();
    let all = vectors();
    assert!(all.len() >= 18, "10.7's thirteen and X1 to X5");
    for v in &all {
        let name = v["name"].as_str().unwrap();
        let wire = unhex(v["frame"].as_str().unwrap());
        let body = v["body"].as_str().unwrap().as_bytes();
        let flags = v["flags"].as_u64().unwrap() as u16;
        let seq = v["seq"].as_u64().unwrap() as u32;
        let frame = Frame::parse(&wire, u32::MAX).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!((frame.header.flags, frame.seq()), (flags, seq), "{name}");
        let kind = Kind::from_flags(flags & !FLAG_AUTH).unwrap();
        match v["key"].as_str() {
            None => {
                let mut out = vec![0u8; wire.len()];
                let n = at_core::encode_frame(kind, seq, body, &mut out).unwrap();
                assert_eq!(out[..n], wire[..], "{name} encodes byte for byte");
            }
            Some(direction) => {
                let (right, wrong) = match direction {
                    "rep" => (keys.reply, keys.request),
                    _ => (keys.request, keys.reply),
                };
                let (plain, trailer) = frame.body.split_at(frame.body.len() - 24);
                assert_eq!(plain, body, "{name}");
                assert_eq!(trailer[..8], SID, "{name}");
                let head: [u8; 12] = wire[..12].try_into().unwrap();
                let tag: [u8; 16] = trailer[8..].try_into().unwrap();
                assert!(
                    crypto::tag_is_valid(&right, &head, plain, &SID, &tag),
                    "{name}"
                );
                assert!(
                    !crypto::tag_is_valid(&wrong, &head, plain, &SID, &tag),
                    "{name} reflected must fail"
                );
                assert_eq!(crypto::tag(&right, &head, plain, &SID), tag, "{name}");
                let h = Header::new(kind, seq, &wire[HEADER_LEN..]);
                assert_eq!(h.crc, frame.header.crc, "{name}: CRC over body and trailer");
            }
        }
        if kind == Kind::Notify && body.starts_with(br#"{"topic""#) {
            let event = Event::parse(body).unwrap_or_else(|e| panic!("{name}: {e:?}"));
            let mut out = vec![0u8; body.len()];
            let n = event.write(&mut out).unwrap();
            assert_eq!(&out[..n], body, "{name} writes canonically");
        }
    }
}

#[test]
fn the_python_generator_still_writes_this_file() {
    // The file is generated: a hand edit would make the three languages
    // disagree with section10.py. Regenerate and compare when python3 is
    // here (a fresh machine has it).
    let root = at_tests::peers::repo_root();
    let Ok(out) = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            "import importlib.util,json,sys;\
             s=importlib.util.spec_from_file_location('g',sys.argv[1]);m=importlib.util.module_from_spec(s);\
             s.loader.exec_module(m);print(json.dumps(m.build()))",
        )
        .arg(root.join("tests/vectors/section10.py"))
        .output()
    else {
        at_tests::skip("python3 is not installed");
        return;
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fresh: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(fresh, serde_json::Value::Array(vectors()));
}
