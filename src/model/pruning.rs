//! Pruning causal contexts: what a replica may forget of the dots a row
//! has seen, so a row's context stays bounded.
//!
//! A row's context gains an entry for every stamping id that ever wrote it:
//! the replicas' ids, one more id each time a replica's OS restarts (a node
//! takes a fresh id then, see `query::stamp_actor`), and one cloud dot per
//! write stamped at ANY with every replica down (its counter is a clock
//! reading, so it never joins the vector). Without pruning, a row written
//! through years of restarts keeps all of them.
//!
//! What may be forgotten, per row (a dot the row's live versions carry, and
//! every dot of the pruning node's own stamping id, are always kept):
//! - every dot of a **retired** id: one no member of the cluster stamps
//!   with, known to be so for longer than the table's grace period;
//! - a **clock dot** (a cloud dot whose counter is a clock reading, at or
//!   above [`CLOCK_COUNTER_FLOOR`]) older than the grace period.
//!
//! Why the own id is kept: a replica picks its next counter from its own
//! dots in the row; forgetting them would reuse a dot (a lost write).
//!
//! What forgetting costs: it never loses a write. The join keeps a version
//! whose dot the other side has not seen, so a smaller context can only
//! keep more versions. But a superseded version with a forgotten dot that
//! arrives afterwards (from a replica that missed the superseding write for
//! longer than the grace period) comes back as a sibling: the row shows the
//! conflict flag until a write supersedes it again. Its cells are older, so
//! column-by-column resolution still reads the newer values, except where
//! clocks disagreed. This is the contract tombstones already have (repair
//! within the grace period), and the reason hints must not outlive it.

use super::dots::{Dot, NodeId};
use super::hlc::Timestamp;
use super::row::RowState;
use std::collections::BTreeSet;

/// Counters at or above this are clock readings (hybrid-logical-clock
/// values of writes stamped at ANY with every replica down, and stamps
/// that continued from one), never counts of writes: 2^56 as a clock value
/// is the year 2004, and as a count it is more writes to one row than any
/// disk holds.
pub const CLOCK_COUNTER_FLOOR: u64 = 1 << 56;

/// What is known about stamping ids at one moment, for pruning.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StampIdView {
    /// The id the pruning node stamps with: never pruned.
    pub own: NodeId,
    /// Ids some member of the cluster stamps with: never pruned.
    pub in_use: BTreeSet<NodeId>,
    /// Ids known to have been retired for longer than the grace period:
    /// their dots may be forgotten.
    pub retired_long_ago: BTreeSet<NodeId>,
    /// Ids known to be retired, but not for that long yet.
    pub retired_recently: BTreeSet<NodeId>,
}

impl StampIdView {
    /// Whether the view knows anything about `id`.
    pub fn knows(&self, id: NodeId) -> bool {
        id == self.own
            || self.in_use.contains(&id)
            || self.retired_long_ago.contains(&id)
            || self.retired_recently.contains(&id)
    }
}

/// The source of [`StampIdView`]s: what a node knows of the stamping ids
/// in its cluster over time (`query::stamp_ids::StampIdRegistry`).
pub trait StampIdHistory: Send + Sync + std::fmt::Debug {
    /// The view at wall-clock `now_ms`, where "long ago" means before
    /// `retired_before_ms`.
    fn view(&self, now_ms: u64, retired_before_ms: u64) -> StampIdView;

    /// Ids met in contexts that the view did not know: none of the
    /// cluster's members stamps with them, so they are retired from
    /// `now_ms` on (unless one turns out to be in use after all).
    fn notice_unknown(&self, ids: &BTreeSet<NodeId>, now_ms: u64);
}

/// Whether `dot`'s counter is a clock reading older than `before`.
pub fn is_old_clock_dot(dot: Dot, before: Timestamp) -> bool {
    dot.counter >= CLOCK_COUNTER_FLOOR && Timestamp(dot.counter) < before
}

impl RowState {
    /// The state with what `view` lets a replica forget removed from its
    /// context (see the module documentation), or `None` when nothing
    /// can be. `clock_dots_before` is the end of the grace period: clock
    /// dots older than it go. Ids of the context the view does not know
    /// are added to `unknown` (the caller reports them, so they count as
    /// retired from now on).
    pub fn pruned_context(
        &self,
        view: &StampIdView,
        clock_dots_before: Timestamp,
        unknown: &mut BTreeSet<NodeId>,
    ) -> Option<RowState> {
        let context = self.context();
        // The common case, without allocating: every id in use and no
        // clock dot, so nothing to forget and nothing new to report.
        let kept = |id: NodeId| id == view.own || view.in_use.contains(&id);
        if context.vector().keys().all(|&id| kept(id))
            && context
                .cloud()
                .all(|d| kept(d.node) && d.counter < CLOCK_COUNTER_FLOOR)
        {
            return None;
        }
        for id in context.nodes() {
            if !view.knows(id) {
                unknown.insert(id);
            }
        }
        let live_ids: BTreeSet<NodeId> = self.versions().iter().map(|v| v.dot.node).collect();
        let live_dots: BTreeSet<Dot> = self.versions().iter().map(|v| v.dot).collect();
        let pruned = context.without(
            |id| !kept(id) && !live_ids.contains(&id) && view.retired_long_ago.contains(&id),
            |dot| {
                dot.node != view.own
                    && !live_dots.contains(&dot)
                    && is_old_clock_dot(dot, clock_dots_before)
            },
        );
        if pruned == *context {
            return None;
        }
        Some(RowState::from_parts(self.versions().to_vec(), pruned))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::dots::DotSet;
    use crate::model::row::RowVersion;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    const NOW: u64 = 1_000_000_000;

    fn version(node: u64, counter: u64) -> RowVersion {
        RowVersion {
            dot: Dot {
                node: NodeId(node),
                counter,
            },
            marker: None,
            deleted_at: None,
            cells: BTreeMap::new(),
        }
    }

    /// A dot: ids 0-5, counters small or clock readings around `NOW`.
    fn dot() -> impl Strategy<Value = Dot> {
        (
            0u64..6,
            prop_oneof![
                1u64..6,
                (NOW - 50..NOW + 50).prop_map(|ms| Timestamp::from_millis(ms).0)
            ],
        )
            .prop_map(|(n, c)| Dot {
                node: NodeId(n),
                counter: c,
            })
    }

    /// A state: versions with some of the dots, a context of all of them.
    fn state() -> impl Strategy<Value = RowState> {
        (
            proptest::collection::vec(dot(), 0..10),
            proptest::collection::vec(any::<bool>(), 10),
        )
            .prop_map(|(dots, live)| {
                let versions: Vec<RowVersion> = dots
                    .iter()
                    .zip(&live)
                    .filter(|(_, l)| **l)
                    .map(|(d, _)| version(d.node.0, d.counter))
                    .collect();
                RowState::from_parts(versions, dots.into_iter().collect())
            })
    }

    fn view() -> impl Strategy<Value = StampIdView> {
        proptest::collection::vec(0u8..4, 6).prop_map(|roles| {
            let mut view = StampIdView {
                own: NodeId(0),
                ..StampIdView::default()
            };
            for (id, role) in roles.iter().enumerate().skip(1) {
                let id = NodeId(id as u64);
                match role {
                    0 => view.in_use.insert(id),
                    1 => view.retired_long_ago.insert(id),
                    2 => view.retired_recently.insert(id),
                    _ => false,
                };
            }
            view
        })
    }

    proptest! {
        /// Pruning keeps what it must (live dots, the own id, ids in use),
        /// keeps the state well formed, and never makes a join lose a
        /// version: joined with anything, the pruned state keeps every
        /// version the unpruned one kept.
        #[test]
        fn pruning_forgets_only_what_may_go_and_never_loses_a_version(
            a in state(), b in state(), view in view()
        ) {
            let before = Timestamp::from_millis(NOW);
            let mut unknown = BTreeSet::new();
            let pruned = a.pruned_context(&view, before, &mut unknown).unwrap_or_else(|| a.clone());
            prop_assert_eq!(pruned.versions(), a.versions());
            prop_assert!(pruned.context().is_subset_of(a.context()));
            for v in pruned.versions() {
                prop_assert!(pruned.context().contains(v.dot));
            }
            let full = a.context();
            for id in full.nodes() {
                let must_keep = id == view.own
                    || view.in_use.contains(&id)
                    || view.retired_recently.contains(&id)
                    || !view.knows(id);
                prop_assert_eq!(unknown.contains(&id), !view.knows(id));
                if must_keep {
                    prop_assert_eq!(
                        pruned.context().vector().get(&id),
                        full.vector().get(&id),
                        "the vector entry of {:?} must stay", id
                    );
                }
                if view.retired_long_ago.contains(&id)
                    && !a.versions().iter().any(|v| v.dot.node == id)
                {
                    prop_assert!(
                        !pruned.context().nodes().contains(&id),
                        "a retired id without a live version goes"
                    );
                }
            }
            for d in full.cloud() {
                let clock_old = is_old_clock_dot(d, before);
                let live = a.versions().iter().any(|v| v.dot == d);
                if !pruned.context().contains(d) {
                    prop_assert!(!live && d.node != view.own);
                    prop_assert!(clock_old || view.retired_long_ago.contains(&d.node));
                }
            }
            let joined = a.join(&b);
            let joined_pruned = pruned.join(&b);
            for v in joined.versions() {
                prop_assert!(
                    joined_pruned.versions().contains(v),
                    "pruning lost a version in a join: {:?}", v
                );
            }
            prop_assert!(joined_pruned.context().is_subset_of(joined.context()));
        }
    }

    #[test]
    fn a_row_rewritten_through_restarts_keeps_only_the_ids_in_use() {
        // Replica 1 stamped through four OS restarts (ids 11..14); ids 12
        // and 13 are long retired, 14 is its current id.
        let mut context = DotSet::new();
        for (node, n) in [(11, 3), (12, 5), (13, 2), (14, 4), (2, 7)] {
            for counter in 1..=n {
                context.insert(Dot {
                    node: NodeId(node),
                    counter,
                });
            }
        }
        let state = RowState::from_parts(vec![version(14, 4)], context);
        let view = StampIdView {
            own: NodeId(2),
            in_use: [NodeId(14)].into(),
            retired_long_ago: [NodeId(11), NodeId(12), NodeId(13)].into(),
            retired_recently: BTreeSet::new(),
        };
        let mut unknown = BTreeSet::new();
        let pruned = state
            .pruned_context(&view, Timestamp::from_millis(NOW), &mut unknown)
            .expect("something to prune");
        let ids: Vec<u64> = pruned.context().nodes().iter().map(|n| n.0).collect();
        assert_eq!(ids, vec![2, 14]);
        assert!(unknown.is_empty());
        assert_eq!(
            pruned.pruned_context(&view, Timestamp::from_millis(NOW), &mut unknown),
            None,
            "pruning is idempotent"
        );
    }
}
