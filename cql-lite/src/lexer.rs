//! The lexer: CQL text to tokens with positions.
//!
//! Keywords are not told apart from identifiers here: an unquoted word is a
//! [`TokenKind::Word`] and the parser matches keywords case-insensitively.
//! Comments (`--`, `//`, `/* */`) and whitespace are skipped.

use crate::error::{ErrorKind, ParseError};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Where a token starts in the source and how long it is.
///
/// `line` and `column` are 1-based; `column` counts characters, not bytes.
/// `offset` and `len` are in bytes, so `&source[offset..offset + len]` is the
/// token's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Span {
    /// Line number, from 1.
    pub line: u32,
    /// Column number in characters, from 1.
    pub column: u32,
    /// Byte offset of the first byte.
    pub offset: usize,
    /// Length in bytes.
    pub len: usize,
}

/// What a token is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TokenKind {
    /// An unquoted identifier or keyword, as written (case kept).
    Word(String),
    /// A double-quoted identifier, unescaped (`"a""b"` is `a"b`).
    QuotedIdent(String),
    /// A string literal, unescaped (`'it''s'` is `it's`; `$$...$$` too).
    Str(String),
    /// An integer literal (with its sign, if written `-12`).
    Integer(i128),
    /// A floating-point literal with a fraction or exponent.
    Float(f64),
    /// A hexadecimal blob literal `0x...`, decoded.
    Blob(Vec<u8>),
    /// A UUID literal written without quotes.
    Uuid(u128),
    /// `?`, an anonymous bind marker.
    QMark,
    /// `(`
    LParen,
    /// `)`
    RParen,
    /// `{`
    LBrace,
    /// `}`
    RBrace,
    /// `[`
    LBracket,
    /// `]`
    RBracket,
    /// `,`
    Comma,
    /// `;`
    Semicolon,
    /// `.`
    Dot,
    /// `*`
    Star,
    /// `=`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `:`
    Colon,
    /// `-` (not followed by a digit)
    Minus,
    /// `+`
    Plus,
    /// End of input.
    Eof,
}

impl TokenKind {
    /// A short description of the kind, for "expecting ..." messages.
    pub fn describe(&self) -> &'static str {
        match self {
            TokenKind::Word(_) => "identifier",
            TokenKind::QuotedIdent(_) => "quoted identifier",
            TokenKind::Str(_) => "string",
            TokenKind::Integer(_) => "integer",
            TokenKind::Float(_) => "float",
            TokenKind::Blob(_) => "blob",
            TokenKind::Uuid(_) => "uuid",
            TokenKind::QMark => "'?'",
            TokenKind::LParen => "'('",
            TokenKind::RParen => "')'",
            TokenKind::LBrace => "'{'",
            TokenKind::RBrace => "'}'",
            TokenKind::LBracket => "'['",
            TokenKind::RBracket => "']'",
            TokenKind::Comma => "','",
            TokenKind::Semicolon => "';'",
            TokenKind::Dot => "'.'",
            TokenKind::Star => "'*'",
            TokenKind::Eq => "'='",
            TokenKind::Ne => "'!='",
            TokenKind::Lt => "'<'",
            TokenKind::Le => "'<='",
            TokenKind::Gt => "'>'",
            TokenKind::Ge => "'>='",
            TokenKind::Colon => "':'",
            TokenKind::Minus => "'-'",
            TokenKind::Plus => "'+'",
            TokenKind::Eof => "<EOF>",
        }
    }
}

/// A token: its kind, where it is, and its text as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Token {
    /// What it is.
    pub kind: TokenKind,
    /// Where it is.
    pub span: Span,
    /// The source text of the token (`<EOF>` for the end).
    pub text: String,
}

impl Token {
    /// True if this token is the unquoted word `kw`, in any case.
    pub fn is_keyword(&self, kw: &str) -> bool {
        matches!(&self.kind, TokenKind::Word(w) if w.eq_ignore_ascii_case(kw))
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Keywords that cannot be used as unquoted identifiers (Cassandra's
/// reserved keywords); a quoted identifier (`"select"`) can use them.
pub const RESERVED_KEYWORDS: &[&str] = &[
    "add",
    "allow",
    "alter",
    "and",
    "apply",
    "asc",
    "authorize",
    "batch",
    "begin",
    "by",
    "columnfamily",
    "create",
    "default",
    "delete",
    "desc",
    "describe",
    "drop",
    "entries",
    "execute",
    "from",
    "full",
    "grant",
    "if",
    "in",
    "index",
    "infinity",
    "insert",
    "into",
    "is",
    "keyspace",
    "limit",
    "materialized",
    "mbean",
    "mbeans",
    "modify",
    "nan",
    "norecursive",
    "not",
    "null",
    "of",
    "on",
    "or",
    "order",
    "primary",
    "rename",
    "replace",
    "revoke",
    "schema",
    "select",
    "set",
    "table",
    "to",
    "token",
    "truncate",
    "unlogged",
    "unset",
    "update",
    "use",
    "using",
    "view",
    "where",
    "with",
];

/// True if `word` is a reserved keyword (in any case).
pub fn is_reserved_keyword(word: &str) -> bool {
    RESERVED_KEYWORDS
        .iter()
        .any(|k| k.eq_ignore_ascii_case(word))
}

/// Splits `source` into tokens, ending with one [`TokenKind::Eof`].
///
/// Fails on an unterminated string, quoted identifier or comment, on a
/// character that starts no token, and on malformed numbers and blobs.
pub fn tokenize(source: &str) -> Result<Vec<Token>, ParseError> {
    let mut lexer = Lexer {
        src: source,
        chars: source.char_indices().collect(),
        pos: 0,
        line: 1,
        column: 1,
    };
    let mut tokens = Vec::new();
    loop {
        let token = lexer.next_token()?;
        let eof = token.kind == TokenKind::Eof;
        tokens.push(token);
        if eof {
            return Ok(tokens);
        }
    }
}

struct Lexer<'a> {
    src: &'a str,
    chars: Vec<(usize, char)>,
    /// Index into `chars`.
    pos: usize,
    line: u32,
    column: u32,
}

/// Position saved at the start of a token.
#[derive(Clone, Copy)]
struct Mark {
    offset: usize,
    line: u32,
    column: u32,
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic()
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

impl<'a> Lexer<'a> {
    fn peek_at(&self, ahead: usize) -> Option<char> {
        self.chars.get(self.pos + ahead).map(|&(_, c)| c)
    }

    fn peek(&self) -> Option<char> {
        self.peek_at(0)
    }

    fn offset(&self) -> usize {
        self.chars
            .get(self.pos)
            .map(|&(o, _)| o)
            .unwrap_or(self.src.len())
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += 1;
        if c == '\n' {
            self.line += 1;
            self.column = 1;
        } else {
            self.column += 1;
        }
        Some(c)
    }

    fn mark(&self) -> Mark {
        Mark {
            offset: self.offset(),
            line: self.line,
            column: self.column,
        }
    }

    fn span_from(&self, m: Mark) -> Span {
        Span {
            line: m.line,
            column: m.column,
            offset: m.offset,
            len: self.offset() - m.offset,
        }
    }

    fn text_from(&self, m: Mark) -> &'a str {
        self.src.get(m.offset..self.offset()).unwrap_or("")
    }

    fn token(&self, m: Mark, kind: TokenKind) -> Token {
        Token {
            kind,
            span: self.span_from(m),
            text: self.text_from(m).to_string(),
        }
    }

    fn error(&self, m: Mark, kind: ErrorKind, message: String) -> ParseError {
        let text = self.text_from(m).to_string();
        ParseError {
            kind,
            span: self.span_from(m),
            message,
            token: text,
        }
    }

    /// Skips whitespace and comments.
    fn skip_trivia(&mut self) -> Result<(), ParseError> {
        loop {
            match (self.peek(), self.peek_at(1)) {
                (Some(c), _) if c.is_whitespace() => {
                    self.bump();
                }
                (Some('-'), Some('-')) | (Some('/'), Some('/')) => {
                    while let Some(c) = self.peek() {
                        if c == '\n' {
                            break;
                        }
                        self.bump();
                    }
                }
                (Some('/'), Some('*')) => {
                    let m = self.mark();
                    self.bump();
                    self.bump();
                    loop {
                        match self.peek() {
                            None => {
                                return Err(self.error(
                                    m,
                                    ErrorKind::Lexical,
                                    "unterminated comment: missing '*/'".into(),
                                ))
                            }
                            Some('*') if self.peek_at(1) == Some('/') => {
                                self.bump();
                                self.bump();
                                break;
                            }
                            Some(_) => {
                                self.bump();
                            }
                        }
                    }
                }
                _ => return Ok(()),
            }
        }
    }

    fn next_token(&mut self) -> Result<Token, ParseError> {
        self.skip_trivia()?;
        let m = self.mark();
        let Some(c) = self.peek() else {
            return Ok(Token {
                kind: TokenKind::Eof,
                span: self.span_from(m),
                text: "<EOF>".into(),
            });
        };
        if c.is_ascii_hexdigit() {
            if let Some(u) = self.try_uuid() {
                return Ok(self.token(m, TokenKind::Uuid(u)));
            }
        }
        if is_ident_start(c) {
            while self.peek().is_some_and(is_ident_char) {
                self.bump();
            }
            let word = self.text_from(m).to_string();
            return Ok(self.token(m, TokenKind::Word(word)));
        }
        if c.is_ascii_digit() || (c == '-' && self.peek_at(1).is_some_and(|d| d.is_ascii_digit())) {
            return self.number(m);
        }
        match c {
            '\'' => return self.string(m),
            '"' => return self.quoted_ident(m),
            '$' if self.peek_at(1) == Some('$') => return self.dollar_string(m),
            _ => {}
        }
        self.bump();
        let two = |l: &mut Self, next: char| {
            if l.peek() == Some(next) {
                l.bump();
                true
            } else {
                false
            }
        };
        let kind = match c {
            '?' => TokenKind::QMark,
            '(' => TokenKind::LParen,
            ')' => TokenKind::RParen,
            '{' => TokenKind::LBrace,
            '}' => TokenKind::RBrace,
            '[' => TokenKind::LBracket,
            ']' => TokenKind::RBracket,
            ',' => TokenKind::Comma,
            ';' => TokenKind::Semicolon,
            '.' => TokenKind::Dot,
            '*' => TokenKind::Star,
            '=' => TokenKind::Eq,
            ':' => TokenKind::Colon,
            '-' => TokenKind::Minus,
            '+' => TokenKind::Plus,
            '<' => {
                if two(self, '=') {
                    TokenKind::Le
                } else {
                    TokenKind::Lt
                }
            }
            '>' => {
                if two(self, '=') {
                    TokenKind::Ge
                } else {
                    TokenKind::Gt
                }
            }
            '!' if two(self, '=') => TokenKind::Ne,
            other => {
                return Err(self.error(
                    m,
                    ErrorKind::Lexical,
                    format!("token recognition error at: '{other}'"),
                ))
            }
        };
        Ok(self.token(m, kind))
    }

    /// Matches a bare UUID (8-4-4-4-12 hex digits) not followed by an
    /// identifier character; consumes it only on success.
    fn try_uuid(&mut self) -> Option<u128> {
        let groups = [8usize, 4, 4, 4, 12];
        let mut i = 0;
        for (g, &n) in groups.iter().enumerate() {
            for _ in 0..n {
                if !self.peek_at(i)?.is_ascii_hexdigit() {
                    return None;
                }
                i += 1;
            }
            if g < 4 {
                if self.peek_at(i)? != '-' {
                    return None;
                }
                i += 1;
            }
        }
        if self.peek_at(i).is_some_and(is_ident_char) {
            return None;
        }
        let text: String = self.chars[self.pos..self.pos + i]
            .iter()
            .map(|&(_, c)| c)
            .collect();
        let u = crate::types::parse_uuid(&text)?;
        for _ in 0..i {
            self.bump();
        }
        Some(u)
    }

    fn digits(&mut self) -> usize {
        let mut n = 0;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.bump();
            n += 1;
        }
        n
    }

    fn number(&mut self, m: Mark) -> Result<Token, ParseError> {
        let negative = self.peek() == Some('-');
        if negative {
            self.bump();
        }
        // Hex blob: 0x...
        if !negative && self.peek() == Some('0') && matches!(self.peek_at(1), Some('x') | Some('X'))
        {
            self.bump();
            self.bump();
            let hex_start = self.offset();
            while self.peek().is_some_and(|c| c.is_ascii_hexdigit()) {
                self.bump();
            }
            let hex = self.src.get(hex_start..self.offset()).unwrap_or("");
            if hex.len() % 2 != 0 {
                return Err(self.error(
                    m,
                    ErrorKind::Lexical,
                    format!(
                        "invalid blob literal '{}': odd number of hex digits",
                        self.text_from(m)
                    ),
                ));
            }
            let bytes = hex
                .as_bytes()
                .chunks(2)
                .map(|pair| (hex_val(pair[0]) << 4) | hex_val(pair[1]))
                .collect();
            return Ok(self.token(m, TokenKind::Blob(bytes)));
        }
        self.digits();
        let mut is_float = false;
        let mut normalized = self.text_from(m).to_string();
        if self.peek() == Some('.') {
            is_float = true;
            self.bump();
            normalized.push('.');
            let frac_start = self.offset();
            if self.digits() == 0 {
                normalized.push('0');
            } else {
                normalized.push_str(self.src.get(frac_start..self.offset()).unwrap_or("0"));
            }
        }
        if matches!(self.peek(), Some('e') | Some('E')) {
            let sign = matches!(self.peek_at(1), Some('+') | Some('-'));
            let digit_at = if sign { 2 } else { 1 };
            if self.peek_at(digit_at).is_some_and(|c| c.is_ascii_digit()) {
                is_float = true;
                let exp_start = self.offset();
                self.bump();
                if sign {
                    self.bump();
                }
                self.digits();
                normalized.push_str(self.src.get(exp_start..self.offset()).unwrap_or(""));
            }
        }
        if is_float {
            return match normalized.parse::<f64>() {
                Ok(f) => Ok(self.token(m, TokenKind::Float(f))),
                Err(_) => Err(self.error(
                    m,
                    ErrorKind::Lexical,
                    format!("invalid float literal '{}'", self.text_from(m)),
                )),
            };
        }
        match self.text_from(m).parse::<i128>() {
            Ok(i) => Ok(self.token(m, TokenKind::Integer(i))),
            Err(_) => Err(self.error(
                m,
                ErrorKind::Lexical,
                format!("integer literal '{}' is too large", self.text_from(m)),
            )),
        }
    }

    /// Reads text up to a closing `quote`, where a doubled quote stands
    /// for one (the escape of both string literals and quoted identifiers).
    fn quoted_text(
        &mut self,
        m: Mark,
        quote: char,
        unterminated: &str,
    ) -> Result<String, ParseError> {
        self.bump();
        let mut value = String::new();
        loop {
            match self.bump() {
                None => return Err(self.error(m, ErrorKind::Lexical, unterminated.into())),
                Some(c) if c == quote => {
                    if self.peek() == Some(quote) {
                        self.bump();
                        value.push(quote);
                    } else {
                        return Ok(value);
                    }
                }
                Some(c) => value.push(c),
            }
        }
    }

    fn string(&mut self, m: Mark) -> Result<Token, ParseError> {
        let value = self.quoted_text(
            m,
            '\'',
            "unterminated string literal: missing closing quote (')",
        )?;
        Ok(self.token(m, TokenKind::Str(value)))
    }

    fn dollar_string(&mut self, m: Mark) -> Result<Token, ParseError> {
        self.bump();
        self.bump();
        let mut value = String::new();
        loop {
            match self.bump() {
                None => {
                    return Err(self.error(
                        m,
                        ErrorKind::Lexical,
                        "unterminated string literal: missing closing '$$'".into(),
                    ))
                }
                Some('$') if self.peek() == Some('$') => {
                    self.bump();
                    return Ok(self.token(m, TokenKind::Str(value)));
                }
                Some(c) => value.push(c),
            }
        }
    }

    fn quoted_ident(&mut self, m: Mark) -> Result<Token, ParseError> {
        let value = self.quoted_text(
            m,
            '"',
            "unterminated quoted identifier: missing closing quote (\")",
        )?;
        if value.is_empty() {
            return Err(self.error(m, ErrorKind::Lexical, "empty quoted identifier".into()));
        }
        Ok(self.token(m, TokenKind::QuotedIdent(value)))
    }
}

fn hex_val(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        b'A'..=b'F' => b - b'A' + 10,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(src: &str) -> Vec<TokenKind> {
        tokenize(src).unwrap().into_iter().map(|t| t.kind).collect()
    }

    #[test]
    fn words_and_punctuation() {
        assert_eq!(
            kinds("SELECT a,b FROM ks.t;"),
            vec![
                TokenKind::Word("SELECT".into()),
                TokenKind::Word("a".into()),
                TokenKind::Comma,
                TokenKind::Word("b".into()),
                TokenKind::Word("FROM".into()),
                TokenKind::Word("ks".into()),
                TokenKind::Dot,
                TokenKind::Word("t".into()),
                TokenKind::Semicolon,
                TokenKind::Eof,
            ]
        );
        assert_eq!(
            kinds("<= >= < > = != ? : * ( ) { } [ ] + -"),
            vec![
                TokenKind::Le,
                TokenKind::Ge,
                TokenKind::Lt,
                TokenKind::Gt,
                TokenKind::Eq,
                TokenKind::Ne,
                TokenKind::QMark,
                TokenKind::Colon,
                TokenKind::Star,
                TokenKind::LParen,
                TokenKind::RParen,
                TokenKind::LBrace,
                TokenKind::RBrace,
                TokenKind::LBracket,
                TokenKind::RBracket,
                TokenKind::Plus,
                TokenKind::Minus,
                TokenKind::Eof,
            ]
        );
    }

    #[test]
    fn literals() {
        assert_eq!(
            kinds("'it''s' $$a'b$$ \"Quoted\"\"Id\" 42 -7 1.5 -2.5e-3 1e10 3. 0xCAFE 0x"),
            vec![
                TokenKind::Str("it's".into()),
                TokenKind::Str("a'b".into()),
                TokenKind::QuotedIdent("Quoted\"Id".into()),
                TokenKind::Integer(42),
                TokenKind::Integer(-7),
                TokenKind::Float(1.5),
                TokenKind::Float(-2.5e-3),
                TokenKind::Float(1e10),
                TokenKind::Float(3.0),
                TokenKind::Blob(vec![0xca, 0xfe]),
                TokenKind::Blob(vec![]),
                TokenKind::Eof,
            ]
        );
        assert_eq!(
            kinds("123e4567-e89b-12d3-a456-426614174000 abcdef01-0000-0000-0000-000000000000"),
            vec![
                TokenKind::Uuid(0x123e4567_e89b_12d3_a456_426614174000),
                TokenKind::Uuid(0xabcdef01_0000_0000_0000_000000000000),
                TokenKind::Eof,
            ]
        );
        // `1e` is an integer then a word, as in Cassandra.
        assert_eq!(
            kinds("1e"),
            vec![
                TokenKind::Integer(1),
                TokenKind::Word("e".into()),
                TokenKind::Eof
            ]
        );
    }

    #[test]
    fn comments_are_skipped_and_positions_kept() {
        let toks = tokenize("-- one\n// two\n/* three\n */  x").unwrap();
        assert_eq!(toks[0].kind, TokenKind::Word("x".into()));
        assert_eq!((toks[0].span.line, toks[0].span.column), (4, 6));
        assert_eq!(toks[0].span.offset, 28);
        let toks = tokenize("é 'ü' b").unwrap_err();
        assert_eq!((toks.span.line, toks.span.column), (1, 1));
        let toks = tokenize("'ü' b").unwrap();
        assert_eq!((toks[1].span.line, toks[1].span.column), (1, 5));
    }

    #[test]
    fn errors_have_positions() {
        let e = tokenize("SELECT 'abc").unwrap_err();
        assert_eq!((e.span.line, e.span.column), (1, 8));
        assert!(e.message.contains("unterminated string"));
        let e = tokenize("a\n  /* never closed").unwrap_err();
        assert_eq!((e.span.line, e.span.column), (2, 3));
        assert!(e.message.contains("unterminated comment"));
        let e = tokenize("x \"abc").unwrap_err();
        assert!(e.message.contains("unterminated quoted identifier"));
        let e = tokenize("a @ b").unwrap_err();
        assert_eq!(e.message, "token recognition error at: '@'");
        assert_eq!(e.span.column, 3);
        let e = tokenize("0xabc").unwrap_err();
        assert!(e.message.contains("odd number"));
        let e = tokenize("1234567890123456789012345678901234567890123").unwrap_err();
        assert!(e.message.contains("too large"));
        assert!(tokenize("\"\"").is_err());
    }
}
