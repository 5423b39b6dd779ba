//! Values of terms: literals typed for their column, functions, and the
//! conversions between client timestamps and HLC timestamps.

use super::api::QueryError;
use crate::model::{HybridClock, Timestamp};
use cql_lite::ast::{Function, Literal, Term};
use cql_lite::{literal_to_value, DataType, Value};
use std::sync::atomic::{AtomicU64, Ordering};

/// Offset between the UUID epoch (1582-10-15) and the Unix epoch, in 100 ns.
const UUID_EPOCH_OFFSET: u64 = 0x01B2_1DD2_1381_4000;

/// An `Invalid` error without a position (the message is the rendering).
pub fn invalid(message: impl Into<String>) -> QueryError {
    let message = message.into();
    QueryError::Invalid {
        rendered: message.clone(),
        message,
    }
}

/// Makes `now()` values: version-1 UUIDs from the wall clock, unique per
/// process (a counter fills the sub-millisecond part).
#[derive(Debug)]
pub struct TimeUuids {
    node: u64,
    clock_seq: u16,
    last: AtomicU64,
}

impl TimeUuids {
    /// A generator with a random node and clock sequence.
    pub fn new() -> TimeUuids {
        TimeUuids {
            node: rand::random::<u64>() & 0xFFFF_FFFF_FFFF | 0x0100_0000_0000,
            clock_seq: rand::random::<u16>() & 0x3FFF,
            last: AtomicU64::new(0),
        }
    }

    /// A new timeuuid for wall-clock millisecond `ms`.
    pub fn make(&self, ms: u64) -> u128 {
        let wanted = ms.saturating_mul(10_000).saturating_add(UUID_EPOCH_OFFSET);
        let mut prev = self.last.load(Ordering::SeqCst);
        let ticks = loop {
            let next = wanted.max(prev.saturating_add(1));
            match self
                .last
                .compare_exchange(prev, next, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => break next,
                Err(actual) => prev = actual,
            }
        };
        let time_low = ticks & 0xFFFF_FFFF;
        let time_mid = (ticks >> 32) & 0xFFFF;
        let time_hi = ((ticks >> 48) & 0x0FFF) | 0x1000;
        let hi = (time_low << 32) | (time_mid << 16) | time_hi;
        let lo = (u64::from(0x8000 | self.clock_seq) << 48) | self.node;
        (u128::from(hi) << 64) | u128::from(lo)
    }
}

impl Default for TimeUuids {
    fn default() -> Self {
        TimeUuids::new()
    }
}

/// The Unix time in milliseconds of a version-1 UUID.
pub fn timeuuid_millis(u: u128) -> i64 {
    let ticks = cql_lite::types::timeuuid_order_key(u);
    (ticks as i64 - UUID_EPOCH_OFFSET as i64).div_euclid(10_000)
}

/// A random version-4 UUID.
pub fn random_uuid() -> u128 {
    let r = rand::random::<u128>();
    (r & !(0xF << 76) & !(0x3 << 62)) | (0x4 << 76) | (0x2 << 62)
}

/// What evaluating terms needs: the clock and the timeuuid generator.
pub struct EvalContext<'a> {
    /// The node's clock.
    pub clock: &'a HybridClock,
    /// The `now()` generator.
    pub uuids: &'a TimeUuids,
}

impl EvalContext<'_> {
    /// The value of `term` for a column (or parameter) of type `ty`, named
    /// `name` in messages.
    pub fn eval(&self, term: &Term, ty: DataType, name: &str) -> Result<Value, QueryError> {
        match term {
            Term::Literal(lit) => {
                literal_to_value(lit, ty).map_err(|e| invalid(e.for_column(name)))
            }
            Term::BindMarker(_) => Err(invalid(format!(
                "No value was bound for the bind marker of {name}"
            ))),
            Term::FunctionCall { name: fname, args } => {
                let Some(f) = Function::from_name(&fname.name) else {
                    return Err(invalid(format!("Unknown function '{fname}'")));
                };
                let now_ms = self.clock.wall().now_millis();
                let value = match f {
                    Function::Now => Value::TimeUuid(self.uuids.make(now_ms)),
                    Function::Uuid => Value::Uuid(random_uuid()),
                    Function::CurrentTimestamp => Value::Timestamp(now_ms as i64),
                    Function::ToTimestamp => {
                        let arg = args.first().ok_or_else(|| {
                            invalid("Invalid number of arguments in call to function toTimestamp: 1 required but 0 provided")
                        })?;
                        match self.eval(arg, DataType::TimeUuid, name)? {
                            Value::TimeUuid(u) => Value::Timestamp(timeuuid_millis(u)),
                            Value::Null => Value::Null,
                            other => {
                                return Err(invalid(format!(
                                    "Invalid argument for function toTimestamp: {other:?} is not a timeuuid"
                                )))
                            }
                        }
                    }
                };
                match (value, ty) {
                    (Value::TimeUuid(u), DataType::Uuid) => Ok(Value::Uuid(u)),
                    (v, _) if v.data_type().is_none_or(|t| t == ty) => Ok(v),
                    (v, _) => Err(invalid(format!(
                        "Type error: cannot assign result of function {} (type {}) to {name} (type {ty})",
                        f.name(),
                        v.data_type().map(|t| t.name()).unwrap_or("null")
                    ))),
                }
            }
        }
    }

    /// A non-negative integer parameter (`TTL`, `LIMIT`...).
    pub fn eval_int(&self, term: &Term, name: &str) -> Result<Option<i64>, QueryError> {
        match self.eval(term, DataType::BigInt, name)? {
            Value::BigInt(n) => Ok(Some(n)),
            Value::Null => Ok(None),
            other => Err(invalid(format!("Invalid value {other:?} for {name}"))),
        }
    }
}

/// Converts `USING TIMESTAMP` microseconds to an HLC timestamp, keeping
/// order: milliseconds in the high 48 bits, the remaining microseconds in
/// the logical counter.
pub fn micros_to_hlc(micros: i64) -> Result<Timestamp, QueryError> {
    let max_micros = ((1u64 << 48) - 1) * 1000;
    if micros < 0 || micros as u64 > max_micros {
        return Err(invalid(format!(
            "Invalid timestamp {micros}: USING TIMESTAMP takes microseconds since the epoch, between 0 and {max_micros}"
        )));
    }
    let m = micros as u64;
    Ok(Timestamp(((m / 1000) << 16) | (m % 1000)))
}

/// An HLC timestamp in microseconds, as `WRITETIME` shows it (the logical
/// counter counts as microseconds, up to 999).
pub fn hlc_to_micros(ts: Timestamp) -> i64 {
    (ts.millis() * 1000 + u64::from(ts.logical()).min(999)) as i64
}

/// Converts a bound value to the type of its marker: equal types, integer
/// widening, and the text and UUID kinds that hold the same values.
pub fn coerce(value: Value, ty: DataType) -> Option<Value> {
    if value.is_null() || value.data_type() == Some(ty) {
        return Some(value);
    }
    let int = match &value {
        Value::SmallInt(i) => Some(i64::from(*i)),
        Value::Int(i) => Some(i64::from(*i)),
        Value::BigInt(i) => Some(*i),
        _ => None,
    };
    match (value, ty) {
        (_, DataType::SmallInt) if int.is_some() => {
            int.and_then(|i| i16::try_from(i).ok()).map(Value::SmallInt)
        }
        (_, DataType::Int) if int.is_some() => {
            int.and_then(|i| i32::try_from(i).ok()).map(Value::Int)
        }
        (_, DataType::BigInt) if int.is_some() => int.map(Value::BigInt),
        (_, DataType::Timestamp) if int.is_some() => int.map(Value::Timestamp),
        (_, DataType::Double) if int.is_some() => int.map(|i| Value::Double(i as f64)),
        (_, DataType::Float) if int.is_some() => int.map(|i| Value::Float(i as f32)),
        (Value::Float(f), DataType::Double) => Some(Value::Double(f64::from(f))),
        (Value::Text(s), DataType::Ascii) if s.is_ascii() => Some(Value::Ascii(s)),
        (Value::Ascii(s), DataType::Text) => Some(Value::Text(s)),
        (Value::TimeUuid(u), DataType::Uuid) => Some(Value::Uuid(u)),
        (Value::Uuid(u), DataType::TimeUuid) if cql_lite::literal::uuid_version(u) == 1 => {
            Some(Value::TimeUuid(u))
        }
        _ => None,
    }
}

/// The literal that types back to `value` (`None` for a list, which has
/// no literal).
pub fn literal_of(value: &Value) -> Option<Literal> {
    cql_lite::ast::value_to_literal(value)
}
