//! Tests of the SSTable format: model-based round trips, bloom behaviour,
//! corruption handling and writer validation.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use proptest::prelude::*;
use proptest::sample::Index;

use super::*;

#[derive(Clone, Debug)]
struct Ent {
    plen: usize,
    value: Vec<u8>,
    min_ts: u64,
    max_ts: u64,
}

type Model = BTreeMap<Vec<u8>, Ent>;
type Kv = (Vec<u8>, Vec<u8>);

fn opts(block_size: usize, bloom_bits_per_key: usize) -> SsTableOptions {
    SsTableOptions {
        block_size,
        bloom_bits_per_key,
    }
}

fn write_model(path: &Path, model: &Model, o: &SsTableOptions) -> SsTableMeta {
    let mut w = SsTableWriter::create(path, o).unwrap();
    let mut last_written = 0;
    for (k, e) in model {
        w.add(k, e.plen, &e.value, e.min_ts, e.max_ts).unwrap();
        let now = w.bytes_written();
        assert!(now >= last_written);
        last_written = now;
    }
    let meta = w.finish().unwrap();
    assert!(meta.file_size >= last_written);
    meta
}

/// Metadata the model says the file must have (sizes taken from `actual`).
fn expected_meta(model: &Model, actual: &SsTableMeta) -> SsTableMeta {
    let partitions: BTreeSet<&[u8]> = model.iter().map(|(k, e)| &k[..e.plen]).collect();
    let clustering = model.iter().map(|(k, e)| k[e.plen..].to_vec());
    SsTableMeta {
        entries: model.len() as u64,
        partitions: partitions.len() as u64,
        min_key: model.keys().next().cloned().unwrap_or_default(),
        max_key: model.keys().next_back().cloned().unwrap_or_default(),
        min_ts: model.values().map(|e| e.min_ts).min().unwrap_or(0),
        max_ts: model.values().map(|e| e.max_ts).max().unwrap_or(0),
        min_clustering: clustering.clone().min().unwrap_or_default(),
        max_clustering: clustering.max().unwrap_or_default(),
        file_size: actual.file_size,
        data_bytes: actual.data_bytes,
    }
}

fn in_bounds(k: &[u8], lower: &Bound<Vec<u8>>, upper: &Bound<Vec<u8>>) -> bool {
    let above = match lower {
        Bound::Unbounded => true,
        Bound::Included(l) => k >= l.as_slice(),
        Bound::Excluded(l) => k > l.as_slice(),
    };
    let below = match upper {
        Bound::Unbounded => true,
        Bound::Included(u) => k <= u.as_slice(),
        Bound::Excluded(u) => k < u.as_slice(),
    };
    above && below
}

fn model_range(
    model: &Model,
    lower: &Bound<Vec<u8>>,
    upper: &Bound<Vec<u8>>,
    reverse: bool,
) -> Vec<Kv> {
    let mut v: Vec<Kv> = model
        .iter()
        .filter(|(k, _)| in_bounds(k, lower, upper))
        .map(|(k, e)| (k.clone(), e.value.clone()))
        .collect();
    if reverse {
        v.reverse();
    }
    v
}

fn all_ok(iter: SsTableIter) -> Vec<Kv> {
    iter.map(|r| r.unwrap()).collect()
}

/// Items until the first error, and that error if any; checks that nothing
/// follows an error.
fn until_error(mut iter: SsTableIter) -> (Vec<Kv>, Option<StorageError>) {
    let mut items = Vec::new();
    for r in iter.by_ref() {
        match r {
            Ok(kv) => items.push(kv),
            Err(e) => {
                assert!(iter.next().is_none(), "iterator yielded after an error");
                return (items, Some(e));
            }
        }
    }
    (items, None)
}

fn corrupt_offset(e: &StorageError, path: &Path) -> u64 {
    match e {
        StorageError::Corrupt {
            path: p, offset, ..
        } => {
            assert_eq!(p, path, "corruption error names the wrong file");
            *offset
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

fn key_strategy() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        proptest::sample::select(vec![0u8, 1, 2, 3, 0x7f, 0x80, 0xff]),
        0..10,
    )
}

fn model_strategy(max: usize) -> impl Strategy<Value = Model> {
    proptest::collection::vec(
        (
            key_strategy(),
            any::<Index>(),
            proptest::collection::vec(any::<u8>(), 0..24),
            any::<u64>(),
            any::<u64>(),
        ),
        0..max,
    )
    .prop_map(|entries| {
        entries
            .into_iter()
            .map(|(k, plen, value, a, b)| {
                let plen = plen.index(k.len() + 1);
                (
                    k,
                    Ent {
                        plen,
                        value,
                        min_ts: a.min(b),
                        max_ts: a.max(b),
                    },
                )
            })
            .collect()
    })
}

/// A bound key: an existing key of the model (picked by index) or any key.
#[derive(Clone, Debug)]
enum BoundSpec {
    Unbounded,
    Included(bool, Index, Vec<u8>),
    Excluded(bool, Index, Vec<u8>),
}

fn bound_strategy() -> impl Strategy<Value = BoundSpec> {
    prop_oneof![
        1 => Just(BoundSpec::Unbounded),
        2 => (any::<bool>(), any::<Index>(), key_strategy()).prop_map(|(e, i, k)| BoundSpec::Included(e, i, k)),
        2 => (any::<bool>(), any::<Index>(), key_strategy()).prop_map(|(e, i, k)| BoundSpec::Excluded(e, i, k)),
    ]
}

fn resolve(spec: &BoundSpec, keys: &[&Vec<u8>]) -> Bound<Vec<u8>> {
    let pick = |existing: bool, i: &Index, k: &Vec<u8>| {
        if existing && !keys.is_empty() {
            keys[i.index(keys.len())].clone()
        } else {
            k.clone()
        }
    };
    match spec {
        BoundSpec::Unbounded => Bound::Unbounded,
        BoundSpec::Included(e, i, k) => Bound::Included(pick(*e, i, k)),
        BoundSpec::Excluded(e, i, k) => Bound::Excluded(pick(*e, i, k)),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn model_roundtrip(
        model in model_strategy(200),
        block_size in prop_oneof![1usize..48, 48usize..600, Just(4096usize)],
        bloom_bits in 1usize..16,
        cache_cap in proptest::option::of(0usize..20_000),
        probes in proptest::collection::vec(key_strategy(), 0..40),
        ranges in proptest::collection::vec((bound_strategy(), bound_strategy(), any::<bool>()), 0..16),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.sst");
        let written = write_model(&path, &model, &opts(block_size, bloom_bits));
        let cache = cache_cap.map(BlockCache::new);
        let table = SsTable::open(&path, cache.clone()).unwrap();

        prop_assert_eq!(&written, table.meta());
        prop_assert_eq!(table.meta(), &expected_meta(&model, &written));
        prop_assert_eq!(written.file_size, std::fs::metadata(&path).unwrap().len());
        prop_assert_eq!(table.path(), path.as_path());

        for (k, e) in &model {
            prop_assert_eq!(table.get(k).unwrap(), Some(e.value.clone()));
            prop_assert!(table.may_contain_partition(&k[..e.plen]));
        }
        for p in &probes {
            prop_assert_eq!(table.get(p).unwrap(), model.get(p).map(|e| e.value.clone()));
        }
        for reverse in [false, true] {
            let all = all_ok(table.range(Bound::Unbounded, Bound::Unbounded, reverse));
            prop_assert_eq!(all, model_range(&model, &Bound::Unbounded, &Bound::Unbounded, reverse));
        }
        let keys: Vec<&Vec<u8>> = model.keys().collect();
        for (lo, hi, reverse) in &ranges {
            let (lo, hi) = (resolve(lo, &keys), resolve(hi, &keys));
            let got = all_ok(table.range(lo.clone(), hi.clone(), *reverse));
            prop_assert_eq!(got, model_range(&model, &lo, &hi, *reverse), "range {:?}..{:?} reverse={}", lo, hi, reverse);
        }
        if let Some(c) = &cache {
            prop_assert!(c.usage() <= c.capacity());
        }
    }

    /// A compaction's scan reads what a full range reads, and leaves the
    /// block cache as it found it.
    #[test]
    fn an_uncached_scan_reads_everything_and_fills_no_cache(
        model in model_strategy(200),
        block_size in prop_oneof![1usize..48, 48usize..600],
        warm in proptest::collection::vec(key_strategy(), 0..10),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.sst");
        write_model(&path, &model, &opts(block_size, 10));
        let cache = BlockCache::new(1 << 20);
        let table = SsTable::open(&path, Some(cache.clone())).unwrap();
        // Some blocks cached by point reads first: the scan may use them.
        for k in &warm {
            prop_assert_eq!(table.get(k).unwrap(), model.get(k).map(|e| e.value.clone()));
        }
        let before = cache.usage();
        let all = all_ok(table.scan_uncached());
        prop_assert_eq!(all, model_range(&model, &Bound::Unbounded, &Bound::Unbounded, false));
        prop_assert_eq!(cache.usage(), before);
        // The same scan through the cache fills it: every block is then
        // cached, so an uncached scan afterwards finds them all there.
        let all = all_ok(table.range(Bound::Unbounded, Bound::Unbounded, false));
        prop_assert_eq!(all.len(), model.len());
        prop_assert!(cache.usage() >= before);
        if before == 0 && !model.is_empty() {
            prop_assert!(cache.usage() > 0);
        }
    }
}

/// A table a compaction replaced leaves the block cache at once, and
/// only its blocks do.
#[test]
fn an_evicted_tables_blocks_leave_the_cache_and_no_others() {
    let dir = tempfile::tempdir().unwrap();
    let cache = BlockCache::new(64 << 20);
    let model = numbered_model(2000, 40);
    let (pa, pb) = (dir.path().join("a.sst"), dir.path().join("b.sst"));
    write_model(&pa, &model, &opts(256, 10));
    write_model(&pb, &model, &opts(256, 10));
    let a = SsTable::open(&pa, Some(cache.clone())).unwrap();
    let b = SsTable::open(&pb, Some(cache.clone())).unwrap();
    let keys: Vec<&Vec<u8>> = model.keys().step_by(37).collect();
    for k in &keys {
        a.get(k).unwrap();
    }
    let only_a = cache.usage();
    assert!(only_a > 0);
    for k in &keys {
        b.get(k).unwrap();
    }
    assert_eq!(cache.usage(), 2 * only_a, "same blocks, twice");
    a.evict_cached_blocks();
    assert_eq!(cache.usage(), only_a, "b's blocks stay");
    let stats = cache.stats();
    for k in &keys {
        b.get(k).unwrap();
    }
    assert_eq!(cache.stats().hits - stats.hits, keys.len() as u64);
    b.evict_cached_blocks();
    assert_eq!(cache.usage(), 0);
}

fn numbered_model(n: usize, value_len: usize) -> Model {
    (0..n)
        .map(|i| {
            let key = format!("part{:04}/row{:05}", i / 10, i).into_bytes();
            let ent = Ent {
                plen: 8,
                value: vec![(i % 251) as u8; value_len],
                min_ts: i as u64,
                max_ts: i as u64 + 5,
            };
            (key, ent)
        })
        .collect()
}

#[test]
fn bloom_false_positive_rate_under_two_percent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bloom.sst");
    let model: Model = (0..100_000u32)
        .map(|i| {
            let mut k = format!("p{i:07}").into_bytes();
            let plen = k.len();
            k.extend_from_slice(b"/c");
            (
                k,
                Ent {
                    plen,
                    value: vec![1],
                    min_ts: 1,
                    max_ts: 1,
                },
            )
        })
        .collect();
    let meta = write_model(&path, &model, &opts(4096, 10));
    assert_eq!(meta.partitions, 100_000);
    let table = SsTable::open(&path, None).unwrap();
    for i in 0..100_000u32 {
        assert!(table.may_contain_partition(format!("p{i:07}").as_bytes()));
    }
    let fp = (0..100_000u32)
        .filter(|i| table.may_contain_partition(format!("q{i:07}").as_bytes()))
        .count();
    assert!(fp < 2_000, "false-positive rate {}%", fp as f64 / 1000.0);
}

#[test]
fn writer_rejects_bad_input_and_stays_usable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.sst");
    let mut w = SsTableWriter::create(&path, &SsTableOptions::default()).unwrap();
    w.add(b"b", 1, b"1", 1, 2).unwrap();
    let unsorted = w.add(b"a", 1, b"x", 1, 2);
    assert!(
        matches!(unsorted, Err(StorageError::InvalidArgument(_))),
        "{unsorted:?}"
    );
    let dup = w.add(b"b", 1, b"x", 1, 2);
    assert!(
        matches!(dup, Err(StorageError::InvalidArgument(_))),
        "{dup:?}"
    );
    let plen = w.add(b"c", 2, b"x", 1, 2);
    assert!(
        matches!(plen, Err(StorageError::InvalidArgument(_))),
        "{plen:?}"
    );
    let ts = w.add(b"c", 1, b"x", 3, 2);
    assert!(
        matches!(ts, Err(StorageError::InvalidArgument(_))),
        "{ts:?}"
    );
    w.add(b"c", 1, b"3", 5, 9).unwrap();
    let meta = w.finish().unwrap();
    assert_eq!(meta.entries, 2);
    assert_eq!((meta.min_ts, meta.max_ts), (1, 9));
    let t = SsTable::open(&path, None).unwrap();
    assert_eq!(
        all_ok(t.range(Bound::Unbounded, Bound::Unbounded, false)),
        vec![
            (b"b".to_vec(), b"1".to_vec()),
            (b"c".to_vec(), b"3".to_vec()),
        ]
    );
    // Never overwrites an existing file; rejects nonsense options.
    assert!(matches!(
        SsTableWriter::create(&path, &SsTableOptions::default()),
        Err(StorageError::Io { .. })
    ));
    let other = dir.path().join("o.sst");
    assert!(matches!(
        SsTableWriter::create(&other, &opts(0, 10)),
        Err(StorageError::InvalidArgument(_))
    ));
    assert!(matches!(
        SsTableWriter::create(&other, &opts(4096, 0)),
        Err(StorageError::InvalidArgument(_))
    ));
}

#[test]
fn a_table_past_the_writeback_chunk_is_handed_to_the_os_as_it_grows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.sst");
    // About 3 MiB of values: the writer starts the writeback of the first
    // chunks while it still writes.
    let model = numbered_model(3000, 1000);
    let mut w = SsTableWriter::create(&path, &SsTableOptions::default()).unwrap();
    for (k, e) in &model {
        w.add(k, e.plen, &e.value, e.min_ts, e.max_ts).unwrap();
    }
    assert!(
        w.writeback_started >= 2 * writeback::CHUNK,
        "writeback started for {} bytes only",
        w.writeback_started
    );
    // What the writeback was asked for is in the file already, not in
    // the writer's buffer.
    let on_disk = std::fs::metadata(&path).unwrap().len();
    assert!(
        on_disk >= w.writeback_started,
        "{on_disk} < {}",
        w.writeback_started
    );
    let meta = w.finish().unwrap();
    assert_eq!(meta, expected_meta(&model, &meta));
    assert_eq!(std::fs::metadata(&path).unwrap().len(), meta.file_size);
    let t = SsTable::open(&path, None).unwrap();
    let expected: Vec<Kv> = model
        .iter()
        .map(|(k, e)| (k.clone(), e.value.clone()))
        .collect();
    assert_eq!(
        all_ok(t.range(Bound::Unbounded, Bound::Unbounded, false)),
        expected
    );
}

#[test]
fn empty_table_roundtrip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("e.sst");
    let meta = write_model(&path, &Model::new(), &SsTableOptions::default());
    let t = SsTable::open(&path, None).unwrap();
    assert_eq!(t.meta(), &meta);
    assert_eq!((meta.entries, meta.partitions, meta.data_bytes), (0, 0, 0));
    assert_eq!(t.get(b"").unwrap(), None);
    assert!(!t.may_contain_partition(b""));
    assert!(t
        .range(Bound::Unbounded, Bound::Unbounded, false)
        .next()
        .is_none());
    assert!(t
        .range(Bound::Unbounded, Bound::Unbounded, true)
        .next()
        .is_none());
}

/// Writes `model` with small blocks; returns the path and per-key block index.
fn many_blocks(dir: &Path, model: &Model) -> (PathBuf, Arc<SsTable>) {
    let path = dir.join("c.sst");
    write_model(&path, model, &opts(64, 10));
    let t = SsTable::open(&path, None).unwrap();
    assert!(t.index.len() > 8, "want many blocks, got {}", t.index.len());
    (path, t)
}

fn damaged_copy(src: &Path, dst: &Path, edit: impl FnOnce(&mut Vec<u8>)) {
    let mut bytes = std::fs::read(src).unwrap();
    edit(&mut bytes);
    std::fs::write(dst, bytes).unwrap();
}

#[test]
fn damaged_data_block_is_reported_and_others_stay_readable() {
    let dir = tempfile::tempdir().unwrap();
    let model = numbered_model(600, 12);
    let (path, clean) = many_blocks(dir.path(), &model);
    let victim = 3usize;
    let entry = *clean.index.entry(victim).unwrap();
    let block_of = |k: &[u8]| clean.index.find(k, false);

    // Damage the block body, then (separately) its checksum trailer.
    for at in [
        entry.offset + entry.len as u64 / 2,
        entry.offset + entry.len as u64 + 1,
    ] {
        let bad = dir.path().join(format!("bad{at}.sst"));
        damaged_copy(&path, &bad, |b| b[at as usize] ^= 0x40);
        for cache in [None, Some(BlockCache::new(1 << 20))] {
            let t = SsTable::open(&bad, cache).unwrap();
            for (k, e) in &model {
                match t.get(k) {
                    Ok(v) => {
                        assert_ne!(block_of(k), victim);
                        assert_eq!(v, Some(e.value.clone()));
                    }
                    Err(err) => {
                        assert_eq!(block_of(k), victim);
                        assert_eq!(corrupt_offset(&err, &bad), entry.offset);
                    }
                }
            }
            // Forward scan: blocks before the victim, then the error.
            let (items, err) = until_error(t.range(Bound::Unbounded, Bound::Unbounded, false));
            assert_eq!(
                corrupt_offset(&err.expect("scan must fail"), &bad),
                entry.offset
            );
            let before: Vec<Kv> = model_range(&model, &Bound::Unbounded, &Bound::Unbounded, false)
                .into_iter()
                .filter(|(k, _)| block_of(k) < victim)
                .collect();
            assert_eq!(items, before);
            // Reverse scan: blocks after the victim, then the error.
            let (items, err) = until_error(t.range(Bound::Unbounded, Bound::Unbounded, true));
            assert_eq!(
                corrupt_offset(&err.expect("scan must fail"), &bad),
                entry.offset
            );
            let after: Vec<Kv> = model_range(&model, &Bound::Unbounded, &Bound::Unbounded, true)
                .into_iter()
                .filter(|(k, _)| block_of(k) > victim)
                .collect();
            assert_eq!(items, after);
            // Ranges that end before the victim block read fine both ways.
            let hi = Bound::Included(clean.index.key(victim - 1).unwrap().to_vec());
            for reverse in [false, true] {
                let got = all_ok(t.range(Bound::Unbounded, hi.clone(), reverse));
                assert_eq!(got, model_range(&model, &Bound::Unbounded, &hi, reverse));
                assert!(!got.is_empty());
            }
            // Ranges that start after the victim block read fine both ways.
            let lo = Bound::Excluded(clean.index.key(victim).unwrap().to_vec());
            for reverse in [false, true] {
                let got = all_ok(t.range(lo.clone(), Bound::Unbounded, reverse));
                assert_eq!(got, model_range(&model, &lo, &Bound::Unbounded, reverse));
                assert!(!got.is_empty());
            }
        }
    }
}

#[test]
fn damaged_index_bloom_meta_or_footer_fails_open_at_that_structure() {
    let dir = tempfile::tempdir().unwrap();
    let model = numbered_model(120, 4);
    let (path, clean) = many_blocks(dir.path(), &model);
    let len = std::fs::metadata(&path).unwrap().len() as usize;
    let footer_at = (len - format::FOOTER_SIZE) as u64;
    let footer =
        format::Footer::decode(&std::fs::read(&path).unwrap()[footer_at as usize..]).unwrap();
    let data_bytes = clean.meta().data_bytes as usize;
    assert_eq!(footer.index.offset, data_bytes as u64);
    let bad = dir.path().join("bad.sst");
    for at in data_bytes..len {
        for bit in [0x01u8, 0x80] {
            let _ = std::fs::remove_file(&bad);
            damaged_copy(&path, &bad, |b| b[at] ^= bit);
            let err = SsTable::open(&bad, None).expect_err("damaged metadata must fail open");
            let expected = [
                footer_at,
                footer.meta.offset,
                footer.bloom.offset,
                footer.index.offset,
            ]
            .into_iter()
            .find(|&o| at as u64 >= o)
            .unwrap();
            assert_eq!(corrupt_offset(&err, &bad), expected, "flip at {at}: {err}");
        }
    }
}

#[test]
fn unknown_version_bad_magic_and_short_files_are_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = many_blocks(dir.path(), &numbered_model(200, 4));
    let len = std::fs::metadata(&path).unwrap().len() as usize;
    let f = len - format::FOOTER_SIZE;
    // A future version with a valid footer checksum.
    let v2 = dir.path().join("v2.sst");
    damaged_copy(&path, &v2, |b| {
        let crc_at = len - 12;
        b[crc_at - 4..crc_at].copy_from_slice(&2u32.to_le_bytes());
        let crc = crc32c::crc32c(&b[f..crc_at]);
        b[crc_at..crc_at + 4].copy_from_slice(&crc.to_le_bytes());
    });
    let err = SsTable::open(&v2, None).unwrap_err();
    assert_eq!(corrupt_offset(&err, &v2), f as u64);
    assert!(err.to_string().contains("version 2"), "{err}");
    // Not an SSTable at all.
    let junk = dir.path().join("junk.sst");
    std::fs::write(&junk, vec![7u8; 500]).unwrap();
    let err = SsTable::open(&junk, None).unwrap_err();
    assert!(err.to_string().contains("magic"), "{err}");
    let short = dir.path().join("short.sst");
    std::fs::write(&short, b"tiny").unwrap();
    assert_eq!(
        corrupt_offset(&SsTable::open(&short, None).unwrap_err(), &short),
        0
    );
    let missing = dir.path().join("missing.sst");
    assert!(matches!(
        SsTable::open(&missing, None),
        Err(StorageError::Io { .. })
    ));
}

#[derive(Clone, Debug)]
enum Damage {
    Flips(Vec<(Index, u8)>),
    Truncate(Index),
    Append(Vec<u8>),
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_damage_never_panics_and_never_returns_wrong_data(
        model in model_strategy(120),
        block_size in 1usize..300,
        damage in prop_oneof![
            4 => proptest::collection::vec((any::<Index>(), 1u8..=255), 1..4).prop_map(Damage::Flips),
            1 => any::<Index>().prop_map(Damage::Truncate),
            1 => proptest::collection::vec(any::<u8>(), 1..100).prop_map(Damage::Append),
        ],
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.sst");
        write_model(&path, &model, &opts(block_size, 8));
        let clean = SsTable::open(&path, None).unwrap();
        let len = clean.meta().file_size as usize;
        let bad = dir.path().join("bad.sst");
        let mut flips: BTreeMap<usize, u8> = BTreeMap::new();
        damaged_copy(&path, &bad, |b| match &damage {
            Damage::Flips(fs) => {
                for (i, x) in fs {
                    *flips.entry(i.index(len)).or_default() ^= x;
                }
                flips.retain(|_, x| *x != 0);
                for (&at, &x) in &flips {
                    b[at] ^= x;
                }
            }
            Damage::Truncate(i) => b.truncate(i.index(len)),
            Damage::Append(extra) => b.extend_from_slice(extra),
        });
        let opened = SsTable::open(&bad, Some(BlockCache::new(4096)));
        let Damage::Flips(_) = damage else {
            prop_assert!(matches!(opened, Err(StorageError::Corrupt { .. })), "{:?}", opened);
            return Ok(());
        };
        let data_bytes = clean.meta().data_bytes as usize;
        let all_in_data = flips.keys().all(|&at| at < data_bytes);
        let t = match opened {
            Ok(t) => t,
            Err(e) => {
                prop_assert!(!all_in_data, "open failed on data-only damage: {}", e);
                prop_assert!(matches!(e, StorageError::Corrupt { .. }), "{}", e);
                return Ok(());
            }
        };
        prop_assert!(all_in_data);
        prop_assert_eq!(t.meta(), clean.meta());
        // Blocks that hold a damaged byte (body or checksum).
        let damaged: BTreeSet<usize> = flips
            .keys()
            .map(|&at| (0..clean.index.len()).find(|&i| {
                let e = clean.index.entry(i).unwrap();
                at < e.offset as usize + e.len + 4
            }).unwrap())
            .collect();
        let offset_of = |i: usize| clean.index.entry(i).unwrap().offset;
        for (k, e) in &model {
            let block = clean.index.find(k, false);
            match t.get(k) {
                Ok(v) => {
                    prop_assert!(!damaged.contains(&block));
                    prop_assert_eq!(v, Some(e.value.clone()));
                }
                Err(err) => {
                    prop_assert!(damaged.contains(&block));
                    prop_assert_eq!(corrupt_offset(&err, &bad), offset_of(block));
                }
            }
        }
        let full = model_range(&model, &Bound::Unbounded, &Bound::Unbounded, false);
        let (items, err) = until_error(t.range(Bound::Unbounded, Bound::Unbounded, false));
        prop_assert_eq!(&items[..], &full[..items.len()]);
        match (err, damaged.first()) {
            (Some(err), Some(&first)) => prop_assert_eq!(corrupt_offset(&err, &bad), offset_of(first)),
            (None, None) => prop_assert_eq!(items.len(), full.len()),
            (err, first) => prop_assert!(false, "error {:?} vs damaged block {:?}", err, first),
        }
        let (items, err) = until_error(t.range(Bound::Unbounded, Bound::Unbounded, true));
        let n = items.len();
        prop_assert!(items.iter().eq(full.iter().rev().take(n)));
        match (err, damaged.last()) {
            (Some(err), Some(&last)) => prop_assert_eq!(corrupt_offset(&err, &bad), offset_of(last)),
            (None, None) => prop_assert_eq!(n, full.len()),
            (err, last) => prop_assert!(false, "error {:?} vs damaged block {:?}", err, last),
        }
    }
}

#[test]
fn concurrent_readers_share_one_table_and_cache() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<SsTable>();
    assert_send_sync::<BlockCache>();
    assert_send_sync::<SsTableIter>();

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mt.sst");
    let model = Arc::new(numbered_model(20_000, 20));
    write_model(&path, &model, &SsTableOptions::default());
    let cache = BlockCache::new(256 << 10);
    let table = SsTable::open(&path, Some(cache.clone())).unwrap();
    let keys: Arc<Vec<Vec<u8>>> = Arc::new(model.keys().cloned().collect());
    let handles: Vec<_> = (0..4usize)
        .map(|t| {
            let (table, model, keys) = (table.clone(), model.clone(), keys.clone());
            std::thread::spawn(move || {
                let mut x = t as u64 + 1;
                for _ in 0..5_000 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let k = &keys[(x % keys.len() as u64) as usize];
                    assert_eq!(table.get(k).unwrap().as_ref(), Some(&model[k].value));
                }
                let reverse = t % 2 == 1;
                let mut got: Vec<Vec<u8>> = table
                    .range(
                        Bound::Included(keys[100].clone()),
                        Bound::Excluded(keys[900].clone()),
                        reverse,
                    )
                    .map(|r| r.unwrap().0)
                    .collect();
                if reverse {
                    got.reverse();
                }
                assert_eq!(got, keys[100..900]);
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert!(cache.usage() > 0 && cache.usage() <= cache.capacity());
}
