//! The replay window of a session (as DTLS's, RFC 6347 4.1.2.6): the 64
//! most recent seqs accepted, checked and marked in one step.

/// Why a seq is not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replay {
    /// Seq 0, never accepted.
    Zero,
    /// Accepted before, or older than the window.
    Seen,
    /// The session accepted seq 0xFFFFFFFF: it takes nothing more.
    Exhausted,
}

/// The seqs a session accepted: the highest, and a bit for each of the 64
/// below and at it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplayWindow {
    /// The highest seq accepted (0: none yet).
    highest: u32,
    /// Bit `i` set: seq `highest - i` was accepted.
    bits: u64,
}

impl ReplayWindow {
    /// An empty window.
    pub const fn new() -> Self {
        ReplayWindow {
            highest: 0,
            bits: 0,
        }
    }

    /// Accepts `seq` (marking it) or says why not.
    pub fn accept(&mut self, seq: u32) -> Result<(), Replay> {
        if seq == 0 {
            return Err(Replay::Zero);
        }
        if self.highest == u32::MAX && self.bits & 1 != 0 {
            return Err(Replay::Exhausted);
        }
        if seq > self.highest {
            let shift = seq - self.highest;
            self.bits = if shift >= 64 { 0 } else { self.bits << shift };
            self.bits |= 1;
            self.highest = seq;
            return Ok(());
        }
        let back = self.highest - seq;
        if back >= 64 {
            return Err(Replay::Seen);
        }
        let bit = 1u64 << back;
        if self.bits & bit != 0 {
            return Err(Replay::Seen);
        }
        self.bits |= bit;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_each_seq_once_within_64() {
        let mut w = ReplayWindow::new();
        assert_eq!(w.accept(0), Err(Replay::Zero));
        assert_eq!(w.accept(5), Ok(()));
        assert_eq!(w.accept(5), Err(Replay::Seen));
        assert_eq!(w.accept(3), Ok(()), "late but inside the window");
        assert_eq!(w.accept(3), Err(Replay::Seen));
        assert_eq!(w.accept(100), Ok(()));
        assert_eq!(w.accept(37), Ok(()), "100 - 63");
        assert_eq!(w.accept(36), Err(Replay::Seen), "older than the window");
        assert_eq!(w.accept(u32::MAX), Ok(()));
        assert_eq!(w.accept(u32::MAX - 1), Err(Replay::Exhausted));
    }
}
