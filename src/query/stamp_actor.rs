//! The id a node puts in the dots of the writes it stamps, and when it
//! changes.
//!
//! A replica picks a write's dot counter from its own copy of the row (see
//! `RowState::stamp`): one more than the largest counter of its id there.
//! That is only safe while the replica never forgets a dot it stamped and
//! sent on. A killed process forgets nothing (every stamped record was
//! written to the OS before its deltas left the node), but an OS crash or
//! power loss drops what the commit log had not fsynced yet: the last
//! interval of writes in `periodic` mode, and in `batch` mode the writes
//! whose deltas went to the other replicas while the local fsync ran
//! (`overlap_local_sync`). Stamping with the same id after that could give
//! a new write a dot the other replicas already hold for a lost one, and
//! they would ignore it: a lost write.
//!
//! So the stamping id is kept in `<data>/stamp_actor` with the boot id of
//! the OS that last opened the directory (`/proc/sys/kernel/random/boot_id`
//! on Linux). On a new directory's first open it is the node id. When the
//! directory is opened under a different boot (the OS restarted, cleanly or
//! not, or the files moved to another machine), when the boot id cannot be
//! read, or when a directory that was used before has no such file (written
//! by an older ringdb, or deleted after a restore from a copy), the node
//! takes a fresh random id before it stamps anything: every dot of the new
//! id is new. The cost is one more entry in the causal context of each row
//! stamped afterwards, per OS restart.

use super::api::QueryError;
use crate::model::NodeId;
use std::path::Path;

/// File name of the stamping id, inside the store's data directory.
const FILE: &str = "stamp_actor";

/// Where the boot id of the running OS is (Linux).
const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

/// The boot id of the running OS, or `None` where there is none to read.
pub fn current_boot_id() -> Option<String> {
    std::fs::read_to_string(BOOT_ID)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// The stamping id for a store in `dir` whose node id is `node`, under
/// the OS boot `boot_id` (see the module documentation); `new_directory`
/// says the store was created by this open. Writes `<dir>/stamp_actor`
/// (atomically, fsynced) whenever it changes.
pub fn load_or_renew(
    dir: &Path,
    node: NodeId,
    boot_id: Option<&str>,
    new_directory: bool,
) -> Result<NodeId, QueryError> {
    let path = dir.join(FILE);
    let stored = match std::fs::read_to_string(&path) {
        Ok(text) => Some(parse(&text).ok_or_else(|| {
            QueryError::Server(format!(
                "{}: not a stamping id and boot id: {text:?}",
                path.display()
            ))
        })?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(QueryError::Server(format!("{}: {e}", path.display()))),
    };
    let actor = match (&stored, boot_id) {
        // First open of this directory: nothing was stamped here yet.
        (None, _) if new_directory => node,
        (Some((actor, stored_boot)), Some(boot)) if stored_boot == boot => return Ok(*actor),
        (stored, _) => {
            let old = stored.as_ref().map_or(node, |(actor, _)| *actor);
            let fresh = fresh_id(old, node);
            tracing::info!(
                old = format_args!("{:016x}", old.0),
                new = format_args!("{:016x}", fresh.0),
                "the OS restarted since this data directory was last opened \
                 (or its boot id or stamping id is unknown): stamping with a \
                 new id, so no write the commit log had not synced can have \
                 its dot reused"
            );
            fresh
        }
    };
    save(dir, actor, boot_id.unwrap_or("unknown"))
        .map_err(|e| QueryError::Server(format!("{}: {e}", path.display())))?;
    Ok(actor)
}

/// A random id other than the ones in use.
fn fresh_id(old: NodeId, node: NodeId) -> NodeId {
    loop {
        let id = NodeId(rand::random::<u64>());
        if id != old && id != node && id.0 != 0 {
            return id;
        }
    }
}

/// `actor <hex>` and `boot <id>` lines.
fn parse(text: &str) -> Option<(NodeId, String)> {
    let mut actor = None;
    let mut boot = None;
    for line in text.lines() {
        match line.split_once(' ') {
            Some(("actor", hex)) => actor = u64::from_str_radix(hex.trim(), 16).ok().map(NodeId),
            Some(("boot", id)) => boot = Some(id.trim().to_string()),
            _ => return None,
        }
    }
    Some((actor?, boot?))
}

fn save(dir: &Path, actor: NodeId, boot: &str) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = dir.join(format!("{FILE}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(format!("actor {:016x}\nboot {boot}\n", actor.0).as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(FILE))?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODE: NodeId = NodeId(0xabc);

    #[test]
    fn the_node_id_until_the_os_restarts_then_a_fresh_one_that_stays() {
        let dir = tempfile::tempdir().unwrap();
        let open = |boot| load_or_renew(dir.path(), NODE, Some(boot), false).unwrap();
        let first = load_or_renew(dir.path(), NODE, Some("boot-1"), true).unwrap();
        assert_eq!(first, NODE, "a new directory stamps with the node id");
        assert_eq!(open("boot-1"), NODE, "a process restart keeps the id");
        let renewed = open("boot-2");
        assert_ne!(renewed, NODE, "an OS restart takes a new id");
        assert_eq!(open("boot-2"), renewed, "the new id is stored");
        let renewed_again = open("boot-3");
        assert!(renewed_again != renewed && renewed_again != NODE);
    }

    #[test]
    fn a_used_directory_without_the_file_takes_a_fresh_id() {
        // Written by an older ringdb, or deleted after a restore.
        let dir = tempfile::tempdir().unwrap();
        let actor = load_or_renew(dir.path(), NODE, Some("boot-1"), false).unwrap();
        assert_ne!(actor, NODE);
        assert_eq!(
            load_or_renew(dir.path(), NODE, Some("boot-1"), false).unwrap(),
            actor
        );
    }

    #[test]
    fn an_unknown_boot_id_renews_on_every_open_but_the_first() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load_or_renew(dir.path(), NODE, None, true).unwrap(), NODE);
        let a = load_or_renew(dir.path(), NODE, None, false).unwrap();
        let b = load_or_renew(dir.path(), NODE, None, false).unwrap();
        assert!(a != NODE && b != NODE && a != b);
    }

    #[test]
    fn a_damaged_file_is_a_typed_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), "actor zz\nboot x\n").unwrap();
        let err = load_or_renew(dir.path(), NODE, Some("x"), false).unwrap_err();
        assert!(err.to_string().contains("stamp_actor"), "{err}");
        std::fs::write(dir.path().join(FILE), "garbage").unwrap();
        assert!(load_or_renew(dir.path(), NODE, Some("x"), false).is_err());
    }

    #[test]
    fn this_machine_has_a_boot_id() {
        // The servers run on Linux; without a boot id every open would
        // take a new id.
        let id = current_boot_id().expect("a boot id");
        assert_eq!(current_boot_id(), Some(id));
    }
}
