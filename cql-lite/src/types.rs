//! The CQL-lite type system: column types and typed values.
//!
//! These are shared by the parser (literals), the schema (column types), the
//! storage key encoding (clustering and partition keys) and the result sets.

use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::fmt;

/// A column type, as written in `CREATE TABLE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DataType {
    /// 32-bit signed integer.
    Int,
    /// 64-bit signed integer.
    BigInt,
    /// 16-bit signed integer.
    SmallInt,
    /// 32-bit IEEE-754 float.
    Float,
    /// 64-bit IEEE-754 float.
    Double,
    /// true or false.
    Boolean,
    /// UTF-8 text (`text` and `varchar` are the same type).
    Text,
    /// US-ASCII text.
    Ascii,
    /// Arbitrary bytes.
    Blob,
    /// Milliseconds since the Unix epoch.
    Timestamp,
    /// Days since the Unix epoch.
    Date,
    /// Any UUID.
    Uuid,
    /// A version-1 (time-based) UUID.
    TimeUuid,
}

impl DataType {
    /// Every type, in declaration order (for tests and completion).
    pub const ALL: [DataType; 13] = [
        DataType::Int,
        DataType::BigInt,
        DataType::SmallInt,
        DataType::Float,
        DataType::Double,
        DataType::Boolean,
        DataType::Text,
        DataType::Ascii,
        DataType::Blob,
        DataType::Timestamp,
        DataType::Date,
        DataType::Uuid,
        DataType::TimeUuid,
    ];

    /// The CQL name of the type, as `DESCRIBE` prints it.
    pub fn name(self) -> &'static str {
        match self {
            DataType::Int => "int",
            DataType::BigInt => "bigint",
            DataType::SmallInt => "smallint",
            DataType::Float => "float",
            DataType::Double => "double",
            DataType::Boolean => "boolean",
            DataType::Text => "text",
            DataType::Ascii => "ascii",
            DataType::Blob => "blob",
            DataType::Timestamp => "timestamp",
            DataType::Date => "date",
            DataType::Uuid => "uuid",
            DataType::TimeUuid => "timeuuid",
        }
    }

    /// Parses a type name case-insensitively (`varchar` is `text`).
    pub fn from_name(name: &str) -> Option<DataType> {
        let lower = name.to_ascii_lowercase();
        let found = match lower.as_str() {
            "int" => DataType::Int,
            "bigint" => DataType::BigInt,
            "smallint" => DataType::SmallInt,
            "float" => DataType::Float,
            "double" => DataType::Double,
            "boolean" => DataType::Boolean,
            "text" | "varchar" => DataType::Text,
            "ascii" => DataType::Ascii,
            "blob" => DataType::Blob,
            "timestamp" => DataType::Timestamp,
            "date" => DataType::Date,
            "uuid" => DataType::Uuid,
            "timeuuid" => DataType::TimeUuid,
            _ => return None,
        };
        Some(found)
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A typed value: a cell's content, a key component or a literal; or, as
/// [`Value::List`], the whole list bound to an `IN ?` marker.
///
/// `Null` is the absence of a value; it never appears in a primary key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Value {
    /// No value.
    Null,
    /// An `int`.
    Int(i32),
    /// A `bigint`.
    BigInt(i64),
    /// A `smallint`.
    SmallInt(i16),
    /// A `float`.
    Float(f32),
    /// A `double`.
    Double(f64),
    /// A `boolean`.
    Boolean(bool),
    /// A `text` / `varchar`.
    Text(String),
    /// An `ascii` string.
    Ascii(String),
    /// A `blob`.
    Blob(Vec<u8>),
    /// A `timestamp`: milliseconds since the Unix epoch.
    Timestamp(i64),
    /// A `date`: days since the Unix epoch.
    Date(i32),
    /// A `uuid`, as its 128 bits in big-endian order.
    Uuid(u128),
    /// A `timeuuid`, as its 128 bits in big-endian order.
    TimeUuid(u128),
    /// The values bound to one `IN ?` (or `IN :name`) marker. A list is
    /// never a column's value: the node refuses it anywhere else. Its
    /// elements are single values; a nested list does not even decode (so
    /// a hostile frame cannot make the decoder recurse deeply). It is the
    /// last variant so that adding it left the encoding of the others as
    /// it was.
    List(#[serde(deserialize_with = "deserialize_flat_list")] Vec<Value>),
}

/// [`Value`] without [`Value::List`]: what a list's elements decode as.
/// The variants are the same, in the same order, so a list of values
/// encodes and decodes in every serde format.
#[derive(Deserialize)]
#[serde(rename = "Value")]
enum ListElement {
    Null,
    Int(i32),
    BigInt(i64),
    SmallInt(i16),
    Float(f32),
    Double(f64),
    Boolean(bool),
    Text(String),
    Ascii(String),
    Blob(Vec<u8>),
    Timestamp(i64),
    Date(i32),
    Uuid(u128),
    TimeUuid(u128),
}

impl From<ListElement> for Value {
    fn from(e: ListElement) -> Value {
        match e {
            ListElement::Null => Value::Null,
            ListElement::Int(v) => Value::Int(v),
            ListElement::BigInt(v) => Value::BigInt(v),
            ListElement::SmallInt(v) => Value::SmallInt(v),
            ListElement::Float(v) => Value::Float(v),
            ListElement::Double(v) => Value::Double(v),
            ListElement::Boolean(v) => Value::Boolean(v),
            ListElement::Text(v) => Value::Text(v),
            ListElement::Ascii(v) => Value::Ascii(v),
            ListElement::Blob(v) => Value::Blob(v),
            ListElement::Timestamp(v) => Value::Timestamp(v),
            ListElement::Date(v) => Value::Date(v),
            ListElement::Uuid(v) => Value::Uuid(v),
            ListElement::TimeUuid(v) => Value::TimeUuid(v),
        }
    }
}

fn deserialize_flat_list<'de, D>(deserializer: D) -> Result<Vec<Value>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let elements = Vec::<ListElement>::deserialize(deserializer)?;
    Ok(elements.into_iter().map(Value::from).collect())
}

/// The type of what a bind marker takes: one value of a column's type, or
/// (for `IN ?`) a list of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MarkerType {
    /// One value of this type.
    Single(DataType),
    /// A list of values of this type (`list<int>`).
    List(DataType),
}

impl fmt::Display for MarkerType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MarkerType::Single(t) => write!(f, "{t}"),
            MarkerType::List(t) => write!(f, "list<{t}>"),
        }
    }
}

impl Value {
    /// The column type of this value; `None` for `Null` and for a list
    /// (no column has a list type).
    pub fn data_type(&self) -> Option<DataType> {
        Some(match self {
            Value::Null | Value::List(_) => return None,
            Value::Int(_) => DataType::Int,
            Value::BigInt(_) => DataType::BigInt,
            Value::SmallInt(_) => DataType::SmallInt,
            Value::Float(_) => DataType::Float,
            Value::Double(_) => DataType::Double,
            Value::Boolean(_) => DataType::Boolean,
            Value::Text(_) => DataType::Text,
            Value::Ascii(_) => DataType::Ascii,
            Value::Blob(_) => DataType::Blob,
            Value::Timestamp(_) => DataType::Timestamp,
            Value::Date(_) => DataType::Date,
            Value::Uuid(_) => DataType::Uuid,
            Value::TimeUuid(_) => DataType::TimeUuid,
        })
    }

    /// True for `Null`.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// The type as messages name it: `int`, `null`, `list<int>` (a list
    /// of mixed or no types is `list`).
    pub fn type_name(&self) -> String {
        match self {
            Value::Null => "null".into(),
            Value::List(items) => {
                let mut types = items.iter().filter_map(Value::data_type);
                match types.next() {
                    Some(first) if types.all(|t| t == first) => format!("list<{first}>"),
                    _ => "list".into(),
                }
            }
            other => other
                .data_type()
                .map(|t| t.name().to_string())
                .unwrap_or_default(),
        }
    }

    /// The position of the variant, used to order values of different types.
    fn rank(&self) -> u8 {
        match self {
            Value::Null => 0,
            Value::Int(_) => 1,
            Value::BigInt(_) => 2,
            Value::SmallInt(_) => 3,
            Value::Float(_) => 4,
            Value::Double(_) => 5,
            Value::Boolean(_) => 6,
            Value::Text(_) => 7,
            Value::Ascii(_) => 8,
            Value::Blob(_) => 9,
            Value::Timestamp(_) => 10,
            Value::Date(_) => 11,
            Value::Uuid(_) => 12,
            Value::TimeUuid(_) => 13,
            Value::List(_) => 14,
        }
    }
}

/// Values have a total order: by type first (for mixed comparisons, which
/// validated queries never make), then CQL's order within a type. Floats use
/// IEEE-754 total order, so NaN sorts after +inf and -0.0 before +0.0.
/// `timeuuid` compares by its embedded timestamp first, as Cassandra does.
impl Ord for Value {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Value::Int(a), Value::Int(b)) => a.cmp(b),
            (Value::BigInt(a), Value::BigInt(b)) => a.cmp(b),
            (Value::SmallInt(a), Value::SmallInt(b)) => a.cmp(b),
            (Value::Float(a), Value::Float(b)) => a.total_cmp(b),
            (Value::Double(a), Value::Double(b)) => a.total_cmp(b),
            (Value::Boolean(a), Value::Boolean(b)) => a.cmp(b),
            (Value::Text(a), Value::Text(b)) => a.cmp(b),
            (Value::Ascii(a), Value::Ascii(b)) => a.cmp(b),
            (Value::Blob(a), Value::Blob(b)) => a.cmp(b),
            (Value::Timestamp(a), Value::Timestamp(b)) => a.cmp(b),
            (Value::Date(a), Value::Date(b)) => a.cmp(b),
            (Value::Uuid(a), Value::Uuid(b)) => a.cmp(b),
            (Value::TimeUuid(a), Value::TimeUuid(b)) => timeuuid_order_key(*a)
                .cmp(&timeuuid_order_key(*b))
                .then(a.cmp(b)),
            (Value::List(a), Value::List(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl PartialOrd for Value {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Value {}

/// The 60-bit timestamp of a version-1 UUID, used to order `timeuuid`s by time.
pub fn timeuuid_order_key(uuid: u128) -> u64 {
    let hi = (uuid >> 64) as u64;
    let time_low = hi >> 32;
    let time_mid = (hi >> 16) & 0xFFFF;
    let time_hi = hi & 0x0FFF;
    (time_hi << 48) | (time_mid << 32) | time_low
}

/// Formats a UUID in its canonical 8-4-4-4-12 hexadecimal form.
pub fn format_uuid(uuid: u128) -> String {
    let hex = format!("{uuid:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Parses a UUID in canonical 8-4-4-4-12 form (either case).
pub fn parse_uuid(text: &str) -> Option<u128> {
    let groups: Vec<&str> = text.split('-').collect();
    let lengths = [8, 4, 4, 4, 12];
    if groups.len() != 5 || groups.iter().zip(lengths).any(|(g, n)| g.len() != n) {
        return None;
    }
    let joined: String = groups.concat();
    if !joined.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u128::from_str_radix(&joined, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn type_names_round_trip() {
        for t in DataType::ALL {
            assert_eq!(DataType::from_name(t.name()), Some(t));
            assert_eq!(DataType::from_name(&t.name().to_uppercase()), Some(t));
        }
        assert_eq!(DataType::from_name("VarChar"), Some(DataType::Text));
        assert_eq!(DataType::from_name("varchar2"), None);
    }

    #[test]
    fn float_order_is_total() {
        assert!(Value::Double(-0.0) < Value::Double(0.0));
        assert!(Value::Double(f64::INFINITY) < Value::Double(f64::NAN));
        assert_eq!(Value::Double(f64::NAN), Value::Double(f64::NAN));
    }

    proptest! {
        #[test]
        fn uuid_text_round_trips(u in any::<u128>()) {
            let text = format_uuid(u);
            prop_assert_eq!(parse_uuid(&text), Some(u));
            prop_assert_eq!(parse_uuid(&text.to_uppercase()), Some(u));
        }

        #[test]
        fn timeuuid_orders_by_time(t1 in 0u64..(1 << 60), t2 in 0u64..(1 << 60), low in any::<u64>()) {
            let make = |t: u64| {
                let time_low = t & 0xFFFF_FFFF;
                let time_mid = (t >> 32) & 0xFFFF;
                let time_hi = (t >> 48) & 0x0FFF;
                let hi = (time_low << 32) | (time_mid << 16) | (1 << 12) | time_hi;
                ((hi as u128) << 64) | low as u128
            };
            prop_assert_eq!(timeuuid_order_key(make(t1)), t1);
            prop_assert_eq!(Value::TimeUuid(make(t1)).cmp(&Value::TimeUuid(make(t2))), t1.cmp(&t2));
        }
    }
}
