//! Tests of the ring: placement against a reference model, determinism,
//! load spread of the token picker, movement on join and leave, ranges,
//! fallbacks, errors and serialization.
//!
//! The bounds asserted for the token picker (16 vnodes, every node joined
//! through `pick_tokens`, 3 to 20 nodes) were measured over 3,000 seeds
//! and are asserted with a margin:
//!
//! | quantity | measured | asserted |
//! |---|---|---|
//! | primary ownership x n | 0.957 ..= 1.044 | 0.94 ..= 1.06 |
//! | rf = 3 effective ownership x n / 3 (n >= 4) | 0.75 ..= 1.29 | 0.70 ..= 1.35 |
//! | token space changed by a join, rf = 1, x (n+1) | <= 1.016 (by construction: at most 1 + 1/64 of its share) | <= 1.02 |
//! | token space changed by a join, rf = 3, x (n+1) / min(3, n+1) | <= 1.23 | <= 1.35 |

use super::ring::*;
use crate::model::key::{token_of, Token};
use crate::model::NodeId;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

const PRIMARY_SPREAD: f64 = 0.06;
const RF3_LOW: f64 = 0.70;
const RF3_HIGH: f64 = 1.35;
const MOVE_RF1: f64 = 1.02;
const MOVE_RF3: f64 = 1.35;

fn addr(i: u64) -> SocketAddr {
    SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], 7000))
}

fn node(id: u64, rack: Option<&str>, tokens: Vec<Token>) -> NodeInfo {
    NodeInfo::new(NodeId(id), addr(id), rack.map(str::to_owned), tokens)
}

/// Rings of 0, 1, ..., n nodes, each node joined through `pick_tokens`.
fn grow(n: u64, vnodes: usize, seed: u64) -> Vec<Ring> {
    let mut rings = vec![Ring::empty()];
    for id in 1..=n {
        let ring = rings.last().cloned().unwrap_or_default();
        let tokens = pick_tokens(NodeId(id), vnodes, &ring, seed ^ id);
        rings.push(ring.add_node(node(id, None, tokens)).unwrap());
    }
    rings
}

/// Placement written the slow, obvious way: list the distinct nodes of the
/// clockwise walk, take the first node of each rack, then the rest.
fn reference_replicas(nodes: &[NodeInfo], token: Token, rf: usize) -> Vec<NodeId> {
    let mut all: Vec<(Token, &NodeInfo)> = nodes
        .iter()
        .flat_map(|n| n.tokens.iter().map(move |&t| (t, n)))
        .collect();
    all.sort_by_key(|&(t, _)| t);
    let walk = all
        .iter()
        .filter(|(t, _)| *t >= token)
        .chain(all.iter().filter(|(t, _)| *t < token));
    let mut distinct: Vec<&NodeInfo> = Vec::new();
    for (_, n) in walk {
        if !distinct.iter().any(|d| d.id == n.id) {
            distinct.push(n);
        }
    }
    let racks: BTreeSet<Option<&str>> = nodes.iter().map(|n| n.rack.as_deref()).collect();
    let want = rf.min(nodes.len());
    let want_racks = rf.min(racks.len());
    let mut seen = BTreeSet::new();
    let mut reps = Vec::new();
    for n in &distinct {
        if reps.len() < want_racks && seen.insert(n.rack.as_deref()) {
            reps.push(n.id);
        }
    }
    for n in &distinct {
        if reps.len() < want && !reps.contains(&n.id) {
            reps.push(n.id);
        }
    }
    reps
}

/// Tokens worth probing: every ring token, its neighbours, the ends of the
/// token space and the extra ones given.
fn probes(ring: &Ring, extra: &[Token]) -> Vec<Token> {
    let mut out: Vec<Token> = vec![0, 1, Token::MAX - 1, Token::MAX];
    for (t, _) in ring.tokens() {
        out.extend([t.wrapping_sub(1), t, t.wrapping_add(1)]);
    }
    out.extend_from_slice(extra);
    out
}

/// The part of the token space whose replica set (as a set) differs
/// between the rings, and whether every replica in `after` that is not
/// `changed_node` was already a replica in `before`.
fn movement(before: &Ring, after: &Ring, rf: usize, changed_node: NodeId) -> (u128, bool) {
    let bounds: BTreeSet<Token> = before
        .tokens()
        .chain(after.tokens())
        .map(|(t, _)| t)
        .collect();
    let bounds: Vec<Token> = bounds.into_iter().collect();
    let mut moved = 0u128;
    let mut only_changed_node = true;
    for (i, &end) in bounds.iter().enumerate() {
        let start = if i == 0 {
            bounds[bounds.len() - 1]
        } else {
            bounds[i - 1]
        };
        let old: BTreeSet<NodeId> = before.replicas(end, rf).into_iter().collect();
        let new: BTreeSet<NodeId> = after.replicas(end, rf).into_iter().collect();
        if old != new {
            moved += TokenRange::new(start, end).width();
        }
        if !new.iter().all(|n| *n == changed_node || old.contains(n)) {
            only_changed_node = false;
        }
    }
    (moved, only_changed_node)
}

fn token_strategy() -> impl Strategy<Value = Token> {
    prop_oneof![
        4 => any::<u64>(),
        1 => 0..8u64,
        1 => (u64::MAX - 8)..=u64::MAX,
    ]
}

/// Up to 7 nodes with 1 to 6 tokens each and racks from {none, a, b, c}
/// (or no racks at all); tokens are distinct.
fn ring_nodes() -> impl Strategy<Value = Vec<NodeInfo>> {
    (
        prop::collection::btree_set(token_strategy(), 1..40),
        1..8usize,
        any::<bool>(),
        prop::collection::vec((0..4usize, 0..7usize), 7),
    )
        .prop_map(|(tokens, n, use_racks, assign)| {
            let racks = [None, Some("a"), Some("b"), Some("c")];
            let mut nodes: Vec<NodeInfo> = (0..n)
                .map(|i| {
                    let rack = if use_racks { racks[assign[i].0] } else { None };
                    node(100 + i as u64 * 7, rack, Vec::new())
                })
                .collect();
            for (k, t) in tokens.into_iter().enumerate() {
                // Every node gets a token first, then a pseudo-random one.
                let i = if k < n { k } else { (t as usize ^ k) % n };
                nodes[i].tokens.push(t);
            }
            nodes.retain(|n| !n.tokens.is_empty());
            nodes
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn same_nodes_in_any_order_give_the_same_ring(
        nodes in ring_nodes(),
        perm in any::<prop::sample::Index>(),
        extra in prop::collection::vec(any::<u64>(), 16),
    ) {
        let a = Ring::new(nodes.clone()).unwrap();
        let mut shuffled = nodes.clone();
        let k = perm.index(shuffled.len());
        shuffled.rotate_left(k);
        shuffled.reverse();
        for n in &mut shuffled {
            n.tokens.reverse();
        }
        let b = Ring::new(shuffled).unwrap();
        prop_assert_eq!(&a, &b);
        prop_assert_eq!(a.version(), b.version());
        for t in probes(&a, &extra) {
            for rf in 0..=6 {
                prop_assert_eq!(a.replicas(t, rf), b.replicas(t, rf));
            }
        }
    }

    #[test]
    fn replicas_follow_the_placement_rules(
        nodes in ring_nodes(),
        extra in prop::collection::vec(any::<u64>(), 16),
    ) {
        let ring = Ring::new(nodes.clone()).unwrap();
        let rack_of: BTreeMap<NodeId, Option<String>> =
            nodes.iter().map(|n| (n.id, n.rack.clone())).collect();
        for t in probes(&ring, &extra) {
            for rf in 0..=8 {
                let reps = ring.replicas(t, rf);
                prop_assert_eq!(&reps, &reference_replicas(&nodes, t, rf));
                prop_assert_eq!(reps.len(), rf.min(ring.len()));
                let distinct: BTreeSet<_> = reps.iter().collect();
                prop_assert_eq!(distinct.len(), reps.len());
                if rf > 0 {
                    prop_assert_eq!(Some(reps[0]), ring.owner(t));
                    let range = ring.range_of(t).unwrap();
                    prop_assert!(range.contains(t));
                    prop_assert_eq!(ring.owner(range.end_inclusive), ring.owner(t));
                }
                let k = rf.min(ring.rack_count());
                let racks: BTreeSet<_> = reps[..k].iter().map(|n| &rack_of[n]).collect();
                prop_assert_eq!(racks.len(), k);
            }
        }
    }

    #[test]
    fn ranges_of_covers_exactly_the_tokens_a_node_replicates(
        nodes in ring_nodes(),
        extra in prop::collection::vec(any::<u64>(), 32),
    ) {
        let ring = Ring::new(nodes).unwrap();
        let tokens = probes(&ring, &extra);
        for rf in 0..=4 {
            let table = ring.range_replicas(rf);
            let total: u128 = table.iter().map(|(r, _)| r.width()).sum();
            prop_assert_eq!(total, TOKEN_SPACE);
            for &t in &tokens {
                let holding: Vec<_> = table.iter().filter(|(r, _)| r.contains(t)).collect();
                prop_assert_eq!(holding.len(), 1);
                prop_assert_eq!(&holding[0].1, &ring.replicas(t, rf));
            }
            let effective = ring.effective_ownership(rf);
            for n in ring.nodes() {
                let ranges = ring.ranges_of(n.id, rf);
                for &t in &tokens {
                    let in_ranges = ranges.iter().filter(|r| r.contains(t)).count();
                    prop_assert!(in_ranges <= 1, "ranges overlap at {}", t);
                    prop_assert_eq!(in_ranges == 1, ring.replicas(t, rf).contains(&n.id));
                }
                let width: u128 = ranges.iter().map(|r| r.width()).sum();
                let share = width as f64 / TOKEN_SPACE as f64;
                prop_assert!((share - effective[&n.id]).abs() < 1e-9);
            }
            let sum: f64 = effective.values().sum();
            prop_assert!((sum - rf.min(ring.len()) as f64).abs() < 1e-9);
        }
    }

    #[test]
    fn token_range_contains_and_wraps(s in token_strategy(), e in token_strategy(), t in token_strategy()) {
        let r = TokenRange::new(s, e);
        // t is in (s, e] iff it is 1..=width steps clockwise from s.
        let steps = u128::from(t.wrapping_sub(s));
        let expected = r.is_full() || (steps >= 1 && steps <= r.width());
        prop_assert_eq!(r.contains(t), expected);
        let spans = r.spans();
        prop_assert_eq!(spans.len(), if r.wraps() { 2 } else { 1 });
        prop_assert_eq!(spans.iter().any(|x| x.contains(&t)), expected);
        let width: u128 = spans.iter().map(|x| u128::from(x.end() - x.start()) + 1).sum();
        prop_assert_eq!(width, r.width());
        if s != e {
            // (s, e] and (e, s] split the ring.
            let other = TokenRange::new(e, s);
            prop_assert_eq!(r.width() + other.width(), TOKEN_SPACE);
            prop_assert!(r.contains(t) != other.contains(t));
        }
    }

    #[test]
    fn fallbacks_are_the_rest_of_the_walk(
        nodes in ring_nodes(),
        t in any::<u64>(),
        rf in 0..5usize,
        down in prop::collection::vec(any::<prop::sample::Index>(), 0..3),
    ) {
        let ring = Ring::new(nodes).unwrap();
        let reps = ring.replicas(t, rf);
        let fallbacks = ring.next_fallback_nodes(t, rf, &[]);
        let all: BTreeSet<NodeId> = reps.iter().chain(&fallbacks).copied().collect();
        prop_assert_eq!(all.len(), reps.len() + fallbacks.len());
        prop_assert_eq!(all.len(), ring.len());
        if ring.rack_count() == 1 {
            let mut walk = reps.clone();
            walk.extend(&fallbacks);
            prop_assert_eq!(walk, ring.replicas(t, ring.len()));
        }
        let exclude: Vec<NodeId> = down.iter().map(|i| ring.nodes()[i.index(ring.len())].id).collect();
        let expected: Vec<NodeId> =
            fallbacks.iter().copied().filter(|n| !exclude.contains(n)).collect();
        prop_assert_eq!(ring.next_fallback_nodes(t, rf, &exclude), expected);
    }

    #[test]
    fn primary_ownership_stays_near_one_nth(seed in any::<u64>()) {
        for (n, ring) in grow(20, DEFAULT_VNODES, seed).iter().enumerate().skip(3) {
            for (id, share) in ring.ownership() {
                let ratio = share * n as f64;
                prop_assert!(
                    (ratio - 1.0).abs() <= PRIMARY_SPREAD,
                    "{} nodes: {:?} owns {:.4} x 1/n", n, id, ratio
                );
            }
            if n >= 4 {
                for (id, share) in ring.effective_ownership(3) {
                    let ratio = share * n as f64 / 3.0;
                    prop_assert!(
                        (RF3_LOW..=RF3_HIGH).contains(&ratio),
                        "{} nodes: {:?} holds {:.4} x 3/n at rf 3", n, id, ratio
                    );
                }
            }
        }
    }

    #[test]
    fn a_join_moves_about_one_over_n_plus_one_and_only_to_the_joiner(seed in any::<u64>()) {
        let rings = grow(20, DEFAULT_VNODES, seed);
        for n in 1..rings.len() - 1 {
            let (before, after) = (&rings[n], &rings[n + 1]);
            let joiner = NodeId(n as u64 + 1);
            for (rf, c) in [(1usize, MOVE_RF1), (3, MOVE_RF3)] {
                let (moved, only_joiner) = movement(before, after, rf, joiner);
                let fraction = moved as f64 / TOKEN_SPACE as f64;
                let bound = c * rf.min(n + 1) as f64 / (n + 1) as f64;
                prop_assert!(only_joiner, "rf {}: a range moved between old nodes", rf);
                prop_assert!(
                    fraction <= bound,
                    "rf {}, {} -> {} nodes: moved {:.4} > {:.4}", rf, n, n + 1, fraction, bound
                );
                // What moves is exactly what the joiner now holds.
                let held = after.effective_ownership(rf)[&joiner];
                prop_assert!((fraction - held).abs() < 1e-9);
            }
        }
    }

    #[test]
    fn joins_and_leaves_move_ranges_only_to_or_from_that_node(
        nodes in ring_nodes(),
        rack in prop_oneof![Just(None), Just(Some("a")), Just(Some("d"))],
        seed in any::<u64>(),
        leaver in any::<prop::sample::Index>(),
    ) {
        let ring = Ring::new(nodes).unwrap();
        let id = NodeId(1);
        let tokens = pick_tokens(id, DEFAULT_VNODES, &ring, seed);
        prop_assert_eq!(tokens.len(), DEFAULT_VNODES);
        let joined = ring.add_node(node(1, rack, tokens)).unwrap();
        let leaving = ring.nodes()[leaver.index(ring.len())].id;
        let left = ring.remove_node(leaving).unwrap();
        for rf in 1..=4 {
            let (_, only_joiner) = movement(&ring, &joined, rf, id);
            prop_assert!(only_joiner, "rf {}: join moved a range between old nodes", rf);
            // A leave is a join seen backwards.
            let (moved, only_leaver) = movement(&left, &ring, rf, leaving);
            prop_assert!(only_leaver, "rf {}: leave moved a range between remaining nodes", rf);
            let held = ring.effective_ownership(rf)[&leaving];
            prop_assert!((moved as f64 / TOKEN_SPACE as f64 - held).abs() < 1e-9);
        }
    }

    #[test]
    fn picked_tokens_are_fresh_and_deterministic(
        nodes in ring_nodes(),
        seed in any::<u64>(),
        vnodes in 1..40usize,
    ) {
        let ring = Ring::new(nodes).unwrap();
        let a = pick_tokens(NodeId(1), vnodes, &ring, seed);
        prop_assert_eq!(&a, &pick_tokens(NodeId(1), vnodes, &ring, seed));
        prop_assert_eq!(a.len(), vnodes);
        let b = pick_tokens(NodeId(2), vnodes, &ring, seed);
        let joined = ring.add_node(node(1, None, a)).unwrap();
        // Two nodes planning against the same ring do not collide either
        // (with overwhelming probability, where ranges are wide).
        let wide = ring.range_replicas(1).iter().all(|(r, _)| r.width() >= 1 << 40);
        if wide {
            prop_assert!(joined.add_node(node(2, None, b)).is_ok());
        }
        // A node already in the ring plans as if it were not.
        let rejoin = pick_tokens(NodeId(1), vnodes, &joined, seed);
        prop_assert_eq!(rejoin, pick_tokens(NodeId(1), vnodes, &ring, seed));
    }

    #[test]
    fn rings_round_trip_through_serde(nodes in ring_nodes()) {
        let ring = Ring::new(nodes).unwrap();
        let config = bincode::config::standard();
        let bytes = bincode::serde::encode_to_vec(&ring, config).unwrap();
        let (back, _): (Ring, usize) = bincode::serde::decode_from_slice(&bytes, config).unwrap();
        prop_assert_eq!(back.version(), ring.version());
        prop_assert_eq!(back, ring);
    }
}

#[test]
fn first_node_gets_evenly_spaced_tokens() {
    let tokens = pick_tokens(NodeId(7), 16, &Ring::empty(), 42);
    assert_eq!(tokens.len(), 16);
    let ring = Ring::new([node(7, None, tokens)]).unwrap();
    for (_, share) in ring.ownership() {
        assert_eq!(share, 1.0);
    }
    for (range, _) in ring.range_replicas(1) {
        assert_eq!(range.width(), TOKEN_SPACE / 16);
    }
    assert!(pick_tokens(NodeId(7), 0, &Ring::empty(), 42).is_empty());
    assert_eq!(
        pick_tokens(NodeId(7), usize::MAX, &Ring::empty(), 42).len(),
        MAX_VNODES
    );
}

#[test]
fn duplicate_ids_and_tokens_are_typed_errors() {
    assert_eq!(
        Ring::new([node(1, None, vec![10]), node(1, None, vec![20])]).unwrap_err(),
        RingError::DuplicateNode(NodeId(1))
    );
    assert_eq!(
        Ring::new([node(2, None, vec![10, 30]), node(1, None, vec![30])]).unwrap_err(),
        RingError::DuplicateToken {
            token: 30,
            first: NodeId(1),
            second: NodeId(2)
        }
    );
    assert_eq!(
        Ring::new([node(1, None, vec![5, 9, 5])]).unwrap_err(),
        RingError::DuplicateToken {
            token: 5,
            first: NodeId(1),
            second: NodeId(1)
        }
    );
    assert_eq!(
        Ring::new([node(1, None, vec![])]).unwrap_err(),
        RingError::NoTokens(NodeId(1))
    );
    let ring = Ring::new([node(1, None, vec![10])]).unwrap();
    assert_eq!(
        ring.add_node(node(1, None, vec![20])).unwrap_err(),
        RingError::DuplicateNode(NodeId(1))
    );
    assert!(matches!(
        ring.add_node(node(2, None, vec![10])),
        Err(RingError::DuplicateToken { token: 10, .. })
    ));
    assert_eq!(
        ring.remove_node(NodeId(9)).unwrap_err(),
        RingError::UnknownNode(NodeId(9))
    );
    // Deserializing validates too.
    let config = bincode::config::standard();
    let bad = vec![node(1, None, vec![10]), node(2, None, vec![10])];
    let bytes = bincode::serde::encode_to_vec(&bad, config).unwrap();
    assert!(bincode::serde::decode_from_slice::<Ring, _>(&bytes, config).is_err());
}

#[test]
fn empty_ring_and_rf_zero_answer_nothing() {
    let empty = Ring::empty();
    assert!(empty.is_empty());
    assert!(empty.replicas(123, 3).is_empty());
    assert!(empty.replicas_for_key(b"k", 3).is_empty());
    assert!(empty.ranges_of(NodeId(1), 3).is_empty());
    assert!(empty.range_replicas(3).is_empty());
    assert!(empty.ownership().is_empty());
    assert!(empty.effective_ownership(3).is_empty());
    assert!(empty.next_fallback_nodes(1, 3, &[]).is_empty());
    assert_eq!(empty.owner(5), None);
    assert_eq!(empty.range_of(5), None);
    assert_eq!(Ring::new([]).unwrap(), empty);

    let ring = grow(4, 16, 1).pop().unwrap();
    assert!(ring.replicas(123, 0).is_empty());
    assert!(ring.replicas_for_key(b"k", 0).is_empty());
    assert!(ring.ranges_of(NodeId(1), 0).is_empty());
    assert!(ring.ranges_of(NodeId(99), 3).is_empty());
    assert!(ring.effective_ownership(0).values().all(|&s| s == 0.0));
    assert_eq!(ring.replicas(123, 100).len(), 4);
}

#[test]
fn walk_examples() {
    // Tokens: 10 a, 20 b, 30 a, 40 c, 50 d.
    let ring = Ring::new([
        node(1, None, vec![10, 30]),
        node(2, None, vec![20]),
        node(3, None, vec![40]),
        node(4, None, vec![50]),
    ])
    .unwrap();
    let ids = |v: &[u64]| v.iter().map(|&i| NodeId(i)).collect::<Vec<_>>();
    assert_eq!(ring.replicas(15, 3), ids(&[2, 1, 3]));
    assert_eq!(ring.replicas(20, 3), ids(&[2, 1, 3]));
    assert_eq!(ring.replicas(21, 3), ids(&[1, 3, 4]));
    assert_eq!(ring.replicas(51, 2), ids(&[1, 2]));
    assert_eq!(ring.replicas(0, 2), ids(&[1, 2]));
    assert_eq!(ring.next_fallback_nodes(21, 2, &[]), ids(&[4, 2]));
    assert_eq!(ring.next_fallback_nodes(21, 2, &[NodeId(4)]), ids(&[2]));
    assert_eq!(ring.ranges_of(NodeId(2), 1), vec![TokenRange::new(10, 20)]);
    assert_eq!(
        ring.ranges_of(NodeId(1), 1),
        vec![TokenRange::new(50, 10), TokenRange::new(20, 30)]
    );
    let key = b"some partition";
    assert_eq!(
        ring.replicas_for_key(key, 3),
        ring.replicas(token_of(key), 3)
    );

    // Racks: r1 = {1, 2}, r2 = {3}; walk from 15: 2, 1, 3, 4(no rack).
    let racked = Ring::new([
        node(1, Some("r1"), vec![10, 30]),
        node(2, Some("r1"), vec![20]),
        node(3, Some("r2"), vec![40]),
        node(4, None, vec![50]),
    ])
    .unwrap();
    assert_eq!(racked.rack_count(), 3);
    assert_eq!(racked.replicas(15, 2), ids(&[2, 3]));
    assert_eq!(racked.replicas(15, 3), ids(&[2, 3, 4]));
    assert_eq!(racked.replicas(15, 4), ids(&[2, 3, 4, 1]));
    assert_eq!(racked.next_fallback_nodes(15, 2, &[]), ids(&[1, 4]));
}

#[test]
fn token_range_examples() {
    let wrap = TokenRange::new(10, 5);
    assert!(wrap.wraps());
    for t in [11, u64::MAX, 0, 5] {
        assert!(wrap.contains(t), "{t}");
    }
    for t in [6, 7, 10] {
        assert!(!wrap.contains(t), "{t}");
    }
    assert_eq!(wrap.width(), TOKEN_SPACE - 5);
    let plain = TokenRange::new(5, 10);
    assert!(!plain.wraps() && !plain.contains(5) && plain.contains(10));
    let full = TokenRange::new(7, 7);
    assert!(full.is_full() && full.contains(7) && full.contains(0));
    assert_eq!(full.width(), TOKEN_SPACE);
    assert!(TokenRange::new(u64::MAX, 3).contains(0));
    assert!(!TokenRange::new(u64::MAX, 3).wraps());
    assert_eq!(TokenRange::new(1, 2).to_string(), "(1, 2]");
}

#[test]
fn version_tells_rings_apart_and_is_stable() {
    let base = || vec![node(1, Some("r1"), vec![10, 30]), node(2, None, vec![20])];
    let ring = Ring::new(base()).unwrap();
    // The hash is part of the wire protocol between nodes: it must not
    // change between builds.
    assert_eq!(
        ring.version(),
        0x7d6e_234d_0e7e_aa00,
        "{:#018x}",
        ring.version()
    );
    let mut changes = Vec::new();
    let mut v = base();
    v[0].tokens[1] = 31;
    changes.push(v);
    let mut v = base();
    v[1].rack = Some("r1".into());
    changes.push(v);
    let mut v = base();
    v[1].addr = addr(9);
    changes.push(v);
    let mut v = base();
    v[1].id = NodeId(3);
    changes.push(v);
    for nodes in changes {
        assert_ne!(Ring::new(nodes).unwrap().version(), ring.version());
    }
    let clone = ring.clone();
    assert_eq!(clone.version(), ring.version());
}

/// Node lists as gossip may carry them after operator mistakes: ids listed
/// twice, tokens repeated within a node and across nodes, nodes without
/// tokens (tokens drawn from a small range so that clashes are common).
fn gossiped_nodes() -> impl Strategy<Value = Vec<NodeInfo>> {
    prop::collection::vec(
        (
            1u64..8,
            prop::option::of(prop::sample::select(vec!["r1", "r2"])),
            prop::collection::vec(0u64..40, 0..6),
            0u64..2,
        ),
        0..10,
    )
    .prop_map(|specs| {
        specs
            .into_iter()
            .map(|(id, rack, tokens, port)| {
                let mut n = node(id, rack, tokens);
                n.addr.set_port(7000 + port as u16);
                n
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever gossip carries, every node builds the same ring from it,
    /// each token has one owner, every node in it has tokens, and nothing
    /// is settled that did not need settling.
    #[test]
    fn a_gossiped_ring_is_always_built_and_the_same_on_every_node(
        nodes in gossiped_nodes(),
        perm in any::<prop::sample::Index>(),
    ) {
        let (ring, conflicts) = Ring::from_gossip(nodes.clone());
        let mut shuffled = nodes.clone();
        if !shuffled.is_empty() {
            let k = perm.index(shuffled.len());
            shuffled.rotate_left(k);
        }
        shuffled.reverse();
        for n in &mut shuffled {
            n.tokens.reverse();
        }
        let (other, other_conflicts) = Ring::from_gossip(shuffled);
        prop_assert_eq!(&ring, &other);
        prop_assert_eq!(ring.version(), other.version());
        prop_assert_eq!(conflicts.len(), other_conflicts.len());
        // Every token claimed by someone is owned by exactly one node in
        // the ring: the smallest id among the claimants kept.
        let mut owners: BTreeMap<Token, BTreeSet<NodeId>> = BTreeMap::new();
        for n in ring.nodes() {
            prop_assert!(!n.tokens.is_empty());
            for &t in &n.tokens {
                prop_assert!(owners.entry(t).or_default().insert(n.id));
            }
        }
        prop_assert!(owners.values().all(|o| o.len() == 1));
        // (An id listed twice keeps one of its entries; the tokens of the
        // other may go.)
        let listed_once = |id: NodeId| nodes.iter().filter(|n| n.id == id).count() == 1;
        for n in nodes.iter().filter(|n| listed_once(n.id)) {
            for t in &n.tokens {
                let owner = owners.get(t).and_then(|o| o.iter().next());
                prop_assert!(owner.is_some_and(|o| *o <= n.id), "token {} lost", t);
            }
        }
        match Ring::new(nodes.clone()) {
            Ok(strict) => {
                prop_assert_eq!(&strict, &ring);
                prop_assert!(conflicts.is_empty(), "{:?}", conflicts);
            }
            Err(_) => prop_assert!(!conflicts.is_empty()),
        }
    }
}

#[test]
fn a_token_claimed_twice_stays_with_the_smaller_id_and_a_node_without_tokens_is_left_out() {
    let (ring, conflicts) = Ring::from_gossip(vec![
        node(2, None, vec![10, 20]),
        node(1, None, vec![20, 30]),
        node(3, None, vec![]),
    ]);
    let tokens: BTreeMap<NodeId, Vec<Token>> = ring
        .nodes()
        .iter()
        .map(|n| (n.id, n.tokens.clone()))
        .collect();
    assert_eq!(
        tokens,
        BTreeMap::from([(NodeId(1), vec![20, 30]), (NodeId(2), vec![10])])
    );
    assert_eq!(
        conflicts,
        vec![
            RingError::DuplicateToken {
                token: 20,
                first: NodeId(1),
                second: NodeId(2)
            },
            RingError::NoTokens(NodeId(3)),
        ]
    );
}
