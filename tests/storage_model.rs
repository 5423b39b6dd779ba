//! Model-based test of the storage engine.
//!
//! Random sequences of writes (local stamped writes, concurrent writes from
//! other replicas, deletes of rows, cells, clustering ranges and partitions,
//! TTL writes), clock moves, flushes, compactions and reopens run against
//! the engine and against a plain `BTreeMap` holding the same entries. After
//! every step, every partition is read both ways, whole and sliced, and
//! compared with what the map says a reader should see.

use cql_lite::{DataType, Value};
use proptest::prelude::*;
use ringdb::model::key::{self, ClusteringOrder};
use ringdb::model::pruning::{StampIdHistory, StampIdView};
use ringdb::model::{
    CellValue, Entry, KeyBound, ManualClock, NodeId, PartitionHeader, RangeTombstone, RowState,
    RowWrite, Timestamp, WallClock,
};
use ringdb::storage::compaction::CompactionStrategy;
use ringdb::storage::engine::{Engine, EngineOptions, SliceRow, StateRow, StateSlice};
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

const PARTITIONS: i64 = 4;
/// The partition written as a table without clustering columns would be:
/// its one row has the empty clustering key, whatever `ck` an op names.
const SINGLE_ROW_PK: i64 = PARTITIONS - 1;
const ROWS: i32 = 8;
const LOCAL: NodeId = NodeId(1);
const GRACE_MS: u64 = 50;
/// The other replicas: node 2's id counts as long retired, so compactions
/// prune its dots wherever no live version carries them (it still stamps
/// here, which a retired id would not: its contexts carry the pruned dots
/// back, as late copies would); node 3's is in use.
const RETIRED: NodeId = NodeId(2);
const IN_USE: NodeId = NodeId(3);

/// Stamping ids as the harness's engine sees them (see [`RETIRED`]).
#[derive(Debug)]
struct FixedStampIds;

impl StampIdHistory for FixedStampIds {
    fn view(&self, _now_ms: u64, _retired_before_ms: u64) -> StampIdView {
        StampIdView {
            own: LOCAL,
            in_use: [IN_USE].into(),
            retired_long_ago: [RETIRED].into(),
            retired_recently: Default::default(),
        }
    }

    fn notice_unknown(&self, ids: &std::collections::BTreeSet<NodeId>, _now_ms: u64) {
        assert!(ids.is_empty(), "the harness knows every id: {ids:?}");
    }
}

#[derive(Debug, Clone)]
enum Op {
    Write {
        pk: i64,
        ck: i32,
        a: Option<Option<i64>>,
        b: Option<Option<i64>>,
        insert: bool,
        ttl_ms: Option<u64>,
    },
    RemoteWrite {
        node: u64,
        pk: i64,
        ck: i32,
        a: i64,
    },
    DeleteRow {
        pk: i64,
        ck: i32,
    },
    DeleteRange {
        pk: i64,
        lo: i32,
        hi: i32,
    },
    DeletePartition {
        pk: i64,
    },
    Advance(u64),
    Flush,
    CompactDue,
    Compact,
    /// `Engine::cleanup` dropping the partitions whose token is `drop`
    /// modulo 4 (a node giving a quarter of its ranges away).
    Cleanup {
        drop: u64,
    },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    let pk = 0..PARTITIONS;
    let ck = 0..ROWS;
    let col = proptest::option::of(proptest::option::of(0i64..100));
    prop_oneof![
        8 => (pk.clone(), ck.clone(), col.clone(), col, any::<bool>(), proptest::option::of(1u64..40))
            .prop_map(|(pk, ck, a, b, insert, ttl_ms)| Op::Write { pk, ck, a, b, insert, ttl_ms }),
        3 => (2u64..4, pk.clone(), ck.clone(), 0i64..100).prop_map(|(node, pk, ck, a)| Op::RemoteWrite { node, pk, ck, a }),
        2 => (pk.clone(), ck.clone()).prop_map(|(pk, ck)| Op::DeleteRow { pk, ck }),
        1 => (pk.clone(), ck.clone(), ck).prop_map(|(pk, lo, hi)| Op::DeleteRange { pk, lo, hi }),
        1 => pk.prop_map(|pk| Op::DeletePartition { pk }),
        2 => (1u64..30).prop_map(Op::Advance),
        2 => Just(Op::Flush),
        1 => Just(Op::CompactDue),
        1 => Just(Op::Compact),
        1 => (0u64..4).prop_map(|drop| Op::Cleanup { drop }),
        1 => Just(Op::Reopen),
    ]
}

fn prefix(pk: i64) -> Vec<u8> {
    let spk = key::serialize_partition_key(&[Value::BigInt(pk)], &[DataType::BigInt]).unwrap();
    key::partition_prefix(&spk)
}

fn clustering(ck: i32) -> Vec<u8> {
    key::encode_clustering(&[Value::Int(ck)], &[DataType::Int], &[ClusteringOrder::Asc]).unwrap()
}

/// The clustering key `ck` names in partition `pk`.
fn clustering_in(pk: i64, ck: i32) -> Vec<u8> {
    if pk == SINGLE_ROW_PK {
        Vec::new()
    } else {
        clustering(ck)
    }
}

fn row_key(pk: i64, ck: i32) -> Vec<u8> {
    key::row_key(&prefix(pk), &clustering_in(pk, ck))
}

struct Harness {
    dir: tempfile::TempDir,
    clock: Arc<ManualClock>,
    engine: Option<Engine>,
    background: bool,
    model: BTreeMap<Vec<u8>, Entry>,
    /// What each other replica holds of each row, so its dots are unique.
    remote: BTreeMap<(u64, Vec<u8>), RowState>,
    hlc: u64,
    /// Given to the engine at every open.
    compaction: CompactionStrategy,
}

impl Harness {
    fn new(background: bool) -> Harness {
        let clock = ManualClock::new(1_000_000);
        let dir = tempfile::tempdir().unwrap();
        let mut h = Harness {
            dir,
            clock,
            engine: None,
            background,
            model: BTreeMap::new(),
            remote: BTreeMap::new(),
            hlc: 0,
            compaction: CompactionStrategy::SizeTiered {
                min_threshold: 2,
                max_threshold: 4,
            },
        };
        h.open();
        h
    }

    fn open(&mut self) {
        let opts = EngineOptions {
            memtable_bytes: 2048,
            segment_size: 4096,
            clock: self.clock.clone(),
            background: self.background,
            gc_grace: Duration::from_millis(GRACE_MS),
            compaction: self.compaction.clone(),
            stamp_ids: Some(Arc::new(FixedStampIds)),
            ..EngineOptions::default()
        };
        self.engine = Some(Engine::open(self.dir.path(), opts).expect("engine opens"));
    }

    fn engine(&self) -> &Engine {
        self.engine.as_ref().unwrap()
    }

    fn now(&mut self) -> Timestamp {
        let ts = Timestamp::from_millis(self.clock.now_millis())
            .0
            .max(self.hlc + 1);
        self.hlc = ts;
        Timestamp(ts)
    }

    fn model_merge(&mut self, k: Vec<u8>, entry: Entry) {
        let merged = match self.model.get(&k) {
            Some(old) => old.join(&entry).unwrap(),
            None => entry,
        };
        self.model.insert(k, merged);
    }

    fn stamp_local(&mut self, k: Vec<u8>, write: RowWrite) {
        let delta = self
            .engine()
            .update_row(&k, |cur| cur.stamp(LOCAL, None, &write))
            .unwrap();
        // The model stamps from its own state; after a purge the engine's
        // delta differs in metadata but must read the same.
        let mut current = match self.model.get(&k) {
            Some(Entry::Row(r)) => r.clone(),
            _ => RowState::default(),
        };
        let kind = key::classify(&k).unwrap();
        let p = &k[..kind.partition_len()];
        if let Some(Entry::Header(h)) = self.model.get(&key::header_key(p)) {
            if let Some(shadow) = h.shadow_for(&k[p.len() + 1..]) {
                current = current.without_content_at_or_below(shadow);
            }
        }
        let model_delta = current.stamp(LOCAL, None, &write);
        assert_eq!(delta.versions().len(), 1);
        self.model_merge(k, Entry::Row(model_delta));
    }

    fn write_header(&mut self, pk: i64, header: PartitionHeader) {
        let k = key::header_key(&prefix(pk));
        let entry = Entry::Header(header);
        self.engine().write(&k, entry.clone()).unwrap();
        self.model_merge(k, entry);
    }

    fn apply(&mut self, op: &Op) {
        let now_ms = self.clock.now_millis();
        match op.clone() {
            Op::Write {
                pk,
                ck,
                a,
                b,
                insert,
                ttl_ms,
            } => {
                let expires = ttl_ms.map(|t| now_ms + t);
                let mut cells = Vec::new();
                for (name, col) in [("a", a), ("b", b)] {
                    if let Some(v) = col {
                        let value = match v {
                            Some(v) => CellValue::Live(Value::BigInt(v)),
                            None => CellValue::Deleted,
                        };
                        cells.push((name.to_string(), value, expires));
                    }
                }
                let write = RowWrite {
                    ts: self.now(),
                    insert_marker: insert.then_some(expires),
                    delete_row: false,
                    cells,
                };
                self.stamp_local(row_key(pk, ck), write);
            }
            Op::RemoteWrite { node, pk, ck, a } => {
                let k = row_key(pk, ck);
                // A replica's clock may lag: its timestamp can be older than
                // local writes (but not older than the grace period).
                let ts = Timestamp(
                    self.now()
                        .0
                        .saturating_sub(((node * 7 + a as u64) % 20) << 16),
                );
                let write = RowWrite {
                    ts,
                    cells: vec![("a".into(), CellValue::Live(Value::BigInt(a)), None)],
                    ..RowWrite::default()
                };
                let state = self.remote.entry((node, k.clone())).or_default();
                let delta = state.stamp(NodeId(node), None, &write);
                *state = state.join(&delta);
                self.engine().write(&k, Entry::Row(delta.clone())).unwrap();
                self.model_merge(k, Entry::Row(delta));
            }
            Op::DeleteRow { pk, ck } => {
                let write = RowWrite {
                    ts: self.now(),
                    delete_row: true,
                    ..RowWrite::default()
                };
                self.stamp_local(row_key(pk, ck), write);
            }
            Op::DeleteRange { pk, lo, hi } => {
                let ts = self.now();
                self.write_header(
                    pk,
                    PartitionHeader {
                        deleted_at: None,
                        ranges: vec![RangeTombstone {
                            start: KeyBound::Included(clustering(lo)),
                            end: KeyBound::Excluded(clustering(hi)),
                            ts,
                        }],
                    },
                );
            }
            Op::DeletePartition { pk } => {
                let ts = self.now();
                self.write_header(
                    pk,
                    PartitionHeader {
                        deleted_at: Some(ts),
                        ranges: vec![],
                    },
                );
            }
            Op::Advance(ms) => self.clock.advance(ms),
            Op::Flush => self.engine().flush().unwrap(),
            Op::CompactDue => {
                self.engine().compact_due().unwrap();
            }
            Op::Compact => self.engine().compact().unwrap(),
            Op::Cleanup { drop } => {
                let keep = |token: key::Token| token % 4 != drop;
                let dropped = self.engine().cleanup(&keep).unwrap();
                let before: std::collections::BTreeSet<Vec<u8>> = self
                    .model
                    .keys()
                    .map(|k| k[..key::classify(k).unwrap().partition_len()].to_vec())
                    .filter(|p| !keep(key::token_of_key(p).unwrap()))
                    .collect();
                // Compaction may have purged some of them already.
                assert!(
                    dropped as usize <= before.len(),
                    "{dropped} > {}",
                    before.len()
                );
                self.model
                    .retain(|k, _| keep(key::token_of_key(k).unwrap()));
            }
            Op::Reopen => {
                self.engine = None;
                self.open();
            }
        }
    }

    /// What a reader should see in partition `pk`, per the model.
    fn expected(&self, pk: i64, reverse: bool) -> Vec<SliceRow> {
        let p = prefix(pk);
        let now = self.clock.now_millis();
        let header = match self.model.get(&key::header_key(&p)) {
            Some(Entry::Header(h)) => h.clone(),
            _ => PartitionHeader::default(),
        };
        let mut rows: Vec<SliceRow> = self
            .model
            .range(key::rows_start(&p)..key::partition_end(&p))
            .filter_map(|(k, e)| {
                let Entry::Row(state) = e else { return None };
                let c = k[p.len() + 1..].to_vec();
                let row = state.resolve(header.shadow_for(&c), now)?;
                Some(SliceRow {
                    clustering: c,
                    state: state.clone(),
                    row,
                })
            })
            .collect();
        if reverse {
            rows.reverse();
        }
        rows
    }

    /// [`Engine::read_partition_states`] by its general path: the header
    /// by a lookup of its own, every row of the key range `[lo, hi)`
    /// scanned, each resolved to tell whether it is live.
    fn states_by_scan(
        &self,
        p: &[u8],
        (lo, hi): (Vec<u8>, Vec<u8>),
        reverse: bool,
        limit: Option<usize>,
    ) -> StateSlice {
        let engine = self.engine();
        let mut out = StateSlice {
            header: engine.read_header(p).unwrap(),
            rows: Vec::new(),
            cut: false,
        };
        let limit = limit.unwrap_or(usize::MAX);
        if limit == 0 {
            out.cut = true;
            return out;
        }
        let now = self.clock.now_millis();
        let mut live_rows = 0;
        for item in engine.scan(Bound::Included(lo), Bound::Excluded(hi), reverse) {
            let (k, entry) = item.unwrap();
            let Entry::Row(state) = entry else { continue };
            if live_rows >= limit {
                out.cut = true;
                break;
            }
            let clustering = k[p.len() + 1..].to_vec();
            let live = state
                .resolve(out.header.shadow_for(&clustering), now)
                .is_some();
            live_rows += usize::from(live);
            out.rows.push(StateRow {
                clustering,
                state,
                live,
            });
        }
        out
    }

    fn check(&self, step: usize, op: &Op, lo: i32, hi: i32, limit: usize) {
        for pk in 0..PARTITIONS {
            let p = prefix(pk);
            for reverse in [false, true] {
                let got = self
                    .engine()
                    .read_partition(&p, Bound::Unbounded, Bound::Unbounded, reverse, None)
                    .unwrap();
                let want = self.expected(pk, reverse);
                // Purging a dead version older than the grace period drops
                // its dot, so a row that also has such a version in the
                // model may be flagged as conflicted there and not in the
                // engine. Everything else must match exactly.
                let purge_before =
                    Timestamp::from_millis(self.clock.now_millis().saturating_sub(GRACE_MS));
                let now = self.clock.now_millis();
                let may_have_purged = |key_clustering: &[u8]| {
                    let k = key::row_key(&p, key_clustering);
                    let header = match self.model.get(&key::header_key(&p)) {
                        Some(Entry::Header(h)) => h.clone(),
                        _ => PartitionHeader::default(),
                    };
                    match self.model.get(&k) {
                        Some(Entry::Row(r)) => {
                            let r = match header.shadow_for(key_clustering) {
                                Some(shadow) => r.without_content_at_or_below(shadow),
                                None => r.clone(),
                            };
                            r.versions()
                                .iter()
                                .any(|v| v.is_dead_before(purge_before, now))
                        }
                        _ => false,
                    }
                };
                let strip = |rows: &[SliceRow]| {
                    rows.iter()
                        .map(|r| {
                            let mut row = r.row.clone();
                            if may_have_purged(&r.clustering) {
                                row.conflict = false;
                            }
                            (r.clustering.clone(), row)
                        })
                        .collect::<Vec<_>>()
                };
                assert_eq!(
                    strip(&got.rows),
                    strip(&want),
                    "step {step} after {op:?}: partition {pk} reverse={reverse}"
                );
                // A bounded slice with a limit.
                // The replica's answer for the whole partition (the form
                // of a single-row read of a table without clustering
                // columns, and of a whole-partition read) is what the
                // general path gives: header looked up on its own, every
                // row of the range scanned and resolved.
                for lim in [None, Some(limit)] {
                    let got = self
                        .engine()
                        .read_partition_states(&p, Bound::Unbounded, Bound::Unbounded, reverse, lim)
                        .unwrap();
                    let want = self.states_by_scan(
                        &p,
                        (key::rows_start(&p), key::partition_end(&p)),
                        reverse,
                        lim,
                    );
                    // With background compaction, a dead row or a
                    // tombstone past its grace may be purged between the
                    // two reads: compare the live rows then, and require
                    // of the header only that the later read's tombstones
                    // were all in the earlier one (nothing is written in
                    // between, so none can appear); everything otherwise.
                    // It may also prune the retired id from a live row's
                    // context (where no version carries it): compare the
                    // contexts as pruning leaves them.
                    let live = |s: &StateSlice| -> Vec<_> {
                        s.rows
                            .iter()
                            .filter(|r| r.live)
                            .map(|r| {
                                let mut r = r.clone();
                                let carried =
                                    r.state.versions().iter().any(|v| v.dot.node == RETIRED);
                                if !carried {
                                    let context =
                                        r.state.context().without(|id| id == RETIRED, |_| false);
                                    r.state =
                                        RowState::from_parts(r.state.versions().to_vec(), context);
                                }
                                r
                            })
                            .collect()
                    };
                    if self.background {
                        assert_eq!(
                            live(&got),
                            live(&want),
                            "step {step} after {op:?}: replica read of {pk} limit {lim:?} reverse={reverse}"
                        );
                        let (earlier, later) = (&got.header, &want.header);
                        assert!(
                            (later.deleted_at.is_none() || later.deleted_at == earlier.deleted_at)
                                && later.ranges.iter().all(|r| earlier.ranges.contains(r)),
                            "step {step} after {op:?}: replica read of {pk}: header {earlier:?}, then {later:?}"
                        );
                    } else {
                        assert_eq!(
                            got, want,
                            "step {step} after {op:?}: replica read of {pk} limit {lim:?} reverse={reverse}"
                        );
                    }
                }
                let (lc, hc) = (clustering(lo.min(hi)), clustering(lo.max(hi)));
                let sliced = self
                    .engine()
                    .read_partition(
                        &p,
                        Bound::Included(&lc),
                        Bound::Excluded(&hc),
                        reverse,
                        Some(limit),
                    )
                    .unwrap();
                let want_sliced: Vec<_> = want
                    .iter()
                    .filter(|r| r.clustering >= lc && r.clustering < hc)
                    .take(limit)
                    .cloned()
                    .collect();
                assert_eq!(
                    strip(&sliced.rows),
                    strip(&want_sliced),
                    "step {step} after {op:?}: slice of {pk} [{lo},{hi}) limit {limit} reverse={reverse}"
                );
                // What a replica answers a coordinator with: the same live
                // rows and states, plus the dead ones between them.
                let states = self
                    .engine()
                    .read_partition_states(
                        &p,
                        Bound::Included(&lc),
                        Bound::Excluded(&hc),
                        reverse,
                        Some(limit),
                    )
                    .unwrap();
                let live: Vec<_> = states
                    .rows
                    .iter()
                    .filter(|r| r.live)
                    .map(|r| (r.clustering.clone(), r.state.clone()))
                    .collect();
                let sliced_states: Vec<_> = sliced
                    .rows
                    .iter()
                    .map(|r| (r.clustering.clone(), r.state.clone()))
                    .collect();
                assert_eq!(
                    live, sliced_states,
                    "step {step} after {op:?}: replica slice of {pk} reverse={reverse}"
                );
            }
            // Point reads agree with the slice.
            for ck in 0..ROWS {
                let c = clustering_in(pk, ck);
                let (state, header) = self.engine().read_row(&p, &c).unwrap();
                let now = self.clock.now_millis();
                let got = state.and_then(|s| s.resolve(header.shadow_for(&c), now));
                let want = self
                    .expected(pk, false)
                    .into_iter()
                    .find(|r| r.clustering == c)
                    .map(|r| r.row);
                let cells =
                    |r: &Option<ringdb::model::ResolvedRow>| r.as_ref().map(|r| r.cells.clone());
                assert_eq!(
                    cells(&got),
                    cells(&want),
                    "step {step} after {op:?}: row ({pk}, {ck})"
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, max_shrink_iters: 400, ..ProptestConfig::default() })]

    #[test]
    fn engine_matches_model(
        ops in proptest::collection::vec(op(), 1..60),
        probes in proptest::collection::vec((0..ROWS, 0..ROWS, 1usize..5), 60),
        background in proptest::bool::weighted(0.3),
    ) {
        let mut h = Harness::new(background);
        for (step, op) in ops.iter().enumerate() {
            h.apply(op);
            let (lo, hi, limit) = probes[step];
            h.check(step, op, lo, hi, limit);
            // Each check reads every partition whole (which fills the row
            // cache) and again in slices: the cache answered some of them,
            // so the comparisons above covered it.
            prop_assert!(h.engine().stats().row_cache.hits > 0, "step {}: no row cache hit", step);
        }
    }
}

/// Inserts every row of partition `pk`.
fn insert_rows(h: &mut Harness, pk: i64) {
    for ck in 0..ROWS {
        h.apply(&Op::Write {
            pk,
            ck,
            a: Some(Some(1)),
            b: None,
            insert: true,
            ttl_ms: None,
        });
    }
}

/// Deletes every row of partition `pk`, one by one.
fn delete_rows(h: &mut Harness, pk: i64) {
    for ck in 0..ROWS {
        h.apply(&Op::DeleteRow { pk, ck });
    }
}

#[test]
fn compaction_purges_old_tombstones_after_grace_only() {
    let mut h = Harness::new(false);
    insert_rows(&mut h, 0);
    h.apply(&Op::Flush);
    delete_rows(&mut h, 0);
    h.apply(&Op::DeletePartition { pk: 0 });
    h.apply(&Op::Flush);
    h.apply(&Op::Compact);
    let before = h.engine().stats().sstable_bytes;
    assert!(before > 0, "tombstones inside the grace period are kept");
    h.apply(&Op::Advance(GRACE_MS + 1));
    h.apply(&Op::Compact);
    assert_eq!(
        h.engine().stats().sstables,
        0,
        "everything was dead and past grace"
    );
    h.check(0, &Op::Compact, 0, ROWS, 10);
}

/// A row that node 2 (a retired id) wrote and this node then overwrote:
/// the major compaction forgets node 2's dot, and the row reads the same.
/// While a memtable holds a copy of the row, it does not: a late copy of
/// node 2's version would then come back as a sibling (what pruning
/// costs, shown at the end).
#[test]
fn compaction_prunes_retired_ids_only_where_it_sees_every_copy() {
    let mut h = Harness::new(false);
    let remote = Op::RemoteWrite {
        node: RETIRED.0,
        pk: 0,
        ck: 1,
        a: 5,
    };
    h.apply(&remote);
    let k = row_key(0, 1);
    let late_copy = h.engine().get(&k).unwrap();
    h.apply(&Op::Flush);
    h.apply(&Op::Write {
        pk: 0,
        ck: 1,
        a: Some(Some(7)),
        b: None,
        insert: false,
        ttl_ms: None,
    });
    // The superseded copy again, in the memtable: no pruning.
    h.engine().write(&k, late_copy.clone().unwrap()).unwrap();
    h.apply(&Op::Compact);
    assert_eq!(h.engine().stats().pruned_rows, 0);
    let context_ids = |h: &Harness| match h.engine().get(&k).unwrap() {
        Some(Entry::Row(r)) => {
            assert_eq!(r.versions().len(), 1, "{r:?}");
            r.context().nodes()
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(context_ids(&h), [LOCAL, RETIRED].into());
    h.apply(&Op::Flush);
    h.apply(&Op::Compact);
    let stats = h.engine().stats();
    assert_eq!((stats.pruned_rows, stats.pruned_context_entries), (1, 1));
    assert_eq!(context_ids(&h), [LOCAL].into());
    h.check(0, &Op::Compact, 0, ROWS, 10);
    // What pruning costs: the same late copy now comes back as a sibling
    // (its cells lose to the newer write's, so the row reads the same,
    // flagged as a conflict).
    h.engine().write(&k, late_copy.unwrap()).unwrap();
    match h.engine().get(&k).unwrap() {
        Some(Entry::Row(r)) => assert_eq!(r.versions().len(), 2, "{r:?}"),
        other => panic!("{other:?}"),
    }
}

/// A compaction of some of the tables purges a tombstone only where no
/// table left out of it may hold the partition (bloom filter and key
/// range): partition 2, written and deleted only in the compacted tables,
/// is purged; row (0, 1), whose insert is in the big table left out, keeps
/// its deletion (purging it would bring the insert back).
#[test]
fn a_partial_compaction_purges_only_partitions_no_other_table_holds() {
    let mut h = Harness::new(false);
    // Four tables at a time, at least four: of five, the four smallest.
    h.compaction = CompactionStrategy::SizeTiered {
        min_threshold: 4,
        max_threshold: 4,
    };
    h.apply(&Op::Reopen);
    insert_rows(&mut h, 0);
    insert_rows(&mut h, 1);
    h.apply(&Op::Flush);
    let write = |pk, ck| Op::Write {
        pk,
        ck,
        a: Some(Some(3)),
        b: None,
        insert: true,
        ttl_ms: None,
    };
    for op in [
        Op::DeleteRow { pk: 0, ck: 1 },
        Op::Flush,
        write(2, 1),
        Op::Flush,
        Op::DeleteRow { pk: 2, ck: 1 },
        Op::Flush,
        write(1, 5),
        Op::Flush,
        Op::Advance(GRACE_MS + 1),
    ] {
        h.apply(&op);
    }
    assert_eq!(h.engine().stats().sstables, 5);
    let states = |h: &Harness, pk: i64| {
        h.engine()
            .read_partition_states(&prefix(pk), Bound::Unbounded, Bound::Unbounded, false, None)
            .unwrap()
            .rows
            .len()
    };
    assert_eq!(states(&h, 2), 1, "the deleted row of partition 2");
    h.apply(&Op::CompactDue);
    assert_eq!(
        h.engine().stats().sstables,
        2,
        "the four small tables were compacted, the big one left out"
    );
    assert_eq!(states(&h, 2), 0, "partition 2 was purged");
    let live_rows = h
        .engine()
        .read_partition(&prefix(0), Bound::Unbounded, Bound::Unbounded, false, None)
        .unwrap()
        .rows
        .len();
    assert_eq!(
        live_rows,
        ROWS as usize - 1,
        "row (0, 1) stays deleted while the big table holds its insert"
    );
    h.check(0, &Op::CompactDue, 0, ROWS, 10);
}

/// A compaction that purges tombstones from one partition drops only that
/// partition from the row cache: the others read the same before and
/// after it (merging tables changes nothing a join would not) and stay
/// cached, where the whole cache used to be emptied.
#[test]
fn a_purging_compaction_drops_only_the_purged_partitions_from_the_row_cache() {
    let mut h = Harness::new(false);
    insert_rows(&mut h, 0);
    insert_rows(&mut h, 1);
    h.apply(&Op::Flush);
    delete_rows(&mut h, 0);
    h.apply(&Op::Flush);
    h.apply(&Op::Advance(GRACE_MS + 1));
    // Whole-partition reads (checked against the model) cache both.
    h.check(0, &Op::Flush, 0, ROWS, 10);
    let read_counting = |h: &Harness, pk: i64| {
        let before = h.engine().stats().row_cache;
        h.engine()
            .read_partition_states(&prefix(pk), Bound::Unbounded, Bound::Unbounded, false, None)
            .unwrap();
        let after = h.engine().stats().row_cache;
        (after.hits - before.hits, after.misses - before.misses)
    };
    assert_eq!(read_counting(&h, 0), (1, 0), "partition 0 is cached");
    assert_eq!(read_counting(&h, 1), (1, 0), "partition 1 is cached");
    let cached_before = h.engine().stats().row_cache.partitions;
    h.apply(&Op::Compact);
    assert!(
        h.engine().stats().sstable_bytes > 0,
        "partition 1's rows are still there"
    );
    assert_eq!(
        h.engine().stats().row_cache.partitions,
        cached_before - 1,
        "exactly one partition was dropped"
    );
    assert_eq!(read_counting(&h, 1), (1, 0), "partition 1 stays cached");
    assert_eq!(
        read_counting(&h, 0),
        (0, 1),
        "partition 0 was purged: read again"
    );
    // And everything reads as the model says, through the cache and not.
    h.check(1, &Op::Compact, 0, ROWS, 10);
    h.check(2, &Op::Compact, 0, ROWS, 10);
}
