//! A small binary codec for model and alert state: fixed-width little-endian
//! numbers, length-prefixed bytes. Written by hand rather than derived, so
//! the snapshot format is explicit, compact (no field names, no padding)
//! and does not change when a struct gains a field that is not state.
//!
//! Guarantees: a value written and read back is bit-identical (floats go as
//! their bits); reading never panics whatever the bytes: a short or
//! malformed input is [`Corrupt`].

use chrono::{DateTime, Utc};

/// The bytes are not a snapshot this version wrote (short, malformed, or of
/// another shape than the configuration expects).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("snapshot entry is corrupt or of another shape")]
pub struct Corrupt;

/// Appends values to a buffer.
#[derive(Debug, Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// An empty writer with room for `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            buf: Vec::with_capacity(capacity),
        }
    }

    /// The bytes written.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    /// One byte.
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    /// A flag as one byte.
    pub fn bool(&mut self, v: bool) {
        self.buf.push(u8::from(v));
    }

    /// A u16.
    pub fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// A u32.
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// A u64.
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// An i64.
    pub fn i64(&mut self, v: i64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// An f64, as its bits (NaN payloads and signed zeros survive).
    pub fn f64(&mut self, v: f64) {
        self.u64(v.to_bits());
    }

    /// An f32, as its bits.
    pub fn f32(&mut self, v: f32) {
        self.u32(v.to_bits());
    }

    /// Bytes with a u32 length before them.
    pub fn bytes(&mut self, v: &[u8]) {
        self.u32(u32::try_from(v.len()).unwrap_or(u32::MAX));
        self.buf.extend_from_slice(&v[..v.len().min(u32::MAX as usize)]);
    }

    /// A string (its UTF-8 bytes).
    pub fn str(&mut self, v: &str) {
        self.bytes(v.as_bytes());
    }

    /// An instant, exactly: epoch seconds and nanoseconds.
    pub fn time(&mut self, v: DateTime<Utc>) {
        self.i64(v.timestamp());
        self.u32(v.timestamp_subsec_nanos());
    }

    /// An optional instant: a flag, then the instant if present.
    pub fn opt_time(&mut self, v: Option<DateTime<Utc>>) {
        self.bool(v.is_some());
        if let Some(t) = v {
            self.time(t);
        }
    }
}

/// Reads values in the order a [`Writer`] wrote them.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    /// Whether everything was read (a snapshot entry with bytes left over is corrupt).
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N], Corrupt> {
        let (head, rest) = self.buf.split_first_chunk::<N>().ok_or(Corrupt)?;
        self.buf = rest;
        Ok(*head)
    }

    /// One byte.
    pub fn u8(&mut self) -> Result<u8, Corrupt> {
        Ok(self.take::<1>()?[0])
    }

    /// A flag (0 or 1; anything else is corrupt).
    pub fn bool(&mut self) -> Result<bool, Corrupt> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(Corrupt),
        }
    }

    /// A u16.
    pub fn u16(&mut self) -> Result<u16, Corrupt> {
        self.take().map(u16::from_le_bytes)
    }

    /// A u32.
    pub fn u32(&mut self) -> Result<u32, Corrupt> {
        self.take().map(u32::from_le_bytes)
    }

    /// A u64.
    pub fn u64(&mut self) -> Result<u64, Corrupt> {
        self.take().map(u64::from_le_bytes)
    }

    /// An i64.
    pub fn i64(&mut self) -> Result<i64, Corrupt> {
        self.take().map(i64::from_le_bytes)
    }

    /// An f64.
    pub fn f64(&mut self) -> Result<f64, Corrupt> {
        self.u64().map(f64::from_bits)
    }

    /// An f32.
    pub fn f32(&mut self) -> Result<f32, Corrupt> {
        self.u32().map(f32::from_bits)
    }

    /// Length-prefixed bytes.
    pub fn bytes(&mut self) -> Result<&'a [u8], Corrupt> {
        let n = self.u32()? as usize;
        if n > self.buf.len() {
            return Err(Corrupt);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    /// A string.
    pub fn str(&mut self) -> Result<&'a str, Corrupt> {
        std::str::from_utf8(self.bytes()?).map_err(|_| Corrupt)
    }

    /// An instant.
    pub fn time(&mut self) -> Result<DateTime<Utc>, Corrupt> {
        let secs = self.i64()?;
        DateTime::from_timestamp(secs, self.u32()?).ok_or(Corrupt)
    }

    /// An optional instant.
    pub fn opt_time(&mut self) -> Result<Option<DateTime<Utc>>, Corrupt> {
        if self.bool()? { self.time().map(Some) } else { Ok(None) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_bit_for_bit_and_short_input_is_corrupt() {
        let mut w = Writer::default();
        w.u8(7);
        w.bool(true);
        w.u16(65_000);
        w.u32(4_000_000_000);
        w.u64(u64::MAX - 3);
        w.i64(-42);
        w.f64(-0.0);
        w.f64(f64::NAN);
        w.f32(1.5e-40); // subnormal
        w.str("dévice");
        let t = DateTime::from_timestamp(1_800_000_000, 123_456_789).expect("valid");
        w.opt_time(Some(t));
        w.opt_time(None);
        let bytes = w.into_bytes();
        let mut r = Reader::new(&bytes);
        assert_eq!(r.u8(), Ok(7));
        assert_eq!(r.bool(), Ok(true));
        assert_eq!(r.u16(), Ok(65_000));
        assert_eq!(r.u32(), Ok(4_000_000_000));
        assert_eq!(r.u64(), Ok(u64::MAX - 3));
        assert_eq!(r.i64(), Ok(-42));
        assert_eq!(r.f64().map(f64::to_bits), Ok((-0.0f64).to_bits()));
        assert!(r.f64().is_ok_and(f64::is_nan));
        assert_eq!(r.f32().map(f32::to_bits), Ok(1.5e-40f32.to_bits()));
        assert_eq!(r.str(), Ok("dévice"));
        assert_eq!(r.opt_time(), Ok(Some(t)));
        assert_eq!(r.opt_time(), Ok(None));
        assert!(r.is_empty());
        // Every truncation fails cleanly, never panics.
        for cut in 0..bytes.len() {
            let mut r = Reader::new(&bytes[..cut]);
            let all = (|| -> Result<(), Corrupt> {
                r.u8()?;
                r.bool()?;
                r.u16()?;
                r.u32()?;
                r.u64()?;
                r.i64()?;
                r.f64()?;
                r.f64()?;
                r.f32()?;
                r.str()?;
                r.opt_time()?;
                r.opt_time()?;
                Ok(())
            })();
            assert_eq!(all, Err(Corrupt), "cut at {cut}");
        }
        // A length prefix past the end, a flag that is not 0 or 1.
        assert_eq!(Reader::new(&[9, 0, 0, 0, 1]).bytes(), Err(Corrupt));
        assert_eq!(Reader::new(&[2]).bool(), Err(Corrupt));
    }
}
