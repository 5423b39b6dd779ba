//! The coordinator on a simulated cluster: deterministic from the seed,
//! on a paused clock, with kills, partitions, loss and delays.

mod sim_cluster;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cql_lite::{DataType, Value};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use ringdb::cluster::hints::HintOptions;
use ringdb::cluster::NodeInfo;
use ringdb::coordinator::CoordinatorConfig;
use ringdb::model::key::serialize_partition_key;
use ringdb::model::{Consistency, Dot, DotSet, NodeId};
use ringdb::net::sim::{Event, LogEntry, PacketKind};
use ringdb::net::SimConfig;
use ringdb::query::api::{QueryError, ResultSet};
use sim_cluster::{faulty_log_workload, rows, Cluster, ClusterOptions, Layout, VNODES};

const LAYOUT: Layout = Layout {
    subnet: 0,
    id_base: 0x1000,
    token_offset: 12_345,
};

fn addr(i: usize) -> SocketAddr {
    LAYOUT.addr(i)
}

fn node_id(i: usize) -> NodeId {
    LAYOUT.node_id(i)
}

fn tokens(i: usize, n: usize) -> Vec<u64> {
    LAYOUT.tokens(i, n)
}

impl Cluster {
    /// `n` nodes, keyspace `ks` with RF 3 and the given tables.
    async fn new(n: usize, sim: SimConfig, tables: &[&str]) -> Cluster {
        Cluster::with(n, sim, tables, CoordinatorConfig::default(), hint_options()).await
    }

    async fn with(
        n: usize,
        sim: SimConfig,
        tables: &[&str],
        config: CoordinatorConfig,
        hint_options: HintOptions,
    ) -> Cluster {
        Cluster::build(n, sim, options(config, hint_options), KS, tables).await
    }

    /// `n` nodes, keyspace `ks` created by `keyspace` (a `CREATE KEYSPACE ks
    /// ...` statement run through the executor) and the given tables.
    async fn with_keyspace(n: usize, sim: SimConfig, keyspace: &str, tables: &[&str]) -> Cluster {
        let options = options(CoordinatorConfig::default(), hint_options());
        Cluster::build(n, sim, options, keyspace, tables).await
    }
}

fn options(config: CoordinatorConfig, hint_options: HintOptions) -> ClusterOptions {
    ClusterOptions {
        layout: LAYOUT,
        rf: 3,
        config,
        hint_options,
        batches: None,
    }
}

fn hint_options() -> HintOptions {
    HintOptions {
        window: Duration::from_secs(600),
        sync: false,
        segment_bytes: 1 << 20,
        replay_batch_bytes: 1 << 20,
    }
}

/// The `v` column (second column) of a single-row result, if any.
fn single_v(rs: &ResultSet) -> Option<Value> {
    rs.rows.first().map(|r| r.values[1].clone())
}

const KS: &str =
    "CREATE KEYSPACE ks WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 3}";
const STRICT_KS: &str = "CREATE KEYSPACE ks WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 3} AND sloppy_quorum = false";
const KV: &str = "CREATE TABLE ks.kv (k int PRIMARY KEY, v int)";

#[tokio::test(start_paused = true)]
async fn writes_and_reads_at_quorum_on_a_healthy_cluster() {
    let c = Cluster::new(4, SimConfig::with_seed(1), &[KV]).await;
    for k in 0..20 {
        c.query(
            k as usize % 4,
            Consistency::Quorum,
            &format!("INSERT INTO ks.kv (k, v) VALUES ({k}, {})", k * 10),
        )
        .await
        .expect("write");
    }
    for k in 0..20 {
        let r = c
            .query(
                (k as usize + 1) % 4,
                Consistency::Quorum,
                &format!("SELECT * FROM ks.kv WHERE k = {k}"),
            )
            .await
            .expect("read");
        assert_eq!(single_v(rows(&r)), Some(Value::Int(k * 10)));
        // Every replica holds it (ALL was not needed: writes go to all N).
        for i in c.replicas_of(k) {
            let local = c
                .local_query(i, &format!("SELECT * FROM ks.kv WHERE k = {k}"))
                .await;
            assert_eq!(
                single_v(&local),
                Some(Value::Int(k * 10)),
                "replica {i} of {k}"
            );
        }
    }
    // Replicas that agree answer QUORUM reads with digests: one full
    // answer, the other replica's digest matching it.
    let digest_reads: u64 = (0..4).map(|i| c.store(i).stats().digest_reads).sum();
    assert!(digest_reads > 0, "no read was answered by digests");
    // A full scan through the coordinator sees every row once.
    let r = c
        .query(2, Consistency::Quorum, "SELECT * FROM ks.kv")
        .await
        .expect("scan");
    let mut keys: Vec<Value> = rows(&r).rows.iter().map(|r| r.values[0].clone()).collect();
    keys.sort_by_key(|v| match v {
        Value::Int(i) => *i,
        _ => i32::MAX,
    });
    assert_eq!(keys, (0..20).map(Value::Int).collect::<Vec<_>>());
    // Deletes go through too.
    c.query(3, Consistency::Quorum, "DELETE FROM ks.kv WHERE k = 5")
        .await
        .expect("delete");
    let r = c
        .query(0, Consistency::All, "SELECT * FROM ks.kv WHERE k = 5")
        .await
        .expect("read");
    assert!(rows(&r).rows.is_empty());
}

/// A key whose replicas include node `coord`, and one of its other
/// replicas, and a node that holds no replica of it.
fn pick_key(c: &Cluster, coord: usize) -> (i32, usize, usize) {
    for k in 0..1000 {
        let reps = c.replicas_of(k);
        if reps.contains(&coord) {
            let other = *reps.iter().find(|r| **r != coord).expect("other replica");
            let outsider = (0..c.nodes.len())
                .find(|n| !reps.contains(n))
                .expect("outsider");
            return (k, other, outsider);
        }
    }
    panic!("no key found")
}

#[tokio::test(start_paused = true)]
async fn quorum_write_with_a_replica_down_goes_to_a_fallback_and_the_hint_replays() {
    let c = Cluster::new(4, SimConfig::with_seed(2), &[KV]).await;
    let (k, down, fallback) = pick_key(&c, 0);
    c.kill(down);
    c.query(
        0,
        Consistency::Quorum,
        &format!("INSERT INTO ks.kv (k, v) VALUES ({k}, 7)"),
    )
    .await
    .expect("sloppy quorum write");
    // The fallback (the one node that is not a replica) holds the hint.
    assert_eq!(c.store(fallback).hints().stats().stored, 1);
    assert_eq!(c.store(fallback).hints().targets(), vec![node_id(down)]);
    assert_eq!(c.store(0).stats().hints_sent_to_fallbacks, 1);
    // The down replica does not have it yet.
    let before = c
        .local_query(down, &format!("SELECT * FROM ks.kv WHERE k = {k}"))
        .await;
    assert!(before.rows.is_empty());
    c.revive(down).await;
    assert_eq!(c.store(fallback).hints().stats().delivered, 1);
    assert!(c.store(fallback).hints().targets().is_empty());
    let after = c
        .local_query(down, &format!("SELECT * FROM ks.kv WHERE k = {k}"))
        .await;
    assert_eq!(single_v(&after), Some(Value::Int(7)));
}

#[tokio::test(start_paused = true)]
async fn hint_replay_is_throttled_in_groups_with_a_pause_between() {
    let config = CoordinatorConfig {
        hint_replay_concurrency: 2,
        hint_replay_pause: Duration::from_millis(100),
        // A request per hint.
        hint_replay_request_bytes: 1,
        ..CoordinatorConfig::default()
    };
    let c = Cluster::with(3, SimConfig::with_seed(13), &[KV], config, hint_options()).await;
    let down = 2;
    c.kill(down);
    // Seven writes node 0 coordinates while node 2 is down: node 0 keeps a
    // hint for each (three nodes, RF 3: everyone is a replica).
    write_keys_through_node0(&c, 7).await;
    let hinted = c.store(0).hints().stats().stored;
    assert_eq!(hinted, 7);
    c.net.clear_log();
    c.revive(down).await;
    assert_eq!(c.store(0).hints().stats().delivered, 7);
    // The replay's requests from node 0 to node 2 went out two at a time,
    // each group at least the pause after the one before.
    let sent = request_times(&c, 0, down);
    assert_eq!(sent.len(), 7, "{sent:?}");
    let groups: Vec<&[Duration]> = sent.chunks(2).collect();
    for group in &groups {
        assert_eq!(
            group.first(),
            group.last(),
            "a group goes out at once: {sent:?}"
        );
    }
    for pair in groups.windows(2) {
        let gap = pair[1][0] - pair[0][0];
        assert!(gap >= Duration::from_millis(100), "gap {gap:?} in {sent:?}");
    }
}

/// Hints of one table go to their node packed into as few requests as
/// `hint_replay_request_bytes` allows: 60 hints of small rows in one
/// request, every one applied.
#[tokio::test(start_paused = true)]
async fn hints_of_one_table_replay_packed_into_one_request() {
    let c = Cluster::with(
        3,
        SimConfig::with_seed(19),
        &[KV],
        CoordinatorConfig::default(),
        hint_options(),
    )
    .await;
    let down = 2;
    c.kill(down);
    write_keys_through_node0(&c, 60).await;
    assert_eq!(c.store(0).hints().stats().stored, 60);
    c.net.clear_log();
    c.revive(down).await;
    assert_eq!(c.store(0).hints().stats().delivered, 60);
    assert_eq!(request_times(&c, 0, down).len(), 1);
    for k in 0..60 {
        let r = c
            .local_query(down, &format!("SELECT * FROM ks.kv WHERE k = {k}"))
            .await;
        assert_eq!(single_v(&r), Some(Value::Int(k)), "key {k}");
    }
}

/// `hint_throughput` bounds the bytes of hints replayed per second: 200
/// hints (each over 40 bytes as stored) at 2,000 bytes a second, one per
/// request, take at least (8,000 - 2,000 of burst - one hint) / 2,000 s,
/// about 3 s of virtual time; without the limit they take the round trips
/// of the simulated network, under 2 s.
#[tokio::test(start_paused = true)]
async fn hint_replay_keeps_to_the_hint_throughput() {
    let mut spans = Vec::new();
    for throughput in [0, 2_000] {
        let config = CoordinatorConfig {
            hint_replay_concurrency: 1,
            hint_replay_pause: Duration::ZERO,
            hint_replay_request_bytes: 1,
            hint_throughput: throughput,
            ..CoordinatorConfig::default()
        };
        let c = Cluster::with(3, SimConfig::with_seed(23), &[KV], config, hint_options()).await;
        let down = 2;
        c.kill(down);
        write_keys_through_node0(&c, 200).await;
        c.net.clear_log();
        c.revive(down).await;
        assert_eq!(c.store(0).hints().stats().delivered, 200);
        let sent = request_times(&c, 0, down);
        assert_eq!(sent.len(), 200);
        spans.push(sent[199] - sent[0]);
    }
    assert!(spans[0] < Duration::from_secs(2), "unlimited: {spans:?}");
    assert!(
        spans[1] >= Duration::from_millis(2_980),
        "limited: {spans:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_hint_replay_failing_midway_keeps_only_the_undelivered_batches() {
    let config = CoordinatorConfig {
        hint_replay_concurrency: 1,
        hint_replay_pause: Duration::from_millis(100),
        hint_replay_request_bytes: 1,
        ..CoordinatorConfig::default()
    };
    // A segment per hint and a batch per segment.
    let hints = HintOptions {
        segment_bytes: 1,
        replay_batch_bytes: 1,
        ..hint_options()
    };
    let c = Cluster::with(3, SimConfig::with_seed(17), &[KV], config, hints).await;
    let down = 2;
    c.kill(down);
    write_keys_through_node0(&c, 7).await;
    assert_eq!(c.store(0).hints().stats().stored, 7);
    let hint_dir = c
        .node(0)
        .dir
        .join("hints")
        .join(format!("node-{:016x}", node_id(down).0));
    let segments = || std::fs::read_dir(&hint_dir).expect("hint dir").count();
    assert_eq!(segments(), 7);
    // Node 2 comes back; node 0 replays; node 2 goes down again once three
    // batches were delivered (and acknowledged), during the pause before
    // the fourth.
    c.net.clear_log();
    c.net.revive(addr(down));
    c.live.set_up(node_id(down));
    let replay = c.store(0).on_node_up(node_id(down));
    for _ in 0..10_000 {
        if c.store(0).hints().stats().delivered >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    c.kill(down);
    let report = replay.await.expect("replay task").expect("replay");
    assert_eq!((report.delivered, report.failed), (3, 1), "{report:?}");
    assert_eq!(c.store(0).stats().hints_replayed, 3);
    // The throttle held across batches.
    let sent = request_times(&c, 0, down);
    assert!(sent.len() >= 3, "{sent:?}");
    for pair in sent.windows(2) {
        assert!(pair[1] - pair[0] >= Duration::from_millis(100), "{sent:?}");
    }
    // The delivered batches are gone; the failed one and the later ones stay.
    assert_eq!(segments(), 4);
    assert_eq!(c.store(0).hints().stats().delivered, 3);
    // The next replay sends only those four.
    c.net.clear_log();
    c.revive(down).await;
    assert_eq!(request_times(&c, 0, down).len(), 4);
    assert_eq!(c.store(0).hints().stats().delivered, 7);
    assert!(c.store(0).hints().targets().is_empty());
    for k in 0..7 {
        let r = c
            .local_query(down, &format!("SELECT * FROM ks.kv WHERE k = {k}"))
            .await;
        assert_eq!(single_v(&r), Some(Value::Int(k)), "key {k}");
    }
}

#[tokio::test(start_paused = true)]
async fn hints_past_the_window_are_dropped_and_counted() {
    let hints = HintOptions {
        window: Duration::from_secs(60),
        ..hint_options()
    };
    let c = Cluster::with(
        4,
        SimConfig::with_seed(3),
        &[KV],
        CoordinatorConfig::default(),
        hints,
    )
    .await;
    let (k, down, fallback) = pick_key(&c, 0);
    c.kill(down);
    c.query(
        0,
        Consistency::Quorum,
        &format!("INSERT INTO ks.kv (k, v) VALUES ({k}, 8)"),
    )
    .await
    .expect("write");
    tokio::time::sleep(Duration::from_secs(61)).await;
    c.revive(down).await;
    let stats = c.store(fallback).hints().stats();
    assert_eq!((stats.stored, stats.delivered, stats.expired), (1, 0, 1));
    let after = c
        .local_query(down, &format!("SELECT * FROM ks.kv WHERE k = {k}"))
        .await;
    assert!(after.rows.is_empty(), "an expired hint is not replayed");
}

#[tokio::test(start_paused = true)]
async fn with_sloppy_quorum_off_the_coordinator_keeps_the_hint_and_it_counts_only_for_any() {
    let c = Cluster::with_keyspace(4, SimConfig::with_seed(4), STRICT_KS, &[KV]).await;
    for i in 0..4 {
        assert!(!c.store(i).sloppy_quorum("ks"), "node {i}");
    }
    let (k, down, outsider) = pick_key(&c, 0);
    let third = *c
        .replicas_of(k)
        .iter()
        .find(|r| **r != 0 && **r != down)
        .expect("third replica");
    c.kill(down);
    c.kill(third);
    let err = c
        .query(
            0,
            Consistency::Quorum,
            &format!("INSERT INTO ks.kv (k, v) VALUES ({k}, 1)"),
        )
        .await
        .expect_err("strict quorum with two of three replicas down");
    assert_eq!(
        err,
        QueryError::Unavailable {
            consistency: Consistency::Quorum,
            required: 2,
            alive: 1
        }
    );
    assert_eq!(
        err.to_string(),
        "cannot achieve consistency level QUORUM: 2 replicas required but only 1 alive"
    );
    // The outsider was alive, but no fallback was asked or counted.
    assert_eq!(c.store(0).stats().hints_sent_to_fallbacks, 0);
    assert_eq!(c.store(outsider).hints().stats().stored, 0);
    // ONE and ANY succeed; the coordinator keeps hints for both down replicas.
    c.query(
        0,
        Consistency::Any,
        &format!("INSERT INTO ks.kv (k, v) VALUES ({k}, 2)"),
    )
    .await
    .expect("ANY");
    assert_eq!(c.store(0).hints().stats().stored, 2);
    assert_eq!(c.store(0).stats().hints_sent_to_fallbacks, 0);
    assert_eq!(c.store(outsider).hints().stats().stored, 0);
    c.revive(down).await;
    c.revive(third).await;
    for i in c.replicas_of(k) {
        let r = c
            .local_query(i, &format!("SELECT * FROM ks.kv WHERE k = {k}"))
            .await;
        assert_eq!(single_v(&r), Some(Value::Int(2)), "replica {i}");
    }
    // Switched back on, the same outage takes QUORUM through the fallback
    // (the outsider, the one node that is not a replica: it takes the
    // hint of one down replica; this node keeps the other's).
    c.ddl(0, "ALTER KEYSPACE ks WITH sloppy_quorum = true")
        .await;
    c.kill(down);
    c.kill(third);
    c.query(
        0,
        Consistency::Quorum,
        &format!("INSERT INTO ks.kv (k, v) VALUES ({k}, 3)"),
    )
    .await
    .expect("sloppy quorum again");
    assert_eq!(c.store(0).stats().hints_sent_to_fallbacks, 1);
    assert_eq!(c.store(outsider).hints().stats().stored, 1);
}

#[tokio::test(start_paused = true)]
async fn any_with_every_replica_down_is_stamped_by_the_coordinator_and_delivered_later() {
    let c = Cluster::new(4, SimConfig::with_seed(5), &[KV]).await;
    let (k, _, outsider) = pick_key(&c, 0);
    for i in c.replicas_of(k) {
        c.kill(i);
    }
    // Sloppy quorum: the outsider is the fallback of all three replicas,
    // so even ONE is accepted (its hints count).
    c.query(
        outsider,
        Consistency::One,
        &format!("INSERT INTO ks.kv (k, v) VALUES ({k}, 3)"),
    )
    .await
    .expect("sloppy ONE");
    // Strict: ONE is unavailable, ANY takes hints on the coordinator.
    c.ddl(outsider, "ALTER KEYSPACE ks WITH sloppy_quorum = false")
        .await;
    assert!(!c.store(outsider).sloppy_quorum("ks"));
    let sent = c.store(outsider).stats().hints_sent_to_fallbacks;
    let err = c
        .query(
            outsider,
            Consistency::One,
            &format!("INSERT INTO ks.kv (k, v) VALUES ({k}, 4)"),
        )
        .await
        .expect_err("no replica");
    assert!(
        matches!(
            err,
            QueryError::Unavailable {
                required: 1,
                alive: 0,
                ..
            }
        ),
        "{err:?}"
    );
    c.query(
        outsider,
        Consistency::Any,
        &format!("UPDATE ks.kv SET v = 5 WHERE k = {k}"),
    )
    .await
    .expect("ANY takes a hint");
    assert_eq!(c.store(outsider).hints().stats().stored, 6);
    assert_eq!(c.store(outsider).stats().hints_sent_to_fallbacks, sent);
    for i in c.replicas_of(k) {
        c.revive(i).await;
    }
    let r = c
        .query(
            outsider,
            Consistency::All,
            &format!("SELECT * FROM ks.kv WHERE k = {k}"),
        )
        .await
        .expect("read");
    assert_eq!(single_v(rows(&r)), Some(Value::Int(5)));
    // Two blind writes stamped without any replica's state are siblings.
    assert!(rows(&r).rows[0].conflict);
}

#[tokio::test(start_paused = true)]
async fn any_is_not_acknowledged_by_a_hint_that_could_not_be_stored() {
    let c = Cluster::new(4, SimConfig::with_seed(7), &[KV]).await;
    let (k, _, outsider) = pick_key(&c, 0);
    c.ddl(outsider, "ALTER KEYSPACE ks WITH sloppy_quorum = false")
        .await;
    // The coordinator's hint store cannot write a hint for any replica:
    // where each replica's hint directory would go there is a plain file.
    let hints_dir = c.node(outsider).dir.join("hints");
    std::fs::create_dir_all(&hints_dir).expect("hints dir");
    for i in c.replicas_of(k) {
        let id = c.options.layout.node_id(i);
        std::fs::write(hints_dir.join(format!("node-{:016x}", id.0)), b"x").expect("blocker");
        c.kill(i);
    }
    let err = c
        .query(
            outsider,
            Consistency::Any,
            &format!("INSERT INTO ks.kv (k, v) VALUES ({k}, 1)"),
        )
        .await
        .expect_err("no replica took the write and no hint was stored");
    assert!(
        matches!(
            err,
            QueryError::Timeout {
                consistency: Consistency::Any,
                received: 0,
                write: true,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(c.store(outsider).hints().stats().stored, 0);
}

#[tokio::test(start_paused = true)]
async fn unavailable_and_timeout_name_their_counts() {
    let c = Cluster::new(3, SimConfig::with_seed(6), &[KV]).await;
    c.kill(2);
    let err = c
        .query(
            0,
            Consistency::All,
            "INSERT INTO ks.kv (k, v) VALUES (1, 1)",
        )
        .await
        .expect_err("ALL with one down");
    assert_eq!(
        err,
        QueryError::Unavailable {
            consistency: Consistency::All,
            required: 3,
            alive: 2
        }
    );
    let err = c
        .query(0, Consistency::All, "SELECT * FROM ks.kv WHERE k = 1")
        .await
        .expect_err("ALL read with one down");
    assert!(matches!(
        err,
        QueryError::Unavailable {
            required: 3,
            alive: 2,
            ..
        }
    ));
    c.revive(2).await;
    // Alive by liveness but cut off: the requests time out.
    c.net.partition(&[addr(0)], &[addr(1), addr(2)]);
    let err = c
        .query(
            0,
            Consistency::Quorum,
            "INSERT INTO ks.kv (k, v) VALUES (1, 2)",
        )
        .await
        .expect_err("partitioned write");
    assert_eq!(
        err,
        QueryError::Timeout {
            consistency: Consistency::Quorum,
            required: 2,
            received: 1,
            write: true
        }
    );
    assert_eq!(
        err.to_string(),
        "operation timed out at consistency QUORUM: 1 of 2 replicas answered"
    );
    let err = c
        .query(0, Consistency::Quorum, "SELECT * FROM ks.kv WHERE k = 1")
        .await
        .expect_err("partitioned read");
    assert_eq!(
        err,
        QueryError::Timeout {
            consistency: Consistency::Quorum,
            required: 2,
            received: 1,
            write: false
        }
    );
    // The timed-out replicas got hints; after the heal they are delivered.
    c.net.heal();
    assert!(c.store(0).hints().stats().stored >= 2);
    c.revive(1).await;
    c.revive(2).await;
    for i in 0..3 {
        let r = c.local_query(i, "SELECT * FROM ks.kv WHERE k = 1").await;
        assert_eq!(single_v(&r), Some(Value::Int(2)), "replica {i}");
    }
}

/// Explicit replica counts (the shell's `CONSISTENCY 2`, Dynamo's W and R)
/// act as a level of that many replicas: W=2 with one replica down is
/// acknowledged by the two alive ones, W=3 and R=3 are Unavailable naming
/// their counts, a count above the replication factor is Unavailable even
/// with every node up, and R=3 after a W=1 write (W + R > N) sees it before
/// the copies to the other replicas have landed.
#[tokio::test(start_paused = true)]
async fn explicit_replica_counts_act_as_w_and_r() {
    let c = Cluster::new(3, SimConfig::with_seed(21), &[KV]).await;
    c.kill(2);
    c.query(
        0,
        Consistency::Count(2),
        "INSERT INTO ks.kv (k, v) VALUES (1, 1)",
    )
    .await
    .expect("W=2 with one replica down");
    for i in 0..2 {
        let r = c.local_query(i, "SELECT * FROM ks.kv WHERE k = 1").await;
        assert_eq!(single_v(&r), Some(Value::Int(1)), "replica {i}");
    }
    let err = c
        .query(
            0,
            Consistency::Count(3),
            "INSERT INTO ks.kv (k, v) VALUES (1, 2)",
        )
        .await
        .expect_err("W=3 with one replica down");
    assert_eq!(
        err,
        QueryError::Unavailable {
            consistency: Consistency::Count(3),
            required: 3,
            alive: 2
        }
    );
    assert_eq!(
        err.to_string(),
        "cannot achieve consistency level 3: 3 replicas required but only 2 alive"
    );
    let r = c
        .query(1, Consistency::Count(2), "SELECT * FROM ks.kv WHERE k = 1")
        .await
        .expect("R=2 with one replica down");
    assert_eq!(single_v(rows(&r)), Some(Value::Int(1)));
    let err = c
        .query(1, Consistency::Count(3), "SELECT * FROM ks.kv WHERE k = 1")
        .await
        .expect_err("R=3 with one replica down");
    assert_eq!(
        err,
        QueryError::Unavailable {
            consistency: Consistency::Count(3),
            required: 3,
            alive: 2
        }
    );
    c.revive(2).await;
    let err = c
        .query(
            0,
            Consistency::Count(4),
            "INSERT INTO ks.kv (k, v) VALUES (1, 2)",
        )
        .await
        .expect_err("W above the replication factor");
    assert_eq!(
        err,
        QueryError::Unavailable {
            consistency: Consistency::Count(4),
            required: 4,
            alive: 3
        }
    );
    // W=1 answers once the coordinator (a replica) has it; the copies to
    // the others are still on the (slow) network.
    c.net
        .set_delay(Duration::from_millis(50), Duration::from_millis(60));
    c.query(
        0,
        Consistency::Count(1),
        "UPDATE ks.kv SET v = 3 WHERE k = 1",
    )
    .await
    .expect("W=1");
    let behind = c.local_query(2, "SELECT * FROM ks.kv WHERE k = 1").await;
    assert_eq!(single_v(&behind), Some(Value::Int(1)), "copy not landed");
    let r = c
        .query(2, Consistency::Count(3), "SELECT * FROM ks.kv WHERE k = 1")
        .await
        .expect("R=3");
    assert_eq!(single_v(rows(&r)), Some(Value::Int(3)));
}

/// Blocking read repair makes QUORUM reads monotonic: a stale replica
/// among the R that answered holds the merged version when the read
/// returns, so a later QUORUM read through other replicas, with the only
/// node that had the write gone, still returns it.
#[tokio::test(start_paused = true)]
async fn quorum_reads_are_monotonic_through_blocking_repair_of_a_remote_replica() {
    let c = Cluster::new(3, SimConfig::with_seed(22), &[KV]).await;
    c.query(
        0,
        Consistency::All,
        "INSERT INTO ks.kv (k, v) VALUES (1, 1)",
    )
    .await
    .expect("write");
    // Only node 0 gets the second write, and its hints are lost.
    c.net.partition(&[addr(0)], &[addr(1), addr(2)]);
    c.query(0, Consistency::One, "UPDATE ks.kv SET v = 2 WHERE k = 1")
        .await
        .expect("write at ONE");
    c.net.heal();
    for i in 1..3 {
        c.store(0)
            .hints()
            .discard_target(node_id(i))
            .expect("drop hints");
    }
    // Node 2 is down, so the QUORUM read through node 0 asks nodes 0 and
    // 1, and node 1 is stale. Every message takes 50-60 ms: a repair left
    // to the background would still be on its way when the read returns.
    c.kill(2);
    c.net
        .set_delay(Duration::from_millis(50), Duration::from_millis(60));
    let r = c
        .query(0, Consistency::Quorum, "SELECT * FROM ks.kv WHERE k = 1")
        .await
        .expect("read through node 0");
    assert_eq!(single_v(rows(&r)), Some(Value::Int(2)));
    assert!(c.store(0).stats().read_repairs >= 1);
    let repaired = c.local_query(1, "SELECT * FROM ks.kv WHERE k = 1").await;
    assert_eq!(
        single_v(&repaired),
        Some(Value::Int(2)),
        "node 1 was repaired before the read answered"
    );
    // Node 0, the only one that had the write, is gone; node 2 (stale) is
    // back. A QUORUM read through it asks nodes 2 and 1 and does not go
    // back to the older value.
    c.kill(0);
    c.revive(2).await;
    let r = c
        .query(2, Consistency::Quorum, "SELECT * FROM ks.kv WHERE k = 1")
        .await
        .expect("read through node 2");
    assert_eq!(single_v(rows(&r)), Some(Value::Int(2)));
}

/// Replicas that answer with an error (here: they do not know the table
/// yet) are a `Failure` naming each of them and why, at once, not a
/// `Timeout` at the deadline; a level they leave reachable still succeeds.
#[tokio::test(start_paused = true)]
async fn replicas_that_fail_are_a_failure_at_once_naming_them() {
    let c = Cluster::new(3, SimConfig::with_seed(31), &[KV]).await;
    // The table reaches node 0 and node 1 only.
    c.query(
        0,
        Consistency::One,
        "CREATE TABLE ks.t2 (k int PRIMARY KEY, v int)",
    )
    .await
    .expect("create");
    let schema = (*c.node(0).schema.current()).clone();
    c.node(1).schema.merge(&schema).expect("schema");
    let unknown = |err: &QueryError, failed: &[usize]| match err {
        QueryError::Failure { failures, .. } => {
            // In the order they failed.
            let mut named: Vec<usize> = failures
                .iter()
                .map(|f| {
                    assert!(f.contains("unknown table: unconfigured table"), "{f}");
                    (0..3)
                        .find(|i| f.starts_with(&format!("{}: ", addr(*i))))
                        .unwrap_or_else(|| panic!("no node named in {f}"))
                })
                .collect();
            named.sort();
            assert_eq!(named, failed, "{err}");
        }
        other => panic!("a failure expected, got {other:?}"),
    };
    let started = tokio::time::Instant::now();
    let err = c
        .query(
            0,
            Consistency::All,
            "INSERT INTO ks.t2 (k, v) VALUES (1, 1)",
        )
        .await
        .expect_err("node 2 cannot take it");
    // It fails as soon as node 2 did: node 1 may not have answered yet.
    assert!(
        matches!(
            err,
            QueryError::Failure {
                consistency: Consistency::All,
                required: 3,
                received: 0..=2,
                write: true,
                ..
            }
        ),
        "{err:?}"
    );
    unknown(&err, &[2]);
    let err = c
        .query(0, Consistency::All, "SELECT * FROM ks.t2 WHERE k = 1")
        .await
        .expect_err("node 2 cannot answer");
    assert!(
        matches!(
            err,
            QueryError::Failure {
                required: 3,
                received: 0..=2,
                write: false,
                ..
            }
        ),
        "{err:?}"
    );
    unknown(&err, &[2]);
    // Neither waited for its deadline.
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
    // With node 1 silent as well, ALL cannot be met once node 2 failed:
    // the write fails then, without waiting for node 1's deadline.
    c.net.partition(&[addr(0)], &[addr(1)]);
    let started = tokio::time::Instant::now();
    let err = c
        .query(
            0,
            Consistency::All,
            "INSERT INTO ks.t2 (k, v) VALUES (3, 3)",
        )
        .await
        .expect_err("node 2 cannot take it, node 1 is cut off");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
    unknown(&err, &[2]);
    // A read at ALL too: it cannot get three answers once node 2 failed.
    let started = tokio::time::Instant::now();
    let err = c
        .query(0, Consistency::All, "SELECT * FROM ks.t2 WHERE k = 2")
        .await
        .expect_err("node 2 cannot answer, node 1 is cut off");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        matches!(err, QueryError::Failure { write: false, .. }),
        "{err:?}"
    );
    unknown(&err, &[2]);
    c.net.heal();
    // QUORUM does not need node 2.
    c.query(
        0,
        Consistency::Quorum,
        "INSERT INTO ks.t2 (k, v) VALUES (2, 2)",
    )
    .await
    .expect("quorum write");
    let r = c
        .query(0, Consistency::Quorum, "SELECT * FROM ks.t2 WHERE k = 2")
        .await
        .expect("quorum read");
    assert_eq!(single_v(rows(&r)), Some(Value::Int(2)));

    // A table only node 0 knows: one answer of the two QUORUM needs.
    c.query(
        0,
        Consistency::One,
        "CREATE TABLE ks.t3 (k int PRIMARY KEY, v int)",
    )
    .await
    .expect("create");
    let err = c
        .query(
            0,
            Consistency::Quorum,
            "INSERT INTO ks.t3 (k, v) VALUES (1, 1)",
        )
        .await
        .expect_err("only node 0 takes it");
    assert!(
        matches!(
            err,
            QueryError::Failure {
                consistency: Consistency::Quorum,
                required: 2,
                received: 1,
                write: true,
                ..
            }
        ),
        "{err:?}"
    );
    unknown(&err, &[1, 2]);
    assert!(err.to_string().starts_with(
        "operation failed at consistency QUORUM: 1 of 2 replicas answered, 2 failed ("
    ));

    // Once the schema is everywhere, ALL succeeds.
    let schema = (*c.node(0).schema.current()).clone();
    c.node(1).schema.merge(&schema).expect("schema");
    c.node(2).schema.merge(&schema).expect("schema");
    c.query(
        0,
        Consistency::All,
        "INSERT INTO ks.t3 (k, v) VALUES (1, 3)",
    )
    .await
    .expect("all write");
    let r = c
        .query(0, Consistency::All, "SELECT * FROM ks.t3 WHERE k = 1")
        .await
        .expect("all read");
    assert_eq!(single_v(rows(&r)), Some(Value::Int(3)));
}

#[tokio::test(start_paused = true)]
async fn read_repair_brings_a_stale_replica_up_to_date() {
    let c = Cluster::new(3, SimConfig::with_seed(7), &[KV]).await;
    c.query(
        0,
        Consistency::All,
        "INSERT INTO ks.kv (k, v) VALUES (1, 1)",
    )
    .await
    .expect("write");
    // Node 2 misses the second write (no hints are replayed for it).
    c.net.partition(&[addr(2)], &[addr(0), addr(1)]);
    c.query(0, Consistency::One, "UPDATE ks.kv SET v = 2 WHERE k = 1")
        .await
        .expect("write at ONE");
    // Let the copy to node 1 land (a ONE write answers after one ack).
    tokio::time::sleep(Duration::from_secs(1)).await;
    c.net.heal();
    let stale = c.local_query(2, "SELECT * FROM ks.kv WHERE k = 1").await;
    assert_eq!(single_v(&stale), Some(Value::Int(1)));
    // A QUORUM read through the stale replica answers the newest value and
    // repairs it before answering.
    let r = c
        .query(2, Consistency::Quorum, "SELECT * FROM ks.kv WHERE k = 1")
        .await
        .expect("read");
    assert_eq!(single_v(rows(&r)), Some(Value::Int(2)));
    // The stale replica answered in full (it is the local one); the fresh
    // one's digest differed, so the read fell back to full data.
    assert!(c.store(2).stats().digest_mismatches >= 1);
    assert!(c.store(2).stats().read_repairs >= 1);
    let repaired = c.local_query(2, "SELECT * FROM ks.kv WHERE k = 1").await;
    assert_eq!(single_v(&repaired), Some(Value::Int(2)));
    assert!(
        !repaired.rows[0].conflict,
        "the repair carries the causal history"
    );
}

#[tokio::test(start_paused = true)]
async fn background_repair_fixes_the_replica_the_read_did_not_wait_for() {
    let c = Cluster::new(3, SimConfig::with_seed(8), &[KV]).await;
    c.net.partition(&[addr(2)], &[addr(0), addr(1)]);
    c.query(
        0,
        Consistency::Quorum,
        "INSERT INTO ks.kv (k, v) VALUES (1, 5)",
    )
    .await
    .expect("write");
    c.net.heal();
    // The node's first read is one of the one in `read_repair_every` that
    // ask every replica: it waits for node 0 alone (ONE, answered locally),
    // and nodes 1 and 2 answer after it has returned.
    let r = c
        .query(0, Consistency::One, "SELECT * FROM ks.kv WHERE k = 1")
        .await
        .expect("read");
    assert_eq!(single_v(rows(&r)), Some(Value::Int(5)));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(c.store(0).stats().background_repairs >= 1);
    let repaired = c.local_query(2, "SELECT * FROM ks.kv WHERE k = 1").await;
    assert_eq!(single_v(&repaired), Some(Value::Int(5)));
}

/// The requests node `from` sent since the log was cleared.
fn requests_sent_by(c: &Cluster, from: usize) -> Vec<LogEntry> {
    c.net
        .log()
        .into_iter()
        .filter(|e| {
            e.from == addr(from)
                && matches!(e.kind, PacketKind::Request { .. })
                && matches!(e.event, Event::Sent { .. })
        })
        .collect()
}

/// Writes keys `0..count` (value = key) at ONE through node 0.
async fn write_keys_through_node0(c: &Cluster, count: i32) {
    for k in 0..count {
        c.query(
            0,
            Consistency::One,
            &format!("INSERT INTO ks.kv (k, v) VALUES ({k}, {k})"),
        )
        .await
        .expect("write with a replica down");
    }
}

/// When node `from` sent each of its requests to node `to` since the log
/// was cleared, in order.
fn request_times(c: &Cluster, from: usize, to: usize) -> Vec<Duration> {
    let mut sent: Vec<Duration> = requests_sent_by(c, from)
        .into_iter()
        .filter(|e| e.to == addr(to))
        .map(|e| e.at)
        .collect();
    sent.sort();
    sent
}

/// Requests node 0 sent to each other node since the log was cleared.
fn requests_from_node0(c: &Cluster) -> Vec<usize> {
    let mut per_node = vec![0; c.nodes.len()];
    for e in requests_sent_by(c, 0) {
        if let Some(i) = (0..c.nodes.len()).find(|i| addr(*i) == e.to) {
            per_node[i] += 1;
        }
    }
    per_node
}

/// Reads key 1 of `ks.kv` `times` times through node 0 at `cl`, expecting
/// `v = 1`, and returns the requests node 0 sent to each node meanwhile.
async fn read_key1_from_node0(c: &Cluster, cl: Consistency, times: usize) -> Vec<usize> {
    c.net.clear_log();
    for _ in 0..times {
        let r = c
            .query(0, cl, "SELECT * FROM ks.kv WHERE k = 1")
            .await
            .expect("read");
        assert_eq!(single_v(rows(&r)), Some(Value::Int(1)));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    requests_from_node0(c)
}

#[tokio::test(start_paused = true)]
async fn reads_ask_only_the_replicas_they_need_and_one_in_n_asks_all() {
    let config = CoordinatorConfig {
        read_repair_every: 5,
        ..fast_config()
    };
    let c = Cluster::with(3, SimConfig::with_seed(21), &[KV], config, hint_options()).await;
    c.query(
        0,
        Consistency::All,
        "INSERT INTO ks.kv (k, v) VALUES (1, 1)",
    )
    .await
    .expect("write");
    tokio::time::sleep(Duration::from_millis(100)).await;
    // QUORUM of 3: node 0 reads its own copy and asks one other replica
    // for a digest; reads 0, 5, 10 and 15 ask both others.
    let sent = read_key1_from_node0(&c, Consistency::Quorum, 20).await;
    assert_eq!(sent[0], 0, "node 0 serves itself without the network");
    assert_eq!(sent[1] + sent[2], 20 + 4, "per node: {sent:?}");
    let stats = c.store(0).stats();
    assert_eq!(stats.full_fanout_reads, 4);
    assert_eq!(stats.speculative_retries, 0);
    assert_eq!(stats.digest_reads, 20);
    // ONE: only node 0 itself, but for reads 20 and 25, which ask all.
    let sent = read_key1_from_node0(&c, Consistency::One, 10).await;
    assert_eq!(sent[1] + sent[2], 2 * 2, "per node: {sent:?}");
    assert_eq!(c.store(0).stats().full_fanout_reads, 6);
}

/// A 4-node cluster whose reads never ask more than R up front, with
/// `speculative_retry`, holding `v = 7` at a key node 0 does not hold;
/// the replica node 0 asks first is silent to it (its requests are lost,
/// it is not known down). Returns the cluster and the read of that key.
async fn cluster_with_a_silent_first_replica(speculative_retry: Duration) -> (Cluster, String) {
    let config = CoordinatorConfig {
        read_repair_every: 0,
        speculative_retry,
        ..fast_config()
    };
    let c = Cluster::with(4, SimConfig::with_seed(22), &[KV], config, hint_options()).await;
    // Every answer comes over the network.
    let k = (0..100)
        .find(|k| !c.replicas_of(*k).contains(&0))
        .expect("a key off node 0");
    c.query(
        0,
        Consistency::All,
        &format!("INSERT INTO ks.kv (k, v) VALUES ({k}, 7)"),
    )
    .await
    .expect("write");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let first = c.replicas_of(k)[0];
    c.net.set_link_drop(addr(0), addr(first), Some(1.0));
    (c, format!("SELECT * FROM ks.kv WHERE k = {k}"))
}

#[tokio::test(start_paused = true)]
async fn a_silent_replica_costs_the_speculative_delay_not_the_timeout() {
    let (c, read) = cluster_with_a_silent_first_replica(Duration::from_millis(50)).await;
    for cl in [Consistency::One, Consistency::Quorum] {
        let before = c.store(0).stats().speculative_retries;
        let start = tokio::time::Instant::now();
        let r = c.query(0, cl, &read).await.expect("read");
        let took = start.elapsed();
        assert_eq!(single_v(rows(&r)), Some(Value::Int(7)), "{cl:?}");
        assert!(
            took >= Duration::from_millis(50) && took < Duration::from_millis(150),
            "{cl:?}: a silent replica cost {took:?}; the read timeout is 500 ms"
        );
        assert!(
            c.store(0).stats().speculative_retries > before,
            "{cl:?}: no speculative retry counted"
        );
    }
    // Without speculation the same read waits for the timeout.
    let (c, read) = cluster_with_a_silent_first_replica(Duration::ZERO).await;
    let start = tokio::time::Instant::now();
    let r = c.query(0, Consistency::One, &read).await;
    assert!(
        r.is_err() || start.elapsed() >= Duration::from_millis(500),
        "without speculation a silent replica costs the timeout"
    );
}

#[tokio::test(start_paused = true)]
async fn a_newer_deletion_on_one_replica_shadows_an_older_row_on_another() {
    let c = Cluster::new(3, SimConfig::with_seed(9), &[KV]).await;
    c.query(
        0,
        Consistency::All,
        "INSERT INTO ks.kv (k, v) VALUES (1, 1)",
    )
    .await
    .expect("write");
    c.net.partition(&[addr(2)], &[addr(0), addr(1)]);
    c.query(0, Consistency::Quorum, "DELETE FROM ks.kv WHERE k = 1")
        .await
        .expect("delete");
    c.net.heal();
    let r = c
        .query(2, Consistency::Quorum, "SELECT * FROM ks.kv WHERE k = 1")
        .await
        .expect("read");
    assert!(rows(&r).rows.is_empty());
    let local = c.local_query(2, "SELECT * FROM ks.kv WHERE k = 1").await;
    assert!(
        local.rows.is_empty(),
        "the deletion was repaired onto node 2"
    );
}

const ABC: &str = "CREATE TABLE ks.abc (k int PRIMARY KEY, a int, b int, c int)";

#[tokio::test(start_paused = true)]
async fn concurrent_writes_in_a_partition_become_siblings_and_a_context_write_supersedes_them() {
    let c = Cluster::new(3, SimConfig::with_seed(10), &[ABC]).await;
    c.query(
        0,
        Consistency::All,
        "INSERT INTO ks.abc (k, a, b, c) VALUES (1, 0, 0, 0)",
    )
    .await
    .expect("write");
    // Node 0 on one side, nodes 1 and 2 on the other; both sides write.
    c.net.partition(&[addr(0)], &[addr(1), addr(2)]);
    c.query(0, Consistency::One, "UPDATE ks.abc SET a = 1 WHERE k = 1")
        .await
        .expect("side A");
    c.query(
        1,
        Consistency::Quorum,
        "UPDATE ks.abc SET b = 2 WHERE k = 1",
    )
    .await
    .expect("side B");
    tokio::time::sleep(Duration::from_secs(1)).await;
    c.net.heal();
    let r = c
        .query(
            2,
            Consistency::All,
            "SELECT * FROM ks.abc WHERE k = 1 WITH SIBLINGS",
        )
        .await
        .expect("read");
    let rs = rows(&r);
    assert_eq!(rs.rows.len(), 1);
    let row = &rs.rows[0];
    assert!(row.conflict, "both versions survive as siblings");
    assert_eq!(row.siblings.len(), 2);
    // Resolved column by column: each side's column wins.
    assert_eq!(
        row.values,
        vec![Value::Int(1), Value::Int(1), Value::Int(2), Value::Int(0)]
    );
    let mut sibs = row.siblings.clone();
    sibs.sort_by_key(|s| format!("{s:?}"));
    assert_eq!(
        sibs,
        vec![
            vec![Value::Int(1), Value::Int(0), Value::Int(2), Value::Int(0)],
            vec![Value::Int(1), Value::Int(1), Value::Int(0), Value::Int(0)],
        ]
    );
    // Every replica keeps both (ALL read repaired the rest).
    for i in 0..3 {
        let local = c.local_query(i, "SELECT * FROM ks.abc WHERE k = 1").await;
        assert!(local.rows[0].conflict, "replica {i}");
    }
    // A read-modify-write with the read's causal context supersedes both
    // and carries their cells forward.
    let context = rs
        .causal_context
        .clone()
        .expect("a single-row read has a context");
    c.query_with(
        0,
        Consistency::Quorum,
        "UPDATE ks.abc SET c = 3 WHERE k = 1",
        Some(context),
    )
    .await
    .expect("context write");
    let r = c
        .query(
            1,
            Consistency::Quorum,
            "SELECT * FROM ks.abc WHERE k = 1 WITH SIBLINGS",
        )
        .await
        .expect("read");
    let row = &rows(&r).rows[0];
    assert!(!row.conflict);
    assert!(row.siblings.is_empty());
    assert_eq!(
        row.values,
        vec![Value::Int(1), Value::Int(1), Value::Int(2), Value::Int(3)]
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    for i in 0..3 {
        let local = c.local_query(i, "SELECT * FROM ks.abc WHERE k = 1").await;
        assert!(!local.rows[0].conflict, "replica {i}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_causal_context_with_an_impossible_counter_is_refused_and_changes_nothing() {
    let c = Cluster::new(3, SimConfig::with_seed(12), &[KV]).await;
    c.query(
        0,
        Consistency::All,
        "INSERT INTO ks.kv (k, v) VALUES (1, 1)",
    )
    .await
    .expect("write");
    // Stamping after a counter at the top would overflow it: the write is
    // refused wherever it is stamped.
    let forged: DotSet = (0..3)
        .map(|i| Dot {
            node: c.options.layout.node_id(i),
            counter: u64::MAX,
        })
        .collect();
    for coordinator in 0..3 {
        let err = c
            .query_with(
                coordinator,
                Consistency::Quorum,
                "UPDATE ks.kv SET v = 2 WHERE k = 1",
                Some(forged.clone()),
            )
            .await
            .expect_err("forged context");
        assert!(
            matches!(&err, QueryError::Invalid { message, .. } if message.contains("causal context")),
            "{err:?}"
        );
    }
    let r = c
        .query(0, Consistency::All, "SELECT * FROM ks.kv WHERE k = 1")
        .await
        .expect("read");
    assert_eq!(single_v(rows(&r)), Some(Value::Int(1)));
    // The context a read returned still works.
    let context = rows(&r).causal_context.clone();
    c.query_with(
        1,
        Consistency::Quorum,
        "UPDATE ks.kv SET v = 3 WHERE k = 1",
        context,
    )
    .await
    .expect("real context");
}

#[tokio::test(start_paused = true)]
async fn a_restarted_node_keeps_what_it_acknowledged() {
    let mut c = Cluster::new(3, SimConfig::with_seed(11), &[KV]).await;
    for k in 0..30 {
        c.query(
            k as usize % 3,
            Consistency::All,
            &format!("INSERT INTO ks.kv (k, v) VALUES ({k}, {k})"),
        )
        .await
        .expect("write");
    }
    c.kill(1);
    c.restart(1).await;
    // Writes while it was down reach it by hints.
    c.query(
        0,
        Consistency::Quorum,
        "INSERT INTO ks.kv (k, v) VALUES (100, 100)",
    )
    .await
    .expect("write while down");
    c.revive(1).await;
    let all = c.local_query(1, "SELECT * FROM ks.kv").await;
    assert_eq!(all.rows.len(), 31);
    // And it serves reads as a coordinator again.
    let r = c
        .query(1, Consistency::All, "SELECT * FROM ks.kv WHERE k = 100")
        .await
        .expect("read");
    assert_eq!(single_v(rows(&r)), Some(Value::Int(100)));
}

#[tokio::test(start_paused = true)]
async fn short_reads_are_protected_against_deletions_on_other_replicas() {
    let c = Cluster::new(
        3,
        SimConfig::with_seed(12),
        &["CREATE TABLE ks.ts (k int, c int, v int, PRIMARY KEY (k, c))"],
    )
    .await;
    for i in 0..10 {
        c.query(
            0,
            Consistency::All,
            &format!("INSERT INTO ks.ts (k, c, v) VALUES (1, {i}, {i})"),
        )
        .await
        .expect("write");
    }
    // Nodes 0 and 1 see rows 0..5 deleted; node 2 does not.
    c.net.partition(&[addr(2)], &[addr(0), addr(1)]);
    for i in 0..5 {
        c.query(
            0,
            Consistency::Quorum,
            &format!("DELETE FROM ks.ts WHERE k = 1 AND c = {i}"),
        )
        .await
        .expect("delete");
    }
    c.net.heal();
    let r = c
        .query(
            2,
            Consistency::Quorum,
            "SELECT * FROM ks.ts WHERE k = 1 LIMIT 3",
        )
        .await
        .expect("read");
    let cs: Vec<Value> = rows(&r).rows.iter().map(|r| r.values[1].clone()).collect();
    assert_eq!(cs, vec![Value::Int(5), Value::Int(6), Value::Int(7)]);
    assert!(c.store(2).stats().short_read_retries >= 1);
}

fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime")
}

fn fast_config() -> CoordinatorConfig {
    CoordinatorConfig {
        write_timeout: Duration::from_millis(500),
        read_timeout: Duration::from_millis(500),
        range_timeout: Duration::from_millis(1000),
        ..CoordinatorConfig::default()
    }
}

/// Three clients writing and reading through random coordinators while a
/// nemesis kills, revives, partitions and heals; with 5 % loss and 1 to
/// 20 ms delays. Returns the history (op, result, virtual time) and the
/// network's delivery log.
fn workload(seed: u64) -> (Vec<String>, Vec<ringdb::net::sim::LogEntry>) {
    paused_runtime().block_on(async move {
        let sim = SimConfig {
            seed,
            drop_probability: 0.05,
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(20),
            ..SimConfig::default()
        };
        let c = Arc::new(Cluster::with(4, sim, &[KV], fast_config(), hint_options()).await);
        let history = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for client in 0..3u64 {
            let c = c.clone();
            let history = history.clone();
            tasks.push(tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(seed * 100 + client);
                for i in 0..30 {
                    let node = rng.random_range(0..4usize);
                    let k = rng.random_range(0..8);
                    let cl = [Consistency::One, Consistency::Quorum, Consistency::All]
                        [rng.random_range(0..3usize)];
                    let text = if rng.random_bool(0.5) {
                        format!(
                            "INSERT INTO ks.kv (k, v) VALUES ({k}, {})",
                            client * 1000 + i
                        )
                    } else {
                        format!("SELECT * FROM ks.kv WHERE k = {k}")
                    };
                    let result = if c.nodes[node].is_some() {
                        format!("{:?}", c.query(node, cl, &text).await)
                    } else {
                        "down".to_string()
                    };
                    let at = c.net.elapsed();
                    history.lock().push(format!(
                        "{at:?} client {client} via {node} {cl} {text}: {result}"
                    ));
                    tokio::time::sleep(Duration::from_millis(rng.random_range(0..50))).await;
                }
            }));
        }
        let nemesis = {
            let c = c.clone();
            let history = history.clone();
            tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(seed.wrapping_mul(7919));
                for _ in 0..8 {
                    tokio::time::sleep(Duration::from_millis(rng.random_range(50..300))).await;
                    let n = rng.random_range(0..4usize);
                    let what = match rng.random_range(0..4) {
                        0 => {
                            c.kill(n);
                            format!("kill {n}")
                        }
                        1 => {
                            c.revive(n).await;
                            format!("revive {n}")
                        }
                        2 => {
                            let others: Vec<SocketAddr> =
                                (0..4).filter(|m| *m != n).map(addr).collect();
                            c.net.partition(&[addr(n)], &others);
                            format!("isolate {n}")
                        }
                        _ => {
                            c.net.heal();
                            "heal".to_string()
                        }
                    };
                    history
                        .lock()
                        .push(format!("{:?} nemesis {what}", c.net.elapsed()));
                }
            })
        };
        for t in tasks {
            t.await.expect("client");
        }
        nemesis.await.expect("nemesis");
        let h = history.lock().clone();
        (h, c.net.log())
    })
}

#[test]
fn the_same_seed_gives_the_same_history() {
    let first = workload(42);
    let second = workload(42);
    assert_eq!(first.0, second.0);
    assert_eq!(first.1, second.1);
    // The run saw successes and failures both.
    assert!(first.0.iter().any(|l| l.contains("Ok(Rows")));
    assert!(first.0.iter().any(|l| l.contains("Ok(Void)")));
    assert!(first.0.iter().any(|l| l.contains("Err(")));
    let other = workload(43);
    assert_ne!(first.0, other.0);
}

const LOG: &str = "CREATE TABLE ks.log (k int, seq int, v int, PRIMARY KEY (k, seq))";

/// Random QUORUM inserts under random kills, isolations and heals; then
/// heal everything, replay hints and run a repair sweep (ALL reads of
/// every key). Invariant 2: every acknowledged insert is there.
/// Invariant 4: every replica holds the same rows.
fn convergence_case(seed: u64) {
    paused_runtime().block_on(async move {
        let sim = SimConfig {
            seed,
            drop_probability: 0.02,
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(15),
            ..SimConfig::default()
        };
        let c = Arc::new(Cluster::with(4, sim, &[LOG], fast_config(), hint_options()).await);
        let acked = faulty_log_workload(&c, seed, 5).await;
        // Repair sweep.
        for k in 0..5 {
            let r = c
                .query(
                    k as usize % 4,
                    Consistency::All,
                    &format!("SELECT * FROM ks.log WHERE k = {k}"),
                )
                .await
                .expect("repair read");
            let seen: Vec<Value> = rows(&r).rows.iter().map(|r| r.values[1].clone()).collect();
            for (_, seq) in acked.iter().filter(|(kk, _)| *kk == k) {
                assert!(
                    seen.contains(&Value::Int(*seq)),
                    "seed {seed}: acknowledged insert ({k}, {seq}) lost"
                );
            }
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
        for k in 0..5 {
            let reps = c.replicas_of(k);
            let text = format!("SELECT * FROM ks.log WHERE k = {k}");
            let first = c.local_query(reps[0], &text).await;
            for &r in &reps[1..] {
                let other = c.local_query(r, &text).await;
                assert_eq!(
                    first.rows, other.rows,
                    "seed {seed}: replicas of {k} differ"
                );
            }
        }
    })
}

#[test]
fn acknowledged_writes_survive_faults_and_replicas_converge() {
    for seed in 0..6 {
        convergence_case(seed);
    }
}

#[tokio::test(start_paused = true)]
async fn truncate_reaches_every_node_and_needs_them_all() {
    let c = Cluster::new(4, SimConfig::with_seed(13), &[KV]).await;
    for k in 0..10 {
        c.query(
            0,
            Consistency::All,
            &format!("INSERT INTO ks.kv (k, v) VALUES ({k}, {k})"),
        )
        .await
        .expect("write");
    }
    c.kill(3);
    let err = c
        .query(0, Consistency::One, "TRUNCATE ks.kv")
        .await
        .expect_err("a node is down");
    assert!(
        matches!(
            err,
            QueryError::Unavailable {
                required: 4,
                alive: 3,
                ..
            }
        ),
        "{err:?}"
    );
    c.revive(3).await;
    c.query(1, Consistency::One, "TRUNCATE ks.kv")
        .await
        .expect("truncate");
    for i in 0..4 {
        assert!(
            c.local_query(i, "SELECT * FROM ks.kv")
                .await
                .rows
                .is_empty(),
            "node {i}"
        );
    }
}

/// `ks.kv` as node 0's schema names it.
fn kv_table_ref(c: &Cluster) -> ringdb::query::api::TableRef {
    ringdb::query::api::TableRef {
        keyspace: "ks".into(),
        table: "kv".into(),
        id: c
            .node(0)
            .schema
            .current()
            .get_table("ks", "kv")
            .expect("kv")
            .id,
    }
}

/// Tokens of a node joining the 3-node cluster of [`tokens`]: halfway
/// between each token of node 0 and the next one, so it takes a piece of
/// every range.
fn joiner_tokens() -> Vec<u64> {
    let step = u64::MAX / (VNODES * 3);
    tokens(0, 3).into_iter().map(|t| t + step / 2).collect()
}

#[tokio::test(start_paused = true)]
async fn a_joining_node_streams_its_ranges_and_gets_the_writes_made_meanwhile() {
    let mut c = Cluster::new(3, SimConfig::with_seed(7), &[KV]).await;
    let write = |k: i32| format!("INSERT INTO ks.kv (k, v) VALUES ({k}, {})", k * 10);
    // Before anybody knows of the new node.
    for k in 0..120 {
        c.query(k as usize % 3, Consistency::Quorum, &write(k))
            .await
            .expect("write");
    }
    c.query(1, Consistency::Quorum, "DELETE FROM ks.kv WHERE k = 7")
        .await
        .expect("delete");

    // Node 3 starts empty, with the schema and the current ring.
    let dir = c.tmp.path().join("node3");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("node_id"), format!("{:016x}\n", node_id(3).0)).expect("node id");
    let node = c.open_node(3, &dir);
    node.schema
        .merge(&c.node(0).schema.current())
        .expect("schema");
    c.nodes.push(Some(node));
    let future = c
        .ring
        .add_node(NodeInfo::new(node_id(3), addr(3), None, joiner_tokens()))
        .expect("future ring");
    // Gossip says it joins: every coordinator sends it pending copies.
    for i in 0..4 {
        c.store(i).set_pending_ring(Some(future.clone()));
    }
    for k in 120..200 {
        c.query(k as usize % 3, Consistency::Quorum, &write(k))
            .await
            .expect("write while joining");
    }
    let select = |k: i32| format!("SELECT * FROM ks.kv WHERE k = {k}");
    let owned: Vec<i32> = (0..260)
        .filter(|k| {
            let pk = serialize_partition_key(&[Value::Int(*k)], &[DataType::Int]).expect("pk");
            future.replicas_for_key(&pk, 3).contains(&node_id(3))
        })
        .collect();
    assert!(
        owned.len() > 100,
        "node 3 should replicate most keys, got {}",
        owned.len()
    );
    // Nothing of the earlier writes is on node 3 yet.
    for &k in owned.iter().filter(|k| **k < 120) {
        assert_eq!(single_v(&c.local_query(3, &select(k)).await), None);
    }

    let table = kv_table_ref(&c);
    // Ranges are moving: cleanup would drop what node 0 may still own.
    let refused = c
        .store(0)
        .cleanup(std::slice::from_ref(&table))
        .await
        .expect_err("cleanup while a node joins");
    assert!(
        refused.to_string().contains("ring is changing"),
        "{refused}"
    );
    let report = c
        .store(3)
        .bootstrap_stream(&future, std::slice::from_ref(&table))
        .await
        .expect("stream");
    assert_eq!(report.tables, 1);
    assert!(report.partitions > 0);
    assert_eq!(
        c.store(3).stats().partitions_streamed as usize,
        report.partitions
    );

    // After the stream, before the switch: still pending copies.
    for k in 200..260 {
        c.query(k as usize % 3, Consistency::Quorum, &write(k))
            .await
            .expect("write after the stream");
    }
    // Gossip says it is normal.
    for i in 0..4 {
        c.store(i).set_rings(future.clone(), None);
    }
    c.ring = future;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pending: u64 = (0..3).map(|i| c.store(i).stats().pending_writes).sum();
    assert!(pending > 0, "no write was copied to the joining node");

    // Node 3 alone holds every key it now replicates, the deletion included.
    for &k in &owned {
        let got = single_v(&c.local_query(3, &select(k)).await);
        let want = (k != 7).then_some(Value::Int(k * 10));
        assert_eq!(got, want, "key {k} on node 3");
    }

    // The old replicas still hold the ranges they gave node 3 until a
    // cleanup drops them; after it, every node holds exactly the keys it
    // replicates, and every key is still on its three replicas.
    let replicates = |i: usize, k: i32| {
        let pk = serialize_partition_key(&[Value::Int(k)], &[DataType::Int]).expect("pk");
        c.ring.replicas_for_key(&pk, 3).contains(&node_id(i))
    };
    let mut given_away = 0;
    for k in (0..260).filter(|k| *k != 7) {
        for i in 0..3 {
            let held = single_v(&c.local_query(i, &select(k)).await).is_some();
            if held && !replicates(i, k) {
                given_away += 1;
            }
        }
    }
    assert!(
        given_away > 50,
        "old replicas kept only {given_away} copies"
    );
    let mut dropped = 0;
    for i in 0..4 {
        let report = c
            .store(i)
            .cleanup(std::slice::from_ref(&table))
            .await
            .expect("cleanup");
        assert_eq!(report.tables, 1);
        if i == 3 {
            assert_eq!(
                report.partitions_dropped, 0,
                "node 3 holds only its own ranges"
            );
        }
        dropped += report.partitions_dropped;
    }
    assert!(dropped >= given_away as u64, "{dropped} < {given_away}");
    for k in (0..260).filter(|k| *k != 7) {
        for i in 0..4 {
            let held = single_v(&c.local_query(i, &select(k)).await).is_some();
            assert_eq!(held, replicates(i, k), "key {k} on node {i} after cleanup");
        }
    }

    // And answers them at ONE with the other replicas gone.
    for i in 0..3 {
        c.kill(i);
    }
    // A node that looks down may have left: cleanup refuses.
    let refused = c
        .store(3)
        .cleanup(std::slice::from_ref(&table))
        .await
        .expect_err("cleanup with nodes down");
    assert!(refused.to_string().contains("are down"), "{refused}");
    for &k in owned.iter().filter(|k| **k != 7) {
        let r = c
            .query(3, Consistency::One, &select(k))
            .await
            .expect("read at ONE");
        assert_eq!(single_v(rows(&r)), Some(Value::Int(k * 10)), "key {k}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_decommissioned_node_hands_its_ranges_to_their_new_replicas() {
    let mut c = Cluster::new(4, SimConfig::with_seed(11), &[KV]).await;
    let write = |k: i32| format!("INSERT INTO ks.kv (k, v) VALUES ({k}, {})", k * 10);
    for k in 0..120 {
        c.query(k as usize % 4, Consistency::Quorum, &write(k))
            .await
            .expect("write");
    }
    c.query(0, Consistency::Quorum, "DELETE FROM ks.kv WHERE k = 9")
        .await
        .expect("delete");
    let future = c.ring.remove_node(node_id(3)).expect("future ring");
    // Gossip says node 3 leaves: coordinators copy writes to the gainers.
    for i in 0..4 {
        c.store(i).set_pending_ring(Some(future.clone()));
    }
    for k in 120..200 {
        c.query(k as usize % 4, Consistency::Quorum, &write(k))
            .await
            .expect("write while leaving");
    }
    let table = kv_table_ref(&c);
    let report = c
        .store(3)
        .decommission_stream(&future, &[table])
        .await
        .expect("stream");
    assert_eq!(report.tables, 1);
    assert!(report.partitions > 0);
    for k in 200..260 {
        c.query(k as usize % 3, Consistency::Quorum, &write(k))
            .await
            .expect("write after the stream");
    }
    // Gossip says it left.
    for i in 0..4 {
        c.store(i).set_rings(future.clone(), None);
    }
    c.ring = future;
    tokio::time::sleep(Duration::from_secs(1)).await;
    c.kill(3);
    // RF=3 on the three nodes left: each holds every key, on its own.
    for k in 0..260 {
        let want = (k != 9).then_some(Value::Int(k * 10));
        for i in c.replicas_of(k) {
            assert_ne!(i, 3);
            let got = single_v(
                &c.local_query(i, &format!("SELECT * FROM ks.kv WHERE k = {k}"))
                    .await,
            );
            assert_eq!(got, want, "key {k} on node {i}");
        }
    }
}

/// A hand-over keeps to the node's stream limit: streamed again with the
/// limit at a tenth of what it copies, it takes about ten seconds (of the
/// simulation's virtual clock), less the one-second burst; without a limit
/// it takes a moment.
#[tokio::test(start_paused = true)]
async fn a_stream_keeps_to_the_node_s_stream_limit() {
    let c = Cluster::new(4, SimConfig::with_seed(14), &[KV]).await;
    for k in 0..300 {
        c.query(
            k as usize % 4,
            Consistency::Quorum,
            &format!("INSERT INTO ks.kv (k, v) VALUES ({k}, {})", k * 10),
        )
        .await
        .expect("write");
    }
    let future = c.ring.remove_node(node_id(3)).expect("future ring");
    let table = kv_table_ref(&c);
    let store = c.store(3);
    store.stream_throttle().set_bytes_per_sec(0);
    let began = tokio::time::Instant::now();
    store
        .decommission_stream(&future, std::slice::from_ref(&table))
        .await
        .expect("stream without a limit");
    let unlimited = began.elapsed();
    let stats = store.stats();
    let bytes = stats.stream_bytes;
    assert!(bytes > 10_000, "{stats:?}");
    assert_eq!(stats.stream_throttled_us, 0, "{stats:?}");
    assert!(unlimited < Duration::from_secs(2), "{unlimited:?}");

    // Streaming again is safe (merging is idempotent) and weighs the same.
    store.stream_throttle().set_bytes_per_sec(bytes / 10);
    let began = tokio::time::Instant::now();
    store
        .decommission_stream(&future, std::slice::from_ref(&table))
        .await
        .expect("stream with a limit");
    let limited = began.elapsed();
    let stats = store.stats();
    assert_eq!(stats.stream_bytes, 2 * bytes, "{stats:?}");
    assert!(stats.stream_throttled_us > 0, "{stats:?}");
    // Ten seconds' worth: the first second goes at once, and the last
    // page does not wait for its own bytes.
    assert!(limited >= Duration::from_secs(8), "{limited:?}");
    assert!(
        limited <= unlimited + Duration::from_secs(10),
        "{limited:?}"
    );
}

/// `ringdb admin removenode` in simulation: node 3 dies for good; node 0
/// streams node 3's ranges to the nodes that gain them, from the other
/// replicas. Writes made before it died, while it was down (hinted), and
/// while the ring changed (pending copies) are all on every new replica;
/// a range node 3 was the only replica of (RF=1) is reported lost, not an
/// error.
#[tokio::test(start_paused = true)]
async fn a_down_node_s_ranges_are_copied_from_the_other_replicas_when_it_is_removed() {
    let mut c = Cluster::new(4, SimConfig::with_seed(12), &[KV]).await;
    c.ddl(
        0,
        "CREATE KEYSPACE solo WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}",
    )
    .await;
    c.ddl(0, "CREATE TABLE solo.kv (k int PRIMARY KEY, v int)")
        .await;
    let write = |k: i32| format!("INSERT INTO ks.kv (k, v) VALUES ({k}, {})", k * 10);
    for k in 0..100 {
        c.query(k as usize % 4, Consistency::Quorum, &write(k))
            .await
            .expect("write");
        c.query(
            k as usize % 4,
            Consistency::One,
            &format!("INSERT INTO solo.kv (k, v) VALUES ({k}, {k})"),
        )
        .await
        .expect("write rf=1");
    }
    c.query(0, Consistency::Quorum, "DELETE FROM ks.kv WHERE k = 9")
        .await
        .expect("delete");
    c.kill(3);
    for k in 100..150 {
        c.query(k as usize % 3, Consistency::Quorum, &write(k))
            .await
            .expect("write with node 3 down");
    }
    let future = c.ring.remove_node(node_id(3)).expect("future ring");
    // Gossip says node 3 leaves (published by node 0 on its behalf).
    for i in 0..3 {
        c.store(i).set_pending_ring(Some(future.clone()));
    }
    for k in 150..200 {
        c.query(k as usize % 3, Consistency::Quorum, &write(k))
            .await
            .expect("write while it is removed");
    }
    let tables = [kv_table_ref(&c), {
        let mut t = kv_table_ref(&c);
        t.keyspace = "solo".into();
        t.id = c
            .node(0)
            .schema
            .current()
            .get_table("solo", "kv")
            .expect("solo.kv")
            .id;
        t
    }];
    let report = c
        .store(0)
        .handover_stream(node_id(3), &future, &tables)
        .await
        .expect("stream from the other replicas");
    assert_eq!(report.tables, 2);
    assert!(report.partitions > 0, "{report:?}");
    // Node 3 was the only replica of a quarter or so of solo's ranges.
    assert!(report.spans_lost > 0, "{report:?}");
    // Gossip says it is removed.
    for i in 0..3 {
        c.store(i).set_rings(future.clone(), None);
    }
    c.ring = future;
    tokio::time::sleep(Duration::from_secs(1)).await;
    // RF=3 on the three nodes left: each holds every key, on its own.
    for k in 0..200 {
        let want = (k != 9).then_some(Value::Int(k * 10));
        for i in c.replicas_of(k) {
            assert_ne!(i, 3);
            let got = single_v(
                &c.local_query(i, &format!("SELECT * FROM ks.kv WHERE k = {k}"))
                    .await,
            );
            assert_eq!(got, want, "key {k} on node {i}");
        }
    }
    // With other nodes down as well, some of them would gain a range: the
    // hand-over refuses before it streams anything, naming them.
    let c2 = Cluster::new(4, SimConfig::with_seed(13), &[KV]).await;
    for k in 0..40 {
        c2.query(k as usize % 4, Consistency::Quorum, &write(k))
            .await
            .expect("write");
    }
    c2.kill(3);
    c2.kill(2);
    c2.kill(1);
    let future = c2.ring.remove_node(node_id(3)).expect("future ring");
    let down = c2
        .store(0)
        .down_gainers(node_id(3), &future, &[kv_table_ref(&c2)])
        .expect("gainers");
    assert!(
        !down.is_empty(),
        "nodes 1 and 2 gain some of node 3's ranges"
    );
    assert!(
        down.iter().all(|n| [node_id(1), node_id(2)].contains(n)),
        "{down:?}"
    );
    let streamed_before = c2.store(0).stats().partitions_streamed;
    let err = c2
        .store(0)
        .handover_stream(node_id(3), &future, &[kv_table_ref(&c2)])
        .await
        .expect_err("gainers down");
    let text = err.to_string();
    for n in &down {
        assert!(text.contains(&format!("{:016x}", n.0)), "{text}");
    }
    assert_eq!(c2.store(0).stats().partitions_streamed, streamed_before);
}
