//! Low-level encoding shared by the SSTable writer and reader: varints, the
//! footer, the block index and the metadata block.
//!
//! Every decoder here works on untrusted bytes: it checks each length against
//! what is left, never allocates more than the input it was given, and
//! reports problems as a reason string that the caller turns into
//! [`StorageError::Corrupt`](crate::storage::StorageError::Corrupt) with the
//! file path and offset.

/// Magic number at the very end of every SSTable file.
pub(crate) const MAGIC: [u8; 8] = *b"ringSST\x1a";
/// Version of the on-disk format written by this code.
pub(crate) const FORMAT_VERSION: u32 = 1;
/// Size of the fixed footer in bytes.
pub(crate) const FOOTER_SIZE: usize = 3 * SECTION_HANDLE_SIZE + 4 + 4 + 8;
/// Size of one encoded [`SectionHandle`].
const SECTION_HANDLE_SIZE: usize = 8 + 8 + 4;
/// Size of the per-data-block checksum trailer.
pub(crate) const BLOCK_TRAILER_SIZE: usize = 4;

/// Appends `v` as an LEB128 varint.
pub(crate) fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// Reads an LEB128 varint at `*pos`, advancing `*pos`. `None` if truncated or
/// longer than 64 bits.
#[inline]
pub(crate) fn get_varint(data: &[u8], pos: &mut usize) -> Option<u64> {
    let first = *data.get(*pos)?;
    if first < 0x80 {
        *pos += 1;
        return Some(u64::from(first));
    }
    let mut result = 0u64;
    let mut shift = 0u32;
    loop {
        let b = *data.get(*pos)?;
        *pos += 1;
        if shift == 63 && b > 1 {
            return None;
        }
        result |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(result);
        }
        shift += 7;
        if shift > 63 {
            return None;
        }
    }
}

/// Reads a varint that must fit in `usize`.
#[inline]
pub(crate) fn get_varint_usize(data: &[u8], pos: &mut usize) -> Option<usize> {
    get_varint(data, pos).and_then(|v| usize::try_from(v).ok())
}

/// Reads a varint length followed by that many bytes.
fn get_bytes<'a>(data: &'a [u8], pos: &mut usize) -> Option<&'a [u8]> {
    let len = get_varint_usize(data, pos)?;
    let end = pos.checked_add(len)?;
    let out = data.get(*pos..end)?;
    *pos = end;
    Some(out)
}

fn put_bytes(buf: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(buf, bytes.len() as u64);
    buf.extend_from_slice(bytes);
}

fn get_u64_le(data: &[u8], pos: usize) -> Option<u64> {
    let bytes = data.get(pos..pos.checked_add(8)?)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(bytes);
    Some(u64::from_le_bytes(a))
}

/// Reads a little-endian `u32` at `pos`.
pub(crate) fn get_u32_le(data: &[u8], pos: usize) -> Option<u32> {
    let bytes = data.get(pos..pos.checked_add(4)?)?;
    let mut a = [0u8; 4];
    a.copy_from_slice(bytes);
    Some(u32::from_le_bytes(a))
}

/// Where a section (index, bloom, metadata) lives and its checksum.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(crate) struct SectionHandle {
    pub offset: u64,
    pub len: u64,
    pub crc: u32,
}

impl SectionHandle {
    fn encode(&self, buf: &mut Vec<u8>) {
        buf.extend_from_slice(&self.offset.to_le_bytes());
        buf.extend_from_slice(&self.len.to_le_bytes());
        buf.extend_from_slice(&self.crc.to_le_bytes());
    }

    fn decode(data: &[u8], pos: usize) -> Option<Self> {
        Some(SectionHandle {
            offset: get_u64_le(data, pos)?,
            len: get_u64_le(data, pos + 8)?,
            crc: get_u32_le(data, pos + 16)?,
        })
    }

    /// End offset of the section, `None` on overflow.
    pub fn end(&self) -> Option<u64> {
        self.offset.checked_add(self.len)
    }
}

/// The fixed-size footer at the end of the file.
///
/// Layout (little endian): index handle, bloom handle, metadata handle (each
/// offset u64, length u64, CRC32C u32), format version u32, CRC32C of the
/// preceding footer bytes u32, magic (8 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Footer {
    pub index: SectionHandle,
    pub bloom: SectionHandle,
    pub meta: SectionHandle,
}

impl Footer {
    /// Encodes the footer (exactly [`FOOTER_SIZE`] bytes).
    pub fn encode(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(FOOTER_SIZE);
        self.index.encode(&mut buf);
        self.bloom.encode(&mut buf);
        self.meta.encode(&mut buf);
        buf.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        let crc = crc32c::crc32c(&buf);
        buf.extend_from_slice(&crc.to_le_bytes());
        buf.extend_from_slice(&MAGIC);
        debug_assert_eq!(buf.len(), FOOTER_SIZE);
        buf
    }

    /// Decodes and checks a footer: magic, checksum, then version.
    pub fn decode(data: &[u8]) -> Result<Self, String> {
        if data.len() != FOOTER_SIZE {
            return Err(format!(
                "footer has {} bytes, expected {FOOTER_SIZE}",
                data.len()
            ));
        }
        let magic_at = FOOTER_SIZE - 8;
        if data[magic_at..] != MAGIC {
            return Err("bad magic number (not an SSTable, or truncated)".into());
        }
        let crc_at = magic_at - 4;
        let stored = get_u32_le(data, crc_at).ok_or("footer truncated")?;
        let computed = crc32c::crc32c(&data[..crc_at]);
        if stored != computed {
            return Err(format!(
                "footer checksum mismatch (stored {stored:08x}, computed {computed:08x})"
            ));
        }
        let version = get_u32_le(data, crc_at - 4).ok_or("footer truncated")?;
        if version != FORMAT_VERSION {
            return Err(format!(
                "unsupported format version {version} (this build reads version {FORMAT_VERSION})"
            ));
        }
        let handle = |i: usize| {
            SectionHandle::decode(data, i * SECTION_HANDLE_SIZE).ok_or("footer truncated")
        };
        Ok(Footer {
            index: handle(0)?,
            bloom: handle(1)?,
            meta: handle(2)?,
        })
    }
}

/// Appends one block-index entry: the block's last key, its offset and the
/// length of its contents (without the 4-byte checksum trailer).
pub(crate) fn encode_index_entry(buf: &mut Vec<u8>, last_key: &[u8], offset: u64, len: u64) {
    put_bytes(buf, last_key);
    put_varint(buf, offset);
    put_varint(buf, len);
}

/// One decoded block-index entry; the key is stored in [`BlockIndex::keys`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct IndexEntry {
    /// The key's first 8 bytes as a big-endian integer (zero-padded): see
    /// [`key_prefix`].
    prefix: u64,
    key_start: usize,
    key_end: usize,
    /// Offset of the block in the file.
    pub offset: u64,
    /// Length of the block contents (without the checksum trailer).
    pub len: usize,
}

/// The in-memory block index: the last key of every data block, its offset
/// and length. All keys live in one buffer to avoid an allocation per block.
#[derive(Debug, Default)]
pub(crate) struct BlockIndex {
    keys: Vec<u8>,
    entries: Vec<IndexEntry>,
}

impl BlockIndex {
    /// Decodes and validates the index section: keys strictly increasing,
    /// blocks contiguous from offset 0 up to `data_end`.
    pub fn decode(data: &[u8], data_end: u64) -> Result<Self, String> {
        let mut index = BlockIndex {
            keys: Vec::new(),
            entries: Vec::new(),
        };
        let mut pos = 0usize;
        let mut expected_offset = 0u64;
        while pos < data.len() {
            let n = index.entries.len();
            let key = get_bytes(data, &mut pos)
                .ok_or_else(|| format!("index entry {n}: truncated key"))?;
            let offset = get_varint(data, &mut pos)
                .ok_or_else(|| format!("index entry {n}: truncated offset"))?;
            let len = get_varint(data, &mut pos)
                .ok_or_else(|| format!("index entry {n}: truncated length"))?;
            if offset != expected_offset {
                return Err(format!(
                    "index entry {n}: block offset {offset}, expected {expected_offset}"
                ));
            }
            if let Some(prev) = index.entries.last() {
                if key <= &index.keys[prev.key_start..prev.key_end] {
                    return Err(format!("index entry {n}: keys out of order"));
                }
            }
            expected_offset = offset
                .checked_add(len)
                .and_then(|e| e.checked_add(BLOCK_TRAILER_SIZE as u64))
                .filter(|&e| e <= data_end)
                .ok_or_else(|| format!("index entry {n}: block extends past the data region"))?;
            let len = usize::try_from(len)
                .map_err(|_| format!("index entry {n}: block length too large"))?;
            let key_start = index.keys.len();
            index.keys.extend_from_slice(key);
            index.entries.push(IndexEntry {
                prefix: key_prefix(key),
                key_start,
                key_end: index.keys.len(),
                offset,
                len,
            });
        }
        if expected_offset != data_end {
            return Err(format!(
                "index covers {expected_offset} bytes of data, data region has {data_end}"
            ));
        }
        Ok(index)
    }

    /// Number of data blocks.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The entry of block `i` (`i < len()`).
    pub fn entry(&self, i: usize) -> Option<&IndexEntry> {
        self.entries.get(i)
    }

    /// The last key of block `i`.
    pub fn key(&self, i: usize) -> Option<&[u8]> {
        let e = self.entries.get(i)?;
        self.keys.get(e.key_start..e.key_end)
    }

    /// Index of the first block whose last key is `>= key` (or `> key` when
    /// `strict`); `len()` if there is none.
    #[inline]
    ///
    /// Most comparisons are decided by the keys' 8-byte prefixes (a row
    /// key starts with its partition's token), kept beside the entries, so
    /// the search touches the key buffer only where prefixes tie.
    pub fn find(&self, key: &[u8], strict: bool) -> usize {
        let prefix = key_prefix(key);
        self.entries.partition_point(|e| {
            let order = e
                .prefix
                .cmp(&prefix)
                .then_with(|| self.keys[e.key_start..e.key_end].cmp(key));
            if strict {
                order.is_le()
            } else {
                order.is_lt()
            }
        })
    }
}

/// A key's first 8 bytes as a big-endian integer, zero-padded when it is
/// shorter. When two keys' prefixes differ, they order the keys as the
/// bytes do: the first differing byte is either a real byte of both, or a
/// padding zero of the shorter key against a byte of the longer one that
/// shares all of the shorter key's bytes (a proper prefix sorts first).
/// Equal prefixes decide nothing ("ab" and "ab\0" both give the same one).
pub(crate) fn key_prefix(key: &[u8]) -> u64 {
    let mut bytes = [0u8; 8];
    let n = key.len().min(8);
    bytes[..n].copy_from_slice(&key[..n]);
    u64::from_be_bytes(bytes)
}

/// The metadata section as stored (the file size is taken from the file).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub(crate) struct MetaRecord {
    pub entries: u64,
    pub partitions: u64,
    pub min_ts: u64,
    pub max_ts: u64,
    pub data_bytes: u64,
    pub min_key: Vec<u8>,
    pub max_key: Vec<u8>,
    pub min_clustering: Vec<u8>,
    pub max_clustering: Vec<u8>,
}

impl MetaRecord {
    /// Encodes the metadata section.
    pub fn encode(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(
            48 + self.min_key.len()
                + self.max_key.len()
                + self.min_clustering.len()
                + self.max_clustering.len(),
        );
        put_varint(&mut buf, self.entries);
        put_varint(&mut buf, self.partitions);
        buf.extend_from_slice(&self.min_ts.to_le_bytes());
        buf.extend_from_slice(&self.max_ts.to_le_bytes());
        put_varint(&mut buf, self.data_bytes);
        put_bytes(&mut buf, &self.min_key);
        put_bytes(&mut buf, &self.max_key);
        put_bytes(&mut buf, &self.min_clustering);
        put_bytes(&mut buf, &self.max_clustering);
        buf
    }

    /// Decodes the metadata section; every field must be present and no
    /// bytes may follow.
    pub fn decode(data: &[u8]) -> Result<Self, String> {
        let mut pos = 0;
        let truncated = |what: &str| format!("metadata truncated at {what}");
        let entries = get_varint(data, &mut pos).ok_or_else(|| truncated("entries"))?;
        let partitions = get_varint(data, &mut pos).ok_or_else(|| truncated("partitions"))?;
        let min_ts = get_u64_le(data, pos).ok_or_else(|| truncated("min_ts"))?;
        let max_ts = get_u64_le(data, pos + 8).ok_or_else(|| truncated("max_ts"))?;
        pos += 16;
        let data_bytes = get_varint(data, &mut pos).ok_or_else(|| truncated("data_bytes"))?;
        let min_key = get_bytes(data, &mut pos).ok_or_else(|| truncated("min_key"))?;
        let max_key = get_bytes(data, &mut pos).ok_or_else(|| truncated("max_key"))?;
        let min_c = get_bytes(data, &mut pos).ok_or_else(|| truncated("min_clustering"))?;
        let max_c = get_bytes(data, &mut pos).ok_or_else(|| truncated("max_clustering"))?;
        if pos != data.len() {
            return Err(format!(
                "{} trailing bytes after metadata",
                data.len() - pos
            ));
        }
        Ok(MetaRecord {
            entries,
            partitions,
            min_ts,
            max_ts,
            data_bytes,
            min_key: min_key.to_vec(),
            max_key: max_key.to_vec(),
            min_clustering: min_c.to_vec(),
            max_clustering: max_c.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_roundtrip_and_rejects_overlong() {
        for v in [
            0u64,
            1,
            127,
            128,
            300,
            u32::MAX as u64,
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut buf = Vec::new();
            put_varint(&mut buf, v);
            let mut pos = 0;
            assert_eq!(get_varint(&buf, &mut pos), Some(v));
            assert_eq!(pos, buf.len());
            // Truncated encodings fail.
            let mut pos = 0;
            assert_eq!(get_varint(&buf[..buf.len() - 1], &mut pos), None);
        }
        let overlong = [0xffu8; 11];
        assert_eq!(get_varint(&overlong, &mut 0), None);
        let mut too_big = vec![0xffu8; 9];
        too_big.push(0x02);
        assert_eq!(get_varint(&too_big, &mut 0), None);
    }

    #[test]
    fn footer_roundtrip() {
        let f = Footer {
            index: SectionHandle {
                offset: 1,
                len: 2,
                crc: 3,
            },
            bloom: SectionHandle {
                offset: 4,
                len: 5,
                crc: 6,
            },
            meta: SectionHandle {
                offset: 7,
                len: 8,
                crc: 9,
            },
        };
        let bytes = f.encode();
        assert_eq!(bytes.len(), FOOTER_SIZE);
        assert_eq!(Footer::decode(&bytes), Ok(f));
    }

    #[test]
    fn meta_roundtrip_and_trailing_bytes() {
        let m = MetaRecord {
            entries: 10,
            partitions: 3,
            min_ts: 5,
            max_ts: u64::MAX,
            data_bytes: 4096,
            min_key: b"a".to_vec(),
            max_key: b"zz".to_vec(),
            min_clustering: vec![],
            max_clustering: b"q".to_vec(),
        };
        let mut bytes = m.encode();
        assert_eq!(MetaRecord::decode(&bytes), Ok(m));
        bytes.push(0);
        assert!(MetaRecord::decode(&bytes).is_err());
    }

    /// Keys over a tiny alphabet with zeros, so that prefixes tie, keys
    /// are proper prefixes of each other and padding meets real zeros.
    fn small_key() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        proptest::collection::vec(proptest::sample::select(vec![0u8, 1, 255]), 0..12)
    }

    proptest::proptest! {
        /// Unequal prefixes order two keys as their bytes do.
        #[test]
        fn unequal_prefixes_order_keys_as_bytes(a in small_key(), b in small_key()) {
            let (pa, pb) = (key_prefix(&a), key_prefix(&b));
            if pa != pb {
                proptest::prop_assert_eq!(pa.cmp(&pb), a.cmp(&b));
            }
        }

        /// The index search finds the same block as a plain scan of the
        /// blocks' last keys, for keys inside, between and outside them.
        #[test]
        fn index_search_agrees_with_a_scan(
            keys in proptest::collection::btree_set(small_key(), 1..40),
            probes in proptest::collection::vec(small_key(), 1..20),
        ) {
            let mut data = Vec::new();
            let block_len = 10u64;
            for (i, k) in keys.iter().enumerate() {
                encode_index_entry(&mut data, k, i as u64 * (block_len + BLOCK_TRAILER_SIZE as u64), block_len);
            }
            let data_end = keys.len() as u64 * (block_len + BLOCK_TRAILER_SIZE as u64);
            let index = BlockIndex::decode(&data, data_end).expect("a valid index");
            let last_keys: Vec<&Vec<u8>> = keys.iter().collect();
            for probe in probes.iter().chain(keys.iter()) {
                let at_least = last_keys.iter().position(|k| k.as_slice() >= probe.as_slice());
                let above = last_keys.iter().position(|k| k.as_slice() > probe.as_slice());
                proptest::prop_assert_eq!(index.find(probe, false), at_least.unwrap_or(keys.len()));
                proptest::prop_assert_eq!(index.find(probe, true), above.unwrap_or(keys.len()));
            }
        }
    }
}
