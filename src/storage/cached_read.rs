//! Reads that may only be served from the OS page cache.
//!
//! A partition read that touches an SSTable usually finds its blocks in
//! the block cache or the page cache and is done in microseconds, yet
//! handing it to a blocking thread costs two thread wake-ups, more than
//! the read itself on a busy machine. [`try_cached`] lets the caller run
//! such a read on its own (async) thread: while it runs, every SSTable
//! file read on this thread asks the kernel not to wait for the disk
//! (`preadv2` with `RWF_NOWAIT`). If any read would have waited, the
//! attempt is abandoned and [`try_cached`] returns `None`; the caller then
//! runs the read again where blocking is allowed. Reads have no side
//! effects beyond filling the block cache, so an abandoned attempt costs
//! only its CPU.
//!
//! Where `RWF_NOWAIT` is missing (other systems, old kernels, file systems
//! that refuse it), every attempt that reaches a file read is abandoned,
//! which is the old behaviour.

use std::cell::Cell;
use std::fs::File;
use std::io;

thread_local! {
    /// Inside [`try_cached`] on this thread.
    static CACHED_ONLY: Cell<bool> = const { Cell::new(false) };
    /// A read inside the current [`try_cached`] would have waited.
    static WOULD_WAIT: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with file reads on this thread limited to the page cache.
/// Returns `None` when some read inside `f` would have had to wait for the
/// disk (whatever `f` made of the error it got): run `f` again where
/// blocking is fine. Nested calls run `f` in the outer call's mode.
pub fn try_cached<T>(f: impl FnOnce() -> T) -> Option<T> {
    if CACHED_ONLY.with(Cell::get) {
        return Some(f());
    }
    CACHED_ONLY.with(|c| c.set(true));
    WOULD_WAIT.with(|w| w.set(false));
    // Reset the mode even if `f` panics, so the thread is not left in it.
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            CACHED_ONLY.with(|c| c.set(false));
        }
    }
    let reset = Reset;
    let value = f();
    drop(reset);
    if WOULD_WAIT.with(|w| w.replace(false)) {
        None
    } else {
        Some(value)
    }
}

/// Whether this thread is inside [`try_cached`].
pub fn cached_only() -> bool {
    CACHED_ONLY.with(Cell::get)
}

/// Fills `buf` from `file` at `offset`, like `FileExt::read_exact_at`.
/// Inside [`try_cached`], a read the page cache cannot serve whole fails
/// with `ErrorKind::WouldBlock` and marks the attempt abandoned.
pub fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    if !cached_only() {
        return std::os::unix::fs::FileExt::read_exact_at(file, buf, offset);
    }
    match read_exact_nowait(file, buf, offset) {
        Ok(()) => Ok(()),
        Err(e) => {
            WOULD_WAIT.with(|w| w.set(true));
            Err(e)
        }
    }
}

/// One `preadv2(RWF_NOWAIT)`; anything but a whole read is `WouldBlock`
/// (a short read may be the end of the file, which the blocking retry
/// then reports properly).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn read_exact_nowait(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let Ok(offset) = libc::off_t::try_from(offset) else {
        return Err(would_block());
    };
    let iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: `iov` describes `buf`, which is valid for writes of its
    // length for the whole call; the descriptor is owned by `file`.
    let n = unsafe { libc::preadv2(file.as_raw_fd(), &iov, 1, offset, libc::RWF_NOWAIT) };
    if usize::try_from(n).ok() == Some(buf.len()) {
        Ok(())
    } else {
        Err(would_block())
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn read_exact_nowait(_file: &File, _buf: &mut [u8], _offset: u64) -> io::Result<()> {
    Err(would_block())
}

fn would_block() -> io::Error {
    io::Error::new(
        io::ErrorKind::WouldBlock,
        "the data is not in the page cache (a cached-only read)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_read_outside_the_mode_is_a_plain_read() {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(b"hello world").unwrap();
        let mut buf = [0u8; 5];
        read_exact_at(&file, &mut buf, 6).unwrap();
        assert_eq!(&buf, b"world");
        assert!(!cached_only());
    }

    #[test]
    fn a_cached_read_succeeds_and_a_short_one_abandons_the_attempt() {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(b"hello world").unwrap();
        // Just written: in the page cache.
        let got = try_cached(|| {
            let mut buf = [0u8; 5];
            read_exact_at(&file, &mut buf, 0).map(|()| buf)
        });
        if cfg!(all(target_os = "linux", target_env = "gnu")) {
            assert_eq!(got.unwrap().unwrap(), *b"hello");
        }
        // Past the end: not a whole read, so the attempt is abandoned even
        // though the closure swallowed the error.
        let got = try_cached(|| {
            let mut buf = [0u8; 5];
            read_exact_at(&file, &mut buf, 9).is_ok()
        });
        assert_eq!(got, None);
        assert!(!cached_only(), "the mode ends with the attempt");
        // The next attempt starts clean.
        assert_eq!(try_cached(|| 7), Some(7));
    }

    #[test]
    fn nested_attempts_share_the_outer_mode() {
        let got = try_cached(|| {
            assert!(cached_only());
            try_cached(cached_only)
        });
        assert_eq!(got, Some(Some(true)));
        assert!(!cached_only());
    }
}
