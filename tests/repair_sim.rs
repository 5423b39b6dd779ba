//! Anti-entropy repair (`ClusterStore::repair`) on a simulated cluster:
//! hints are dropped at once (a one-millisecond hint window) and nothing
//! reads through a coordinator, so only repair can bring a replica that
//! missed writes up to date.
//!
//! - A replica that missed inserts, updates and deletions gets them all,
//!   every replica of every key then holds the same rows, and a second
//!   repair finds nothing to send (the hashes of equal data are equal,
//!   whether it sits in memtables or SSTables).
//! - With a replica down, repair still repairs the others and says it is
//!   incomplete.
//! - A range holding more data than a span should is cut into several
//!   spans, and the repair is the same.
//! - Hashing a span for a repair keeps to the node's stream limit, but
//!   never waits past half of the coordinator's timeout for the answer.
//! - Under random kills, partitions, loss and delays, every acknowledged
//!   write is on every replica after repair, and replicas agree
//!   (invariants 2 and 4 of DESIGN.md, with repair as the only healer).

mod sim_cluster;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use cql_lite::Value;
use ringdb::cluster::anti_entropy::SlicedSpan;
use ringdb::cluster::hints::HintOptions;
use ringdb::coordinator::{CoordinatorConfig, PeerResponse, RepairReport, RepairTuning};
use ringdb::model::Consistency;
use ringdb::net::SimConfig;
use ringdb::query::api::TableRef;
use sim_cluster::{faulty_log_workload, Cluster, ClusterOptions, Layout};

const LAYOUT: Layout = Layout {
    subnet: 42,
    id_base: 0x4200,
    token_offset: 777,
};

const KS: &str =
    "CREATE KEYSPACE ks WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 3}";
const LOG: &str = "CREATE TABLE ks.log (k int, seq int, v int, PRIMARY KEY (k, seq))";

/// Keys written by the tests.
const KEYS: i32 = 30;

fn options() -> ClusterOptions {
    ClusterOptions {
        layout: LAYOUT,
        rf: 3,
        config: CoordinatorConfig {
            write_timeout: Duration::from_millis(500),
            read_timeout: Duration::from_millis(500),
            range_timeout: Duration::from_millis(1000),
            ..CoordinatorConfig::default()
        },
        // Every hint is past its window by the time it could be replayed.
        hint_options: HintOptions {
            window: Duration::from_millis(1),
            sync: false,
            segment_bytes: 1 << 20,
            replay_batch_bytes: 1 << 20,
        },
        batches: None,
    }
}

async fn cluster(n: usize, sim: SimConfig) -> Cluster {
    Cluster::build(n, sim, options(), KS, &[LOG]).await
}

fn log_table(c: &Cluster) -> TableRef {
    TableRef {
        keyspace: "ks".into(),
        table: "log".into(),
        id: c
            .node(0)
            .schema
            .current()
            .get_table("ks", "log")
            .expect("log")
            .id,
    }
}

/// `(seq, v)` of every live row of key `k` in node `i`'s own data.
async fn local_rows(c: &Cluster, i: usize, k: i32) -> Vec<(Value, Value)> {
    c.local_query(i, &format!("SELECT seq, v FROM ks.log WHERE k = {k}"))
        .await
        .rows
        .iter()
        .map(|r| (r.values[0].clone(), r.values[1].clone()))
        .collect()
}

/// Runs repair of `ks.log` on every running node, primary ranges only
/// (so every range once), and adds up the reports.
async fn repair_everywhere(c: &Cluster) -> RepairReport {
    let table = log_table(c);
    let mut total = RepairReport::default();
    for (_, node) in c.running() {
        let r = node
            .store
            .repair(std::slice::from_ref(&table), true)
            .await
            .expect("repair");
        total.tables += r.tables;
        total.spans += r.spans;
        total.spans_incomplete += r.spans_incomplete;
        total.failures.extend(r.failures);
        total.slices_compared += r.slices_compared;
        total.slices_streamed += r.slices_streamed;
        total.partitions_streamed += r.partitions_streamed;
        total.partitions_repaired += r.partitions_repaired;
        total.entries_sent += r.entries_sent;
    }
    total
}

async fn write(c: &Cluster, node: usize, cl: Consistency, text: &str) {
    c.query(node, cl, text)
        .await
        .unwrap_or_else(|e| panic!("{text}: {e}"));
}

#[tokio::test(start_paused = true)]
async fn repair_sends_a_replica_what_it_missed_and_a_second_run_finds_nothing() {
    let c = cluster(4, SimConfig::with_seed(3)).await;
    // What every replica should end with: (k, seq) -> v.
    let mut model: BTreeMap<(i32, i32), i32> = BTreeMap::new();
    for k in 0..KEYS {
        for seq in 0..5 {
            write(
                &c,
                (k % 4) as usize,
                Consistency::All,
                &format!("INSERT INTO ks.log (k, seq, v) VALUES ({k}, {seq}, {seq})"),
            )
            .await;
            model.insert((k, seq), seq);
        }
    }
    c.kill(1);
    for k in 0..KEYS {
        let coordinator = if k % 2 == 0 { 0 } else { 2 };
        // A new row, an update, a deleted row; every fifth key loses
        // everything before these writes (a partition deletion).
        if k % 5 == 0 {
            write(
                &c,
                coordinator,
                Consistency::Quorum,
                &format!("DELETE FROM ks.log WHERE k = {k}"),
            )
            .await;
            model.retain(|(kk, _), _| *kk != k);
        }
        write(
            &c,
            coordinator,
            Consistency::Quorum,
            &format!("INSERT INTO ks.log (k, seq, v) VALUES ({k}, 10, 100)"),
        )
        .await;
        model.insert((k, 10), 100);
        write(
            &c,
            coordinator,
            Consistency::Quorum,
            &format!("UPDATE ks.log SET v = 7 WHERE k = {k} AND seq = 1"),
        )
        .await;
        model.insert((k, 1), 7);
        write(
            &c,
            coordinator,
            Consistency::Quorum,
            &format!("DELETE FROM ks.log WHERE k = {k} AND seq = 2"),
        )
        .await;
        model.remove(&(k, 2));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Back up: its hints are past the window and dropped.
    c.revive(1).await;
    let expected = |k: i32| -> Vec<(Value, Value)> {
        model
            .range((k, i32::MIN)..=(k, i32::MAX))
            .map(|((_, seq), v)| (Value::Int(*seq), Value::Int(*v)))
            .collect()
    };
    let mut stale_keys = 0;
    for k in 0..KEYS {
        if c.replicas_of(k).contains(&1) && local_rows(&c, 1, k).await != expected(k) {
            stale_keys += 1;
        }
    }
    assert!(
        stale_keys > 10,
        "node 1 should have missed writes to most of its keys ({stale_keys})"
    );
    // One replica's data in SSTables, the others' in memtables.
    c.node(0).store.local().flush_tables().await.expect("flush");

    // While a repair runs, its progress shows; once it ends, none does.
    let mut seen = Vec::new();
    let table = log_table(&c);
    let watched = {
        let repair = c.store(3).repair(std::slice::from_ref(&table), true);
        tokio::pin!(repair);
        loop {
            tokio::select! {
                r = &mut repair => break r.expect("repair"),
                _ = tokio::time::sleep(Duration::from_millis(1)) => {
                    seen.extend(c.store(3).repair_progress());
                }
            }
        }
    };
    assert!(!seen.is_empty(), "no progress seen");
    assert!(
        seen.iter()
            .all(|p| p.spans_total == watched.spans && p.spans_done <= p.spans_total),
        "{seen:?}"
    );
    assert!(
        seen.windows(2).all(|w| w[0].spans_done <= w[1].spans_done),
        "{seen:?}"
    );
    assert_eq!(c.store(3).repair_progress(), None);

    let first = repair_everywhere(&c).await;
    assert!(first.is_complete(), "{first}");
    assert!(
        first.partitions_repaired + watched.partitions_repaired >= stale_keys,
        "{first}"
    );
    assert!(first.entries_sent > 0, "{first}");
    for k in 0..KEYS {
        for r in c.replicas_of(k) {
            assert_eq!(
                local_rows(&c, r, k).await,
                expected(k),
                "key {k} on node {r} after repair"
            );
        }
    }

    let second = repair_everywhere(&c).await;
    assert!(second.is_complete(), "{second}");
    assert_eq!(
        second.slices_streamed, 0,
        "equal replicas hashed differently: {second}"
    );
    assert_eq!(second.entries_sent, 0, "{second}");
    assert!(second.slices_compared > 0, "{second}");
    assert_eq!(c.store(3).stats().repairs, 3);
}

#[tokio::test(start_paused = true)]
async fn with_a_replica_down_repair_fixes_the_others_and_says_it_is_incomplete() {
    let c = cluster(3, SimConfig::with_seed(5)).await;
    c.kill(2);
    c.kill(1);
    for k in 0..KEYS {
        write(
            &c,
            0,
            Consistency::One,
            &format!("INSERT INTO ks.log (k, seq, v) VALUES ({k}, 1, {k})"),
        )
        .await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    c.revive(1).await;
    assert!(
        local_rows(&c, 1, 0).await.is_empty(),
        "node 1 missed the writes"
    );

    let report = c
        .store(0)
        .repair(&[log_table(&c)], false)
        .await
        .expect("repair");
    assert!(!report.is_complete(), "{report}");
    // Three nodes, RF 3: every span has node 2 as a replica.
    assert_eq!(report.spans_incomplete, report.spans, "{report}");
    assert!(
        report.to_string().contains("had a replica down"),
        "{report}"
    );
    for k in 0..KEYS {
        assert_eq!(
            local_rows(&c, 1, k).await,
            vec![(Value::Int(1), Value::Int(k))],
            "key {k} on node 1"
        );
        assert!(local_rows(&c, 2, k).await.is_empty(), "node 2 was down");
    }
}

#[tokio::test(start_paused = true)]
async fn one_missed_write_in_many_partitions_streams_only_a_few_after_finer_comparisons() {
    let mut options = options();
    // Four slices per round, slices of up to four partitions streamed: a
    // range of about 60 partitions takes two or three rounds.
    options.config.repair = RepairTuning {
        slice_depth: 2,
        leaf_partitions: 4,
        max_levels: 8,
        ..RepairTuning::default()
    };
    let c = Cluster::build(3, SimConfig::with_seed(9), options, KS, &[LOG]).await;
    let keys = 3000;
    for k in 0..keys {
        write(
            &c,
            0,
            Consistency::All,
            &format!("INSERT INTO ks.log (k, seq, v) VALUES ({k}, 0, 0)"),
        )
        .await;
    }
    c.kill(1);
    write(
        &c,
        0,
        Consistency::Quorum,
        "INSERT INTO ks.log (k, seq, v) VALUES (77, 1, 1)",
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    c.revive(1).await;
    assert_eq!(
        local_rows(&c, 1, 77).await.len(),
        1,
        "node 1 missed the write"
    );

    // A second repair started on the same node while the first runs is
    // refused, saying one runs; the first is not disturbed.
    let table = log_table(&c);
    let store = c.store(2);
    let (report, second) = tokio::join!(store.repair(std::slice::from_ref(&table), false), async {
        while store.repair_progress().is_none() {
            tokio::time::sleep(Duration::from_micros(100)).await;
        }
        store.repair(std::slice::from_ref(&table), false).await
    });
    let refused = second.expect_err("a second repair at once");
    assert!(refused.to_string().contains("already runs"), "{refused}");
    let report = report.expect("repair");
    assert!(store.repair_progress().is_none(), "progress cleared");
    assert!(report.is_complete(), "{report}");
    assert_eq!(report.partitions_repaired, 1, "{report}");
    assert_eq!(report.entries_sent, 1, "one row to node 1: {report}");
    // Without finer rounds the whole range (about 60 partitions) would be
    // streamed; with them, one small slice.
    assert!(report.partitions_streamed <= 8, "{report}");
    assert!(
        report.slices_compared > report.spans * 4,
        "no finer round ran: {report}"
    );
    assert_eq!(local_rows(&c, 1, 77).await.len(), 2, "node 1 after repair");
}

/// Three clients writing through random coordinators while a nemesis
/// kills, revives, partitions and heals, with loss and delays
/// ([`faulty_log_workload`]); then every node runs repair. Returns the
/// entries repair sent.
fn repair_convergence_case(seed: u64) -> usize {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let sim = SimConfig {
            seed,
            drop_probability: 0.02,
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(15),
            ..SimConfig::default()
        };
        let c = Arc::new(cluster(4, sim).await);
        let acked = faulty_log_workload(&c, seed, 6).await;
        let report = repair_everywhere(&c).await;
        assert!(report.is_complete(), "seed {seed}: {report}");
        for k in 0..6 {
            let reps = c.replicas_of(k);
            let first = local_rows(&c, reps[0], k).await;
            for (kk, seq) in acked.iter().filter(|(kk, _)| *kk == k) {
                assert!(
                    first.contains(&(Value::Int(*seq), Value::Int(*seq))),
                    "seed {seed}: acknowledged insert ({kk}, {seq}) not on node {}",
                    reps[0]
                );
            }
            for &r in &reps[1..] {
                assert_eq!(
                    first,
                    local_rows(&c, r, k).await,
                    "seed {seed}: replicas of {k} differ"
                );
            }
        }
        report.entries_sent
    })
}

#[test]
fn after_faults_repair_alone_puts_every_acknowledged_write_on_every_replica() {
    let sent: usize = (0..5).map(repair_convergence_case).sum();
    // The faults did leave replicas behind: repair had work to do.
    assert!(sent > 0, "repair sent nothing over five seeds");
}

/// Hashing reads every partition of a span: it shares the node's stream
/// limit (the bytes it reads pass the throttle page by page), yet never
/// waits past half of the time the coordinator gives a hash
/// (`range_timeout` x 10 / 2 = 5 s here), so a low limit slows a repair
/// down without making it time out.
#[tokio::test(start_paused = true)]
async fn repair_hashing_keeps_to_the_stream_limit_within_the_hash_timeout() {
    let c = cluster(3, SimConfig::with_seed(61)).await;
    let partitions = 1_200;
    for k in 0..partitions {
        write(
            &c,
            k as usize % 3,
            Consistency::All,
            &format!("INSERT INTO ks.log (k, seq, v) VALUES ({k}, 1, {k})"),
        )
        .await;
    }
    let table = log_table(&c);
    let store = c.store(0);
    let whole = SlicedSpan::new(0, u64::MAX, 4).expect("span");
    let hash = || async {
        let began = tokio::time::Instant::now();
        match store.serve_hash_span(table.clone(), whole).await {
            PeerResponse::SpanHashes(h) => (h, began.elapsed()),
            other => panic!("hashing answered {other:?}"),
        }
    };

    store.stream_throttle().set_bytes_per_sec(0);
    let (unlimited, _) = hash().await;
    assert_eq!(unlimited.partitions.iter().sum::<u64>(), partitions as u64);
    let stats = store.stats();
    let bytes = stats.repair_hash_bytes;
    assert!(bytes > 100_000, "{stats:?}");
    assert_eq!(stats.repair_hash_throttled_us, 0, "{stats:?}");

    // A limit of a quarter of the span's bytes per second: about four
    // seconds (the first second's worth goes at once), inside the 5 s.
    store.stream_throttle().set_bytes_per_sec(bytes / 4);
    let (limited, took) = hash().await;
    assert_eq!(limited, unlimited, "the same data hashes the same");
    assert!(
        (Duration::from_secs(2)..=Duration::from_secs(4)).contains(&took),
        "{took:?}"
    );
    let stats = store.stats();
    assert_eq!(stats.repair_hash_bytes, 2 * bytes, "{stats:?}");
    assert!(stats.repair_hash_throttled_us >= 2_000_000, "{stats:?}");

    // A limit at which the span would take days: the answer comes after
    // the 5 s budget, read at full speed from then on.
    store.stream_throttle().set_bytes_per_sec(1);
    let (starved, took) = hash().await;
    assert_eq!(starved, unlimited);
    assert!(
        (Duration::from_secs(5)..=Duration::from_millis(5_100)).contains(&took),
        "{took:?}"
    );
    // And a whole repair at that limit completes, with nothing to send.
    let report = store
        .repair(std::slice::from_ref(&table), true)
        .await
        .expect("repair");
    assert!(report.failures.is_empty(), "{report:?}");
    assert_eq!(report.entries_sent, 0, "{report:?}");
}

/// Spans are sized by data: with `span_bytes` far below what each range
/// holds, every range is cut into several spans, each compared and
/// repaired on its own, and a replica that missed writes gets them all as
/// with whole ranges.
#[tokio::test(start_paused = true)]
async fn ranges_holding_much_data_are_repaired_in_several_spans() {
    let mut options = options();
    options.config.repair.span_bytes = 20;
    let c = Cluster::build(3, SimConfig::with_seed(71), options, KS, &[LOG]).await;
    let whole = cluster(3, SimConfig::with_seed(71)).await;
    for c in [&c, &whole] {
        c.kill(2);
        for k in 0..200 {
            write(
                c,
                k as usize % 2,
                Consistency::Quorum,
                &format!("INSERT INTO ks.log (k, seq, v) VALUES ({k}, 1, {k})"),
            )
            .await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        c.revive(2).await;
    }
    let report = repair_everywhere(&whole).await;
    let cut = repair_everywhere(&c).await;
    assert!(report.failures.is_empty() && cut.failures.is_empty());
    // Every node holds every key (RF=3 on 3 nodes): 3 x 16 ranges, one of
    // them wrapping, when whole.
    assert_eq!(report.spans, 49, "{report:?}");
    assert!(cut.spans >= 3 * report.spans, "{cut:?} against {report:?}");
    assert_eq!(cut.entries_sent, report.entries_sent, "{cut:?}");
    assert_eq!(cut.partitions_repaired, 200, "{cut:?}");
    for k in 0..200 {
        assert_eq!(
            local_rows(&c, 2, k).await,
            vec![(Value::Int(1), Value::Int(k))],
            "key {k} on node 2"
        );
    }
}
