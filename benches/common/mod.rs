//! What the increment benchmarks share.

/// A small, fast, deterministic generator for subject indices.
pub struct XorShift(pub u64);

impl XorShift {
    /// The next index below `below`.
    pub fn next(&mut self, below: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % below as u64) as usize
    }
}
