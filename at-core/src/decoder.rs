//! The incremental frame decoder: bytes in, in any chunking; whole frames
//! out, zero-copy, in order.
//!
//! Like `httparse`, it never blocks and never guesses: until a whole frame is
//! buffered, [`FrameDecoder::next_frame`] answers `Ok(None)` ("partial").
//!
//! # Memory
//! A decoder is its buffer plus three words: `FrameDecoder<[u8; N]>` takes
//! `N + 3 * size_of::<usize>()` bytes (rounded up for alignment) and never
//! allocates. The largest frame it can hold is `N` bytes, so the largest body
//! it accepts is `min(max_body, N - 16)`; a header announcing more is
//! reported as soon as the header is in, without waiting for the body.
//!
//! # Errors and staying in step
//! - A CRC mismatch or a header with no (or several) type bits consumes the
//!   whole frame: the stream stays in step and the next frame decodes.
//! - A wrong magic or an oversize length leave the stream out of step: the
//!   decoder keeps reporting the same error until the caller either drops
//!   the stream (TCP: reply, then close) or calls
//!   [`FrameDecoder::resync`], which skips to the next byte pair that could
//!   start a frame (serial links with line noise).

use crate::frame::{Frame, FrameError};
use crate::header::{HEADER_LEN, Header, HeaderError, MAGIC};

const MAGIC_BYTES: [u8; 2] = MAGIC.to_be_bytes();

/// An incremental frame decoder over a fixed buffer `B`: `[u8; N]` on a
/// device, or any `AsMut<[u8]>` (a boxed slice on a host).
///
/// ```
/// use at_core::{FrameDecoder, Kind};
/// let mut wire = [0u8; 128];
/// let a = at_core::encode_frame(Kind::Request, 1, b"{}", &mut wire).unwrap();
/// let b = at_core::encode_frame(Kind::Request, 2, b"[]", &mut wire[a..]).unwrap();
///
/// let mut decoder = FrameDecoder::<[u8; 64]>::new(48);
/// // Two frames glued together, delivered in 5-byte pieces.
/// let mut seqs = Vec::new();
/// for chunk in wire[..a + b].chunks(5) {
///     decoder.push(chunk);
///     while let Some(frame) = decoder.next_frame().unwrap() {
///         seqs.push(frame.seq());
///     }
/// }
/// assert_eq!(seqs, [1, 2]);
/// ```
#[derive(Clone, Debug)]
pub struct FrameDecoder<B> {
    buf: B,
    /// First buffered byte not yet consumed.
    start: usize,
    /// One past the last buffered byte.
    end: usize,
    max_body: u32,
    /// The flags of the last header read.
    flags: u16,
}

impl<const N: usize> FrameDecoder<[u8; N]> {
    /// A decoder with an `N`-byte array buffer, accepting bodies up to
    /// `min(max_body, N - 16)` bytes.
    ///
    /// `N` must hold at least a header (16 bytes); a smaller `N` does not
    /// compile.
    pub const fn new(max_body: u32) -> Self {
        const {
            assert!(
                N >= HEADER_LEN,
                "a FrameDecoder buffer must hold at least a 16-byte header"
            )
        };
        FrameDecoder {
            buf: [0; N],
            start: 0,
            end: 0,
            flags: 0,
            max_body: clamp_max_body(max_body, N),
        }
    }
}

const fn clamp_max_body(max_body: u32, capacity: usize) -> u32 {
    let room = capacity.saturating_sub(HEADER_LEN);
    if (max_body as usize) < room {
        max_body
    } else if room > u32::MAX as usize {
        u32::MAX
    } else {
        room as u32
    }
}

impl<B: AsRef<[u8]> + AsMut<[u8]>> FrameDecoder<B> {
    /// A decoder over a caller's buffer, accepting bodies up to
    /// `min(max_body, buf.len() - 16)` bytes.
    ///
    /// # Panics
    /// If `buf` is shorter than a header (16 bytes): such a decoder could
    /// never hold a frame. (A programming error, caught at construction;
    /// nothing a peer sends can cause it.)
    pub fn with_buffer(buf: B, max_body: u32) -> Self {
        let capacity = buf.as_ref().len();
        assert!(
            capacity >= HEADER_LEN,
            "a FrameDecoder buffer must hold at least a 16-byte header"
        );
        FrameDecoder {
            buf,
            start: 0,
            end: 0,
            flags: 0,
            max_body: clamp_max_body(max_body, capacity),
        }
    }

    /// The largest body this decoder accepts.
    pub fn max_body(&self) -> u32 {
        self.max_body
    }

    /// Bytes buffered and not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// The bytes buffered and not yet returned as frames (the
    /// [`buffered`](Self::buffered) count of them), to look at without
    /// taking them.
    ///
    /// ```
    /// let mut decoder = at_core::FrameDecoder::<[u8; 64]>::new(48);
    /// decoder.push(b"AT\x00");
    /// assert_eq!(decoder.buffered_bytes(), b"AT\x00");
    /// ```
    pub fn buffered_bytes(&self) -> &[u8] {
        self.buf
            .as_ref()
            .get(self.start..self.end)
            .unwrap_or_default()
    }

    /// Forgets everything buffered.
    pub fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
    }

    /// The free space after the buffered bytes, for a read to fill in place
    /// (then call [`commit`](Self::commit)). Moves buffered bytes to the
    /// front first, so the whole free capacity is offered.
    ///
    /// Empty only when the buffer holds a frame start that is still
    /// incomplete and already fills it, which the length check makes
    /// impossible: after [`next_frame`](Self::next_frame) returns `Ok(None)`
    /// there is always room.
    pub fn spare(&mut self) -> &mut [u8] {
        if self.start > 0 {
            self.buf.as_mut().copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let end = self.end;
        &mut self.buf.as_mut()[end..]
    }

    /// Marks `n` bytes written into [`spare`](Self::spare) as received.
    /// `n` is capped at the free space.
    pub fn commit(&mut self, n: usize) {
        let capacity = self.buf.as_ref().len();
        self.end = self.end.saturating_add(n).min(capacity);
    }

    /// Copies as many of `bytes` as fit into the buffer and returns that
    /// count. Feed the rest after taking frames out with
    /// [`next_frame`](Self::next_frame).
    pub fn push(&mut self, bytes: &[u8]) -> usize {
        let spare = self.spare();
        let n = spare.len().min(bytes.len());
        spare[..n].copy_from_slice(&bytes[..n]);
        self.commit(n);
        n
    }

    /// The next whole frame, `Ok(None)` if more bytes are needed, or what is
    /// wrong with the frame at the front.
    ///
    /// On `Ok(Some(frame))`, a CRC mismatch or a type-bit error the frame
    /// is consumed. On a wrong magic or an oversize length nothing is
    /// consumed and the same error comes back until [`resync`](Self::resync)
    /// or [`clear`](Self::clear).
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, FrameError> {
        let buffered = &self.buf.as_ref()[self.start..self.end];
        let Some(head) = buffered.first_chunk::<HEADER_LEN>() else {
            // Report a wrong magic as soon as two bytes show it.
            if let Some(&two) = buffered.first_chunk::<2>()
                && two != MAGIC_BYTES
            {
                return Err(bad_magic(u16::from_be_bytes(two)));
            }
            return Ok(None);
        };
        let header = Header::from_bytes(head);
        if header.magic != MAGIC {
            return Err(bad_magic(header.magic));
        }
        self.flags = header.flags;
        if header.length > self.max_body {
            return Err(FrameError::Header {
                seq: header.seq,
                error: HeaderError::TooLarge {
                    length: header.length,
                    limit: self.max_body,
                },
            });
        }
        let total = HEADER_LEN + header.length as usize;
        if buffered.len() < total {
            return Ok(None);
        }
        let frame_start = self.start;
        self.start += total;
        let body = &self.buf.as_ref()[frame_start + HEADER_LEN..frame_start + total];
        Frame::check(header, body, self.max_body).map(Some)
    }

    /// The flags of the last header [`next_frame`](Self::next_frame) read
    /// (with a right magic): after an error, they tell a bad notification,
    /// which is never answered (contract 10.2), from a bad request.
    pub fn last_flags(&self) -> u16 {
        self.flags
    }

    /// Skips bytes up to the next place a frame could start (the magic's two
    /// bytes, or its first byte at the very end of the buffer) and returns
    /// how many were skipped. Always skips at least one byte when anything is
    /// buffered, so a false magic followed by an oversize length is passed.
    pub fn resync(&mut self) -> usize {
        let buffered = &self.buf.as_ref()[self.start..self.end];
        let skip = match buffered.get(1..) {
            None => buffered.len(),
            Some(rest) => {
                1 + rest
                    .windows(2)
                    .position(|w| w == MAGIC_BYTES)
                    .unwrap_or_else(|| {
                        // Keep a trailing first magic byte: the second may follow.
                        if rest.last() == Some(&MAGIC_BYTES[0]) {
                            rest.len() - 1
                        } else {
                            rest.len()
                        }
                    })
            }
        };
        self.start += skip;
        if self.start == self.end {
            self.clear();
        }
        skip
    }
}

fn bad_magic(found: u16) -> FrameError {
    FrameError::Header {
        seq: 0,
        error: HeaderError::BadMagic { found },
    }
}
