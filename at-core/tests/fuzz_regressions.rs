//! Inputs the fuzz targets (`fuzz/`, run by `scripts/fuzz.sh`) once failed
//! on, kept as tests and run through the same checks: the fuzz crate's
//! `src/lib.rs` is included here as a module.

use at_core::Value;

#[allow(dead_code)]
#[path = "../../fuzz/src/lib.rs"]
mod invariants;

/// `fuzz/artifacts/body/crash-bbad281d2cf0ab862e5676891847813d4c8e6bd5`
/// (`cargo fuzz run body --features small-float`): a number with far more
/// significant digits than fraction digits. The `small-float` reader divided
/// by 5^k with a quotient of more than 128 bits and shifted a `u128` by 128
/// or more: a panic with overflow checks, a wrong double without them (as
/// in the firmware: -3.121888888888889 for this input). Only a build with
/// `--features small-float` runs that reader; any build checks the value.
const LONG_DECIMAL: &str = "-11.12188888888888888888888888888888800000000000777777777777\
    777777777777777777777700000000000000000000000000000655904310000000000";

#[test]
fn long_decimal_with_a_short_fraction_reads_exactly() {
    // The same flaw in a plain-looking number: 2e38 written out with ".0"
    // (the old reader, without overflow checks, read 2.985881653953077e37).
    let whole = format!("2{}.0", "0".repeat(38));
    // Longer still.
    let longer = format!("{}{}", LONG_DECIMAL, "9".repeat(700));
    for text in [LONG_DECIMAL, &whole, &longer] {
        invariants::check_body(text.as_bytes());
        let want: f64 = text.parse().unwrap();
        if cfg!(feature = "float") {
            assert_eq!(Value::parse(text), Ok(Value::Float(want)), "{text}");
        } else {
            assert_eq!(
                Value::parse(text),
                Err(at_core::BodyError::FloatUnsupported)
            );
        }
    }
    // As a request argument, through the whole server path.
    let body = format!(r#"{{"func": "add", "args": [{longer}, 0]}}"#);
    let mut frame = vec![0u8; 16 + body.len()];
    at_core::encode_frame(at_core::Kind::Request, 7, body.as_bytes(), &mut frame).unwrap();
    let mut input = vec![6, 0x80, 0]; // limit 65536, a 70,000-byte reply buffer, 1-byte pieces
    input.extend_from_slice(&frame);
    invariants::check_respond(&input);
}

/// The contract's vector through all three targets' checks, so the checks
/// themselves stay compiled and passing here.
#[test]
fn the_fuzz_checks_pass_on_the_contract_vector() {
    let frame = b"\x41\x54\x00\x01\x00\x00\x00\x01\x00\x00\x00\x21\x0b\xbc\xd0\x47\
        {\"func\": \"add\", \"args\": [10, 20]}";
    invariants::check_body(&frame[16..]);
    // Limit 65536, pieces of 7, 1 and 3 bytes; by push, then by spare/commit.
    for mode in [6 | 3 << 3, 0x80 | 6 | 3 << 3] {
        let mut input = vec![mode, 6, 0, 2];
        input.extend_from_slice(frame);
        input.extend_from_slice(b"noise A");
        input.extend_from_slice(frame);
        invariants::check_decoder(&input);
    }
    let mut input = vec![6, 16, 4]; // limit 65536, a 256-byte reply buffer, 5-byte pieces
    input.extend_from_slice(frame);
    invariants::check_respond(&input);
}

/// The `auth` target's invariants on a few scripts: sealed calls, a byte
/// changed in each part of the frame, replays from other ports, the clock
/// moving on, raw garbage.
#[test]
fn auth_scripts_hold_their_invariants() {
    let scripts: &[&[u8]] = &[
        &[
            1, 0, 2, 3, 7, 3, 9, 2, 3, 1, 2, 20, 0x40, 2, 60, 0xff, 1, 0, 3, 4, 3, 1, 1, 0, 2,
        ],
        &[1, 0, 1, 1, 0, 1, 2, 0, 1, 2, 18, 1, 4, 1, 0, 1, 3, 2],
        &[0, 5, 0x41, 0x54, 0, 9, 0, 1, 0, 2],
        &[4, 4, 1, 255, 255, 3, 0, 2, 255, 255],
    ];
    for script in scripts {
        invariants::check_auth(script);
    }
}

/// `fuzz/artifacts/respond/crash-1b444cc0df898e7d04fcaf8f0d594a0dd17c780a`
/// (CI's 20 s run of `respond`): a contract vector (`div(1.5, 0.0)`) with
/// the `AUTH` flag set. The server answered `unauthorized`, as contract
/// section 9 says a server without the session must; the target's model
/// still expected `division_by_zero`. The model now knows the flag.
#[test]
fn an_auth_flagged_request_to_a_server_without_keys_is_unauthorized() {
    let input = b"\x06\x10\x0f\x41\x54\x00\x09\x00\x00\x00\x0d\x00\x00\x00\x23\x5e\xef\x1f\xbd\
        {\"func\": \"div\", \"args\": [1.5, 0.0]}";
    invariants::check_respond(input);
}

/// The `respond` target's model knows the `rpc.*` functions (contract
/// section 7), which every server answers: a fuzzer that finds the names
/// (libFuzzer reads them from the string compares) must not fail on them.
#[test]
fn rpc_functions_hold_the_respond_invariants() {
    let bodies = [
        r#"{"func": "rpc.ping", "args": []}"#,
        r#"{"func": "rpc.ping", "args": ["x"]}"#,
        r#"{"func": "rpc.ping", "args": [1, 2]}"#,
        r#"{"func": "rpc.info", "args": []}"#,
        r#"{"func": "rpc.info", "args": [0]}"#,
        r#"{"func": "rpc.functions", "args": []}"#,
        r#"{"func": "rpc.functions", "args": [2]}"#,
        r#"{"func": "rpc.functions", "args": [-1]}"#,
        r#"{"func": "rpc.hello", "args": ["k", "00"]}"#,
        r#"{"func": "rpc.nope", "args": []}"#,
    ];
    for body in bodies {
        let mut frame = vec![0u8; 16 + body.len()];
        at_core::encode_frame(at_core::Kind::Request, 9, body.as_bytes(), &mut frame).unwrap();
        // Limit 65536; a roomy and a minimal reply buffer; 3-byte pieces.
        for buffer in [0x80, 0] {
            let mut input = vec![6, buffer, 2];
            input.extend_from_slice(&frame);
            invariants::check_respond(&input);
        }
    }
}
