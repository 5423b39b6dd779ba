//! placeholder
pub struct SemanticError;
