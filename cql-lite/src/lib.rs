//! CQL-lite: the CQL-like query language of ringdb.
//!
//! This crate is pure: it reads text and builds values, with no I/O and no
//! async runtime. It holds the type system ([`types`]) shared by every layer
//! of the node.

pub mod types;

pub use types::{DataType, Value};
