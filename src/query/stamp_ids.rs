//! What a node knows of the stamping ids of its cluster, for pruning causal
//! contexts (`model::pruning`).
//!
//! Ids **in use** are the stamping ids the members gossip (each node's
//! metadata carries its current one), given by [`StampIdRegistry::observe`]
//! whenever the view changes. An id that compaction meets in a row's
//! context and that no member uses is **retired** from then on: the
//! registry records when it first noticed that, and pruning may forget the
//! id's dots once that is longer ago than the table's grace period. An id
//! that shows up in use again (gossip was late) is taken off the retired
//! list, so its grace period starts over when it retires for real.
//!
//! Until the first [`StampIdRegistry::observe`] (a node that has not heard
//! the cluster yet) nothing is noticed and nothing is pruned.
//!
//! The retired list is kept in `<data>/retired_stamp_ids`, one `<hex id>
//! <millis>` line each, rewritten atomically when it changes, so a restart
//! does not start every grace period over. A damaged or unreadable file is
//! logged and started afresh: that only delays pruning, it loses nothing.

use crate::model::pruning::{StampIdHistory, StampIdView};
use crate::model::NodeId;
use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

/// File name of the retired list, inside the store's data directory.
const FILE: &str = "retired_stamp_ids";

/// A node's knowledge of stamping ids: the ids its cluster's members stamp
/// with, and since when each retired id is known to be retired.
#[derive(Debug)]
pub struct StampIdRegistry {
    path: PathBuf,
    own: NodeId,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Whether the cluster's ids were observed at least once.
    ready: bool,
    in_use: BTreeSet<NodeId>,
    /// Retired ids and the wall-clock millisecond each was first noticed.
    retired: BTreeMap<NodeId, u64>,
}

impl StampIdRegistry {
    /// The registry of the store in `dir` whose own stamping id is `own`,
    /// with the retired list saved there (if any).
    pub fn open(dir: &Path, own: NodeId) -> StampIdRegistry {
        let path = dir.join(FILE);
        let retired = match std::fs::read_to_string(&path) {
            Ok(text) => parse(&text).unwrap_or_else(|line| {
                tracing::warn!(
                    path = %path.display(),
                    line,
                    "damaged list of retired stamping ids; starting a new one \
                     (context pruning waits a grace period longer)"
                );
                BTreeMap::new()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read the retired stamping ids");
                BTreeMap::new()
            }
        };
        let mut retired = retired;
        retired.remove(&own);
        StampIdRegistry {
            path,
            own,
            state: Mutex::new(State {
                retired,
                ..State::default()
            }),
        }
    }

    /// The id this node stamps with.
    pub fn own(&self) -> NodeId {
        self.own
    }

    /// The stamping ids the cluster's members use now (from gossip, down
    /// members included). Ids among them leave the retired list.
    pub fn observe(&self, in_use: impl IntoIterator<Item = NodeId>) {
        let mut state = self.state.lock();
        state.ready = true;
        state.in_use = in_use.into_iter().collect();
        let before = state.retired.len();
        let State {
            in_use, retired, ..
        } = &mut *state;
        retired.retain(|id, _| !in_use.contains(id));
        if retired.len() != before {
            self.save(&state.retired);
        }
    }

    /// The retired ids and when each was first noticed.
    pub fn retired(&self) -> BTreeMap<NodeId, u64> {
        self.state.lock().retired.clone()
    }

    fn save(&self, retired: &BTreeMap<NodeId, u64>) {
        if let Err(e) = write_atomically(&self.path, &render(retired)) {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot save the retired stamping ids");
        }
    }
}

impl StampIdHistory for StampIdRegistry {
    fn view(&self, _now_ms: u64, retired_before_ms: u64) -> StampIdView {
        let state = self.state.lock();
        let mut view = StampIdView {
            own: self.own,
            in_use: state.in_use.clone(),
            ..StampIdView::default()
        };
        for (&id, &since) in &state.retired {
            if state.ready && since < retired_before_ms && !state.in_use.contains(&id) {
                view.retired_long_ago.insert(id);
            } else {
                view.retired_recently.insert(id);
            }
        }
        view
    }

    fn notice_unknown(&self, ids: &BTreeSet<NodeId>, now_ms: u64) {
        let mut state = self.state.lock();
        if !state.ready {
            return;
        }
        let mut changed = false;
        for &id in ids {
            if id != self.own && !state.in_use.contains(&id) && !state.retired.contains_key(&id) {
                state.retired.insert(id, now_ms);
                changed = true;
            }
        }
        if changed {
            self.save(&state.retired);
        }
    }
}

fn render(retired: &BTreeMap<NodeId, u64>) -> String {
    retired
        .iter()
        .map(|(id, ms)| format!("{:016x} {ms}\n", id.0))
        .collect()
}

/// The list, or the first line that is not `<hex id> <millis>`.
fn parse(text: &str) -> Result<BTreeMap<NodeId, u64>, String> {
    let mut retired = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let parsed = line.split_once(' ').and_then(|(id, ms)| {
            Some((
                NodeId(u64::from_str_radix(id.trim(), 16).ok()?),
                ms.trim().parse::<u64>().ok()?,
            ))
        });
        let (id, ms) = parsed.ok_or_else(|| line.to_string())?;
        retired.insert(id, ms);
    }
    Ok(retired)
}

fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWN: NodeId = NodeId(1);

    fn ids(list: &[u64]) -> BTreeSet<NodeId> {
        list.iter().map(|&n| NodeId(n)).collect()
    }

    #[test]
    fn ids_retire_when_noticed_and_ripen_after_the_grace_period() {
        let dir = tempfile::tempdir().unwrap();
        let registry = StampIdRegistry::open(dir.path(), OWN);
        registry.notice_unknown(&ids(&[7]), 100);
        assert!(
            registry.retired().is_empty(),
            "nothing is noticed before the cluster was observed"
        );
        registry.observe([OWN, NodeId(2)]);
        registry.notice_unknown(&ids(&[1, 2, 7, 8]), 100);
        assert_eq!(
            registry.retired().keys().copied().collect::<BTreeSet<_>>(),
            ids(&[7, 8]),
            "ids in use and the own id never retire"
        );
        registry.notice_unknown(&ids(&[7]), 500);
        assert_eq!(registry.retired()[&NodeId(7)], 100, "first noticed counts");
        let early = registry.view(150, 100);
        assert!(early.retired_long_ago.is_empty());
        assert_eq!(early.retired_recently, ids(&[7, 8]));
        let late = registry.view(1_000, 101);
        assert_eq!(late.retired_long_ago, ids(&[7, 8]));
        assert_eq!(late.own, OWN);
        assert_eq!(late.in_use, ids(&[1, 2]));
    }

    #[test]
    fn an_id_seen_in_use_again_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let registry = StampIdRegistry::open(dir.path(), OWN);
        registry.observe([OWN]);
        registry.notice_unknown(&ids(&[9]), 100);
        // Gossip was late: node 9 is a member after all.
        registry.observe([OWN, NodeId(9)]);
        assert!(registry.retired().is_empty());
        assert!(registry.view(10_000, 5_000).retired_long_ago.is_empty());
        registry.observe([OWN]);
        registry.notice_unknown(&ids(&[9]), 4_000);
        assert!(registry.view(10_000, 4_000).retired_long_ago.is_empty());
        assert_eq!(registry.view(10_000, 4_001).retired_long_ago, ids(&[9]));
    }

    #[test]
    fn the_retired_list_survives_a_restart_and_damage_only_resets_it() {
        let dir = tempfile::tempdir().unwrap();
        {
            let registry = StampIdRegistry::open(dir.path(), OWN);
            registry.observe([OWN]);
            registry.notice_unknown(&ids(&[5, 6]), 42);
        }
        let reopened = StampIdRegistry::open(dir.path(), OWN);
        assert_eq!(
            reopened.retired(),
            BTreeMap::from([(NodeId(5), 42), (NodeId(6), 42)])
        );
        // Not ready after a restart until the cluster is observed again.
        assert!(reopened.view(100, 50).retired_long_ago.is_empty());
        reopened.observe([OWN]);
        assert_eq!(reopened.view(100, 50).retired_long_ago, ids(&[5, 6]));
        // A restart under a new stamping id: the old own id may be listed
        // by another node's registry, never by its owner's.
        let renewed = StampIdRegistry::open(dir.path(), NodeId(5));
        assert_eq!(
            renewed.retired().keys().copied().collect::<BTreeSet<_>>(),
            ids(&[6])
        );
        std::fs::write(dir.path().join(FILE), "0000000000000005 12\nnot a line\n").unwrap();
        let damaged = StampIdRegistry::open(dir.path(), OWN);
        assert!(damaged.retired().is_empty());
    }
}
