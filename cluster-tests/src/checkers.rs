//! Checkers: judgements over recorded histories.

use crate::history::{Event, Operation, Outcome};
use std::collections::{BTreeMap, BTreeSet};

/// An acknowledged write that no final read saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LostWrite {
    /// The key written.
    pub key: String,
    /// The value that was acknowledged and then not found.
    pub value: i64,
}

/// Finds acknowledged writes missing from the final state.
///
/// `final_reads` maps each key to every value a final read returned
/// (siblings included) after faults healed and repair ran. This is the
/// strict check for workloads where no write overwrites another (each key
/// is written once, or values accumulate as a set): every acknowledged
/// value must be present.
pub fn lost_writes(history: &[Event], final_reads: &BTreeMap<String, Vec<i64>>) -> Vec<LostWrite> {
    let mut lost = Vec::new();
    for event in history {
        if let (Operation::Write { key, value }, Outcome::Ok(_)) = (&event.op, &event.outcome) {
            let seen: BTreeSet<i64> = final_reads
                .get(key)
                .into_iter()
                .flatten()
                .copied()
                .collect();
            if !seen.contains(value) {
                lost.push(LostWrite {
                    key: key.clone(),
                    value: *value,
                });
            }
        }
    }
    lost
}

/// Values in the final state that no client ever tried to write: data
/// that came from nowhere (corruption or a mixed-up merge).
pub fn phantom_values(
    history: &[Event],
    final_reads: &BTreeMap<String, Vec<i64>>,
) -> Vec<(String, i64)> {
    let attempted: BTreeSet<(String, i64)> = history
        .iter()
        .filter_map(|e| match &e.op {
            Operation::Write { key, value } => Some((key.clone(), *value)),
            Operation::Read { .. } => None,
        })
        .collect();
    final_reads
        .iter()
        .flat_map(|(k, vs)| vs.iter().map(move |v| (k.clone(), *v)))
        .filter(|kv| !attempted.contains(kv))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::History;
    use proptest::prelude::*;

    proptest! {
        /// Against a set-valued key/value model: the checkers flag exactly
        /// the acknowledged values the final state misses, and exactly the
        /// final values nobody wrote.
        #[test]
        fn checkers_flag_exactly_the_missing_and_phantom_values(
            writes in proptest::collection::vec((0u8..4, 0i64..50, 0u8..3), 0..40),
            dropped in proptest::collection::vec(any::<bool>(), 40),
            phantoms in proptest::collection::vec((0u8..4, 50i64..60), 0..3),
        ) {
            let history = History::new();
            let mut final_reads: BTreeMap<String, Vec<i64>> = BTreeMap::new();
            let mut expected_lost = Vec::new();
            for (i, (k, v, outcome)) in writes.iter().enumerate() {
                let key = format!("k{k}");
                let outcome = match outcome {
                    0 => Outcome::Ok(vec![]),
                    1 => Outcome::Failed("unavailable".into()),
                    _ => Outcome::Indeterminate("timeout".into()),
                };
                let acked = matches!(outcome, Outcome::Ok(_));
                history.record(0, Operation::Write { key: key.clone(), value: *v }, || outcome);
                if dropped[i] {
                    if acked {
                        expected_lost.push(LostWrite { key: key.clone(), value: *v });
                    }
                } else {
                    final_reads.entry(key).or_default().push(*v);
                }
            }
            for (k, v) in &phantoms {
                final_reads.entry(format!("k{k}")).or_default().push(*v);
            }
            // A value written twice and kept once is not lost.
            expected_lost.retain(|l| !final_reads.get(&l.key).is_some_and(|vs| vs.contains(&l.value)));
            let events = history.events();
            prop_assert_eq!(lost_writes(&events, &final_reads), expected_lost);
            let mut want_phantoms: Vec<(String, i64)> = phantoms.iter().map(|(k, v)| (format!("k{k}"), *v)).collect();
            want_phantoms.sort();
            let mut got = phantom_values(&events, &final_reads);
            got.sort();
            prop_assert_eq!(got, want_phantoms);
        }
    }
}
