//! Consistency levels: how many replicas must answer a request.

use serde::{Deserialize, Serialize};
use std::fmt;

/// How many replicas must acknowledge a write or answer a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum Consistency {
    /// A stored hint counts: the write is accepted if any node took it.
    Any,
    /// One replica.
    #[default]
    One,
    /// Two replicas.
    Two,
    /// Three replicas.
    Three,
    /// A majority of the replication factor.
    Quorum,
    /// Every replica.
    All,
    /// An explicit number of replicas.
    Count(u8),
}

impl Consistency {
    /// Replicas required for a replication factor `rf` (at least 1, for
    /// `Any` as well: `Any` counts hints, which the coordinator handles).
    pub fn required(self, rf: usize) -> usize {
        match self {
            Consistency::Any | Consistency::One => 1,
            Consistency::Two => 2,
            Consistency::Three => 3,
            Consistency::Quorum => rf / 2 + 1,
            Consistency::All => rf.max(1),
            Consistency::Count(n) => n.max(1) as usize,
        }
    }

    /// Parses `ONE`, `quorum`, `2`, ... (as the shell's CONSISTENCY command
    /// and the server flags take it).
    pub fn parse(text: &str) -> Option<Consistency> {
        let upper = text.trim().to_ascii_uppercase();
        Some(match upper.as_str() {
            "ANY" => Consistency::Any,
            "ONE" => Consistency::One,
            "TWO" => Consistency::Two,
            "THREE" => Consistency::Three,
            "QUORUM" => Consistency::Quorum,
            "ALL" => Consistency::All,
            n => match n.parse::<u8>() {
                Ok(n) if n > 0 => Consistency::Count(n),
                _ => return None,
            },
        })
    }
}

impl fmt::Display for Consistency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Consistency::Any => f.write_str("ANY"),
            Consistency::One => f.write_str("ONE"),
            Consistency::Two => f.write_str("TWO"),
            Consistency::Three => f.write_str("THREE"),
            Consistency::Quorum => f.write_str("QUORUM"),
            Consistency::All => f.write_str("ALL"),
            Consistency::Count(n) => write!(f, "{n}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn display_parses_back(n in 1u8..=255, pick in 0usize..7) {
            let levels = [Consistency::Any, Consistency::One, Consistency::Two, Consistency::Three,
                Consistency::Quorum, Consistency::All, Consistency::Count(n)];
            let level = levels[pick];
            let parsed = Consistency::parse(&level.to_string()).unwrap();
            // A count that names a level (1, 2, 3) means the same as it.
            prop_assert_eq!(parsed.required(7), level.required(7));
        }

        #[test]
        fn quorums_intersect(rf in 1usize..20) {
            let q = Consistency::Quorum.required(rf);
            prop_assert!(q + q > rf);
            prop_assert!(q <= rf);
        }
    }

    #[test]
    fn rejects_nonsense() {
        assert_eq!(Consistency::parse("most"), None);
        assert_eq!(Consistency::parse("0"), None);
        assert_eq!(Consistency::parse(" quorum "), Some(Consistency::Quorum));
    }
}
