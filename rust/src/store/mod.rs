//! The prescription store: an in-memory index with a durable journal (issue 4).
//!
//! * `model.rs`: JSON inputs and their validation, the compact binary content, events.
//! * `index.rs`: the sharded concurrent index keyed by binary ID, and the patient index.
//! * `journal.rs`: record layout, recovery rules, the group-commit writer and its policies.
//! * `snapshot.rs`: checkpoints. `json.rs`: the documents, serialised to bytes.
//!
//! # What a reader can see
//!
//! A reader never sees a state that a crash could lose (under the default `Always` policy).
//! Mutations follow one path: under the prescription's shard lock the request is checked
//! against the current state and the prescription is marked BUSY (a create inserts an
//! invisible PENDING slot instead); the lock is released; the event goes to the journal;
//! the journal writer makes it durable and only then applies it to the index, in LSN
//! order, clearing BUSY. A second mutation of the same prescription waits while it is BUSY
//! and is then checked against the durable state, so two pharmacies racing for the last
//! units cannot both get them, and a repeated idempotency key sees the first dispensation.
//! Reads and mutations of other prescriptions never wait on an fsync.
//!
//! The exception is the scan: its access-log entry is applied at once and its record
//! follows in the next group commit, so a scan never waits on an fsync either, and a crash
//! may take back the access-log entries of the last commit window (and nothing else; the
//! exact promise is in `journal.rs`, "Scans").
//!
//! Errors: `NotFound`, `Conflict` (the state forbids it), `Invalid` (field named),
//! `Failed` (I/O; the store refuses writes from then on), `Corrupt` (at open).

use std::fmt;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::access::AccessCode;
use crate::id::{unix_now_ms, RxId};

pub mod index;
pub mod journal;
pub mod json;
pub mod model;
pub mod snapshot;
#[cfg(test)]
mod tests;

use index::{Index, Slot};
pub use journal::SyncPolicy;
use journal::{create_segment, scan_segment, segment_path, sync_dir, Journal, SEGMENT_MAGIC};
use json::Status;
use model::{Access, Content, Dispensation, Event, Intervention, BUSY, CONSENT};

/// Message of every failed access-code check: a wrong ID and a wrong code read the same.
pub const NO_MATCH: &str = "no prescription with this ID and access code";
const TURN_WAIT: Duration = Duration::from_millis(50);
const MAX_BY_PATIENT: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    NotFound(String),
    Conflict(String),
    Invalid { field: String, message: String },
    Failed { errno: Option<i32>, message: String },
    Corrupt { file: PathBuf, offset: u64, reason: String },
}

impl StoreError {
    pub fn closed() -> StoreError {
        StoreError::Failed { errno: None, message: "the store is closed".into() }
    }
    pub fn io(what: &str, e: &std::io::Error) -> StoreError {
        StoreError::Failed { errno: e.raw_os_error(), message: format!("{what}: {e}") }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::NotFound(m) | StoreError::Conflict(m) => f.write_str(m),
            StoreError::Invalid { field, message } => write!(f, "{field}: {message}"),
            StoreError::Failed { message, .. } => f.write_str(message),
            StoreError::Corrupt { file, offset, reason } => write!(
                f,
                "{} is corrupted at offset {offset}: {reason}, and valid records follow, so \
                 this is not a torn write; refusing to open (restore the file from a copy)",
                file.display()
            ),
        }
    }
}

impl std::error::Error for StoreError {}

fn not_found(id: &RxId) -> StoreError {
    StoreError::NotFound(format!("no prescription {id}"))
}

fn now_ms(now: Option<u64>) -> Result<u64, StoreError> {
    model::check_time("now_ms", now.unwrap_or_else(unix_now_ms))
}

enum Backend {
    Memory { lsn: AtomicU64, closed: AtomicBool },
    Durable { dir: PathBuf, journal: Journal, lock: Mutex<Option<File>> },
}

/// What `open` found on disk.
#[derive(Debug, Default, Clone, Copy)]
pub struct Recovery {
    pub snapshot_entries: u64,
    pub records: u64,
    pub truncated_bytes: u64,
}

/// What a non-blocking write ([`Store::dispense_submit`]) did.
#[derive(Debug, PartialEq, Eq)]
pub enum Submitted {
    /// Nothing to write (a replayed idempotency key): the answer, to send now.
    Done(Vec<u8>),
    /// The answer, to send once the LSN is durable and applied.
    Queued(Vec<u8>, u64),
    /// Another write of the prescription is in flight; nothing done.
    Busy,
}

pub struct Store {
    index: Arc<Index>,
    backend: Backend,
    checkpoint_lock: Mutex<()>,
    recovery: Recovery,
}

struct Listing {
    segments: Vec<u64>,
    snapshots: Vec<u64>,
    temporaries: Vec<PathBuf>,
}

fn list(dir: &Path) -> Result<Listing, StoreError> {
    let mut l = Listing { segments: Vec::new(), snapshots: Vec::new(), temporaries: Vec::new() };
    let rd = std::fs::read_dir(dir)
        .map_err(|e| StoreError::io(&format!("listing {}", dir.display()), &e))?;
    for entry in rd.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let num = |prefix: &str, suffix: &str| {
            name.strip_prefix(prefix)
                .and_then(|r| r.strip_suffix(suffix))
                .filter(|h| h.len() == 16)
                .and_then(|h| u64::from_str_radix(h, 16).ok())
        };
        if let Some(n) = num("wal-", ".log") {
            l.segments.push(n);
        } else if let Some(n) = num("snap-", ".snap") {
            l.snapshots.push(n);
        } else if num("snap-", ".tmp").is_some() || num("wal-", ".tmp").is_some() {
            l.temporaries.push(entry.path());
        }
    }
    l.segments.sort_unstable();
    l.snapshots.sort_unstable();
    Ok(l)
}

impl Store {
    /// A store without a journal (tests, benchmarks): same rules, nothing durable.
    pub fn memory() -> Store {
        Store {
            index: Arc::new(Index::default()),
            backend: Backend::Memory { lsn: AtomicU64::new(1), closed: AtomicBool::new(false) },
            checkpoint_lock: Mutex::new(()),
            recovery: Recovery::default(),
        }
    }

    /// Opens (creating if needed) the store in directory `dir`, replaying the latest
    /// snapshot and the journal after it.
    pub fn open(dir: &Path, sync: SyncPolicy) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::io(&format!("creating {}", dir.display()), &e))?;
        let lock_path = dir.join("LOCK");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| StoreError::io(&format!("opening {}", lock_path.display()), &e))?;
        // SAFETY: flock on a file descriptor we own; no memory is involved.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = std::io::Error::last_os_error();
            return Err(StoreError::Failed {
                errno: e.raw_os_error(),
                message: format!("{} is already open in another process ({e})", dir.display()),
            });
        }
        let listing = list(dir)?;
        let index = Arc::new(Index::default());
        let mut recovery = Recovery::default();
        let base = listing.snapshots.last().copied();
        let mut next_lsn = 1u64;
        if let Some(n) = base {
            next_lsn = snapshot::load(&snapshot::snapshot_path(dir, n), &index)?;
            recovery.snapshot_entries = index.len() as u64;
        }
        let first = base.unwrap_or(1);
        let live: Vec<u64> = listing.segments.iter().copied().filter(|s| *s >= first).collect();
        for (i, s) in live.iter().enumerate() {
            if *s != first + i as u64 {
                return Err(StoreError::Failed {
                    errno: None,
                    message: format!(
                        "journal segment {} is missing in {}",
                        segment_path(dir, first + i as u64).display(),
                        dir.display()
                    ),
                });
            }
        }
        let mut last_lsn = next_lsn - 1;
        let mut prev_lsn = 0u64;
        let always = sync == SyncPolicy::Always;
        // The last segment, open for the writer: (file, number, logical end, zeros end).
        let mut open_tail: Option<(File, u64, u64, u64)> = None;
        let mut tail_v2 = false;
        for (i, s) in live.iter().enumerate() {
            let path = segment_path(dir, *s);
            let buf = std::fs::read(&path)
                .map_err(|e| StoreError::io(&format!("reading {}", path.display()), &e))?;
            let tail = i + 1 == live.len();
            let scanned = scan_segment(&buf, &path, tail)?;
            for r in scanned.records {
                let at = (r.start - journal::FRAME_HEADER) as u64;
                let (lsn, ev) =
                    Event::decode(&buf[r]).map_err(|e| journal::corrupt(&path, at, e.0))?;
                if lsn <= prev_lsn {
                    return Err(journal::corrupt(&path, at, "LSN goes backwards"));
                }
                prev_lsn = lsn;
                index.apply(lsn, &ev).map_err(|e| journal::corrupt(&path, at, &e))?;
                last_lsn = last_lsn.max(lsn);
                recovery.records += 1;
            }
            if tail {
                let end = scanned.end;
                // Bytes after the logical end: in journal 3, zeros are pre-zeroed space and the
                // rest up to the last non-zero byte is a torn write; journal 2 files have no
                // zeros, all of it is torn (and counted, as journal 2 always did).
                let torn = journal::nonzero_end(&buf, end) - end;
                recovery.truncated_bytes =
                    if scanned.v2 { buf.len().saturating_sub(end) } else { torn } as u64;
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|e| StoreError::io(&format!("opening {}", path.display()), &e))?;
                // Journal 2 segments and `Delay` keep growing files: cut at the end. Under
                // `Always` a journal 3 segment keeps its length: the torn bytes become zeros
                // again, and zeros are topped up to a margin ahead of the end.
                let keep = always && !scanned.v2;
                let mut zeroed = end as u64;
                let fix = |zeroed: &mut u64| -> std::io::Result<()> {
                    if end == 0 {
                        f.set_len(0)?;
                        f.write_all_at(SEGMENT_MAGIC, 0)?;
                        *zeroed = SEGMENT_MAGIC.len() as u64;
                    } else if !keep {
                        if buf.len() == end {
                            return Ok(());
                        }
                        f.set_len(end as u64)?;
                    } else {
                        journal::write_zeros(&f, end as u64, (end + torn) as u64)?;
                        *zeroed = buf.len() as u64;
                    }
                    if keep {
                        let target =
                            journal::zero_target(end.max(SEGMENT_MAGIC.len()) as u64, *zeroed);
                        // A full disk leaves it without (more) zeros, as the writer would.
                        if target > *zeroed && journal::write_zeros(&f, *zeroed, target).is_ok() {
                            *zeroed = target;
                        }
                    }
                    f.sync_all()
                };
                fix(&mut zeroed).map_err(|e| {
                    StoreError::io(&format!("repairing the tail of {}", path.display()), &e)
                })?;
                tail_v2 = scanned.v2;
                open_tail = Some((f, *s, end.max(SEGMENT_MAGIC.len()) as u64, zeroed));
            }
        }
        let (file, segment, tail_len, zeroed) = match open_tail {
            Some(t) if !tail_v2 => t,
            _ => {
                // No segment yet, or the last one is journal 2: it is never appended to (its
                // torn tail is cut off and synced just above); the journal goes on in a new
                // journal 3 segment after it, as after a rotation without snapshot.
                let n = live.last().map_or(first, |s| s + 1);
                drop(open_tail);
                let (f, zeroed) = create_segment(dir, n, always).map_err(|e| {
                    StoreError::io(&format!("creating {}", segment_path(dir, n).display()), &e)
                })?;
                (f, n, SEGMENT_MAGIC.len() as u64, zeroed)
            }
        };
        next_lsn = next_lsn.max(last_lsn + 1);
        remove_stale(dir, first, &listing)?;
        let journal = Journal::start(
            dir.to_path_buf(),
            file,
            segment,
            tail_len,
            zeroed,
            next_lsn,
            sync,
            index.clone(),
        )
        .map_err(|e| StoreError::io("starting the journal thread", &e))?;
        Ok(Store {
            index,
            backend: Backend::Durable {
                dir: dir.to_path_buf(),
                journal,
                lock: Mutex::new(Some(lock)),
            },
            checkpoint_lock: Mutex::new(()),
            recovery,
        })
    }

    fn check_writable(&self) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Memory { closed, .. } => {
                if closed.load(Ordering::Relaxed) {
                    return Err(StoreError::closed());
                }
                Ok(())
            }
            Backend::Durable { journal, .. } => journal.check(),
        }
    }

    fn commit(&self, ev: Event) -> Result<(), StoreError> {
        let lsn = self.submit(ev)?;
        self.wait(lsn)
    }

    /// Queues an event; returns the LSN to wait for (0: applied already, nothing to wait).
    fn submit(&self, ev: Event) -> Result<u64, StoreError> {
        match &self.backend {
            Backend::Memory { lsn, closed } => {
                if closed.load(Ordering::Relaxed) {
                    return Err(StoreError::closed());
                }
                let lsn = lsn.fetch_add(1, Ordering::Relaxed);
                self.index
                    .apply(lsn, &ev)
                    .map_err(|message| StoreError::Failed { errno: None, message })?;
                Ok(0)
            }
            Backend::Durable { journal, .. } => journal.submit(ev),
        }
    }

    /// Blocks until the event of `lsn` (from a `*_submit` call) is durable (per the policy)
    /// and applied; [`StoreError::Failed`] if the journal failed first.
    pub fn wait(&self, lsn: u64) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Durable { journal, .. } if lsn > 0 => journal.wait(lsn),
            _ => Ok(()),
        }
    }

    /// The highest LSN durable (per the policy) and applied (`u64::MAX` without a journal),
    /// also after a journal failure: writes up to it are durable whatever happened next.
    pub fn durable_lsn(&self) -> u64 {
        match &self.backend {
            Backend::Memory { .. } => u64::MAX,
            Backend::Durable { journal, .. } => journal.durable(),
        }
    }

    /// A non-blocking file descriptor that becomes readable whenever [`Store::durable_lsn`]
    /// may have moved (`None` without a journal): an event loop waits on it instead of a
    /// thread per write. Drain it, then read `durable_lsn()`. Valid while the store lives.
    pub fn wake_fd(&self) -> Option<std::os::unix::io::RawFd> {
        match &self.backend {
            Backend::Memory { .. } => None,
            Backend::Durable { journal, .. } => Some(journal.wake_fd()),
        }
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Creates a prescription from its JSON record; returns its document.
    pub fn create(&self, json: &[u8], now: Option<u64>) -> Result<Vec<u8>, StoreError> {
        let now = now_ms(now)?;
        let (id, lsn) = self.create_submit(json, Some(now))?;
        if let Err(e) = self.wait(lsn) {
            self.index.unreserve(&id);
            return Err(e);
        }
        self.get(&id, Some(now))
    }

    /// [`Store::create`] without waiting: checks and queues the creation, returns the ID and
    /// the LSN to wait for ([`Store::wait`], or [`Store::wake_fd`] + [`Store::durable_lsn`]).
    /// The prescription stays invisible (and its ID taken) until then.
    pub fn create_submit(&self, json: &[u8], now: Option<u64>) -> Result<(RxId, u64), StoreError> {
        let now = now_ms(now)?;
        let content = model::build_content(json, now)?;
        self.check_writable()?;
        let id = Content(&content).id();
        if !self.index.reserve(&content) {
            return Err(StoreError::Conflict(format!("prescription {id} already exists")));
        }
        match self.submit(Event::Create { content }) {
            Ok(lsn) => Ok((id, lsn)),
            Err(e) => {
                self.index.unreserve(&id);
                Err(e)
            }
        }
    }

    /// Creates many prescriptions (bulk loads); returns how many.
    ///
    /// All or nothing before anything is written: every record is validated and every ID
    /// reserved first, and the first invalid record (`Invalid`, field `records[i]...`) or
    /// taken ID (`Conflict`, "records[i]: ...", a duplicate inside the batch included)
    /// refuses the whole batch, leaving the store unchanged. Then the events go to the
    /// journal as one group (one `write` and, under `Always`, one fdatasync) and the call
    /// returns once all are durable and visible. A crash before it returns may keep any
    /// prefix of the batch, like unacknowledged single creations; a journal failure keeps
    /// none in memory.
    pub fn create_many(&self, records: &[&[u8]], now: Option<u64>) -> Result<usize, StoreError> {
        let now = now_ms(now)?;
        let mut contents = Vec::with_capacity(records.len());
        for (i, json) in records.iter().enumerate() {
            contents.push(model::build_content(json, now).map_err(|e| match e {
                StoreError::Invalid { field, message } if field == "record" => {
                    model::invalid(format!("records[{i}]"), message)
                }
                StoreError::Invalid { field, message } => {
                    model::invalid(format!("records[{i}].{field}"), message)
                }
                other => other,
            })?);
        }
        self.check_writable()?;
        for (i, content) in contents.iter().enumerate() {
            if !self.index.reserve(content) {
                for c in &contents[..i] {
                    self.index.unreserve(&Content(c).id());
                }
                let id = Content(content).id();
                return Err(StoreError::Conflict(format!(
                    "records[{i}]: prescription {id} already exists"
                )));
            }
        }
        let ids: Vec<RxId> = contents.iter().map(|c| Content(c).id()).collect();
        let events: Vec<Event> =
            contents.into_iter().map(|content| Event::Create { content }).collect();
        let n = events.len();
        let committed = match &self.backend {
            Backend::Memory { .. } => events.into_iter().try_for_each(|ev| self.commit(ev)),
            Backend::Durable { journal, .. } => journal.commit_many(events),
        };
        if let Err(e) = committed {
            // Applied ones are visible (unreserve leaves them); the rest are withdrawn.
            for id in &ids {
                self.index.unreserve(id);
            }
            return Err(e);
        }
        Ok(n)
    }

    /// The document of a prescription (bytes, ready to send).
    pub fn get(&self, id: &RxId, now: Option<u64>) -> Result<Vec<u8>, StoreError> {
        let mut out = Vec::with_capacity(1024);
        self.get_into(id, now, &mut out)?;
        Ok(out)
    }

    pub fn get_into(
        &self,
        id: &RxId,
        now: Option<u64>,
        out: &mut Vec<u8>,
    ) -> Result<(), StoreError> {
        let now = now_ms(now)?;
        self.index.with(id, |s| json::document(out, s, now)).ok_or_else(|| not_found(id))
    }

    /// Checks the access code in constant time; a missing ID, a malformed code and a wrong
    /// code all do one digest comparison and all give `false`.
    fn code_matches(&self, id: &RxId, code: &str) -> bool {
        let parsed = AccessCode::parse(code);
        let digest = self.index.with(id, |s| s.view().digest());
        let candidate = parsed.as_ref().map_or(AccessCode::from_bytes([0; 16]), |c| *c);
        let m = candidate.matches(&digest.unwrap_or([0xA5; 32]));
        m & digest.is_some() & parsed.is_ok()
    }

    /// A pharmacy's scan: checks the code, logs the access, returns the document.
    ///
    /// The access-log entry is visible at once and its journal record is queued, not
    /// waited for: a scan never waits on the journal's write or fdatasync, and a crash may
    /// lose the entries of scans acknowledged in the last commit window (see `journal.rs`,
    /// "Scans"). Refused with `Failed` once the journal has failed or the store is closed.
    pub fn scan(
        &self,
        id: &RxId,
        code: &str,
        actor: &str,
        now: Option<u64>,
    ) -> Result<Vec<u8>, StoreError> {
        let mut out = Vec::with_capacity(1024);
        self.scan_into(id, code, actor, now, &mut out)?;
        Ok(out)
    }

    /// `scan`, writing the document into `out`.
    pub fn scan_into(
        &self,
        id: &RxId,
        code: &str,
        actor: &str,
        now: Option<u64>,
        out: &mut Vec<u8>,
    ) -> Result<(), StoreError> {
        let now = now_ms(now)?;
        model::text("actor", actor, 1, model::MAX_KEY, false)?;
        if !self.code_matches(id, code) {
            return Err(StoreError::NotFound(NO_MATCH.into()));
        }
        let access = Access { at: now, actor: actor.into() };
        let logged = match &self.backend {
            Backend::Memory { lsn, closed } => self.index.log_access(id, access, |_| {
                if closed.load(Ordering::Relaxed) {
                    return Err(StoreError::closed());
                }
                Ok(lsn.fetch_add(1, Ordering::Relaxed))
            }),
            Backend::Durable { journal, .. } => {
                self.index.log_access(id, access, |ev| journal.append(ev))
            }
        };
        logged.unwrap_or_else(|| Err(StoreError::NotFound(NO_MATCH.into())))?;
        self.get_into(id, Some(now), out)
    }

    /// Tests only: waits until the journal writer is idle (zero-filling included).
    #[cfg(test)]
    pub fn quiesce_journal(&self) {
        if let Backend::Durable { journal, .. } = &self.backend {
            journal.quiesce();
        }
    }

    /// Tests only: stops (true) or resumes the journal writer.
    #[cfg(test)]
    pub fn stall_journal(&self, on: bool) {
        if let Backend::Durable { journal, .. } = &self.backend {
            journal.stall(on);
        }
    }

    /// Records a dispensation (all lines or none); see the module doc for the concurrency.
    pub fn dispense(
        &self,
        id: &RxId,
        json: &[u8],
        key: &str,
        code: &str,
        now: Option<u64>,
    ) -> Result<Vec<u8>, StoreError> {
        match self.dispense_with(id, json, key, code, now, true)? {
            Submitted::Done(out) => Ok(out),
            // dispense_with waits its turn when asked to: never busy here
            Submitted::Busy => Err(StoreError::Conflict(format!("prescription {id} is busy"))),
            Submitted::Queued(out, lsn) => match self.wait(lsn) {
                Ok(()) => Ok(out),
                Err(e) => {
                    self.index.release(id);
                    Err(e)
                }
            },
        }
    }

    /// [`Store::dispense`] for a caller that must not block (an event loop): the same checks,
    /// then either the answer ([`Submitted::Done`]: a replay, nothing written), or the answer
    /// with the LSN to wait for before sending it ([`Submitted::Queued`]), or
    /// [`Submitted::Busy`] when another write of this prescription is still in flight: call
    /// [`Store::dispense`] from a thread then, which waits its turn.
    pub fn dispense_submit(
        &self,
        id: &RxId,
        json: &[u8],
        key: &str,
        code: &str,
        now: Option<u64>,
    ) -> Result<Submitted, StoreError> {
        self.dispense_with(id, json, key, code, now, false)
    }

    fn dispense_with(
        &self,
        id: &RxId,
        json: &[u8],
        key: &str,
        code: &str,
        now: Option<u64>,
        wait_turn: bool,
    ) -> Result<Submitted, StoreError> {
        let now = now_ms(now)?;
        model::idempotency_key(key)?;
        let d = model::parse_dispensation(json, key, now)?;
        if !self.code_matches(id, code) {
            return Err(StoreError::NotFound(NO_MATCH.into()));
        }
        loop {
            self.check_writable()?;
            let (mut t, h) = self.index.write(id);
            let Some(slot) = Index::find_mut(&mut t, h, id).filter(|s| s.visible()) else {
                return Err(StoreError::NotFound(NO_MATCH.into()));
            };
            if slot.busy() {
                if !wait_turn {
                    return Ok(Submitted::Busy);
                }
                drop(t);
                self.index.wait_turn(id, TURN_WAIT);
                continue;
            }
            let mut out = Vec::with_capacity(256);
            if let Some(answer) = replayed(slot, &d, &mut out) {
                answer?;
                return Ok(Submitted::Done(out));
            }
            let remaining = check_dispensation(slot, &d, now)?;
            let c = slot.view();
            let all_done = remaining.iter().all(|r| *r == 0);
            let st = if all_done { Status::Dispensed } else { Status::PartiallyDispensed };
            let n = slot.dynamic.as_ref().map_or(0, |dy| dy.dispensations.len()) + 1;
            json::dispense_answer(&mut out, c, n, st, &remaining, false);
            slot.set_flag(BUSY, true);
            drop(t);
            return match self.submit(Event::Dispense { id: *id, d }) {
                Ok(lsn) => Ok(Submitted::Queued(out, lsn)),
                Err(e) => {
                    self.index.release(id);
                    Err(e)
                }
            };
        }
    }

    /// Runs `decide` on the prescription with its BUSY turn taken, then commits the event
    /// it returns (if any). `decide` answers the result when nothing needs writing.
    fn mutate<R>(
        &self,
        id: &RxId,
        mut decide: impl FnMut(&Slot) -> Result<(Option<Event>, R), StoreError>,
    ) -> Result<R, StoreError> {
        loop {
            self.check_writable()?;
            let (mut t, h) = self.index.write(id);
            let Some(slot) = Index::find_mut(&mut t, h, id).filter(|s| s.visible()) else {
                return Err(not_found(id));
            };
            if slot.busy() {
                drop(t);
                self.index.wait_turn(id, TURN_WAIT);
                continue;
            }
            let (ev, r) = decide(slot)?;
            let Some(ev) = ev else { return Ok(r) };
            slot.set_flag(BUSY, true);
            drop(t);
            if let Err(e) = self.commit(ev) {
                self.index.release(id);
                return Err(e);
            }
            return Ok(r);
        }
    }

    /// Cancels a prescription on behalf of its prescriber; returns the new status.
    pub fn cancel(
        &self,
        id: &RxId,
        prescriber_rpps: &str,
        now: Option<u64>,
    ) -> Result<Status, StoreError> {
        let now = now_ms(now)?;
        let rpps = model::digits::<11>("prescriber_rpps", prescriber_rpps)?;
        self.mutate(id, |slot| {
            if slot.view().rpps().as_bytes() != rpps {
                return Err(StoreError::Conflict(format!(
                    "prescription {id} was issued by another prescriber"
                )));
            }
            match json::slot_status(slot, now) {
                Status::Cancelled => Ok((None, Status::Cancelled)),
                Status::Dispensed => Err(StoreError::Conflict(format!(
                    "prescription {id} is fully dispensed and can no longer be cancelled"
                ))),
                _ => Ok((Some(Event::Cancel { id: *id, at: now }), Status::Cancelled)),
            }
        })
    }

    /// Records whether the patient lets the prescriber see the dispensations.
    pub fn set_consent(
        &self,
        id: &RxId,
        allowed: bool,
        now: Option<u64>,
    ) -> Result<(), StoreError> {
        let now = now_ms(now)?;
        self.mutate(id, |slot| {
            let current = slot.flags() & CONSENT != 0;
            Ok(((current != allowed).then_some(Event::Consent { id: *id, allowed, at: now }), ()))
        })
    }

    /// (prescriber RPPS, patient NIR, consent) for authorisation decisions.
    pub fn owner(&self, id: &RxId) -> Result<(String, String, bool), StoreError> {
        self.index
            .with(id, |s| {
                let c = s.view();
                (c.rpps().to_owned(), c.nir().to_owned(), c.flags() & CONSENT != 0)
            })
            .ok_or_else(|| not_found(id))
    }

    /// The QR token text kept with the prescription (`qr_token` at creation), if any.
    pub fn qr_token(&self, id: &RxId) -> Result<Option<String>, StoreError> {
        self.index.with(id, |s| s.view().qr_token().map(str::to_owned)).ok_or_else(|| not_found(id))
    }

    pub fn dispensations(&self, id: &RxId) -> Result<Vec<u8>, StoreError> {
        let mut out = Vec::with_capacity(256);
        self.index.with(id, |s| json::dispensations(&mut out, s)).ok_or_else(|| not_found(id))?;
        Ok(out)
    }

    pub fn access_log(&self, id: &RxId) -> Result<Vec<u8>, StoreError> {
        let mut out = Vec::with_capacity(256);
        self.index.with(id, |s| json::access_log(&mut out, s)).ok_or_else(|| not_found(id))?;
        Ok(out)
    }

    /// The patient's prescription IDs, newest (largest ID) first, strictly below `before`.
    pub fn by_patient(
        &self,
        nir: &str,
        limit: usize,
        before: Option<RxId>,
    ) -> Result<Vec<RxId>, StoreError> {
        let key = model::nir("nir", nir)?;
        if limit > MAX_BY_PATIENT {
            return Err(model::invalid("limit", format!("at most {MAX_BY_PATIENT}, got {limit}")));
        }
        Ok(self.index.by_patient(&key, limit, before))
    }

    /// Writes a snapshot and drops the journal segments it covers (no-op in memory).
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        let Backend::Durable { dir, journal, .. } = &self.backend else {
            return self.check_writable();
        };
        let _one_at_a_time = self.checkpoint_lock.lock();
        let (n, next_lsn) = journal.rotate()?;
        snapshot::write(dir, n, next_lsn, &self.index).map_err(|e| {
            StoreError::io(&format!("writing the snapshot in {}", dir.display()), &e)
        })?;
        remove_stale(dir, n, &list(dir)?)
    }

    /// Drains and syncs pending writes and stops the journal; later writes are refused.
    pub fn close(&self) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Memory { closed, .. } => {
                closed.store(true, Ordering::Relaxed);
                Ok(())
            }
            Backend::Durable { journal, lock, .. } => {
                let r = journal.close();
                // Closing the file releases the flock: another process may open the store.
                lock.lock().take();
                r
            }
        }
    }

    pub fn stats(&self) -> Vec<(&'static str, u64)> {
        let mut v = vec![
            ("prescriptions", self.index.len() as u64),
            ("content_bytes", self.index.content_bytes()),
            ("recovered_snapshot_entries", self.recovery.snapshot_entries),
            ("recovered_records", self.recovery.records),
            ("truncated_bytes", self.recovery.truncated_bytes),
        ];
        match &self.backend {
            Backend::Memory { lsn, closed } => v.extend([
                ("durable", 0),
                ("journal_bytes", 0),
                ("segment", 0),
                ("fsyncs", 0),
                ("batches", 0),
                ("records", lsn.load(Ordering::Relaxed) - 1),
                ("failed", 0),
                ("closed", u64::from(closed.load(Ordering::Relaxed))),
                ("next_lsn", lsn.load(Ordering::Relaxed)),
            ]),
            Backend::Durable { journal, .. } => {
                let (s, failed, next_lsn) = journal.stats();
                v.extend([
                    ("durable", 1),
                    ("journal_bytes", s.segment_bytes),
                    ("segment", s.segment),
                    ("fsyncs", s.fsyncs),
                    ("batches", s.batches),
                    ("records", s.records),
                    ("failed", u64::from(failed)),
                    ("closed", u64::from(journal.check().is_err() && !failed)),
                    ("next_lsn", next_lsn),
                ]);
            }
        }
        v
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

/// Deletes segments and snapshots older than `first`, and leftover temporaries.
fn remove_stale(dir: &Path, first: u64, l: &Listing) -> Result<(), StoreError> {
    let mut paths: Vec<PathBuf> = l.temporaries.clone();
    paths.extend(l.segments.iter().filter(|s| **s < first).map(|s| segment_path(dir, *s)));
    paths.extend(
        l.snapshots.iter().filter(|s| **s < first).map(|s| snapshot::snapshot_path(dir, *s)),
    );
    if paths.is_empty() {
        return Ok(());
    }
    for p in &paths {
        snapshot::remove(p)
            .map_err(|e| StoreError::io(&format!("removing {}", p.display()), &e))?;
    }
    sync_dir(dir).map_err(|e| StoreError::io(&format!("syncing {}", dir.display()), &e))
}

/// If the dispensation's idempotency key was seen: writes the first answer into `out`
/// (Ok) or refuses a different request under the same key (Err).
fn replayed(slot: &Slot, d: &Dispensation, out: &mut Vec<u8>) -> Option<Result<(), StoreError>> {
    let dy = slot.dynamic.as_deref()?;
    let k = dy.dispensations.iter().position(|x| x.key == d.key)?;
    let first = &dy.dispensations[k];
    if !first.same_request(d) {
        return Some(Err(StoreError::Conflict(format!(
            "idempotency key {:?} was already used for a different dispensation",
            &*d.key
        ))));
    }
    let c = slot.view();
    let lines = c.lines().unwrap_or_default();
    let mut delivered = vec![0u32; lines.len()];
    for x in &dy.dispensations[..=k] {
        for l in x.lines.iter() {
            if let Some(v) = delivered.get_mut(usize::from(l.line)) {
                *v = v.saturating_add(l.quantity);
            }
        }
    }
    let remaining: Vec<u32> =
        lines.iter().zip(&delivered).map(|(l, d)| l.allowance().saturating_sub(*d)).collect();
    let st = if remaining.iter().all(|r| *r == 0) {
        Status::Dispensed
    } else {
        Status::PartiallyDispensed
    };
    json::dispense_answer(out, c, k + 1, st, &remaining, true);
    Some(Ok(()))
}

/// Checks a new dispensation against the prescription; returns the remaining quantities
/// per line after it.
fn check_dispensation(slot: &Slot, d: &Dispensation, now: u64) -> Result<Vec<u32>, StoreError> {
    let c = slot.view();
    let id = c.id();
    let lines = c.lines().unwrap_or_default();
    match json::slot_status(slot, now) {
        Status::Cancelled => {
            return Err(StoreError::Conflict(format!("prescription {id} is cancelled")))
        }
        Status::Dispensed => {
            return Err(StoreError::Conflict(format!(
                "prescription {id} is already fully dispensed"
            )));
        }
        Status::Expired => {
            return Err(StoreError::Conflict(format!(
                "prescription {id} expired at {}",
                model::rfc3339(c.valid_until())
            )));
        }
        Status::Active | Status::PartiallyDispensed => {}
    }
    let delivered =
        |i: usize| slot.dynamic.as_ref().and_then(|dy| dy.delivered.get(i).copied()).unwrap_or(0);
    let mut remaining: Vec<u32> =
        lines.iter().enumerate().map(|(i, l)| l.allowance().saturating_sub(delivered(i))).collect();
    for (i, l) in d.lines.iter().enumerate() {
        let n = usize::from(l.line);
        let (Some(pl), Some(r)) = (lines.get(n), remaining.get_mut(n)) else {
            return Err(model::invalid(
                format!("lines[{i}].line"),
                format!(
                    "the prescription has {} lines, numbered from 0, got line {n}",
                    lines.len()
                ),
            ));
        };
        if l.kind == Intervention::Substitution && !pl.substitutable {
            return Err(StoreError::Conflict(format!("line {n} is not substitutable")));
        }
        if l.kind == Intervention::None {
            if let (Some(given), Some(prescribed)) = (&l.cip13, pl.cip13) {
                if given != prescribed {
                    return Err(model::invalid(
                        format!("lines[{i}].intervention.kind"),
                        "the delivered cip13 differs from the prescribed one: a substitution or an \
                         adjustment must be recorded",
                    ));
                }
            }
        }
        if l.quantity > *r {
            return Err(StoreError::Conflict(format!(
                "over-dispensing: line {n} has {r} units remaining, {} requested",
                l.quantity
            )));
        }
        *r -= l.quantity;
    }
    Ok(remaining)
}
