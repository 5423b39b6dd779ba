//! Order-preserving key encoding.
//!
//! The storage engine compares keys as plain bytes. This module turns the
//! typed key of a row into bytes whose bytewise order is the typed order:
//!
//! ```text
//! partition header key:  token(8, BE) | pk length(2, BE) | partition components | 0x00
//! row key:               token(8, BE) | pk length(2, BE) | partition components | 0x01 | clustering components
//! ```
//!
//! The length field lets the engine find the partition prefix of any key
//! without the schema (for bloom filters and partition-level merges). It
//! orders partitions that share a token by length, then bytes: any fixed
//! order works there, since token order is what the ring needs.
//!
//! Every component encoding is prefix-free, so a concatenation of components
//! compares like the tuple of components. A descending clustering column has
//! every byte of its encoding inverted, which reverses its order. The header
//! of a partition (its partition tombstone and range tombstones) sorts before
//! all of its rows.

use cql_lite::{DataType, Value};
use siphasher::sip::SipHasher13;
use std::hash::Hasher;

/// The sort order of a clustering column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum ClusteringOrder {
    /// Ascending (the default).
    Asc,
    /// Descending.
    Desc,
}

/// A 64-bit ring position: SipHash of the serialized partition key.
pub type Token = u64;

/// Errors of key encoding and decoding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// A key component was NULL.
    #[error("key component {index} is null; primary key columns must have a value")]
    NullComponent {
        /// Position of the component.
        index: usize,
    },
    /// A component's value does not have the column's type.
    #[error("key component {index} should be {expected} but is {found}")]
    TypeMismatch {
        /// Position of the component.
        index: usize,
        /// The column's type.
        expected: DataType,
        /// The value's type.
        found: String,
    },
    /// A partition key longer than [`MAX_PARTITION_KEY_BYTES`] serialized.
    #[error("partition key is {len} bytes serialized; the limit is 65535")]
    TooLong {
        /// Its serialized length.
        len: usize,
    },
    /// Encoded bytes that do not decode.
    #[error("malformed encoded key at byte {offset}: {reason}")]
    Malformed {
        /// Byte offset in the encoded key.
        offset: usize,
        /// What was wrong.
        reason: &'static str,
    },
}

const HEADER_TAG: u8 = 0x00;
const ROW_TAG: u8 = 0x01;
const SIP_KEY: (u64, u64) = (0x7269_6e67_6462_2d31, 0x7061_7274_6974_696f);

/// The token of a serialized partition key (see [`serialize_partition_key`]).
pub fn token_of(serialized_partition_key: &[u8]) -> Token {
    let mut hasher = SipHasher13::new_with_keys(SIP_KEY.0, SIP_KEY.1);
    hasher.write(serialized_partition_key);
    hasher.finish()
}

/// The largest serialized partition key, in bytes (as in Cassandra).
pub const MAX_PARTITION_KEY_BYTES: usize = u16::MAX as usize;

/// Serializes the partition key components (the input of the partitioner).
pub fn serialize_partition_key(
    components: &[Value],
    types: &[DataType],
) -> Result<Vec<u8>, KeyError> {
    if components.len() != types.len() {
        return Err(KeyError::Malformed {
            offset: 0,
            reason: "partition key needs one value per partition key column",
        });
    }
    let mut out = Vec::with_capacity(16);
    encode_components(&mut out, components, types, &[])?;
    if out.len() > MAX_PARTITION_KEY_BYTES {
        return Err(KeyError::TooLong { len: out.len() });
    }
    Ok(out)
}

/// The key prefix shared by a partition's header and all of its rows:
/// token, length, then the serialized partition key. Keys longer than
/// [`MAX_PARTITION_KEY_BYTES`] are cut to that length (callers validate
/// with [`serialize_partition_key`] first).
pub fn partition_prefix(serialized_partition_key: &[u8]) -> Vec<u8> {
    let pk =
        &serialized_partition_key[..serialized_partition_key.len().min(MAX_PARTITION_KEY_BYTES)];
    let mut out = Vec::with_capacity(10 + pk.len() + 1);
    out.extend_from_slice(&token_of(pk).to_be_bytes());
    out.extend_from_slice(&(pk.len() as u16).to_be_bytes());
    out.extend_from_slice(pk);
    out
}

/// The token of an encoded key (its first eight bytes).
pub fn token_of_key(key: &[u8]) -> Result<Token, KeyError> {
    match key.get(..8) {
        Some(bytes) => {
            let mut raw = [0u8; 8];
            raw.copy_from_slice(bytes);
            Ok(u64::from_be_bytes(raw))
        }
        None => Err(KeyError::Malformed {
            offset: key.len(),
            reason: "shorter than a token",
        }),
    }
}

/// Splits an encoded key into its kind and partition prefix length, without
/// the schema.
pub fn classify(key: &[u8]) -> Result<KeyKind, KeyError> {
    let Some(len_bytes) = key.get(8..10) else {
        return Err(KeyError::Malformed {
            offset: key.len(),
            reason: "shorter than token and length",
        });
    };
    let pos = 10 + u16::from_be_bytes([len_bytes[0], len_bytes[1]]) as usize;
    match key.get(pos) {
        Some(&HEADER_TAG) if key.len() == pos + 1 => Ok(KeyKind::Header { partition_len: pos }),
        Some(&ROW_TAG) => Ok(KeyKind::Row { partition_len: pos }),
        _ => Err(KeyError::Malformed {
            offset: pos.min(key.len()),
            reason: "expected a header or row tag after the partition key",
        }),
    }
}

/// The key of a partition's header entry (partition and range tombstones).
pub fn header_key(prefix: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(prefix.len() + 1);
    out.extend_from_slice(prefix);
    out.push(HEADER_TAG);
    out
}

/// The key of a row: partition prefix, row tag, encoded clustering columns.
pub fn row_key(prefix: &[u8], encoded_clustering: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(prefix.len() + 1 + encoded_clustering.len());
    out.extend_from_slice(prefix);
    out.push(ROW_TAG);
    out.extend_from_slice(encoded_clustering);
    out
}

/// The first key of a partition's rows (all rows sort at or after it).
pub fn rows_start(prefix: &[u8]) -> Vec<u8> {
    row_key(prefix, &[])
}

/// The smallest key greater than every key of the partition (exclusive end).
pub fn partition_end(prefix: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(prefix.len() + 1);
    out.extend_from_slice(prefix);
    out.push(ROW_TAG + 1);
    out
}

/// Encodes clustering components (a full key or a prefix of it).
pub fn encode_clustering(
    components: &[Value],
    types: &[DataType],
    orders: &[ClusteringOrder],
) -> Result<Vec<u8>, KeyError> {
    let mut out = Vec::with_capacity(16);
    encode_components(&mut out, components, types, orders)?;
    Ok(out)
}

/// The smallest byte string greater than every string that starts with
/// `prefix`, or `None` when there is none (all 0xFF).
pub fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut out = prefix.to_vec();
    while let Some(last) = out.pop() {
        if last != 0xFF {
            out.push(last + 1);
            return Some(out);
        }
    }
    None
}

/// What kind of entry an encoded key names, and where its parts are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// A partition header; `partition_len` bytes of prefix precede the tag.
    Header {
        /// Length of the partition prefix (token + partition key).
        partition_len: usize,
    },
    /// A row; clustering bytes start after the tag.
    Row {
        /// Length of the partition prefix (token + partition key).
        partition_len: usize,
    },
}

impl KeyKind {
    /// Length of the partition prefix.
    pub fn partition_len(self) -> usize {
        match self {
            KeyKind::Header { partition_len } | KeyKind::Row { partition_len } => partition_len,
        }
    }
}

/// Decodes the partition key components from a partition prefix (token
/// followed by the serialized partition key).
pub fn decode_partition_key(
    prefix: &[u8],
    partition_types: &[DataType],
) -> Result<Vec<Value>, KeyError> {
    if prefix.len() < 10 {
        return Err(KeyError::Malformed {
            offset: prefix.len(),
            reason: "shorter than token and length",
        });
    }
    decode_all(&prefix[10..], partition_types, &[], 10)
}

/// Decodes clustering components (as many as `types` lists).
pub fn decode_clustering(
    bytes: &[u8],
    types: &[DataType],
    orders: &[ClusteringOrder],
) -> Result<Vec<Value>, KeyError> {
    decode_all(bytes, types, orders, 0)
}

fn decode_all(
    bytes: &[u8],
    types: &[DataType],
    orders: &[ClusteringOrder],
    base: usize,
) -> Result<Vec<Value>, KeyError> {
    let mut pos = 0;
    let mut out = Vec::with_capacity(types.len());
    for (i, &ty) in types.iter().enumerate() {
        let order = orders.get(i).copied().unwrap_or(ClusteringOrder::Asc);
        let (value, used) = decode_component(&bytes[pos..], ty, order, base + pos)?;
        out.push(value);
        pos += used;
    }
    if pos != bytes.len() {
        return Err(KeyError::Malformed {
            offset: base + pos,
            reason: "trailing bytes after the last component",
        });
    }
    Ok(out)
}

fn encode_components(
    out: &mut Vec<u8>,
    components: &[Value],
    types: &[DataType],
    orders: &[ClusteringOrder],
) -> Result<(), KeyError> {
    for (index, value) in components.iter().enumerate() {
        let Some(&ty) = types.get(index) else {
            return Err(KeyError::Malformed {
                offset: out.len(),
                reason: "more key components than key columns",
            });
        };
        let start = out.len();
        encode_component(out, value, ty, index)?;
        if orders.get(index) == Some(&ClusteringOrder::Desc) {
            for byte in &mut out[start..] {
                *byte = !*byte;
            }
        }
    }
    Ok(())
}

fn encode_component(
    out: &mut Vec<u8>,
    value: &Value,
    ty: DataType,
    index: usize,
) -> Result<(), KeyError> {
    match (ty, value) {
        (_, Value::Null) => return Err(KeyError::NullComponent { index }),
        (DataType::Int, Value::Int(v)) => {
            out.extend_from_slice(&((*v as u32) ^ (1 << 31)).to_be_bytes())
        }
        (DataType::Date, Value::Date(v)) => {
            out.extend_from_slice(&((*v as u32) ^ (1 << 31)).to_be_bytes())
        }
        (DataType::BigInt, Value::BigInt(v)) | (DataType::Timestamp, Value::Timestamp(v)) => {
            out.extend_from_slice(&((*v as u64) ^ (1 << 63)).to_be_bytes())
        }
        (DataType::SmallInt, Value::SmallInt(v)) => {
            out.extend_from_slice(&((*v as u16) ^ (1 << 15)).to_be_bytes())
        }
        (DataType::Float, Value::Float(v)) => {
            let bits = v.to_bits();
            let ordered = if bits >> 31 == 1 {
                !bits
            } else {
                bits ^ (1 << 31)
            };
            out.extend_from_slice(&ordered.to_be_bytes());
        }
        (DataType::Double, Value::Double(v)) => {
            let bits = v.to_bits();
            let ordered = if bits >> 63 == 1 {
                !bits
            } else {
                bits ^ (1 << 63)
            };
            out.extend_from_slice(&ordered.to_be_bytes());
        }
        (DataType::Boolean, Value::Boolean(v)) => out.push(u8::from(*v)),
        (DataType::Text, Value::Text(s)) | (DataType::Ascii, Value::Ascii(s)) => {
            encode_bytes(out, s.as_bytes())
        }
        (DataType::Blob, Value::Blob(b)) => encode_bytes(out, b),
        (DataType::Uuid, Value::Uuid(u)) => out.extend_from_slice(&u.to_be_bytes()),
        (DataType::TimeUuid, Value::TimeUuid(u)) => {
            out.extend_from_slice(&cql_lite::types::timeuuid_order_key(*u).to_be_bytes());
            out.extend_from_slice(&u.to_be_bytes());
        }
        (expected, other) => {
            return Err(KeyError::TypeMismatch {
                index,
                expected,
                found: other
                    .data_type()
                    .map(|t| t.name().to_string())
                    .unwrap_or_else(|| "null".into()),
            })
        }
    }
    Ok(())
}

/// Variable-length bytes: 0x00 is escaped as 0x00 0xFF, the end is 0x00 0x01.
fn encode_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    for &b in bytes {
        out.push(b);
        if b == 0 {
            out.push(0xFF);
        }
    }
    out.extend_from_slice(&[0x00, 0x01]);
}

fn take<const N: usize>(bytes: &[u8], invert: bool, offset: usize) -> Result<[u8; N], KeyError> {
    let Some(slice) = bytes.get(..N) else {
        return Err(KeyError::Malformed {
            offset,
            reason: "key ends inside a fixed-width component",
        });
    };
    let mut out = [0u8; N];
    for (dst, src) in out.iter_mut().zip(slice) {
        *dst = if invert { !*src } else { *src };
    }
    Ok(out)
}

fn decode_component(
    bytes: &[u8],
    ty: DataType,
    order: ClusteringOrder,
    offset: usize,
) -> Result<(Value, usize), KeyError> {
    let inv = order == ClusteringOrder::Desc;
    let value = match ty {
        DataType::Int => {
            let raw = u32::from_be_bytes(take::<4>(bytes, inv, offset)?);
            return Ok((Value::Int((raw ^ (1 << 31)) as i32), 4));
        }
        DataType::Date => {
            let raw = u32::from_be_bytes(take::<4>(bytes, inv, offset)?);
            return Ok((Value::Date((raw ^ (1 << 31)) as i32), 4));
        }
        DataType::BigInt | DataType::Timestamp => {
            let raw = u64::from_be_bytes(take::<8>(bytes, inv, offset)?);
            let v = (raw ^ (1 << 63)) as i64;
            let value = if ty == DataType::BigInt {
                Value::BigInt(v)
            } else {
                Value::Timestamp(v)
            };
            return Ok((value, 8));
        }
        DataType::SmallInt => {
            let raw = u16::from_be_bytes(take::<2>(bytes, inv, offset)?);
            return Ok((Value::SmallInt((raw ^ (1 << 15)) as i16), 2));
        }
        DataType::Float => {
            let ordered = u32::from_be_bytes(take::<4>(bytes, inv, offset)?);
            let bits = if ordered >> 31 == 1 {
                ordered ^ (1 << 31)
            } else {
                !ordered
            };
            return Ok((Value::Float(f32::from_bits(bits)), 4));
        }
        DataType::Double => {
            let ordered = u64::from_be_bytes(take::<8>(bytes, inv, offset)?);
            let bits = if ordered >> 63 == 1 {
                ordered ^ (1 << 63)
            } else {
                !ordered
            };
            return Ok((Value::Double(f64::from_bits(bits)), 8));
        }
        DataType::Boolean => {
            let [b] = take::<1>(bytes, inv, offset)?;
            if b > 1 {
                return Err(KeyError::Malformed {
                    offset,
                    reason: "boolean byte is neither 0 nor 1",
                });
            }
            return Ok((Value::Boolean(b == 1), 1));
        }
        DataType::Uuid => {
            let raw = u128::from_be_bytes(take::<16>(bytes, inv, offset)?);
            return Ok((Value::Uuid(raw), 16));
        }
        DataType::TimeUuid => {
            let all = take::<24>(bytes, inv, offset)?;
            let mut raw = [0u8; 16];
            raw.copy_from_slice(&all[8..]);
            return Ok((Value::TimeUuid(u128::from_be_bytes(raw)), 24));
        }
        DataType::Text | DataType::Ascii | DataType::Blob => {
            let (raw, used) = decode_bytes(bytes, inv, offset)?;
            let value = match ty {
                DataType::Blob => Value::Blob(raw),
                _ => {
                    let text = String::from_utf8(raw).map_err(|_| KeyError::Malformed {
                        offset,
                        reason: "text component is not UTF-8",
                    })?;
                    if ty == DataType::Ascii {
                        Value::Ascii(text)
                    } else {
                        Value::Text(text)
                    }
                }
            };
            (value, used)
        }
    };
    Ok(value)
}

fn decode_bytes(bytes: &[u8], invert: bool, offset: usize) -> Result<(Vec<u8>, usize), KeyError> {
    let mut out = Vec::new();
    let mut i = 0;
    let get = |i: usize| bytes.get(i).map(|b| if invert { !*b } else { *b });
    loop {
        let Some(b) = get(i) else {
            return Err(KeyError::Malformed {
                offset: offset + i,
                reason: "variable-length component has no terminator",
            });
        };
        if b != 0 {
            out.push(b);
            i += 1;
            continue;
        }
        match get(i + 1) {
            Some(0xFF) => {
                out.push(0);
                i += 2;
            }
            Some(0x01) => return Ok((out, i + 2)),
            _ => {
                return Err(KeyError::Malformed {
                    offset: offset + i,
                    reason: "bad escape in variable-length component",
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::cmp::Ordering;

    fn value_of(ty: DataType) -> BoxedStrategy<Value> {
        match ty {
            DataType::Int => any::<i32>().prop_map(Value::Int).boxed(),
            DataType::BigInt => any::<i64>().prop_map(Value::BigInt).boxed(),
            DataType::SmallInt => any::<i16>().prop_map(Value::SmallInt).boxed(),
            DataType::Float => any::<f32>().prop_map(Value::Float).boxed(),
            DataType::Double => prop_oneof![
                any::<f64>(),
                Just(f64::NAN),
                Just(-0.0),
                Just(0.0),
                Just(f64::INFINITY),
                Just(f64::NEG_INFINITY)
            ]
            .prop_map(Value::Double)
            .boxed(),
            DataType::Boolean => any::<bool>().prop_map(Value::Boolean).boxed(),
            DataType::Text => "[a\\x00\u{e9}b]{0,6}".prop_map(Value::Text).boxed(),
            DataType::Ascii => "[a-c\\x00]{0,6}".prop_map(Value::Ascii).boxed(),
            DataType::Blob => proptest::collection::vec(
                prop_oneof![Just(0u8), Just(1), Just(0xFF), any::<u8>()],
                0..6,
            )
            .prop_map(Value::Blob)
            .boxed(),
            DataType::Timestamp => any::<i64>().prop_map(Value::Timestamp).boxed(),
            DataType::Date => any::<i32>().prop_map(Value::Date).boxed(),
            DataType::Uuid => any::<u128>().prop_map(Value::Uuid).boxed(),
            DataType::TimeUuid => any::<u128>().prop_map(Value::TimeUuid).boxed(),
        }
    }

    fn schema() -> impl Strategy<Value = Vec<(DataType, ClusteringOrder)>> {
        proptest::collection::vec(
            (
                proptest::sample::select(DataType::ALL.to_vec()),
                prop_oneof![Just(ClusteringOrder::Asc), Just(ClusteringOrder::Desc)],
            ),
            1..4,
        )
    }

    fn two_keys(
    ) -> impl Strategy<Value = (Vec<(DataType, ClusteringOrder)>, Vec<Value>, Vec<Value>)> {
        schema().prop_flat_map(|cols| {
            let gen = cols.iter().map(|(t, _)| value_of(*t)).collect::<Vec<_>>();
            (Just(cols), gen.clone(), gen)
        })
    }

    fn typed_cmp(a: &[Value], b: &[Value], orders: &[ClusteringOrder]) -> Ordering {
        for ((x, y), o) in a.iter().zip(b).zip(orders) {
            let c = x.cmp(y);
            let c = if *o == ClusteringOrder::Desc {
                c.reverse()
            } else {
                c
            };
            if c != Ordering::Equal {
                return c;
            }
        }
        Ordering::Equal
    }

    proptest! {
        #[test]
        fn byte_order_is_typed_order((cols, a, b) in two_keys()) {
            let types: Vec<_> = cols.iter().map(|c| c.0).collect();
            let orders: Vec<_> = cols.iter().map(|c| c.1).collect();
            let ea = encode_clustering(&a, &types, &orders).unwrap();
            let eb = encode_clustering(&b, &types, &orders).unwrap();
            prop_assert_eq!(ea.cmp(&eb), typed_cmp(&a, &b, &orders));
            // And the other direction: equal bytes means equal typed keys.
            prop_assert_eq!(ea == eb, typed_cmp(&a, &b, &orders) == Ordering::Equal);
        }

        #[test]
        fn decode_inverts_encode((cols, a, _b) in two_keys()) {
            let types: Vec<_> = cols.iter().map(|c| c.0).collect();
            let orders: Vec<_> = cols.iter().map(|c| c.1).collect();
            let encoded = encode_clustering(&a, &types, &orders).unwrap();
            let decoded = decode_clustering(&encoded, &types, &orders).unwrap();
            prop_assert_eq!(&decoded, &a);
            // Exact representation too (NaN payloads, -0.0).
            prop_assert_eq!(format!("{decoded:?}"), format!("{a:?}"));
        }

        #[test]
        fn prefix_sorts_before_extensions((cols, a, _b) in two_keys()) {
            let types: Vec<_> = cols.iter().map(|c| c.0).collect();
            let orders: Vec<_> = cols.iter().map(|c| c.1).collect();
            let full = encode_clustering(&a, &types, &orders).unwrap();
            let prefix = encode_clustering(&a[..1], &types, &orders).unwrap();
            prop_assert!(full.starts_with(&prefix));
            let succ = prefix_successor(&prefix);
            prop_assert!(succ.map(|s| full < s).unwrap_or(true));
        }

        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..40), cols in schema()) {
            let types: Vec<_> = cols.iter().map(|c| c.0).collect();
            let orders: Vec<_> = cols.iter().map(|c| c.1).collect();
            let _ = decode_clustering(&bytes, &types, &orders);
            let _ = classify(&bytes);
        }

        #[test]
        fn header_sorts_before_rows_and_rows_stay_in_partition(
            pk in "[a-z]{0,5}", ck in any::<i64>(), other in "[a-z]{0,5}"
        ) {
            let spk = serialize_partition_key(&[Value::Text(pk.clone())], &[DataType::Text]).unwrap();
            let prefix = partition_prefix(&spk);
            let header = header_key(&prefix);
            let row = row_key(&prefix, &encode_clustering(&[Value::BigInt(ck)], &[DataType::BigInt], &[ClusteringOrder::Asc]).unwrap());
            prop_assert!(header < rows_start(&prefix));
            prop_assert!(rows_start(&prefix) <= row);
            prop_assert!(row < partition_end(&prefix));
            prop_assert_eq!(classify(&header).unwrap(), KeyKind::Header { partition_len: prefix.len() });
            prop_assert_eq!(classify(&row).unwrap(), KeyKind::Row { partition_len: prefix.len() });
            prop_assert_eq!(decode_partition_key(&prefix, &[DataType::Text]).unwrap(), vec![Value::Text(pk.clone())]);
            prop_assert_eq!(token_of_key(&row).unwrap(), token_of(&spk));
            // Another partition's keys never fall inside this partition's range.
            let ospk = serialize_partition_key(&[Value::Text(other)], &[DataType::Text]).unwrap();
            if ospk != spk {
                let oprefix = partition_prefix(&ospk);
                let orow = row_key(&oprefix, &[]);
                prop_assert!(orow < header_key(&prefix) || orow >= partition_end(&prefix));
            }
        }
    }

    #[test]
    fn null_and_mistyped_components_are_errors() {
        assert_eq!(
            encode_clustering(&[Value::Null], &[DataType::Int], &[]),
            Err(KeyError::NullComponent { index: 0 })
        );
        assert!(matches!(
            encode_clustering(&[Value::Text("x".into())], &[DataType::Int], &[]),
            Err(KeyError::TypeMismatch { index: 0, .. })
        ));
    }
}
