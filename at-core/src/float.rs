//! Compact, exact conversions between decimal text and doubles, for
//! firmware where core's and ryu's tables do not fit the flash budget.
//!
//! - [`parse`] (feature `small-float`): decimal -> nearest double, ties to
//!   even, exactly as `str::parse::<f64>` rounds, with a small big-integer
//!   (no tables: about 1.5 KiB of code instead of about 15 KiB), at the cost
//!   of speed (microseconds to a millisecond on a Cortex-M4) and about
//!   1.2 KiB of stack.
//! - [`write_shortest`] (used when the `float` feature is off): a double to
//!   its shortest round-trip text, in exactly ryu's format, for magnitudes
//!   in [2^-64, 2^64) (every `div` of two integers lands there), with
//!   128-bit integers only (Burger & Dybvig's free-format algorithm).
//!
//! Both are tested against core's parser and ryu on many inputs.

/// Significant digits kept when reading; a nonzero digit beyond them only
/// marks the value as "a little more" (enough to round exactly: a double's
/// halfway points need at most 767 significant digits).
const MAX_DIGITS: usize = 800;

/// 32-bit limbs of the big integer: room for 800 digits scaled by 2^70, or
/// 5^1124 scaled likewise.
const LIMBS: usize = 92;

/// A fixed-size unsigned big integer of `L` 32-bit limbs, little-endian.
#[derive(Clone)]
struct Big<const L: usize = LIMBS> {
    limbs: [u32; L],
    /// Limbs in use (the rest are 0).
    len: usize,
}

impl<const L: usize> Big<L> {
    fn new(value: u64) -> Self {
        let mut b = Big {
            limbs: [0; L],
            len: 2.min(L),
        };
        b.limbs[0] = value as u32;
        if L > 1 {
            b.limbs[1] = (value >> 32) as u32;
        }
        b.trim();
        b
    }

    fn trim(&mut self) {
        while self.len > 0 && self.limbs[self.len - 1] == 0 {
            self.len -= 1;
        }
    }

    fn is_zero(&self) -> bool {
        self.len == 0
    }

    /// self = self * m + add. Saturates silently past `L` limbs (never
    /// reached by the callers' bounds).
    fn mul_add(&mut self, m: u32, add: u32) {
        let mut carry = u64::from(add);
        for limb in &mut self.limbs[..self.len] {
            let v = u64::from(*limb) * u64::from(m) + carry;
            *limb = v as u32;
            carry = v >> 32;
        }
        if carry != 0 && self.len < L {
            self.limbs[self.len] = carry as u32;
            self.len += 1;
        }
    }

    /// self *= 5^n.
    fn mul_pow5(&mut self, mut n: u32) {
        while n > 0 {
            let step = n.min(13); // 5^13 < 2^32
            self.mul_add(5u32.pow(step), 0);
            n -= step;
        }
    }

    fn bits(&self) -> u32 {
        match self.len {
            0 => 0,
            n => 32 * n as u32 - self.limbs[n - 1].leading_zeros(),
        }
    }

    fn bit(&self, i: u32) -> bool {
        let limb = (i / 32) as usize;
        limb < self.len && (self.limbs[limb] >> (i % 32)) & 1 == 1
    }

    fn shl(&mut self, n: u32) {
        let (limbs, bits) = ((n / 32) as usize, n % 32);
        let new_len = (self.len + limbs + 1).min(L);
        for i in (0..new_len).rev() {
            let hi = i
                .checked_sub(limbs)
                .map_or(0, |j| self.limbs.get(j).copied().unwrap_or(0));
            let lo = i
                .checked_sub(limbs + 1)
                .map_or(0, |j| self.limbs.get(j).copied().unwrap_or(0));
            self.limbs[i] = if bits == 0 {
                hi
            } else {
                (hi << bits) | (lo >> (32 - bits))
            };
        }
        self.len = new_len;
        self.trim();
    }

    fn shr1(&mut self) {
        for i in 0..self.len {
            let next = self.limbs.get(i + 1).copied().unwrap_or(0);
            self.limbs[i] = (self.limbs[i] >> 1) | (next << 31);
        }
        self.trim();
    }

    fn ge(&self, other: &Self) -> bool {
        if self.len != other.len {
            return self.len > other.len;
        }
        for i in (0..self.len).rev() {
            if self.limbs[i] != other.limbs[i] {
                return self.limbs[i] > other.limbs[i];
            }
        }
        true
    }

    /// self -= other; `self >= other`.
    fn sub(&mut self, other: &Self) {
        let mut borrow = 0u64;
        for i in 0..self.len {
            let o = u64::from(other.limbs.get(i).copied().unwrap_or(0)) + borrow;
            let s = u64::from(self.limbs[i]);
            self.limbs[i] = s.wrapping_sub(o) as u32;
            borrow = u64::from(s < o);
        }
        self.trim();
    }

    /// self += other.
    #[cfg_attr(feature = "float", allow(dead_code))]
    fn add(&mut self, other: &Self) {
        let mut carry = 0u64;
        let len = self.len.max(other.len);
        for i in 0..len {
            let v = u64::from(self.limbs[i]) + u64::from(other.limbs[i]) + carry;
            self.limbs[i] = v as u32;
            carry = v >> 32;
        }
        self.len = len;
        if carry != 0 && len < L {
            self.limbs[len] = carry as u32;
            self.len += 1;
        }
    }

    /// The top 128 bits (all of it when shorter), how many bits were cut
    /// below them, and whether any cut bit was 1.
    fn top128(&self) -> (u128, u32, bool) {
        let bits = self.bits();
        let cut = bits.saturating_sub(128);
        let mut top = 0u128;
        for i in (cut..bits).rev() {
            top = (top << 1) | u128::from(self.bit(i));
        }
        let sticky = (0..cut).any(|i| self.bit(i));
        (top, cut, sticky)
    }
}

/// The double nearest `q * 2^e2` (plus a little more when `sticky`), ties
/// to even, with subnormals and overflow. `q > 0`; when `sticky`, `q` has
/// at least 64 bits.
fn assemble(q: u128, e2: i64, sticky: bool) -> f64 {
    let bl = i64::from(128 - q.leading_zeros());
    let exp = bl - 1 + e2;
    if exp > 1023 {
        return f64::INFINITY;
    }
    // Bits kept: 53 for a normal result, fewer for a subnormal one.
    let keep = if exp >= -1022 { 53 } else { exp + 1075 };
    if keep < 0 {
        return 0.0;
    }
    let shift = bl - keep;
    let mut mant = if shift <= 0 {
        q << (-shift) as u32
    } else {
        let shift = shift as u32;
        let (kept, rem) = if shift >= 128 {
            (0, q)
        } else {
            (q >> shift, q & ((1u128 << shift) - 1))
        };
        let half = 1u128 << (shift - 1);
        if rem > half || (rem == half && (sticky || kept & 1 == 1)) {
            kept + 1
        } else {
            kept
        }
    };
    if keep == 53 {
        let mut exp = exp;
        if mant == 1 << 53 {
            mant >>= 1;
            exp += 1;
            if exp > 1023 {
                return f64::INFINITY;
            }
        }
        f64::from_bits(((exp + 1023) as u64) << 52 | (mant as u64 & ((1 << 52) - 1)))
    } else {
        // A subnormal is its mantissa; one rounded up to 2^52 is the
        // smallest normal, whose bits are the same number.
        f64::from_bits(mant as u64)
    }
}

/// The double nearest the JSON number `text` (already validated:
/// `-?digits(.digits)?([eE][+-]?digits)?`), rounding ties to even.
#[cfg_attr(not(all(feature = "float", feature = "small-float")), allow(dead_code))]
pub(crate) fn parse(text: &str) -> f64 {
    let bytes = text.as_bytes();
    let negative = bytes.first() == Some(&b'-');
    let mut digits = Big::<LIMBS>::new(0);
    let mut taken = 0usize;
    // value = digits * 10^exp10 (+ a little more when `sticky`)
    let mut exp10: i64 = 0;
    let mut sticky = false;
    let mut in_fraction = false;
    let mut i = usize::from(negative);
    while let Some(&c) = bytes.get(i) {
        match c {
            b'0'..=b'9' => {
                if taken == 0 && c == b'0' {
                    // A leading zero.
                    exp10 -= i64::from(in_fraction);
                } else if taken < MAX_DIGITS {
                    digits.mul_add(10, u32::from(c - b'0'));
                    taken += 1;
                    exp10 -= i64::from(in_fraction);
                } else {
                    sticky |= c != b'0';
                    exp10 += i64::from(!in_fraction);
                }
            }
            b'.' => in_fraction = true,
            _ => break,
        }
        i += 1;
    }
    if let Some(b'e' | b'E') = bytes.get(i) {
        i += 1;
        let minus = bytes.get(i) == Some(&b'-');
        if let Some(b'+' | b'-') = bytes.get(i) {
            i += 1;
        }
        let mut e: i64 = 0;
        while let Some(&c @ b'0'..=b'9') = bytes.get(i) {
            e = (e * 10 + i64::from(c - b'0')).min(1_000_000);
            i += 1;
        }
        exp10 += if minus { -e } else { e };
    }
    let magnitude = if digits.is_zero() {
        0.0
    } else if taken as i64 + exp10 > 310 {
        f64::INFINITY
    } else if taken as i64 + exp10 < -324 {
        0.0
    } else if exp10 >= 0 {
        // Exact: digits * 5^e * 2^e.
        digits.mul_pow5(exp10 as u32);
        let (top, cut, lost) = digits.top128();
        assemble(top, exp10 + i64::from(cut), sticky || lost)
    } else {
        // digits / (5^k * 2^k): a quotient of at least 66 bits by long
        // division, the remainder as sticky bit.
        let k = (-exp10) as u32;
        let mut divisor = Big::<LIMBS>::new(1);
        divisor.mul_pow5(k);
        // Scale so the quotient has 67 or 68 bits: digits up when they are short,
        // the divisor up when they are long (so q fits in 128 bits).
        let s = i64::from(divisor.bits() + 67) - i64::from(digits.bits());
        if s >= 0 {
            digits.shl(s as u32);
        } else {
            divisor.shl((-s) as u32);
        }
        let t = digits.bits() - divisor.bits();
        divisor.shl(t);
        let mut q = 0u128;
        for bit in (0..=t).rev() {
            if digits.ge(&divisor) {
                digits.sub(&divisor);
                q |= 1 << bit;
            }
            divisor.shr1();
        }
        assemble(q, -s - i64::from(k), sticky || !digits.is_zero())
    };
    if negative { -magnitude } else { magnitude }
}

/// Writes `x` as ryu does (shortest round trip, always with `.` or an
/// exponent) into `out` and returns the length, for `x` zero or with a
/// magnitude in [2^-64, 2^64); `None` for other doubles.
#[cfg_attr(feature = "float", allow(dead_code))]
pub(crate) fn write_shortest(x: f64, out: &mut [u8; 32]) -> Option<usize> {
    let bits = x.to_bits();
    let mut at = 0;
    if bits >> 63 == 1 {
        out[0] = b'-';
        at = 1;
    }
    let biased = ((bits >> 52) & 0x7ff) as i32;
    let fraction = bits & ((1 << 52) - 1);
    if biased == 0 && fraction == 0 {
        out[at..at + 3].copy_from_slice(b"0.0");
        return Some(at + 3);
    }
    let f = fraction | (1 << 52);
    let e = biased - 1075; // x = f * 2^e
    if biased == 0 || !(-116..=11).contains(&e) {
        return None;
    }
    // Burger & Dybvig: v = r / s, the rounding interval is
    // [v - mm / s, v + mp / s], closed when f is even. Every quantity stays
    // below 2^124 in the range served, so four limbs do.
    type N = Big<4>;
    let even = f & 1 == 0;
    // At a power of two the interval below is half as wide: scale by 2 more.
    let wide = u32::from(f == 1 << 52);
    let mut r = N::new(f);
    let mut s = N::new(1);
    let mut mp = N::new(1);
    let mut mm = N::new(1);
    r.shl(1 + wide);
    mp.shl(wide);
    if e >= 0 {
        r.shl(e as u32);
        mp.shl(e as u32);
        mm.shl(e as u32);
        s.shl(1 + wide);
    } else {
        s.shl((1 - e) as u32 + wide);
    }
    // r + mp reaches s (the high end of the interval is at least 1).
    let reaches = |r: &N, mp: &N, s: &N| {
        let mut high = r.clone();
        high.add(mp);
        if even { high.ge(s) } else { !s.ge(&high) }
    };
    // Scale so that the first digit generated is the leading one.
    let mut k: i32 = 0;
    while reaches(&r, &mp, &s) {
        s.mul_add(10, 0);
        k += 1;
    }
    loop {
        let (mut r10, mut mp10) = (r.clone(), mp.clone());
        r10.mul_add(10, 0);
        mp10.mul_add(10, 0);
        if reaches(&r10, &mp10, &s) {
            break;
        }
        r = r10;
        mp = mp10;
        mm.mul_add(10, 0);
        k -= 1;
    }
    let mut digits = [0u8; 20];
    let mut n = 0;
    loop {
        r.mul_add(10, 0);
        mp.mul_add(10, 0);
        mm.mul_add(10, 0);
        let mut d = 0u8;
        while r.ge(&s) {
            r.sub(&s);
            d += 1;
        }
        let low = if even { mm.ge(&r) } else { !r.ge(&mm) };
        let high = reaches(&r, &mp, &s);
        if !(low || high) && n + 1 < digits.len() {
            digits[n] = d;
            n += 1;
            continue;
        }
        let up = match (low, high) {
            (true, false) => false,
            (false, true) => true,
            // Both neighbours read back as x: the closer, ties to even.
            _ => {
                let mut twice = r.clone();
                twice.shl(1);
                !s.ge(&twice) || (twice.ge(&s) && d % 2 == 1)
            }
        };
        digits[n] = d + u8::from(up);
        n += 1;
        break;
    }
    // A carry out of a 9 (not expected, but cheap to handle).
    let mut i = n - 1;
    while digits[i] == 10 {
        digits[i] = 0;
        if i == 0 {
            digits.copy_within(0..n, 1);
            digits[0] = 1;
            n += 1;
            k += 1;
            break;
        }
        i -= 1;
        digits[i] += 1;
    }
    while n > 1 && digits[n - 1] == 0 {
        n -= 1;
    }
    Some(at + ryu_layout(&digits[..n], k, &mut out[at..]))
}

/// Lays out `0.d1d2... * 10^kk` as ryu does; returns the length.
fn ryu_layout(digits: &[u8], kk: i32, out: &mut [u8]) -> usize {
    let n = digits.len() as i32;
    let mut at = 0;
    let mut put = |b: u8| {
        out[at] = b;
        at += 1;
    };
    let digit = |i: i32| b'0' + digits[i as usize];
    if n <= kk && kk <= 16 {
        // 1234e7 -> 12340000000.0
        (0..n).for_each(|i| put(digit(i)));
        (n..kk).for_each(|_| put(b'0'));
        put(b'.');
        put(b'0');
    } else if 0 < kk && kk <= 16 {
        // 1234e-2 -> 12.34
        (0..kk).for_each(|i| put(digit(i)));
        put(b'.');
        (kk..n).for_each(|i| put(digit(i)));
    } else if -5 < kk && kk <= 0 {
        // 1234e-6 -> 0.001234
        put(b'0');
        put(b'.');
        (kk..0).for_each(|_| put(b'0'));
        (0..n).for_each(|i| put(digit(i)));
    } else {
        // 1e30, 1.234e33, 1.5e-7
        put(digit(0));
        if n > 1 {
            put(b'.');
            (1..n).for_each(|i| put(digit(i)));
        }
        put(b'e');
        let mut e = kk - 1;
        if e < 0 {
            put(b'-');
            e = -e;
        }
        if e >= 100 {
            put(b'0' + (e / 100) as u8);
        }
        if e >= 10 {
            put(b'0' + (e / 10 % 10) as u8);
        }
        put(b'0' + (e % 10) as u8);
    }
    at
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::borrow::ToOwned;
    use std::format;
    use std::string::String;

    /// xorshift64*: deterministic, no dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn check_parse(text: &str) {
        let want: f64 = text.parse().unwrap();
        let got = parse(text);
        assert_eq!(got.to_bits(), want.to_bits(), "{text}: {got:e} != {want:e}");
    }

    #[test]
    fn parses_edge_cases_exactly() {
        for text in [
            // Far more digits than decimal places (a fuzz find: the quotient
            // outgrew 128 bits).
            "200000000000000000000000000000000000000.0",
            "123456789012345678901234567890123456789012345.5",
            "0",
            "-0",
            "0.0",
            "-0.0",
            "0e5",
            "1",
            "2.5",
            "0.1",
            "0.3",
            "1e300",
            "1e308",
            "1.7976931348623157e308",
            "1.7976931348623158e308",
            "1.7976931348623159e308",
            "2e308",
            "1e400",
            "5e-324",
            "4.9406564584124654e-324",
            "2.4703282292062327e-324",
            "2.4703282292062328e-324",
            "2.47032822920623272e-324",
            "1e-400",
            "2.2250738585072011e-308",
            "2.2250738585072012e-308",
            "2.2250738585072014e-308",
            "9007199254740993",
            "9007199254740992.5",
            "9007199254740993.0000000000000000001",
            "123456789012345678901234567890",
            "0.000000000000000000000000000001",
            "1.00000000000000011102230246251565404236316680908203125",
            "1.00000000000000011102230246251565404236316680908203124",
            "1.00000000000000011102230246251565404236316680908203126",
            "7.2057594037927933e16",
            "3.0744573456182584e18",
            "1E5",
            "1e+5",
            "1.5E-5",
            "-12.75e-1",
            "0.00000000000000000000000000000000000000000000000000000000000000000000000000000000000001e85",
        ] {
            check_parse(text);
        }
        // A halfway case that needs all of 767 digits, and one digit more.
        let mut long = String::from(
            "2.4703282292062327208828439643411068618252990130716238221279284125033775363510437593264991818081799618989828234772285886546332835517796989819938739800539093906315035659515570226392290858392449105184435931802849936536152500319370457678249219365623669863658480757001585769269903706311928279558551332927834338409351978015531246597263579574622766465272827220056374006485499977096599470454020828166226237857393450736339007967761930577506740176324673600968951340535537458516661134223766678604162159680461914467291840300530057530849048765391711386591646239524912623653881879636239373280423891018672348497668235089863388587925628302755995657524455507255189313690836254779186948667994968324049705821028513185451396213837722826145437693412532098591327667236328125e-324",
        );
        check_parse(&long);
        long.insert(long.len() - 5, '1');
        check_parse(&long);
    }

    #[test]
    fn parses_random_decimals_like_core() {
        // Thousands of random inputs natively; a few under Miri, where each
        // takes the interpreter a long while.
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for _ in 0..if cfg!(miri) { 20 } else { 10_000 } {
            let mut text = String::new();
            if rng.below(2) == 0 {
                text.push('-');
            }
            let int_digits = 1 + rng.below(20);
            for i in 0..int_digits {
                let d = if i == 0 && int_digits > 1 {
                    1 + rng.below(9)
                } else {
                    rng.below(10)
                };
                text.push((b'0' + d as u8) as char);
            }
            if rng.below(2) == 0 {
                text.push('.');
                for _ in 0..1 + rng.below(25) {
                    text.push((b'0' + rng.below(10) as u8) as char);
                }
            }
            if rng.below(2) == 0 {
                text.push_str(&format!("e{}", rng.below(700) as i64 - 350));
            }
            check_parse(&text);
        }
    }

    #[test]
    fn reads_back_every_kind_of_double() {
        let mut rng = Rng(42);
        for _ in 0..if cfg!(miri) { 20 } else { 10_000 } {
            let x = f64::from_bits(rng.next());
            if !x.is_finite() {
                continue;
            }
            let text = ryu::Buffer::new().format_finite(x).to_owned();
            check_parse(&text);
            check_parse(&format!("{x:e}"));
        }
    }

    fn check_write(x: f64) {
        let mut out = [0u8; 32];
        let n = write_shortest(x, &mut out).unwrap_or_else(|| panic!("{x:e} not written"));
        let got = core::str::from_utf8(&out[..n]).unwrap();
        assert_eq!(got, ryu::Buffer::new().format_finite(x), "{x:e}");
    }

    #[test]
    fn writes_like_ryu() {
        for x in [
            0.0,
            -0.0,
            1.0,
            2.5,
            5.0,
            0.1,
            0.3,
            1.0 / 3.0,
            2.0 / 3.0,
            100.0,
            1e15,
            1e16,
            1.5e16,
            123456.789,
            0.001,
            0.0001,
            0.00001,
            1.5e-5,
            9007199254740992.0,
            9007199254740993.0 / 3.0,
            3.0744573456182584e18,
            9.223372036854776e18,
            1.0842021724855044e-19,
            -7.0 / 2.0,
            // Powers of two from their bits: Miri rounds `powi` at random.
            f64::from_bits((1023 - 64) << 52),
            f64::from_bits((1023 + 63) << 52),
            f64::from_bits((1023 + 64) << 52) - 2048.0,
            6e-20,
            1e-19,
            4.35,
            0.3 * 3.0,
        ] {
            check_write(x);
        }
        let mut rng = Rng(7);
        for _ in 0..if cfg!(miri) { 20 } else { 20_000 } {
            // Random doubles in [2^-64, 2^64).
            let exponent = 1023 - 64 + rng.below(128);
            let x = f64::from_bits(exponent << 52 | rng.below(1 << 52));
            check_write(x);
            // Powers of two and their neighbours (the narrow intervals).
            let p = f64::from_bits(exponent << 52);
            check_write(p);
            check_write(f64::from_bits(p.to_bits() + 1));
            if exponent > 1023 - 64 {
                check_write(f64::from_bits(p.to_bits() - 1));
            }
            // Quotients of integers, as div makes them.
            let (a, b) = (
                rng.next() as i64 >> rng.below(63),
                (rng.next() as i64 >> rng.below(63)) | 1,
            );
            check_write(a as f64 / b as f64);
        }
        assert_eq!(write_shortest(1e300, &mut [0; 32]), None);
        assert_eq!(write_shortest(1e-300, &mut [0; 32]), None);
        assert_eq!(write_shortest(f64::MIN_POSITIVE / 4.0, &mut [0; 32]), None);
    }
}
