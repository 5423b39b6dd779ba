//! The recursive-descent parser: tokens to [`Statement`]s.
//!
//! Besides the grammar, the parser checks what a statement can get wrong on
//! its own, without a schema: duplicate columns, primary key columns that
//! are not defined, unknown options, replication settings, TTL and LIMIT
//! ranges, function arity. Checks that need the schema (unknown table,
//! type mismatch, primary key restrictions) are in [`crate::analyze`].

use crate::ast::*;
use crate::lexer::{is_reserved_keyword, tokenize, Token, TokenKind};
use crate::types::DataType;
use std::collections::HashSet;

pub use crate::error::{ErrorKind, ParseError};

/// The largest TTL Cassandra accepts: 20 years, in seconds.
pub const MAX_TTL: i128 = 630_720_000;

/// Parses a script of `;`-separated statements (empty statements are
/// skipped; the last `;` is optional).
pub fn parse(text: &str) -> Result<Vec<Statement>, ParseError> {
    let tokens = tokenize(text)?;
    let mut p = Parser::new(&tokens);
    let mut out = Vec::new();
    loop {
        while p.eat(TokenKind::Semicolon) {}
        if p.at(&TokenKind::Eof) {
            return Ok(out);
        }
        out.push(p.statement()?);
        if !p.eat(TokenKind::Semicolon) && !p.at(&TokenKind::Eof) {
            p.note("<EOF>");
            return Err(p.mismatch());
        }
    }
}

/// Parses exactly one statement, optionally followed by `;`.
pub fn parse_statement(text: &str) -> Result<Statement, ParseError> {
    let tokens = tokenize(text)?;
    let mut p = Parser::new(&tokens);
    let stmt = p.statement()?;
    while p.eat(TokenKind::Semicolon) {}
    if !p.at(&TokenKind::Eof) {
        p.note("<EOF>");
        return Err(p.mismatch());
    }
    Ok(stmt)
}

type PResult<T> = Result<T, ParseError>;

struct Parser<'t> {
    tokens: &'t [Token],
    pos: usize,
    /// What was tried at `expected_at` (for "expecting ..." messages).
    expected: Vec<&'static str>,
    expected_at: usize,
    /// How deeply function calls are nested at this point.
    depth: usize,
}

/// How deeply function calls may nest (`toTimestamp(toTimestamp(...))`),
/// so that no input can exhaust the stack.
pub const MAX_NESTING: usize = 32;

/// One `key: value` of an option map, with the tokens, for errors.
struct MapEntry {
    key: Literal,
    key_token: Token,
    value: Literal,
    value_token: Token,
}

/// A constant or map given as an option value in `WITH`.
enum OptionValue {
    Constant(Literal),
    Map(Vec<MapEntry>),
    /// `CLUSTERING ORDER BY (...)`, which sits among the options.
    ClusteringOrder(Vec<(Ident, Order)>),
}

/// One `name = value` of a `WITH` clause.
struct RawOption {
    name: Ident,
    value: OptionValue,
    value_token: Token,
}

/// The options of `CREATE KEYSPACE` / `ALTER KEYSPACE`, each when given.
#[derive(Default)]
struct KeyspaceOptions {
    replication: Option<Replication>,
    durable_writes: Option<bool>,
    sloppy_quorum: Option<bool>,
}

fn error_at(kind: ErrorKind, token: &Token, message: impl Into<String>) -> ParseError {
    ParseError {
        kind,
        span: token.span,
        message: message.into(),
        token: token.text.clone(),
    }
}

fn error_at_ident(kind: ErrorKind, ident: &Ident, message: impl Into<String>) -> ParseError {
    ParseError {
        kind,
        span: ident.span.unwrap_or_default(),
        message: message.into(),
        token: ident.name.clone(),
    }
}

impl<'t> Parser<'t> {
    fn new(tokens: &'t [Token]) -> Parser<'t> {
        Parser {
            tokens,
            pos: 0,
            expected: Vec::new(),
            expected_at: usize::MAX,
            depth: 0,
        }
    }

    // ----- token helpers -----

    fn peek(&self) -> &'t Token {
        self.peek_at(0)
    }

    fn peek_at(&self, ahead: usize) -> &'t Token {
        let tokens: &'t [Token] = self.tokens;
        let last = tokens.len().saturating_sub(1);
        // `tokenize` always ends with an Eof token, so `last` is valid.
        &tokens[(self.pos + ahead).min(last)]
    }

    fn advance(&mut self) -> &'t Token {
        let t = self.peek();
        if t.kind != TokenKind::Eof {
            self.pos += 1;
        }
        t
    }

    fn at(&self, kind: &TokenKind) -> bool {
        &self.peek().kind == kind
    }

    fn at_kw(&self, kw: &str) -> bool {
        self.peek().is_keyword(kw)
    }

    fn note(&mut self, what: &'static str) {
        if self.expected_at != self.pos {
            self.expected.clear();
            self.expected_at = self.pos;
        }
        if !self.expected.contains(&what) {
            self.expected.push(what);
        }
    }

    fn eat(&mut self, kind: TokenKind) -> bool {
        if self.at(&kind) {
            self.advance();
            true
        } else {
            self.note(kind.describe());
            false
        }
    }

    fn eat_kw(&mut self, kw: &'static str) -> bool {
        if self.at_kw(kw) {
            self.advance();
            true
        } else {
            self.note(kw);
            false
        }
    }

    /// Eats a multi-word phrase (`GROUP BY`) if its first word is next.
    fn eat_phrase(&mut self, words: &[&'static str], display: &'static str) -> PResult<bool> {
        let Some((first, rest)) = words.split_first() else {
            return Ok(false);
        };
        if !self.at_kw(first) {
            self.note(display);
            return Ok(false);
        }
        self.advance();
        for w in rest {
            self.expect_kw(w)?;
        }
        Ok(true)
    }

    fn expect(&mut self, kind: TokenKind) -> PResult<&'t Token> {
        if self.eat(kind) {
            Ok(&self.tokens[self.pos - 1])
        } else {
            Err(self.mismatch())
        }
    }

    fn expect_kw(&mut self, kw: &'static str) -> PResult<&'t Token> {
        if self.eat_kw(kw) {
            Ok(&self.tokens[self.pos - 1])
        } else {
            Err(self.mismatch())
        }
    }

    /// "mismatched input 'X' expecting ..." at the current token.
    fn mismatch(&self) -> ParseError {
        let tok = self.peek();
        let expected: &[&str] = if self.expected_at == self.pos {
            &self.expected
        } else {
            &[]
        };
        let message = match expected {
            [] => format!("no viable alternative at input '{}'", tok.text),
            [one] => format!("mismatched input '{}' expecting {}", tok.text, one),
            many => format!(
                "mismatched input '{}' expecting one of {}",
                tok.text,
                many.join(", ")
            ),
        };
        error_at(ErrorKind::Syntax, tok, message)
    }

    fn no_viable(&self) -> ParseError {
        let tok = self.peek();
        let mut message = format!("no viable alternative at input '{}'", tok.text);
        if let TokenKind::Word(w) = &tok.kind {
            if is_reserved_keyword(w) {
                message.push_str(&format!(
                    " ({} is a reserved keyword; quote it as \"{}\" to use it as a name)",
                    w,
                    w.to_ascii_lowercase()
                ));
            }
        }
        error_at(ErrorKind::Syntax, tok, message)
    }

    fn unsupported(&self, token: &Token, what: &str) -> ParseError {
        error_at(
            ErrorKind::Unsupported,
            token,
            format!("{what} not supported by ringdb"),
        )
    }

    // ----- names -----

    fn ident(&mut self) -> PResult<Ident> {
        let tok = self.peek();
        match &tok.kind {
            TokenKind::Word(w) if !is_reserved_keyword(w) => {
                self.advance();
                Ok(Ident {
                    name: w.to_ascii_lowercase(),
                    span: Some(tok.span),
                })
            }
            TokenKind::QuotedIdent(q) => {
                self.advance();
                Ok(Ident {
                    name: q.clone(),
                    span: Some(tok.span),
                })
            }
            TokenKind::Word(_) => Err(self.no_viable()),
            _ => {
                self.note("identifier");
                Err(self.mismatch())
            }
        }
    }

    fn qualified_name(&mut self) -> PResult<QualifiedName> {
        let first = self.ident()?;
        if self.eat(TokenKind::Dot) {
            let name = self.ident()?;
            Ok(QualifiedName {
                keyspace: Some(first),
                name,
            })
        } else {
            Ok(QualifiedName {
                keyspace: None,
                name: first,
            })
        }
    }

    fn ident_list_in_parens(&mut self) -> PResult<Vec<Ident>> {
        self.expect(TokenKind::LParen)?;
        let mut out = vec![self.ident()?];
        while self.eat(TokenKind::Comma) {
            out.push(self.ident()?);
        }
        self.expect(TokenKind::RParen)?;
        Ok(out)
    }

    // ----- terms -----

    fn term(&mut self) -> PResult<Term> {
        let tok = self.peek();
        let lit = match &tok.kind {
            TokenKind::Integer(i) => Literal::Integer(*i),
            TokenKind::Float(f) => Literal::Float(*f),
            TokenKind::Str(s) => Literal::String(s.clone()),
            TokenKind::Blob(b) => Literal::Blob(b.clone()),
            TokenKind::Uuid(u) => Literal::Uuid(*u),
            TokenKind::QMark => {
                self.advance();
                return Ok(Term::BindMarker(None));
            }
            TokenKind::Colon => {
                self.advance();
                let name = self.ident()?;
                return Ok(Term::BindMarker(Some(name.name)));
            }
            TokenKind::Minus => {
                let next = self.peek_at(1);
                let value = if next.is_keyword("nan") {
                    f64::NAN
                } else if next.is_keyword("infinity") {
                    f64::NEG_INFINITY
                } else {
                    self.advance();
                    self.note("NaN");
                    self.note("Infinity");
                    return Err(self.mismatch());
                };
                self.advance();
                self.advance();
                return Ok(Term::Literal(Literal::Float(value)));
            }
            TokenKind::Word(w) if self.peek_at(1).kind == TokenKind::LParen => {
                let w = w.clone();
                return self.function_call(tok, &w, false);
            }
            TokenKind::QuotedIdent(q) if self.peek_at(1).kind == TokenKind::LParen => {
                let q = q.clone();
                return self.function_call(tok, &q, true);
            }
            TokenKind::Word(w) => match w.to_ascii_lowercase().as_str() {
                "true" => Literal::Bool(true),
                "false" => Literal::Bool(false),
                "null" => Literal::Null,
                "nan" => Literal::Float(f64::NAN),
                "infinity" => Literal::Float(f64::INFINITY),
                _ => return Err(self.no_viable()),
            },
            _ => {
                self.note("a value");
                return Err(self.mismatch());
            }
        };
        self.advance();
        Ok(Term::Literal(lit))
    }

    fn function_call(&mut self, name_tok: &'t Token, name: &str, quoted: bool) -> PResult<Term> {
        let function = if quoted {
            Function::ALL
                .into_iter()
                .find(|f| f.name().to_ascii_lowercase() == name)
        } else {
            Function::from_name(name)
        };
        let Some(function) = function else {
            return Err(error_at(
                ErrorKind::Invalid,
                name_tok,
                format!("Unknown function '{name}'"),
            ));
        };
        if self.depth >= MAX_NESTING {
            return Err(error_at(
                ErrorKind::Invalid,
                name_tok,
                format!("function calls are nested more than {MAX_NESTING} deep"),
            ));
        }
        self.advance();
        self.expect(TokenKind::LParen)?;
        self.depth += 1;
        let args = self.call_args();
        self.depth -= 1;
        let args = args?;
        if args.len() != function.arity() {
            return Err(error_at(
                ErrorKind::Invalid,
                name_tok,
                format!(
                    "Invalid number of arguments in call to function {}: {} required but {} provided",
                    function.name(),
                    function.arity(),
                    args.len()
                ),
            ));
        }
        Ok(Term::FunctionCall {
            name: Ident {
                name: function.name().to_ascii_lowercase(),
                span: Some(name_tok.span),
            },
            args,
        })
    }

    fn call_args(&mut self) -> PResult<Vec<Term>> {
        let mut args = Vec::new();
        if !self.eat(TokenKind::RParen) {
            args.push(self.term()?);
            while self.eat(TokenKind::Comma) {
                args.push(self.term()?);
            }
            self.expect(TokenKind::RParen)?;
        }
        Ok(args)
    }

    /// A constant (for option values and map entries).
    fn constant(&mut self) -> PResult<(Literal, &'t Token)> {
        let tok = self.peek();
        match self.term()? {
            Term::Literal(l) => Ok((l, tok)),
            _ => Err(error_at(
                ErrorKind::Syntax,
                tok,
                format!("mismatched input '{}' expecting a constant", tok.text),
            )),
        }
    }

    /// An integer literal or a bind marker (TTL, TIMESTAMP, LIMIT values).
    fn int_value(&mut self) -> PResult<(Term, &'t Token)> {
        let tok = self.peek();
        match &tok.kind {
            TokenKind::Integer(i) => {
                self.advance();
                Ok((Term::Literal(Literal::Integer(*i)), tok))
            }
            TokenKind::QMark | TokenKind::Colon => Ok((self.term()?, tok)),
            _ => {
                self.note("integer");
                self.note("bind marker");
                Err(self.mismatch())
            }
        }
    }

    fn limit_value(&mut self, what: &str) -> PResult<Term> {
        let (term, tok) = self.int_value()?;
        if let Term::Literal(Literal::Integer(i)) = term {
            if i <= 0 {
                return Err(error_at(
                    ErrorKind::Invalid,
                    tok,
                    format!("{what} must be strictly positive"),
                ));
            }
            if i > i128::from(i32::MAX) {
                return Err(error_at(
                    ErrorKind::Invalid,
                    tok,
                    format!("{what} must be at most {}", i32::MAX),
                ));
            }
        }
        Ok(term)
    }

    fn ttl_value(&mut self) -> PResult<Term> {
        let (term, tok) = self.int_value()?;
        if let Term::Literal(Literal::Integer(i)) = term {
            if i < 0 {
                return Err(error_at(
                    ErrorKind::Invalid,
                    tok,
                    format!("A TTL must be greater or equal to 0, but was {i}"),
                ));
            }
            if i > MAX_TTL {
                return Err(error_at(
                    ErrorKind::Invalid,
                    tok,
                    format!("ttl is too large. requested ({i}) maximum ({MAX_TTL})"),
                ));
            }
        }
        Ok(term)
    }

    fn timestamp_value(&mut self) -> PResult<Term> {
        let (term, tok) = self.int_value()?;
        if let Term::Literal(Literal::Integer(i)) = term {
            if i64::try_from(i).is_err() {
                return Err(error_at(
                    ErrorKind::Invalid,
                    tok,
                    format!("Invalid TIMESTAMP value {i}: out of the bigint range"),
                ));
            }
        }
        Ok(term)
    }

    // ----- statements -----

    fn statement(&mut self) -> PResult<Statement> {
        let tok = self.peek();
        let TokenKind::Word(w) = &tok.kind else {
            return Err(self.no_viable());
        };
        match w.to_ascii_uppercase().as_str() {
            "SELECT" => self.select().map(Statement::Select),
            "INSERT" => self.insert().map(Statement::Insert),
            "UPDATE" => self.update().map(Statement::Update),
            "DELETE" => self.delete().map(Statement::Delete),
            "BEGIN" => self.batch().map(Statement::Batch),
            "CREATE" => self.create(),
            "ALTER" => self.alter(),
            "DROP" => self.drop(),
            "USE" => {
                self.advance();
                Ok(Statement::Use(self.ident()?))
            }
            "TRUNCATE" => {
                self.advance();
                if !self.eat_kw("TABLE") {
                    self.eat_kw("COLUMNFAMILY");
                }
                Ok(Statement::Truncate(Truncate {
                    name: self.qualified_name()?,
                }))
            }
            _ => Err(self.no_viable()),
        }
    }

    fn if_not_exists(&mut self) -> PResult<bool> {
        if self.eat_kw("IF") {
            self.expect_kw("NOT")?;
            self.expect_kw("EXISTS")?;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    fn if_exists(&mut self) -> PResult<bool> {
        if self.eat_kw("IF") {
            self.expect_kw("EXISTS")?;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    fn create(&mut self) -> PResult<Statement> {
        self.advance();
        if self.eat_kw("KEYSPACE") || self.eat_kw("SCHEMA") {
            let if_not_exists = self.if_not_exists()?;
            let name = self.ident()?;
            self.expect_kw("WITH")?;
            let options = self.options()?;
            let KeyspaceOptions {
                replication,
                durable_writes,
                sloppy_quorum,
            } = self.keyspace_options(&name, options)?;
            let Some(replication) = replication else {
                return Err(error_at_ident(
                    ErrorKind::Invalid,
                    &name,
                    "Missing mandatory option 'replication'",
                ));
            };
            return Ok(Statement::CreateKeyspace(CreateKeyspace {
                if_not_exists,
                name,
                replication,
                durable_writes,
                sloppy_quorum,
            }));
        }
        if self.eat_kw("TABLE") || self.eat_kw("COLUMNFAMILY") {
            return self.create_table().map(Statement::CreateTable);
        }
        Err(self.unsupported_object("CREATE"))
    }

    /// The error for `CREATE INDEX` and friends.
    fn unsupported_object(&mut self, verb: &str) -> ParseError {
        let tok = self.peek();
        const OBJECTS: &[&str] = &[
            "INDEX",
            "TYPE",
            "FUNCTION",
            "AGGREGATE",
            "MATERIALIZED",
            "TRIGGER",
            "ROLE",
            "USER",
            "CUSTOM",
            "OR",
        ];
        if OBJECTS.iter().any(|o| tok.is_keyword(o)) {
            return self.unsupported(tok, &format!("{verb} {} is", tok.text.to_ascii_uppercase()));
        }
        self.note("KEYSPACE");
        self.note("TABLE");
        self.mismatch()
    }

    fn alter(&mut self) -> PResult<Statement> {
        self.advance();
        if self.eat_kw("KEYSPACE") || self.eat_kw("SCHEMA") {
            let if_exists = self.if_exists()?;
            let name = self.ident()?;
            self.expect_kw("WITH")?;
            let options = self.options()?;
            let KeyspaceOptions {
                replication,
                durable_writes,
                sloppy_quorum,
            } = self.keyspace_options(&name, options)?;
            return Ok(Statement::AlterKeyspace(AlterKeyspace {
                if_exists,
                name,
                replication,
                durable_writes,
                sloppy_quorum,
            }));
        }
        if self.eat_kw("TABLE") || self.eat_kw("COLUMNFAMILY") {
            let name = self.qualified_name()?;
            let op = if self.eat_kw("ADD") {
                let defs = if self.at(&TokenKind::LParen) {
                    self.advance();
                    let mut defs = vec![self.column_def()?];
                    while self.eat(TokenKind::Comma) {
                        defs.push(self.column_def()?);
                    }
                    self.expect(TokenKind::RParen)?;
                    defs
                } else {
                    vec![self.column_def()?]
                };
                let mut seen = HashSet::new();
                for d in &defs {
                    if !seen.insert(d.name.name.clone()) {
                        return Err(error_at_ident(
                            ErrorKind::Invalid,
                            &d.name,
                            format!("Multiple definition of identifier {}", d.name.name),
                        ));
                    }
                }
                AlterTableOp::Add(defs)
            } else if self.eat_kw("DROP") {
                let cols = if self.at(&TokenKind::LParen) {
                    self.ident_list_in_parens()?
                } else {
                    vec![self.ident()?]
                };
                check_no_duplicates(&cols)?;
                AlterTableOp::Drop(cols)
            } else if self.at_kw("WITH") {
                let with = self.advance();
                let options = self.options()?;
                if let Some(o) = options
                    .iter()
                    .find(|o| matches!(o.value, OptionValue::ClusteringOrder(_)))
                {
                    return Err(error_at(
                        ErrorKind::Invalid,
                        &o.value_token,
                        "CLUSTERING ORDER of an existing table cannot be changed",
                    ));
                }
                let opts = self.table_options(options)?;
                if opts.is_empty() {
                    return Err(error_at(ErrorKind::Syntax, with, "expecting an option"));
                }
                AlterTableOp::With(opts)
            } else {
                self.note("WITH");
                if self.at_kw("ALTER") || self.at_kw("RENAME") {
                    let tok = self.peek();
                    return Err(self.unsupported(
                        tok,
                        &format!("ALTER TABLE ... {} is", tok.text.to_ascii_uppercase()),
                    ));
                }
                return Err(self.mismatch());
            };
            return Ok(Statement::AlterTable(AlterTable { name, op }));
        }
        Err(self.unsupported_object("ALTER"))
    }

    fn drop(&mut self) -> PResult<Statement> {
        self.advance();
        if self.eat_kw("KEYSPACE") || self.eat_kw("SCHEMA") {
            let if_exists = self.if_exists()?;
            let name = self.ident()?;
            return Ok(Statement::DropKeyspace(DropKeyspace { if_exists, name }));
        }
        if self.eat_kw("TABLE") || self.eat_kw("COLUMNFAMILY") {
            let if_exists = self.if_exists()?;
            let name = self.qualified_name()?;
            return Ok(Statement::DropTable(DropTable { if_exists, name }));
        }
        Err(self.unsupported_object("DROP"))
    }

    // ----- WITH options -----

    fn options(&mut self) -> PResult<Vec<RawOption>> {
        let mut out = vec![self.option()?];
        while self.eat_kw("AND") {
            out.push(self.option()?);
        }
        let mut seen = HashSet::new();
        for o in &out {
            if !seen.insert(o.name.name.clone()) {
                return Err(error_at_ident(
                    ErrorKind::Invalid,
                    &o.name,
                    format!("Multiple definition for property {}", o.name.name),
                ));
            }
        }
        Ok(out)
    }

    fn option(&mut self) -> PResult<RawOption> {
        if self.at_kw("CLUSTERING") {
            // CLUSTERING ORDER BY (c ASC, ...): kept as a pseudo-option.
            let start = self.advance();
            self.expect_kw("ORDER")?;
            self.expect_kw("BY")?;
            self.expect(TokenKind::LParen)?;
            let mut entries = Vec::new();
            loop {
                let col = self.ident()?;
                let order = if self.eat_kw("DESC") {
                    Order::Desc
                } else {
                    self.eat_kw("ASC");
                    Order::Asc
                };
                entries.push((col, order));
                if !self.eat(TokenKind::Comma) {
                    break;
                }
            }
            self.expect(TokenKind::RParen)?;
            return Ok(RawOption {
                name: Ident {
                    name: "CLUSTERING ORDER".into(),
                    span: Some(start.span),
                },
                value: OptionValue::ClusteringOrder(entries),
                value_token: start.clone(),
            });
        }
        if self.at_kw("COMPACT") {
            let tok = self.peek();
            return Err(self.unsupported(tok, "COMPACT STORAGE is"));
        }
        let name = self.ident()?;
        self.expect(TokenKind::Eq)?;
        let value_token = self.peek().clone();
        let value = if self.eat(TokenKind::LBrace) {
            let mut entries: Vec<MapEntry> = Vec::new();
            if !self.eat(TokenKind::RBrace) {
                loop {
                    let (key, ktok) = self.constant()?;
                    if entries.iter().any(|e| e.key == key) {
                        return Err(error_at(
                            ErrorKind::Invalid,
                            ktok,
                            format!("Multiple definition for key {}", ktok.text),
                        ));
                    }
                    self.expect(TokenKind::Colon)?;
                    let (value, vtok) = self.constant()?;
                    entries.push(MapEntry {
                        key,
                        key_token: ktok.clone(),
                        value,
                        value_token: vtok.clone(),
                    });
                    if !self.eat(TokenKind::Comma) {
                        break;
                    }
                }
                self.expect(TokenKind::RBrace)?;
            }
            OptionValue::Map(entries)
        } else {
            OptionValue::Constant(self.constant()?.0)
        };
        Ok(RawOption {
            name,
            value,
            value_token,
        })
    }

    fn keyspace_options(
        &self,
        keyspace: &Ident,
        options: Vec<RawOption>,
    ) -> PResult<KeyspaceOptions> {
        let mut out = KeyspaceOptions::default();
        for o in options {
            if let OptionValue::ClusteringOrder(_) = o.value {
                return Err(error_at(
                    ErrorKind::Invalid,
                    &o.value_token,
                    "CLUSTERING ORDER is a table option, not a keyspace option",
                ));
            }
            match o.name.name.as_str() {
                "replication" => {
                    let OptionValue::Map(map) = o.value else {
                        return Err(error_at(
                            ErrorKind::Invalid,
                            &o.value_token,
                            "Invalid value for property 'replication': expecting a map {'class': ...}",
                        ));
                    };
                    out.replication = Some(replication_from_map(keyspace, &o.value_token, &map)?);
                }
                "durable_writes" => out.durable_writes = Some(bool_option(&o)?),
                "sloppy_quorum" => out.sloppy_quorum = Some(bool_option(&o)?),
                _ => return Err(unknown_property(&o.name)),
            }
        }
        Ok(out)
    }

    fn table_options(&self, options: Vec<RawOption>) -> PResult<TableOptions> {
        let mut out = TableOptions::default();
        for o in options {
            if let OptionValue::ClusteringOrder(entries) = o.value {
                out.clustering_order = entries;
                continue;
            }
            out.positions
                .insert(o.name.name.clone(), o.value_token.span);
            match o.name.name.as_str() {
                "default_time_to_live" => {
                    out.default_time_to_live = Some(seconds_option(&o, MAX_TTL)?);
                }
                "gc_grace_seconds" => {
                    out.gc_grace_seconds = Some(seconds_option(&o, i128::from(i32::MAX))?);
                }
                "comment" => match o.value {
                    OptionValue::Constant(Literal::String(s)) => out.comment = Some(s),
                    _ => {
                        return Err(error_at(
                            ErrorKind::Invalid,
                            &o.value_token,
                            "Invalid value for property 'comment': expecting a string",
                        ))
                    }
                },
                "compaction" => {
                    let OptionValue::Map(map) = o.value else {
                        return Err(error_at(
                            ErrorKind::Invalid,
                            &o.value_token,
                            "Invalid value for property 'compaction': expecting a map {'class': ...}",
                        ));
                    };
                    out.compaction = Some(compaction_from_map(&o.value_token, &map)?);
                }
                _ => return Err(unknown_property(&o.name)),
            }
        }
        Ok(out)
    }

    // ----- CREATE TABLE -----

    fn column_def(&mut self) -> PResult<ColumnDef> {
        let name = self.ident()?;
        let data_type = self.data_type()?;
        if self.at_kw("STATIC") {
            let tok = self.peek();
            return Err(self.unsupported(tok, "static columns are"));
        }
        Ok(ColumnDef { name, data_type })
    }

    fn data_type(&mut self) -> PResult<DataType> {
        let tok = self.peek();
        let name = match &tok.kind {
            TokenKind::Word(w) => w.clone(),
            TokenKind::QuotedIdent(q) => q.clone(),
            _ => {
                self.note("a type");
                return Err(self.mismatch());
            }
        };
        let lower = name.to_ascii_lowercase();
        if self.peek_at(1).kind == TokenKind::Lt
            || ["list", "set", "map", "frozen", "tuple", "vector"].contains(&lower.as_str())
        {
            return Err(self.unsupported(tok, "collection and tuple types are"));
        }
        let Some(t) = DataType::from_name(&name) else {
            if [
                "counter", "varint", "decimal", "tinyint", "time", "duration", "inet",
            ]
            .contains(&lower.as_str())
            {
                return Err(self.unsupported(tok, &format!("the type {lower} is")));
            }
            return Err(error_at(
                ErrorKind::Invalid,
                tok,
                format!("Unknown type {name}"),
            ));
        };
        self.advance();
        Ok(t)
    }

    fn create_table(&mut self) -> PResult<CreateTable> {
        let if_not_exists = self.if_not_exists()?;
        let name = self.qualified_name()?;
        let open = self.expect(TokenKind::LParen)?;
        let mut columns: Vec<ColumnDef> = Vec::new();
        let mut keys: Vec<(PrimaryKey, &Token)> = Vec::new();
        loop {
            if self.at_kw("PRIMARY") {
                let tok = self.advance();
                self.expect_kw("KEY")?;
                self.expect(TokenKind::LParen)?;
                let partition = if self.at(&TokenKind::LParen) {
                    self.ident_list_in_parens()?
                } else {
                    vec![self.ident()?]
                };
                let mut clustering = Vec::new();
                while self.eat(TokenKind::Comma) {
                    clustering.push(self.ident()?);
                }
                self.expect(TokenKind::RParen)?;
                keys.push((
                    PrimaryKey {
                        partition,
                        clustering,
                    },
                    tok,
                ));
            } else {
                let def = self.column_def()?;
                if self.at_kw("PRIMARY") {
                    let tok = self.advance();
                    self.expect_kw("KEY")?;
                    keys.push((
                        PrimaryKey {
                            partition: vec![def.name.clone()],
                            clustering: vec![],
                        },
                        tok,
                    ));
                }
                if columns.iter().any(|c| c.name == def.name) {
                    return Err(error_at_ident(
                        ErrorKind::Invalid,
                        &def.name,
                        format!("Multiple definition of identifier {}", def.name.name),
                    ));
                }
                columns.push(def);
            }
            if !self.eat(TokenKind::Comma) {
                break;
            }
            if self.at(&TokenKind::RParen) {
                break; // a trailing comma, as Cassandra allows
            }
        }
        self.expect(TokenKind::RParen)?;
        let primary_key = match keys.len() {
            0 => {
                return Err(error_at(
                    ErrorKind::Invalid,
                    open,
                    format!(
                        "No PRIMARY KEY specified for table '{}' (exactly one required)",
                        name.name.name
                    ),
                ))
            }
            1 => keys.remove(0).0,
            _ => {
                return Err(error_at(
                    ErrorKind::Invalid,
                    keys[1].1,
                    "Multiple PRIMARY KEYs specified (exactly one required)",
                ))
            }
        };
        let mut seen = HashSet::new();
        for k in primary_key.partition.iter().chain(&primary_key.clustering) {
            if !columns.iter().any(|c| &c.name == k) {
                return Err(error_at_ident(
                    ErrorKind::Invalid,
                    k,
                    format!("Unknown definition {} referenced in PRIMARY KEY", k.name),
                ));
            }
            if !seen.insert(k.name.clone()) {
                return Err(error_at_ident(
                    ErrorKind::Invalid,
                    k,
                    format!("Duplicate column {} in PRIMARY KEY", k.name),
                ));
            }
        }
        let options = if self.eat_kw("WITH") {
            let raw = self.options()?;
            self.table_options(raw)?
        } else {
            TableOptions::default()
        };
        for (i, (col, _)) in options.clustering_order.iter().enumerate() {
            match primary_key.clustering.iter().position(|c| c == col) {
                None => {
                    return Err(error_at_ident(
                        ErrorKind::Invalid,
                        col,
                        "Only clustering key columns can be defined in CLUSTERING ORDER directive",
                    ))
                }
                Some(p) if p != i => {
                    let message = match primary_key.clustering.get(i) {
                        Some(expected) if p > i => format!(
                            "The order of columns in the CLUSTERING ORDER directive must match that of the clustering columns ({} must appear before {})",
                            expected.name, col.name
                        ),
                        _ => format!("Multiple definition of {} in CLUSTERING ORDER", col.name),
                    };
                    return Err(error_at_ident(ErrorKind::Invalid, col, message));
                }
                Some(_) => {}
            }
        }
        Ok(CreateTable {
            if_not_exists,
            name,
            columns,
            primary_key,
            options,
        })
    }

    // ----- DML -----

    /// Rejects `IF ...` (lightweight transactions) at the IF token.
    fn reject_lwt(&mut self, what: &str) -> PResult<()> {
        if self.at_kw("IF") {
            let tok = self.peek();
            return Err(error_at(
                ErrorKind::Unsupported,
                tok,
                format!("lightweight transactions ({what}) are not supported by ringdb"),
            ));
        }
        self.note("IF");
        Ok(())
    }

    fn using(&mut self, allow_ttl: bool) -> PResult<Using> {
        let mut params = Vec::new();
        if !self.eat_kw("USING") {
            return Ok(Using(params));
        }
        loop {
            let tok = self.peek();
            if allow_ttl && self.eat_kw("TTL") {
                if params.iter().any(|p| matches!(p, UsingParam::Ttl(_))) {
                    return Err(error_at(
                        ErrorKind::Invalid,
                        tok,
                        "TTL is given more than once",
                    ));
                }
                params.push(UsingParam::Ttl(self.ttl_value()?));
            } else if self.eat_kw("TIMESTAMP") {
                if params.iter().any(|p| matches!(p, UsingParam::Timestamp(_))) {
                    return Err(error_at(
                        ErrorKind::Invalid,
                        tok,
                        "TIMESTAMP is given more than once",
                    ));
                }
                params.push(UsingParam::Timestamp(self.timestamp_value()?));
            } else {
                return Err(self.mismatch());
            }
            if !self.eat_kw("AND") {
                return Ok(Using(params));
            }
        }
    }

    fn insert(&mut self) -> PResult<Insert> {
        self.advance();
        self.expect_kw("INTO")?;
        let table = self.qualified_name()?;
        if self.at_kw("JSON") {
            let tok = self.peek();
            return Err(self.unsupported(tok, "INSERT JSON is"));
        }
        let columns = self.ident_list_in_parens()?;
        check_no_duplicates(&columns)?;
        let values_tok = self.expect_kw("VALUES")?;
        self.expect(TokenKind::LParen)?;
        let mut values = vec![self.term()?];
        while self.eat(TokenKind::Comma) {
            values.push(self.term()?);
        }
        self.expect(TokenKind::RParen)?;
        if values.len() != columns.len() {
            return Err(error_at(
                ErrorKind::Invalid,
                values_tok,
                format!(
                    "Unmatched column names/values: {} columns but {} values",
                    columns.len(),
                    values.len()
                ),
            ));
        }
        self.reject_lwt("IF NOT EXISTS")?;
        let using = self.using(true)?;
        self.reject_lwt("IF NOT EXISTS")?;
        Ok(Insert {
            table,
            columns,
            values,
            using,
        })
    }

    fn update(&mut self) -> PResult<Update> {
        self.advance();
        let table = self.qualified_name()?;
        let using = self.using(true)?;
        self.expect_kw("SET")?;
        let mut assignments: Vec<Assignment> = Vec::new();
        loop {
            let column = self.ident()?;
            if assignments.iter().any(|a| a.column == column) {
                return Err(error_at_ident(
                    ErrorKind::Invalid,
                    &column,
                    format!("Multiple assignments to column {}", column.name),
                ));
            }
            if self.at(&TokenKind::LBracket) || self.at(&TokenKind::Dot) {
                let tok = self.peek();
                return Err(self.unsupported(tok, "collection and UDT element updates are"));
            }
            self.expect(TokenKind::Eq)?;
            let value = self.term()?;
            if self.at(&TokenKind::Plus) || self.at(&TokenKind::Minus) {
                let tok = self.peek();
                return Err(self.unsupported(tok, "counter and collection arithmetic is"));
            }
            assignments.push(Assignment { column, value });
            if !self.eat(TokenKind::Comma) {
                break;
            }
        }
        self.expect_kw("WHERE")?;
        let where_clause = self.relations()?;
        self.reject_lwt("IF conditions")?;
        Ok(Update {
            table,
            using,
            assignments,
            where_clause,
        })
    }

    fn delete(&mut self) -> PResult<Delete> {
        self.advance();
        let mut columns = Vec::new();
        if !self.at_kw("FROM") {
            columns.push(self.ident()?);
            while self.eat(TokenKind::Comma) {
                columns.push(self.ident()?);
            }
            check_no_duplicates(&columns)?;
        }
        if self.at(&TokenKind::LBracket) || self.at(&TokenKind::Dot) {
            let tok = self.peek();
            return Err(self.unsupported(tok, "deleting collection and UDT elements is"));
        }
        self.expect_kw("FROM")?;
        let table = self.qualified_name()?;
        let timestamp = self.using(false)?.timestamp().cloned();
        self.expect_kw("WHERE")?;
        let where_clause = self.relations()?;
        self.reject_lwt("IF conditions")?;
        Ok(Delete {
            columns,
            table,
            timestamp,
            where_clause,
        })
    }

    fn batch(&mut self) -> PResult<Batch> {
        self.advance();
        let kind = if self.eat_kw("UNLOGGED") {
            BatchKind::Unlogged
        } else if self.at_kw("COUNTER") {
            let tok = self.peek();
            return Err(self.unsupported(tok, "counter batches are"));
        } else {
            self.eat_kw("LOGGED");
            BatchKind::Logged
        };
        self.expect_kw("BATCH")?;
        let using_tok = self.peek();
        let using = self.using(true)?;
        if using.ttl().is_some() {
            return Err(error_at(
                ErrorKind::Invalid,
                using_tok,
                "Global TTL on the BATCH statement is not supported.",
            ));
        }
        let timestamp = using.timestamp().cloned();
        let mut statements = Vec::new();
        loop {
            let tok = self.peek();
            let stmt = if self.at_kw("INSERT") {
                BatchStatement::Insert(self.insert()?)
            } else if self.at_kw("UPDATE") {
                BatchStatement::Update(self.update()?)
            } else if self.at_kw("DELETE") {
                BatchStatement::Delete(self.delete()?)
            } else if self.eat_kw("APPLY") {
                self.expect_kw("BATCH")?;
                break;
            } else {
                self.note("INSERT");
                self.note("UPDATE");
                self.note("DELETE");
                return Err(self.mismatch());
            };
            let has_ts = match &stmt {
                BatchStatement::Insert(i) => i.using.timestamp().is_some(),
                BatchStatement::Update(u) => u.using.timestamp().is_some(),
                BatchStatement::Delete(d) => d.timestamp.is_some(),
            };
            if has_ts && timestamp.is_some() {
                return Err(error_at(
                    ErrorKind::Invalid,
                    tok,
                    "Timestamp must be set either on BATCH or individual statements",
                ));
            }
            statements.push(stmt);
            while self.eat(TokenKind::Semicolon) {}
        }
        Ok(Batch {
            kind,
            timestamp,
            statements,
        })
    }

    fn relations(&mut self) -> PResult<Vec<Relation>> {
        let mut out = vec![self.relation()?];
        while self.eat_kw("AND") {
            out.push(self.relation()?);
        }
        Ok(out)
    }

    fn relation(&mut self) -> PResult<Relation> {
        let tok = self.peek();
        if tok.kind == TokenKind::LParen {
            return Err(self.unsupported(tok, "multi-column relations are"));
        }
        if tok.is_keyword("TOKEN") && self.peek_at(1).kind == TokenKind::LParen {
            return Err(self.unsupported(tok, "token() restrictions are"));
        }
        let column = self.ident()?;
        let op_tok = self.peek();
        let op = match op_tok.kind {
            TokenKind::Eq => Operator::Eq,
            TokenKind::Lt => Operator::Lt,
            TokenKind::Le => Operator::Le,
            TokenKind::Gt => Operator::Gt,
            TokenKind::Ge => Operator::Ge,
            TokenKind::Ne => {
                return Err(error_at(
                    ErrorKind::Unsupported,
                    op_tok,
                    "Unsupported \"!=\" relation",
                ))
            }
            _ => {
                if self.eat_kw("IN") {
                    return self.in_relation(column);
                }
                if op_tok.is_keyword("CONTAINS") || op_tok.is_keyword("LIKE") {
                    return Err(self.unsupported(
                        op_tok,
                        &format!("{} restrictions are", op_tok.text.to_ascii_uppercase()),
                    ));
                }
                for k in ["'='", "'<'", "'<='", "'>'", "'>='"] {
                    self.note(k);
                }
                return Err(self.mismatch());
            }
        };
        self.advance();
        let value = self.term()?;
        Ok(Relation::Compare { column, op, value })
    }

    fn in_relation(&mut self, column: Ident) -> PResult<Relation> {
        let values = match self.peek().kind {
            TokenKind::QMark | TokenKind::Colon => match self.term()? {
                Term::BindMarker(m) => InValues::Marker(m),
                _ => return Err(self.no_viable()),
            },
            _ => {
                self.expect(TokenKind::LParen)?;
                let mut list = Vec::new();
                if !self.eat(TokenKind::RParen) {
                    list.push(self.term()?);
                    while self.eat(TokenKind::Comma) {
                        list.push(self.term()?);
                    }
                    self.expect(TokenKind::RParen)?;
                }
                InValues::List(list)
            }
        };
        Ok(Relation::In { column, values })
    }

    // ----- SELECT -----

    fn select(&mut self) -> PResult<Select> {
        self.advance();
        // `distinct` is also a valid column name: it is the keyword unless
        // what follows reads as the rest of a selector named `distinct`.
        let next = self.peek_at(1);
        let after = self.peek_at(2);
        let distinct = self.at_kw("DISTINCT")
            && next.kind != TokenKind::Comma
            && !next.is_keyword("FROM")
            && (!next.is_keyword("AS")
                || after.kind == TokenKind::Comma
                || after.is_keyword("FROM")
                || after.is_keyword("AS"));
        if distinct {
            self.advance();
        }
        let selection = if self.eat(TokenKind::Star) {
            Selection::All
        } else {
            let mut items = vec![self.select_item()?];
            while self.eat(TokenKind::Comma) {
                items.push(self.select_item()?);
            }
            Selection::Items(items)
        };
        self.expect_kw("FROM")?;
        let table = self.qualified_name()?;
        let where_clause = if self.eat_kw("WHERE") {
            self.relations()?
        } else {
            Vec::new()
        };
        let mut group_by = Vec::new();
        if self.eat_phrase(&["GROUP", "BY"], "GROUP BY")? {
            group_by.push(self.ident()?);
            while self.eat(TokenKind::Comma) {
                group_by.push(self.ident()?);
            }
        }
        let mut order_by = Vec::new();
        if self.eat_phrase(&["ORDER", "BY"], "ORDER BY")? {
            loop {
                let column = self.ident()?;
                let order = if self.eat_kw("DESC") {
                    Order::Desc
                } else {
                    self.eat_kw("ASC");
                    Order::Asc
                };
                order_by.push(Ordering { column, order });
                if !self.eat(TokenKind::Comma) {
                    break;
                }
            }
        }
        let per_partition_limit =
            if self.eat_phrase(&["PER", "PARTITION", "LIMIT"], "PER PARTITION LIMIT")? {
                Some(self.limit_value("PER PARTITION LIMIT")?)
            } else {
                None
            };
        let limit = if self.eat_kw("LIMIT") {
            Some(self.limit_value("LIMIT")?)
        } else {
            None
        };
        let allow_filtering = self.eat_phrase(&["ALLOW", "FILTERING"], "ALLOW FILTERING")?;
        let with_siblings = self.eat_phrase(&["WITH", "SIBLINGS"], "WITH SIBLINGS")?;
        Ok(Select {
            distinct,
            selection,
            table,
            where_clause,
            group_by,
            order_by,
            per_partition_limit,
            limit,
            allow_filtering,
            with_siblings,
        })
    }

    fn select_item(&mut self) -> PResult<SelectItem> {
        let tok = self.peek();
        let selector = match &tok.kind {
            TokenKind::Word(w) if self.peek_at(1).kind == TokenKind::LParen => {
                let lower = w.to_ascii_lowercase();
                self.advance();
                self.advance();
                let selector = if lower == "count"
                    && (self.at(&TokenKind::Star) || self.at(&TokenKind::Integer(1)))
                {
                    self.advance();
                    Selector::CountStar
                } else if let Some(function) = Aggregate::from_name(&lower) {
                    Selector::Aggregate {
                        function,
                        column: self.ident()?,
                    }
                } else if lower == "writetime" {
                    Selector::WriteTime(self.ident()?)
                } else if lower == "ttl" {
                    Selector::Ttl(self.ident()?)
                } else if Function::from_name(&lower).is_some() {
                    return Err(self.unsupported(tok, "scalar functions in a selection are"));
                } else {
                    return Err(error_at(
                        ErrorKind::Invalid,
                        tok,
                        format!("Unknown function '{}'", w),
                    ));
                };
                self.expect(TokenKind::RParen)?;
                selector
            }
            _ => Selector::Column(self.ident()?),
        };
        let alias = if self.eat_kw("AS") {
            Some(self.ident()?)
        } else {
            None
        };
        Ok(SelectItem { selector, alias })
    }
}

fn unknown_property(name: &Ident) -> ParseError {
    error_at_ident(
        ErrorKind::Invalid,
        name,
        format!("Unknown property '{}'", name.name),
    )
}

fn check_no_duplicates(cols: &[Ident]) -> PResult<()> {
    for (i, c) in cols.iter().enumerate() {
        if cols[..i].contains(c) {
            return Err(error_at_ident(
                ErrorKind::Invalid,
                c,
                format!("The column names contain duplicates: {}", c.name),
            ));
        }
    }
    Ok(())
}

/// A boolean property: `true`/`false`, or the same as a string
/// (case-insensitive), as Cassandra accepts for `durable_writes`.
fn bool_option(o: &RawOption) -> PResult<bool> {
    let b = match &o.value {
        OptionValue::Constant(Literal::Bool(b)) => Some(*b),
        OptionValue::Constant(Literal::String(s)) => match s.to_ascii_lowercase().as_str() {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        },
        _ => None,
    };
    b.ok_or_else(|| {
        error_at(
            ErrorKind::Invalid,
            &o.value_token,
            format!("Invalid boolean value for property '{}'", o.name.name),
        )
    })
}

fn seconds_option(o: &RawOption, max: i128) -> PResult<u32> {
    let name = &o.name.name;
    let OptionValue::Constant(Literal::Integer(i)) = o.value else {
        return Err(error_at(
            ErrorKind::Invalid,
            &o.value_token,
            format!("Invalid value for property '{name}': expecting an integer"),
        ));
    };
    if i < 0 {
        return Err(error_at(
            ErrorKind::Invalid,
            &o.value_token,
            format!("{name} must be greater than or equal to 0 (got {i})"),
        ));
    }
    if i > max {
        return Err(error_at(
            ErrorKind::Invalid,
            &o.value_token,
            format!("{name} must be less than or equal to {max} (got {i})"),
        ));
    }
    u32::try_from(i).map_err(|_| {
        error_at(
            ErrorKind::Invalid,
            &o.value_token,
            format!("{name} is out of range (got {i})"),
        )
    })
}

fn map_string_key(entry: &MapEntry) -> PResult<String> {
    match &entry.key {
        Literal::String(s) => Ok(s.clone()),
        other => Err(error_at(
            ErrorKind::Invalid,
            &entry.key_token,
            format!("Invalid option key {other}: option keys are strings"),
        )),
    }
}

fn replication_factor(entry: &MapEntry, key: &str) -> PResult<u32> {
    let tok = &entry.value_token;
    let n: Option<i128> = match &entry.value {
        Literal::Integer(i) => Some(*i),
        Literal::String(s) => s.parse::<i128>().ok(),
        _ => None,
    };
    let Some(n) = n else {
        return Err(error_at(
            ErrorKind::Invalid,
            tok,
            format!(
                "Replication factor must be numeric; found {} for '{key}'",
                entry.value.display_value()
            ),
        ));
    };
    if n < 0 {
        return Err(error_at(
            ErrorKind::Invalid,
            tok,
            format!("Replication factor must be non-negative; found {n}"),
        ));
    }
    u32::try_from(n).map_err(|_| {
        error_at(
            ErrorKind::Invalid,
            tok,
            format!("Replication factor is too large; found {n}"),
        )
    })
}

/// `replication = {...}`: errors point at the offending key or value, or
/// at the map's `{` (`open`) for what is missing.
fn replication_from_map(keyspace: &Ident, open: &Token, map: &[MapEntry]) -> PResult<Replication> {
    let mut class: Option<(&str, &Token)> = None;
    let mut rest: Vec<(String, &MapEntry)> = Vec::new();
    for entry in map {
        let key = map_string_key(entry)?;
        if key == "class" {
            match &entry.value {
                Literal::String(s) => class = Some((s, &entry.value_token)),
                other => {
                    return Err(error_at(
                        ErrorKind::Invalid,
                        &entry.value_token,
                        format!("Invalid replication strategy class {other}"),
                    ))
                }
            }
        } else {
            rest.push((key, entry));
        }
    }
    let Some((class, class_token)) = class else {
        return Err(error_at(
            ErrorKind::Invalid,
            open,
            "Missing mandatory replication strategy class",
        ));
    };
    let short = class
        .strip_prefix("org.apache.cassandra.locator.")
        .unwrap_or(class);
    match short {
        "SimpleStrategy" => {
            let mut rf = None;
            for (k, entry) in &rest {
                if k == "replication_factor" {
                    rf = Some(replication_factor(entry, k)?);
                } else {
                    return Err(error_at(
                        ErrorKind::Invalid,
                        &entry.key_token,
                        format!(
                            "Unrecognized strategy option {{{k}}} passed to SimpleStrategy for keyspace {}",
                            keyspace.name
                        ),
                    ));
                }
            }
            match rf {
                Some(replication_factor) => Ok(Replication::Simple { replication_factor }),
                None => Err(error_at(
                    ErrorKind::Invalid,
                    open,
                    "SimpleStrategy requires a replication_factor strategy option.",
                )),
            }
        }
        "NetworkTopologyStrategy" => {
            let mut datacenters = Vec::new();
            for (k, entry) in &rest {
                if k == "replication_factor" {
                    return Err(error_at(
                        ErrorKind::Unsupported,
                        &entry.key_token,
                        "NetworkTopologyStrategy takes a replication factor per datacenter ({'class': 'NetworkTopologyStrategy', 'dc1': 3}); a global 'replication_factor' is not supported by ringdb",
                    ));
                }
                datacenters.push((k.clone(), replication_factor(entry, k)?));
            }
            if datacenters.is_empty() {
                return Err(error_at(
                    ErrorKind::Invalid,
                    open,
                    "NetworkTopologyStrategy requires a replication factor for at least one datacenter",
                ));
            }
            Ok(Replication::NetworkTopology { datacenters })
        }
        _ => Err(error_at(
            ErrorKind::Invalid,
            class_token,
            format!("Unable to find replication strategy class '{class}'"),
        )),
    }
}

/// `compaction = {...}`: the class is checked here (errors at its value,
/// or at the `{` when it is missing); the other sub-options are kept with
/// the positions of their values, for the schema's checks.
fn compaction_from_map(open: &Token, map: &[MapEntry]) -> PResult<Compaction> {
    let mut strategy = None;
    let mut options = Vec::new();
    let mut positions = Positions::default();
    for entry in map {
        let key = map_string_key(entry)?;
        let tok = &entry.value_token;
        positions.insert(key.clone(), tok.span);
        if key == "class" {
            let Literal::String(class) = &entry.value else {
                return Err(error_at(
                    ErrorKind::Invalid,
                    tok,
                    format!("Invalid compaction class {}", entry.value),
                ));
            };
            match CompactionStrategy::from_class(class) {
                Some(s) => strategy = Some(s),
                None if class.contains("CompactionStrategy") => {
                    return Err(error_at(
                        ErrorKind::Unsupported,
                        tok,
                        format!("compaction class '{class}' is not supported by ringdb (use SizeTieredCompactionStrategy or TimeWindowCompactionStrategy)"),
                    ))
                }
                None => {
                    return Err(error_at(
                        ErrorKind::Invalid,
                        tok,
                        format!("Unable to find compaction strategy class '{class}'"),
                    ))
                }
            }
        } else {
            options.push((key, entry.value.clone()));
        }
    }
    let Some(strategy) = strategy else {
        return Err(error_at(
            ErrorKind::Invalid,
            open,
            "Missing sub-option 'class' for the 'compaction' option.",
        ));
    };
    Ok(Compaction {
        strategy,
        options,
        positions,
    })
}
