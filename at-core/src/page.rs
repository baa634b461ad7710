//! Paged listings (contract section 7): `rpc.functions` and `rpc.topics`
//! write as many entries as fit the reply buffer, at least one while any
//! remain, and say where the next page starts.

use crate::error::ErrorCode;
use crate::frame::{BufferTooSmall, encode_frame_with};
use crate::header::Kind;
use crate::json::Writer;
use crate::reply::write_error_frame;
use crate::value::Value;

/// Room kept at the end of an `rpc.functions` body for its closing part:
/// `], "next": 4294967295}}`.
pub(crate) const PAGE_TAIL: usize = "], \"next\": 4294967295}}".len();

/// The optional `start` of a paged listing: `[]` or one integer >= 0.
pub(crate) fn start_of(args: &[Value<'_>]) -> Option<usize> {
    match args {
        [] => Some(0),
        [Value::Int(start)] if *start >= 0 => Some(usize::try_from(*start).unwrap_or(usize::MAX)),
        _ => None,
    }
}

/// The `internal` error for a reply that does not fit `out` (a server
/// with a buffer below `MIN_REPLY_BUFFER` may not fit even that).
pub(crate) fn too_small(seq: u32, out: &mut [u8]) -> Option<usize> {
    write_error_frame(seq, ErrorCode::Internal, "reply buffer too small", out).ok()
}

/// Writes listing entry `index` (after a ", " when `separate`; without its
/// doc when `doc` is false), or gives `None` past the end.
pub(crate) type WriteEntry<'e> =
    dyn FnMut(&mut Writer<'_>, usize, bool, bool) -> Option<Result<(), BufferTooSmall>> + 'e;

/// A page of a listing, `{"MEMBER": [entries from start], "next": N|null}`:
/// `entry(w, index, separate, doc)` writes entry `index` (`None` past the
/// end), without its doc when `doc` is false.
pub(crate) fn write_paged(
    member: &str,
    start: usize,
    seq: u32,
    out: &mut [u8],
    entry: &mut WriteEntry<'_>,
) -> Result<usize, BufferTooSmall> {
    encode_frame_with(Kind::Response, seq, out, |body| {
        let limit = body.len().checked_sub(PAGE_TAIL).ok_or(BufferTooSmall)?;
        let (entries, tail) = body.split_at_mut(limit);
        let mut w = Writer::new(entries);
        w.raw("{\"status\": \"success\", \"result\": {\"")?;
        w.raw(member)?;
        w.raw("\": [")?;
        let mut next = None;
        let mut index = start;
        loop {
            let before = w.len();
            let first = index == start;
            // The first entry of a page goes in even if only without its
            // doc; a later one that does not fit starts the next page.
            let Some(written) = entry(&mut w, index, !first, true) else {
                break;
            };
            let written = written.or_else(|_| {
                w.truncate(before);
                match first {
                    true => entry(&mut w, index, false, false).unwrap_or(Err(BufferTooSmall)),
                    false => Err(BufferTooSmall),
                }
            });
            if written.is_err() {
                w.truncate(before);
                if first {
                    return Err(BufferTooSmall);
                }
                next = Some(index);
                break;
            }
            index += 1;
        }
        let n = w.len();
        let mut w = Writer::new(tail);
        w.raw("], \"next\": ")?;
        match next {
            Some(i) => w.int(i64::try_from(i).unwrap_or(i64::MAX))?,
            None => w.raw("null")?,
        }
        w.raw("}}")?;
        let m = w.len();
        // Close the gap between the entries and the tail.
        body.copy_within(limit..limit + m, n);
        Ok(n + m)
    })
}
