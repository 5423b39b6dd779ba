//! Data blocks.
//!
//! A block is a run of entries followed by its restart array:
//!
//! ```text
//! entry*  restart_offset: u32 LE * n  n: u32 LE
//! entry = shared: varint, unshared: varint, value_len: varint,
//!         key[shared..]: bytes, value: bytes
//! ```
//!
//! Each key is stored as the length of the prefix it shares with the previous
//! key plus the rest. Every [`RESTART_INTERVAL`] entries the prefix sharing
//! restarts (`shared == 0`) and the entry's offset goes into the restart
//! array, so a lookup binary-searches the restart points and then scans at
//! most one interval. On disk each block is followed by the CRC32C of its
//! bytes (added by the writer, checked by the reader before decoding).

use std::sync::Arc;

use super::format::{get_u32_le, get_varint_usize, put_varint};

/// Entries between two restart points.
pub(crate) const RESTART_INTERVAL: usize = 16;

/// Builds one data block in memory.
#[derive(Debug, Default)]
pub(crate) struct BlockBuilder {
    buf: Vec<u8>,
    restarts: Vec<u32>,
    last_key: Vec<u8>,
    /// Entries in the block.
    count: usize,
    /// Entries since the last restart point.
    since_restart: usize,
}

impl BlockBuilder {
    /// Appends an entry. The caller guarantees keys are strictly increasing
    /// and the block stays under 4 GiB.
    pub fn add(&mut self, key: &[u8], value: &[u8]) {
        let shared = if self.count == 0 || self.since_restart == RESTART_INTERVAL {
            self.restarts.push(self.buf.len() as u32);
            self.since_restart = 0;
            0
        } else {
            common_prefix(&self.last_key, key)
        };
        put_varint(&mut self.buf, shared as u64);
        put_varint(&mut self.buf, (key.len() - shared) as u64);
        put_varint(&mut self.buf, value.len() as u64);
        self.buf.extend_from_slice(&key[shared..]);
        self.buf.extend_from_slice(value);
        self.last_key.truncate(shared);
        self.last_key.extend_from_slice(&key[shared..]);
        self.count += 1;
        self.since_restart += 1;
    }

    /// Size of the block if it were finished now.
    pub fn estimated_size(&self) -> usize {
        self.buf.len() + 4 * self.restarts.len() + 4
    }

    /// True if no entry was added since the last [`finish_into`](Self::finish_into).
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The last key added.
    pub fn last_key(&self) -> &[u8] {
        &self.last_key
    }

    /// Appends the finished block to `out` and resets the builder.
    pub fn finish_into(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.buf);
        for r in &self.restarts {
            out.extend_from_slice(&r.to_le_bytes());
        }
        out.extend_from_slice(&(self.restarts.len() as u32).to_le_bytes());
        self.buf.clear();
        self.restarts.clear();
        self.last_key.clear();
        self.count = 0;
    }
}

/// Length of the common prefix of `a` and `b`.
#[inline]
pub(crate) fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// One decoded entry header; ranges index into the block data.
#[derive(Clone, Copy, Debug)]
struct EntryRef {
    shared: usize,
    key_start: usize,
    key_end: usize,
    value_end: usize,
}

/// Reason reported when a (validated) block turns out malformed anyway.
const MALFORMED: &str = "malformed entry";

/// A data block whose checksum and structure were verified: every entry
/// decodes, restart points sit on entries with no shared prefix, keys are
/// strictly increasing and lie between the neighbouring index keys.
#[derive(Debug)]
pub(crate) struct Block {
    data: Vec<u8>,
    restarts_start: usize,
    num_restarts: usize,
}

impl Block {
    /// Validates `data` (the block without its checksum trailer).
    /// `prev_last` is the last key of the previous block (every key here must
    /// be greater) and `last` the index key of this block (its last key).
    pub fn decode(data: Vec<u8>, prev_last: Option<&[u8]>, last: &[u8]) -> Result<Self, String> {
        let n = data.len();
        if n < 4 {
            return Err(format!("block of {n} bytes is too short"));
        }
        let num_restarts = get_u32_le(&data, n - 4).ok_or("block too short")? as usize;
        let restarts_start = num_restarts
            .checked_mul(4)
            .and_then(|r| (n - 4).checked_sub(r))
            .ok_or_else(|| format!("restart count {num_restarts} does not fit the block"))?;
        if num_restarts == 0 {
            return Err("block has no restart points".into());
        }
        let block = Block {
            data,
            restarts_start,
            num_restarts,
        };
        // Walk every entry once.
        let mut key: Vec<u8> = Vec::with_capacity(last.len());
        let mut pos = 0usize;
        let mut next_restart = 0usize;
        let mut entries = 0usize;
        while pos < restarts_start {
            let e = block
                .entry_at(pos)
                .ok_or_else(|| format!("malformed entry at block offset {pos}"))?;
            let is_restart =
                next_restart < num_restarts && block.restart(next_restart) == Some(pos);
            if is_restart {
                next_restart += 1;
                if e.shared != 0 {
                    return Err(format!(
                        "restart entry at block offset {pos} shares a prefix"
                    ));
                }
            } else if entries == 0 {
                return Err("first entry is not a restart point".into());
            }
            if e.shared > key.len() {
                return Err(format!(
                    "entry at block offset {pos} shares more than the previous key"
                ));
            }
            let suffix = &block.data[e.key_start..e.key_end];
            let ordered = if entries == 0 {
                key.extend_from_slice(suffix);
                prev_last.is_none_or(|p| key.as_slice() > p)
            } else {
                // The new key is greater iff its first differing byte is.
                let old_tail = &key[e.shared..];
                let ok = suffix > old_tail;
                key.truncate(e.shared);
                key.extend_from_slice(suffix);
                ok
            };
            if !ordered {
                return Err(format!("key at block offset {pos} is out of order"));
            }
            entries += 1;
            pos = e.value_end;
        }
        if pos != restarts_start {
            return Err("entries overrun the restart array".into());
        }
        if next_restart != num_restarts {
            return Err("restart point does not start an entry".into());
        }
        if key.as_slice() != last {
            return Err("last key of the block differs from the index".into());
        }
        Ok(block)
    }

    /// Bytes held by this block (for cache accounting).
    pub fn size(&self) -> usize {
        self.data.len()
    }

    #[inline]
    fn restart(&self, i: usize) -> Option<usize> {
        if i >= self.num_restarts {
            return None;
        }
        get_u32_le(&self.data, self.restarts_start + 4 * i).map(|v| v as usize)
    }

    #[inline]
    fn entry_at(&self, pos: usize) -> Option<EntryRef> {
        let data = &self.data[..self.restarts_start];
        let mut p = pos;
        let shared = get_varint_usize(data, &mut p)?;
        let unshared = get_varint_usize(data, &mut p)?;
        let value_len = get_varint_usize(data, &mut p)?;
        let key_end = p.checked_add(unshared)?;
        let value_end = key_end.checked_add(value_len)?;
        if value_end > data.len() {
            return None;
        }
        Some(EntryRef {
            shared,
            key_start: p,
            key_end,
            value_end,
        })
    }

    /// The full key of restart point `i` (restart entries share nothing).
    #[inline]
    fn restart_key(&self, i: usize) -> Option<&[u8]> {
        let e = self.entry_at(self.restart(i)?)?;
        if e.shared != 0 {
            return None;
        }
        self.data.get(e.key_start..e.key_end)
    }

    /// Number of restart points `r` whose key is `< target` (or `<= target`
    /// when `inclusive`).
    fn restarts_before(&self, target: &[u8], inclusive: bool) -> Result<usize, &'static str> {
        let (mut lo, mut hi) = (0usize, self.num_restarts);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let k = self.restart_key(mid).ok_or(MALFORMED)?;
            let before = if inclusive { k <= target } else { k < target };
            if before {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }

    /// Exact lookup without allocating: binary search over restart points,
    /// then a scan that compares only the bytes that can differ.
    pub fn get(&self, target: &[u8]) -> Result<Option<&[u8]>, &'static str> {
        let r = self.restarts_before(target, true)?;
        if r == 0 {
            return Ok(None);
        }
        let mut pos = self.restart(r - 1).ok_or(MALFORMED)?;
        // Length of the common prefix of the previous key and `target`; the
        // previous key is always < target while scanning.
        let mut lcp = 0usize;
        while pos < self.restarts_start {
            let e = self.entry_at(pos).ok_or(MALFORMED)?;
            pos = e.value_end;
            if e.shared > lcp {
                // Same bytes as the previous key up to past where it
                // differs from the target: still smaller.
                continue;
            }
            let suffix = self.data.get(e.key_start..e.key_end).ok_or(MALFORMED)?;
            let rest = target.get(e.shared..).ok_or(MALFORMED)?;
            match suffix.cmp(rest) {
                std::cmp::Ordering::Equal => {
                    return Ok(Some(
                        self.data.get(e.key_end..e.value_end).ok_or(MALFORMED)?,
                    ));
                }
                std::cmp::Ordering::Greater => return Ok(None),
                std::cmp::Ordering::Less => lcp = e.shared + common_prefix(suffix, rest),
            }
        }
        Ok(None)
    }
}

/// A position inside a block, movable both ways. Reuses its key buffer.
#[derive(Debug)]
pub(crate) struct BlockCursor {
    block: Arc<Block>,
    key: Vec<u8>,
    /// Offset of the current entry.
    cur: usize,
    /// Offset of the entry after the current one.
    next: usize,
    value_start: usize,
    value_end: usize,
    valid: bool,
}

impl BlockCursor {
    /// A cursor on `block`, not positioned; `key_buf` is reused.
    pub fn new(block: Arc<Block>, mut key_buf: Vec<u8>) -> Self {
        key_buf.clear();
        BlockCursor {
            block,
            key: key_buf,
            cur: 0,
            next: 0,
            value_start: 0,
            value_end: 0,
            valid: false,
        }
    }

    /// Gives back the key buffer for reuse.
    pub fn into_key_buf(self) -> Vec<u8> {
        self.key
    }

    /// True if the cursor is on an entry.
    pub fn valid(&self) -> bool {
        self.valid
    }

    /// Key of the current entry (only meaningful when valid).
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// Value of the current entry (only meaningful when valid).
    pub fn value(&self) -> &[u8] {
        self.block
            .data
            .get(self.value_start..self.value_end)
            .unwrap_or(&[])
    }

    fn seek_to_restart(&mut self, i: usize) -> Result<(), &'static str> {
        self.key.clear();
        self.next = self.block.restart(i).ok_or(MALFORMED)?;
        self.valid = false;
        Ok(())
    }

    /// Decodes the entry at `self.next`; invalid at the end of the block.
    fn parse_next(&mut self) -> Result<(), &'static str> {
        if self.next >= self.block.restarts_start {
            self.valid = false;
            return Ok(());
        }
        let e = self.block.entry_at(self.next).ok_or(MALFORMED)?;
        if e.shared > self.key.len() {
            self.valid = false;
            return Err(MALFORMED);
        }
        self.key.truncate(e.shared);
        self.key.extend_from_slice(
            self.block
                .data
                .get(e.key_start..e.key_end)
                .ok_or(MALFORMED)?,
        );
        self.cur = self.next;
        self.next = e.value_end;
        self.value_start = e.key_end;
        self.value_end = e.value_end;
        self.valid = true;
        Ok(())
    }

    /// Moves to the first entry.
    pub fn seek_to_first(&mut self) -> Result<(), &'static str> {
        self.seek_to_restart(0)?;
        self.parse_next()
    }

    /// Moves to the last entry.
    pub fn seek_to_last(&mut self) -> Result<(), &'static str> {
        self.seek_to_restart(self.block.num_restarts - 1)?;
        self.parse_next()?;
        while self.next < self.block.restarts_start {
            self.parse_next()?;
        }
        Ok(())
    }

    /// Moves to the first entry with key `>= target`; invalid if none.
    pub fn seek_ge(&mut self, target: &[u8]) -> Result<(), &'static str> {
        let r = self.block.restarts_before(target, false)?;
        self.seek_to_restart(r.saturating_sub(1))?;
        self.parse_next()?;
        while self.valid && self.key.as_slice() < target {
            self.parse_next()?;
        }
        Ok(())
    }

    /// Moves to the next entry.
    pub fn next(&mut self) -> Result<(), &'static str> {
        self.parse_next()
    }

    /// Moves to the previous entry; invalid before the first.
    pub fn prev(&mut self) -> Result<(), &'static str> {
        let original = self.cur;
        if !self.valid || original == 0 {
            self.valid = false;
            return Ok(());
        }
        // Last restart point before the current entry.
        let (mut lo, mut hi) = (0usize, self.block.num_restarts);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.block.restart(mid).ok_or(MALFORMED)? < original {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        if lo == 0 {
            return Err(MALFORMED);
        }
        self.seek_to_restart(lo - 1)?;
        self.parse_next()?;
        while self.valid && self.next < original {
            self.parse_next()?;
        }
        if !self.valid || self.next != original {
            self.valid = false;
            return Err(MALFORMED);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(keys: &[&[u8]]) -> Block {
        let mut b = BlockBuilder::default();
        for k in keys {
            b.add(k, &[k.len() as u8]);
        }
        let mut out = Vec::new();
        b.finish_into(&mut out);
        Block::decode(out, None, keys.last().unwrap()).unwrap()
    }

    #[test]
    fn cursor_walks_both_ways_and_seeks() {
        let keys: Vec<Vec<u8>> = (0..100u32)
            .map(|i| format!("key{:04}", i * 2).into_bytes())
            .collect();
        let refs: Vec<&[u8]> = keys.iter().map(|k| k.as_slice()).collect();
        let block = Arc::new(build(&refs));
        let mut c = BlockCursor::new(block.clone(), Vec::new());
        c.seek_to_first().unwrap();
        let mut fwd = Vec::new();
        while c.valid() {
            fwd.push(c.key().to_vec());
            c.next().unwrap();
        }
        assert_eq!(fwd, keys);
        c.seek_to_last().unwrap();
        let mut back = Vec::new();
        while c.valid() {
            back.push(c.key().to_vec());
            c.prev().unwrap();
        }
        back.reverse();
        assert_eq!(back, keys);
        c.seek_ge(b"key0051").unwrap();
        assert_eq!(c.key(), b"key0052");
        c.seek_ge(b"key9").unwrap();
        assert!(!c.valid());
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(block.get(k).unwrap(), Some(&[k.len() as u8][..]), "key {i}");
            let mut missing = k.clone();
            missing.push(0);
            assert_eq!(block.get(&missing).unwrap(), None);
        }
        assert_eq!(block.get(b"").unwrap(), None);
    }

    #[test]
    fn decode_rejects_garbage() {
        let mut b = BlockBuilder::default();
        b.add(b"a", b"1");
        b.add(b"b", b"2");
        let mut out = Vec::new();
        b.finish_into(&mut out);
        assert!(Block::decode(out.clone(), None, b"b").is_ok());
        // Wrong last key, and keys not above the previous block.
        assert!(Block::decode(out.clone(), None, b"c").is_err());
        assert!(Block::decode(out.clone(), Some(b"a"), b"b").is_err());
        // Restart count too big.
        let mut bad = out.clone();
        let n = bad.len();
        bad[n - 4..].copy_from_slice(&1000u32.to_le_bytes());
        assert!(Block::decode(bad, None, b"b").is_err());
        // Every single-byte change either still decodes to a block that
        // reads sanely or is rejected.
        for i in 0..out.len() {
            for x in [1u8, 0x80, 0xff] {
                let mut bad = out.clone();
                bad[i] ^= x;
                if let Ok(block) = Block::decode(bad, None, b"b") {
                    let _ = block.get(b"a");
                }
            }
        }
        assert!(Block::decode(vec![0, 0], None, b"").is_err());
    }
}
