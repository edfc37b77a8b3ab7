//! The journal: record framing, recovery of segments, and the group-commit writer thread.
//!
//! # Layout (the one description of the on-disk journal)
//!
//! ```text
//! <dir>/wal-<segment, 16 hex digits>.log   segments, numbered from 1, replayed in order
//! <dir>/snap-<segment>.snap                snapshot covering every segment below <segment>
//! <dir>/LOCK                               flock'ed by the process that has the store open
//!
//! segment  = "ORDJRNL2" record*
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
//! last scan LSN to `dynamic` (scans are applied before they are durable, see below).
//!
//! LSNs increase by one per record across segments. Recovery reads every record; at the
//! first record that does not check out it looks for any valid record further on: if there
//! is one, this is corruption in the middle and the open fails with the file and offset;
//! if not, it is a torn tail (a write cut short by a crash) and the file is truncated there.
//!
//! # Group commit
//!
//! Callers append their encoded record to a shared buffer under a mutex (which also hands
//! out LSNs, so buffer order is LSN order) and sleep. One writer thread takes the whole
//! buffer, does one `write` and one `fdatasync`, applies the batch to the index, and wakes
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
//! written and synced: under `Always` about one fdatasync, ~0.3-3 ms; under `Delay(d)` up
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
use std::os::unix::io::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::index::Index;
use super::model::Event;
use super::StoreError;

pub const SEGMENT_MAGIC: &[u8; 8] = b"ORDJRNL2";
pub const FRAME_HEADER: usize = 8;
pub const MAX_PAYLOAD: usize = 16 << 20;

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

/// Whether a valid record starts anywhere after `off`.
fn valid_record_after(buf: &[u8], off: usize) -> bool {
    (off + 1..buf.len().saturating_sub(FRAME_HEADER - 1)).any(|p| read_frame(buf, p).is_some())
}

/// The records of one file: payload ranges and where the valid prefix ends. `tail` allows
/// a torn end (the last segment); elsewhere any bad record is corruption.
pub fn scan_records(
    buf: &[u8],
    magic: &[u8; 8],
    path: &Path,
    tail: bool,
) -> Result<(Vec<std::ops::Range<usize>>, usize), StoreError> {
    if buf.len() < magic.len() || &buf[..magic.len()] != magic {
        if tail && buf.len() < magic.len() && magic.starts_with(buf) {
            return Ok((Vec::new(), 0));
        }
        if let Some(found) = buf.get(..magic.len()).filter(|h| h[..7] == magic[..7]) {
            return Err(StoreError::Failed {
                errno: None,
                message: format!(
                    "{} is in format {}, this version reads {} only (the formats are listed in \
                     journal.rs; no release wrote the older one: reload the data)",
                    path.display(),
                    String::from_utf8_lossy(found),
                    String::from_utf8_lossy(magic),
                ),
            });
        }
        return Err(corrupt(path, 0, "bad file header"));
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

pub fn corrupt(path: &Path, offset: u64, reason: &str) -> StoreError {
    StoreError::Corrupt { file: path.to_path_buf(), offset, reason: reason.to_owned() }
}

pub fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("wal-{n:016x}.log"))
}

pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates segment `n` durably (header written and synced, directory synced).
pub fn create_segment(dir: &Path, n: u64) -> std::io::Result<File> {
    let mut f = OpenOptions::new().create_new(true).append(true).open(segment_path(dir, n))?;
    f.write_all(SEGMENT_MAGIC)?;
    f.sync_data()?;
    sync_dir(dir)?;
    Ok(f)
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
    buf: Vec<u8>,
    /// Records framed in `buf` (events plus appended scans).
    buf_records: u64,
    /// Events the writer applies to the index once they are durable (not the scans, which
    /// their caller applied at once).
    events: Vec<(u64, Event)>,
    next_lsn: u64,
    durable_lsn: u64,
    failed: Option<StoreError>,
    closed: bool,
    rotate_req: bool,
    rotated: Option<Result<(u64, u64), StoreError>>,
    stats: JournalStats,
    /// Tests only: the writer leaves the buffer alone while this is set.
    #[cfg(test)]
    stalled: bool,
}

impl State {
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
}

impl Shared {
    /// One byte to whoever waits on [`Journal::wake_fd`], after `durable_lsn` or `failed`
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
    /// Starts the writer on an open segment (positioned at its end).
    pub fn start(
        dir: PathBuf,
        file: File,
        segment: u64,
        segment_bytes: u64,
        next_lsn: u64,
        sync: SyncPolicy,
        index: Arc<Index>,
    ) -> std::io::Result<Journal> {
        let (wake_rx, wake) = UnixStream::pair()?;
        wake_rx.set_nonblocking(true)?;
        wake.set_nonblocking(true)?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                buf: Vec::with_capacity(1 << 16),
                buf_records: 0,
                events: Vec::new(),
                next_lsn,
                durable_lsn: next_lsn - 1,
                failed: None,
                closed: false,
                rotate_req: false,
                rotated: None,
                stats: JournalStats { segment, segment_bytes, ..JournalStats::default() },
                #[cfg(test)]
                stalled: false,
            }),
            work: Condvar::new(),
            done: Condvar::new(),
            wake,
            wake_wanted: AtomicBool::new(false),
        });
        let s = shared.clone();
        let handle = std::thread::Builder::new()
            .name("ordonum-journal".into())
            .spawn(move || Writer { shared: s, dir, file, segment, sync, index }.run())?;
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
        while g.durable_lsn < lsn {
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
        self.shared.state.lock().durable_lsn
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
        for ev in events {
            frame(&mut g.buf, |out| ev.encode(lsn, out));
            g.events.push((lsn, ev));
            lsn += 1;
        }
        self.shared.work.notify_one();
        drop(g);
        self.wait(lsn - 1)
    }

    /// Appends the record of an event that the caller applies to the index itself (a scan's
    /// access-log entry) and returns its LSN at once: it waits neither for the `write` nor
    /// for the fdatasync. The writer takes the record with its next batch, so it is written
    /// within one commit window (the batch being written or synced at the time, typically
    /// well under a millisecond to a few ms) and synced with that batch. Refused, like every
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
        frame(&mut g.buf, |out| ev.encode(lsn, out));
        g.buf_records += 1;
        self.shared.work.notify_one();
        Ok(lsn)
    }

    /// Tests only: stops (true) or resumes (false) the writer thread's work.
    #[cfg(test)]
    pub fn stall(&self, on: bool) {
        let mut g = self.shared.state.lock();
        g.stalled = on;
        self.shared.work.notify_one();
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

struct Writer {
    shared: Arc<Shared>,
    dir: PathBuf,
    file: File,
    segment: u64,
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

    fn run(mut self) {
        let mut bytes: Vec<u8> = Vec::with_capacity(1 << 16);
        let mut unsynced_since: Option<Instant> = None;
        loop {
            let (events, records, last, rotate, closing) = {
                let mut g = self.shared.state.lock();
                loop {
                    if (!g.buf.is_empty() || g.rotate_req || g.closed) && !g.stalled() {
                        break;
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
                bytes.clear();
                std::mem::swap(&mut g.buf, &mut bytes);
                // Every LSN handed out so far was framed into the buffer under this lock, so
                // the bytes just taken end with record next_lsn - 1.
                let last = g.next_lsn - 1;
                let records = std::mem::take(&mut g.buf_records);
                (std::mem::take(&mut g.events), records, last, g.rotate_req, g.closed)
            };
            let path = segment_path(&self.dir, self.segment);
            if !bytes.is_empty() {
                if let Err(e) = self.file.write_all(&bytes) {
                    return self.fail(io_failed("write", &path, &e));
                }
                unsynced_since.get_or_insert_with(Instant::now);
            }
            let sync_now = match (self.sync, unsynced_since) {
                (_, None) => false,
                (SyncPolicy::Always, Some(_)) => true,
                (SyncPolicy::Delay(d), Some(t)) => rotate || closing || t.elapsed() >= d,
            };
            let mut synced = false;
            if sync_now {
                if let Err(e) = self.file.sync_data() {
                    return self.fail(io_failed("fdatasync", &path, &e));
                }
                unsynced_since = None;
                synced = true;
            }
            for (lsn, ev) in &events {
                // Live events were checked before they were queued: this cannot fail.
                let _ = self.index.apply(*lsn, ev);
            }
            {
                let mut g = self.shared.state.lock();
                if !bytes.is_empty() {
                    g.durable_lsn = last;
                    g.stats.batches += 1;
                    g.stats.records += records;
                    g.stats.segment_bytes += bytes.len() as u64;
                }
                if synced {
                    g.stats.fsyncs += 1;
                }
                self.shared.done.notify_all();
            }
            if !bytes.is_empty() {
                self.shared.wake();
            }
            if rotate {
                let next = self.segment + 1;
                match create_segment(&self.dir, next) {
                    Ok(f) => {
                        self.file = f;
                        self.segment = next;
                        let mut g = self.shared.state.lock();
                        g.rotate_req = false;
                        g.rotated = Some(Ok((next, g.durable_lsn + 1)));
                        g.stats.segment = next;
                        g.stats.segment_bytes = SEGMENT_MAGIC.len() as u64;
                        g.stats.fsyncs += 2;
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
                if g.buf.is_empty() && unsynced_since.is_none() {
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

    proptest! {
        #[test]
        fn frames_round_trip(payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..300), 0..20)) {
            let mut buf = SEGMENT_MAGIC.to_vec();
            for p in &payloads {
                frame(&mut buf, |o| o.extend_from_slice(p));
            }
            let (recs, end) = scan_records(&buf, SEGMENT_MAGIC, Path::new("x"), true).unwrap();
            prop_assert_eq!(end, buf.len());
            let got: Vec<&[u8]> = recs.iter().map(|r| &buf[r.clone()]).collect();
            let want: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
            prop_assert_eq!(got, want);
        }

        #[test]
        fn any_single_bit_flip_is_detected(payload in proptest::collection::vec(any::<u8>(), 1..200), bit in any::<proptest::sample::Index>()) {
            let mut buf = Vec::new();
            frame(&mut buf, |o| o.extend_from_slice(&payload));
            let i = bit.index(buf.len() * 8);
            buf[i / 8] ^= 1 << (i % 8);
            prop_assert!(read_frame(&buf, 0).is_none());
        }
    }
}
