//! Store specification tests: state machine against a model, recovery, corruption.

use std::path::Path;
use std::sync::Arc;

use proptest::prelude::*;

use super::model::{Access, Dispensation, DispensedLine, Event, Intervention};
use super::*;
use crate::id::IdGenerator;

const T0: u64 = 1_750_000_000_000;
const CODE: &str = "0123-4567-89AB-CDEF-GHJK-MNPQ-RS";
const RPPS: &str = "10003456789";

fn ids(n: usize) -> Vec<RxId> {
    let g = IdGenerator::new(7).unwrap();
    (0..n).map(|_| g.next_id().unwrap()).collect()
}

fn record(id: &RxId, nir: &str, quantities: &[(u32, u32)]) -> Vec<u8> {
    let lines: Vec<String> = quantities
        .iter()
        .enumerate()
        .map(|(i, (q, r))| {
            format!(
                r#"{{"label":"Drug {i} \"x\"","cip13":"3400930000000","dosage":"1/day\nmorning","quantity":{q},"renewals":{r},"substitutable":{}}}"#,
                i % 2 == 0
            )
        })
        .collect();
    format!(
        r#"{{"id":"{id}","prescriber_rpps":"{RPPS}","patient":{{"nir":"{nir}","name":"Zoé D.","birth_date":"1980-02-29"}},"lines":[{}],"prescriber_may_view_dispensations":true,"access_code":"{CODE}"}}"#,
        lines.join(",")
    )
    .into_bytes()
}

fn disp(lines: &[(u32, u32)]) -> Vec<u8> {
    let l: Vec<String> = lines
        .iter()
        .map(|(line, q)| {
            format!(
                r#"{{"line":{line},"quantity":{q},"cip13":null,"intervention":{{"kind":"none"}}}}"#
            )
        })
        .collect();
    format!(
        r#"{{"pharmacy_finess":"750000001","pharmacist_rpps":"20000000001","lines":[{}]}}"#,
        l.join(",")
    )
    .into_bytes()
}

fn stat(s: &Store, name: &str) -> u64 {
    s.stats().iter().find(|(k, _)| *k == name).map_or(u64::MAX, |(_, v)| *v)
}

fn json(b: &[u8]) -> serde_json::Value {
    serde_json::from_slice(b).unwrap()
}

#[test]
fn lifecycle_with_renewals_and_idempotency() {
    let s = Store::memory();
    let id = ids(1)[0];
    let doc =
        json(&s.create(&record(&id, "180027512345678", &[(2, 1), (1, 0)]), Some(T0)).unwrap());
    assert_eq!(doc["status"], "active");
    assert_eq!(doc["lines"][0]["remaining"], 4);
    assert_eq!(doc["lines"][0]["label"], "Drug 0 \"x\"");
    assert_eq!(doc["patient"]["name"], "Zoé D.");
    assert_eq!(doc["valid_until"], "2025-09-15T15:06:40.000Z");
    let a = json(&s.dispense(&id, &disp(&[(0, 3)]), "k1", CODE, Some(T0 + 1)).unwrap());
    assert_eq!(a["status"], "partially_dispensed");
    assert_eq!(a["replayed"], false);
    assert_eq!(a["lines"], serde_json::json!([{"line":0,"remaining":1},{"line":1,"remaining":1}]));
    let again = json(&s.dispense(&id, &disp(&[(0, 3)]), "k1", CODE, Some(T0 + 2)).unwrap());
    assert_eq!(again["replayed"], true);
    assert_eq!(again["dispensation_id"], a["dispensation_id"]);
    assert_eq!(
        s.dispense(&id, &disp(&[(0, 2)]), "k2", CODE, Some(T0 + 3)),
        Err(StoreError::Conflict(
            "over-dispensing: line 0 has 1 units remaining, 2 requested".into()
        ))
    );
    assert!(matches!(
        s.dispense(&id, &disp(&[(0, 1)]), "k1", CODE, Some(T0 + 3)),
        Err(StoreError::Conflict(m)) if m.contains("already used")
    ));
    let b = json(&s.dispense(&id, &disp(&[(0, 1), (1, 1)]), "k3", CODE, Some(T0 + 4)).unwrap());
    assert_eq!(b["status"], "dispensed");
    assert!(matches!(s.cancel(&id, RPPS, Some(T0 + 5)), Err(StoreError::Conflict(_))));
    assert_eq!(
        json(&s.get(&id, Some(T0 + 5)).unwrap())["dispensations"].as_array().unwrap().len(),
        2
    );
    assert_eq!(
        s.dispense(&id, &disp(&[(0, 1)]), "k9", "0123-4567-89AB-CDEF-GHJK-MNPQ-RT", Some(T0)),
        Err(StoreError::NotFound(NO_MATCH.into()))
    );
}

#[test]
fn expiry_is_derived_and_cancel_is_final() {
    let s = Store::memory();
    let [a, b] = ids(2)[..] else { unreachable!() };
    s.create(&record(&a, "180027512345678", &[(2, 0)]), Some(T0)).unwrap();
    s.create(&record(&b, "180022A12345678", &[(2, 0)]), Some(T0)).unwrap();
    let later = model::add_months(T0, 3) + 1;
    assert_eq!(json(&s.get(&a, Some(later)).unwrap())["status"], "expired");
    assert!(
        matches!(s.dispense(&a, &disp(&[(0, 1)]), "k", CODE, Some(later)), Err(StoreError::Conflict(m)) if m.contains("expired at"))
    );
    assert_eq!(s.cancel(&b, RPPS, Some(T0)).unwrap(), Status::Cancelled);
    assert_eq!(s.cancel(&b, RPPS, Some(T0)).unwrap(), Status::Cancelled);
    assert!(
        matches!(s.dispense(&b, &disp(&[(0, 1)]), "k", CODE, Some(T0)), Err(StoreError::Conflict(m)) if m.ends_with("is cancelled"))
    );
    assert!(matches!(
        s.create(&record(&b, "180027512345678", &[(1, 0)]), Some(T0)),
        Err(StoreError::Conflict(_))
    ));
}

#[test]
fn durable_state_survives_reopen_and_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let all = ids(30);
    let docs: Vec<Vec<u8>> = {
        let s = Store::open(dir.path(), SyncPolicy::Always).unwrap();
        for (i, id) in all.iter().enumerate() {
            s.create(&record(id, "180027512345678", &[(5, 1)]), Some(T0 + i as u64)).unwrap();
            if i == 10 {
                s.checkpoint().unwrap();
            }
            s.dispense(id, &disp(&[(0, 2)]), "k", CODE, Some(T0 + 100)).unwrap();
            s.scan(id, CODE, "pharmacy:1", Some(T0 + 200)).unwrap();
            if i % 3 == 0 {
                s.set_consent(id, false, Some(T0 + 300)).unwrap();
            }
        }
        s.checkpoint().unwrap();
        s.cancel(&all[0], RPPS, Some(T0 + 400)).unwrap();
        all.iter().map(|id| s.get(id, Some(T0 + 500)).unwrap()).collect()
    };
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != "LOCK")
        .collect();
    assert_eq!(names.len(), 2, "one snapshot and one segment remain: {names:?}");
    let s = Store::open(dir.path(), SyncPolicy::Always).unwrap();
    assert_eq!(s.len(), 30);
    for (id, doc) in all.iter().zip(&docs) {
        assert_eq!(&s.get(id, Some(T0 + 500)).unwrap(), doc);
    }
    assert_eq!(s.by_patient("180027512345678", 3, None).unwrap(), vec![all[29], all[28], all[27]]);
    assert_eq!(s.by_patient("180027512345678", 2, Some(all[28])).unwrap(), vec![all[27], all[26]]);
    assert_eq!(json(&s.access_log(&all[3]).unwrap())["access_log"][0]["actor"], "pharmacy:1");
}

/// A creation record with its QR token text (`qr_token`).
fn record_with_token(id: &RxId, token: &str) -> Vec<u8> {
    let plain = String::from_utf8(record(id, "180027512345678", &[(2, 0)])).unwrap();
    let with = plain.trim_end_matches('}').to_owned()
        + &format!(r#","qr_token":{}}}"#, serde_json::json!(token));
    with.into_bytes()
}

#[test]
fn the_qr_token_text_is_kept_across_journal_and_snapshot_and_never_in_documents() {
    let dir = tempfile::tempdir().unwrap();
    let all = ids(4);
    let token = |i: usize| format!("RX1:/{i}ABC $%*+-./: {}", "Z".repeat(140));
    {
        let s = Store::open(dir.path(), SyncPolicy::Always).unwrap();
        s.create(&record_with_token(&all[0], &token(0)), Some(T0)).unwrap();
        s.checkpoint().unwrap(); // all[0] now lives in the snapshot, the others in the journal
        s.create(&record_with_token(&all[1], &token(1)), Some(T0)).unwrap();
        let (_, lsn) = s.create_submit(&record_with_token(&all[2], &token(2)), Some(T0)).unwrap();
        s.wait(lsn).unwrap();
        s.create(&record(&all[3], "180027512345678", &[(1, 0)]), Some(T0)).unwrap();
        for (i, id) in all.iter().enumerate().take(3) {
            assert_eq!(s.qr_token(id).unwrap().as_deref(), Some(token(i).as_str()));
        }
    }
    let s = Store::open(dir.path(), SyncPolicy::Always).unwrap();
    for (i, id) in all.iter().enumerate().take(3) {
        assert_eq!(s.qr_token(id).unwrap().as_deref(), Some(token(i).as_str()));
        let doc = String::from_utf8(s.get(id, Some(T0)).unwrap()).unwrap();
        assert!(!doc.contains("RX1:") && !doc.contains("qr_token"), "{doc}");
        let scanned = String::from_utf8(s.scan(id, CODE, "pharmacy:1", Some(T0)).unwrap());
        assert!(!scanned.unwrap().contains("RX1:"));
    }
    assert_eq!(s.qr_token(&all[3]).unwrap(), None);
    assert!(matches!(s.qr_token(&ids(5)[4]), Err(StoreError::NotFound(_))));
}

#[test]
fn a_qr_token_text_must_be_printable_ascii_of_bounded_length() {
    let s = Store::memory();
    let id = ids(1)[0];
    for bad in ["", "tab\there", "é", &"A".repeat(513)] {
        let err = s.create(&record_with_token(&id, bad), Some(T0)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "qr_token: expected 1 to 512 printable ASCII characters",
            "{bad:?}"
        );
    }
    s.create(&record_with_token(&id, &"A".repeat(512)), Some(T0)).unwrap();
    assert_eq!(s.qr_token(&id).unwrap().map(|t| t.len()), Some(512));
}

#[test]
fn a_scan_is_logged_at_once_and_waits_for_no_write_or_fsync() {
    let dir = tempfile::tempdir().unwrap();
    let id = ids(1)[0];
    {
        let s = Store::open(dir.path(), SyncPolicy::Always).unwrap();
        s.create(&record(&id, "180027512345678", &[(5, 0)]), Some(T0)).unwrap();
        let before = (stat(&s, "records"), stat(&s, "batches"), stat(&s, "fsyncs"));
        s.stall_journal(true);
        // The writer is stalled: a scan that waited for its record would never return.
        let doc = json(&s.scan(&id, CODE, "pharmacy:1", Some(T0 + 1)).unwrap());
        assert_eq!(doc["id"], id.to_string());
        s.scan(&id, CODE, "pharmacy:2", Some(T0 + 2)).unwrap();
        let log = json(&s.access_log(&id).unwrap());
        let actors: Vec<&str> = log["access_log"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["actor"].as_str().unwrap())
            .collect();
        assert_eq!(actors, ["pharmacy:1", "pharmacy:2"]);
        assert_eq!((stat(&s, "records"), stat(&s, "batches"), stat(&s, "fsyncs")), before);
        // A dispensation does wait for its fdatasync.
        std::thread::scope(|sc| {
            let h = sc.spawn(|| s.dispense(&id, &disp(&[(0, 1)]), "k", CODE, Some(T0 + 3)));
            std::thread::sleep(Duration::from_millis(150));
            assert!(!h.is_finished(), "a dispensation returned before its record was written");
            s.stall_journal(false);
            h.join().unwrap().unwrap();
        });
        // The scans went out with (or before) the dispensation's batch.
        assert_eq!(stat(&s, "records"), before.0 + 3);
        assert!(stat(&s, "fsyncs") > before.2);
    }
    let s = Store::open(dir.path(), SyncPolicy::Always).unwrap();
    let log = json(&s.access_log(&id).unwrap());
    assert_eq!(log["access_log"].as_array().unwrap().len(), 2);
    assert_eq!(log["access_log"][1]["actor"], "pharmacy:2");
    assert_eq!(json(&s.dispensations(&id).unwrap())["dispensations"].as_array().unwrap().len(), 1);
}

#[test]
fn submitted_writes_are_answered_at_once_and_durable_when_the_wake_fd_says_so() {
    use std::io::Read;
    use std::os::unix::io::FromRawFd;
    let dir = tempfile::tempdir().unwrap();
    let all = ids(2);
    let (id, other) = (all[0], all[1]);
    let lsns = {
        let s = Store::open(dir.path(), SyncPolicy::Always).unwrap();
        s.create(&record(&id, "180027512345678", &[(5, 0)]), Some(T0)).unwrap();
        let fd = s.wake_fd().unwrap();
        // Borrow the store's fd as a file, never closing it (the store owns it).
        // SAFETY: `fd` is open for as long as `s` lives, which outlives `wake`; ManuallyDrop
        // keeps `wake` from closing it.
        let wake = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(fd) });
        let drain = || {
            let mut buf = [0u8; 64];
            let mut n = 0;
            while let Ok(k) = (&*wake).read(&mut buf) {
                n += k;
            }
            n
        };
        drain();
        s.stall_journal(true);
        let durable = s.durable_lsn();
        let Submitted::Queued(answer, lsn) =
            s.dispense_submit(&id, &disp(&[(0, 2)]), "k1", CODE, Some(T0 + 1)).unwrap()
        else {
            panic!("a first dispensation is queued")
        };
        assert!(lsn > durable);
        assert_eq!(json(&answer)["lines"][0]["remaining"], 3);
        // Not durable, so not applied, not visible, and nothing on the wake fd.
        assert_eq!(s.durable_lsn(), durable);
        assert_eq!(json(&s.get(&id, Some(T0 + 2)).unwrap())["lines"][0]["remaining"], 5);
        assert_eq!(drain(), 0);
        // The prescription is busy: a second write is not done, and says so.
        assert_eq!(
            s.dispense_submit(&id, &disp(&[(0, 1)]), "k2", CODE, Some(T0 + 2)).unwrap(),
            Submitted::Busy
        );
        let (new_id, create_lsn) =
            s.create_submit(&record(&other, "180027512345678", &[(1, 0)]), Some(T0 + 2)).unwrap();
        assert_eq!((new_id, create_lsn), (other, lsn + 1));
        assert!(matches!(s.get(&other, Some(T0 + 2)), Err(StoreError::NotFound(_))));
        s.stall_journal(false);
        s.wait(create_lsn).unwrap();
        assert!(s.durable_lsn() >= create_lsn);
        // The writer wakes the fd after it made the batch durable (just after, so poll).
        let woken = (0..1000).any(|_| {
            std::thread::sleep(Duration::from_millis(1));
            drain() > 0
        });
        assert!(woken, "the writer wakes the fd after a durable batch");
        assert_eq!(json(&s.get(&id, Some(T0 + 3)).unwrap())["lines"][0]["remaining"], 3);
        assert_eq!(json(&s.get(&other, Some(T0 + 3)).unwrap())["id"], other.to_string());
        // The same key again is a replay: nothing to write, nothing to wait for.
        let Submitted::Done(replay) =
            s.dispense_submit(&id, &disp(&[(0, 2)]), "k1", CODE, Some(T0 + 4)).unwrap()
        else {
            panic!("a replay is done at once")
        };
        assert_eq!(json(&replay)["replayed"], true);
        (lsn, create_lsn)
    };
    let s = Store::open(dir.path(), SyncPolicy::Always).unwrap();
    assert!(lsns.0 < lsns.1);
    assert_eq!(json(&s.get(&id, Some(T0 + 5)).unwrap())["lines"][0]["remaining"], 3);
    assert_eq!(s.len(), 2);
}

#[test]
fn a_memory_store_applies_submitted_writes_at_once() {
    let s = Store::memory();
    let id = ids(1)[0];
    assert_eq!(s.wake_fd(), None);
    assert_eq!(s.create_submit(&record(&id, "180027512345678", &[(2, 0)]), Some(T0)).unwrap().1, 0);
    let Submitted::Queued(_, lsn) =
        s.dispense_submit(&id, &disp(&[(0, 1)]), "k", CODE, Some(T0 + 1)).unwrap()
    else {
        panic!("queued")
    };
    assert_eq!(lsn, 0);
    assert!(s.durable_lsn() >= lsn);
    assert_eq!(json(&s.get(&id, Some(T0 + 2)).unwrap())["lines"][0]["remaining"], 1);
}

#[test]
fn scans_racing_a_pending_dispensation_keep_both_across_a_snapshot() {
    // A scan applied at once may get a higher LSN than a dispensation of the same
    // prescription still waiting for its fdatasync: the two watermarks keep replay exact.
    let dir = tempfile::tempdir().unwrap();
    let id = ids(1)[0];
    let want = {
        let s = Store::open(dir.path(), SyncPolicy::Always).unwrap();
        s.create(&record(&id, "180027512345678", &[(5, 0)]), Some(T0)).unwrap();
        s.stall_journal(true);
        let lsn = stat(&s, "next_lsn");
        std::thread::scope(|sc| {
            let h = sc.spawn(|| s.dispense(&id, &disp(&[(0, 1)]), "k", CODE, Some(T0 + 1)));
            // Wait until the dispensation has its LSN (queued, BUSY), then scan past it.
            while stat(&s, "next_lsn") == lsn {
                std::thread::yield_now();
            }
            assert!(s.index.with(&id, |slot| slot.busy()).unwrap());
            s.scan(&id, CODE, "pharmacy:1", Some(T0 + 2)).unwrap();
            s.stall_journal(false);
            h.join().unwrap().unwrap();
        });
        s.checkpoint().unwrap();
        s.scan(&id, CODE, "pharmacy:2", Some(T0 + 3)).unwrap();
        s.dispense(&id, &disp(&[(0, 1)]), "k2", CODE, Some(T0 + 4)).unwrap();
        (s.get(&id, Some(T0 + 5)).unwrap(), s.access_log(&id).unwrap())
    };
    let s = Store::open(dir.path(), SyncPolicy::Always).unwrap();
    assert_eq!((s.get(&id, Some(T0 + 5)).unwrap(), s.access_log(&id).unwrap()), want);
    assert_eq!(json(&want.0)["lines"][0]["remaining"], 3);
    assert_eq!(json(&want.1)["access_log"].as_array().unwrap().len(), 2);
}

#[test]
fn a_scan_after_a_journal_failure_or_close_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let id = ids(1)[0];
    let s = Store::open(dir.path(), SyncPolicy::Always).unwrap();
    s.create(&record(&id, "180027512345678", &[(5, 0)]), Some(T0)).unwrap();
    s.close().unwrap();
    assert_eq!(s.scan(&id, CODE, "pharmacy:1", Some(T0 + 1)), Err(StoreError::closed()));
    assert_eq!(json(&s.access_log(&id).unwrap())["access_log"].as_array().unwrap().len(), 0);
    let m = Store::memory();
    m.create(&record(&id, "180027512345678", &[(5, 0)]), Some(T0)).unwrap();
    m.close().unwrap();
    assert_eq!(m.scan(&id, CODE, "pharmacy:1", Some(T0 + 1)), Err(StoreError::closed()));
}

#[test]
fn create_many_is_all_or_nothing_and_equals_creating_one_by_one() {
    let dir = tempfile::tempdir().unwrap();
    let all = ids(40);
    let recs: Vec<Vec<u8>> = all
        .iter()
        .enumerate()
        .map(|(i, id)| record(id, "180027512345678", &[(1 + i as u32 % 3, i as u32 % 2)]))
        .collect();
    let one_by_one = Store::memory();
    for r in &recs {
        one_by_one.create(r, Some(T0)).unwrap();
    }
    let s = Store::open(dir.path(), SyncPolicy::Always).unwrap();
    let slices: Vec<&[u8]> = recs.iter().map(Vec::as_slice).collect();
    let fsyncs = stat(&s, "fsyncs");
    // A bad record anywhere refuses the batch, naming its index.
    let mut bad = recs[..30].to_vec();
    bad[17] = String::from_utf8(bad[17].clone())
        .unwrap()
        .replace(r#""quantity":3"#, r#""quantity":0"#)
        .into_bytes();
    let bad_slices: Vec<&[u8]> = bad.iter().map(Vec::as_slice).collect();
    assert_eq!(
        s.create_many(&bad_slices, Some(T0)),
        Err(StoreError::Invalid {
            field: "records[17].lines[0].quantity".into(),
            message: "1 to 9999 units, got 0".into()
        })
    );
    assert_eq!(
        s.create_many(&[slices[0], b"{}"], Some(T0)),
        Err(StoreError::Invalid {
            field: "records[1]".into(),
            message: "missing field `id` at line 1 column 2".into()
        })
    );
    assert_eq!(s.len(), 0);
    assert_eq!(s.create_many(&slices[..10], Some(T0)), Ok(10));
    // An ID already there, or twice in the batch: refused whole, nothing added.
    let dup = [slices[10], slices[11], slices[3]];
    assert_eq!(
        s.create_many(&dup, Some(T0)),
        Err(StoreError::Conflict(format!("records[2]: prescription {} already exists", all[3])))
    );
    let twice = [slices[10], slices[11], slices[10]];
    assert_eq!(
        s.create_many(&twice, Some(T0)),
        Err(StoreError::Conflict(format!("records[2]: prescription {} already exists", all[10])))
    );
    assert_eq!(s.len(), 10);
    assert!(s.get(&all[10], Some(T0)).is_err());
    // The refused IDs were released: they can be created now.
    assert_eq!(s.create_many(&slices[10..], Some(T0)), Ok(30));
    assert_eq!(s.create_many(&[], Some(T0)), Ok(0));
    assert!(stat(&s, "fsyncs") - fsyncs <= 3, "one group commit per batch");
    let same = |s: &Store| {
        for id in &all {
            assert_eq!(s.get(id, Some(T0 + 1)).unwrap(), one_by_one.get(id, Some(T0 + 1)).unwrap());
        }
        assert_eq!(
            s.by_patient("180027512345678", 100, None).unwrap(),
            one_by_one.by_patient("180027512345678", 100, None).unwrap()
        );
    };
    same(&s);
    drop(s);
    same(&Store::open(dir.path(), SyncPolicy::Always).unwrap());
}

#[test]
fn a_second_process_cannot_open_the_same_directory() {
    let dir = tempfile::tempdir().unwrap();
    let _s = Store::open(dir.path(), SyncPolicy::Always).unwrap();
    // flock is per open file description: a second open in this process is refused too.
    assert!(matches!(Store::open(dir.path(), SyncPolicy::Always), Err(StoreError::Failed { .. })));
}

#[test]
fn racing_dispensers_never_over_dispense() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(Store::open(dir.path(), SyncPolicy::Always).unwrap());
    let all = ids(3);
    for id in &all {
        s.create(&record(id, "180027512345678", &[(10, 0)]), Some(T0)).unwrap();
    }
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let s = s.clone();
            let all = all.clone();
            std::thread::spawn(move || {
                let mut got = 0;
                for i in 0..20 {
                    let id = &all[i % 3];
                    // Keys shared by pairs of threads: each must be applied once.
                    let key = format!("k{}-{i}", t / 2);
                    if let Ok(a) = s.dispense(id, &disp(&[(0, 1)]), &key, CODE, Some(T0 + 1)) {
                        if json(&a)["replayed"] == false {
                            got += 1;
                        }
                    }
                }
                got
            })
        })
        .collect();
    let total: u32 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(total, 30);
    for id in &all {
        let doc = json(&s.get(id, Some(T0 + 2)).unwrap());
        assert_eq!(doc["lines"][0]["remaining"], 0);
        let keys: Vec<&str> = doc["dispensations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["dispensation_id"].as_str().unwrap())
            .collect();
        assert_eq!(keys.len(), 10);
    }
}

// ---- recovery: torn tails and corruption --------------------------------------------------

/// Builds a journal with `n` records; returns the segment bytes and the record boundaries.
fn journal_with(dir: &Path, all: &[RxId]) -> (Vec<u8>, Vec<usize>) {
    {
        let s = Store::open(dir, SyncPolicy::Always).unwrap();
        for (i, id) in all.iter().enumerate() {
            s.create(&record(id, "180027512345678", &[(3, 0)]), Some(T0)).unwrap();
            s.dispense(id, &disp(&[(0, 1)]), &format!("k{i}"), CODE, Some(T0 + 1)).unwrap();
        }
    }
    let bytes = std::fs::read(journal::segment_path(dir, 1)).unwrap();
    let (recs, end) =
        journal::scan_records(&bytes, journal::SEGMENT_MAGIC, Path::new("x"), false).unwrap();
    assert_eq!(end, bytes.len());
    let starts = recs.iter().map(|r| r.start - journal::FRAME_HEADER).collect();
    (bytes, starts)
}

/// Documents of every visible prescription after applying the first `k` records.
fn expected_after(all: &[RxId], k: usize) -> Vec<Option<Vec<u8>>> {
    let s = Store::memory();
    for (i, id) in all.iter().enumerate() {
        if 2 * i < k {
            s.create(&record(id, "180027512345678", &[(3, 0)]), Some(T0)).unwrap();
        }
        if 2 * i + 1 < k {
            s.dispense(id, &disp(&[(0, 1)]), &format!("k{i}"), CODE, Some(T0 + 1)).unwrap();
        }
    }
    all.iter().map(|id| s.get(id, Some(T0 + 5)).ok()).collect()
}

#[test]
fn truncation_at_every_offset_of_the_last_three_records() {
    let src = tempfile::tempdir().unwrap();
    let all = ids(3);
    let (bytes, starts) = journal_with(src.path(), &all);
    let n = starts.len();
    let from = starts[n - 3];
    for cut in from..bytes.len() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(journal::segment_path(dir.path(), 1), &bytes[..cut]).unwrap();
        // A record is complete when the next one starts at or before the cut.
        let end_of = |i: usize| starts.get(i + 1).copied().unwrap_or(bytes.len());
        let complete = (0..n).filter(|i| end_of(*i) <= cut).count();
        let valid_end =
            if complete == 0 { journal::SEGMENT_MAGIC.len() } else { end_of(complete - 1) };
        let want = expected_after(&all, complete);
        let s = Store::open(dir.path(), SyncPolicy::Always).unwrap();
        let got: Vec<Option<Vec<u8>>> = all.iter().map(|id| s.get(id, Some(T0 + 5)).ok()).collect();
        assert_eq!(got, want, "cut at {cut}");
        assert_eq!(stat(&s, "truncated_bytes") as usize, cut - valid_end, "cut at {cut}");
        // Later appends work and survive another reopen.
        let extra = ids(1)[0];
        s.create(&record(&extra, "180027512345678", &[(1, 0)]), Some(T0)).unwrap();
        drop(s);
        let s = Store::open(dir.path(), SyncPolicy::Always).unwrap();
        assert!(s.get(&extra, Some(T0)).is_ok(), "cut at {cut}");
        assert_eq!(stat(&s, "truncated_bytes"), 0);
    }
}

#[test]
fn flipped_bit_in_the_tail_truncates_in_the_middle_refuses() {
    let src = tempfile::tempdir().unwrap();
    let all = ids(3);
    let (bytes, starts) = journal_with(src.path(), &all);
    let n = starts.len();
    // Tail: a bit of the last record -> that record is dropped, the rest comes back.
    let dir = tempfile::tempdir().unwrap();
    let mut b = bytes.clone();
    b[starts[n - 1] + 12] ^= 0x10;
    std::fs::write(journal::segment_path(dir.path(), 1), &b).unwrap();
    let s = Store::open(dir.path(), SyncPolicy::Always).unwrap();
    let got: Vec<Option<Vec<u8>>> = all.iter().map(|id| s.get(id, Some(T0 + 5)).ok()).collect();
    assert_eq!(got, expected_after(&all, n - 1));
    drop(s);
    // Middle: a bit of the second record, valid records after it -> open fails, naming
    // the file and the offset of the bad record.
    for off in [starts[1], starts[1] + 3, starts[1] + 9, starts[2] - 1] {
        let dir = tempfile::tempdir().unwrap();
        let mut b = bytes.clone();
        b[off] ^= 0x01;
        let path = journal::segment_path(dir.path(), 1);
        std::fs::write(&path, &b).unwrap();
        let err = Store::open(dir.path(), SyncPolicy::Always).err().unwrap();
        assert_eq!(
            err,
            StoreError::Corrupt {
                file: path.clone(),
                offset: starts[1] as u64,
                reason: "record fails its length or CRC32C check".into()
            }
        );
        assert!(err.to_string().starts_with(&format!(
            "{} is corrupted at offset {}",
            path.display(),
            starts[1]
        )));
    }
}

#[test]
fn files_of_the_format_that_numbered_lines_from_1_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let all = ids(1);
    let (mut bytes, _) = journal_with(dir.path(), &all);
    bytes[..8].copy_from_slice(b"ORDJRNL1");
    let path = journal::segment_path(dir.path(), 1);
    std::fs::write(&path, &bytes).unwrap();
    let err = Store::open(dir.path(), SyncPolicy::Always).err().unwrap();
    assert!(matches!(err, StoreError::Failed { errno: None, .. }), "{err:?}");
    assert!(
        err.to_string().starts_with(&format!(
            "{} is in format ORDJRNL1, this version reads ORDJRNL2 only",
            path.display()
        )),
        "{err}"
    );
    // The dispensation record of line 0 says line 0 on disk.
    let (bytes, starts) = journal_with(tempfile::tempdir().unwrap().path(), &all);
    let payload = &bytes[starts[1] + journal::FRAME_HEADER..];
    let (_, ev) = Event::decode(payload).unwrap();
    let Event::Dispense { d, .. } = ev else { panic!("{ev:?}") };
    assert_eq!(d.lines[0].line, 0);
}

// ---- property tests -----------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    Dispense { rx: usize, line: u32, qty: u32, key: u8 },
    Cancel { rx: usize },
    Consent { rx: usize, allowed: bool },
    Scan { rx: usize },
    Checkpoint,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..3usize, 0..2u32, 1..4u32, 0..12u8).prop_map(|(rx, line, qty, key)| Op::Dispense { rx, line, qty, key }),
        1 => (0..3usize).prop_map(|rx| Op::Cancel { rx }),
        1 => (0..3usize, any::<bool>()).prop_map(|(rx, allowed)| Op::Consent { rx, allowed }),
        1 => (0..3usize).prop_map(|rx| Op::Scan { rx }),
        1 => Just(Op::Checkpoint),
    ]
}

/// The model: remaining per line, cancelled, key -> (line, qty).
#[derive(Default, Clone)]
struct ModelRx {
    remaining: Vec<u32>,
    cancelled: bool,
    keys: Vec<(u8, u32, u32)>,
    scans: usize,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn state_machine_matches_the_model_and_survives_reopen(ops in proptest::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let all = ids(3);
        let mut model: Vec<ModelRx> = Vec::new();
        let mut docs = Vec::new();
        {
            let s = Store::open(dir.path(), SyncPolicy::Always).unwrap();
            for id in &all {
                s.create(&record(id, "180027512345678", &[(3, 1), (2, 0)]), Some(T0)).unwrap();
                model.push(ModelRx { remaining: vec![6, 2], ..ModelRx::default() });
            }
            for o in &ops {
                match o.clone() {
                    Op::Dispense { rx, line, qty, key } => {
                        let m = &mut model[rx];
                        let r = s.dispense(&all[rx], &disp(&[(line, qty)]), &format!("key{key}"), CODE, Some(T0 + 1));
                        if let Some((_, l, q)) = m.keys.iter().find(|k| k.0 == key).copied() {
                            if (l, q) == (line, qty) {
                                prop_assert_eq!(json(&r.unwrap())["replayed"].clone(), true);
                            } else {
                                prop_assert!(matches!(r, Err(StoreError::Conflict(_))));
                            }
                        } else if m.cancelled || m.remaining.iter().all(|r| *r == 0) || qty > m.remaining[line as usize] {
                            prop_assert!(matches!(r, Err(StoreError::Conflict(_))), "{:?}", r);
                        } else {
                            let a = json(&r.unwrap());
                            m.remaining[line as usize] -= qty;
                            m.keys.push((key, line, qty));
                            prop_assert_eq!(a["lines"][line as usize]["remaining"].as_u64(), Some(u64::from(m.remaining[line as usize])));
                        }
                    }
                    Op::Cancel { rx } => {
                        let m = &mut model[rx];
                        let r = s.cancel(&all[rx], RPPS, Some(T0 + 1));
                        if !m.cancelled && m.remaining.iter().all(|r| *r == 0) {
                            prop_assert!(matches!(r, Err(StoreError::Conflict(_))));
                        } else {
                            prop_assert_eq!(r, Ok(Status::Cancelled));
                            m.cancelled = true;
                        }
                    }
                    Op::Consent { rx, allowed } => s.set_consent(&all[rx], allowed, Some(T0 + 1)).unwrap(),
                    Op::Scan { rx } => {
                        s.scan(&all[rx], CODE, "p", Some(T0 + 1)).unwrap();
                        model[rx].scans += 1;
                    }
                    Op::Checkpoint => s.checkpoint().unwrap(),
                }
            }
            for (id, m) in all.iter().zip(&model) {
                let doc = s.get(id, Some(T0 + 2)).unwrap();
                let v = json(&doc);
                let status = if m.cancelled { "cancelled" } else if m.remaining.iter().all(|r| *r == 0) { "dispensed" } else if m.keys.is_empty() { "active" } else { "partially_dispensed" };
                prop_assert_eq!(v["status"].as_str(), Some(status));
                prop_assert_eq!(v["lines"][0]["remaining"].as_u64(), Some(u64::from(m.remaining[0])));
                prop_assert_eq!(v["dispensations"].as_array().map(Vec::len), Some(m.keys.len()));
                prop_assert_eq!(json(&s.access_log(id).unwrap())["access_log"].as_array().map(Vec::len), Some(m.scans));
                docs.push(doc);
            }
        }
        let s = Store::open(dir.path(), SyncPolicy::Always).unwrap();
        for (id, doc) in all.iter().zip(&docs) {
            prop_assert_eq!(&s.get(id, Some(T0 + 2)).unwrap(), doc);
        }
    }

    #[test]
    fn events_round_trip(
        at: u64, key in "[!-~]{1,20}", actor in "\\PC{0,30}", allowed: bool, qty in 1u32..9999,
        cip in proptest::option::of(any::<[u8; 13]>()), motif in proptest::option::of("[A-Z0-9]{1,16}"),
        agreed in proptest::option::of(any::<u64>()), kind in 0u8..3, lsn: u64,
    ) {
        let id = ids(1)[0];
        let content = model::build_content(&record(&id, "180027512345678", &[(3, 1)]), T0).unwrap();
        let kind = [Intervention::None, Intervention::Substitution, Intervention::Adjustment][kind as usize];
        let d = Dispensation {
            at, key: key.into(), finess: *b"750000001", rpps: *b"20000000001",
            lines: vec![DispensedLine { line: 0, quantity: qty, cip13: cip, kind, motif: motif.map(Into::into), agreed_at: agreed }].into(),
        };
        for ev in [
            Event::Create { content },
            Event::Dispense { id, d },
            Event::Cancel { id, at },
            Event::Consent { id, allowed, at },
            Event::Scan { id, access: Access { at, actor: actor.clone().into() } },
        ] {
            let mut buf = Vec::new();
            ev.encode(lsn, &mut buf);
            prop_assert_eq!(Event::decode(&buf), Ok((lsn, ev.clone())));
            // Every strict prefix is refused, never misread or a panic.
            for cut in 0..buf.len() {
                prop_assert!(Event::decode(&buf[..cut]).is_err());
            }
        }
    }
}
