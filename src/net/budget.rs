//! [`ByteBudget`]: how many bytes of requests a server may hold at once,
//! across every connection.
//!
//! Limits per connection and per stream bound what one client can make a
//! server hold, but not what many can: a request being read, or waiting
//! for its answer, charges its bytes to the server's one budget, and a
//! request that would take it past its limit is refused (answered with an
//! "overloaded" error) instead of read, as Cassandra refuses requests past
//! `native_transport_max_request_data_in_flight`. A refused client can
//! retry; the server's memory stays bounded.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// A limit on bytes held, shared by everything that charges it.
#[derive(Debug)]
pub struct ByteBudget {
    used: AtomicUsize,
    limit: usize,
    refusals: AtomicU64,
}

impl ByteBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Arc<ByteBudget> {
        Arc::new(ByteBudget {
            used: AtomicUsize::new(0),
            limit,
            refusals: AtomicU64::new(0),
        })
    }

    /// Charges `bytes`, or `None` (counted as a refusal) if that would go
    /// past the limit. The bytes are given back when the charge is dropped.
    pub fn try_charge(self: &Arc<Self>, bytes: usize) -> Option<Charge> {
        let mut charge = Charge {
            budget: self.clone(),
            bytes: 0,
        };
        charge.try_grow(bytes).then_some(charge)
    }

    /// A charge of nothing yet, to grow as bytes arrive.
    pub fn empty_charge(self: &Arc<Self>) -> Charge {
        Charge {
            budget: self.clone(),
            bytes: 0,
        }
    }

    /// Bytes charged now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// The most bytes it lets be charged at once.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Charges refused since it was made.
    pub fn refusals(&self) -> u64 {
        self.refusals.load(Ordering::Relaxed)
    }
}

/// Bytes charged to a [`ByteBudget`], given back on drop.
#[derive(Debug)]
pub struct Charge {
    budget: Arc<ByteBudget>,
    bytes: usize,
}

impl Charge {
    /// Charges `more` bytes too; false (counted as a refusal, nothing
    /// charged) if that would take the budget past its limit.
    pub fn try_grow(&mut self, more: usize) -> bool {
        let budget = &self.budget;
        let grown = budget
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(more)
                    .filter(|&total| total <= budget.limit)
            })
            .is_ok();
        if grown {
            self.bytes += more;
        } else {
            budget.refusals.fetch_add(1, Ordering::Relaxed);
        }
        grown
    }

    /// Gives back `less` of its bytes (at most all of them).
    pub fn shrink(&mut self, less: usize) {
        let less = less.min(self.bytes);
        self.bytes -= less;
        self.budget.used.fetch_sub(less, Ordering::AcqRel);
    }

    /// Bytes it holds.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The limit of the budget it charges.
    pub fn limit(&self) -> usize {
        self.budget.limit
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Against a model (the sum of the live charges): the budget never
        /// goes past its limit, refuses exactly what would, and is back to
        /// zero once every charge is dropped.
        #[test]
        fn charges_never_exceed_the_limit_and_all_come_back(
            limit in 0usize..1000,
            ops in prop::collection::vec((0u8..4, 0usize..400), 0..60),
        ) {
            let budget = ByteBudget::new(limit);
            let mut live: Vec<Charge> = Vec::new();
            let mut refused = 0u64;
            for (op, n) in ops {
                let held: usize = live.iter().map(Charge::bytes).sum();
                match op {
                    0 => match budget.try_charge(n) {
                        Some(c) => {
                            prop_assert!(held + n <= limit);
                            live.push(c);
                        }
                        None => {
                            prop_assert!(held + n > limit);
                            refused += 1;
                        }
                    },
                    1 => if let Some(c) = live.last_mut() {
                        let ok = c.try_grow(n);
                        prop_assert_eq!(ok, held + n <= limit);
                        refused += u64::from(!ok);
                    },
                    2 => if let Some(c) = live.last_mut() {
                        c.shrink(n);
                    },
                    _ => if !live.is_empty() {
                        live.remove(n % live.len());
                    },
                }
                let held: usize = live.iter().map(Charge::bytes).sum();
                prop_assert_eq!(budget.used(), held);
                prop_assert!(held <= limit);
                prop_assert_eq!(budget.refusals(), refused);
            }
            drop(live);
            prop_assert_eq!(budget.used(), 0);
        }
    }
}
