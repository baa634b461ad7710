//! What the firmware serves: at-core's calculator; `count`, which says how
//! many times it has run (so a test can tell whether a retransmitted
//! request ran again); `led`, a typed function (at-core's
//! [`function!`](at_core::function)) that drives the board's LED 0; and
//! (networked build) the topics `uptime` and `calls`.

use core::sync::atomic::{AtomicU32, Ordering};

use at_core::calculator::{ADD, DIV, MUL, SUB};
use at_core::{CallError, Function, Functions, Reply, Value, function};

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

/// The topics of the networked firmware (contract 10.3; served over TCP,
/// UDP and the UART, so unused by the MQTT-only build).
#[cfg(any(feature = "net", feature = "mqtt"))]
#[cfg_attr(not(feature = "net"), allow(dead_code))]
pub static TOPICS: [at_core::subscriptions::Topic; 2] = [
    at_core::subscriptions::Topic::state("uptime", "seconds since boot"),
    at_core::subscriptions::Topic::new("calls", "calls answered"),
];

/// Calls answered so far (topic `calls`).
static CALLS: AtomicU32 = AtomicU32::new(0);

/// How many calls [`COUNTED`] has answered.
#[cfg(any(feature = "net", feature = "mqtt"))]
#[cfg_attr(not(feature = "net"), allow(dead_code))]
pub fn calls() -> u32 {
    CALLS.load(Ordering::Relaxed)
}

/// [`FUNCTIONS`], counting each call answered.
pub struct Counted(&'static [Function]);

/// The table the servers answer from.
pub static COUNTED: Counted = Counted(&FUNCTIONS);

impl Functions for Counted {
    fn call<R>(&self, func: &str, args: &[Value<'_>], reply: impl FnOnce(Reply<'_>) -> R) -> R {
        CALLS.fetch_add(1, Ordering::Relaxed);
        self.0.call(func, args, reply)
    }

    fn count(&self) -> usize {
        self.0.count()
    }

    fn describe(&self, index: usize) -> Option<at_core::Description<'_>> {
        self.0.describe(index)
    }
}

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
