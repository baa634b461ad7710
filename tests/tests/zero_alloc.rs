//! Proves at-core's claim of zero allocation: decoding frames and answering
//! requests under a global allocator that counts every allocation.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use at_core::calculator::{ADD, DIV, MUL, SUB};
use at_core::{CallError, FrameDecoder, Function, Kind, Reply, Request, Value, function};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator, only counting calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by `f` (on this thread's watch: the test harness runs
/// this file's one test alone, so nothing else allocates meanwhile).
fn allocations_in(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    f();
    ALLOCATIONS.load(Ordering::SeqCst) - before
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
