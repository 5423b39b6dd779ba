//! Starting the write of dirty pages early, so that an fsync that follows
//! does not write tens of MiB in one burst.
//!
//! A flush or a compaction writes a whole SSTable and fsyncs it at the end;
//! the commit log in periodic mode fsyncs what it wrote in the last
//! interval. Left alone, the kernel holds those bytes as dirty pages until
//! the fsync, which then keeps the disk (and, on a virtual machine, the
//! CPU that submits and completes the I/O) busy for 50-150 ms, while this
//! node's requests wait (measured in docs/performance.md). Starting the
//! writeback every [`CHUNK`] spreads that work out; RocksDB's
//! `bytes_per_sync` does the same.

use std::fs::File;

/// How many written bytes are left to the kernel before their writeback
/// is started (1 MiB).
pub const CHUNK: u64 = 1 << 20;

/// Asks the OS to start writing `len` bytes of `file` from `offset` to the
/// disk, without waiting for them (`sync_file_range` with
/// `SYNC_FILE_RANGE_WRITE`). It can still wait for room in the disk's
/// queue, so call it from a thread that may block, never from an async
/// one. Only a hint: durability comes from the fsync that follows, so a
/// failure is logged and otherwise ignored, and where the call does not
/// exist this does nothing.
pub fn start(file: &File, offset: u64, len: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
            return;
        };
        // SAFETY: a plain syscall on a file descriptor we own; no memory is
        // passed to the kernel.
        let rc = unsafe {
            libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE)
        };
        if rc != 0 {
            tracing::debug!(
                error = %std::io::Error::last_os_error(),
                "sync_file_range failed; the fsync will write everything"
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (file, offset, len);
    }
}
