//! YCSB's scrambled zipfian key chooser.
//!
//! A zipfian generator (Gray et al., "Quickly generating billion-record
//! synthetic databases", SIGMOD 1994, as YCSB's `ZipfianGenerator` has it)
//! draws a popularity rank over a very large item space (10^10 items, whose
//! zeta constant for theta 0.99 is precomputed, as in YCSB's
//! `ScrambledZipfianGenerator`); the rank is then hashed with 64-bit FNV-1a
//! and taken modulo the number of records. So a few keys are very hot, as in
//! a zipfian law, but the hot keys are spread over the whole key space
//! instead of being the first ones loaded.

use rand::{Rng, RngExt};

/// YCSB's zipfian constant.
pub const ZIPFIAN_CONSTANT: f64 = 0.99;

/// The item space the ranks are drawn from (YCSB's `ITEM_COUNT`).
const ITEM_COUNT: u64 = 10_000_000_000;

/// zeta(ITEM_COUNT, 0.99), precomputed by YCSB (computing it takes 10^10
/// terms).
const ZETAN: f64 = 26.469_028_201_783_02;

/// The zipfian part: ranks `0..ITEM_COUNT`, rank 0 the most popular.
#[derive(Debug, Clone)]
struct Zipfian {
    items: f64,
    alpha: f64,
    zetan: f64,
    eta: f64,
    half_pow_theta: f64,
}

impl Zipfian {
    fn new(items: u64, theta: f64, zetan: f64) -> Zipfian {
        let zeta2theta = 1.0 + 0.5f64.powf(theta);
        let items_f = items as f64;
        Zipfian {
            items: items_f,
            alpha: 1.0 / (1.0 - theta),
            zetan,
            eta: (1.0 - (2.0 / items_f).powf(1.0 - theta)) / (1.0 - zeta2theta / zetan),
            half_pow_theta: 0.5f64.powf(theta),
        }
    }

    fn next_rank<R: Rng + ?Sized>(&self, rng: &mut R) -> u64 {
        let u: f64 = rng.random();
        let uz = u * self.zetan;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + self.half_pow_theta {
            return 1;
        }
        let rank = self.items * (self.eta * u - self.eta + 1.0).powf(self.alpha);
        // `as` saturates; keep the rank inside the item space.
        (rank as u64).min(self.items as u64 - 1)
    }
}

/// 64-bit FNV-1a of the 8 little-endian bytes of `value`, made non-negative
/// as YCSB's `Utils.fnvhash64` does (it works on Java's signed longs).
pub fn fnv_hash64(value: u64) -> u64 {
    const OFFSET_BASIS: u64 = 0xCBF2_9CE4_8422_2325;
    const PRIME: u64 = 1_099_511_628_211;
    let mut hash = OFFSET_BASIS;
    let mut v = value;
    for _ in 0..8 {
        hash ^= v & 0xff;
        hash = hash.wrapping_mul(PRIME);
        v >>= 8;
    }
    (hash as i64).unsigned_abs()
}

/// Picks record numbers in `0..records`, zipfian-popular (constant 0.99)
/// and scrambled over the key space.
#[derive(Debug, Clone)]
pub struct ScrambledZipfian {
    records: u64,
    zipfian: Zipfian,
}

impl ScrambledZipfian {
    /// A chooser over `records` records (at least 1).
    pub fn new(records: u64) -> ScrambledZipfian {
        ScrambledZipfian {
            records: records.max(1),
            zipfian: Zipfian::new(ITEM_COUNT, ZIPFIAN_CONSTANT, ZETAN),
        }
    }

    /// The next record number.
    pub fn next<R: Rng + ?Sized>(&self, rng: &mut R) -> u64 {
        fnv_hash64(self.zipfian.next_rank(rng)) % self.records
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    /// zeta(n, theta) by summation, for checking the precomputed constant's
    /// neighbourhood on small n.
    fn zeta(n: u64, theta: f64) -> f64 {
        (1..=n).map(|i| 1.0 / (i as f64).powf(theta)).sum()
    }

    #[test]
    fn fnv_matches_ycsb() {
        // YCSB's fnvhash64(0): FNV-1a over eight zero bytes, made positive.
        let mut h: u64 = 0xCBF2_9CE4_8422_2325;
        for _ in 0..8 {
            h = h.wrapping_mul(1_099_511_628_211);
        }
        assert_eq!(fnv_hash64(0), (h as i64).unsigned_abs());
        assert_ne!(fnv_hash64(1), fnv_hash64(256));
    }

    #[test]
    fn the_hottest_key_gets_its_zipfian_share() {
        // Rank 0 has probability 1/zeta(10^10, 0.99) = 3.78 %; rank 1 half
        // of that (1.91 %). After scrambling, two ranks may share a key, so
        // the hottest key gets at least rank 0's share and rarely much more.
        let records = 100_000;
        let chooser = ScrambledZipfian::new(records);
        let mut rng = SmallRng::seed_from_u64(7);
        let samples = 400_000;
        let mut counts = std::collections::HashMap::<u64, u64>::new();
        for _ in 0..samples {
            let key = chooser.next(&mut rng);
            assert!(key < records);
            *counts.entry(key).or_default() += 1;
        }
        let mut by_count: Vec<u64> = counts.values().copied().collect();
        by_count.sort_unstable_by(|a, b| b.cmp(a));
        let top = by_count[0] as f64 / samples as f64;
        let second = by_count[1] as f64 / samples as f64;
        assert!((0.034..0.045).contains(&top), "hottest key share {top}");
        assert!(
            (0.016..0.024).contains(&second),
            "second key share {second}"
        );
        // The hottest key is where rank 0 hashes to.
        let hottest = counts
            .iter()
            .max_by_key(|(_, c)| **c)
            .map(|(k, _)| *k)
            .unwrap_or(u64::MAX);
        assert_eq!(hottest, fnv_hash64(0) % records);
        // Skewed, yet spread: many distinct keys are touched.
        assert!(counts.len() > 20_000, "{} distinct keys", counts.len());
    }

    #[test]
    fn unscrambled_ranks_follow_the_law_on_a_small_space() {
        // With a small item space whose zeta we can sum, the generator's
        // rank frequencies follow 1/(rank+1)^theta / zeta.
        let n = 1_000;
        let z = Zipfian::new(n, ZIPFIAN_CONSTANT, zeta(n, ZIPFIAN_CONSTANT));
        let mut rng = SmallRng::seed_from_u64(11);
        let samples = 200_000;
        let mut counts = vec![0u64; n as usize];
        for _ in 0..samples {
            counts[z.next_rank(&mut rng) as usize] += 1;
        }
        let zn = zeta(n, ZIPFIAN_CONSTANT);
        for rank in [0usize, 1] {
            let expected = 1.0 / ((rank + 1) as f64).powf(ZIPFIAN_CONSTANT) / zn;
            let got = counts[rank] as f64 / samples as f64;
            assert!(
                (got - expected).abs() < expected * 0.05,
                "rank {rank}: {got} vs {expected}"
            );
        }
        // Roughly decreasing over decades.
        let decade = |a: usize, b: usize| counts[a..b].iter().sum::<u64>();
        assert!(decade(0, 10) > decade(10, 100) / 2);
        assert!(decade(10, 100) > decade(100, 1000) / 2);
    }

    #[test]
    fn the_precomputed_constant_is_the_sums_limit() {
        // zeta grows like n^(1-theta)/(1-theta) + zeta(theta): check the
        // constant sits where that tail estimate from a summed prefix puts it.
        let prefix: u64 = 1_000_000;
        let theta = ZIPFIAN_CONSTANT;
        let head = zeta(prefix, theta);
        let tail = ((ITEM_COUNT as f64).powf(1.0 - theta) - (prefix as f64).powf(1.0 - theta))
            / (1.0 - theta);
        assert!((head + tail - ZETAN).abs() < 0.01, "{}", head + tail);
    }

    proptest! {
        #[test]
        fn keys_stay_in_range(records in 1u64..5_000_000, seed in any::<u64>()) {
            let chooser = ScrambledZipfian::new(records);
            let mut rng = SmallRng::seed_from_u64(seed);
            for _ in 0..200 {
                prop_assert!(chooser.next(&mut rng) < records);
            }
        }
    }
}
