//! Checkpoints: the whole index written to `snap-<n>.snap` so that recovery replays only
//! the segments from `n` on (record layout in `journal.rs`).
//!
//! Steps, each durable before the next: the journal switches to a new segment `n` (created
//! and synced, directory synced); the index is written to `snap-<n>.tmp`, one shard at a
//! time under its read lock, while writes go on; the file is fsynced, renamed to
//! `snap-<n>.snap`, and the directory fsynced; only then are older segments and snapshots
//! deleted. A crash at any point leaves either the old snapshot and all its segments, or the
//! new snapshot (and maybe some stale files that the next open deletes).
//!
//! The snapshot is fuzzy: a shard written late may already contain events of segment `n`.
//! Replaying segment `n` on top is still exact, because each slot carries the LSN of the
//! last dispensation or scan applied to it (replay skips those at or below), creates of a
//! known ID are skipped, and cancel and consent are idempotent settings.

use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::index::Index;
use super::journal::{corrupt, frame, scan_records, sync_dir};
use super::model::{put_varint, Content, Dec, Dynamic, PERSISTENT_FLAGS};
use super::StoreError;

pub const SNAPSHOT_MAGIC: &[u8; 8] = b"ORDSNAP3";
const ENTRY: u8 = 0x10;
const TRAILER: u8 = 0x7F;

pub fn snapshot_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("snap-{n:016x}.snap"))
}

/// Writes the snapshot that starts segment `n`; durable when this returns Ok.
pub fn write(dir: &Path, n: u64, next_lsn: u64, index: &Index) -> std::io::Result<()> {
    let tmp = dir.join(format!("snap-{n:016x}.tmp"));
    let result = (|| {
        let file = OpenOptions::new().create(true).truncate(true).write(true).open(&tmp)?;
        let mut w = BufWriter::with_capacity(1 << 20, file);
        w.write_all(SNAPSHOT_MAGIC)?;
        let mut buf = Vec::with_capacity(4096);
        let mut count: u64 = 0;
        index.for_each(|slot| {
            buf.clear();
            frame(&mut buf, |out| {
                out.push(ENTRY);
                put_varint(out, slot.content.len() as u64);
                out.push(slot.content.first().copied().unwrap_or(0) & PERSISTENT_FLAGS);
                out.extend_from_slice(slot.content.get(1..).unwrap_or(&[]));
                match &slot.dynamic {
                    None => out.push(0),
                    Some(d) => {
                        out.push(1);
                        d.encode(out);
                    }
                }
            });
            count += 1;
            w.write_all(&buf)
        })?;
        buf.clear();
        frame(&mut buf, |out| {
            out.push(TRAILER);
            put_varint(out, count);
            put_varint(out, next_lsn);
        });
        w.write_all(&buf)?;
        let file = w.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        std::fs::rename(&tmp, snapshot_path(dir, n))?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Loads a snapshot into an empty index; returns the next LSN it records.
pub fn load(path: &Path, index: &Index) -> Result<u64, StoreError> {
    let buf = std::fs::read(path)
        .map_err(|e| StoreError::io(&format!("reading {}", path.display()), &e))?;
    let (records, _) = scan_records(&buf, SNAPSHOT_MAGIC, path, false)?;
    let mut count = 0u64;
    // The highest LSN an entry has seen. A scan is in memory (and so maybe in a snapshot)
    // before its record is written; if the process died before the write, that LSN is in
    // no journal, and the next LSNs handed out must still be above it, or replaying them
    // later would skip them as already applied.
    let mut seen = 0u64;
    for r in records {
        let at = r.start as u64;
        let bad = |why: &str| corrupt(path, at - 8, why);
        let mut d = Dec::new(&buf[r]);
        match d.u8().map_err(|e| bad(e.0))? {
            ENTRY => {
                let content: Box<[u8]> = d.bytes().map_err(|e| bad(e.0))?.into();
                let c = Content(&content);
                c.check().map_err(|e| bad(e.0))?;
                let dynamic = if d.bool().map_err(|e| bad(e.0))? {
                    let dy = Dynamic::decode(&mut d, c.line_count()).map_err(|e| bad(e.0))?;
                    seen = seen.max(dy.last_lsn).max(dy.access_lsn);
                    Some(Box::new(dy))
                } else {
                    None
                };
                if !d.done() {
                    return Err(bad("trailing bytes in snapshot entry"));
                }
                index.load(content, dynamic);
                count += 1;
            }
            TRAILER => {
                let n = d.varint().map_err(|e| bad(e.0))?;
                let next_lsn = d.varint().map_err(|e| bad(e.0))?;
                if n != count || !d.done() {
                    return Err(bad("snapshot trailer does not match its entries"));
                }
                return Ok(next_lsn.max(seen + 1));
            }
            _ => return Err(bad("unknown snapshot record")),
        }
    }
    Err(corrupt(path, buf.len() as u64, "snapshot has no trailer (incomplete file)"))
}

/// Removes a file if present (stale segments, snapshots, temporaries).
pub fn remove(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
