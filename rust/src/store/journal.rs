//! The journal: record framing, recovery of segments, and the group-commit writer thread.
//!
//! # Layout (the one description of the on-disk journal)
//!
//! ```text
//! <dir>/wal-<segment, 16 hex digits>.log   segments, numbered from 1, replayed in order
//! <dir>/snap-<segment>.snap                snapshot covering every segment below <segment>
//! <dir>/LOCK                               flock'ed by the process that has the store open
//!
//! segment  = "ORDJRNL3" batch* zeros         (journal 3, written by this version)
//!          | "ORDJRNL2" record*              (journal 2, read only: see "Format history")
//! batch    = len u32 LE | crc u32 LE | body (len bytes, len ≥ 9)
//!            crc = CRC32C("ORDJBAT3" ‖ len bytes ‖ body): the domain prefix makes a
//!            record frame never check out as a batch frame, and the reverse
//! body     = record+                         (the records of one group commit, exactly)
//! zeros    = 0x00*                           (pre-zeroed space, `Always` only, see below)
//! snapshot = "ORDSNAP3" record(entry)* record(trailer)
//! record   = len u32 LE | crc u32 LE | payload (len bytes, 1 ≤ len ≤ 16 MiB)
//!            crc = CRC32C(len bytes ‖ payload), so a torn or altered length is caught too
//! payload  = kind u8 | lsn varint | body            (journal events, model.rs `Event`)
//!            kind 1 create: content bytes (model.rs layout)
//!            kind 2 dispense: id 10 | at varint | key str | finess 9 | rpps 11 | n u8 |
//!                   n × (line u8, quantity varint, cip13 0|1+13, kind u8, motif opt str,
//!                        agreed_at 0|1+varint)      line: numbered from 0
//!            kind 3 cancel: id 10 | at varint      kind 4 consent: id 10 | allowed u8 | at
//!            kind 5 scan: id 10 | at varint | actor str        (str = varint len + UTF-8)
//! entry    = 0x10 | content (varint len + bytes) | 0|1 + dynamic
//! dynamic  = last dispense lsn varint | n varint | n × dispense body (from `at` on)
//!            | last scan lsn varint | n varint | n × (at varint | actor str)
//! trailer  = 0x7F | entry count varint | next lsn varint
//! ```
//! Format history (the magic's last character, per file kind; no release wrote an older
//! one, and an older file is refused by name, never misread): journal 1 and snapshot 1
//! numbered a prescription's lines from 1 in dispense records and snapshot entries;
//! journal 2 and snapshot 2 number them from 0, like the HTTP contract; snapshot 3 adds the
//! last scan LSN to `dynamic` (scans are applied before they are durable, see below);
//! journal 3 frames each group commit as one batch around its records (same records), so
//! that recovery can tell a torn batch from corruption in pre-zeroed files (below). A
//! journal 2 segment is still read and replayed as before, but never appended to: opening
//! a store whose last segment is journal 2 starts a journal 3 segment after it (a rotation
//! without snapshot; segments are replayed in order, whatever their format).
//!
//! LSNs increase by one per record across segments. Recovery of a journal 3 segment reads
//! every batch; every record inside a batch whose CRC checks out must check out too (else
//! that is corruption, reported at the record). At the first batch that does not check out
//! it looks for any valid *batch* starting further on (zero runs are skipped: no batch has
//! a zero length): if there is one, this is corruption in the middle and the open fails
//! with the file and offset; if not, it is a torn tail (the last batch, cut short by a
//! crash) and the logical end of the segment is there: nothing of the torn batch is
//! replayed, and the non-zero bytes after the end are overwritten with zeros (and synced)
//! before the writer goes on from the end. Valid *records* after the end do not count: a
//! batch of several pages, written but not yet synced when the power went, may persist
//! with an earlier page lost (zeros) and a later one kept, and its later records are
//! whole; they were never acknowledged, and the batch frame around them fails its CRC. A
//! journal 2 segment is read record by record with the same rule on records, and its torn
//! tail is cut off (truncated). Every segment but the last must be whole batches (or
//! records), without zeros: the writer truncates a segment to its end before it starts
//! the next one.
//!
//! # Commit window (`Always`)
//!
//! A group commit starts at least [`COMMIT_WINDOW`] after the previous one started (as
//! PostgreSQL's `commit_delay`, but only when commits come that close): records framed
//! meanwhile wait and share the next fdatasync. A write that finds the writer idle since
//! longer than that is taken at once, so a lone write pays nothing; under load a write
//! waits at most one window more than its fdatasync, and the batches (syncs, wake-ups) per
//! second are bounded by 1 / window. Closing or rotating cuts the wait short.
//!
//! # Pre-zeroed segments (`Always` only)
//!
//! Under `SyncPolicy::Always` a segment's file is longer than its batches: the writer keeps
//! [`ZERO_CHUNK`] bytes of zeros, written and synced, ahead of the write position, and
//! writes each batch at that position (`pwrite`). A group commit's fdatasync then never
//! changes the file size, so it does not write the inode (a second device round trip per
//! sync on a virtio disk; PostgreSQL pre-fills its WAL segments for the same reason). Real
//! zeros, not `fallocate`: unwritten extents would need converting, a metadata write, at
//! each sync. When fewer than [`ZERO_MARGIN`] zeroed bytes are left, the writer adds a
//! chunk (zeros, then fdatasync) after acknowledging its batch, so the batch that triggers
//! it does not wait; the next one may. A batch larger than the zeroed space is written past
//! it (the file grows), slower, never wrong; so is every batch once a zero-fill failed
//! (full disk) in that segment. A new segment is written as `wal-<n>.tmp` (header and its
//! first chunk of zeros, synced) and linked into place, so a crash never leaves a segment
//! whose header is not durable.
//!
//! This is safe because under `Always` batch k+1 is written only after batch k's fdatasync
//! returned: at most one batch is in flight, so a torn batch is always the last one, and
//! the zeros after it read as "no batch". Under `Delay(d)` several written, unsynced
//! batches may be in flight and persist out of order (a torn batch k+1, then a whole batch
//! k+2, would read as corruption in the middle), so `Delay` keeps the appending file: each
//! batch is written at the end and the file grows, as with journal 2. Opening a segment
//! under `Delay` truncates it to its end (pre-zeroed space from an earlier `Always` run
//! included).
//!
//! # Group commit
//!
//! Callers append their encoded record to a shared buffer under a mutex (which also hands
//! out LSNs, so buffer order is LSN order) and sleep. One writer thread takes the whole
//! buffer, frames it as one batch (header and CRC filled in, in place), does one `write`
//! and one `fdatasync`, applies the batch to the index, and wakes
//! every caller whose LSN is now durable. While it syncs, the next batch accumulates.
//! Policies: `Always` acknowledges after the fdatasync (a crash of the process or of the
//! machine loses nothing acknowledged). `Delay(d)` acknowledges after the `write` and syncs
//! at most `d` later: a killed process loses nothing (the bytes are in the page cache), a
//! power cut or kernel crash loses at most the last `d` of acknowledged writes.
//!
//! Scans are the exception to "acknowledged means durable", under both policies. A scan's
//! access-log entry is an audit trail the patient reads, not a dispensation, and a scan is
//! on the pharmacy counter's critical path, so `Journal::append` frames its record into the
//! same buffer (same LSN sequence, same group commit) and returns at once: the entry is in
//! the access log immediately, the record follows with the next batch. The price, exactly:
//! a crash of the process or of the machine may lose the access-log entries of scans
//! acknowledged in the last commit window (those still in the buffer or in the batch being
//! written and synced: under `Always` at most one [`COMMIT_WINDOW`] plus one fdatasync,
//! ~1-5 ms, and when a chunk of zeros is due, its zero-fill too (~5 ms per 4 MiB of
//! journal); under `Delay(d)` up
//! to `d` more for a machine crash). Never more: any write acknowledged after a scan has a
//! higher LSN, so once it is durable the scan is too. A scan is refused like every write
//! once the journal has failed or is closed (it never skips its log); if the journal fails
//! after a scan returned, that scan's entry may be missing after reopening, like the rest
//! of the failed batch.
//!
//! Any write or fsync error puts the journal in a failed state for good: no retry (after a
//! failed fsync the kernel may have dropped the dirty pages, see PostgreSQL's "fsyncgate"),
//! every later write is refused, reads go on; reopening replays what is really on disk.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::os::unix::io::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::index::Index;
use super::model::Event;
use super::StoreError;

/// The magic of the segments this version writes (batch frames).
pub const SEGMENT_MAGIC: &[u8; 8] = b"ORDJRNL3";
/// The magic of the segments of journal 2 (one frame per record), read only.
pub const SEGMENT_MAGIC_V2: &[u8; 8] = b"ORDJRNL2";
/// The domain prefix of a batch frame's CRC (see the layout).
pub const BATCH_DOMAIN: &[u8; 8] = b"ORDJBAT3";
pub const FRAME_HEADER: usize = 8;
pub const BATCH_HEADER: usize = 8;
pub const MAX_PAYLOAD: usize = 16 << 20;
/// The largest batch body the writer frames at once; a larger group commit (a huge
/// `commit_many`) is cut at record boundaries into several batches, each written and,
/// under `Always`, synced before the next (one batch in flight, see "Pre-zeroed segments").
/// Tests use a small one so that the cut is exercised.
#[cfg(not(test))]
pub const MAX_BATCH: usize = 1 << 30;
#[cfg(test)]
pub const MAX_BATCH: usize = 16 << 10;

/// Zeros kept written and synced ahead of the write position under `Always` (see
/// "Pre-zeroed segments"): 4 MiB costs ~5 ms (write and fdatasync) on this project's VM,
/// paid once per 4 MiB of journal, and an empty store's segment is that large. Tests use a
/// small chunk so that their many stores cross it often and cheaply.
#[cfg(not(test))]
pub const ZERO_CHUNK: u64 = 4 << 20;
#[cfg(test)]
pub const ZERO_CHUNK: u64 = 64 << 10;
/// The writer adds a chunk once fewer zeroed bytes than this are left ahead.
pub const ZERO_MARGIN: u64 = ZERO_CHUNK / 4;
/// Under `Always`, the least time between the starts of two group commits (see "Commit
/// window"). Measured at the national burst on this project's VM: pre-zeroed syncs take
/// ~1 ms, so the writer ran ~900 batches/s of 1.6 records each, and each batch costs the
/// machine a device round trip, two thread wake-ups and an event loop wake-up.
pub const COMMIT_WINDOW: Duration = Duration::from_millis(2);

/// Appends one record whose payload `write` produces.
pub fn frame(out: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0u8; FRAME_HEADER]);
    write(out);
    let len = (out.len() - start - FRAME_HEADER) as u32;
    let len_bytes = len.to_le_bytes();
    let crc = crc32c::crc32c_append(crc32c::crc32c(&len_bytes), &out[start + FRAME_HEADER..]);
    out[start..start + 4].copy_from_slice(&len_bytes);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// The payload range of a valid record at `off`, or None.
pub fn read_frame(buf: &[u8], off: usize) -> Option<std::ops::Range<usize>> {
    let h = buf.get(off..off.checked_add(FRAME_HEADER)?)?;
    let len_bytes: [u8; 4] = h[..4].try_into().ok()?;
    let len = u32::from_le_bytes(len_bytes) as usize;
    let crc = u32::from_le_bytes(h[4..8].try_into().ok()?);
    if len == 0 || len > MAX_PAYLOAD {
        return None;
    }
    let start = off + FRAME_HEADER;
    let payload = buf.get(start..start.checked_add(len)?)?;
    (crc32c::crc32c_append(crc32c::crc32c(&len_bytes), payload) == crc)
        .then_some(start..start + len)
}

fn batch_crc(len_bytes: &[u8; 4], body: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c_append(crc32c::crc32c(BATCH_DOMAIN), len_bytes), body)
}

/// Fills in the batch header of `batch` (its first [`BATCH_HEADER`] bytes, reserved; the
/// body after them, at most [`MAX_BATCH`] bytes).
pub fn seal_batch(batch: &mut [u8]) {
    let (header, body) = batch.split_at_mut(BATCH_HEADER);
    let len_bytes = (body.len() as u32).to_le_bytes();
    header[..4].copy_from_slice(&len_bytes);
    header[4..].copy_from_slice(&batch_crc(&len_bytes, body).to_le_bytes());
}

/// The body range of a valid batch frame at `off`, or None. Its records are not checked.
pub fn read_batch(buf: &[u8], off: usize) -> Option<std::ops::Range<usize>> {
    let h = buf.get(off..off.checked_add(BATCH_HEADER)?)?;
    let len_bytes: [u8; 4] = h[..4].try_into().ok()?;
    let len = u32::from_le_bytes(len_bytes) as usize;
    let crc = u32::from_le_bytes(h[4..8].try_into().ok()?);
    if len <= FRAME_HEADER {
        return None;
    }
    let start = off + BATCH_HEADER;
    let body = buf.get(start..start.checked_add(len)?)?;
    (batch_crc(&len_bytes, body) == crc).then_some(start..start + len)
}

/// Whether a frame that `valid` accepts starts anywhere after `off`. A record's or a
/// batch's length is not zero, so none starts where the four length bytes are all zero:
/// runs of zeros (a pre-zeroed tail, a lost page) are skipped to within three bytes of
/// their end, so a megabyte of zeros costs a scan for a non-zero byte, not a CRC per offset.
fn valid_frame_after(buf: &[u8], off: usize, valid: impl Fn(&[u8], usize) -> bool) -> bool {
    let end = buf.len().saturating_sub(FRAME_HEADER - 1);
    let mut p = off + 1;
    while p < end {
        if buf.get(p..p + 4) == Some(&[0u8; 4][..]) {
            match buf.get(p + 4..).and_then(|t| t.iter().position(|b| *b != 0)) {
                // The first non-zero byte at q: the first length that holds it starts at q-3.
                Some(k) => p = (p + 4 + k).saturating_sub(3).max(p + 1),
                None => return false,
            }
            continue;
        }
        if valid(buf, p) {
            return true;
        }
        p += 1;
    }
    false
}

/// Whether a valid record starts anywhere after `off`.
pub(crate) fn valid_record_after(buf: &[u8], off: usize) -> bool {
    valid_frame_after(buf, off, |b, p| read_frame(b, p).is_some())
}

/// Whether a valid batch frame starts anywhere after `off`.
pub(crate) fn valid_batch_after(buf: &[u8], off: usize) -> bool {
    valid_frame_after(buf, off, |b, p| read_batch(b, p).is_some())
}

/// Where the non-zero bytes of `buf` end, counting from `from` (`from` if none): the torn
/// part of a segment's tail, without the pre-zeroed space after it.
pub fn nonzero_end(buf: &[u8], from: usize) -> usize {
    buf.get(from..).and_then(|t| t.iter().rposition(|b| *b != 0)).map_or(from, |k| from + k + 1)
}

/// Writes zeros over `from..to` (not synced).
pub fn write_zeros(file: &File, from: u64, to: u64) -> std::io::Result<()> {
    static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
    let mut at = from;
    while at < to {
        let n = (to - at).min(ZEROS.len() as u64) as usize;
        file.write_all_at(&ZEROS[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

/// Where the zeroed space should end for a writer at `pos` whose zeros end at `zeroed`:
/// `zeroed` while at least [`ZERO_MARGIN`] bytes are left, else one chunk further.
pub fn zero_target(pos: u64, zeroed: u64) -> u64 {
    if zeroed >= pos + ZERO_MARGIN {
        zeroed
    } else {
        zeroed.max(pos) + ZERO_CHUNK
    }
}

/// Checks a file's magic. Ok(true): the file is a prefix of `magic` and `tail` allows it
/// (a header cut short: an empty file); Ok(false): the magic is there.
fn check_magic(
    buf: &[u8],
    magic: &[u8; 8],
    reads: &str,
    path: &Path,
    tail: bool,
) -> Result<bool, StoreError> {
    if buf.len() >= magic.len() && &buf[..magic.len()] == magic {
        return Ok(false);
    }
    if tail && buf.len() < magic.len() && magic.starts_with(buf) {
        return Ok(true);
    }
    if let Some(found) = buf.get(..magic.len()).filter(|h| h[..7] == magic[..7]) {
        return Err(StoreError::Failed {
            errno: None,
            message: format!(
                "{} is in format {}, this version reads {reads} only (the formats are listed \
                 in journal.rs; no release wrote the older one: reload the data)",
                path.display(),
                String::from_utf8_lossy(found),
            ),
        });
    }
    Err(corrupt(path, 0, "bad file header"))
}

/// The records of one file of records (a snapshot, a journal 2 segment): payload ranges
/// and where the valid prefix ends. `tail` allows a torn end (the last segment); elsewhere
/// any bad record is corruption.
pub fn scan_records(
    buf: &[u8],
    magic: &[u8; 8],
    path: &Path,
    tail: bool,
) -> Result<(Vec<std::ops::Range<usize>>, usize), StoreError> {
    if check_magic(buf, magic, &String::from_utf8_lossy(magic), path, tail)? {
        return Ok((Vec::new(), 0));
    }
    let mut off = magic.len();
    let mut out = Vec::new();
    while off < buf.len() {
        match read_frame(buf, off) {
            Some(r) => {
                off = r.end;
                out.push(r);
            }
            None => {
                if !tail || valid_record_after(buf, off) {
                    return Err(corrupt(
                        path,
                        off as u64,
                        "record fails its length or CRC32C check",
                    ));
                }
                return Ok((out, off));
            }
        }
    }
    Ok((out, off))
}

/// What recovery found in a segment.
#[derive(Debug, PartialEq, Eq)]
pub struct Scanned {
    /// Journal 2 (records, never appended to) rather than 3 (batches).
    pub v2: bool,
    /// The payload ranges of its records, in order.
    pub records: Vec<std::ops::Range<usize>>,
    /// The logical end: after the last whole record (journal 2) or batch (journal 3); 0 for
    /// a header cut short (a tail only).
    pub end: usize,
}

/// Reads a segment of either format (see the layout and the recovery rules). `tail`: the
/// last segment, which may end with a torn write and (journal 3) zeros.
pub fn scan_segment(buf: &[u8], path: &Path, tail: bool) -> Result<Scanned, StoreError> {
    if buf.starts_with(SEGMENT_MAGIC_V2) {
        let (records, end) = scan_records(buf, SEGMENT_MAGIC_V2, path, tail)?;
        return Ok(Scanned { v2: true, records, end });
    }
    let reads = "ORDJRNL2 and ORDJRNL3";
    if check_magic(buf, SEGMENT_MAGIC, reads, path, tail)? {
        return Ok(Scanned { v2: false, records: Vec::new(), end: 0 });
    }
    let mut off = SEGMENT_MAGIC.len();
    let mut records = Vec::new();
    while off < buf.len() {
        let Some(body) = read_batch(buf, off) else {
            if !tail || valid_batch_after(buf, off) {
                return Err(corrupt(path, off as u64, "batch fails its length or CRC32C check"));
            }
            break;
        };
        let within = &buf[..body.end];
        let mut p = body.start;
        while p < body.end {
            let Some(r) = read_frame(within, p) else {
                return Err(corrupt(
                    path,
                    p as u64,
                    "record inside a checked batch fails its length or CRC32C check",
                ));
            };
            p = r.end;
            records.push(r);
        }
        off = body.end;
    }
    Ok(Scanned { v2: false, records, end: off })
}

pub fn corrupt(path: &Path, offset: u64, reason: &str) -> StoreError {
    StoreError::Corrupt { file: path.to_path_buf(), offset, reason: reason.to_owned() }
}

pub fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("wal-{n:016x}.log"))
}

pub fn segment_tmp_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("wal-{n:016x}.tmp"))
}

pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates journal 3 segment `n` durably: header (and, with `zeros`, one chunk of zeros)
/// written and synced under a temporary name, linked into place, directory synced. Returns
/// the file and where its zeros end (the header's end without).
pub fn create_segment(dir: &Path, n: u64, zeros: bool) -> std::io::Result<(File, u64)> {
    let tmp = segment_tmp_path(dir, n);
    let result = (|| {
        let f = OpenOptions::new().create(true).truncate(true).write(true).open(&tmp)?;
        f.write_all_at(SEGMENT_MAGIC, 0)?;
        let header = SEGMENT_MAGIC.len() as u64;
        let mut zeroed = header;
        if zeros {
            if write_zeros(&f, header, header + ZERO_CHUNK).is_ok() {
                zeroed = header + ZERO_CHUNK;
            } else {
                // A full disk: a segment without zeros ahead works too (the file grows).
                f.set_len(header)?;
            }
        }
        f.sync_data()?;
        // A link, unlike a rename, refuses to replace an existing segment.
        std::fs::hard_link(&tmp, segment_path(dir, n))?;
        std::fs::remove_file(&tmp)?;
        sync_dir(dir)?;
        Ok((f, zeroed))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPolicy {
    Always,
    Delay(Duration),
}

#[derive(Debug, Default, Clone, Copy)]
pub struct JournalStats {
    pub fsyncs: u64,
    pub batches: u64,
    pub records: u64,
    pub segment: u64,
    pub segment_bytes: u64,
}

struct State {
    /// The next batch: [`BATCH_HEADER`] reserved bytes (the writer fills them in), then
    /// the records framed since the writer took the last one.
    buf: Vec<u8>,
    /// Records framed in `buf` (events plus appended scans).
    buf_records: u64,
    /// Events the writer applies to the index once they are durable (not the scans, which
    /// their caller applied at once).
    events: Vec<(u64, Event)>,
    next_lsn: u64,
    failed: Option<StoreError>,
    closed: bool,
    rotate_req: bool,
    rotated: Option<Result<(u64, u64), StoreError>>,
    stats: JournalStats,
    /// Tests only: the writer leaves the buffer alone while this is set.
    #[cfg(test)]
    stalled: bool,
    /// Tests only: the writer waits for work (its zero-filling done).
    #[cfg(test)]
    idle: bool,
}

impl State {
    /// Whether records wait in `buf`.
    fn pending(&self) -> bool {
        self.buf.len() > BATCH_HEADER
    }
    #[cfg(test)]
    fn stalled(&self) -> bool {
        self.stalled
    }
    #[cfg(not(test))]
    fn stalled(&self) -> bool {
        false
    }
}

struct Shared {
    state: Mutex<State>,
    work: Condvar,
    done: Condvar,
    /// The writer's end of the wake-up socket pair (see [`Journal::wake_fd`]).
    wake: UnixStream,
    /// Whether anyone listens on the other end: no syscall per batch otherwise.
    wake_wanted: AtomicBool,
    /// The highest LSN durable and applied. Stored by the writer with the state lock held
    /// (so `done` waiters see it), read without it: an event loop reads it after every
    /// durable write it queues and every wake-up, and must not wait for the writer thread
    /// (on the same core, that is a context switch) to let go of the state lock.
    durable: AtomicU64,
}

impl Shared {
    /// One byte to whoever waits on [`Journal::wake_fd`], after `durable` or `failed`
    /// changed. Non-blocking: a full socket already means "look again", so it is dropped.
    fn wake(&self) {
        if self.wake_wanted.load(Ordering::Acquire) {
            let _ = (&self.wake).write(&[1]);
        }
    }
}

pub struct Journal {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// The reading end of the wake-up socket pair, lent out by [`Journal::wake_fd`].
    wake_rx: UnixStream,
}

fn io_failed(what: &str, path: &Path, e: &std::io::Error) -> StoreError {
    StoreError::Failed {
        errno: e.raw_os_error(),
        message: format!(
            "journal {what} failed on {}: {e}; the store refuses writes until it is reopened",
            path.display()
        ),
    }
}

impl Journal {
    /// Starts the writer on an open journal 3 segment whose batches end at `segment_bytes`,
    /// zeroed (written and synced) from there to `zeroed` (under `Always` only).
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        dir: PathBuf,
        file: File,
        segment: u64,
        segment_bytes: u64,
        zeroed: u64,
        next_lsn: u64,
        sync: SyncPolicy,
        index: Arc<Index>,
    ) -> std::io::Result<Journal> {
        let (wake_rx, wake) = UnixStream::pair()?;
        wake_rx.set_nonblocking(true)?;
        wake.set_nonblocking(true)?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                buf: empty_batch(Vec::with_capacity(1 << 16)),
                buf_records: 0,
                events: Vec::new(),
                next_lsn,
                failed: None,
                closed: false,
                rotate_req: false,
                rotated: None,
                stats: JournalStats { segment, segment_bytes, ..JournalStats::default() },
                #[cfg(test)]
                stalled: false,
                #[cfg(test)]
                idle: false,
            }),
            work: Condvar::new(),
            done: Condvar::new(),
            wake,
            wake_wanted: AtomicBool::new(false),
            durable: AtomicU64::new(next_lsn - 1),
        });
        let s = shared.clone();
        let writer = Writer {
            shared: s,
            dir,
            file,
            segment,
            pos: segment_bytes,
            zeroed: zeroed.max(segment_bytes),
            zeroing: sync == SyncPolicy::Always,
            sync,
            index,
        };
        let handle = std::thread::Builder::new()
            .name("ordonum-journal".into())
            .spawn(move || writer.run())?;
        Ok(Journal { shared, thread: Mutex::new(Some(handle)), wake_rx })
    }

    fn refuse(st: &State) -> Result<(), StoreError> {
        if let Some(e) = &st.failed {
            return Err(e.clone());
        }
        if st.closed {
            return Err(StoreError::closed());
        }
        Ok(())
    }

    pub fn check(&self) -> Result<(), StoreError> {
        Journal::refuse(&self.shared.state.lock())
    }

    /// Appends an event and returns once it is durable (per the policy) and applied.
    pub fn commit(&self, ev: Event) -> Result<(), StoreError> {
        let lsn = self.submit(ev)?;
        self.wait(lsn)
    }

    /// Blocks until `lsn` is durable (per the policy) and applied, or the journal failed.
    pub fn wait(&self, lsn: u64) -> Result<(), StoreError> {
        let mut g = self.shared.state.lock();
        if lsn >= g.next_lsn {
            return Err(StoreError::Invalid {
                field: "lsn".into(),
                message: format!("{lsn} was never issued (the next LSN is {})", g.next_lsn),
            });
        }
        while self.shared.durable.load(Ordering::Acquire) < lsn {
            if let Some(e) = &g.failed {
                return Err(e.clone());
            }
            self.shared.done.wait(&mut g);
        }
        Ok(())
    }

    /// Queues an event and returns its LSN without waiting: the event is durable (per the
    /// policy) and applied once [`Journal::durable`] reaches that LSN, and the writer says so
    /// on [`Journal::wake_fd`]. For callers that wait elsewhere (an event loop), not in a
    /// thread. The caller marked the prescription BUSY, as for [`Journal::commit`].
    pub fn submit(&self, ev: Event) -> Result<u64, StoreError> {
        let mut g = self.shared.state.lock();
        let lsn = self.frame_next(&mut g, &ev)?;
        g.events.push((lsn, ev));
        Ok(lsn)
    }

    /// The highest LSN durable (per the policy) and applied, also after a failure (what was
    /// durable before it stays so). A closed journal has made everything durable.
    pub fn durable(&self) -> u64 {
        // Stored (Release) after the batch was applied to the index, so whoever reads this
        // value also sees the batch applied.
        self.shared.durable.load(Ordering::Acquire)
    }

    /// A file descriptor that becomes readable each time [`Journal::durable`] may have
    /// changed (a batch made durable, or the journal failed): the reader drains it, then asks
    /// `durable()`. Owned by the journal, valid until the store is dropped; non-blocking.
    /// From the first call on, the writer spends one `write` per batch on it.
    pub fn wake_fd(&self) -> RawFd {
        self.shared.wake_wanted.store(true, Ordering::Release);
        self.wake_rx.as_raw_fd()
    }

    /// Appends a batch of events in one go (consecutive LSNs) and returns once the last one
    /// is durable (per the policy) and applied. The batch is framed into the buffer under one
    /// lock, so the writer takes it whole or with later records, never cut: a bulk load costs
    /// one `write` (and one fdatasync) per batch, not per record.
    pub fn commit_many(&self, events: Vec<Event>) -> Result<(), StoreError> {
        if events.is_empty() {
            return Journal::refuse(&self.shared.state.lock());
        }
        let mut g = self.shared.state.lock();
        Journal::refuse(&g)?;
        let mut lsn = g.next_lsn;
        g.next_lsn += events.len() as u64;
        g.buf_records += events.len() as u64;
        let was_empty = !g.pending();
        for ev in events {
            frame(&mut g.buf, |out| ev.encode(lsn, out));
            g.events.push((lsn, ev));
            lsn += 1;
        }
        if was_empty {
            self.shared.work.notify_one(); // see frame_next
        }
        drop(g);
        self.wait(lsn - 1)
    }

    /// Appends the record of an event that the caller applies to the index itself (a scan's
    /// access-log entry) and returns its LSN at once: it waits neither for the `write` nor
    /// for the fdatasync. The writer takes the record with its next batch, so it is written
    /// within one commit window (at most [`COMMIT_WINDOW`] plus the batch being written or
    /// synced at the time: ~1-5 ms, plus a zero-fill when one is due) and synced with that
    /// batch. Refused, like every
    /// write, once the journal has failed or is closed. Called with the prescription's shard
    /// lock held (lock order: shard, then journal; the writer never holds both).
    pub fn append(&self, ev: &Event) -> Result<u64, StoreError> {
        self.frame_next(&mut self.shared.state.lock(), ev)
    }

    /// Frames `ev` into the buffer under the next LSN and wakes the writer (refused once
    /// failed or closed); the caller holds the state lock.
    fn frame_next(&self, g: &mut State, ev: &Event) -> Result<u64, StoreError> {
        Journal::refuse(g)?;
        let lsn = g.next_lsn;
        g.next_lsn += 1;
        let was_empty = !g.pending();
        frame(&mut g.buf, |out| ev.encode(lsn, out));
        g.buf_records += 1;
        if was_empty {
            // Only the first record of a batch wakes the writer: it waits for work only when
            // nothing is pending, and sleeps out its commit window when something is (a
            // wake-up per record there would wake it only to sleep again).
            self.shared.work.notify_one();
        }
        Ok(lsn)
    }

    /// Tests only: stops (true) or resumes (false) the writer thread's work.
    #[cfg(test)]
    pub fn stall(&self, on: bool) {
        let mut g = self.shared.state.lock();
        g.stalled = on;
        self.shared.work.notify_one();
    }

    /// Tests only: waits until the writer has nothing left to do (batches written, zeros
    /// filled) and waits for work.
    #[cfg(test)]
    pub fn quiesce(&self) {
        let mut g = self.shared.state.lock();
        while (g.pending() || !g.idle) && g.failed.is_none() && !g.closed {
            self.shared.done.wait(&mut g);
        }
    }

    /// Switches to a new segment after everything committed so far; returns the new
    /// segment number and the next LSN (everything below is in older segments and applied).
    pub fn rotate(&self) -> Result<(u64, u64), StoreError> {
        let mut g = self.shared.state.lock();
        Journal::refuse(&g)?;
        g.rotate_req = true;
        g.rotated = None;
        self.shared.work.notify_one();
        loop {
            if let Some(r) = g.rotated.take() {
                return r;
            }
            if let Some(e) = &g.failed {
                return Err(e.clone());
            }
            self.shared.done.wait(&mut g);
        }
    }

    pub fn stats(&self) -> (JournalStats, bool, u64) {
        let g = self.shared.state.lock();
        (g.stats, g.failed.is_some(), g.next_lsn)
    }

    /// Drains pending writes, syncs, and stops the writer. Idempotent.
    pub fn close(&self) -> Result<(), StoreError> {
        {
            let mut g = self.shared.state.lock();
            g.closed = true;
            self.shared.work.notify_one();
        }
        if let Some(h) = self.thread.lock().take() {
            let _ = h.join();
        }
        match &self.shared.state.lock().failed {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

/// `v` emptied, with the reserved batch header.
fn empty_batch(mut v: Vec<u8>) -> Vec<u8> {
    v.clear();
    v.extend_from_slice(&[0u8; BATCH_HEADER]);
    v
}

/// The length of the group commit's prefix, from `at` in `body` (records), that ends at the
/// last record boundary within [`MAX_BATCH`] bytes (always at least one record).
fn batch_cut(body: &[u8], at: usize) -> usize {
    let mut end = at;
    while end < body.len() {
        let len = body
            .get(end..end + 4)
            .and_then(|b| b.try_into().ok())
            .map_or(body.len() - end, |b: [u8; 4]| u32::from_le_bytes(b) as usize + FRAME_HEADER);
        if end > at && end - at + len > MAX_BATCH {
            break;
        }
        end = (end + len).min(body.len());
    }
    end - at
}

struct Writer {
    shared: Arc<Shared>,
    dir: PathBuf,
    file: File,
    segment: u64,
    /// Where the next batch is written: the segment's logical end.
    pos: u64,
    /// The file holds synced zeros from `pos` to here (`pos` or less: none).
    zeroed: u64,
    /// Whether the writer keeps zeros ahead (`Always`, until a zero-fill failed: a full
    /// disk, then batches are written past the zeros, growing the file).
    zeroing: bool,
    sync: SyncPolicy,
    index: Arc<Index>,
}

impl Writer {
    fn fail(&self, e: StoreError) {
        let mut g = self.shared.state.lock();
        if g.rotate_req {
            g.rotated = Some(Err(e.clone()));
            g.rotate_req = false;
        }
        g.failed = Some(e);
        self.shared.done.notify_all();
        drop(g);
        self.shared.wake();
    }

    /// Writes the group commit in `bytes` (reserved header, then records) at `pos` as one
    /// batch frame, sealed in place; one larger than [`MAX_BATCH`] is cut into several,
    /// each synced before the next under `Always`. Returns the bytes written and the
    /// fdatasyncs done, or what failed.
    fn write_batches(
        &mut self,
        bytes: &mut [u8],
    ) -> Result<(u64, u64), (&'static str, std::io::Error)> {
        if bytes.len() - BATCH_HEADER <= MAX_BATCH {
            seal_batch(bytes);
            self.file.write_all_at(bytes, self.pos).map_err(|e| ("write", e))?;
            self.pos += bytes.len() as u64;
            return Ok((bytes.len() as u64, 0));
        }
        let body = &bytes[BATCH_HEADER..];
        let (mut at, mut written, mut syncs) = (0, 0, 0);
        let mut piece = Vec::new();
        while at < body.len() {
            let n = batch_cut(body, at);
            piece = empty_batch(piece);
            piece.extend_from_slice(&body[at..at + n]);
            seal_batch(&mut piece);
            if at > 0 && self.sync == SyncPolicy::Always {
                self.file.sync_data().map_err(|e| ("fdatasync", e))?;
                syncs += 1;
            }
            self.file.write_all_at(&piece, self.pos).map_err(|e| ("write", e))?;
            self.pos += piece.len() as u64;
            written += piece.len() as u64;
            at += n;
        }
        Ok((written, syncs))
    }

    fn run(mut self) {
        let mut bytes: Vec<u8> = empty_batch(Vec::with_capacity(1 << 16));
        let mut unsynced_since: Option<Instant> = None;
        let mut last_taken: Option<Instant> = None; // when the last batch with records was taken
        loop {
            let (events, records, last, rotate, closing) = {
                let mut g = self.shared.state.lock();
                loop {
                    if (g.pending() || g.rotate_req || g.closed) && !g.stalled() {
                        match last_taken.map(|t| t + COMMIT_WINDOW) {
                            Some(due)
                                if self.sync == SyncPolicy::Always
                                    && !g.rotate_req
                                    && !g.closed
                                    && Instant::now() < due =>
                            {
                                // Too soon after the last commit: let more records join.
                                self.shared.work.wait_until(&mut g, due);
                                continue;
                            }
                            _ => break,
                        }
                    }
                    #[cfg(test)]
                    {
                        g.idle = true;
                        self.shared.done.notify_all();
                    }
                    match (self.sync, unsynced_since) {
                        (SyncPolicy::Delay(d), Some(t)) => {
                            let deadline = t + d;
                            if Instant::now() >= deadline {
                                break;
                            }
                            self.shared.work.wait_until(&mut g, deadline);
                        }
                        _ => self.shared.work.wait(&mut g),
                    }
                }
                #[cfg(test)]
                {
                    g.idle = false;
                }
                bytes = empty_batch(std::mem::take(&mut bytes));
                std::mem::swap(&mut g.buf, &mut bytes);
                if bytes.len() > BATCH_HEADER {
                    last_taken = Some(Instant::now());
                }
                // Every LSN handed out so far was framed into the buffer under this lock, so
                // the bytes just taken end with record next_lsn - 1.
                let last = g.next_lsn - 1;
                let records = std::mem::take(&mut g.buf_records);
                (std::mem::take(&mut g.events), records, last, g.rotate_req, g.closed)
            };
            let path = segment_path(&self.dir, self.segment);
            let has_records = bytes.len() > BATCH_HEADER;
            let (mut written, mut syncs) = (0, 0);
            if has_records {
                match self.write_batches(&mut bytes) {
                    Ok(w) => (written, syncs) = w,
                    Err((what, e)) => return self.fail(io_failed(what, &path, &e)),
                }
                unsynced_since.get_or_insert_with(Instant::now);
            }
            let sync_now = match (self.sync, unsynced_since) {
                (_, None) => false,
                (SyncPolicy::Always, Some(_)) => true,
                (SyncPolicy::Delay(d), Some(t)) => rotate || closing || t.elapsed() >= d,
            };
            if sync_now {
                if let Err(e) = self.file.sync_data() {
                    return self.fail(io_failed("fdatasync", &path, &e));
                }
                unsynced_since = None;
                syncs += 1;
            }
            for (lsn, ev) in &events {
                // Live events were checked before they were queued: this cannot fail.
                let _ = self.index.apply(*lsn, ev);
            }
            {
                let mut g = self.shared.state.lock();
                if has_records {
                    self.shared.durable.store(last, Ordering::Release);
                    g.stats.batches += 1;
                    g.stats.records += records;
                    g.stats.segment_bytes += written;
                }
                g.stats.fsyncs += syncs;
                self.shared.done.notify_all();
            }
            if has_records {
                self.shared.wake();
            }
            // The batch is acknowledged: now is the time to zero more space if it runs low
            // (the batches queued meanwhile wait for it, ~5 ms per 4 MiB chunk here). A full
            // disk (or a file size limit) stops the zero-filling of this segment, not the
            // journal: batches are then written past the zeros, growing the file, and fail
            // only when they themselves cannot be written.
            let target = zero_target(self.pos, self.zeroed);
            if self.zeroing && target > self.zeroed && !rotate && !closing {
                if write_zeros(&self.file, self.zeroed.max(self.pos), target).is_err() {
                    self.zeroing = false;
                }
                // Synced even after a failed write: some zeros may be in the page cache, and
                // the next batch's sync must not pay for them (nor change the size).
                if let Err(e) = self.file.sync_data() {
                    return self.fail(io_failed("fdatasync", &path, &e));
                }
                if self.zeroing {
                    self.zeroed = target;
                }
                self.shared.state.lock().stats.fsyncs += 1;
            }
            if rotate {
                // The segment ends here: its zeros go, since recovery reads every segment but
                // the last as whole batches. Everything in it is synced already; `sync_all`,
                // not `sync_data`: the new size must be durable before the next segment is.
                if let Err(e) = self.file.set_len(self.pos).and_then(|()| self.file.sync_all()) {
                    return self.fail(io_failed("truncation", &path, &e));
                }
                let next = self.segment + 1;
                match create_segment(&self.dir, next, self.sync == SyncPolicy::Always) {
                    Ok((f, zeroed)) => {
                        self.file = f;
                        self.segment = next;
                        self.pos = SEGMENT_MAGIC.len() as u64;
                        self.zeroed = zeroed;
                        self.zeroing = self.sync == SyncPolicy::Always;
                        let mut g = self.shared.state.lock();
                        g.rotate_req = false;
                        g.rotated =
                            Some(Ok((next, self.shared.durable.load(Ordering::Acquire) + 1)));
                        g.stats.segment = next;
                        g.stats.segment_bytes = SEGMENT_MAGIC.len() as u64;
                        g.stats.fsyncs += 3;
                        self.shared.done.notify_all();
                    }
                    Err(e) => {
                        return self.fail(io_failed(
                            "segment creation",
                            &segment_path(&self.dir, next),
                            &e,
                        ));
                    }
                }
            }
            if closing {
                let g = self.shared.state.lock();
                if !g.pending() && unsynced_since.is_none() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A journal 3 segment of these batches (each a list of record payloads).
    fn segment(batches: &[Vec<Vec<u8>>]) -> Vec<u8> {
        let mut buf = SEGMENT_MAGIC.to_vec();
        for b in batches {
            let start = buf.len();
            buf.extend_from_slice(&[0; BATCH_HEADER]);
            for p in b {
                frame(&mut buf, |o| o.extend_from_slice(p));
            }
            seal_batch(&mut buf[start..]);
        }
        buf
    }

    fn payloads() -> impl Strategy<Value = Vec<Vec<u8>>> {
        proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..300), 1..6)
    }

    #[test]
    fn a_record_of_the_largest_length_after_zeros_is_found() {
        // Its length, 16 MiB, is 00 00 00 01: the only non-zero length byte is the last.
        let mut buf = vec![0u8; 100];
        frame(&mut buf, |o| o.resize(o.len() + MAX_PAYLOAD, 7));
        assert!(valid_record_after(&buf, 0));
        assert!(valid_record_after(&buf, 99));
        assert!(!valid_record_after(&buf, 100));
        assert!(!valid_record_after(&buf[..buf.len() - 1], 0));
    }

    proptest! {
        #[test]
        fn frames_round_trip(payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..300), 0..20)) {
            let mut buf = SEGMENT_MAGIC_V2.to_vec();
            for p in &payloads {
                frame(&mut buf, |o| o.extend_from_slice(p));
            }
            let (recs, end) = scan_records(&buf, SEGMENT_MAGIC_V2, Path::new("x"), true).unwrap();
            prop_assert_eq!(end, buf.len());
            let got: Vec<&[u8]> = recs.iter().map(|r| &buf[r.clone()]).collect();
            let want: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
            prop_assert_eq!(got, want);
            let s = scan_segment(&buf, Path::new("x"), true).unwrap();
            prop_assert_eq!((s.v2, s.records, s.end), (true, recs, end));
        }

        #[test]
        fn batches_round_trip_with_or_without_zeros_after(batches in proptest::collection::vec(payloads(), 0..8), zeros in 0usize..3000) {
            let mut buf = segment(&batches);
            let end = buf.len();
            buf.resize(end + zeros, 0);
            let s = scan_segment(&buf, Path::new("x"), true).unwrap();
            prop_assert_eq!((s.v2, s.end), (false, end));
            let got: Vec<&[u8]> = s.records.iter().map(|r| &buf[r.clone()]).collect();
            let want: Vec<&[u8]> = batches.iter().flatten().map(Vec::as_slice).collect();
            prop_assert_eq!(got, want);
            // In a middle segment, zeros after the batches are corruption.
            prop_assert_eq!(scan_segment(&buf, Path::new("x"), false).is_ok(), zeros == 0);
        }

        #[test]
        fn a_record_frame_never_checks_out_as_a_batch_frame(payload in proptest::collection::vec(any::<u8>(), 9..300)) {
            // Without the domain prefix it would: same length field, same CRC input.
            let mut buf = Vec::new();
            frame(&mut buf, |o| o.extend_from_slice(&payload));
            prop_assert!(read_frame(&buf, 0).is_some());
            prop_assert!(read_batch(&buf, 0).is_none());
            // And a batch frame is no record frame.
            let seg = segment(&[vec![payload]]);
            prop_assert!(read_batch(&seg, SEGMENT_MAGIC.len()).is_some());
            prop_assert!(read_frame(&seg, SEGMENT_MAGIC.len()).is_none());
        }

        #[test]
        fn any_single_bit_flip_is_detected(payload in proptest::collection::vec(any::<u8>(), 1..200), bit in any::<proptest::sample::Index>()) {
            let mut buf = Vec::new();
            frame(&mut buf, |o| o.extend_from_slice(&payload));
            let i = bit.index(buf.len() * 8);
            buf[i / 8] ^= 1 << (i % 8);
            prop_assert!(read_frame(&buf, 0).is_none());
            let mut seg = segment(&[vec![payload.clone(), payload]]);
            let i = SEGMENT_MAGIC.len() * 8 + bit.index((seg.len() - SEGMENT_MAGIC.len()) * 8);
            seg[i / 8] ^= 1 << (i % 8);
            prop_assert!(read_batch(&seg, SEGMENT_MAGIC.len()).is_none());
        }

        #[test]
        fn a_cut_batch_is_a_torn_tail_a_cut_batch_before_a_whole_one_is_corruption(
            batches in proptest::collection::vec(payloads(), 2..6), at in any::<proptest::sample::Index>(), k in any::<proptest::sample::Index>(),
        ) {
            let seg = segment(&batches);
            let ends: Vec<usize> = (0..=batches.len()).map(|n| segment(&batches[..n]).len()).collect();
            // Batch k loses a byte range (zeros, as a lost page of the pre-zeroed space).
            let k = k.index(batches.len());
            let (from, to) = (ends[k], ends[k + 1]);
            let hole = from + at.index(to - from);
            let mut img = seg.clone();
            img[hole..(hole + 4096).min(to)].fill(0);
            // A hole over bytes that were zeros already loses nothing.
            prop_assume!(img != seg);
            let last = k + 1 == batches.len();
            match scan_segment(&img, Path::new("x"), true) {
                Ok(s) => {
                    prop_assert!(last);
                    prop_assert_eq!(s.end, from);
                    let want = batches[..k].iter().map(Vec::len).sum::<usize>();
                    prop_assert_eq!(s.records.len(), want);
                }
                Err(e) => {
                    prop_assert!(!last);
                    prop_assert_eq!(e, corrupt(Path::new("x"), from as u64, "batch fails its length or CRC32C check"));
                }
            }
        }

        #[test]
        fn valid_frame_after_skips_zero_runs_and_nothing_else(
            parts in proptest::collection::vec((0u8..5, 1usize..300, any::<u8>()), 0..12),
            off in 0usize..2000,
        ) {
            // Zero runs, filler bytes, whole records and whole batches, in any order.
            let mut buf = Vec::new();
            for (kind, n, b) in parts {
                match kind {
                    0 => buf.resize(buf.len() + n * 50, 0),
                    1 => buf.resize(buf.len() + n, b | 1),
                    2 => frame(&mut buf, |o| o.extend(std::iter::repeat_n(b, n))),
                    3 => buf.extend_from_slice(&segment(&[vec![vec![b; n]]])[SEGMENT_MAGIC.len()..]),
                    // Lengths whose first byte is zero: a skip must not jump past them.
                    _ => frame(&mut buf, |o| o.extend(std::iter::repeat_n(b, 256 * (n % 3 + 1)))),
                }
            }
            // The definition: try every offset.
            let naive = |f: fn(&[u8], usize) -> Option<std::ops::Range<usize>>| {
                (off + 1..buf.len().saturating_sub(FRAME_HEADER - 1)).any(|p| f(&buf, p).is_some())
            };
            prop_assert_eq!(valid_record_after(&buf, off), naive(read_frame));
            prop_assert_eq!(valid_batch_after(&buf, off), naive(read_batch));
        }
    }
}
