//! What the membership service publishes: the [`ClusterView`], the
//! [`MembershipEvent`]s between two views, and [`status_table`].

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;

use super::metadata::{NodeMetadata, NodeStatus};
use crate::cluster::ring::NodeInfo;
use crate::model::NodeId;

/// Whether a member is running, as SWIM sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Liveness {
    /// Answers probes.
    Alive,
    /// Missed a probe; declared down unless it refutes in time. Still
    /// counted as up.
    Suspect,
    /// Declared down (failed, partitioned away, or left).
    Down,
}

impl Liveness {
    /// Alive or suspect: the node is taken to be running.
    pub fn is_up(self) -> bool {
        !matches!(self, Liveness::Down)
    }

    /// The one-letter code of `nodetool status`: U, D; S for suspect.
    pub fn letter(self) -> char {
        match self {
            Liveness::Alive => 'U',
            Liveness::Suspect => 'S',
            Liveness::Down => 'D',
        }
    }
}

/// One node of the cluster as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The node's listen address.
    pub addr: SocketAddr,
    /// The generation of the identity SWIM knows it by.
    pub generation: u64,
    /// Up or down.
    pub liveness: Liveness,
    /// Its metadata, once learned (a member is known to SWIM slightly before
    /// its metadata arrives).
    pub metadata: Option<NodeMetadata>,
}

/// The cluster as one node sees it: every node it knows of, itself
/// included. Nodes whose metadata is known but that SWIM does not list (a
/// node that left or whose address another node took) are shown down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterView {
    /// The node this view belongs to.
    pub local: NodeId,
    /// Every known node.
    pub members: BTreeMap<NodeId, Member>,
}

impl ClusterView {
    /// The member `node`, if known.
    pub fn get(&self, node: NodeId) -> Option<&Member> {
        self.members.get(&node)
    }

    /// Whether `node` is known and up (alive or suspect).
    pub fn is_up(&self, node: NodeId) -> bool {
        self.get(node).is_some_and(|m| m.liveness.is_up())
    }

    /// The nodes that are alive (not suspect, not down).
    pub fn alive(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.members
            .iter()
            .filter(|(_, m)| m.liveness == Liveness::Alive)
            .map(|(&id, _)| id)
    }

    /// The member listening at `addr`, if any.
    pub fn by_addr(&self, addr: SocketAddr) -> Option<(NodeId, &Member)> {
        self.members
            .iter()
            .find(|(_, m)| m.addr == addr)
            .map(|(&id, m)| (id, m))
    }

    /// Ring entries of the members whose metadata is known and that own
    /// their tokens (status normal or leaving), up or down: ownership
    /// changes by explicit operations, not by liveness.
    pub fn ring_nodes(&self) -> Vec<NodeInfo> {
        self.members
            .values()
            .filter_map(|m| m.metadata.as_ref())
            .filter(|m| matches!(m.status, NodeStatus::Normal | NodeStatus::Leaving))
            .map(NodeMetadata::to_node_info)
            .collect()
    }

    /// The members that are leaving: they own their tokens until they are
    /// gone, and the ring becomes [`MembershipView::ring_nodes`] without
    /// them.
    pub fn leaving_nodes(&self) -> Vec<NodeId> {
        self.members
            .values()
            .filter_map(|m| m.metadata.as_ref())
            .filter(|m| m.status == NodeStatus::Leaving)
            .map(|m| m.node)
            .collect()
    }

    /// Ring entries of the members that are joining with their tokens
    /// chosen (status joining, tokens gossiped): the ring becomes
    /// [`MembershipView::ring_nodes`] plus these once they are normal.
    pub fn joining_nodes(&self) -> Vec<NodeInfo> {
        self.members
            .values()
            .filter_map(|m| m.metadata.as_ref())
            .filter(|m| m.status == NodeStatus::Joining && !m.tokens.is_empty())
            .map(NodeMetadata::to_node_info)
            .collect()
    }
}

/// A change between two views, for the parts of the node that react to
/// gossip (hint replay waits for `Up`, schema sync for
/// `SchemaVersionChanged`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembershipEvent {
    /// A node became up: it was unknown or down, or it came back under a new
    /// generation (restarted).
    Up {
        /// The node.
        node: NodeId,
        /// Its listen address.
        addr: SocketAddr,
        /// The generation of its identity.
        generation: u64,
    },
    /// A node that was up is now down.
    Down {
        /// The node.
        node: NodeId,
        /// Its listen address.
        addr: SocketAddr,
    },
    /// A node's metadata changed (or was learned).
    MetadataChanged {
        /// The node.
        node: NodeId,
        /// Its new metadata.
        metadata: NodeMetadata,
    },
    /// A node's schema version or digest changed (or was learned).
    SchemaVersionChanged {
        /// The node.
        node: NodeId,
        /// Its schema version.
        schema_version: u64,
        /// Its schema digest.
        schema_digest: u64,
    },
}

/// The events that lead from `old` to `new`, in node order.
pub(crate) fn diff(old: &ClusterView, new: &ClusterView) -> Vec<MembershipEvent> {
    let mut events = Vec::new();
    for (&node, m) in &new.members {
        let before = old.members.get(&node);
        let was_up = before.is_some_and(|b| b.liveness.is_up());
        let restarted = before.is_some_and(|b| b.generation != m.generation);
        if m.liveness.is_up() && (!was_up || restarted) {
            events.push(MembershipEvent::Up {
                node,
                addr: m.addr,
                generation: m.generation,
            });
        } else if was_up && !m.liveness.is_up() {
            events.push(MembershipEvent::Down { node, addr: m.addr });
        }
        let old_meta = before.and_then(|b| b.metadata.as_ref());
        if let Some(meta) = &m.metadata {
            if old_meta != Some(meta) {
                events.push(MembershipEvent::MetadataChanged {
                    node,
                    metadata: meta.clone(),
                });
            }
            let schema = |x: &NodeMetadata| (x.schema_version, x.schema_digest);
            if old_meta.map(schema) != Some(schema(meta)) {
                events.push(MembershipEvent::SchemaVersionChanged {
                    node,
                    schema_version: meta.schema_version,
                    schema_digest: meta.schema_digest,
                });
            }
        }
    }
    for (&node, b) in &old.members {
        if !new.members.contains_key(&node) && b.liveness.is_up() {
            events.push(MembershipEvent::Down { node, addr: b.addr });
        }
    }
    events
}

/// A byte count for people: `512 B`, `3.00 MiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.2} {}", UNITS[unit])
}

/// Renders `view` like `nodetool status`: one line per node with its state
/// (U/S/D for up, suspect, down; N/J/L/X/R for normal, joining, leaving,
/// left, removed; `?` while its metadata is unknown), address, load, token count,
/// rack, host id and schema version. `ringdb admin status` prints this.
pub fn status_table(view: &ClusterView) -> String {
    let header = [
        "--", "Address", "Load", "Tokens", "Rack", "Host ID", "Schema",
    ];
    let mut rows: Vec<[String; 7]> = Vec::new();
    for (node, m) in &view.members {
        let meta = m.metadata.as_ref();
        let state = format!(
            "{}{}",
            m.liveness.letter(),
            meta.map_or('?', |x| x.status.letter())
        );
        rows.push([
            state,
            m.addr.to_string(),
            meta.map_or_else(|| "?".into(), |x| human_bytes(x.load_bytes)),
            meta.map_or_else(|| "?".into(), |x| x.tokens.len().to_string()),
            meta.and_then(|x| x.rack.clone())
                .unwrap_or_else(|| "-".into()),
            format!(
                "{:016x}{}",
                node.0,
                if *node == view.local { " *" } else { "" }
            ),
            meta.map_or_else(
                || "?".into(),
                |x| format!("{} ({:08x})", x.schema_version, x.schema_digest as u32),
            ),
        ]);
    }
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let up = view.members.values().filter(|m| m.liveness.is_up()).count();
    let _ = writeln!(out, "Cluster: {} nodes, {} up", view.members.len(), up);
    let _ = writeln!(out, "Status=Up/Suspect/Down");
    let _ = writeln!(out, "|/ State=Normal/Leaving/Joining/Left(X)/Removed(R)");
    let mut line = |cells: &[&str]| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                let _ = write!(s, "{cell:<w$}  ");
            }
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line(&header);
    for row in &rows {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        line(&cells);
    }
    let versions: std::collections::BTreeSet<_> = view
        .members
        .values()
        .filter_map(|m| m.metadata.as_ref())
        .map(|m| (m.schema_version, m.schema_digest))
        .collect();
    if versions.len() > 1 {
        let _ = writeln!(out, "Schema versions disagree: {} distinct", versions.len());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(n: u64) -> NodeMetadata {
        let mut m = NodeMetadata::new(
            NodeId(n),
            SocketAddr::from(([10, 0, 0, n as u8], 7000)),
            Some("r1".into()),
            vec![1, 2, 3],
        );
        m.status = NodeStatus::Normal;
        m.load_bytes = 3 * 1024 * 1024;
        m
    }

    fn member(n: u64, liveness: Liveness, generation: u64) -> Member {
        Member {
            addr: SocketAddr::from(([10, 0, 0, n as u8], 7000)),
            generation,
            liveness,
            metadata: Some(meta(n)),
        }
    }

    #[test]
    fn diff_reports_up_down_restart_and_schema() {
        let mut old = ClusterView {
            local: NodeId(1),
            members: BTreeMap::new(),
        };
        old.members.insert(NodeId(1), member(1, Liveness::Alive, 1));
        old.members.insert(NodeId(2), member(2, Liveness::Alive, 1));
        old.members.insert(NodeId(3), member(3, Liveness::Down, 1));
        let mut new = old.clone();
        if let Some(m) = new.members.get_mut(&NodeId(2)) {
            m.liveness = Liveness::Down;
        }
        new.members.insert(NodeId(3), member(3, Liveness::Alive, 2));
        if let Some(m) = new
            .members
            .get_mut(&NodeId(1))
            .and_then(|m| m.metadata.as_mut())
        {
            m.schema_version = 4;
        }
        let events = diff(&old, &new);
        assert!(matches!(
            events[0],
            MembershipEvent::MetadataChanged {
                node: NodeId(1),
                ..
            }
        ));
        assert_eq!(
            events[1],
            MembershipEvent::SchemaVersionChanged {
                node: NodeId(1),
                schema_version: 4,
                schema_digest: 0
            }
        );
        assert!(matches!(
            events[2],
            MembershipEvent::Down {
                node: NodeId(2),
                ..
            }
        ));
        assert!(matches!(
            events[3],
            MembershipEvent::Up {
                node: NodeId(3),
                generation: 2,
                ..
            }
        ));
        assert_eq!(events.len(), 4);
        assert!(diff(&new, &new).is_empty());
    }

    #[test]
    fn status_table_shows_every_node() {
        let mut view = ClusterView {
            local: NodeId(1),
            members: BTreeMap::new(),
        };
        view.members
            .insert(NodeId(1), member(1, Liveness::Alive, 1));
        view.members.insert(NodeId(2), member(2, Liveness::Down, 1));
        let mut unknown = member(3, Liveness::Suspect, 1);
        unknown.metadata = None;
        view.members.insert(NodeId(3), unknown);
        let table = status_table(&view);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[3].starts_with("--  Address"), "{table}");
        assert!(lines[4].starts_with("UN  10.0.0.1:7000"), "{table}");
        assert!(lines[4].contains("3.00 MiB"), "{table}");
        assert!(lines[4].contains("0000000000000001 *"), "{table}");
        // Address, load (two words), tokens and rack, in their columns.
        let cells: Vec<&str> = lines[4].split_whitespace().collect();
        assert_eq!(&cells[1..6], ["10.0.0.1:7000", "3.00", "MiB", "3", "r1"]);
        let header: Vec<&str> = lines[3].split_whitespace().collect();
        assert_eq!(&header[..5], ["--", "Address", "Load", "Tokens", "Rack"]);
        assert!(lines[5].starts_with("DN  10.0.0.2:7000"), "{table}");
        assert!(lines[6].starts_with("S?  10.0.0.3:7000"), "{table}");
        assert_eq!(lines.len(), 7, "{table}");
    }
}
