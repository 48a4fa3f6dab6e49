//! FNV-1a, 64 bit: the one fixed, documented hash vigil persists or sends. Its values stay the
//! same across vigil and Rust versions (std's `DefaultHasher` promises no such thing), so they
//! may be written to disk (file fingerprints in checkpoints) or into ids (Elasticsearch `_id`s).
//!
//! **Invariant:** a leaf: imports nothing of vigil's; the function never changes (a change would
//! re-read every file and duplicate every Elasticsearch document).

/// FNV-1a, 64 bit, of `data`.
pub fn fnv1a64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The published FNV-1a 64 test vectors (draft-eastlake-fnv, "FNV test vectors").
    #[test]
    fn known_values() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }
}
