//! Record framing shared by the commit log and the manifest.
//!
//! A record on disk is a fixed 12-byte header followed by the payload:
//!
//! ```text
//! +-----------+-------------+------------------------------+---------+
//! | magic u32 | length u32  | crc32c(length bytes+payload) | payload |
//! +-----------+-------------+------------------------------+---------+
//! ```
//!
//! All integers are little-endian. The checksum covers the length field, so a
//! damaged length is detected like damaged payload bytes.
//!
//! [`RecordReader`] walks a byte buffer (typically a whole file read into
//! memory) and yields [`Frame`]s. A damaged record is reported with its offset
//! and the reader *resynchronises*: it scans forward for the next offset where
//! a complete, valid record starts, so records after a flipped byte are still
//! recovered. A record cut short by the end of the buffer, with no valid
//! record after it, is reported as a torn tail (the signature of a crash in
//! the middle of an append) rather than as corruption.

use std::path::Path;

use super::error::{Result, StorageError};

/// Magic number at the start of every record ("RDBR" when read as
/// little-endian bytes).
pub const RECORD_MAGIC: u32 = u32::from_le_bytes(*b"RDBR");

/// Size of the record header in bytes.
pub const HEADER_LEN: usize = 12;

/// Largest payload a record may carry (64 MiB). A header claiming more is
/// treated as damaged, so garbage cannot make a reader allocate huge buffers.
pub const MAX_PAYLOAD_LEN: usize = 64 << 20;

/// CRC32C of the length field followed by the payload.
fn record_crc(len_bytes: [u8; 4], payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&len_bytes), payload)
}

/// Computes the header of a record carrying `payload`.
///
/// Fails with [`StorageError::InvalidArgument`] if the payload is longer than
/// [`MAX_PAYLOAD_LEN`].
pub fn record_header(payload: &[u8]) -> Result<[u8; HEADER_LEN]> {
    if payload.len() > MAX_PAYLOAD_LEN {
        return Err(StorageError::InvalidArgument(format!(
            "record of {} bytes exceeds the maximum of {MAX_PAYLOAD_LEN} bytes",
            payload.len()
        )));
    }
    // Cannot truncate: MAX_PAYLOAD_LEN < u32::MAX.
    let len_bytes = (payload.len() as u32).to_le_bytes();
    let crc = record_crc(len_bytes, payload);
    let mut header = [0u8; HEADER_LEN];
    header[0..4].copy_from_slice(&RECORD_MAGIC.to_le_bytes());
    header[4..8].copy_from_slice(&len_bytes);
    header[8..12].copy_from_slice(&crc.to_le_bytes());
    Ok(header)
}

/// Appends the framed form of `payload` (header then payload) to `out`.
pub fn encode_record_into(out: &mut Vec<u8>, payload: &[u8]) -> Result<()> {
    let header = record_header(payload)?;
    out.reserve(HEADER_LEN + payload.len());
    out.extend_from_slice(&header);
    out.extend_from_slice(payload);
    Ok(())
}

/// Returns the framed form of `payload` (header then payload).
pub fn encode_record(payload: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    encode_record_into(&mut out, payload)?;
    Ok(out)
}

/// Number of bytes the framed form of a `payload_len`-byte payload takes.
pub const fn encoded_len(payload_len: usize) -> usize {
    HEADER_LEN + payload_len
}

/// One item yielded by [`RecordReader`].
#[derive(Debug)]
pub enum Frame<'a> {
    /// A valid record.
    Record {
        /// Offset of the record's header in the buffer.
        offset: u64,
        /// The record's payload.
        payload: &'a [u8],
    },
    /// A damaged range. The reader resumes at `resume_at`, which is either
    /// the start of the next valid record or the end of the buffer.
    Corrupt {
        /// Offset where the damaged record starts.
        offset: u64,
        /// Offset where reading resumes (next valid record, or end of buffer).
        resume_at: u64,
        /// A [`StorageError::Corrupt`] naming the file, offset and reason.
        error: StorageError,
    },
    /// An incomplete record at the end of the buffer with nothing valid
    /// after it: a crash during an append. Always the last frame.
    TornTail {
        /// Offset where the incomplete record starts.
        offset: u64,
        /// A [`StorageError::Corrupt`] whose reason starts with "torn tail".
        error: StorageError,
    },
}

/// What is wrong with the bytes at some offset.
enum Check {
    /// A complete valid record with this payload length.
    Valid(usize),
    /// Fewer than [`HEADER_LEN`] bytes left.
    ShortHeader,
    /// A plausible header whose record runs past the end of the buffer.
    PastEnd(usize),
    /// Damaged header or checksum.
    Bad(String),
}

/// Walks a buffer of framed records; see the [module docs](self).
///
/// Never panics, whatever the bytes.
pub struct RecordReader<'a> {
    path: &'a Path,
    buf: &'a [u8],
    pos: usize,
    done: bool,
}

impl<'a> RecordReader<'a> {
    /// A reader over `buf`, the contents of the file at `path` (used in error
    /// messages only).
    pub fn new(path: &'a Path, buf: &'a [u8]) -> Self {
        RecordReader {
            path,
            buf,
            pos: 0,
            done: false,
        }
    }

    /// Offset of the next byte the reader will look at.
    pub fn position(&self) -> u64 {
        self.pos as u64
    }

    fn check(&self, at: usize) -> Check {
        let rest = &self.buf[at..];
        if rest.len() < HEADER_LEN {
            return Check::ShortHeader;
        }
        let word = |i: usize| u32::from_le_bytes([rest[i], rest[i + 1], rest[i + 2], rest[i + 3]]);
        let magic = word(0);
        if magic != RECORD_MAGIC {
            return Check::Bad(format!("bad magic {magic:#010x}"));
        }
        let len = word(4) as usize;
        if len > MAX_PAYLOAD_LEN {
            return Check::Bad(format!(
                "record length {len} exceeds the maximum {MAX_PAYLOAD_LEN}"
            ));
        }
        if rest.len() - HEADER_LEN < len {
            return Check::PastEnd(len);
        }
        let stored = word(8);
        let len_bytes = [rest[4], rest[5], rest[6], rest[7]];
        let actual = record_crc(len_bytes, &rest[HEADER_LEN..HEADER_LEN + len]);
        if stored != actual {
            return Check::Bad(format!(
                "checksum mismatch (stored {stored:#010x}, computed {actual:#010x})"
            ));
        }
        Check::Valid(len)
    }

    /// First offset after `from` where a complete valid record starts.
    fn resync(&self, from: usize) -> Option<usize> {
        let magic = RECORD_MAGIC.to_le_bytes();
        let last = self.buf.len().checked_sub(HEADER_LEN)?;
        let mut at = from + 1;
        while at <= last {
            // Cheap pre-filter before the full check.
            if self.buf[at..at + 4] == magic {
                if let Check::Valid(_) = self.check(at) {
                    return Some(at);
                }
            }
            at += 1;
        }
        None
    }

    fn corrupt(&self, offset: usize, reason: String) -> StorageError {
        StorageError::corrupt(self.path, offset as u64, reason)
    }
}

impl<'a> Iterator for RecordReader<'a> {
    type Item = Frame<'a>;

    fn next(&mut self) -> Option<Frame<'a>> {
        if self.done || self.pos >= self.buf.len() {
            self.done = true;
            return None;
        }
        let at = self.pos;
        match self.check(at) {
            Check::Valid(len) => {
                self.pos = at + HEADER_LEN + len;
                Some(Frame::Record {
                    offset: at as u64,
                    payload: &self.buf[at + HEADER_LEN..self.pos],
                })
            }
            Check::ShortHeader => {
                self.done = true;
                let left = self.buf.len() - at;
                Some(Frame::TornTail {
                    offset: at as u64,
                    error: self.corrupt(
                        at,
                        format!("torn tail: {left} bytes, shorter than a record header"),
                    ),
                })
            }
            Check::PastEnd(len) => match self.resync(at) {
                Some(next) => {
                    self.pos = next;
                    Some(Frame::Corrupt {
                        offset: at as u64,
                        resume_at: next as u64,
                        error: self.corrupt(
                            at,
                            format!(
                                "record length {len} runs past the end of the file \
                                 ({} bytes skipped to the next valid record)",
                                next - at
                            ),
                        ),
                    })
                }
                None => {
                    self.done = true;
                    let have = self.buf.len() - at - HEADER_LEN;
                    Some(Frame::TornTail {
                        offset: at as u64,
                        error: self.corrupt(
                            at,
                            format!("torn tail: record of {len} bytes has only {have}"),
                        ),
                    })
                }
            },
            Check::Bad(reason) => {
                let next = self.resync(at);
                let resume = next.unwrap_or(self.buf.len());
                self.pos = resume;
                Some(Frame::Corrupt {
                    offset: at as u64,
                    resume_at: resume as u64,
                    error: self.corrupt(
                        at,
                        match next {
                            Some(n) => format!(
                                "{reason} ({} bytes skipped to the next valid record)",
                                n - at
                            ),
                            None => format!("{reason} (no valid record after it)"),
                        },
                    ),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p() -> &'static Path {
        Path::new("test.log")
    }

    /// Encodes `records`, returning the buffer and each record's offset.
    fn build(records: &[Vec<u8>]) -> (Vec<u8>, Vec<usize>) {
        let mut buf = Vec::new();
        let mut offsets = Vec::new();
        for r in records {
            offsets.push(buf.len());
            encode_record_into(&mut buf, r).unwrap();
        }
        (buf, offsets)
    }

    /// Runs the reader; returns (records with offsets, damage offsets, torn tail).
    #[allow(clippy::type_complexity)]
    fn read_all(buf: &[u8]) -> (Vec<(u64, Vec<u8>)>, Vec<u64>, Option<u64>) {
        let mut recs = Vec::new();
        let mut bad = Vec::new();
        let mut torn = None;
        for f in RecordReader::new(p(), buf) {
            assert!(torn.is_none(), "frame after a torn tail");
            match f {
                Frame::Record { offset, payload } => recs.push((offset, payload.to_vec())),
                Frame::Corrupt {
                    offset,
                    resume_at,
                    error,
                } => {
                    assert!(resume_at > offset);
                    assert!(
                        matches!(error, StorageError::Corrupt { offset: o, .. } if o == offset)
                    );
                    bad.push(offset)
                }
                Frame::TornTail { offset, error } => {
                    assert!(error.to_string().contains("torn tail"));
                    torn = Some(offset)
                }
            }
        }
        (recs, bad, torn)
    }

    #[test]
    fn round_trip() {
        let records = vec![b"hello".to_vec(), Vec::new(), vec![7u8; 1000]];
        let (buf, offsets) = build(&records);
        assert_eq!(
            buf.len(),
            records.iter().map(|r| encoded_len(r.len())).sum()
        );
        let (recs, bad, torn) = read_all(&buf);
        assert!(bad.is_empty() && torn.is_none());
        let expect: Vec<_> = offsets
            .iter()
            .map(|&o| o as u64)
            .zip(records.iter().cloned())
            .collect();
        assert_eq!(recs, expect);
    }

    #[test]
    fn oversized_payload_rejected() {
        let big = vec![0u8; MAX_PAYLOAD_LEN + 1];
        assert!(matches!(
            encode_record(&big),
            Err(StorageError::InvalidArgument(_))
        ));
    }

    #[test]
    fn huge_length_in_header_is_damage_not_allocation() {
        let mut buf = encode_record(b"abc").unwrap();
        buf[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        let (recs, bad, torn) = read_all(&buf);
        assert!(recs.is_empty());
        assert_eq!(bad, vec![0]);
        assert!(torn.is_none());
    }

    #[test]
    fn flipped_byte_resyncs() {
        let records: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 20]).collect();
        let (mut buf, offsets) = build(&records);
        buf[offsets[2] + HEADER_LEN + 3] ^= 0x40;
        let (recs, bad, torn) = read_all(&buf);
        assert_eq!(bad, vec![offsets[2] as u64]);
        assert!(torn.is_none());
        let got: Vec<_> = recs.into_iter().map(|(_, r)| r).collect();
        assert_eq!(
            got,
            vec![vec![0; 20], vec![1; 20], vec![3; 20], vec![4; 20]]
        );
    }

    #[test]
    fn truncated_tail_is_torn() {
        let records: Vec<Vec<u8>> = (0..3u8).map(|i| vec![i; 50]).collect();
        let (buf, offsets) = build(&records);
        for cut in [offsets[2] + 5, offsets[2] + HEADER_LEN + 10] {
            let (recs, bad, torn) = read_all(&buf[..cut]);
            assert_eq!(recs.len(), 2);
            assert!(bad.is_empty());
            assert_eq!(torn, Some(offsets[2] as u64));
        }
    }

    fn records_strategy() -> impl Strategy<Value = Vec<Vec<u8>>> {
        prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 1..12)
    }

    proptest! {
        #[test]
        fn prop_flip_byte(records in records_strategy(), pos in any::<prop::sample::Index>(), bit in 0u8..8) {
            let (mut buf, offsets) = build(&records);
            let flip = pos.index(buf.len());
            buf[flip] ^= 1 << bit;
            // The damaged record is the last one starting at or before `flip`.
            let k = offsets.iter().rposition(|&o| o <= flip).unwrap();
            let (recs, bad, torn) = read_all(&buf);
            let expect: Vec<(u64, Vec<u8>)> = offsets.iter().zip(&records).enumerate()
                .filter(|(i, _)| *i != k)
                .map(|(_, (&o, r))| (o as u64, r.clone()))
                .collect();
            prop_assert_eq!(recs, expect);
            let mut damage = bad.clone();
            damage.extend(torn);
            prop_assert_eq!(damage, vec![offsets[k] as u64]);
            // Only the last record's damage can look like a torn tail.
            if torn.is_some() {
                prop_assert_eq!(k, records.len() - 1);
            }
        }

        #[test]
        fn prop_truncate(records in records_strategy(), pos in any::<prop::sample::Index>()) {
            let (buf, offsets) = build(&records);
            let cut = pos.index(buf.len() + 1);
            let (recs, bad, torn) = read_all(&buf[..cut]);
            prop_assert!(bad.is_empty());
            let whole: Vec<(u64, Vec<u8>)> = offsets.iter().zip(&records)
                .filter(|(&o, r)| o + encoded_len(r.len()) <= cut)
                .map(|(&o, r)| (o as u64, r.clone()))
                .collect();
            prop_assert_eq!(recs, whole);
            let expected_torn = offsets.iter().zip(&records)
                .find(|(&o, r)| o < cut && o + encoded_len(r.len()) > cut)
                .map(|(&o, _)| o as u64);
            prop_assert_eq!(torn, expected_torn);
        }

        #[test]
        fn prop_garbage_never_panics(buf in prop::collection::vec(any::<u8>(), 0..2000)) {
            let mut last_end = 0u64;
            for f in RecordReader::new(p(), &buf) {
                match f {
                    Frame::Record { offset, payload } => {
                        prop_assert!(offset >= last_end);
                        last_end = offset + encoded_len(payload.len()) as u64;
                    }
                    Frame::Corrupt { offset, resume_at, .. } => {
                        prop_assert!(offset >= last_end && resume_at > offset);
                        last_end = resume_at;
                    }
                    Frame::TornTail { offset, .. } => prop_assert!(offset >= last_end),
                }
            }
            prop_assert!(last_end <= buf.len() as u64);
        }

        #[test]
        fn prop_garbage_around_records(pre in prop::collection::vec(any::<u8>(), 0..64),
                                        records in records_strategy()) {
            // Records after arbitrary leading garbage are all recovered.
            let (body, _) = build(&records);
            let mut buf = pre.clone();
            buf.extend_from_slice(&body);
            let (recs, _, torn) = read_all(&buf);
            prop_assert!(torn.is_none());
            let got: Vec<Vec<u8>> = recs.into_iter().map(|(_, r)| r).collect();
            prop_assert_eq!(got, records);
        }
    }
}
