//! Property tests of the merge laws and of stamping.

use super::*;
use cql_lite::Value;
use proptest::prelude::*;
use std::collections::BTreeMap;

/// A fixed version for every dot: in a real cluster a dot names exactly one
/// write, so two states that hold the same dot hold the same version.
fn version_for(dot: Dot, seed: u64) -> RowVersion {
    let mix = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(dot.node.0 * 31 + dot.counter);
    let mut cells = BTreeMap::new();
    for col in 0..3u64 {
        if (mix >> col) & 1 == 1 {
            let value = if (mix >> (col + 8)) & 3 == 0 {
                CellValue::Deleted
            } else {
                CellValue::Live(Value::BigInt(((mix >> 16) % 5) as i64))
            };
            let cell = Cell {
                ts: Timestamp((mix >> (col * 3 + 20)) % 6),
                value,
                expires_at: ((mix >> 40) & 1 == 1).then_some((mix >> 41) % 4),
            };
            cells.insert(format!("c{col}"), cell);
        }
    }
    RowVersion {
        dot,
        marker: ((mix >> 5) & 1 == 1).then_some(row::Liveness {
            ts: Timestamp((mix >> 50) % 6),
            expires_at: ((mix >> 45) & 3 == 0).then_some((mix >> 47) % 4),
        }),
        deleted_at: ((mix >> 6) & 3 == 0).then_some(Timestamp((mix >> 55) % 6)),
        cells,
    }
}

fn dot_strategy() -> impl Strategy<Value = Dot> {
    (0u64..3, 1u64..5).prop_map(|(n, c)| Dot {
        node: NodeId(n),
        counter: c,
    })
}

fn state_strategy(seed: u64) -> impl Strategy<Value = RowState> {
    (
        proptest::collection::vec(dot_strategy(), 0..5),
        proptest::collection::vec(dot_strategy(), 0..6),
    )
        .prop_map(move |(held, seen)| {
            let versions = held.iter().map(|d| version_for(*d, seed)).collect();
            RowState::from_parts(versions, seen.into_iter().collect())
        })
}

fn three_states() -> impl Strategy<Value = (RowState, RowState, RowState)> {
    any::<u64>().prop_flat_map(|seed| {
        (
            state_strategy(seed),
            state_strategy(seed),
            state_strategy(seed),
        )
    })
}

/// The join written the plain way, by dot: each side's versions the
/// other has not superseded, the greater copy of a write both hold.
fn reference_join(a: &RowState, b: &RowState) -> RowState {
    let mut kept: BTreeMap<Dot, RowVersion> = BTreeMap::new();
    for (mine, theirs) in [(a, b), (b, a)] {
        for v in mine.versions() {
            let both = theirs.versions().iter().any(|x| x.dot == v.dot);
            if both || !theirs.context().contains(v.dot) {
                match kept.get(&v.dot) {
                    Some(x) if x >= v => {}
                    _ => {
                        kept.insert(v.dot, v.clone());
                    }
                }
            }
        }
    }
    let mut context = a.context().clone();
    context.union_with(b.context());
    RowState::from_parts(kept.into_values().collect(), context)
}

/// Two states whose shared dots may carry different versions (`seed_b`
/// differs from `seed_a` in half the cases): the bit-rot case the join
/// must still resolve deterministically.
fn two_states_maybe_differing() -> impl Strategy<Value = (RowState, RowState)> {
    (any::<u64>(), any::<bool>()).prop_flat_map(|(seed, same)| {
        let other = if same { seed } else { seed ^ 0x9e37 };
        (state_strategy(seed), state_strategy(other))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn join_agrees_with_the_plain_join((a, b) in two_states_maybe_differing()) {
        prop_assert_eq!(a.join(&b), reference_join(&a, &b));
        // The shared-state shortcut: one side already is the join.
        let ab = a.join(&b);
        prop_assert_eq!(ab.join(&a), reference_join(&ab, &a));
        prop_assert_eq!(b.join(&ab), reference_join(&b, &ab));
    }

    /// A stamp's dot is new to both its state and the context it was given,
    /// and never 0.
    #[test]
    fn a_stamp_never_reuses_a_dot((a, b) in two_states_maybe_differing(), node in 0u64..3, blind in any::<bool>()) {
        let seen = b.context().clone();
        let context = if blind { None } else { Some(&seen) };
        let delta = a.stamp(NodeId(node), context, &write(9, &[("x", 1)]));
        let dot = delta.versions()[0].dot;
        prop_assert!(dot.counter > 0);
        prop_assert!(!a.context().contains(dot), "{:?} is in the state", dot);
        prop_assert!(!seen.contains(dot) || blind, "{:?} is in the given context", dot);
    }

    #[test]
    fn join_is_commutative((a, b, _c) in three_states()) {
        prop_assert_eq!(a.join(&b), b.join(&a));
    }

    #[test]
    fn join_is_associative((a, b, c) in three_states()) {
        prop_assert_eq!(a.join(&b).join(&c), a.join(&b.join(&c)));
    }

    #[test]
    fn join_is_idempotent((a, b, _c) in three_states()) {
        prop_assert_eq!(a.join(&a), a.clone());
        let ab = a.join(&b);
        prop_assert_eq!(ab.join(&b), ab.clone());
    }

    #[test]
    fn join_drops_only_versions_the_other_side_superseded((a, b, _c) in three_states()) {
        let ab = a.join(&b);
        for v in a.versions() {
            let kept = ab.versions().iter().any(|x| x.dot == v.dot);
            let superseded = b.context().contains(v.dot) && !b.versions().iter().any(|x| x.dot == v.dot);
            prop_assert_eq!(kept, !superseded);
        }
        for d in a.context().vector().iter().flat_map(|(n, c)| (1..=*c).map(move |c| Dot { node: *n, counter: c })) {
            prop_assert!(ab.context().contains(d));
        }
    }

    #[test]
    fn resolution_does_not_depend_on_merge_order((a, b, c) in three_states(), now in 0u64..5) {
        let x = a.join(&b).join(&c);
        let y = c.join(&a).join(&b);
        prop_assert_eq!(x.resolve(None, now), y.resolve(None, now));
    }

    #[test]
    fn is_live_agrees_with_resolve(
        (a, b, c) in three_states(),
        shadow in proptest::option::of(0u64..7),
        now in 0u64..6,
    ) {
        // Single versions, siblings, tombstones (row, shadowing partition or
        // range deletions), expiring cells and markers.
        for state in [a.clone(), a.join(&b), a.join(&b).join(&c)] {
            let shadow = shadow.map(Timestamp);
            prop_assert_eq!(
                state.is_live(shadow, now),
                state.resolve(shadow, now).is_some(),
                "{:?} shadowed at {:?}, now {}", state, shadow, now
            );
        }
    }

    #[test]
    fn row_states_encode_as_their_versions_and_context((a, _b, _c) in three_states()) {
        // The shared (Arc) state is a representation change only: the
        // bytes on disk and on the wire are those of the plain pair.
        #[derive(serde::Serialize)]
        struct Plain<'a> {
            versions: &'a [RowVersion],
            context: &'a DotSet,
        }
        let config = bincode::config::standard();
        let plain = Plain { versions: a.versions(), context: a.context() };
        prop_assert_eq!(
            bincode::serde::encode_to_vec(&a, config).unwrap(),
            bincode::serde::encode_to_vec(&plain, config).unwrap()
        );
        let clone = a.clone();
        prop_assert_eq!(&clone, &a);
    }

    #[test]
    fn entries_round_trip_through_the_codec((a, _b, _c) in three_states()) {
        let entry = Entry::Row(a);
        prop_assert_eq!(Entry::decode(&entry.encode()).unwrap(), entry);
    }

    #[test]
    fn decoding_garbage_is_an_error_not_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = Entry::decode(&bytes);
    }

    #[test]
    fn header_join_laws(
        a in proptest::option::of(0u64..5), b in proptest::option::of(0u64..5), c in proptest::option::of(0u64..5),
        ra in proptest::collection::vec((0u8..4, 0u8..4, 0u64..5), 0..3),
        rb in proptest::collection::vec((0u8..4, 0u8..4, 0u64..5), 0..3),
    ) {
        let make = |d: Option<u64>, rs: &[(u8, u8, u64)]| {
            let mut ranges: Vec<RangeTombstone> = rs.iter().map(|(s, e, t)| RangeTombstone {
                start: row::KeyBound::Included(vec![*s]),
                end: row::KeyBound::Excluded(vec![*e]),
                ts: Timestamp(*t),
            }).collect();
            ranges.sort();
            ranges.dedup();
            PartitionHeader { deleted_at: d.map(Timestamp), ranges }
        };
        let (x, y, z) = (make(a, &ra), make(b, &rb), make(c, &[]));
        prop_assert_eq!(x.join(&y), y.join(&x));
        prop_assert_eq!(x.join(&y).join(&z), x.join(&y.join(&z)));
        prop_assert_eq!(x.join(&x), x.clone());
    }
}

fn write(ts: u64, cells: &[(&str, i64)]) -> RowWrite {
    RowWrite {
        ts: Timestamp(ts),
        insert_marker: None,
        delete_row: false,
        cells: cells
            .iter()
            .map(|(n, v)| (n.to_string(), CellValue::Live(Value::BigInt(*v)), None))
            .collect(),
    }
}

fn value_of(row: &ResolvedRow, col: &str) -> Option<i64> {
    match row.cells.get(col).map(|c| &c.value) {
        Some(CellValue::Live(Value::BigInt(v))) => Some(*v),
        _ => None,
    }
}

#[test]
fn blind_writes_through_one_replica_form_a_chain() {
    let a = NodeId(1);
    let mut state = RowState::default();
    for i in 0..5 {
        let delta = state.stamp(a, None, &write(10 + i, &[("x", i as i64)]));
        state = state.join(&delta);
        assert_eq!(state.versions().len(), 1, "no siblings from one replica");
    }
    let row = state.resolve(None, 0).unwrap();
    assert_eq!(value_of(&row, "x"), Some(4));
    assert!(!row.conflict);
}

#[test]
fn a_counter_at_the_top_is_not_wrapped_and_contexts_say_their_largest_counter() {
    let a = NodeId(1);
    let top: DotSet = [Dot {
        node: a,
        counter: u64::MAX,
    }]
    .into_iter()
    .collect();
    assert_eq!(top.largest_counter(), u64::MAX);
    assert_eq!(DotSet::new().largest_counter(), 0);
    // Counter 0 is a dot no context can hold: stamping must never give it,
    // nor a dot the context holds. A lone dot at the top is not part of
    // the node's run, so the run goes on below it.
    let delta = RowState::default().stamp(a, Some(&top), &write(1, &[("x", 1)]));
    assert!(delta.versions().iter().all(|v| v.dot.counter == 1));
}

/// A write stamped at ANY with every replica down carries a clock reading
/// as its counter (a cloud dot). When that node later stamps the row as a
/// replica, its dots go on from its contiguous run, not from the clock
/// dot: the context keeps one cloud dot instead of gaining one per write.
#[test]
fn stamps_after_a_clock_dot_extend_the_run_and_the_context_stays_small() {
    let a = NodeId(1);
    let clock_dot = Dot {
        node: a,
        counter: crate::model::pruning::CLOCK_COUNTER_FLOOR + 12_345,
    };
    let mut state = RowState::default().stamp(a, None, &write(1, &[("x", 0)]));
    state = state.join(&RowState::from_parts(
        Vec::new(),
        [clock_dot].into_iter().collect(),
    ));
    for i in 1..20 {
        let delta = state.stamp(a, None, &write(1 + i, &[("x", i as i64)]));
        let dot = delta.versions()[0].dot;
        assert!(!state.context().contains(dot), "a fresh dot");
        assert_eq!(dot.counter, i + 1, "the run goes on");
        state = state.join(&delta);
    }
    assert_eq!(state.context().size(), 2, "{:?}", state.context());
    assert_eq!(value_of(&state.resolve(None, 0).unwrap(), "x"), Some(19));
}

#[test]
fn concurrent_writes_become_siblings_and_a_later_write_supersedes_both() {
    let (a, b) = (NodeId(1), NodeId(2));
    let base = RowState::default().stamp(a, None, &write(1, &[("x", 1), ("y", 1)]));
    // Both replicas hold the base, then stamp concurrently (a partition).
    let on_a = base.join(&base.stamp(a, None, &write(5, &[("x", 2)])));
    let on_b = base.join(&base.stamp(b, None, &write(6, &[("y", 3)])));
    let healed = on_a.join(&on_b);
    assert_eq!(healed.versions().len(), 2, "both concurrent writes survive");
    let row = healed.resolve(None, 0).unwrap();
    assert!(row.conflict);
    assert_eq!(value_of(&row, "x"), Some(2));
    assert_eq!(value_of(&row, "y"), Some(3));
    // A client reads the merged context and writes: it supersedes both, and
    // carries forward the cells it did not write.
    let ctx = healed.context().clone();
    let resolved = healed.join(&healed.stamp(a, Some(&ctx), &write(7, &[("z", 9)])));
    assert_eq!(resolved.versions().len(), 1);
    let row = resolved.resolve(None, 0).unwrap();
    assert!(!row.conflict);
    assert_eq!(
        (
            value_of(&row, "x"),
            value_of(&row, "y"),
            value_of(&row, "z")
        ),
        (Some(2), Some(3), Some(9))
    );
    // A replica that only saw one side converges to the same state.
    assert_eq!(on_b.join(&resolved), resolved.join(&on_a).join(&on_b));
}

#[test]
fn a_write_with_an_old_context_leaves_unseen_versions_as_siblings() {
    let a = NodeId(1);
    let first = RowState::default().stamp(a, None, &write(1, &[("x", 1)]));
    let old_ctx = first.context().clone();
    let second = first.join(&first.stamp(a, None, &write(2, &[("x", 2)])));
    let third = second.join(&second.stamp(a, Some(&old_ctx), &write(3, &[("x", 3)])));
    assert_eq!(third.versions().len(), 2, "the write did not see version 2");
}

#[test]
fn deletes_and_ttl_shadow_older_cells() {
    let a = NodeId(1);
    let mut s = RowState::default().stamp(a, None, &write(10, &[("x", 1), ("y", 1)]));
    let del = RowWrite {
        ts: Timestamp(20),
        delete_row: true,
        ..RowWrite::default()
    };
    s = s.join(&s.stamp(a, None, &del));
    assert_eq!(s.resolve(None, 0), None);
    s = s.join(&s.stamp(a, None, &write(30, &[("y", 2)])));
    let row = s.resolve(None, 0).unwrap();
    assert_eq!((value_of(&row, "x"), value_of(&row, "y")), (None, Some(2)));
    assert_eq!(
        s.resolve(Some(Timestamp(30)), 0),
        None,
        "partition tombstone at 30 shadows"
    );
    let ttl = RowWrite {
        ts: Timestamp(40),
        cells: vec![("z".into(), CellValue::Live(Value::BigInt(5)), Some(1_000))],
        ..RowWrite::default()
    };
    s = s.join(&s.stamp(a, None, &ttl));
    assert_eq!(value_of(&s.resolve(None, 999).unwrap(), "z"), Some(5));
    assert_eq!(value_of(&s.resolve(None, 1_000).unwrap(), "z"), None);
}
