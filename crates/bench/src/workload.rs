//! TigerBeetle's benchmark workload: uniformly random debit/credit pairs over a set of
//! accounts, from a small deterministic generator (the same seed gives the same transfers).

/// SplitMix64: fast, good enough for picking accounts, deterministic.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0), by Lemire's multiply-shift (bias below 2^-32 for our `n`).
    pub fn below(&mut self, n: usize) -> usize {
        let n = n as u64;
        let product = u128::from(self.next_u64()) * u128::from(n);
        usize::try_from(product >> 64).unwrap_or(0)
    }

    /// Two different indexes in `0..n` (`n` ≥ 2), uniformly.
    pub fn pair(&mut self, n: usize) -> (usize, usize) {
        let debit = self.below(n);
        let mut credit = self.below(n - 1);
        if credit >= debit {
            credit += 1;
        }
        (debit, credit)
    }

    /// A payee: with `hot`, 90% of the time account 0 (the hot merchant), else uniform.
    pub fn payee(&mut self, n: usize, payer: usize, hot: bool) -> usize {
        if hot && payer != 0 && self.below(10) != 0 {
            return 0;
        }
        let mut payee = self.below(n - 1);
        if payee >= payer {
            payee += 1;
        }
        payee
    }
}

/// The number of accounts of the bulk workload.
pub const ACCOUNTS: usize = 10_000;
/// Transfers per request, as in TigerBeetle's benchmark.
pub const BATCH: usize = 8_189;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_distinct_and_cover_the_range() {
        let mut rng = Rng::new(1);
        let mut seen = [0u32; 10];
        for _ in 0..10_000 {
            let (d, c) = rng.pair(10);
            assert_ne!(d, c);
            seen[d] += 1;
            seen[c] += 1;
        }
        assert!(seen.iter().all(|&n| n > 1500), "{seen:?}");
    }

    #[test]
    fn hot_payee_gets_about_ninety_percent() {
        let mut rng = Rng::new(2);
        let hot = (0..10_000).filter(|_| rng.payee(100, 5, true) == 0).count();
        assert!((8800..9200).contains(&hot), "{hot}");
    }
}
