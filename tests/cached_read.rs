//! `storage::cached_read` against a real file on disk: a read inside
//! `try_cached` is served when the page cache holds the data and abandoned
//! (not waited for) when it does not.
#![cfg(all(target_os = "linux", target_env = "gnu"))]

use ringdb::storage::cached_read::{read_exact_at, try_cached};
use std::io::Write;
use std::os::fd::AsRawFd;

/// Whether the page holding `offset` of `file` (of `len` bytes) is in the
/// page cache, as `mincore` sees it.
fn resident(file: &std::fs::File, len: usize, offset: usize) -> bool {
    // SAFETY: a read-only shared mapping of a file we hold open, unmapped
    // below; `mincore` writes one byte per page into `pages`, which has
    // room for every page of the mapping.
    unsafe {
        let map = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        );
        assert_ne!(map, libc::MAP_FAILED);
        let page = libc::sysconf(libc::_SC_PAGESIZE) as usize;
        let mut pages = vec![0u8; len.div_ceil(page)];
        assert_eq!(libc::mincore(map, len, pages.as_mut_ptr()), 0);
        libc::munmap(map, len);
        pages[offset / page] & 1 == 1
    }
}

/// Drops `file`'s clean pages from the page cache, and checks they went.
fn evict(file: &std::fs::File, len: usize, offset: usize) {
    file.sync_all().unwrap();
    for _ in 0..10 {
        // SAFETY: a plain advice call on a descriptor `file` owns.
        let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(rc, 0);
        if !resident(file, len, offset) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!("the test file's pages stay in the page cache after POSIX_FADV_DONTNEED");
}

#[test]
fn a_read_from_disk_is_abandoned_and_a_cached_one_is_served() {
    // On the build's disk, not a tmpfs (whose pages cannot be evicted).
    std::fs::create_dir_all(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("data");
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .unwrap();
    let data: Vec<u8> = (0..(4 << 20)).map(|i: u32| (i % 251) as u8).collect();
    file.write_all(&data).unwrap();
    let offset = 3 << 20;
    let reader = std::fs::File::open(&path).unwrap();
    // A read without waiting still starts the kernel's readahead, and on a
    // virtual disk backed by the host's memory that I/O can finish before
    // the kernel checks the page again, so one attempt may be served: the
    // read must be abandoned in at least one of a few attempts (each on
    // freshly evicted pages), which a read that waits never is.
    const ATTEMPTS: usize = 5;
    let abandoned = (0..ATTEMPTS).any(|_| {
        evict(&file, data.len(), offset as usize);
        try_cached(|| {
            let mut buf = vec![0u8; 4096];
            read_exact_at(&reader, &mut buf, offset).map(|()| buf)
        })
        .is_none()
    });
    assert!(
        abandoned,
        "a read of evicted data must be abandoned, not served from disk ({ATTEMPTS} attempts)"
    );
    let file = reader;

    // Outside the mode the read waits for the disk, which also brings the
    // data into the page cache...
    let mut buf = vec![0u8; 4096];
    read_exact_at(&file, &mut buf, offset).unwrap();
    assert_eq!(buf, data[offset as usize..offset as usize + 4096]);
    // ...so now the cached-only read is served, with the same bytes.
    let attempt = try_cached(|| {
        let mut buf = vec![0u8; 4096];
        read_exact_at(&file, &mut buf, offset).map(|()| buf)
    })
    .expect("the data is in the page cache now")
    .unwrap();
    assert_eq!(attempt, buf);
}

mod engine {
    use super::*;
    use cql_lite::{DataType, Value};
    use ringdb::model::key::{self, ClusteringOrder};
    use ringdb::model::{CellValue, Entry, NodeId, RowWrite, Timestamp};
    use ringdb::storage::engine::{Engine, EngineOptions};
    use ringdb::storage::sstable::SsTableOptions;

    fn key_of(i: i64) -> Vec<u8> {
        let spk = key::serialize_partition_key(&[Value::BigInt(i)], &[DataType::BigInt]).unwrap();
        let c = key::encode_clustering(&[Value::Int(0)], &[DataType::Int], &[ClusteringOrder::Asc])
            .unwrap();
        key::row_key(&key::partition_prefix(&spk), &c)
    }

    fn value_of(engine: &Engine, i: i64) -> Option<String> {
        match engine.get(&key_of(i)).ok()? {
            Some(Entry::Row(r)) => {
                r.resolve(None, 0)
                    .and_then(|row| match row.cells.get("v").map(|c| &c.value) {
                        Some(CellValue::Live(Value::Text(s))) => Some(s.clone()),
                        _ => None,
                    })
            }
            _ => None,
        }
    }

    fn opts() -> EngineOptions {
        EngineOptions {
            background: false,
            // No block cache: every block read goes to the file.
            block_cache_bytes: 0,
            sstable: SsTableOptions {
                block_size: 512,
                ..SsTableOptions::default()
            },
            ..EngineOptions::default()
        }
    }

    /// An engine read of a row whose SSTable block is not in the page
    /// cache is abandoned inside `try_cached` (every SSTable read goes
    /// through the cached-only path), and the same read outside it finds
    /// the row.
    #[test]
    fn an_engine_read_from_disk_is_abandoned_then_served_by_the_retry() {
        std::fs::create_dir_all(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let n = 3_000;
        {
            let engine = Engine::open(dir.path(), opts()).unwrap();
            for i in 0..n {
                let w = RowWrite {
                    ts: Timestamp(i as u64 + 1),
                    insert_marker: Some(None),
                    delete_row: false,
                    cells: vec![(
                        "v".into(),
                        CellValue::Live(Value::Text(format!("value-{i:06}-{}", "x".repeat(60)))),
                        None,
                    )],
                };
                engine
                    .update_row(&key_of(i), |cur| cur.stamp(NodeId(1), None, &w))
                    .unwrap();
            }
            engine.flush().unwrap();
        }
        let tables: Vec<_> = std::fs::read_dir(dir.path().join("tables"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "sst"))
            .collect();
        assert_eq!(tables.len(), 1);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .open(&tables[0])
            .unwrap();
        let len = file.metadata().unwrap().len() as usize;
        // The first data block starts the file.
        evict(&file, len, 0);

        let engine = Engine::open(dir.path(), opts()).unwrap();
        // Which key the first block holds depends on the key order; find
        // one whose read is abandoned, i.e. reads an evicted block.
        let abandoned = (0..n).find(|&i| try_cached(|| value_of(&engine, i)).is_none());
        let i =
            abandoned.expect("some row's block was evicted, so its cached-only read is abandoned");
        let value = value_of(&engine, i).expect("the blocking read finds the row");
        assert!(value.starts_with(&format!("value-{i:06}")), "{value}");
        assert_eq!(
            try_cached(|| value_of(&engine, i)),
            Some(Some(value)),
            "after the blocking read the block is in the page cache"
        );
    }
}
