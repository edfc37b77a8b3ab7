//! The in-memory index: 256 shards of `RwLock<HashTable<Slot>>` keyed by the binary ID,
//! and a secondary index by patient.
//!
//! Memory: a slot is the content `Box<[u8]>` (whose bytes 1..11 are the ID, so the key is
//! not stored twice) and an `Option<Box<Dynamic>>` that stays null until the first
//! dispensation or scan: 24 bytes plus one control byte in the table. The patient index is
//! a multimap of bare 10-byte IDs hashed by NIR (entries with the same hash are told apart
//! by reading the NIR in the primary slot), so it costs 11 bytes per prescription.
//!
//! Visibility: only the journal writer (or, for a memory store, the caller after its event
//! is "committed") applies events, in LSN order, after they are durable. The one exception
//! is a scan's access-log entry, which its caller applies at once (`log_access`) while its
//! record is still on its way to the journal: see `journal.rs` for what that costs. A create first
//! inserts a PENDING slot that readers skip (so a racing create of the same ID is refused)
//! and a mutation first sets BUSY on its slot (so a racing mutation of the same
//! prescription waits for it); neither changes what readers see.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use hashbrown::{DefaultHashBuilder, HashTable};
use parking_lot::{Condvar, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::id::RxId;

use super::model::{
    Access, Content, Dynamic, Event, BUSY, CANCELLED, CONSENT, PENDING, PERSISTENT_FLAGS,
};

pub const SHARDS: usize = 256;

#[derive(Debug)]
pub struct Slot {
    pub content: Box<[u8]>,
    pub dynamic: Option<Box<Dynamic>>,
}

impl Slot {
    pub fn view(&self) -> Content<'_> {
        Content(&self.content)
    }
    pub fn flags(&self) -> u8 {
        self.content.first().copied().unwrap_or(0)
    }
    pub fn visible(&self) -> bool {
        self.flags() & PENDING == 0
    }
    pub fn busy(&self) -> bool {
        self.flags() & BUSY != 0
    }
    pub fn set_flag(&mut self, flag: u8, on: bool) {
        if let Some(f) = self.content.first_mut() {
            if on {
                *f |= flag;
            } else {
                *f &= !flag;
            }
        }
    }
    pub fn dynamic_mut(&mut self) -> &mut Dynamic {
        let lines = self.view().line_count();
        self.dynamic.get_or_insert_with(|| Box::new(Dynamic::new(lines)))
    }
}

type Table = HashTable<Slot>;

pub struct Index {
    hasher: DefaultHashBuilder,
    rx: Box<[RwLock<Table>]>,
    patients: Box<[RwLock<HashTable<RxId>>]>,
    turnstiles: Box<[(Mutex<()>, Condvar)]>,
    count: AtomicUsize,
    content_bytes: AtomicU64,
}

impl Default for Index {
    fn default() -> Self {
        Index {
            hasher: DefaultHashBuilder::default(),
            rx: (0..SHARDS).map(|_| RwLock::new(HashTable::new())).collect(),
            patients: (0..SHARDS).map(|_| RwLock::new(HashTable::new())).collect(),
            turnstiles: (0..SHARDS).map(|_| (Mutex::new(()), Condvar::new())).collect(),
            count: AtomicUsize::new(0),
            content_bytes: AtomicU64::new(0),
        }
    }
}

fn shard_of(hash: u64) -> usize {
    // hashbrown uses the top 7 bits and the low bits; the shard takes bits 48..56.
    ((hash >> 48) as usize) % SHARDS
}

impl Index {
    pub fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    /// Number of visible prescriptions.
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Bytes of immutable content held (the "stored bytes" of the memory benchmark).
    pub fn content_bytes(&self) -> u64 {
        self.content_bytes.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn read(&self, id: &RxId) -> (RwLockReadGuard<'_, Table>, u64) {
        let h = self.hash(id.as_bytes());
        (self.rx[shard_of(h)].read(), h)
    }

    pub fn write(&self, id: &RxId) -> (RwLockWriteGuard<'_, Table>, u64) {
        let h = self.hash(id.as_bytes());
        (self.rx[shard_of(h)].write(), h)
    }

    pub fn find<'t>(table: &'t Table, h: u64, id: &RxId) -> Option<&'t Slot> {
        table.find(h, |s| s.view().id_bytes() == id.as_bytes())
    }

    pub fn find_mut<'t>(table: &'t mut Table, h: u64, id: &RxId) -> Option<&'t mut Slot> {
        table.find_mut(h, |s| s.view().id_bytes() == id.as_bytes())
    }

    /// Runs `f` on the visible slot of `id` under the shard's read lock.
    pub fn with<R>(&self, id: &RxId, f: impl FnOnce(&Slot) -> R) -> Option<R> {
        let (t, h) = self.read(id);
        Index::find(&t, h, id).filter(|s| s.visible()).map(f)
    }

    /// Inserts a PENDING|BUSY placeholder for a new prescription; false if the ID exists.
    pub fn reserve(&self, content: &[u8]) -> bool {
        let id = Content(content).id();
        let (mut t, h) = self.write(&id);
        if Index::find(&t, h, &id).is_some() {
            return false;
        }
        let mut c: Box<[u8]> = content.into();
        if let Some(f) = c.first_mut() {
            *f = (*f & PERSISTENT_FLAGS) | PENDING | BUSY;
        }
        let hasher = &self.hasher;
        t.insert_unique(h, Slot { content: c, dynamic: None }, |s| {
            hasher.hash_one(s.view().id_bytes())
        });
        true
    }

    /// Undoes a reservation whose event was not committed.
    pub fn unreserve(&self, id: &RxId) {
        let (mut t, h) = self.write(id);
        if let Ok(e) = t.find_entry(h, |s| s.view().id_bytes() == id.as_bytes()) {
            if !e.get().visible() {
                e.remove();
            }
        }
    }

    /// Clears BUSY after a mutation that was not committed, and wakes waiters.
    pub fn release(&self, id: &RxId) {
        {
            let (mut t, h) = self.write(id);
            if let Some(s) = Index::find_mut(&mut t, h, id) {
                s.set_flag(BUSY, false);
            }
        }
        self.wake(id);
    }

    fn wake(&self, id: &RxId) {
        let (m, cv) = &self.turnstiles[shard_of(self.hash(id.as_bytes()))];
        let _g = m.lock();
        cv.notify_all();
    }

    /// Waits (at most `timeout`) until the slot of `id` is no longer BUSY.
    pub fn wait_turn(&self, id: &RxId, timeout: Duration) {
        let (m, cv) = &self.turnstiles[shard_of(self.hash(id.as_bytes()))];
        let mut g = m.lock();
        // Checked while holding the turnstile mutex: a release in between cannot be missed.
        let busy = {
            let (t, h) = self.read(id);
            Index::find(&t, h, id).is_some_and(Slot::busy)
        };
        if busy {
            cv.wait_for(&mut g, timeout);
        }
    }

    /// Applies a durable event. Replays are idempotent: a create of an existing slot and a
    /// dispensation or scan at or below the slot's `last_lsn` are skipped.
    pub fn apply(&self, lsn: u64, ev: &Event) -> Result<(), String> {
        let id = ev.id();
        let mut woke = false;
        let mut new_patient: Option<[u8; 15]> = None;
        let mut added = 0u64;
        {
            let (mut t, h) = self.write(&id);
            match ev {
                Event::Create { content } => match Index::find_mut(&mut t, h, &id) {
                    Some(s) if !s.visible() => {
                        s.set_flag(PENDING | BUSY, false);
                        new_patient = Some(nir_key(s.view().nir_bytes()));
                        added = s.content.len() as u64;
                    }
                    Some(_) => {}
                    None => {
                        let mut c = content.clone();
                        if let Some(f) = c.first_mut() {
                            *f &= PERSISTENT_FLAGS;
                        }
                        new_patient = Some(nir_key(Content(&c).nir_bytes()));
                        added = c.len() as u64;
                        let hasher = &self.hasher;
                        t.insert_unique(h, Slot { content: c, dynamic: None }, |s| {
                            hasher.hash_one(s.view().id_bytes())
                        });
                    }
                },
                _ => {
                    let s = Index::find_mut(&mut t, h, &id)
                        .filter(|s| s.visible())
                        .ok_or_else(|| format!("event for unknown prescription {id}"))?;
                    woke = s.busy();
                    s.set_flag(BUSY, false);
                    match ev {
                        Event::Dispense { d, .. } => {
                            let dy = s.dynamic_mut();
                            if lsn > dy.last_lsn {
                                dy.add(d.clone());
                                dy.last_lsn = lsn;
                            }
                        }
                        Event::Scan { access, .. } => {
                            let dy = s.dynamic_mut();
                            if lsn > dy.access_lsn {
                                dy.access.push(access.clone());
                                dy.access_lsn = lsn;
                            }
                        }
                        Event::Cancel { .. } => s.set_flag(CANCELLED, true),
                        Event::Consent { allowed, .. } => s.set_flag(CONSENT, *allowed),
                        Event::Create { .. } => {}
                    }
                }
            }
        }
        if let Some(nir) = new_patient {
            self.count.fetch_add(1, Ordering::Relaxed);
            self.content_bytes.fetch_add(added, Ordering::Relaxed);
            let ph = self.hash(&nir);
            let hasher = &self.hasher;
            let rx = &self.rx;
            let mut p = self.patients[shard_of(ph)].write();
            p.insert_unique(ph, id, |other| {
                // Rehash on growth: read the other prescription's NIR from its slot.
                let oh = hasher.hash_one(other.as_bytes());
                let t = rx[shard_of(oh)].read();
                Index::find(&t, oh, other)
                    .map_or(0, |s| hasher.hash_one(nir_key(s.view().nir_bytes())))
            });
        }
        if woke {
            self.wake(&id);
        }
        Ok(())
    }

    /// Logs a scan of the visible prescription `id` now, before its record is durable:
    /// under the shard's write lock, `append` queues the record and returns its LSN, then
    /// the access is added. Holding the lock across both keeps a slot's accesses in LSN
    /// order. None if there is no visible prescription `id`.
    pub fn log_access<E>(
        &self,
        id: &RxId,
        access: Access,
        append: impl FnOnce(&Event) -> Result<u64, E>,
    ) -> Option<Result<(), E>> {
        let (mut t, h) = self.write(id);
        let slot = Index::find_mut(&mut t, h, id).filter(|s| s.visible())?;
        let ev = Event::Scan { id: *id, access };
        let lsn = match append(&ev) {
            Ok(lsn) => lsn,
            Err(e) => return Some(Err(e)),
        };
        if let Event::Scan { access, .. } = ev {
            let dy = slot.dynamic_mut();
            dy.access.push(access);
            dy.access_lsn = dy.access_lsn.max(lsn);
        }
        Some(Ok(()))
    }

    /// Loads a slot read from a snapshot (not pending, no waiters).
    pub fn load(&self, content: Box<[u8]>, dynamic: Option<Box<Dynamic>>) {
        let c = Content(&content);
        let id = c.id();
        let nir = nir_key(c.nir_bytes());
        let added = content.len() as u64;
        {
            let (mut t, h) = self.write(&id);
            if Index::find(&t, h, &id).is_some() {
                return;
            }
            let hasher = &self.hasher;
            t.insert_unique(h, Slot { content, dynamic }, |s| hasher.hash_one(s.view().id_bytes()));
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.content_bytes.fetch_add(added, Ordering::Relaxed);
        let ph = self.hash(&nir);
        let hasher = &self.hasher;
        let rx = &self.rx;
        self.patients[shard_of(ph)].write().insert_unique(ph, id, |other| {
            let oh = hasher.hash_one(other.as_bytes());
            let t = rx[shard_of(oh)].read();
            Index::find(&t, oh, other).map_or(0, |s| hasher.hash_one(nir_key(s.view().nir_bytes())))
        });
    }

    /// IDs of the patient's visible prescriptions, newest (largest ID) first, below `before`.
    pub fn by_patient(&self, nir: &[u8; 15], limit: usize, before: Option<RxId>) -> Vec<RxId> {
        let ph = self.hash(nir);
        let candidates: Vec<RxId> = {
            let p = self.patients[shard_of(ph)].read();
            p.iter_hash(ph).copied().filter(|id| before.is_none_or(|b| *id < b)).collect()
        };
        let mut ids: Vec<RxId> = candidates
            .into_iter()
            .filter(|id| self.with(id, |s| s.view().nir_bytes() == nir).unwrap_or(false))
            .collect();
        ids.sort_unstable_by(|a, b| b.cmp(a));
        ids.dedup();
        ids.truncate(limit);
        ids
    }

    /// Calls `f` on every visible slot, one shard at a time under its read lock.
    pub fn for_each(&self, mut f: impl FnMut(&Slot) -> std::io::Result<()>) -> std::io::Result<()> {
        for shard in self.rx.iter() {
            let t = shard.read();
            for s in t.iter().filter(|s| s.visible()) {
                f(s)?;
            }
        }
        Ok(())
    }
}

fn nir_key(b: &[u8]) -> [u8; 15] {
    let mut k = [0u8; 15];
    if b.len() == 15 {
        k.copy_from_slice(b);
    }
    k
}
