//! Literals as written in CQL text, and their conversion to typed values.
//!
//! A [`Literal`] is independent of its written form (`0x0A` and `0x0a` are
//! the same blob) and of any schema. [`literal_to_value`] types it for a
//! column with Cassandra's rules; the node calls it once it knows the
//! column's type.

use crate::types::{DataType, Value};
use serde::{Deserialize, Serialize};

/// A constant written in a statement.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Literal {
    /// An integer (`42`, `-7`); its range is checked against the column type.
    Integer(i128),
    /// A floating-point number (`1.5`, `2e10`, `NaN`, `-Infinity`).
    Float(f64),
    /// A string (`'it''s'`).
    String(String),
    /// A blob (`0xCAFE`).
    Blob(Vec<u8>),
    /// A UUID written without quotes.
    Uuid(u128),
    /// `true` or `false`.
    Bool(bool),
    /// `NULL`.
    Null,
}

/// Equality is structural; floats compare by bits, except that every NaN
/// equals every NaN (so a printed and re-parsed `NaN` is the same literal).
impl PartialEq for Literal {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Literal::Integer(a), Literal::Integer(b)) => a == b,
            (Literal::Float(a), Literal::Float(b)) => {
                (a.is_nan() && b.is_nan()) || a.to_bits() == b.to_bits()
            }
            (Literal::String(a), Literal::String(b)) => a == b,
            (Literal::Blob(a), Literal::Blob(b)) => a == b,
            (Literal::Uuid(a), Literal::Uuid(b)) => a == b,
            (Literal::Bool(a), Literal::Bool(b)) => a == b,
            (Literal::Null, Literal::Null) => true,
            _ => false,
        }
    }
}

impl Literal {
    /// The constant kind as Cassandra names it in messages
    /// (`INTEGER`, `FLOAT`, `STRING`, `HEX`, `UUID`, `BOOLEAN`, `NULL`).
    pub fn kind_name(&self) -> &'static str {
        match self {
            Literal::Integer(_) => "INTEGER",
            Literal::Float(_) => "FLOAT",
            Literal::String(_) => "STRING",
            Literal::Blob(_) => "HEX",
            Literal::Uuid(_) => "UUID",
            Literal::Bool(_) => "BOOLEAN",
            Literal::Null => "NULL",
        }
    }

    /// The literal's value as shown in messages (strings unquoted).
    pub fn display_value(&self) -> String {
        match self {
            Literal::String(s) => s.clone(),
            other => other.to_string(),
        }
    }
}

/// Why a literal cannot be a value of some type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum TypeError {
    /// The literal's kind cannot be assigned to the type at all.
    #[error("Invalid {kind} constant ({text}) for type {target}")]
    Mismatch {
        /// The literal kind (`STRING`, `INTEGER`...).
        kind: String,
        /// The literal as shown in messages.
        text: String,
        /// The type it was meant for.
        target: DataType,
    },
    /// A number outside the type's range.
    #[error("Invalid {kind} constant ({text}) for type {target}: out of range")]
    OutOfRange {
        /// The literal kind (`INTEGER` or `FLOAT`).
        kind: String,
        /// The number as written.
        text: String,
        /// The type it was meant for.
        target: DataType,
    },
    /// A string that does not hold a valid value of the type.
    #[error("Unable to coerce '{text}' to {target}: {reason}")]
    InvalidFormat {
        /// The string.
        text: String,
        /// The type it was meant for.
        target: DataType,
        /// What is wrong with it.
        reason: String,
    },
}

impl TypeError {
    /// The message naming the column, as Cassandra words it:
    /// `Invalid STRING constant (abc) for "k" of type int`.
    pub fn for_column(&self, column: &str) -> String {
        let col = column.replace('"', "\"\"");
        match self {
            TypeError::Mismatch { kind, text, target } => {
                format!("Invalid {kind} constant ({text}) for \"{col}\" of type {target}")
            }
            TypeError::OutOfRange { kind, text, target } => format!(
                "Invalid {kind} constant ({text}) for \"{col}\" of type {target}: out of range"
            ),
            TypeError::InvalidFormat {
                text,
                target,
                reason,
            } => format!("Unable to coerce '{text}' to {target} for \"{col}\": {reason}"),
        }
    }
}

/// Converts a literal to a value of type `ty`, with Cassandra's rules:
/// integers fit the type's range (and are accepted by `float`, `double` and
/// `timestamp`); floats go to `float`/`double`; strings go to text types,
/// `timestamp` (ISO-8601 or milliseconds), `date` (`yyyy-mm-dd`) and UUID
/// types; blobs come only from `0x...`; `NULL` is `Value::Null` for any type.
pub fn literal_to_value(lit: &Literal, ty: DataType) -> Result<Value, TypeError> {
    let mismatch = || TypeError::Mismatch {
        kind: lit.kind_name().to_string(),
        text: lit.display_value(),
        target: ty,
    };
    let out_of_range = || TypeError::OutOfRange {
        kind: lit.kind_name().to_string(),
        text: lit.display_value(),
        target: ty,
    };
    let invalid = |text: &str, reason: String| TypeError::InvalidFormat {
        text: text.to_string(),
        target: ty,
        reason,
    };
    if let Literal::Null = lit {
        return Ok(Value::Null);
    }
    let value = match (ty, lit) {
        (DataType::Int, Literal::Integer(i)) => {
            Value::Int(i32::try_from(*i).map_err(|_| out_of_range())?)
        }
        (DataType::BigInt, Literal::Integer(i)) => {
            Value::BigInt(i64::try_from(*i).map_err(|_| out_of_range())?)
        }
        (DataType::SmallInt, Literal::Integer(i)) => {
            Value::SmallInt(i16::try_from(*i).map_err(|_| out_of_range())?)
        }
        (DataType::Timestamp, Literal::Integer(i)) => {
            Value::Timestamp(i64::try_from(*i).map_err(|_| out_of_range())?)
        }
        (DataType::Float, Literal::Integer(i)) => Value::Float(*i as f32),
        (DataType::Double, Literal::Integer(i)) => Value::Double(*i as f64),
        (DataType::Float, Literal::Float(f)) => {
            let narrowed = *f as f32;
            if f.is_finite() && !narrowed.is_finite() {
                return Err(out_of_range());
            }
            Value::Float(narrowed)
        }
        (DataType::Double, Literal::Float(f)) => Value::Double(*f),
        (DataType::Boolean, Literal::Bool(b)) => Value::Boolean(*b),
        (DataType::Text, Literal::String(s)) => Value::Text(s.clone()),
        (DataType::Ascii, Literal::String(s)) => {
            if let Some(c) = s.chars().find(|c| !c.is_ascii()) {
                return Err(invalid(s, format!("invalid ASCII character {c:?}")));
            }
            Value::Ascii(s.clone())
        }
        (DataType::Blob, Literal::Blob(b)) => Value::Blob(b.clone()),
        (DataType::Timestamp, Literal::String(s)) => {
            Value::Timestamp(parse_timestamp(s).map_err(|r| invalid(s, r))?)
        }
        (DataType::Date, Literal::String(s)) => {
            Value::Date(parse_date(s).map_err(|r| invalid(s, r))?)
        }
        (DataType::Uuid, Literal::Uuid(u)) => Value::Uuid(*u),
        (DataType::Uuid, Literal::String(s)) => Value::Uuid(
            crate::types::parse_uuid(s)
                .ok_or_else(|| invalid(s, "not a UUID (expected 8-4-4-4-12 hex digits)".into()))?,
        ),
        (DataType::TimeUuid, Literal::Uuid(u)) => {
            Value::TimeUuid(check_time_uuid(*u).map_err(|r| invalid(&lit.display_value(), r))?)
        }
        (DataType::TimeUuid, Literal::String(s)) => {
            let u = crate::types::parse_uuid(s)
                .ok_or_else(|| invalid(s, "not a UUID (expected 8-4-4-4-12 hex digits)".into()))?;
            Value::TimeUuid(check_time_uuid(u).map_err(|r| invalid(s, r))?)
        }
        _ => return Err(mismatch()),
    };
    Ok(value)
}

/// The UUID's version (the high nibble of its seventh byte).
pub fn uuid_version(u: u128) -> u8 {
    ((u >> 76) & 0xF) as u8
}

fn check_time_uuid(u: u128) -> Result<u128, String> {
    match uuid_version(u) {
        1 => Ok(u),
        v => Err(format!(
            "a timeuuid must be a version 1 UUID, this is version {v}"
        )),
    }
}

/// Turns a value back into a literal that [`literal_to_value`] maps to an
/// equal value of the same type (timestamps and dates become ISO strings).
/// A list has no literal (CQL-lite writes lists only as `IN (...)`):
/// `None`.
pub fn value_to_literal(value: &Value) -> Option<Literal> {
    Some(match value {
        Value::Null => Literal::Null,
        Value::Int(i) => Literal::Integer(i128::from(*i)),
        Value::BigInt(i) => Literal::Integer(i128::from(*i)),
        Value::SmallInt(i) => Literal::Integer(i128::from(*i)),
        Value::Float(f) => Literal::Float(f64::from(*f)),
        Value::Double(f) => Literal::Float(*f),
        Value::Boolean(b) => Literal::Bool(*b),
        Value::Text(s) | Value::Ascii(s) => Literal::String(s.clone()),
        Value::Blob(b) => Literal::Blob(b.clone()),
        Value::Timestamp(ms) => Literal::String(format_timestamp(*ms)),
        Value::Date(d) => Literal::String(format_date(*d)),
        Value::Uuid(u) | Value::TimeUuid(u) => Literal::Uuid(*u),
        Value::List(_) => return None,
    })
}

const MS_PER_DAY: i64 = 86_400_000;
/// Cassandra writes a `date` as an unsigned day number with the epoch at 2^31.
const DATE_EPOCH_OFFSET: i64 = 1 << 31;

/// Days since 1970-01-01 of a proleptic Gregorian date.
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = i64::from((month + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian (year, month, day) of a day number since 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(year) => 29,
        _ => 28,
    }
}

/// A tiny cursor over ASCII bytes for the date and time formats.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn number(&mut self, digits: usize, what: &str) -> Result<u32, String> {
        let mut n = 0u32;
        for _ in 0..digits {
            match self.bytes.get(self.pos) {
                Some(b) if b.is_ascii_digit() => {
                    n = n * 10 + u32::from(b - b'0');
                    self.pos += 1;
                }
                _ => return Err(format!("expected {digits} digits for the {what}")),
            }
        }
        Ok(n)
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.bytes.get(self.pos) == Some(&b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn done(&self) -> bool {
        self.pos >= self.bytes.len()
    }
}

fn is_integer_text(s: &str) -> bool {
    let digits = s.strip_prefix('-').unwrap_or(s);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

fn parse_ymd(c: &mut Cursor<'_>) -> Result<i64, String> {
    let year = c.number(4, "year")?;
    if !c.eat(b'-') {
        return Err("expected '-' after the year".into());
    }
    let month = c.number(2, "month")?;
    if !c.eat(b'-') {
        return Err("expected '-' after the month".into());
    }
    let day = c.number(2, "day")?;
    if !(1..=12).contains(&month) {
        return Err(format!("month {month} is not between 1 and 12"));
    }
    let year = i64::from(year);
    let max_day = days_in_month(year, month);
    if day < 1 || day > max_day {
        return Err(format!("day {day} is not between 1 and {max_day}"));
    }
    Ok(days_from_civil(year, month, day))
}

/// Parses a `date` string: `yyyy-mm-dd`, or Cassandra's unsigned day number
/// (the epoch is 2^31). Returns days since 1970-01-01.
pub fn parse_date(text: &str) -> Result<i32, String> {
    if is_integer_text(text) {
        let n: i64 = text
            .parse()
            .map_err(|_| "day number out of range".to_string())?;
        if !(0..=u32::MAX as i64).contains(&n) {
            return Err("day number must be between 0 and 4294967295".into());
        }
        return i32::try_from(n - DATE_EPOCH_OFFSET).map_err(|_| "day number out of range".into());
    }
    let mut c = Cursor {
        bytes: text.as_bytes(),
        pos: 0,
    };
    let days = parse_ymd(&mut c)?;
    if !c.done() {
        return Err("unexpected text after the date (expected yyyy-mm-dd)".into());
    }
    i32::try_from(days).map_err(|_| "date out of range".into())
}

/// Formats a `date` (days since 1970-01-01) as `yyyy-mm-dd`; outside years
/// 0..=9999 it is Cassandra's unsigned day number, which [`parse_date`] reads.
pub fn format_date(days: i32) -> String {
    let (y, m, d) = civil_from_days(i64::from(days));
    if (0..=9999).contains(&y) {
        format!("{y:04}-{m:02}-{d:02}")
    } else {
        (i64::from(days) + DATE_EPOCH_OFFSET).to_string()
    }
}

/// Parses a `timestamp` string to milliseconds since the epoch.
///
/// Accepted: an integer (milliseconds); `yyyy-mm-dd`; `yyyy-mm-dd hh:mm`,
/// `yyyy-mm-dd hh:mm:ss`, `yyyy-mm-dd hh:mm:ss.f` (1 to 3 fraction digits),
/// with `T` instead of the space allowed; each optionally followed by a zone
/// `Z`, `+hh`, `+hhmm` or `+hh:mm` (or `-`). Without a zone the time is UTC.
pub fn parse_timestamp(text: &str) -> Result<i64, String> {
    if is_integer_text(text) {
        return text
            .parse::<i64>()
            .map_err(|_| "milliseconds out of range".to_string());
    }
    let mut c = Cursor {
        bytes: text.as_bytes(),
        pos: 0,
    };
    let days = parse_ymd(&mut c)?;
    let mut ms: i64 = 0;
    if c.peek() == Some(b' ') || c.peek() == Some(b'T') {
        c.pos += 1;
        let hour = c.number(2, "hour")?;
        if !c.eat(b':') {
            return Err("expected ':' after the hour".into());
        }
        let minute = c.number(2, "minute")?;
        let mut second = 0;
        let mut millis = 0;
        if c.eat(b':') {
            second = c.number(2, "second")?;
            if c.eat(b'.') {
                let start = c.pos;
                while c.peek().is_some_and(|b| b.is_ascii_digit()) && c.pos - start < 4 {
                    c.pos += 1;
                }
                let digits = c.pos - start;
                if digits == 0 || digits > 3 {
                    return Err("expected 1 to 3 digits of milliseconds".into());
                }
                c.pos = start;
                let frac = c.number(digits, "milliseconds")?;
                millis = frac * 10u32.pow(3 - digits as u32);
            }
        }
        if hour > 23 {
            return Err(format!("hour {hour} is not between 0 and 23"));
        }
        if minute > 59 {
            return Err(format!("minute {minute} is not between 0 and 59"));
        }
        if second > 59 {
            return Err(format!("second {second} is not between 0 and 59"));
        }
        ms = i64::from(hour) * 3_600_000
            + i64::from(minute) * 60_000
            + i64::from(second) * 1000
            + i64::from(millis);
    }
    let mut offset_ms: i64 = 0;
    match c.peek() {
        None => {}
        Some(b'Z') => c.pos += 1,
        Some(sign @ (b'+' | b'-')) => {
            c.pos += 1;
            let hh = c.number(2, "zone hours")?;
            let mm = if c.done() {
                0
            } else {
                c.eat(b':');
                c.number(2, "zone minutes")?
            };
            if hh > 23 || mm > 59 {
                return Err(format!("zone offset {hh:02}:{mm:02} is out of range"));
            }
            let off = i64::from(hh) * 3_600_000 + i64::from(mm) * 60_000;
            offset_ms = if sign == b'+' { off } else { -off };
        }
        Some(_) => {
            return Err("expected yyyy-mm-dd[( |T)hh:mm[:ss[.fff]]][Z|+hh:mm|+hhmm]".into());
        }
    }
    if !c.done() {
        return Err("unexpected text after the zone".into());
    }
    Ok(days * MS_PER_DAY + ms - offset_ms)
}

/// Formats milliseconds since the epoch as ISO-8601 UTC
/// (`2024-01-31T12:00:00.000Z`); outside years 0..=9999 it is the number of
/// milliseconds. Either form parses back with [`parse_timestamp`].
pub fn format_timestamp(ms: i64) -> String {
    let days = ms.div_euclid(MS_PER_DAY);
    let rem = ms.rem_euclid(MS_PER_DAY);
    let (y, m, d) = civil_from_days(days);
    if !(0..=9999).contains(&y) {
        return ms.to_string();
    }
    let (h, rem) = (rem / 3_600_000, rem % 3_600_000);
    let (min, rem) = (rem / 60_000, rem % 60_000);
    let (s, milli) = (rem / 1000, rem % 1000);
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}.{milli:03}Z")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ts(s: &str) -> i64 {
        parse_timestamp(s).unwrap()
    }

    #[test]
    fn timestamp_formats() {
        assert_eq!(ts("1970-01-01"), 0);
        assert_eq!(ts("1970-01-02"), MS_PER_DAY);
        assert_eq!(ts("2011-02-03 04:05"), 1_296_705_900_000);
        assert_eq!(ts("2011-02-03T04:05:00"), 1_296_705_900_000);
        assert_eq!(ts("2011-02-03 04:05:00.000"), 1_296_705_900_000);
        assert_eq!(ts("2011-02-03 04:05:00.5"), 1_296_705_900_500);
        assert_eq!(ts("2011-02-03 04:05:00.12"), 1_296_705_900_120);
        assert_eq!(ts("2011-02-03 04:05:00Z"), 1_296_705_900_000);
        assert_eq!(ts("2011-02-03 04:05+0000"), 1_296_705_900_000);
        assert_eq!(
            ts("2011-02-03T04:05:00+01:00"),
            1_296_705_900_000 - 3_600_000
        );
        assert_eq!(
            ts("2011-02-03T04:05:00-0130"),
            1_296_705_900_000 + 5_400_000
        );
        assert_eq!(ts("2011-02-03+02"), 1_296_691_200_000 - 7_200_000);
        assert_eq!(ts("1296705900000"), 1_296_705_900_000);
        assert_eq!(ts("-5"), -5);
        assert_eq!(ts("1969-12-31T23:59:59.999Z"), -1);
        for bad in [
            "",
            "2011-13-01",
            "2011-02-30",
            "2011-2-3",
            "2011-02-03 24:00",
            "2011-02-03 04:60",
            "2011-02-03 04:05:00.1234",
            "2011-02-03 04:05:00 Z",
            "2011-02-03X",
            "abc",
            "99999999999999999999999",
        ] {
            assert!(parse_timestamp(bad).is_err(), "{bad:?} should not parse");
        }
        assert_eq!(ts("2000-02-29"), 951_782_400_000);
        assert!(parse_timestamp("1900-02-29").is_err());
    }

    #[test]
    fn date_formats() {
        assert_eq!(parse_date("1970-01-01"), Ok(0));
        assert_eq!(parse_date("1969-12-31"), Ok(-1));
        assert_eq!(parse_date("2147483648"), Ok(0));
        assert_eq!(format_date(0), "1970-01-01");
        assert_eq!(format_date(19_000), "2022-01-08");
        assert!(parse_date("2020-01-01 00:00").is_err());
        assert!(parse_date("4294967296").is_err());
    }

    #[test]
    fn conversions() {
        let int = |i: i128, t| literal_to_value(&Literal::Integer(i), t);
        assert_eq!(int(5, DataType::Int), Ok(Value::Int(5)));
        assert!(matches!(
            int(1 << 31, DataType::Int),
            Err(TypeError::OutOfRange { .. })
        ));
        assert_eq!(int(-(1 << 31), DataType::Int), Ok(Value::Int(i32::MIN)));
        assert!(int(40_000, DataType::SmallInt).is_err());
        assert_eq!(int(7, DataType::Double), Ok(Value::Double(7.0)));
        assert_eq!(int(7, DataType::Timestamp), Ok(Value::Timestamp(7)));
        assert!(matches!(
            int(7, DataType::Text),
            Err(TypeError::Mismatch { .. })
        ));
        let s = |v: &str, t| literal_to_value(&Literal::String(v.into()), t);
        assert_eq!(s("héllo", DataType::Text), Ok(Value::Text("héllo".into())));
        assert!(s("héllo", DataType::Ascii).is_err());
        assert!(s("abc", DataType::Blob).is_err());
        assert_eq!(
            s("1970-01-01T00:00:01Z", DataType::Timestamp),
            Ok(Value::Timestamp(1000))
        );
        assert_eq!(s("1970-01-11", DataType::Date), Ok(Value::Date(10)));
        let v1 = "6ba7b810-9dad-11d1-80b4-00c04fd430c8";
        let v4 = "123e4567-e89b-42d3-a456-426614174000";
        assert!(s(v1, DataType::TimeUuid).is_ok());
        assert!(s(v4, DataType::TimeUuid).is_err());
        assert!(s(v4, DataType::Uuid).is_ok());
        assert!(literal_to_value(&Literal::Float(1e300), DataType::Float).is_err());
        assert!(literal_to_value(&Literal::Float(f64::NAN), DataType::Float).is_ok());
        assert!(literal_to_value(&Literal::Float(1.0), DataType::Int).is_err());
        assert_eq!(
            literal_to_value(&Literal::Null, DataType::Int),
            Ok(Value::Null)
        );
        assert_eq!(
            literal_to_value(&Literal::Blob(vec![1]), DataType::Blob),
            Ok(Value::Blob(vec![1]))
        );
        let e = s("abc", DataType::Int).unwrap_err();
        assert_eq!(
            e.for_column("k"),
            "Invalid STRING constant (abc) for \"k\" of type int"
        );
        assert_eq!(e.to_string(), "Invalid STRING constant (abc) for type int");
    }

    fn arb_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<i32>().prop_map(Value::Int),
            any::<i64>().prop_map(Value::BigInt),
            any::<i16>().prop_map(Value::SmallInt),
            any::<f32>().prop_map(Value::Float),
            any::<f64>().prop_map(Value::Double),
            any::<bool>().prop_map(Value::Boolean),
            any::<String>().prop_map(Value::Text),
            "[ -~]*".prop_map(Value::Ascii),
            proptest::collection::vec(any::<u8>(), 0..16).prop_map(Value::Blob),
            any::<i64>().prop_map(Value::Timestamp),
            any::<i32>().prop_map(Value::Date),
            any::<u128>().prop_map(Value::Uuid),
            any::<u128>().prop_map(|u| Value::TimeUuid((u & !(0xF << 76)) | (1 << 76))),
        ]
    }

    proptest! {
        #[test]
        fn timestamp_text_round_trips(ms in -62_167_219_200_000i64..253_402_300_800_000) {
            let text = format_timestamp(ms);
            prop_assert_eq!(parse_timestamp(&text), Ok(ms));
        }

        #[test]
        fn any_timestamp_round_trips(ms in any::<i64>()) {
            prop_assert_eq!(parse_timestamp(&format_timestamp(ms)), Ok(ms));
        }

        #[test]
        fn date_text_round_trips(days in any::<i32>()) {
            prop_assert_eq!(parse_date(&format_date(days)), Ok(days));
        }

        #[test]
        fn civil_round_trips(days in -1_000_000i64..1_000_000) {
            let (y, m, d) = civil_from_days(days);
            prop_assert_eq!(days_from_civil(y, m, d), days);
        }

        #[test]
        fn integer_ranges(i in any::<i128>()) {
            let lit = Literal::Integer(i);
            prop_assert_eq!(literal_to_value(&lit, DataType::Int).is_ok(), i32::try_from(i).is_ok());
            prop_assert_eq!(literal_to_value(&lit, DataType::SmallInt).is_ok(), i16::try_from(i).is_ok());
            prop_assert_eq!(literal_to_value(&lit, DataType::BigInt).is_ok(), i64::try_from(i).is_ok());
        }

        #[test]
        fn values_round_trip_through_literals(v in arb_value()) {
            let lit = value_to_literal(&v).expect("a single value has a literal");
            match v.data_type() {
                None => prop_assert_eq!(lit, Literal::Null),
                Some(t) => prop_assert_eq!(literal_to_value(&lit, t), Ok(v)),
            }
        }

        #[test]
        fn timestamp_parser_never_panics(s in "\\PC{0,40}") {
            let _ = parse_timestamp(&s);
            let _ = parse_date(&s);
        }
    }
}
