//! The bloom filter over partition prefixes.
//!
//! Encoding: the bit array followed by one byte, the number of probes `k`.
//! Probes use double hashing on one 64-bit hash: `h1 = h`, `h2 = h rotated by
//! 32 bits | 1`, probe `i` is bit `(h1 + i * h2) mod m`.

/// Bloom filters are capped at `k` probes.
const MAX_PROBES: u32 = 30;

const P1: u64 = 0x9E37_79B1_85EB_CA87;
const P2: u64 = 0xC2B2_AE3D_27D4_EB4F;
const P3: u64 = 0x1656_67B1_9E37_79F9;

#[inline]
fn mix_word(h: u64, k: u64) -> u64 {
    let h = h ^ k.wrapping_mul(P2).rotate_left(31).wrapping_mul(P1);
    h.rotate_left(27).wrapping_mul(P1).wrapping_add(P3)
}

/// A fast, stable 64-bit hash (xxhash-style word mixing with the murmur3
/// finalizer). Stored filters depend on it: never change it without bumping
/// the format version.
#[inline]
pub(crate) fn hash64(data: &[u8]) -> u64 {
    let mut h = P3 ^ (data.len() as u64).wrapping_mul(P1);
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let mut a = [0u8; 8];
        a.copy_from_slice(c);
        h = mix_word(h, u64::from_le_bytes(a));
    }
    let rem = chunks.remainder();
    if !rem.is_empty() {
        let mut a = [0u8; 8];
        a[..rem.len()].copy_from_slice(rem);
        h = mix_word(h, u64::from_le_bytes(a));
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Builds an encoded filter for the given (distinct) key hashes.
pub(crate) fn build(hashes: &[u64], bits_per_key: usize) -> Vec<u8> {
    let bits_per_key = bits_per_key.max(1);
    // k = bits_per_key * ln 2 minimises the false-positive rate.
    let k = ((bits_per_key as f64 * std::f64::consts::LN_2).round() as u32).clamp(1, MAX_PROBES);
    let nbits = hashes.len().saturating_mul(bits_per_key).max(64);
    let nbytes = nbits.div_ceil(8);
    let nbits = (nbytes * 8) as u64;
    let mut out = vec![0u8; nbytes + 1];
    for &h in hashes {
        let (mut h1, h2) = (h, h.rotate_left(32) | 1);
        for _ in 0..k {
            let bit = h1 % nbits;
            out[(bit / 8) as usize] |= 1 << (bit % 8);
            h1 = h1.wrapping_add(h2);
        }
    }
    out[nbytes] = k as u8;
    out
}

/// A decoded bloom filter.
#[derive(Debug)]
pub(crate) struct Bloom {
    bits: Vec<u8>,
    nbits: u64,
    k: u32,
}

impl Bloom {
    /// Decodes a filter written by [`build`].
    pub fn decode(data: &[u8]) -> Result<Self, String> {
        let Some((&k, bits)) = data.split_last() else {
            return Err("empty bloom filter".into());
        };
        let k = u32::from(k);
        if k == 0 || k > MAX_PROBES {
            return Err(format!("bloom filter has {k} probes"));
        }
        if bits.is_empty() {
            return Err("bloom filter has no bits".into());
        }
        Ok(Bloom {
            bits: bits.to_vec(),
            nbits: bits.len() as u64 * 8,
            k,
        })
    }

    /// False if no key with this hash was added.
    #[inline]
    pub fn may_contain_hash(&self, h: u64) -> bool {
        let (mut h1, h2) = (h, h.rotate_left(32) | 1);
        for _ in 0..self.k {
            let bit = h1 % self.nbits;
            match self.bits.get((bit / 8) as usize) {
                Some(byte) if byte & (1 << (bit % 8)) != 0 => {}
                _ => return false,
            }
            h1 = h1.wrapping_add(h2);
        }
        true
    }

    /// False if `key` was surely not added.
    #[inline]
    pub fn may_contain(&self, key: &[u8]) -> bool {
        self.may_contain_hash(hash64(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn false_positive_rate_at_10_bits_is_about_one_percent() {
        let hashes: Vec<u64> = (0..100_000u32)
            .map(|i| hash64(format!("partition-{i}").as_bytes()))
            .collect();
        let bloom = Bloom::decode(&build(&hashes, 10)).unwrap();
        let fp = (0..100_000u32)
            .filter(|i| bloom.may_contain(format!("other-{i}").as_bytes()))
            .count();
        assert!(fp < 1_500, "false positives: {fp} / 100000");
    }

    #[test]
    fn hash_spreads_short_keys() {
        // Keys differing in one byte, or only in length, hash apart.
        let mut seen = std::collections::HashSet::new();
        for len in 0..16usize {
            for b in 0..=255u8 {
                let mut k = vec![0u8; len];
                if len > 0 {
                    k[len - 1] = b;
                } else if b > 0 {
                    continue;
                }
                assert!(seen.insert(hash64(&k)), "collision at len {len} byte {b}");
            }
        }
    }

    #[test]
    fn decode_rejects_bad_probe_counts() {
        assert!(Bloom::decode(&[]).is_err());
        assert!(Bloom::decode(&[0xff, 0]).is_err());
        assert!(Bloom::decode(&[0xff, 31]).is_err());
        assert!(Bloom::decode(&[7]).is_err());
        assert!(Bloom::decode(&[0xff, 7]).is_ok());
    }

    proptest! {
        #[test]
        fn no_false_negatives(keys in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..24), 0..300), bpk in 1usize..20) {
            let hashes: Vec<u64> = keys.iter().map(|k| hash64(k)).collect();
            let bloom = Bloom::decode(&build(&hashes, bpk)).unwrap();
            for k in &keys {
                prop_assert!(bloom.may_contain(k));
            }
        }
    }
}
