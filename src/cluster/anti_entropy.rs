//! Anti-entropy: how replicas compare what they hold of a token range
//! without sending the data.
//!
//! A span of tokens `[lo, hi]` is cut into `2^depth` slices of (nearly)
//! equal width ([`SlicedSpan`]). A replica answers one 128-bit hash per
//! slice and how many partitions it holds there ([`SpanHashes`]). A
//! slice's hash folds in, for every partition of the slice, the partition's
//! key and the digest of its exact stored state (header and every row,
//! dead ones included); the fold is an exclusive or of per-partition
//! hashes, so it does not depend on the order partitions are met in.
//! Two replicas holding the same states give the same hashes; a slice
//! whose hashes differ is streamed and merged (the coordinator's
//! `repair`), or, when it holds many partitions, cut into finer slices
//! and compared again, as a Merkle tree is descended only where it
//! differs.

use crate::model::digest::digest_of;
use crate::model::key::Token;
use serde::{Deserialize, Serialize};

/// Most levels a span may be cut into in one request (`2^12` = 4096
/// slices, 64 KiB of hashes).
pub const MAX_DEPTH: u8 = 12;

/// Why a span or an answer about one is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AntiEntropyError {
    /// The span's bounds are the wrong way round.
    #[error("span {lo:#018x}..={hi:#018x} is empty: its lower bound is above its upper bound")]
    EmptySpan {
        /// Lower bound.
        lo: Token,
        /// Upper bound.
        hi: Token,
    },
    /// More slices than [`MAX_DEPTH`] allows.
    #[error("span depth {0} is above the most allowed, {MAX_DEPTH}")]
    TooDeep(u8),
    /// A partition outside the span was offered.
    #[error("token {token:#018x} is outside span {lo:#018x}..={hi:#018x}")]
    OutsideSpan {
        /// The partition's token.
        token: Token,
        /// Lower bound.
        lo: Token,
        /// Upper bound.
        hi: Token,
    },
    /// An answer with another number of slices than asked for.
    #[error("an answer has {got} slice hashes and {counts} counts, {expected} were asked for")]
    WrongLength {
        /// Hashes in the answer.
        got: usize,
        /// Counts in the answer.
        counts: usize,
        /// Slices of the span.
        expected: usize,
    },
}

/// Tokens `[lo, hi]` cut into `2^depth` slices: token `t` is in slice
/// `floor((t - lo) * 2^depth / (hi - lo + 1))`. When the span is narrower
/// than the number of slices some slices are empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlicedSpan {
    lo: Token,
    hi: Token,
    depth: u8,
}

impl SlicedSpan {
    /// The span `[lo, hi]` cut into `2^depth` slices.
    pub fn new(lo: Token, hi: Token, depth: u8) -> Result<SlicedSpan, AntiEntropyError> {
        let span = SlicedSpan { lo, hi, depth };
        span.check()?;
        Ok(span)
    }

    /// Whether the span is well formed (a decoded one may not be).
    pub fn check(&self) -> Result<(), AntiEntropyError> {
        if self.lo > self.hi {
            return Err(AntiEntropyError::EmptySpan {
                lo: self.lo,
                hi: self.hi,
            });
        }
        if self.depth > MAX_DEPTH {
            return Err(AntiEntropyError::TooDeep(self.depth));
        }
        Ok(())
    }

    /// The first token of the span.
    pub fn lo(&self) -> Token {
        self.lo
    }

    /// The last token of the span.
    pub fn hi(&self) -> Token {
        self.hi
    }

    /// How many slices the span is cut into.
    pub fn slices(&self) -> usize {
        1usize << self.depth.min(MAX_DEPTH)
    }

    /// Tokens in the span (up to `2^64`, so a `u128`).
    fn width(&self) -> u128 {
        u128::from(self.hi.saturating_sub(self.lo)) + 1
    }

    /// The slice holding `token`, or `None` outside the span.
    pub fn slice_of(&self, token: Token) -> Option<usize> {
        if token < self.lo || token > self.hi {
            return None;
        }
        let offset = u128::from(token - self.lo);
        usize::try_from(offset * self.slices() as u128 / self.width()).ok()
    }

    /// The first token of slice `i` relative to `lo` (slice `slices()`
    /// gives the width): the smallest offset `o` with
    /// `o * 2^depth >= i * width`.
    fn start_offset(&self, i: usize) -> u128 {
        (i as u128 * self.width()).div_ceil(self.slices() as u128)
    }

    /// The tokens `[first, last]` of slice `i`; `None` when it is empty or
    /// past the last slice.
    pub fn slice_bounds(&self, i: usize) -> Option<(Token, Token)> {
        if i >= self.slices() {
            return None;
        }
        let start = self.start_offset(i);
        let end = self.start_offset(i + 1);
        if start >= end {
            return None;
        }
        let first = self.lo.checked_add(u64::try_from(start).ok()?)?;
        let last = self.lo.checked_add(u64::try_from(end - 1).ok()?)?;
        Some((first, last))
    }
}

/// What one replica holds of a [`SlicedSpan`]: per slice, the hash of its
/// partitions and how many there are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpanHashes {
    /// One hash per slice (0 for a slice without partitions).
    pub hashes: Vec<u128>,
    /// Partitions per slice.
    pub partitions: Vec<u64>,
}

impl SpanHashes {
    /// Whether the answer has one hash and one count per slice of `span`.
    pub fn check(&self, span: &SlicedSpan) -> Result<(), AntiEntropyError> {
        if self.hashes.len() != span.slices() || self.partitions.len() != span.slices() {
            return Err(AntiEntropyError::WrongLength {
                got: self.hashes.len(),
                counts: self.partitions.len(),
                expected: span.slices(),
            });
        }
        Ok(())
    }
}

/// Builds a replica's [`SpanHashes`] from its partitions, met in any order.
#[derive(Debug, Clone)]
pub struct SpanHasher {
    span: SlicedSpan,
    hashes: SpanHashes,
}

impl SpanHasher {
    /// A hasher with no partition yet.
    pub fn new(span: SlicedSpan) -> SpanHasher {
        SpanHasher {
            span,
            hashes: SpanHashes {
                hashes: vec![0; span.slices()],
                partitions: vec![0; span.slices()],
            },
        }
    }

    /// Folds in the partition with token `token`, storage prefix `prefix`
    /// and state digest `digest`.
    pub fn add(
        &mut self,
        token: Token,
        prefix: &[u8],
        digest: u128,
    ) -> Result<(), AntiEntropyError> {
        let outside = AntiEntropyError::OutsideSpan {
            token,
            lo: self.span.lo,
            hi: self.span.hi,
        };
        let i = self.span.slice_of(token).ok_or(outside.clone())?;
        let (Some(hash), Some(count)) = (
            self.hashes.hashes.get_mut(i),
            self.hashes.partitions.get_mut(i),
        ) else {
            return Err(outside);
        };
        *hash ^= digest_of(&(prefix, digest));
        *count += 1;
        Ok(())
    }

    /// The hashes of every partition added.
    pub fn finish(self) -> SpanHashes {
        self.hashes
    }
}

/// The slices of `span` whose hashes are not the same in every answer
/// (every answer checked with [`SpanHashes::check`] first).
pub fn differing_slices(
    span: &SlicedSpan,
    answers: &[&SpanHashes],
) -> Result<Vec<usize>, AntiEntropyError> {
    for a in answers {
        a.check(span)?;
    }
    let Some((first, rest)) = answers.split_first() else {
        return Ok(Vec::new());
    };
    Ok((0..span.slices())
        .filter(|&i| rest.iter().any(|a| a.hashes[i] != first.hashes[i]))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn span_strategy() -> impl Strategy<Value = SlicedSpan> {
        let edge = prop_oneof![
            Just(0u64),
            Just(u64::MAX),
            any::<u64>(),
            (0u64..64).prop_map(|d| u64::MAX - d),
        ];
        (edge.clone(), edge, 0u8..=MAX_DEPTH, 0u64..5000).prop_map(|(a, b, depth, narrow)| {
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            // Narrow spans (fewer tokens than slices) matter too.
            let hi = if narrow < 2500 {
                lo.saturating_add(narrow)
            } else {
                hi
            };
            SlicedSpan::new(lo, hi, depth).expect("well formed")
        })
    }

    proptest! {
        /// Every token of the span lies in the bounds of its slice, and
        /// the non-empty slices tile the span in order without gaps.
        #[test]
        fn slices_tile_the_span(span in span_strategy(), probe in any::<u64>()) {
            let mut next = Some(span.lo());
            let mut last_seen = None;
            for i in 0..span.slices() {
                if let Some((first, last)) = span.slice_bounds(i) {
                    prop_assert!(first <= last);
                    prop_assert_eq!(Some(first), next, "slice {} does not start where the previous ended", i);
                    prop_assert_eq!(span.slice_of(first), Some(i));
                    prop_assert_eq!(span.slice_of(last), Some(i));
                    next = last.checked_add(1);
                    last_seen = Some(last);
                }
            }
            prop_assert_eq!(last_seen, Some(span.hi()));
            let token = span.lo().saturating_add(probe % (span.hi() - span.lo()).saturating_add(1).max(1));
            let i = span.slice_of(token).expect("inside");
            let (first, last) = span.slice_bounds(i).expect("holds a token");
            prop_assert!(first <= token && token <= last);
            if span.lo() > 0 {
                prop_assert_eq!(span.slice_of(span.lo() - 1), None);
            }
            if span.hi() < u64::MAX {
                prop_assert_eq!(span.slice_of(span.hi() + 1), None);
            }
        }

        /// The hashes do not depend on the order partitions are added in,
        /// and a changed state shows in exactly its slice.
        #[test]
        fn hashes_ignore_order_and_show_a_change_in_its_slice(
            span in span_strategy(),
            parts in proptest::collection::btree_map(any::<u64>(), any::<u128>(), 1..40),
            changed in any::<prop::sample::Index>(),
        ) {
            let width = (span.hi() - span.lo()).saturating_add(1).max(1);
            let parts: Vec<(Token, Vec<u8>, u128)> = parts
                .into_iter()
                .map(|(t, d)| {
                    let token = span.lo() + t % width;
                    (token, t.to_be_bytes().to_vec(), d)
                })
                .collect();
            let hash = |order: &mut dyn Iterator<Item = &(Token, Vec<u8>, u128)>, change: Option<usize>| {
                let mut h = SpanHasher::new(span);
                for (n, (token, prefix, digest)) in order.enumerate() {
                    let digest = if Some(n) == change { digest ^ 1 } else { *digest };
                    h.add(*token, prefix, digest).expect("inside");
                }
                h.finish()
            };
            let forward = hash(&mut parts.iter(), None);
            let backward = hash(&mut parts.iter().rev(), None);
            prop_assert_eq!(&forward, &backward);
            prop_assert_eq!(forward.partitions.iter().sum::<u64>(), parts.len() as u64);
            prop_assert!(differing_slices(&span, &[&forward, &backward]).expect("checked").is_empty());
            let n = changed.index(parts.len());
            let other = hash(&mut parts.iter(), Some(n));
            let slice = span.slice_of(parts[n].0).expect("inside");
            prop_assert_eq!(differing_slices(&span, &[&forward, &other]).expect("checked"), vec![slice]);
        }
    }

    #[test]
    fn bad_spans_and_answers_are_refused_with_what_is_wrong() {
        assert_eq!(
            SlicedSpan::new(5, 4, 1),
            Err(AntiEntropyError::EmptySpan { lo: 5, hi: 4 })
        );
        assert_eq!(
            SlicedSpan::new(0, 4, MAX_DEPTH + 1),
            Err(AntiEntropyError::TooDeep(MAX_DEPTH + 1))
        );
        let span = SlicedSpan::new(10, 20, 2).expect("span");
        let mut h = SpanHasher::new(span);
        assert!(matches!(
            h.add(21, b"k", 1),
            Err(AntiEntropyError::OutsideSpan { token: 21, .. })
        ));
        let short = SpanHashes {
            hashes: vec![0; 3],
            partitions: vec![0; 4],
        };
        let err = differing_slices(&span, &[&h.finish(), &short]).expect_err("short");
        assert!(err.to_string().contains("3 slice hashes"), "{err}");
    }
}
