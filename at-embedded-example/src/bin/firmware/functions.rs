//! What the firmware serves: at-core's calculator, and `count`, which says
//! how many times it has run (so a test can tell whether a retransmitted
//! request ran again).

use core::sync::atomic::{AtomicU32, Ordering};

use at_core::calculator::{ADD, DIV, MUL, SUB};
use at_core::{CallError, Function, Value};

/// The firmware's function table.
pub static FUNCTIONS: [Function; 5] = [ADD, SUB, MUL, DIV, Function::new("count", count)];

static COUNT: AtomicU32 = AtomicU32::new(0);

/// `count()`: this call's number, from 1.
fn count<'a>(_: &[Value<'a>]) -> Result<Value<'a>, CallError> {
    let n = COUNT.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
    Ok(Value::Int(i64::from(n)))
}
