//! SSTables: immutable sorted files of opaque key/value entries.
//!
//! Keys and values are byte strings; keys compare bytewise. Each entry's key
//! has a *partition prefix* (its first `partition_len` bytes, given by the
//! writer's caller); a bloom filter over the distinct partition prefixes lets
//! the engine skip a file for a whole partition.
//!
//! # File format (version 1)
//!
//! ```text
//! data block 0 | crc32c u32 | data block 1 | crc32c u32 | ...
//! index      (per block: varint key_len, last key, varint offset, varint length)
//! bloom      (bit array, then k: u8)
//! metadata   (entries, partitions, min_ts, max_ts, data_bytes, min/max key,
//!             min/max clustering)
//! footer     (76 bytes: offset u64, length u64, crc32c u32 of index, bloom and
//!             metadata; format version u32; crc32c u32 of the footer; magic)
//! ```
//!
//! A data block is a run of entries (`shared: varint, unshared: varint,
//! value_len: varint, key[shared..], value`: each key stores only what it does
//! not share with the previous key), then the offsets of the restart points
//! (every 16th entry, which stores its whole key) as u32s and their count as a
//! u32; a lookup binary-searches the restart points and scans one interval.
//! Fixed-size integers are little endian.
//! Opening a file checks the footer, index, bloom and metadata; each data
//! block is checked when it is first read, so damage to one block leaves the
//! others readable. Every problem is a [`StorageError::Corrupt`] naming the
//! file and the byte offset of the damaged structure.

mod block;
mod bloom;
mod cache;
mod format;
pub(crate) use format::key_prefix;
#[cfg(test)]
mod tests;

use std::fs::{File, OpenOptions};

use super::writeback;
use std::io::{BufWriter, Write};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use block::{Block, BlockBuilder, BlockCursor};
use bloom::{hash64, Bloom};
use format::{
    encode_index_entry, BlockIndex, Footer, MetaRecord, SectionHandle, BLOCK_TRAILER_SIZE,
    FOOTER_SIZE,
};

pub use cache::{BlockCache, BlockCacheStats};

use super::{Result, StorageError};

/// Largest key the writer accepts (16 MiB).
pub const MAX_KEY_LEN: usize = 1 << 24;
/// Largest value the writer accepts (1 GiB).
pub const MAX_VALUE_LEN: usize = 1 << 30;
/// Largest accepted [`SsTableOptions::block_size`] (1 GiB).
pub const MAX_BLOCK_SIZE: usize = 1 << 30;

/// Ids distinguishing open tables in a shared [`BlockCache`].
static NEXT_FILE_ID: AtomicU64 = AtomicU64::new(1);

/// Options of the [`SsTableWriter`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SsTableOptions {
    /// Target uncompressed size of a data block in bytes (default 4096). A
    /// block is closed once it reaches this size, so it may exceed it by one
    /// entry. Between 1 and [`MAX_BLOCK_SIZE`].
    pub block_size: usize,
    /// Bloom filter bits per distinct partition (default 10, about 1% false
    /// positives). At least 1.
    pub bloom_bits_per_key: usize,
}

impl Default for SsTableOptions {
    fn default() -> Self {
        SsTableOptions {
            block_size: 4096,
            bloom_bits_per_key: 10,
        }
    }
}

/// Metadata of a finished SSTable, stored in the file.
///
/// For an empty table the keys and clustering bounds are empty and both
/// timestamps are 0.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SsTableMeta {
    /// Number of entries.
    pub entries: u64,
    /// Number of distinct partition prefixes (counted by their 64-bit
    /// hashes, so a hash collision could undercount by one).
    pub partitions: u64,
    /// Smallest key.
    pub min_key: Vec<u8>,
    /// Largest key.
    pub max_key: Vec<u8>,
    /// Smallest `min_ts` over all entries.
    pub min_ts: u64,
    /// Largest `max_ts` over all entries.
    pub max_ts: u64,
    /// Smallest clustering suffix (`key[partition_len..]`) over all entries.
    pub min_clustering: Vec<u8>,
    /// Largest clustering suffix (`key[partition_len..]`) over all entries.
    pub max_clustering: Vec<u8>,
    /// Size of the whole file in bytes.
    pub file_size: u64,
    /// Bytes of data blocks, checksums included (the offset of the index).
    pub data_bytes: u64,
}

impl SsTableMeta {
    fn from_record(r: MetaRecord, file_size: u64) -> Self {
        SsTableMeta {
            entries: r.entries,
            partitions: r.partitions,
            min_key: r.min_key,
            max_key: r.max_key,
            min_ts: r.min_ts,
            max_ts: r.max_ts,
            min_clustering: r.min_clustering,
            max_clustering: r.max_clustering,
            file_size,
            data_bytes: r.data_bytes,
        }
    }
}

/// Writes one SSTable, entries in strictly increasing key order.
///
/// The file is created with `create_new` (an existing file is never
/// overwritten). If the writer is dropped without [`finish`](Self::finish),
/// the partial file stays on disk for the caller to delete.
pub struct SsTableWriter {
    path: PathBuf,
    out: BufWriter<File>,
    opts: SsTableOptions,
    /// Bytes handed to `out`.
    offset: u64,
    /// Bytes whose writeback to the disk has been started (see
    /// [`writeback::CHUNK`]).
    writeback_started: u64,
    block: BlockBuilder,
    /// Scratch buffer for one finished block.
    block_buf: Vec<u8>,
    /// Encoded index section.
    index: Vec<u8>,
    /// Last key added (also the ordering check).
    last_key: Vec<u8>,
    /// Partition prefix of the last entry.
    last_partition: Vec<u8>,
    /// Hashes of partition prefixes (consecutive duplicates removed).
    partition_hashes: Vec<u64>,
    entries: u64,
    min_key: Vec<u8>,
    min_ts: u64,
    max_ts: u64,
    min_clustering: Vec<u8>,
    max_clustering: Vec<u8>,
}

impl SsTableWriter {
    /// Creates a new file at `path` (it must not exist).
    pub fn create(path: &Path, opts: &SsTableOptions) -> Result<Self> {
        if opts.block_size == 0 || opts.block_size > MAX_BLOCK_SIZE {
            return Err(StorageError::InvalidArgument(format!(
                "block_size {} not in 1..={MAX_BLOCK_SIZE}",
                opts.block_size
            )));
        }
        if opts.bloom_bits_per_key == 0 || opts.bloom_bits_per_key > 1000 {
            return Err(StorageError::InvalidArgument(format!(
                "bloom_bits_per_key {} not in 1..=1000",
                opts.bloom_bits_per_key
            )));
        }
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| StorageError::io(path, e))?;
        Ok(SsTableWriter {
            path: path.to_path_buf(),
            out: BufWriter::with_capacity(64 * 1024, file),
            opts: opts.clone(),
            offset: 0,
            writeback_started: 0,
            block: BlockBuilder::default(),
            block_buf: Vec::new(),
            index: Vec::new(),
            last_key: Vec::new(),
            last_partition: Vec::new(),
            partition_hashes: Vec::new(),
            entries: 0,
            min_key: Vec::new(),
            min_ts: u64::MAX,
            max_ts: 0,
            min_clustering: Vec::new(),
            max_clustering: Vec::new(),
        })
    }

    /// Adds an entry.
    ///
    /// Keys must be strictly increasing, `partition_len <= key.len()` and
    /// `min_ts <= max_ts` (the entry's smallest and largest write
    /// timestamps, kept as file metadata); otherwise
    /// [`StorageError::InvalidArgument`] and nothing is added, so the writer
    /// stays usable.
    pub fn add(
        &mut self,
        key: &[u8],
        partition_len: usize,
        value: &[u8],
        min_ts: u64,
        max_ts: u64,
    ) -> Result<()> {
        if self.entries > 0 && key <= self.last_key.as_slice() {
            return Err(StorageError::InvalidArgument(format!(
                "keys must be strictly increasing: {key:?} after {:?}",
                self.last_key
            )));
        }
        if partition_len > key.len() {
            return Err(StorageError::InvalidArgument(format!(
                "partition_len {partition_len} exceeds key length {}",
                key.len()
            )));
        }
        if min_ts > max_ts {
            return Err(StorageError::InvalidArgument(format!(
                "min_ts {min_ts} > max_ts {max_ts}"
            )));
        }
        if key.len() > MAX_KEY_LEN || value.len() > MAX_VALUE_LEN {
            return Err(StorageError::InvalidArgument(format!(
                "entry too large: key {} bytes (max {MAX_KEY_LEN}), value {} bytes (max {MAX_VALUE_LEN})",
                key.len(),
                value.len()
            )));
        }

        let (partition, clustering) = key.split_at(partition_len);
        if self.entries == 0 {
            self.min_key.extend_from_slice(key);
            self.min_clustering.extend_from_slice(clustering);
            self.max_clustering.extend_from_slice(clustering);
        } else {
            if clustering < self.min_clustering.as_slice() {
                self.min_clustering.clear();
                self.min_clustering.extend_from_slice(clustering);
            }
            if clustering > self.max_clustering.as_slice() {
                self.max_clustering.clear();
                self.max_clustering.extend_from_slice(clustering);
            }
        }
        if self.entries == 0 || partition != self.last_partition.as_slice() {
            self.partition_hashes.push(hash64(partition));
            self.last_partition.clear();
            self.last_partition.extend_from_slice(partition);
        }
        self.min_ts = self.min_ts.min(min_ts);
        self.max_ts = self.max_ts.max(max_ts);
        self.entries += 1;
        self.last_key.clear();
        self.last_key.extend_from_slice(key);

        self.block.add(key, value);
        if self.block.estimated_size() >= self.opts.block_size {
            self.flush_block()?;
        }
        Ok(())
    }

    fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
        self.out
            .write_all(bytes)
            .map_err(|e| StorageError::io(&self.path, e))?;
        self.offset += bytes.len() as u64;
        if self.offset - self.writeback_started >= writeback::CHUNK {
            self.start_writeback()?;
        }
        Ok(())
    }

    /// Hands what is buffered to the OS and asks it to start writing the
    /// bytes since the last call to the disk, without waiting. Without it
    /// a flush or a compaction leaves tens of MiB of dirty pages that
    /// `finish`'s fsync writes in one burst, during which this node's
    /// requests queue behind the disk (measured: 100-300 ms stalls of the
    /// YCSB paced run). RocksDB's `bytes_per_sync` does the same.
    fn start_writeback(&mut self) -> Result<()> {
        self.out
            .flush()
            .map_err(|e| StorageError::io(&self.path, e))?;
        let from = self.writeback_started;
        let len = self.offset - from;
        writeback::start(self.out.get_ref(), from, len);
        self.writeback_started = self.offset;
        Ok(())
    }

    fn flush_block(&mut self) -> Result<()> {
        if self.block.is_empty() {
            return Ok(());
        }
        let mut buf = std::mem::take(&mut self.block_buf);
        buf.clear();
        // `estimated_size` is exact: it is the finished block's length.
        let len = self.block.estimated_size();
        encode_index_entry(
            &mut self.index,
            self.block.last_key(),
            self.offset,
            len as u64,
        );
        self.block.finish_into(&mut buf);
        debug_assert_eq!(buf.len(), len);
        let crc = crc32c::crc32c(&buf);
        buf.extend_from_slice(&crc.to_le_bytes());
        let r = self.write_all(&buf);
        self.block_buf = buf;
        r
    }

    /// Bytes written so far, including the block being built (so the
    /// caller can split outputs by size).
    pub fn bytes_written(&self) -> u64 {
        let pending = if self.block.is_empty() {
            0
        } else {
            self.block.estimated_size() + BLOCK_TRAILER_SIZE
        };
        self.offset + pending as u64
    }

    /// Writes the index, bloom filter, metadata and footer, fsyncs the file
    /// and returns its metadata. The caller fsyncs the directory.
    pub fn finish(mut self) -> Result<SsTableMeta> {
        self.flush_block()?;
        let data_bytes = self.offset;

        let index = std::mem::take(&mut self.index);
        let index_h = self.write_section(&index)?;

        self.partition_hashes.sort_unstable();
        self.partition_hashes.dedup();
        let bloom_bytes = bloom::build(&self.partition_hashes, self.opts.bloom_bits_per_key);
        let bloom_h = self.write_section(&bloom_bytes)?;

        let (min_ts, max_ts) = if self.entries == 0 {
            (0, 0)
        } else {
            (self.min_ts, self.max_ts)
        };
        let record = MetaRecord {
            entries: self.entries,
            partitions: self.partition_hashes.len() as u64,
            min_ts,
            max_ts,
            data_bytes,
            min_key: std::mem::take(&mut self.min_key),
            max_key: std::mem::take(&mut self.last_key),
            min_clustering: std::mem::take(&mut self.min_clustering),
            max_clustering: std::mem::take(&mut self.max_clustering),
        };
        let meta_h = self.write_section(&record.encode())?;

        let footer = Footer {
            index: index_h,
            bloom: bloom_h,
            meta: meta_h,
        };
        self.write_all(&footer.encode())?;
        let file_size = self.offset;
        let path = self.path;
        let file = self
            .out
            .into_inner()
            .map_err(|e| StorageError::io(&path, e.into_error()))?;
        file.sync_all().map_err(|e| StorageError::io(&path, e))?;
        Ok(SsTableMeta::from_record(record, file_size))
    }

    fn write_section(&mut self, bytes: &[u8]) -> Result<SectionHandle> {
        let handle = SectionHandle {
            offset: self.offset,
            len: bytes.len() as u64,
            crc: crc32c::crc32c(bytes),
        };
        self.write_all(bytes)?;
        Ok(handle)
    }
}

impl std::fmt::Debug for SsTableWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SsTableWriter")
            .field("path", &self.path)
            .field("entries", &self.entries)
            .field("bytes_written", &self.bytes_written())
            .finish()
    }
}

/// An open, validated SSTable. `Send + Sync`: share it as `Arc<SsTable>`;
/// reads are positional, so threads read concurrently without a lock.
pub struct SsTable {
    path: PathBuf,
    file: File,
    /// Identifies this open table in the block cache.
    id: u64,
    meta: SsTableMeta,
    index: BlockIndex,
    bloom: Bloom,
    cache: Option<Arc<BlockCache>>,
}

impl SsTable {
    /// Opens `path` and validates its footer (magic, format version), index,
    /// bloom filter and metadata, each CRC32C-checked. Data blocks are
    /// checked when read. Blocks are cached in `cache` if given.
    pub fn open(path: &Path, cache: Option<Arc<BlockCache>>) -> Result<Arc<SsTable>> {
        let file = File::open(path).map_err(|e| StorageError::io(path, e))?;
        let file_size = file
            .metadata()
            .map_err(|e| StorageError::io(path, e))?
            .len();
        let corrupt = |offset: u64, reason: String| StorageError::corrupt(path, offset, reason);
        if file_size < FOOTER_SIZE as u64 {
            return Err(corrupt(
                0,
                format!("file of {file_size} bytes is too short for an SSTable footer"),
            ));
        }
        let footer_offset = file_size - FOOTER_SIZE as u64;
        let footer_bytes = read_at(&file, path, footer_offset, FOOTER_SIZE)?;
        let footer = Footer::decode(&footer_bytes).map_err(|r| corrupt(footer_offset, r))?;

        // Sections must tile the file: data | index | bloom | meta | footer.
        let contiguous = footer.index.end() == Some(footer.bloom.offset)
            && footer.bloom.end() == Some(footer.meta.offset)
            && footer.meta.end() == Some(footer_offset);
        if !contiguous {
            return Err(corrupt(
                footer_offset,
                "footer section offsets and lengths are inconsistent with the file size".into(),
            ));
        }
        let read_section = |name: &str, h: &SectionHandle| -> Result<Vec<u8>> {
            // In bounds: the sections tile [index.offset, footer_offset).
            let bytes = read_at(&file, path, h.offset, h.len as usize)?;
            let crc = crc32c::crc32c(&bytes);
            if crc != h.crc {
                return Err(corrupt(
                    h.offset,
                    format!(
                        "{name} checksum mismatch (stored {:08x}, computed {crc:08x})",
                        h.crc
                    ),
                ));
            }
            Ok(bytes)
        };

        let meta_bytes = read_section("metadata", &footer.meta)?;
        let record = MetaRecord::decode(&meta_bytes).map_err(|r| corrupt(footer.meta.offset, r))?;
        if record.data_bytes != footer.index.offset {
            return Err(corrupt(
                footer.meta.offset,
                format!(
                    "metadata says {} data bytes, index starts at {}",
                    record.data_bytes, footer.index.offset
                ),
            ));
        }

        let index_bytes = read_section("index", &footer.index)?;
        let index = BlockIndex::decode(&index_bytes, footer.index.offset)
            .map_err(|r| corrupt(footer.index.offset, format!("block index: {r}")))?;
        let consistent = if index.len() == 0 {
            record.entries == 0
        } else {
            record.entries >= index.len() as u64
                && index.key(index.len() - 1) == Some(record.max_key.as_slice())
                && record.min_key <= record.max_key
        };
        if !consistent {
            return Err(corrupt(
                footer.meta.offset,
                "metadata does not match the block index".into(),
            ));
        }

        let bloom_bytes = read_section("bloom filter", &footer.bloom)?;
        let bloom = Bloom::decode(&bloom_bytes).map_err(|r| corrupt(footer.bloom.offset, r))?;

        Ok(Arc::new(SsTable {
            path: path.to_path_buf(),
            file,
            id: NEXT_FILE_ID.fetch_add(1, Ordering::Relaxed),
            meta: SsTableMeta::from_record(record, file_size),
            index,
            bloom,
            cache,
        }))
    }

    /// The file's metadata.
    pub fn meta(&self) -> &SsTableMeta {
        &self.meta
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bloom check on a partition prefix: `false` means the file surely has
    /// no key of that partition.
    pub fn may_contain_partition(&self, partition: &[u8]) -> bool {
        self.meta.entries > 0 && self.bloom.may_contain(partition)
    }

    /// Exact-key lookup: index binary search, one (cached) block read and a
    /// binary search inside the block. It does not consult the bloom filter
    /// (it does not know the key's partition length); call
    /// [`may_contain_partition`](Self::may_contain_partition) first.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if self.meta.entries == 0
            || key < self.meta.min_key.as_slice()
            || key > self.meta.max_key.as_slice()
        {
            return Ok(None);
        }
        let i = self.index.find(key, false);
        if i >= self.index.len() {
            return Ok(None);
        }
        let block = self.read_block(i)?;
        match block.get(key) {
            Ok(v) => Ok(v.map(<[u8]>::to_vec)),
            Err(reason) => Err(self.block_corrupt(i, reason)),
        }
    }

    /// A streaming iterator over the keys within `lower..upper` (any bound
    /// kinds), ascending, or descending from the upper end when `reverse`.
    /// It reads one block at a time.
    pub fn range(
        self: &Arc<Self>,
        lower: Bound<Vec<u8>>,
        upper: Bound<Vec<u8>>,
        reverse: bool,
    ) -> SsTableIter {
        SsTableIter {
            table: Arc::clone(self),
            lower,
            upper,
            reverse,
            fill_cache: true,
            block_idx: 0,
            cursor: None,
            key_buf: Vec::new(),
            started: false,
            done: false,
        }
    }

    /// Every key, ascending, like [`range`](Self::range) over the whole
    /// table, but the blocks it reads are not put into the block cache
    /// (those already there are used). For compactions: they read each
    /// block of their inputs once, and through the cache they would push
    /// out the blocks the reads keep coming back to (RocksDB's
    /// `fill_cache = false` for the same reason).
    pub fn scan_uncached(self: &Arc<Self>) -> SsTableIter {
        SsTableIter {
            fill_cache: false,
            ..self.range(Bound::Unbounded, Bound::Unbounded, false)
        }
    }

    /// Drops this table's blocks from the block cache, for a table no
    /// longer read (a compaction replaced it). Left there, they would leave
    /// only after every block used less recently, live ones included, and
    /// a compaction's inputs held the blocks read most recently. (A read
    /// still holding the table may put one back; it ages out.)
    pub fn evict_cached_blocks(&self) {
        let Some(cache) = &self.cache else {
            return;
        };
        for i in 0..self.index.len() {
            if let Some(entry) = self.index.entry(i) {
                cache.remove(self.id, entry.offset);
            }
        }
    }

    fn block_corrupt(&self, i: usize, reason: &str) -> StorageError {
        let offset = self.index.entry(i).map_or(0, |e| e.offset);
        StorageError::corrupt(&self.path, offset, format!("data block: {reason}"))
    }

    /// Reads, verifies and decodes data block `i` (through the cache).
    fn read_block(&self, i: usize) -> Result<Arc<Block>> {
        self.read_block_with(i, true)
    }

    /// [`read_block`](Self::read_block); a block read from the file goes
    /// into the cache only if `fill_cache`.
    fn read_block_with(&self, i: usize, fill_cache: bool) -> Result<Arc<Block>> {
        let Some(entry) = self.index.entry(i) else {
            return Err(self.block_corrupt(i, "block number out of range"));
        };
        if let Some(cache) = &self.cache {
            if let Some(b) = cache.get(self.id, entry.offset) {
                return Ok(b);
            }
        }
        // The index was validated against the file size at open.
        let mut buf = read_at(
            &self.file,
            &self.path,
            entry.offset,
            entry.len + BLOCK_TRAILER_SIZE,
        )?;
        let stored = format::get_u32_le(&buf, entry.len).unwrap_or(0);
        buf.truncate(entry.len);
        let computed = crc32c::crc32c(&buf);
        if stored != computed {
            tracing::warn!(path = %self.path.display(), offset = entry.offset, "SSTable data block checksum mismatch");
            return Err(StorageError::corrupt(
                &self.path,
                entry.offset,
                format!(
                    "data block checksum mismatch (stored {stored:08x}, computed {computed:08x})"
                ),
            ));
        }
        let prev_last = i.checked_sub(1).and_then(|p| self.index.key(p));
        let last = self.index.key(i).unwrap_or(&[]);
        let block = Block::decode(buf, prev_last, last).map_err(|r| {
            StorageError::corrupt(&self.path, entry.offset, format!("data block: {r}"))
        })?;
        let block = Arc::new(block);
        if let Some(cache) = self.cache.as_ref().filter(|_| fill_cache) {
            cache.insert(self.id, entry.offset, Arc::clone(&block));
        }
        Ok(block)
    }
}

impl std::fmt::Debug for SsTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SsTable")
            .field("path", &self.path)
            .field("id", &self.id)
            .field("blocks", &self.index.len())
            .field("meta", &self.meta)
            .finish()
    }
}

/// Reads exactly `len` bytes at `offset`; running into end of file is
/// corruption (a length or offset pointed past it).
fn read_at(file: &File, path: &Path, offset: u64, len: usize) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    // Inside `cached_read::try_cached`, only from the page cache.
    match crate::storage::cached_read::read_exact_at(file, &mut buf, offset) {
        Ok(()) => Ok(buf),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(StorageError::corrupt(
            path,
            offset,
            format!("{len} bytes at offset {offset} extend past the end of the file"),
        )),
        Err(e) => Err(StorageError::io(path, e)),
    }
}

/// Streaming iterator over a key range of one [`SsTable`], created by
/// [`SsTable::range`]. Yields `(key, value)` pairs in key order (or reverse
/// order); after an error it yields `None`.
pub struct SsTableIter {
    table: Arc<SsTable>,
    lower: Bound<Vec<u8>>,
    upper: Bound<Vec<u8>>,
    reverse: bool,
    /// Whether blocks read from the file go into the block cache.
    fill_cache: bool,
    block_idx: usize,
    cursor: Option<BlockCursor>,
    /// Key buffer recycled between blocks.
    key_buf: Vec<u8>,
    started: bool,
    done: bool,
}

impl SsTableIter {
    /// Positions the cursor on block `i` (not on an entry yet).
    fn load(&mut self, i: usize) -> Result<&mut BlockCursor> {
        let block = self.table.read_block_with(i, self.fill_cache)?;
        let buf = match self.cursor.take() {
            Some(c) => c.into_key_buf(),
            None => std::mem::take(&mut self.key_buf),
        };
        self.block_idx = i;
        Ok(self.cursor.insert(BlockCursor::new(block, buf)))
    }

    fn check(&self, r: std::result::Result<(), &'static str>) -> Result<()> {
        r.map_err(|reason| self.table.block_corrupt(self.block_idx, reason))
    }

    fn above_upper(&self, key: &[u8]) -> bool {
        match &self.upper {
            Bound::Unbounded => false,
            Bound::Included(u) => key > u.as_slice(),
            Bound::Excluded(u) => key >= u.as_slice(),
        }
    }

    fn below_lower(&self, key: &[u8]) -> bool {
        match &self.lower {
            Bound::Unbounded => false,
            Bound::Included(l) => key < l.as_slice(),
            Bound::Excluded(l) => key <= l.as_slice(),
        }
    }

    /// True if no key after block `i` can be within the upper bound (the
    /// following blocks hold only keys greater than block `i`'s last key).
    fn upper_reached_by_block(&self, i: usize) -> bool {
        let last = self.table.index.key(i).unwrap_or(&[]);
        match &self.upper {
            Bound::Unbounded => false,
            Bound::Included(u) | Bound::Excluded(u) => last >= u.as_slice(),
        }
    }

    fn current(&self) -> Option<&BlockCursor> {
        self.cursor.as_ref().filter(|c| c.valid())
    }

    fn step_forward(&mut self) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        let n = self.table.index.len();
        if !self.started {
            self.started = true;
            let first = match &self.lower {
                Bound::Unbounded => 0,
                Bound::Included(k) => self.table.index.find(k, false),
                Bound::Excluded(k) => self.table.index.find(k, true),
            };
            if first >= n {
                return Ok(None);
            }
            let lower = std::mem::replace(&mut self.lower, Bound::Unbounded);
            let cursor = self.load(first)?;
            let r = match &lower {
                Bound::Unbounded => cursor.seek_to_first(),
                Bound::Included(k) => cursor.seek_ge(k),
                Bound::Excluded(k) => cursor.seek_ge(k).and_then(|()| {
                    if cursor.valid() && cursor.key() == k.as_slice() {
                        cursor.next()
                    } else {
                        Ok(())
                    }
                }),
            };
            self.lower = lower;
            self.check(r)?;
        } else if let Some(c) = self.cursor.as_mut() {
            let r = c.next();
            self.check(r)?;
        }
        loop {
            if let Some(c) = self.current() {
                if self.above_upper(c.key()) {
                    return Ok(None);
                }
                return Ok(Some((c.key().to_vec(), c.value().to_vec())));
            }
            let next = self.block_idx + 1;
            if next >= n || self.upper_reached_by_block(self.block_idx) {
                return Ok(None);
            }
            let r = self.load(next)?.seek_to_first();
            self.check(r)?;
        }
    }

    fn step_reverse(&mut self) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        let n = self.table.index.len();
        if !self.started {
            self.started = true;
            if n == 0 {
                return Ok(None);
            }
            let last = match &self.upper {
                Bound::Unbounded => n - 1,
                Bound::Included(k) | Bound::Excluded(k) => {
                    self.table.index.find(k, false).min(n - 1)
                }
            };
            let upper = std::mem::replace(&mut self.upper, Bound::Unbounded);
            let cursor = self.load(last)?;
            let r = match &upper {
                Bound::Unbounded => cursor.seek_to_last(),
                Bound::Included(k) | Bound::Excluded(k) => {
                    let inclusive = matches!(upper, Bound::Included(_));
                    cursor.seek_ge(k).and_then(|()| {
                        if !cursor.valid() {
                            cursor.seek_to_last()
                        } else if cursor.key() > k.as_slice()
                            || (!inclusive && cursor.key() == k.as_slice())
                        {
                            cursor.prev()
                        } else {
                            Ok(())
                        }
                    })
                }
            };
            self.upper = upper;
            self.check(r)?;
        } else if let Some(c) = self.cursor.as_mut() {
            let r = c.prev();
            self.check(r)?;
        }
        loop {
            if let Some(c) = self.current() {
                if self.below_lower(c.key()) {
                    return Ok(None);
                }
                return Ok(Some((c.key().to_vec(), c.value().to_vec())));
            }
            // Every key of the previous block is <= its index key: stop
            // without reading it if that key is already below the range.
            let prev = match self.block_idx.checked_sub(1) {
                Some(p) if !self.below_lower(self.table.index.key(p).unwrap_or(&[])) => p,
                _ => return Ok(None),
            };
            let r = self.load(prev)?.seek_to_last();
            self.check(r)?;
        }
    }
}

impl Iterator for SsTableIter {
    type Item = Result<(Vec<u8>, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let r = if self.reverse {
            self.step_reverse()
        } else {
            self.step_forward()
        };
        match r {
            Ok(Some(kv)) => Some(Ok(kv)),
            Ok(None) => {
                self.done = true;
                self.cursor = None;
                None
            }
            Err(e) => {
                self.done = true;
                self.cursor = None;
                Some(Err(e))
            }
        }
    }
}

impl std::fmt::Debug for SsTableIter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SsTableIter")
            .field("table", &self.table.path)
            .field("lower", &self.lower)
            .field("upper", &self.upper)
            .field("reverse", &self.reverse)
            .field("done", &self.done)
            .finish()
    }
}
