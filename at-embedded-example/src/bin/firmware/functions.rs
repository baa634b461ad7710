//! What the firmware serves: at-core's calculator; `count`, which says how
//! many times it has run (so a test can tell whether a retransmitted
//! request ran again); and `led`, a typed function (at-core's
//! [`function!`](at_core::function)) that drives the board's LED 0.

use core::sync::atomic::{AtomicU32, Ordering};

use at_core::calculator::{ADD, DIV, MUL, SUB};
use at_core::{CallError, Function, Value, function};

use crate::board;

/// The name `rpc.info` reports: `AT_NAME` when building, else the board's.
pub const NAME: &str = match option_env!("AT_NAME") {
    Some(name) => name,
    None => "mps2-an386",
};

/// The firmware's function table.
pub static FUNCTIONS: [Function; 6] = [
    ADD,
    SUB,
    MUL,
    DIV,
    Function::new("count", count),
    function!("led", led, "turn LED 0 on or off; returns its new state"),
];

/// `led(on)`: switches LED 0 and returns what the board reads back.
fn led(on: bool) -> Result<bool, CallError> {
    board::set_led(0, on);
    Ok(board::led(0))
}

static COUNT: AtomicU32 = AtomicU32::new(0);

/// `count()`: this call's number, from 1.
fn count<'a>(_: &[Value<'a>]) -> Result<Value<'a>, CallError> {
    let n = COUNT.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
    Ok(Value::Int(i64::from(n)))
}
