//! CQL-lite: the CQL-like query language of ringdb.
//!
//! This crate is pure: it reads text and builds values, with no I/O and no
//! async runtime. Its modules:
//!
//! - [`types`]: column types ([`DataType`]) and typed values ([`Value`]),
//!   shared by every layer of the node.
//! - [`lexer`]: text to tokens with line:column [`Span`]s.
//! - [`parser`]: tokens to statements ([`parse`], [`parse_statement`]).
//! - [`ast`]: the statement tree ([`Statement`] and its parts).
//! - [`literal`]: literals and their typing ([`literal_to_value`]), ISO-8601
//!   timestamps and dates.
//! - [`printer`]: statements back to canonical CQL text (`Display`).
//! - [`error`]: [`ParseError`] and its rendering with a caret.
//! - [`analyze`]: checks of a statement against a schema ([`SemanticError`]).

#![warn(missing_docs)]

pub mod analyze;
pub mod ast;
pub mod error;
pub mod lexer;
pub mod literal;
pub mod parser;
pub mod printer;
pub mod types;

pub use analyze::SemanticError;
pub use ast::Statement;
pub use error::{ErrorKind, ParseError};
pub use lexer::Span;
pub use literal::{literal_to_value, Literal, TypeError};
pub use parser::{parse, parse_statement};
pub use types::{DataType, MarkerType, Value};
