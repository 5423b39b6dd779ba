//! Logged batches on a simulated cluster (deterministic network, paused
//! clock): a coordinator that dies half way through a logged batch leaves
//! a batch-log entry that other nodes replay, so every partition ends up on
//! every replica without rows flagged as conflicted; a batch whose batch
//! log cannot be written fails with a typed error and applies nothing.

mod sim_cluster;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cql_lite::Value;
use ringdb::cluster::hints::HintOptions;
use ringdb::coordinator::{BatchFault, BatchReplayReport, CoordinatorConfig};
use ringdb::model::Consistency;
use ringdb::net::{SimConfig, SimNetwork};
use ringdb::query::api::{QueryError, ResultSet};
use sim_cluster::{rows, Cluster, ClusterOptions, Layout};

const LAYOUT: Layout = Layout {
    subnet: 1,
    id_base: 0x2000,
    token_offset: 777,
};
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

const KS: &str =
    "CREATE KEYSPACE ks WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 3}";
const T: &str = "CREATE TABLE ks.t (k int, c int, v int, w text, PRIMARY KEY (k, c))";
const U: &str = "CREATE TABLE ks.u (k int PRIMARY KEY, v int)";

fn addr(i: usize) -> SocketAddr {
    LAYOUT.addr(i)
}

impl Cluster {
    /// `n` nodes, keyspace `ks` with RF `min(3, n)`, tables `ks.t` and
    /// `ks.u`; every node has a batch log, node `i` runs with `faults[i]`
    /// (the rest without).
    async fn new(n: usize, seed: u64, faults: Vec<Option<BatchFault>>) -> Cluster {
        let rf = n.min(3);
        let options = ClusterOptions {
            layout: LAYOUT,
            rf,
            config: CoordinatorConfig {
                write_timeout: WRITE_TIMEOUT,
                ..CoordinatorConfig::default()
            },
            hint_options: HintOptions {
                window: Duration::from_secs(3600),
                sync: false,
                segment_bytes: 1 << 20,
                replay_batch_bytes: 1 << 20,
            },
            batches: Some(faults),
        };
        let ks = KS.replace(
            "'replication_factor': 3",
            &format!("'replication_factor': {rf}"),
        );
        Cluster::build(n, SimConfig::with_seed(seed), options, &ks, &[T, U]).await
    }

    /// Node `i` is back, gets the hints held for it and delivers its own.
    async fn revive_and_deliver(&self, i: usize) {
        self.revive(i).await;
        self.deliver_hints_of(i).await;
    }

    /// One sweep of every running node's batch log; the reports summed.
    async fn replay_everywhere(&self) -> BatchReplayReport {
        let mut sum = BatchReplayReport::default();
        for (_, n) in self.running() {
            let r = n.batches().replay_due().await;
            assert!(!r.busy);
            sum.due += r.due;
            sum.finished += r.finished;
            sum.kept += r.kept;
            sum.left_to_other_holder += r.left_to_other_holder;
            sum.undecodable += r.undecodable;
            sum.partitions_written += r.partitions_written;
            sum.partitions_discarded += r.partitions_discarded;
            sum.partitions_failed += r.partitions_failed;
        }
        sum
    }

    /// Entries held in the batch logs of the running nodes.
    fn batch_log_entries(&self) -> usize {
        self.running()
            .map(|(_, n)| n.batches().batch_log().len())
            .sum()
    }
}

/// A logged batch over `keys`: in each partition, insert row 1 and change
/// one column of row 0 (which the setup wrote), so a stamp must carry the
/// row's other column forward.
fn batch_text(keys: &[i32], logged: bool) -> String {
    let mut s = String::from(if logged {
        "BEGIN BATCH\n"
    } else {
        "BEGIN UNLOGGED BATCH\n"
    });
    for k in keys {
        s.push_str(&format!(
            "INSERT INTO ks.t (k, c, v) VALUES ({k}, 1, {});\nUPDATE ks.t SET w = 'batch' WHERE k = {k} AND c = 0;\n",
            k * 10
        ));
    }
    s.push_str("APPLY BATCH");
    s
}

/// Row 0 of every key, before the batch.
async fn setup_rows(c: &Cluster, keys: &[i32]) {
    for k in keys {
        c.query(
            c.nodes.len() - 1,
            Consistency::All,
            &format!(
                "INSERT INTO ks.t (k, c, v, w) VALUES ({k}, 0, {}, 'before')",
                -k
            ),
        )
        .await
        .expect("setup write");
    }
}

/// The two rows the batch leaves in partition `k`, as `SELECT c, v, w`.
fn expected_after_batch(k: i32) -> Vec<Vec<Value>> {
    vec![
        vec![Value::Int(0), Value::Int(-k), Value::Text("batch".into())],
        vec![Value::Int(1), Value::Int(k * 10), Value::Null],
    ]
}

fn values(rs: &ResultSet) -> Vec<Vec<Value>> {
    rs.rows.iter().map(|r| r.values.clone()).collect()
}

fn select(k: i32) -> String {
    format!("SELECT c, v, w FROM ks.t WHERE k = {k}")
}

/// Every key reads as the whole batch at ALL through every node, and
/// every replica holds it on its own, with no row flagged as conflicted.
async fn assert_whole_batch_everywhere(c: &Cluster, keys: &[i32]) {
    for &k in keys {
        for (coord, _) in c.running() {
            let r = c
                .query(coord, Consistency::All, &select(k))
                .await
                .unwrap_or_else(|e| panic!("read of {k} at ALL through {coord}: {e}"));
            assert_eq!(
                values(rows(&r)),
                expected_after_batch(k),
                "key {k} via {coord}"
            );
            assert!(
                rows(&r).rows.iter().all(|row| !row.conflict),
                "key {k} flagged as conflicted via {coord}"
            );
        }
        for i in c.replicas_of(k) {
            let local = c.local_query(i, &select(k)).await;
            assert_eq!(
                values(&local),
                expected_after_batch(k),
                "replica {i} of {k}"
            );
            assert!(
                local.rows.iter().all(|row| !row.conflict),
                "key {k} conflicted on replica {i}"
            );
        }
    }
}

/// The coordinator is cut off from every other node right after its batch
/// log is written, applies what it can alone (the partitions it is a
/// replica of get a version only it holds; the others fail), and dies.
/// Replay while it is down writes the batch to the other replicas (with
/// hints for it); when it is back, its own partial versions would become
/// siblings of the replay's, so the entry was kept, and the replay with
/// every replica up supersedes both: every partition is whole on every
/// replica and no row is conflicted.
#[tokio::test(start_paused = true)]
async fn a_coordinator_cut_off_after_the_batch_log_dies_and_replay_completes_the_batch() {
    let cut = Arc::new(std::sync::Mutex::new(None::<SimNetwork>));
    let hook_net = cut.clone();
    let fault = BatchFault {
        after_log: Some(Arc::new(move || {
            if let Some(net) = hook_net.lock().expect("lock").as_ref() {
                net.partition(&[addr(0)], &[addr(1), addr(2), addr(3)]);
            }
        })),
        apply_first: None,
        stall: false,
    };
    let mut c = Cluster::new(4, 21, vec![Some(fault)]).await;
    *cut.lock().expect("lock") = Some(c.net.clone());
    let keys: Vec<i32> = (100..112).collect();
    setup_rows(&c, &keys).await;
    let with_coord: Vec<i32> = keys
        .iter()
        .copied()
        .filter(|k| c.replicas_of(*k).contains(&0))
        .collect();
    let without_coord: Vec<i32> = keys
        .iter()
        .copied()
        .filter(|k| !c.replicas_of(*k).contains(&0))
        .collect();
    assert!(!with_coord.is_empty() && !without_coord.is_empty());

    let err = c
        .query(0, Consistency::One, &batch_text(&keys, true))
        .await
        .expect_err("cut off, the partitions it is not a replica of fail");
    assert!(
        matches!(err, QueryError::Timeout { write: true, .. }),
        "{err:?}"
    );
    // The batch log was written before the cut: two holders among the others.
    let holders: Vec<usize> = (1..4)
        .filter(|i| !c.node(*i).batches().batch_log().is_empty())
        .collect();
    assert_eq!(holders.len(), 2, "entry held by two nodes");
    // Partial state: the coordinator alone holds the batch in its own
    // partitions; nobody has the rest.
    for &k in &with_coord {
        assert_eq!(
            values(&c.local_query(0, &select(k)).await),
            expected_after_batch(k)
        );
        for i in c.replicas_of(k).into_iter().filter(|i| *i != 0) {
            let rs = c.local_query(i, &select(k)).await;
            assert_eq!(rs.rows.len(), 1, "replica {i} of {k} has only row 0");
        }
    }
    c.kill(0);
    c.net.heal();
    c.restart(0).await;

    // The restart took 10 s: past the replay delay.
    assert!(c.node(1).batches().config().replay_delay <= Duration::from_secs(10));
    let report = c.replay_everywhere().await;
    assert_eq!(report.left_to_other_holder, 1, "{report:?}");
    assert_eq!(report.kept, 1, "{report:?}");
    assert_eq!(report.partitions_written, keys.len(), "{report:?}");
    assert_eq!(report.finished, 0, "kept until the coordinator is back");
    // The batch is readable now (the coordinator, a replica, is down).
    for &k in &keys {
        let r = c
            .query(1, Consistency::Quorum, &select(k))
            .await
            .expect("quorum read");
        assert_eq!(values(rows(&r)), expected_after_batch(k), "key {k}");
    }
    // A second sweep while it is still down does not write again.
    let again = c.replay_everywhere().await;
    assert_eq!(again.partitions_written, 0, "{again:?}");

    // Back, with the hints held for it, but its own hints (its partial
    // versions, for the others) not delivered yet: on it, its partial
    // versions and the degraded replay's are siblings with the same cells.
    c.revive(0).await;
    for &k in &with_coord {
        let local = c.local_query(0, &select(k)).await;
        assert_eq!(values(&local), expected_after_batch(k), "key {k}");
        assert!(
            local.rows.iter().any(|row| row.conflict),
            "key {k}: partial and degraded versions are siblings until the full replay"
        );
    }
    // The full replay reads every replica (repairing the stamping one with
    // the coordinator's partial versions) and supersedes them all.
    let report = c.replay_everywhere().await;
    assert_eq!(report.finished, 1, "{report:?}");
    assert_eq!(report.partitions_written, with_coord.len(), "{report:?}");
    assert_eq!(c.batch_log_entries(), 0, "removed from every holder");
    // Its old hints arrive late: already superseded.
    c.deliver_hints_of(0).await;
    assert_whole_batch_everywhere(&c, &keys).await;
}

/// The coordinator applies the first partitions of a logged batch and
/// dies. After the replay delay the others replay the entry; when the
/// coordinator is back, every partition is whole on every replica at ALL,
/// with no conflicts.
#[tokio::test(start_paused = true)]
async fn a_coordinator_dying_after_some_partitions_is_completed_by_replay() {
    let fault = BatchFault {
        after_log: None,
        apply_first: Some(4),
        stall: false,
    };
    let mut c = Cluster::new(4, 22, vec![Some(fault)]).await;
    let keys: Vec<i32> = (200..210).collect();
    setup_rows(&c, &keys).await;
    let err = c
        .query(0, Consistency::Quorum, &batch_text(&keys, true))
        .await
        .expect_err("the fault point stops the coordinator");
    assert!(matches!(err, QueryError::Server(ref m) if m.contains("fault point")));
    for (n, &k) in keys.iter().enumerate() {
        let r = c
            .query(1, Consistency::Quorum, &select(k))
            .await
            .expect("read");
        let applied = values(rows(&r)) == expected_after_batch(k);
        assert_eq!(applied, n < 4, "only the first four partitions are there");
    }
    let early = c.replay_everywhere().await;
    assert_eq!(early.due, 0, "nothing is due before the replay delay");
    c.kill(0);
    c.restart(0).await;
    assert_eq!(c.batch_log_entries(), 2);
    // Just written entries are not due; these are 10 s old, past the delay.
    let report = c.replay_everywhere().await;
    assert_eq!(report.due, 2, "both holders see it due");
    assert_eq!(report.left_to_other_holder, 1, "one of them replays it");
    for &k in &keys {
        let r = c
            .query(1, Consistency::Quorum, &select(k))
            .await
            .expect("read");
        assert_eq!(values(rows(&r)), expected_after_batch(k), "key {k}");
    }
    c.revive_and_deliver(0).await;
    let report = c.replay_everywhere().await;
    assert_eq!(report.finished, 1, "{report:?}");
    assert_eq!(c.batch_log_entries(), 0);
    assert_whole_batch_everywhere(&c, &keys).await;
}

/// A logged batch that cannot reach enough batch-log nodes fails with the
/// typed error, and nothing of it is applied, now or after a replay.
#[tokio::test(start_paused = true)]
async fn a_batch_whose_batch_log_cannot_be_written_fails_and_applies_nothing() {
    let c = Cluster::new(3, 23, vec![]).await;
    let keys: Vec<i32> = (300..306).collect();
    // Alive by liveness, but cut off: the batch-log writes time out.
    c.net.partition(&[addr(0)], &[addr(1), addr(2)]);
    let err = c
        .query(0, Consistency::One, &batch_text(&keys, true))
        .await
        .expect_err("no batch-log node reachable");
    assert_eq!(
        err,
        QueryError::BatchLog {
            required: 2,
            alive: 2,
            received: 0
        }
    );
    // One of the two reachable: it stored the entry, and is told to drop it.
    c.net.heal();
    c.net.partition(&[addr(0)], &[addr(2)]);
    let err = c
        .query(0, Consistency::One, &batch_text(&keys, true))
        .await
        .expect_err("one batch-log node reachable of two");
    assert_eq!(
        err,
        QueryError::BatchLog {
            required: 2,
            alive: 2,
            received: 1
        }
    );
    assert_eq!(
        c.batch_log_entries(),
        0,
        "the holder that stored it dropped it"
    );
    // Every other node down: nobody can hold the log.
    c.net.heal();
    c.kill(1);
    c.kill(2);
    let err = c
        .query(0, Consistency::One, &batch_text(&keys, true))
        .await
        .expect_err("no other node alive");
    assert_eq!(
        err,
        QueryError::BatchLog {
            required: 1,
            alive: 0,
            received: 0
        }
    );
    assert!(
        err.to_string().contains("logged batch not applied"),
        "{err}"
    );
    c.revive_and_deliver(1).await;
    c.revive_and_deliver(2).await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    let report = c.replay_everywhere().await;
    assert_eq!(report.due, 0);
    for &k in &keys {
        let r = c
            .query(1, Consistency::All, &select(k))
            .await
            .expect("read");
        assert!(rows(&r).rows.is_empty(), "key {k} has nothing of the batch");
        for i in 0..3 {
            assert!(c.local_query(i, &select(k)).await.rows.is_empty());
        }
    }
    let stats = c.node(0).batches().stats();
    assert_eq!(stats.log_failures, 3);
    assert_eq!(stats.logged, 0);
}

/// A healthy logged batch is logged, applied and removed from its holders;
/// unlogged batches and single-partition batches skip the log.
#[tokio::test(start_paused = true)]
async fn logged_batches_use_the_log_and_others_skip_it() {
    let c = Cluster::new(4, 24, vec![]).await;
    let keys: Vec<i32> = (400..408).collect();
    setup_rows(&c, &keys).await;
    c.query(2, Consistency::Quorum, &batch_text(&keys, true))
        .await
        .expect("logged batch");
    assert_eq!(c.node(2).batches().stats().logged, 1);
    // The removal runs in the background.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(c.batch_log_entries(), 0);
    for &k in &keys {
        let r = c
            .query(3, Consistency::All, &select(k))
            .await
            .expect("read");
        assert_eq!(values(rows(&r)), expected_after_batch(k));
    }
    c.query(2, Consistency::Quorum, &batch_text(&[500, 501], false))
        .await
        .expect("unlogged batch");
    c.query(2, Consistency::Quorum, &batch_text(&[502], true))
        .await
        .expect("single-partition batch");
    assert_eq!(c.node(2).batches().stats().logged, 1, "no more log writes");
    let stored: u64 = c
        .running()
        .map(|(_, n)| n.batches().batch_log().stats().stored)
        .sum();
    assert_eq!(stored, 2, "one logged batch, two holders");
}

/// Replay of a batch whose table was dropped meanwhile discards that
/// table's mutations (and applies the rest).
#[tokio::test(start_paused = true)]
async fn replay_discards_the_mutations_of_a_dropped_table() {
    let fault = BatchFault {
        after_log: None,
        apply_first: Some(0),
        stall: false,
    };
    let c = Cluster::new(3, 25, vec![Some(fault)]).await;
    let text = "BEGIN BATCH
        INSERT INTO ks.t (k, c, v) VALUES (1, 1, 1);
        INSERT INTO ks.t (k, c, v) VALUES (2, 1, 2);
        INSERT INTO ks.u (k, v) VALUES (3, 3);
        INSERT INTO ks.u (k, v) VALUES (4, 4);
        APPLY BATCH";
    c.query(0, Consistency::One, text)
        .await
        .expect_err("stopped before applying anything");
    c.ddl(1, "DROP TABLE ks.t").await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let report = c.replay_everywhere().await;
    assert_eq!(report.finished, 1, "{report:?}");
    assert_eq!(report.partitions_discarded, 2, "{report:?}");
    assert_eq!(report.partitions_written, 2, "{report:?}");
    assert_eq!(c.batch_log_entries(), 0);
    for k in [3, 4] {
        let r = c
            .query(
                2,
                Consistency::All,
                &format!("SELECT v FROM ks.u WHERE k = {k}"),
            )
            .await
            .expect("read");
        assert_eq!(values(rows(&r)), vec![vec![Value::Int(k)]]);
    }
}

/// On a one-node cluster the node holds its own batch log; a batch it
/// stopped half way is replayed by the restarted node.
#[tokio::test(start_paused = true)]
async fn a_single_node_replays_its_own_batch_log_after_a_restart() {
    let fault = BatchFault {
        after_log: None,
        apply_first: Some(1),
        stall: false,
    };
    let mut c = Cluster::new(1, 26, vec![Some(fault)]).await;
    let keys = [600, 601, 602];
    setup_rows(&c, &keys).await;
    c.query(0, Consistency::One, &batch_text(&keys, true))
        .await
        .expect_err("stopped after one partition");
    assert_eq!(c.node(0).batches().batch_log().len(), 1);
    c.kill(0);
    c.options.batches = Some(Vec::new());
    c.restart(0).await;
    c.revive_and_deliver(0).await;
    assert_eq!(
        c.node(0).batches().batch_log().len(),
        1,
        "the entry survived the restart"
    );
    let report = c.replay_everywhere().await;
    assert_eq!(report.finished, 1, "{report:?}");
    assert_whole_batch_everywhere(&c, &keys).await;
}
