//! Cleanup (`ringdb admin cleanup`, like `nodetool cleanup`): a node that
//! gave ranges away (a node joined and took them) still holds their data
//! on disk; cleanup drops every partition of a token this node no longer
//! replicates, by rewriting each table without them.
//!
//! Dropping data is safe only when the node's view of the ring is right,
//! so cleanup refuses to run while a node is joining or leaving (the
//! ranges are moving) or while any node of the ring is down (a node that
//! looks down may have left for good without this node knowing, and a
//! stale ring can make a node think it replicates less than it does).

use super::*;
use crate::cluster::TokenRange;

/// What [`ClusterStore::cleanup`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CleanupReport {
    /// Tables rewritten.
    pub tables: usize,
    /// Partitions dropped, over all tables.
    pub partitions_dropped: u64,
}

impl std::fmt::Display for CleanupReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cleaned up {} table(s): dropped {} partition(s) of ranges this node no longer replicates",
            self.tables, self.partitions_dropped
        )
    }
}

/// The token spans `[lo, hi]` of `ranges`, sorted, for a binary search.
fn sorted_spans(ranges: &[TokenRange]) -> Vec<(Token, Token)> {
    let mut spans: Vec<(Token, Token)> = ranges
        .iter()
        .flat_map(|r| r.spans())
        .map(|s| (*s.start(), *s.end()))
        .collect();
    spans.sort_unstable();
    spans
}

/// Whether `token` lies in one of `spans` (sorted, not overlapping).
fn in_spans(spans: &[(Token, Token)], token: Token) -> bool {
    let after = spans.partition_point(|(lo, _)| *lo <= token);
    after > 0 && spans[after - 1].1 >= token
}

impl ClusterStore {
    /// Drops from `tables` every partition whose token this node does not
    /// replicate in the ring. Refused, with why, while the ring is
    /// changing or a node of the ring is down.
    pub async fn cleanup(&self, tables: &[TableRef]) -> Result<CleanupReport, QueryError> {
        let ring = self.ring();
        let (joining, leaving) = self.ring_changes();
        if !joining.is_empty() || !leaving.is_empty() {
            return Err(server(format!(
                "cleanup refused: the ring is changing ({} joining, {} leaving); run it once \
                 every node is normal",
                joining.len(),
                leaving.len()
            )));
        }
        let down: Vec<String> = ring
            .nodes()
            .iter()
            .filter(|n| !self.is_alive(n.id))
            .map(|n| format!("{:016x} ({})", n.id.0, n.addr))
            .collect();
        if !down.is_empty() {
            return Err(server(format!(
                "cleanup refused: node(s) {} of the ring are down; this node cannot tell \
                 whether they left, so it might drop data it still replicates",
                down.join(", ")
            )));
        }
        let me = self.inner.node;
        if !ring.contains_node(me) {
            return Err(server(
                "cleanup refused: this node owns no tokens in the ring it knows",
            ));
        }
        let mut report = CleanupReport::default();
        for table in tables {
            let rf = self.rf(&table.keyspace)?;
            let spans = sorted_spans(&ring.ranges_of(me, rf));
            let keep: Arc<dyn Fn(Token) -> bool + Send + Sync> =
                Arc::new(move |token| in_spans(&spans, token));
            report.partitions_dropped += self.inner.local.cleanup_table(table, keep).await?;
            report.tables += 1;
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// A token is in the sorted spans exactly when one of the ranges
        /// contains it, wrapping ranges included.
        #[test]
        fn a_token_is_kept_exactly_when_a_range_holds_it(
            bounds in proptest::collection::btree_set(any::<u64>(), 2..12),
            pick in any::<u64>(),
            probes in proptest::collection::vec(any::<u64>(), 1..50),
        ) {
            // Consecutive ring tokens give ranges; keep every other one,
            // the wrapping one (last to first) included when picked.
            let tokens: Vec<u64> = bounds.into_iter().collect();
            let all: Vec<TokenRange> = (0..tokens.len())
                .map(|i| TokenRange::new(tokens[(i + tokens.len() - 1) % tokens.len()], tokens[i]))
                .collect();
            let mine: Vec<TokenRange> = all
                .iter()
                .enumerate()
                .filter(|(i, _)| (pick >> (i % 64)) & 1 == 1)
                .map(|(_, r)| *r)
                .collect();
            let spans = sorted_spans(&mine);
            for token in probes.into_iter().chain(tokens.iter().copied()).chain([0, u64::MAX]) {
                prop_assert_eq!(
                    in_spans(&spans, token),
                    mine.iter().any(|r| r.contains(token)),
                    "token {}", token
                );
            }
        }
    }
}
