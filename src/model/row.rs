//! Row versions, sibling sets and their merge.
//!
//! A [`RowState`] is everything a replica knows about one row: the versions
//! that no known write has superseded (siblings) and the set of every dot it
//! has seen (its causal context). Merging two states keeps a version when
//! both sides have it, or when the other side has never seen its dot:
//!
//! ```text
//! join((V1, C1), (V2, C2)) = ((V1 ∩ V2) ∪ {v ∈ V1 | v.dot ∉ C2} ∪ {v ∈ V2 | v.dot ∉ C1}, C1 ∪ C2)
//! ```
//!
//! This is a join-semilattice (commutative, associative, idempotent) for any
//! inputs, so replicas, the memtable, SSTables and compaction can merge in
//! any order and agree. Concurrent versions are never dropped: only a state
//! that has seen a version's dot, and does not hold the version any more,
//! removes it.
//!
//! A [`PartitionHeader`] holds a partition's deletion and its range
//! tombstones; its merge is a maximum and a set union.

use super::digest::DigestMemo;
use super::dots::{Dot, DotSet, NodeId};
use super::hlc::Timestamp;
use cql_lite::Value;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// The content of a cell: a value or a deletion.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum CellValue {
    /// A live value.
    Live(Value),
    /// A deletion of the column (written by `DELETE col` or `SET col = null`).
    Deleted,
}

/// One column's cell: its content, write timestamp and optional expiry.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Cell {
    /// Write timestamp (HLC, or the client's `USING TIMESTAMP`).
    pub ts: Timestamp,
    /// Value or deletion.
    pub value: CellValue,
    /// Wall-clock millisecond at which the cell expires (TTL), if any.
    pub expires_at: Option<u64>,
}

impl Cell {
    /// Whether `self` wins over `other` for the same column: the higher
    /// timestamp wins; at equal timestamps a deletion wins, then an expiring
    /// cell over a non-expiring one, then the greater value (Cassandra's
    /// rules), so every replica picks the same cell.
    pub fn wins_over(&self, other: &Cell) -> bool {
        self.rank() > other.rank()
    }

    fn rank(&self) -> (Timestamp, bool, Option<u64>, Option<&Value>) {
        let live = match &self.value {
            CellValue::Live(v) => Some(v),
            CellValue::Deleted => None,
        };
        (self.ts, live.is_none(), self.expires_at, live)
    }

    /// Whether the cell reads as a value at wall-clock time `now_ms`.
    pub fn is_live(&self, now_ms: u64) -> bool {
        matches!(self.value, CellValue::Live(_)) && self.expires_at.is_none_or(|e| now_ms < e)
    }
}

/// The row marker of an INSERT: the row exists even when all its regular
/// columns are null (an UPDATE writes no marker).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Liveness {
    /// Write timestamp.
    pub ts: Timestamp,
    /// Wall-clock expiry in milliseconds, if the INSERT had a TTL.
    pub expires_at: Option<u64>,
}

/// One version of a row: a set of cells plus the dot that names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RowVersion {
    /// The write that made this version.
    pub dot: Dot,
    /// The INSERT row marker, if any.
    pub marker: Option<Liveness>,
    /// A row deletion: cells and markers at or below this timestamp are dead.
    pub deleted_at: Option<Timestamp>,
    /// Cells by column name.
    pub cells: BTreeMap<String, Cell>,
}

impl RowVersion {
    /// Whether the version holds nothing live at `now_ms` (only deletions
    /// and expired cells) and nothing written at or after `purge_before`.
    pub fn is_dead_before(&self, purge_before: Timestamp, now_ms: u64) -> bool {
        self.ts_bounds().is_none_or(|(_, hi)| hi < purge_before)
            && self.cells.values().all(|c| !c.is_live(now_ms))
            && self
                .marker
                .is_none_or(|m| m.expires_at.is_some_and(|e| e <= now_ms))
    }

    /// Smallest and largest timestamp in the version.
    pub fn ts_bounds(&self) -> Option<(Timestamp, Timestamp)> {
        let all = self
            .cells
            .values()
            .map(|c| c.ts)
            .chain(self.marker.map(|m| m.ts))
            .chain(self.deleted_at);
        all.fold(None, |acc, ts| match acc {
            None => Some((ts, ts)),
            Some((lo, hi)) => Some((lo.min(ts), hi.max(ts))),
        })
    }
}

/// A write to one row, before it is stamped with a dot.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RowWrite {
    /// The write's timestamp.
    pub ts: Timestamp,
    /// An INSERT sets the row marker (with the TTL's expiry, if any).
    pub insert_marker: Option<Option<u64>>,
    /// A `DELETE FROM t WHERE <full primary key>`.
    pub delete_row: bool,
    /// Columns written: value or deletion, with optional expiry.
    pub cells: Vec<(String, CellValue, Option<u64>)>,
}

/// Everything a replica knows of one row: its siblings and causal context.
///
/// Immutable and shared: a clone is a reference-count increment. Reads
/// clone states out of the memtable and into answers (a 1 KB row is dozens
/// of allocations to copy), and every change builds a new state anyway
/// (join, stamp). Encodes exactly as the plain pair of versions and context.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RowState {
    parts: Arc<StateParts>,
}

/// Where a version [`RowState::join`] keeps comes from.
enum Pick<'a> {
    /// Equal copies on both sides.
    Both(&'a RowVersion),
    /// This side only (or its copy is the greater).
    Mine(&'a RowVersion),
    /// The other side only (or its copy is the greater).
    Theirs(&'a RowVersion),
}

/// The content of a [`RowState`], behind its `Arc`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename = "RowState")]
struct StateParts {
    versions: Vec<RowVersion>,
    context: DotSet,
    /// [`RowState::digest`], once asked for (the parts never change).
    #[serde(skip)]
    digest: DigestMemo,
}

impl fmt::Debug for RowState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RowState")
            .field("versions", &self.parts.versions)
            .field("context", &self.parts.context)
            .finish()
    }
}

impl Serialize for RowState {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.parts.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for RowState {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        StateParts::deserialize(deserializer).map(|p| RowState::new(p.versions, p.context))
    }
}

/// Bytes a value holds outside its own `size_of` (strings, blobs, lists).
fn value_heap_bytes(value: &Value) -> usize {
    match value {
        Value::Text(s) | Value::Ascii(s) => s.len(),
        Value::Blob(b) => b.len(),
        Value::List(items) => items
            .iter()
            .map(|v| std::mem::size_of::<Value>() + value_heap_bytes(v))
            .sum(),
        _ => 0,
    }
}

/// A row as a reader sees it, after resolving siblings and tombstones.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedRow {
    /// Live columns: value, write timestamp and expiry.
    pub cells: BTreeMap<String, Cell>,
    /// Whether the row has more than one sibling version.
    pub conflict: bool,
}

impl RowState {
    fn new(versions: Vec<RowVersion>, context: DotSet) -> RowState {
        RowState {
            parts: Arc::new(StateParts {
                versions,
                context,
                digest: DigestMemo::default(),
            }),
        }
    }

    /// A state holding exactly these versions, having seen `context` (the
    /// versions' own dots are added to it).
    pub fn from_parts(mut versions: Vec<RowVersion>, mut context: DotSet) -> RowState {
        versions.sort();
        versions.dedup_by(|a, b| a.dot == b.dot);
        for v in &versions {
            context.insert(v.dot);
        }
        RowState::new(versions, context)
    }

    /// The sibling versions, ordered by dot.
    pub fn versions(&self) -> &[RowVersion] {
        &self.parts.versions
    }

    /// Every dot this state has seen.
    pub fn context(&self) -> &DotSet {
        &self.parts.context
    }

    /// The digest of the state's encoding ([`super::digest::digest_of`]),
    /// computed once per state: a state read again from a memtable or the
    /// row cache is the same shared value, so its digest is already known.
    pub fn digest(&self) -> u128 {
        self.parts
            .digest
            .get_or_compute(|| super::digest::digest_of(&*self.parts))
    }

    /// True when nothing is known of the row.
    pub fn is_empty(&self) -> bool {
        self.parts.versions.is_empty() && self.parts.context.is_empty()
    }

    /// About how many bytes of memory the state takes (what a cache holding
    /// it charges): the structures' sizes plus every string and blob, with
    /// a fixed allowance per allocation. An estimate, not an accounting.
    pub fn approximate_bytes(&self) -> usize {
        const PER_ALLOCATION: usize = 16;
        const PER_MAP_ENTRY: usize = 16;
        let cells = |v: &RowVersion| -> usize {
            v.cells
                .iter()
                .map(|(name, cell)| {
                    name.len()
                        + PER_ALLOCATION
                        + PER_MAP_ENTRY
                        + std::mem::size_of::<(String, Cell)>()
                        + match &cell.value {
                            CellValue::Live(value) => value_heap_bytes(value),
                            CellValue::Deleted => 0,
                        }
                })
                .sum()
        };
        std::mem::size_of::<StateParts>()
            + PER_ALLOCATION
            + self
                .parts
                .versions
                .iter()
                .map(|v| std::mem::size_of::<RowVersion>() + cells(v))
                .sum::<usize>()
            + self.parts.context.size() * (std::mem::size_of::<Dot>() + PER_MAP_ENTRY)
    }

    /// The merge of two states (see the module documentation).
    pub fn join(&self, other: &RowState) -> RowState {
        if Arc::ptr_eq(&self.parts, &other.parts) {
            return self.clone();
        }
        // Often one side already is the join (a memtable's newer state
        // over an SSTable's older one, an answer equal to another): then
        // share it instead of copying every version's cells.
        let mut from_mine = 0;
        let mut from_theirs = 0;
        let mut only_mine = true;
        let mut only_theirs = true;
        self.merge_versions(other, |pick| match pick {
            Pick::Both(_) => {
                from_mine += 1;
                from_theirs += 1;
            }
            Pick::Mine(_) => {
                from_mine += 1;
                only_theirs = false;
            }
            Pick::Theirs(_) => {
                from_theirs += 1;
                only_mine = false;
            }
        });
        let (mine, theirs) = (self.versions(), other.versions());
        if only_mine && from_mine == mine.len() && other.context().is_subset_of(self.context()) {
            return self.clone();
        }
        if only_theirs
            && from_theirs == theirs.len()
            && self.context().is_subset_of(other.context())
        {
            return other.clone();
        }
        let mut versions = Vec::with_capacity(mine.len().max(theirs.len()));
        self.merge_versions(other, |pick| match pick {
            Pick::Both(v) | Pick::Mine(v) | Pick::Theirs(v) => versions.push(v.clone()),
        });
        let mut context = self.context().clone();
        context.union_with(other.context());
        RowState::new(versions, context)
    }

    /// The versions the join of `self` and `other` keeps, in dot order:
    /// each side's, unless the other side has seen its dot (and so
    /// superseded it); of the same write on both sides, the greater copy.
    fn merge_versions<'a>(&'a self, other: &'a RowState, mut keep: impl FnMut(Pick<'a>)) {
        let (mine, theirs) = (self.versions(), other.versions());
        let (mut i, mut j) = (0, 0);
        while i < mine.len() || j < theirs.len() {
            match (mine.get(i), theirs.get(j)) {
                (Some(a), Some(b)) if a.dot == b.dot => {
                    // The same write on both sides: identical unless a bug or
                    // bit rot made them differ; pick deterministically.
                    keep(match a.cmp(b) {
                        std::cmp::Ordering::Equal => Pick::Both(a),
                        std::cmp::Ordering::Greater => Pick::Mine(a),
                        std::cmp::Ordering::Less => Pick::Theirs(b),
                    });
                    i += 1;
                    j += 1;
                }
                (Some(a), b) if b.is_none_or(|b| a.dot < b.dot) => {
                    if !other.context().contains(a.dot) {
                        keep(Pick::Mine(a));
                    }
                    i += 1;
                }
                (_, Some(b)) => {
                    if !self.context().contains(b.dot) {
                        keep(Pick::Theirs(b));
                    }
                    j += 1;
                }
                (Some(_), None) | (None, None) => {
                    unreachable!("loop condition and guards cover these")
                }
            }
        }
    }

    /// Stamps a write at `node`, returning the delta to apply locally and to
    /// send to the other replicas.
    ///
    /// `client_context` is the causal context the client read; the new
    /// version supersedes exactly the versions in it. Without one, the node's
    /// own context for the row is used, so blind writes through one replica
    /// form a chain. The new version carries forward the cells of the
    /// versions it supersedes that it does not overwrite.
    pub fn stamp(
        &self,
        node: NodeId,
        client_context: Option<&DotSet>,
        write: &RowWrite,
    ) -> RowState {
        let seen = client_context.unwrap_or(self.context());
        // The next counter extends the node's contiguous run (its vector
        // entry), skipping any dot either context holds. A replica holds
        // every dot it stamped itself, so the run's successor is new; cloud
        // dots of its id are clock readings (a write it stamped at ANY with
        // every replica down, `CLOCK_COUNTER_FLOOR` and up), far above the
        // run. Continuing from those instead would make every later dot a
        // cloud dot of its own: the context would grow by one per write.
        // Saturating: contexts from outside are checked against
        // `MAX_COUNTER` before they get here, and a stored one that reached
        // the top would rather reuse a dot than wrap to 0, a dot no context
        // can hold.
        let run = |set: &DotSet| set.vector().get(&node).copied().unwrap_or(0);
        let mut counter = run(self.context()).max(run(seen)).saturating_add(1);
        while counter < u64::MAX
            && (self.context().contains(Dot { node, counter })
                || seen.contains(Dot { node, counter }))
        {
            counter += 1;
        }
        let dot = Dot { node, counter };
        let mut version = RowVersion {
            dot,
            marker: None,
            deleted_at: None,
            cells: BTreeMap::new(),
        };
        for old in self.versions().iter().filter(|v| seen.contains(v.dot)) {
            merge_version_content(&mut version, old);
        }
        let written = RowVersion {
            dot,
            marker: write.insert_marker.map(|expires_at| Liveness {
                ts: write.ts,
                expires_at,
            }),
            deleted_at: write.delete_row.then_some(write.ts),
            cells: write
                .cells
                .iter()
                .map(|(name, value, expires_at)| {
                    let cell = Cell {
                        ts: write.ts,
                        value: value.clone(),
                        expires_at: *expires_at,
                    };
                    (name.clone(), cell)
                })
                .collect(),
        };
        merge_version_content(&mut version, &written);
        let mut context = seen.clone();
        context.insert(dot);
        RowState::new(vec![version], context)
    }

    /// Resolves the siblings into what a reader sees at wall-clock `now_ms`,
    /// after a shadowing deletion at `shadowed_at` (partition or range
    /// tombstone). `None` when the row does not exist.
    pub fn resolve(&self, shadowed_at: Option<Timestamp>, now_ms: u64) -> Option<ResolvedRow> {
        let versions = self.versions();
        let (first, rest) = versions.split_first()?;
        let mut merged = first.clone();
        for v in rest {
            merge_version_content(&mut merged, v);
        }
        let deleted_at = merged.deleted_at.max(shadowed_at);
        let alive = |ts: Timestamp| deleted_at.is_none_or(|d| ts > d);
        let cells: BTreeMap<String, Cell> = merged
            .cells
            .into_iter()
            .filter(|(_, c)| c.is_live(now_ms) && alive(c.ts))
            .collect();
        let marker_live = merged
            .marker
            .is_some_and(|m| alive(m.ts) && m.expires_at.is_none_or(|e| now_ms < e));
        if cells.is_empty() && !marker_live {
            return None;
        }
        Some(ResolvedRow {
            cells,
            conflict: versions.len() > 1,
        })
    }

    /// Whether the row exists for a reader at wall-clock `now_ms` after a
    /// shadowing deletion at `shadowed_at`: exactly
    /// `self.resolve(shadowed_at, now_ms).is_some()`, without building the
    /// resolved row (no clone of a version, no allocation).
    ///
    /// Why it agrees with [`RowState::resolve`]: resolving keeps, per
    /// column, the cell that wins over every other sibling's, and the
    /// newest marker, then drops whatever the latest row deletion (or the
    /// shadow) covers. A winning cell or marker at or below that deletion
    /// means every other one of its column is too (the winner has the
    /// highest timestamp), so the row is live exactly when some column's
    /// winning cell, or the newest marker, is newer than every deletion
    /// and not expired.
    pub fn is_live(&self, shadowed_at: Option<Timestamp>, now_ms: u64) -> bool {
        let versions = self.versions();
        let deleted_at = versions
            .iter()
            .filter_map(|v| v.deleted_at)
            .max()
            .max(shadowed_at);
        let alive = |ts: Timestamp| deleted_at.is_none_or(|d| ts > d);
        let newest_marker = versions.iter().filter_map(|v| v.marker).max();
        if newest_marker.is_some_and(|m| alive(m.ts) && m.expires_at.is_none_or(|e| now_ms < e)) {
            return true;
        }
        versions.iter().enumerate().any(|(i, v)| {
            v.cells.iter().any(|(name, cell)| {
                cell.is_live(now_ms)
                    && alive(cell.ts)
                    && versions.iter().enumerate().all(|(j, other)| {
                        j == i || other.cells.get(name).is_none_or(|o| !o.wins_over(cell))
                    })
            })
        })
    }

    /// The same state with every cell, marker and row deletion at or below
    /// `shadow` removed: what compaction keeps when it drops the partition
    /// or range tombstone at `shadow` that made them dead.
    pub fn without_content_at_or_below(&self, shadow: Timestamp) -> RowState {
        let versions = self
            .versions()
            .iter()
            .map(|v| RowVersion {
                dot: v.dot,
                marker: v.marker.filter(|m| m.ts > shadow),
                deleted_at: v.deleted_at.filter(|d| *d > shadow),
                cells: v
                    .cells
                    .iter()
                    .filter(|(_, c)| c.ts > shadow)
                    .map(|(n, c)| (n.clone(), c.clone()))
                    .collect(),
            })
            .collect();
        RowState::new(versions, self.context().clone())
    }

    /// Smallest and largest write timestamp over all versions.
    pub fn ts_bounds(&self) -> Option<(Timestamp, Timestamp)> {
        self.versions()
            .iter()
            .filter_map(RowVersion::ts_bounds)
            .fold(None, |acc, (lo, hi)| match acc {
                None => Some((lo, hi)),
                Some((a, b)) => Some((a.min(lo), b.max(hi))),
            })
    }

    /// Whether every version is dead and old (see
    /// [`RowVersion::is_dead_before`]): such a row can be dropped by
    /// compaction once the grace period has passed.
    pub fn is_purgeable(&self, purge_before: Timestamp, now_ms: u64) -> bool {
        self.versions()
            .iter()
            .all(|v| v.is_dead_before(purge_before, now_ms))
    }
}

/// Folds `other`'s content into `into`, column by column, keeping the
/// winning cell, the newest marker and the latest row deletion. Cells a row
/// deletion shadows are dropped. Commutative, associative and idempotent on
/// content, so the order of siblings does not matter.
fn merge_version_content(into: &mut RowVersion, other: &RowVersion) {
    for (name, cell) in &other.cells {
        match into.cells.get(name) {
            Some(existing) if !cell.wins_over(existing) => {}
            _ => {
                into.cells.insert(name.clone(), cell.clone());
            }
        }
    }
    into.marker = match (into.marker, other.marker) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    into.deleted_at = into.deleted_at.max(other.deleted_at);
    if let Some(deleted) = into.deleted_at {
        into.cells.retain(|_, c| c.ts > deleted);
        if into.marker.is_some_and(|m| m.ts <= deleted) {
            into.marker = None;
        }
    }
}

/// One end of a range of encoded clustering keys (like `std::ops::Bound`,
/// but ordered, so range tombstones can be kept sorted).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum KeyBound {
    /// No limit on this side.
    Unbounded,
    /// The key itself is in the range.
    Included(Vec<u8>),
    /// The key itself is not in the range.
    Excluded(Vec<u8>),
}

/// A deletion of a range of clustering keys in one partition.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RangeTombstone {
    /// Lower bound on the encoded clustering key.
    pub start: KeyBound,
    /// Upper bound on the encoded clustering key.
    pub end: KeyBound,
    /// Deletion timestamp: cells at or below it in the range are dead.
    pub ts: Timestamp,
}

impl RangeTombstone {
    /// Whether the encoded clustering key lies in the range.
    pub fn covers(&self, clustering: &[u8]) -> bool {
        let above = match &self.start {
            KeyBound::Included(s) => clustering >= s.as_slice(),
            KeyBound::Excluded(s) => clustering > s.as_slice(),
            KeyBound::Unbounded => true,
        };
        let below = match &self.end {
            KeyBound::Included(e) => clustering <= e.as_slice(),
            KeyBound::Excluded(e) => clustering < e.as_slice(),
            KeyBound::Unbounded => true,
        };
        above && below
    }
}

/// A partition's deletions: a partition tombstone and range tombstones.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionHeader {
    /// Partition deletion: every cell at or below it is dead.
    pub deleted_at: Option<Timestamp>,
    /// Range tombstones, sorted and without duplicates.
    pub ranges: Vec<RangeTombstone>,
}

impl PartitionHeader {
    /// About how many bytes of memory the header takes (see
    /// [`RowState::approximate_bytes`]).
    pub fn approximate_bytes(&self) -> usize {
        let bound = |b: &KeyBound| match b {
            KeyBound::Unbounded => 0,
            KeyBound::Included(k) | KeyBound::Excluded(k) => k.len() + 16,
        };
        std::mem::size_of::<PartitionHeader>()
            + self
                .ranges
                .iter()
                .map(|r| std::mem::size_of::<RangeTombstone>() + bound(&r.start) + bound(&r.end))
                .sum::<usize>()
    }

    /// The merge of two headers: the later deletion and all ranges.
    pub fn join(&self, other: &PartitionHeader) -> PartitionHeader {
        let mut ranges: Vec<RangeTombstone> =
            self.ranges.iter().chain(&other.ranges).cloned().collect();
        ranges.sort();
        ranges.dedup();
        PartitionHeader {
            deleted_at: self.deleted_at.max(other.deleted_at),
            ranges,
        }
    }

    /// The latest deletion that covers a row with this encoded clustering key.
    pub fn shadow_for(&self, clustering: &[u8]) -> Option<Timestamp> {
        self.ranges
            .iter()
            .filter(|r| r.covers(clustering))
            .map(|r| r.ts)
            .max()
            .max(self.deleted_at)
    }

    /// Smallest and largest timestamp.
    pub fn ts_bounds(&self) -> Option<(Timestamp, Timestamp)> {
        self.deleted_at
            .into_iter()
            .chain(self.ranges.iter().map(|r| r.ts))
            .fold(None, |acc, ts| match acc {
                None => Some((ts, ts)),
                Some((lo, hi)) => Some((lo.min(ts), hi.max(ts))),
            })
    }

    /// Drops deletions older than `purge_before`; `None` if nothing is left.
    pub fn purge(&self, purge_before: Timestamp) -> Option<PartitionHeader> {
        let header = PartitionHeader {
            deleted_at: self.deleted_at.filter(|d| *d >= purge_before),
            ranges: self
                .ranges
                .iter()
                .filter(|r| r.ts >= purge_before)
                .cloned()
                .collect(),
        };
        (header.deleted_at.is_some() || !header.ranges.is_empty()).then_some(header)
    }
}
