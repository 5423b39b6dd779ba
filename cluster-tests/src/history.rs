//! Histories of client operations.

use serde::{Deserialize, Serialize};
use std::sync::Mutex;
use std::time::Instant;

/// What a client asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Operation {
    /// Write `value` under `key`.
    Write {
        /// The key written.
        key: String,
        /// The value written; unique per write in checked workloads.
        value: i64,
    },
    /// Read `key`; the completion carries the values seen.
    Read {
        /// The key read.
        key: String,
    },
}

/// How an operation ended, as the client saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Acknowledged; for reads, the values returned (siblings included).
    Ok(Vec<i64>),
    /// Definitely not applied (the system said so).
    Failed(String),
    /// Unknown: a timeout or a lost connection. It may or may not apply.
    Indeterminate(String),
}

/// One completed (or abandoned) operation of one client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The client (process) that ran it.
    pub client: u32,
    /// What was asked.
    pub op: Operation,
    /// Microseconds since the history started, at invocation.
    pub invoked_us: u64,
    /// Microseconds since the history started, at completion.
    pub completed_us: u64,
    /// How it ended.
    pub outcome: Outcome,
}

/// A history recorded concurrently by many clients.
#[derive(Debug)]
pub struct History {
    start: Instant,
    events: Mutex<Vec<Event>>,
}

impl Default for History {
    fn default() -> Self {
        History::new()
    }
}

impl History {
    /// An empty history starting now.
    pub fn new() -> History {
        History {
            start: Instant::now(),
            events: Mutex::new(Vec::new()),
        }
    }

    /// Microseconds since the history started.
    pub fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    /// Runs `f` as one operation of `client`, recording its timing and
    /// outcome.
    pub fn record<F>(&self, client: u32, op: Operation, f: F) -> Outcome
    where
        F: FnOnce() -> Outcome,
    {
        let invoked_us = self.now_us();
        let outcome = f();
        let event = Event {
            client,
            op,
            invoked_us,
            completed_us: self.now_us(),
            outcome: outcome.clone(),
        };
        self.events
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(event);
        outcome
    }

    /// The events recorded so far, ordered by invocation time.
    pub fn events(&self) -> Vec<Event> {
        let mut events = self
            .events
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        events.sort_by_key(|e| (e.invoked_us, e.client));
        events
    }
}
