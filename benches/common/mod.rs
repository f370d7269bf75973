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

/// The `i`-th of a set of distinct, platform-shaped UIDs: 32 lowercase
/// hexadecimal characters, as the hosted platform issues them (random
/// looking, so that their bytes spread over the store's hash as real
/// ones do).
pub fn platform_uid(i: u64) -> String {
    // splitmix64: a bijection on u64, so distinct `i` give distinct UIDs.
    let mix = |mut z: u64| {
        z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    format!("{:016x}{:016x}", mix(i), mix(!i))
}
