//! Running one phase (load, or one workload) against a cluster with many
//! concurrent requests, and recording latency per operation type.

use super::pacing::Pacer;
use super::timeline::{Sample, Timeline};
use super::zipfian::ScrambledZipfian;
use cql_lite::Value;
use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use ringdb::client::{Client, ClientError, ClientTlsConfig, PreparedStatement};
use ringdb::model::{Consistency, DotSet};
use ringdb::query::api::{QueryOptions, QueryResult};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Fields per row (YCSB's `fieldcount`).
pub const FIELDS: usize = 10;
/// Bytes per field (YCSB's `fieldlength`).
pub const FIELD_LENGTH: usize = 100;
/// The table, as YCSB's Cassandra binding has it.
pub const TABLE: &str = "usertable";

/// Largest latency recorded (µs); longer ones count as this. The client
/// gives up after 60 s anyway.
const MAX_LATENCY_US: u64 = 120_000_000;

/// One kind of operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Op {
    /// Load: a full row.
    Insert,
    /// `SELECT *` of one row.
    Read,
    /// One field of one row, written blind.
    Update,
    /// A read, then one field written back with the read's causal context.
    ReadModifyWrite,
}

impl Op {
    /// The name YCSB prints.
    pub fn name(self) -> &'static str {
        match self {
            Op::Insert => "INSERT",
            Op::Read => "READ",
            Op::Update => "UPDATE",
            Op::ReadModifyWrite => "READ-MODIFY-WRITE",
        }
    }
}

/// A YCSB core workload: the mix of operations (fractions summing to 1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Workload {
    /// `a`, `b`, `c` or `f`.
    pub name: char,
    /// Share of reads.
    pub read: f64,
    /// Share of blind one-field updates.
    pub update: f64,
    /// Share of read-modify-writes.
    pub rmw: f64,
}

impl Workload {
    /// The core workloads this tool knows: A (update heavy), B (read
    /// mostly), C (read only), F (read-modify-write).
    pub const ALL: [Workload; 4] = [
        Workload {
            name: 'a',
            read: 0.5,
            update: 0.5,
            rmw: 0.0,
        },
        Workload {
            name: 'b',
            read: 0.95,
            update: 0.05,
            rmw: 0.0,
        },
        Workload {
            name: 'c',
            read: 1.0,
            update: 0.0,
            rmw: 0.0,
        },
        Workload {
            name: 'f',
            read: 0.5,
            update: 0.0,
            rmw: 0.5,
        },
    ];

    /// The workload called `name` (`a`, `B`, ...).
    pub fn by_name(name: &str) -> Option<Workload> {
        let mut chars = name.trim().chars();
        let c = chars.next()?.to_ascii_lowercase();
        if chars.next().is_some() {
            return None;
        }
        Workload::ALL.into_iter().find(|w| w.name == c)
    }

    /// `A`, `B`, ...
    pub fn label(&self) -> String {
        self.name.to_ascii_uppercase().to_string()
    }

    fn pick<R: rand::Rng + ?Sized>(&self, rng: &mut R) -> Op {
        let u: f64 = rng.random();
        if u < self.read {
            Op::Read
        } else if u < self.read + self.update {
            Op::Update
        } else if self.rmw > 0.0 {
            Op::ReadModifyWrite
        } else {
            Op::Update
        }
    }
}

/// Where the benchmark sends requests and at which level.
#[derive(Debug, Clone)]
pub struct Target {
    /// Client addresses of the coordinators to spread connections over.
    pub addrs: Vec<SocketAddr>,
    /// Trust settings.
    pub tls: ClientTlsConfig,
    /// Keyspace to create and use.
    pub keyspace: String,
    /// Replication factor of the keyspace.
    pub rf: usize,
    /// Consistency level of every request.
    pub consistency: Consistency,
    /// Connections opened to each coordinator.
    pub connections_per_node: usize,
}

/// Asks every node of `target` to write its memtables to SSTables and
/// finish the compactions that become due (`ringdb admin flush`), all
/// nodes at once; returns each node's answer once all are done.
pub async fn flush_nodes(target: &Target) -> anyhow::Result<Vec<String>> {
    let mut flushes = tokio::task::JoinSet::new();
    for addr in target.addrs.clone() {
        let tls = target.tls.clone();
        flushes.spawn(async move {
            let client = Client::connect(addr, tls).await?;
            // A 64 MiB memtable and the compaction after it take seconds.
            client.set_timeout(Duration::from_secs(600));
            let answer = client.admin_flush().await;
            client.close().await;
            anyhow::Ok(answer?)
        });
    }
    let mut answers = Vec::new();
    while let Some(done) = flushes.join_next().await {
        answers.push(done??.trim().to_string());
    }
    Ok(answers)
}

/// Each node's storage lines of `ringdb admin status` (its block cache
/// and its tables), by client address.
pub async fn storage_status(target: &Target) -> anyhow::Result<Vec<(SocketAddr, Vec<String>)>> {
    let mut out = Vec::new();
    for addr in &target.addrs {
        let client = Client::connect(*addr, target.tls.clone()).await?;
        let status = client.admin_status().await;
        client.close().await;
        let lines = status?
            .lines()
            .filter(|l| l.starts_with("Block cache:") || l.starts_with("Table "))
            .map(str::to_string)
            .collect();
        out.push((*addr, lines));
    }
    Ok(out)
}

/// One connection with its prepared statements.
struct Conn {
    client: Client,
    insert: PreparedStatement,
    read: PreparedStatement,
    updates: Vec<PreparedStatement>,
}

/// Open connections to a target, ready to run phases.
pub struct Session {
    conns: Vec<Arc<Conn>>,
    consistency: Consistency,
}

/// Creates the keyspace and table (if they do not exist).
pub async fn create_schema(target: &Target) -> anyhow::Result<()> {
    let addr = *target
        .addrs
        .first()
        .ok_or_else(|| anyhow::anyhow!("no node address to connect to"))?;
    let client = Client::connect(addr, target.tls.clone()).await?;
    client
        .execute(
            &format!(
                "CREATE KEYSPACE IF NOT EXISTS {} WITH replication = \
                 {{'class': 'SimpleStrategy', 'replication_factor': {}}}",
                target.keyspace, target.rf
            ),
            Vec::new(),
        )
        .await?;
    let fields: Vec<String> = (0..FIELDS).map(|i| format!("field{i} text")).collect();
    client
        .execute(
            &format!(
                "CREATE TABLE IF NOT EXISTS {}.{TABLE} (y_id text PRIMARY KEY, {})",
                target.keyspace,
                fields.join(", ")
            ),
            Vec::new(),
        )
        .await?;
    client.close().await;
    Ok(())
}

impl Session {
    /// Opens `connections_per_node` connections to each address and
    /// prepares the statements on each.
    pub async fn open(target: &Target) -> anyhow::Result<Session> {
        let mut conns = Vec::new();
        for _ in 0..target.connections_per_node.max(1) {
            for addr in &target.addrs {
                let client = Client::connect_with_keyspace(
                    *addr,
                    target.tls.clone(),
                    Some(target.keyspace.clone()),
                )
                .await?;
                client.set_consistency(target.consistency);
                let columns: Vec<String> = (0..FIELDS).map(|i| format!("field{i}")).collect();
                let marks = ["?"; FIELDS + 1].join(", ");
                let insert = client
                    .prepare(&format!(
                        "INSERT INTO {TABLE} (y_id, {}) VALUES ({marks})",
                        columns.join(", ")
                    ))
                    .await?;
                let read = client
                    .prepare(&format!("SELECT * FROM {TABLE} WHERE y_id = ?"))
                    .await?;
                let mut updates = Vec::new();
                for column in &columns {
                    updates.push(
                        client
                            .prepare(&format!("UPDATE {TABLE} SET {column} = ? WHERE y_id = ?"))
                            .await?,
                    );
                }
                conns.push(Arc::new(Conn {
                    client,
                    insert,
                    read,
                    updates,
                }));
            }
        }
        Ok(Session {
            conns,
            consistency: target.consistency,
        })
    }

    /// Closes every connection.
    pub async fn close(self) {
        for conn in self.conns {
            if let Ok(conn) = Arc::try_unwrap(conn) {
                conn.client.close().await;
            }
        }
    }
}

/// What a phase does.
#[derive(Debug, Clone, Copy)]
pub enum PhaseKind {
    /// Insert records `0..records`, one full row each.
    Load,
    /// Run a workload over records `0..records`.
    Run(Workload),
}

/// A phase to run.
#[derive(Debug, Clone, Copy)]
pub struct PhasePlan {
    /// Load or run.
    pub kind: PhaseKind,
    /// Records loaded (keys are `user0..user{records-1}`).
    pub records: u64,
    /// Operations (for a load: the records).
    pub operations: u64,
    /// Tasks issuing requests: the most requests in flight at once. A
    /// closed-loop phase keeps this many in flight; a paced phase starts
    /// each operation when it is due and uses as many as it needs, up to
    /// this many.
    pub concurrency: usize,
    /// Operations per second to pace at (`None`: as fast as it goes).
    pub rate: Option<f64>,
    /// Seed of the per-task random sources.
    pub seed: u64,
}

/// Latencies and errors of one operation type in one phase.
#[derive(Debug, Clone)]
pub struct OpStats {
    /// Response time in µs: from when the operation was due (its pacer
    /// slot, or its start when not paced) to its answer; an operation the
    /// pacer sent before it was due (at most one timer tick early) counts
    /// from when it was sent. Successful operations only.
    pub latency: Histogram<u64>,
    /// Service time in µs: from when the request was sent to its answer.
    pub service: Histogram<u64>,
    /// Operations that failed.
    pub errors: u64,
}

impl OpStats {
    pub(super) fn new() -> OpStats {
        OpStats {
            latency: new_histogram(),
            service: new_histogram(),
            errors: 0,
        }
    }

    /// Successful operations.
    pub fn count(&self) -> u64 {
        self.latency.len()
    }
}

fn new_histogram() -> Histogram<u64> {
    // 1 µs .. 120 s at 3 significant digits: bounds are valid constants.
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

/// What a phase measured.
#[derive(Debug, Clone)]
pub struct PhaseResult {
    /// From the first request to the last answer.
    pub elapsed: Duration,
    /// Per operation type.
    pub ops: BTreeMap<Op, OpStats>,
    /// The first few distinct error messages.
    pub error_samples: Vec<String>,
    /// The pace asked for, if any.
    pub rate: Option<f64>,
    /// CPU used by the servers, the load generator and other processes
    /// while the phase ran (filled in by the caller, which knows the
    /// server processes).
    pub cpu: Option<super::cpu::CpuUsage>,
    /// Every successful operation's due time and response time.
    pub timeline: Timeline,
    /// The most requests that were in flight at once.
    pub most_in_flight: usize,
}

impl PhaseResult {
    /// Successful operations of every type.
    pub fn total_ok(&self) -> u64 {
        self.ops.values().map(OpStats::count).sum()
    }

    /// Failed operations of every type.
    pub fn total_errors(&self) -> u64 {
        self.ops.values().map(|s| s.errors).sum()
    }

    /// Successful operations per second.
    pub fn throughput(&self) -> f64 {
        per_second(self.total_ok(), self.elapsed)
    }

    /// Successful operations of one type per second (of the whole phase).
    pub fn op_throughput(&self, op: Op) -> f64 {
        self.ops
            .get(&op)
            .map_or(0.0, |s| per_second(s.count(), self.elapsed))
    }
}

fn per_second(n: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        n as f64 / secs
    } else {
        0.0
    }
}

/// Per-task results: what each operation measured, as it was measured.
/// The histograms are built once, from every task's outcomes, when the
/// phase ends: a histogram per task (four of about 150 KiB each) cost a
/// paced run with 1024 tasks 600 MiB of zeroed memory at its start, and
/// the load generator spent its first half second page-faulting instead
/// of sending requests.
#[derive(Default)]
struct TaskResult {
    outcomes: Vec<Outcome>,
    errors: Vec<String>,
    samples: Vec<Sample>,
}

/// One operation's type and times (µs).
#[derive(Debug, Clone, Copy)]
struct Outcome {
    op: Op,
    /// `None`: it failed.
    latency_us: Option<u64>,
    service_us: u64,
}

/// Runs one phase with `plan.concurrency` tasks sharing the session's
/// connections.
pub async fn run_phase(session: &Session, plan: PhasePlan, progress: ProgressBar) -> PhaseResult {
    let chooser = Arc::new(ScrambledZipfian::new(plan.records));
    // The pacer (and with it the phase's clock) starts once every task
    // exists: spawning a paced run's thousand tasks takes milliseconds,
    // and operations due meanwhile would start late, counted against the
    // database.
    let (publish_pacer, pacer_published) = tokio::sync::watch::channel(None::<Arc<Pacer>>);
    let options = QueryOptions {
        consistency: session.consistency,
        ..QueryOptions::default()
    };
    let in_flight = Arc::new(InFlight::default());
    let mut tasks = Vec::new();
    for t in 0..plan.concurrency.max(1) {
        let conn = session.conns[t % session.conns.len()].clone();
        let mut pacer_published = pacer_published.clone();
        let in_flight = in_flight.clone();
        let chooser = chooser.clone();
        let progress = progress.clone();
        let options = options.clone();
        let seed = plan
            .seed
            .wrapping_add(t as u64)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
        tasks.push(tokio::spawn(async move {
            let pacer = match pacer_published.wait_for(Option::is_some).await {
                Ok(published) => published.clone(),
                Err(_) => None,
            };
            let Some(pacer) = pacer else {
                return TaskResult::default();
            };
            let mut worker = Worker {
                conn,
                options,
                rng: SmallRng::seed_from_u64(seed),
                phase_start: pacer.start(),
                result: TaskResult {
                    outcomes: Vec::new(),
                    errors: Vec::new(),
                    samples: Vec::new(),
                },
            };
            while let Some((i, due)) = pacer.next().await {
                let _counted = in_flight.enter();
                let sent = Instant::now();
                let (op, outcome) = match plan.kind {
                    PhaseKind::Load => (Op::Insert, worker.insert(i).await),
                    PhaseKind::Run(workload) => {
                        let key = chooser.next(&mut worker.rng);
                        let op = workload.pick(&mut worker.rng);
                        (op, worker.run(op, key).await)
                    }
                };
                let done = Instant::now();
                worker.record(op, due, sent, done, outcome);
                progress.inc(1);
            }
            worker.result
        }));
    }
    let started = SystemTime::now();
    let pacer = Arc::new(Pacer::new(plan.operations, plan.rate));
    // Every task holds a receiver, so this cannot fail.
    let _ = publish_pacer.send(Some(pacer.clone()));
    let mut result = PhaseResult {
        elapsed: Duration::ZERO,
        ops: BTreeMap::new(),
        error_samples: Vec::new(),
        rate: plan.rate,
        cpu: None,
        timeline: Timeline {
            started: Some(started),
            samples: Vec::new(),
        },
        most_in_flight: 0,
    };
    for task in tasks {
        match task.await {
            Ok(task) => {
                for o in task.outcomes {
                    let stats = result.ops.entry(o.op).or_insert_with(OpStats::new);
                    match o.latency_us {
                        Some(latency) => {
                            stats.latency.saturating_record(latency);
                            stats.service.saturating_record(o.service_us);
                        }
                        None => stats.errors += 1,
                    }
                }
                result.timeline.samples.extend(task.samples);
                for e in task.errors {
                    if result.error_samples.len() < 5 && !result.error_samples.contains(&e) {
                        result.error_samples.push(e);
                    }
                }
            }
            Err(e) => result
                .error_samples
                .push(format!("a client task failed: {e}")),
        }
    }
    result.elapsed = pacer.start().elapsed();
    result.most_in_flight = in_flight.most();
    progress.finish_and_clear();
    result
}

/// Counts the requests in flight and remembers the most there were.
#[derive(Debug, Default)]
struct InFlight {
    now: AtomicUsize,
    most: AtomicUsize,
}

impl InFlight {
    /// One more request in flight until the guard is dropped.
    fn enter(&self) -> InFlightGuard<'_> {
        let now = self.now.fetch_add(1, Ordering::Relaxed) + 1;
        self.most.fetch_max(now, Ordering::Relaxed);
        InFlightGuard(self)
    }

    fn most(&self) -> usize {
        self.most.load(Ordering::Relaxed)
    }
}

struct InFlightGuard<'a>(&'a InFlight);

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::Relaxed);
    }
}

struct Worker {
    conn: Arc<Conn>,
    options: QueryOptions,
    rng: SmallRng,
    /// When the phase started (operations' due times are offsets from it).
    phase_start: Instant,
    result: TaskResult,
}

/// Printable characters for field values (as YCSB's random ASCII strings).
const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// One field's value: `FIELD_LENGTH` random printable characters.
fn random_field<R: rand::Rng + ?Sized>(rng: &mut R) -> Value {
    let text: String = (0..FIELD_LENGTH)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect();
    Value::Text(text)
}

impl Worker {
    fn value(&mut self) -> Value {
        random_field(&mut self.rng)
    }

    async fn insert(&mut self, record: u64) -> Result<(), String> {
        let mut values = Vec::with_capacity(FIELDS + 1);
        values.push(Value::Text(key(record)));
        for _ in 0..FIELDS {
            let v = self.value();
            values.push(v);
        }
        let conn = self.conn.clone();
        conn.client
            .execute_prepared_with(&conn.insert, values, self.options.clone())
            .await
            .map(|_| ())
            .map_err(|e| describe(&e))
    }

    async fn run(&mut self, op: Op, record: u64) -> Result<(), String> {
        match op {
            Op::Read => self.read(record).await.map(|_| ()),
            Op::Update => self.update(record, None).await,
            Op::ReadModifyWrite => {
                let context = self.read(record).await?;
                self.update(record, context).await
            }
            Op::Insert => self.insert(record).await,
        }
    }

    /// Reads a whole row; returns its causal context.
    async fn read(&mut self, record: u64) -> Result<Option<DotSet>, String> {
        let conn = self.conn.clone();
        let response = conn
            .client
            .execute_prepared_with(
                &conn.read,
                vec![Value::Text(key(record))],
                self.options.clone(),
            )
            .await
            .map_err(|e| describe(&e))?;
        match response.result {
            QueryResult::Rows(rows) if rows.rows.len() == 1 => Ok(rows.causal_context),
            QueryResult::Rows(rows) => Err(format!(
                "read of {} found {} rows, not 1",
                key(record),
                rows.rows.len()
            )),
            other => Err(format!("read answered {other:?}")),
        }
    }

    /// Writes one random field, with the causal context of a read if given.
    async fn update(&mut self, record: u64, context: Option<DotSet>) -> Result<(), String> {
        let field = self.rng.random_range(0..FIELDS);
        let value = self.value();
        let conn = self.conn.clone();
        let options = QueryOptions {
            causal_context: context,
            ..self.options.clone()
        };
        conn.client
            .execute_prepared_with(
                &conn.updates[field],
                vec![value, Value::Text(key(record))],
                options,
            )
            .await
            .map(|_| ())
            .map_err(|e| describe(&e))
    }

    fn record(
        &mut self,
        op: Op,
        due: Instant,
        sent: Instant,
        done: Instant,
        outcome: Result<(), String>,
    ) {
        let micros = |d: Duration| (d.as_micros() as u64).clamp(1, MAX_LATENCY_US);
        match outcome {
            Ok(()) => {
                let latency_us = micros(response_time(due, sent, done));
                self.result.outcomes.push(Outcome {
                    op,
                    latency_us: Some(latency_us),
                    service_us: micros(done - sent),
                });
                self.result.samples.push(Sample {
                    due_us: due.saturating_duration_since(self.phase_start).as_micros() as u64,
                    latency_us,
                });
            }
            Err(e) => {
                self.result.outcomes.push(Outcome {
                    op,
                    latency_us: None,
                    service_us: micros(done - sent),
                });
                if self.result.errors.len() < 5 && !self.result.errors.contains(&e) {
                    self.result.errors.push(e);
                }
            }
        }
    }
}

/// An operation's response time: from when it was due, or from when it
/// was sent if the pacer let it go before then (at most a timer tick
/// early). Never less than the service time (`done - sent`), and every wait
/// past the due time, the load generator's own included, counts: no
/// coordinated omission.
fn response_time(due: Instant, sent: Instant, done: Instant) -> Duration {
    done.saturating_duration_since(due.min(sent))
}

/// The key of record `n` (YCSB names them `user<n>`).
pub fn key(n: u64) -> String {
    format!("user{n}")
}

fn describe(e: &ClientError) -> String {
    e.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_workload_draws_ycsb_s_mix_of_operations() {
        // (workload, reads, updates, read-modify-writes) as YCSB's core
        // workload files give them.
        let expected = [
            ('a', 0.5, 0.5, 0.0),
            ('b', 0.95, 0.05, 0.0),
            ('c', 1.0, 0.0, 0.0),
            ('f', 0.5, 0.0, 0.5),
        ];
        let draws = 200_000;
        for (name, read, update, rmw) in expected {
            let workload = Workload::by_name(&name.to_string()).expect("known workload");
            assert_eq!(
                Workload::by_name(&name.to_ascii_uppercase().to_string()),
                Some(workload)
            );
            let mut rng = SmallRng::seed_from_u64(7);
            let mut counts = [0u32; 3];
            for _ in 0..draws {
                match workload.pick(&mut rng) {
                    Op::Read => counts[0] += 1,
                    Op::Update => counts[1] += 1,
                    Op::ReadModifyWrite => counts[2] += 1,
                    Op::Insert => panic!("a run never inserts"),
                }
            }
            for (got, want) in counts.iter().zip([read, update, rmw]) {
                let share = f64::from(*got) / f64::from(draws);
                assert!(
                    (share - want).abs() < 0.005,
                    "workload {name}: {counts:?} of {draws}"
                );
                if want == 0.0 {
                    assert_eq!(*got, 0, "workload {name}: {counts:?}");
                }
            }
        }
        assert_eq!(Workload::by_name("d"), None);
        assert_eq!(Workload::by_name("ab"), None);
    }

    #[test]
    fn a_loaded_row_is_ten_fields_of_a_hundred_printable_bytes() {
        assert_eq!((FIELDS, FIELD_LENGTH), (10, 100));
        let mut rng = SmallRng::seed_from_u64(3);
        for _ in 0..100 {
            let Value::Text(field) = random_field(&mut rng) else {
                panic!("a field is text");
            };
            assert_eq!(field.len(), FIELD_LENGTH);
            assert!(field.bytes().all(|b| ALPHABET.contains(&b)), "{field}");
        }
    }

    #[test]
    fn response_time_counts_from_the_due_time_or_an_earlier_send() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        // Sent late (the load generator fell behind): its wait counts.
        assert_eq!(response_time(t0, t0 + ms(3), t0 + ms(5)), ms(5));
        // Sent on time.
        assert_eq!(response_time(t0, t0, t0 + ms(2)), ms(2));
        // Sent a tick early: from the send, never less than the service time.
        assert_eq!(response_time(t0 + ms(1), t0, t0 + ms(2)), ms(2));
        // Answered before it was even due: still the service time.
        assert_eq!(response_time(t0 + ms(1), t0, t0 + ms(1) / 2), ms(1) / 2);
    }
}
