//! What `ringdb admin` shows: the cluster as this node sees it.

use super::auto_repair::AutoRepair;
use super::removal::RemoveNode;
use super::{all_tables, Decommission};
use crate::client::protocol::RepairRequest;
use crate::cluster::hints::{HintStats, PendingHints};
use crate::cluster::membership::{human_bytes, status_table, ClusterView, Membership};
use crate::coordinator::messages::{PeerRequest, PeerResponse};
use crate::coordinator::{BatchCoordinator, ClusterStore, CoordinatorStats, RepairProgress};
use crate::net::Transport;
use crate::query::api::{BoxFuture, TableRef};
use crate::schema::SchemaStore;
use crate::server::AdminSource;
use std::sync::Arc;
use std::time::Duration;

/// Answers `ringdb admin status` from gossip and the coordinator.
pub struct NodeAdmin {
    membership: Membership,
    cluster: ClusterStore,
    batches: BatchCoordinator,
    decommission: Arc<Decommission>,
    removal: Arc<RemoveNode>,
    transport: Arc<dyn Transport<PeerRequest, PeerResponse>>,
    schema: Arc<SchemaStore>,
    auto_repair: Arc<AutoRepair>,
}

impl NodeAdmin {
    /// An admin view over a running node.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        membership: Membership,
        cluster: ClusterStore,
        batches: BatchCoordinator,
        decommission: Arc<Decommission>,
        removal: Arc<RemoveNode>,
        transport: Arc<dyn Transport<PeerRequest, PeerResponse>>,
        schema: Arc<SchemaStore>,
        auto_repair: Arc<AutoRepair>,
    ) -> NodeAdmin {
        NodeAdmin {
            membership,
            cluster,
            batches,
            decommission,
            removal,
            transport,
            schema,
            auto_repair,
        }
    }
}

impl AdminSource for NodeAdmin {
    fn status(&self) -> String {
        let view = self.membership.view();
        let stats = self.cluster.stats();
        let hints = self.cluster.hints().stats();
        let batches = self.batches.stats();
        let net = self.transport.stats();
        let gossip = self.membership.stats();
        format!(
            "{}\nThis node: {:016x}\n{}\nBatch log: held={} logged={} log_failures={} replayed_entries={} replayed_partitions={} discarded_partitions={}\nCoordinator: {:?}\nPeer transport: requests_in={} requests_out={} requests_failed={} malformed={} version_mismatches={} deadlines_exceeded={} datagrams_in={} datagrams_out={} datagrams_dropped={} handshakes_failed={}\nGossip: datagrams_in={} datagrams_out={} malformed={} spoofed={} rejected={} inbox_full={} oversize={}\nStreams: {}\n{}\n{}\n{}",
            status_table(&view),
            self.cluster.node_id().0,
            hint_lines(
                &view,
                &hints,
                &self.cluster.hints().pending(),
                self.cluster.hint_throttle().bytes_per_sec(),
                self.cluster.hints().window(),
            ),
            self.batches.batch_log().len(),
            batches.logged,
            batches.log_failures,
            batches.replayed_entries,
            batches.replayed_partitions,
            batches.discarded_partitions,
            stats,
            net.requests_in,
            net.requests_out,
            net.requests_failed,
            net.malformed,
            net.version_mismatches,
            net.deadlines_exceeded,
            net.datagrams_in,
            net.datagrams_out,
            net.datagrams_dropped,
            net.handshakes_failed,
            gossip.datagrams_in,
            gossip.datagrams_out,
            gossip.malformed,
            gossip.spoofed,
            gossip.rejected,
            gossip.inbox_full,
            gossip.oversize,
            stream_line(self.cluster.stream_throttle().bytes_per_sec(), &stats),
            repair_line(self.cluster.repair_progress()),
            self.auto_repair.status_line(),
            self.cluster.local().storage_stats()
        )
    }

    fn decommission(&self) -> BoxFuture<'static, Result<String, String>> {
        let decommission = self.decommission.clone();
        Box::pin(async move { decommission.run().await })
    }

    fn set_stream_throughput(&self, mib_per_sec: u64) -> Result<String, String> {
        let throttle = self.cluster.stream_throttle();
        let bytes = mib_per_sec.checked_mul(1 << 20).ok_or_else(|| {
            format!("{mib_per_sec} MiB/s is more bytes per second than fit in 64 bits")
        })?;
        let old = throttle.bytes_per_sec();
        throttle.set_bytes_per_sec(bytes);
        let show = |b: u64| {
            if b == 0 {
                "none".to_string()
            } else {
                format!("{} MiB/s", b as f64 / (1u64 << 20) as f64)
            }
        };
        tracing::info!(old = old, new = bytes, "stream throughput limit changed");
        Ok(format!(
            "stream throughput limit: {} (was {}), until the node restarts\n",
            show(bytes),
            show(old)
        ))
    }

    fn remove_node(&self, node: u64) -> BoxFuture<'static, Result<String, String>> {
        let removal = self.removal.clone();
        Box::pin(async move { removal.run(crate::model::NodeId(node)).await })
    }

    fn flush(&self) -> BoxFuture<'static, Result<String, String>> {
        let local = self.cluster.local().clone();
        Box::pin(async move {
            let started = std::time::Instant::now();
            match local.flush_tables().await {
                Ok(summary) => Ok(format!(
                    "{summary} in {} ms\n",
                    started.elapsed().as_millis()
                )),
                Err(e) => Err(format!("flush failed: {e}")),
            }
        })
    }

    fn compact(&self) -> BoxFuture<'static, Result<String, String>> {
        let local = self.cluster.local().clone();
        Box::pin(async move {
            let started = std::time::Instant::now();
            match local.compact_tables().await {
                Ok(summary) => Ok(format!(
                    "{summary} in {} ms\n",
                    started.elapsed().as_millis()
                )),
                Err(e) => Err(format!("compaction failed: {e}")),
            }
        })
    }

    fn repair(&self, request: RepairRequest) -> BoxFuture<'static, Result<String, String>> {
        let cluster = self.cluster.clone();
        let tables = tables_named(
            &self.schema,
            request.keyspace.as_ref(),
            request.table.as_ref(),
        );
        Box::pin(async move {
            let tables = tables?;
            let started = std::time::Instant::now();
            let report = cluster
                .repair(&tables, request.primary_range)
                .await
                .map_err(|e| format!("repair failed: {e}"))?;
            let text = format!("{report}\nin {} ms\n", started.elapsed().as_millis());
            if report.is_complete() {
                Ok(text)
            } else {
                Err(format!(
                    "repair incomplete (it does not count for gc_grace_seconds; run it again \
                     once every replica is up): {text}"
                ))
            }
        })
    }

    fn cleanup(
        &self,
        keyspace: Option<String>,
        table: Option<String>,
    ) -> BoxFuture<'static, Result<String, String>> {
        let cluster = self.cluster.clone();
        let tables = tables_named(&self.schema, keyspace.as_ref(), table.as_ref());
        Box::pin(async move {
            let tables = tables?;
            let started = std::time::Instant::now();
            let report = cluster
                .cleanup(&tables)
                .await
                .map_err(|e| format!("cleanup failed: {e}"))?;
            Ok(format!(
                "{report} in {} ms\n",
                started.elapsed().as_millis()
            ))
        })
    }
}

/// The `Hints:` line of `admin status` (counters, what waits, the replay
/// limit and the hint window), then one line per node hints wait for.
fn hint_lines(
    view: &ClusterView,
    stats: &HintStats,
    pending: &[PendingHints],
    limit_bytes_per_sec: u64,
    window: Duration,
) -> String {
    let limit = match limit_bytes_per_sec {
        0 => "none".to_string(),
        b => format!("{}MiB/s", b as f64 / (1u64 << 20) as f64),
    };
    let mut out = format!(
        "Hints: stored={} delivered={} expired={} discarded={} pending_targets={} pending_bytes={} limit={limit} window={}",
        stats.stored,
        stats.delivered,
        stats.expired,
        stats.discarded,
        pending.len(),
        pending.iter().map(|p| p.bytes).sum::<u64>(),
        duration_text(window),
    );
    for p in pending {
        let who = match view.get(p.target) {
            Some(m) => format!("{} ({:016x})", m.addr, p.target.0),
            None => format!("{:016x} (no longer a member)", p.target.0),
        };
        let noun = if p.segments == 1 {
            "segment"
        } else {
            "segments"
        };
        out.push_str(&format!(
            "\n  waiting for {who}: {} in {} {noun}",
            human_bytes(p.bytes),
            p.segments
        ));
    }
    out
}

/// A whole number of hours, minutes or seconds where it is one (`3h`,
/// `90m`, `45s`), else milliseconds.
fn duration_text(d: Duration) -> String {
    let (secs, ms) = (d.as_secs(), d.as_millis());
    if ms % 1000 != 0 {
        format!("{ms}ms")
    } else if secs != 0 && secs % 3600 == 0 {
        format!("{}h", secs / 3600)
    } else if secs != 0 && secs % 60 == 0 {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

/// The `Streams:` line of `admin status`: the stream limit, what range
/// streams copied and waited for it since start, and what repair hashing
/// read and waited under the same limit.
fn stream_line(limit_bytes_per_sec: u64, stats: &CoordinatorStats) -> String {
    let limit = match limit_bytes_per_sec {
        0 => "none".to_string(),
        b => format!("{}MiB/s", b as f64 / (1u64 << 20) as f64),
    };
    format!(
        "limit={limit} bytes_streamed={} throttled_ms={} bytes_hashed={} hash_throttled_ms={}",
        stats.stream_bytes,
        stats.stream_throttled_us / 1000,
        stats.repair_hash_bytes,
        stats.repair_hash_throttled_us / 1000
    )
}

/// The `Repair:` line of `admin status` (which `ringdb admin repair`
/// reads for its progress bar: see [`parse_repair_line`]).
fn repair_line(progress: Option<RepairProgress>) -> String {
    match progress {
        None => "Repair: idle".to_string(),
        Some(p) => format!(
            "Repair: running spans_done={} spans_total={}",
            p.spans_done, p.spans_total
        ),
    }
}

/// The progress in an `admin status` text's `Repair:` line, if a repair
/// runs.
pub fn parse_repair_line(status: &str) -> Option<RepairProgress> {
    let line = status.lines().find(|l| l.starts_with("Repair: running"))?;
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .and_then(|v| v.parse().ok())
    };
    Some(RepairProgress {
        spans_done: field("spans_done=")?,
        spans_total: field("spans_total=")?,
    })
}

/// Every table, those of `keyspace`, or its one `table`; an unknown
/// keyspace or table is an error, not an operation on nothing.
fn tables_named(
    schema: &SchemaStore,
    keyspace: Option<&String>,
    table: Option<&String>,
) -> Result<Vec<TableRef>, String> {
    let all = all_tables(schema);
    let Some(keyspace) = keyspace else {
        if let Some(table) = table {
            return Err(format!("table {table} given without its keyspace"));
        }
        return Ok(all);
    };
    if !schema.current().keyspaces().any(|k| &k.name == keyspace) {
        return Err(format!("no keyspace named {keyspace}"));
    }
    let in_keyspace = all.into_iter().filter(|t| &t.keyspace == keyspace);
    match table {
        None => Ok(in_keyspace.collect()),
        Some(table) => {
            let picked: Vec<TableRef> = in_keyspace.filter(|t| &t.table == table).collect();
            if picked.is_empty() {
                Err(format!("no table named {keyspace}.{table}"))
            } else {
                Ok(picked)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hint_lines_show_what_waits_for_whom_and_the_limits() {
        use crate::cluster::membership::{Liveness, Member};
        use crate::model::NodeId;
        let mut view = ClusterView {
            local: NodeId(1),
            members: std::collections::BTreeMap::new(),
        };
        view.members.insert(
            NodeId(2),
            Member {
                addr: "10.0.0.2:7000".parse().unwrap(),
                liveness: Liveness::Down,
                metadata: None,
                generation: 0,
            },
        );
        let stats = HintStats {
            stored: 7,
            delivered: 2,
            ..HintStats::default()
        };
        let none = hint_lines(&view, &stats, &[], 0, Duration::from_secs(3 * 3600));
        assert_eq!(
            none,
            "Hints: stored=7 delivered=2 expired=0 discarded=0 pending_targets=0 pending_bytes=0 limit=none window=3h"
        );
        let pending = [
            PendingHints {
                target: NodeId(2),
                segments: 3,
                bytes: 3 << 20,
            },
            PendingHints {
                target: NodeId(9),
                segments: 1,
                bytes: 100,
            },
        ];
        let lines = hint_lines(&view, &stats, &pending, 4 << 20, Duration::from_secs(90));
        let lines: Vec<&str> = lines.lines().collect();
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(
            lines[0].ends_with("pending_targets=2 pending_bytes=3145828 limit=4MiB/s window=90s"),
            "{}",
            lines[0]
        );
        assert_eq!(
            lines[1],
            "  waiting for 10.0.0.2:7000 (0000000000000002): 3.00 MiB in 3 segments"
        );
        assert_eq!(
            lines[2],
            "  waiting for 0000000000000009 (no longer a member): 100 B in 1 segment"
        );
        assert_eq!(duration_text(Duration::from_millis(1500)), "1500ms");
        assert_eq!(duration_text(Duration::from_secs(120)), "2m");
    }

    #[test]
    fn the_repair_line_reads_back_as_the_progress_it_shows() {
        assert_eq!(parse_repair_line(&repair_line(None)), None);
        let p = RepairProgress {
            spans_done: 12,
            spans_total: 49,
        };
        let status = format!("Cluster: 3 nodes\n{}\nTables: ...", repair_line(Some(p)));
        assert_eq!(parse_repair_line(&status), Some(p));
        assert_eq!(parse_repair_line("Repair: running spans_done=x"), None);
    }
}
