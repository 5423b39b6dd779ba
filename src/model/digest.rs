//! Content digests: 128-bit SipHash-1-3 (fixed keys) of a value's bincode
//! encoding (standard configuration), hashed as it is produced so the
//! encoding is never held in memory. Replicas compare digests of what they
//! hold instead of the data itself (see
//! `coordinator::messages::ReplicaPartition::digest`).

use serde::Serialize;
use std::sync::OnceLock;

/// The digest of `value`'s encoding. Encoding the model's types cannot
/// fail; if it did, the digest is that of the empty input.
pub fn digest_of<T: Serialize + ?Sized>(value: &T) -> u128 {
    let mut writer = DigestWriter::new();
    if encode_into(&mut writer, value).is_err() {
        writer = DigestWriter::new();
    }
    writer.finish()
}

/// Feeds `value`'s encoding to `writer`.
pub fn encode_into<T: Serialize + ?Sized>(
    writer: &mut DigestWriter,
    value: &T,
) -> Result<(), bincode::error::EncodeError> {
    bincode::serde::encode_into_writer(value, writer, bincode::config::standard())
}

/// A digest computed at most once, for an immutable value. It takes no
/// part in the value's equality, encoding or debug output.
#[derive(Default, Clone)]
pub(crate) struct DigestMemo(OnceLock<u128>);

impl DigestMemo {
    /// The digest, computed by `compute` the first time.
    pub(crate) fn get_or_compute(&self, compute: impl FnOnce() -> u128) -> u128 {
        *self.0.get_or_init(compute)
    }
}

impl PartialEq for DigestMemo {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for DigestMemo {}

impl std::fmt::Debug for DigestMemo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DigestMemo")
    }
}

/// A bincode writer that hashes what it is given (SipHash-1-3 with the
/// digest's fixed keys). bincode writes a value in many small pieces (a
/// varint, a tag, a string's bytes); they are gathered in a buffer on the
/// stack and hashed a few hundred bytes at a time, which SipHash does much
/// faster than piece by piece.
pub struct DigestWriter {
    hasher: siphasher::sip128::SipHasher13,
    buf: [u8; DIGEST_BUFFER],
    len: usize,
}

const DIGEST_BUFFER: usize = 512;

impl DigestWriter {
    /// A writer with nothing hashed yet.
    pub fn new() -> DigestWriter {
        DigestWriter {
            hasher: digest_hasher(),
            buf: [0; DIGEST_BUFFER],
            len: 0,
        }
    }

    fn flush(&mut self) {
        if let Some(pending) = self.buf.get(..self.len) {
            std::hash::Hasher::write(&mut self.hasher, pending);
        }
        self.len = 0;
    }

    /// The digest of everything written.
    pub fn finish(mut self) -> u128 {
        self.flush();
        siphasher::sip128::Hasher128::finish128(&self.hasher).as_u128()
    }
}

impl Default for DigestWriter {
    fn default() -> Self {
        DigestWriter::new()
    }
}

impl bincode::enc::write::Writer for DigestWriter {
    fn write(&mut self, bytes: &[u8]) -> Result<(), bincode::error::EncodeError> {
        let end = self.len + bytes.len();
        match self.buf.get_mut(self.len..end) {
            Some(room) => {
                room.copy_from_slice(bytes);
                self.len = end;
            }
            None => {
                self.flush();
                match self.buf.get_mut(..bytes.len()) {
                    Some(room) => {
                        room.copy_from_slice(bytes);
                        self.len = bytes.len();
                    }
                    None => std::hash::Hasher::write(&mut self.hasher, bytes),
                }
            }
        }
        Ok(())
    }
}

/// The hasher of every content digest, with its fixed keys.
pub fn digest_hasher() -> siphasher::sip128::SipHasher13 {
    siphasher::sip128::SipHasher13::new_with_keys(0x7269_6e67, 0x6469_6765_7374)
}
