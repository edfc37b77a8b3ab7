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

/// A journal of `all.len()` creations, each followed by a dispensation, written one commit
/// at a time (so one batch per record) under `Always`.
struct Image {
    /// The segment up to its logical end (the pre-zeroed space after it dropped).
    bytes: Vec<u8>,
    /// Where each batch frame starts, in order.
    batches: Vec<usize>,
    /// Where each record frame (inside the batches) starts, in order.
    records: Vec<usize>,
}

fn batch_starts(bytes: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut off = journal::SEGMENT_MAGIC.len();
    while let Some(body) = journal::read_batch(bytes, off) {
        out.push(off);
        off = body.end;
    }
    out
}

fn journal_with(dir: &Path, all: &[RxId]) -> Image {
    {
        let s = Store::open(dir, SyncPolicy::Always).unwrap();
        for (i, id) in all.iter().enumerate() {
            s.create(&record(id, "180027512345678", &[(3, 0)]), Some(T0)).unwrap();
            s.dispense(id, &disp(&[(0, 1)]), &format!("k{i}"), CODE, Some(T0 + 1)).unwrap();
        }
    }
    let path = journal::segment_path(dir, 1);
    let mut bytes = std::fs::read(&path).unwrap();
    let scanned = journal::scan_segment(&bytes, &path, true).unwrap();
    assert!(!scanned.v2);
    // The segment is its batches, then the pre-zeroed space.
    assert!(bytes.len() > scanned.end && bytes[scanned.end..].iter().all(|b| *b == 0));
    bytes.truncate(scanned.end);
    let records: Vec<usize> =
        scanned.records.iter().map(|r| r.start - journal::FRAME_HEADER).collect();
    let batches = batch_starts(&bytes);
    assert_eq!(batches.len(), 2 * all.len());
    assert_eq!(records.len(), 2 * all.len());
    Image { bytes, batches, records }
}

/// A helper that writes journal 2 (one frame per record, no batches): the records of a
/// journal 3 image, framed again one by one after the journal 2 magic. Returns the segment
/// and where each record starts.
fn v2_segment(img: &Image) -> (Vec<u8>, Vec<usize>) {
    let mut out = journal::SEGMENT_MAGIC_V2.to_vec();
    let mut starts = Vec::new();
    for r in &img.records {
        let payload = journal::read_frame(&img.bytes, *r).unwrap();
        starts.push(out.len());
        journal::frame(&mut out, |o| o.extend_from_slice(&img.bytes[payload]));
    }
    (out, starts)
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

fn docs(s: &Store, all: &[RxId]) -> Vec<Option<Vec<u8>>> {
    all.iter().map(|id| s.get(id, Some(T0 + 5)).ok()).collect()
}

#[test]
fn truncation_at_every_offset_of_the_last_three_batches() {
    let src = tempfile::tempdir().unwrap();
    let all = ids(3);
    let img = journal_with(src.path(), &all);
    let (bytes, starts) = (&img.bytes, &img.batches);
    let n = starts.len();
    // Each cut twice: the file ends at the cut (a `Delay` segment, or one whose zeros were
    // cut off), or the cut is followed by pre-zeroed space.
    for (cut, zeros) in
        (starts[n - 3]..bytes.len()).flat_map(|c| [(c, 0), (c, journal::ZERO_CHUNK)])
    {
        let dir = tempfile::tempdir().unwrap();
        let path = journal::segment_path(dir.path(), 1);
        let mut image = bytes[..cut].to_vec();
        image.resize(cut + zeros as usize, 0);
        std::fs::write(&path, &image).unwrap();
        // A batch is whole when the next one starts at or before the cut, or when the bytes
        // cut off are zeros and zeros follow the cut (all its bytes are there).
        let end_of = |i: usize| starts.get(i + 1).copied().unwrap_or(bytes.len());
        let whole = |i: usize| {
            end_of(i) <= cut || (zeros > 0 && bytes[cut..end_of(i)].iter().all(|b| *b == 0))
        };
        let complete = (0..n).take_while(|i| whole(*i)).count();
        let valid_end =
            if complete == 0 { journal::SEGMENT_MAGIC.len() } else { end_of(complete - 1) };
        // Torn bytes: from the valid end to the last non-zero byte.
        let torn =
            bytes[valid_end.min(cut)..cut].iter().rposition(|b| *b != 0).map_or(0, |k| k + 1);
        let want = expected_after(&all, complete);
        let s = Store::open(dir.path(), SyncPolicy::Always).unwrap();
        let what = format!("cut at {cut}, {zeros} zeros");
        assert_eq!(docs(&s, &all), want, "{what}");
        assert_eq!(stat(&s, "truncated_bytes") as usize, torn, "{what}");
        assert_eq!(stat(&s, "journal_bytes") as usize, valid_end, "{what}");
        // The torn bytes are zeros now, and zeros are ahead of the writer again.
        let on_disk = std::fs::read(&path).unwrap();
        assert!(on_disk[valid_end..].iter().all(|b| *b == 0), "{what}");
        assert!(on_disk.len() as u64 >= valid_end as u64 + journal::ZERO_MARGIN, "{what}");
        // Later appends work and survive another reopen.
        let extra = ids(1)[0];
        s.create(&record(&extra, "180027512345678", &[(1, 0)]), Some(T0)).unwrap();
        drop(s);
        let s = Store::open(dir.path(), SyncPolicy::Always).unwrap();
        assert!(s.get(&extra, Some(T0)).is_ok(), "{what}");
        assert_eq!(docs(&s, &all), want, "{what}");
        assert_eq!(stat(&s, "truncated_bytes"), 0);
        assert_eq!(stat(&s, "recovered_records") as usize, complete + 1, "{what}");
    }
}

#[test]
fn truncation_at_every_offset_of_a_journal_2_segment_then_a_journal_3_one() {
    let all = ids(3);
    let img = journal_with(tempfile::tempdir().unwrap().path(), &all);
    let (bytes, starts) = v2_segment(&img);
    let n = starts.len();
    for cut in starts[n - 3]..bytes.len() {
        for sync in [SyncPolicy::Always, SyncPolicy::Delay(Duration::from_millis(1))] {
            let dir = tempfile::tempdir().unwrap();
            let path = journal::segment_path(dir.path(), 1);
            std::fs::write(&path, &bytes[..cut]).unwrap();
            let end_of = |i: usize| starts.get(i + 1).copied().unwrap_or(bytes.len());
            let complete = (0..n).filter(|i| end_of(*i) <= cut).count();
            let valid_end =
                if complete == 0 { journal::SEGMENT_MAGIC.len() } else { end_of(complete - 1) };
            let want = expected_after(&all, complete);
            let s = Store::open(dir.path(), sync).unwrap();
            let what = format!("cut at {cut}, {sync:?}");
            assert_eq!(docs(&s, &all), want, "{what}");
            assert_eq!(stat(&s, "truncated_bytes") as usize, cut - valid_end, "{what}");
            // The journal 2 segment is cut to its records and left alone: the journal goes
            // on in segment 2, journal 3.
            assert_eq!(std::fs::read(&path).unwrap(), bytes[..valid_end], "{what}");
            assert_eq!(stat(&s, "segment"), 2, "{what}");
            let extra = ids(1)[0];
            s.create(&record(&extra, "180027512345678", &[(1, 0)]), Some(T0)).unwrap();
            drop(s);
            assert_eq!(std::fs::read(&path).unwrap(), bytes[..valid_end], "{what}");
            let seg2 = std::fs::read(journal::segment_path(dir.path(), 2)).unwrap();
            assert_eq!(&seg2[..8], journal::SEGMENT_MAGIC);
            let s = Store::open(dir.path(), sync).unwrap();
            assert!(s.get(&extra, Some(T0)).is_ok(), "{what}");
            assert_eq!(docs(&s, &all), want, "{what}");
            assert_eq!(stat(&s, "recovered_records") as usize, complete + 1, "{what}");
            assert_eq!(stat(&s, "segment"), 2, "{what}");
        }
    }
}

#[test]
fn a_journal_2_data_dir_opens_replays_and_goes_on_in_a_journal_3_segment() {
    let all = ids(4);
    let img = journal_with(tempfile::tempdir().unwrap().path(), &all);
    let (v2, _) = v2_segment(&img);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(journal::segment_path(dir.path(), 1), &v2).unwrap();
    let want = expected_after(&all, 2 * all.len());
    let extra = ids(5)[4];
    {
        let s = Store::open(dir.path(), SyncPolicy::Always).unwrap();
        assert_eq!(docs(&s, &all), want);
        assert_eq!(stat(&s, "recovered_records"), 8);
        assert_eq!(stat(&s, "segment"), 2);
        assert_eq!(stat(&s, "journal_bytes"), 8);
    }
    // A crash right after the new segment was created (nothing written to it yet).
    let seg2 = journal::segment_path(dir.path(), 2);
    let header_and_zeros = std::fs::read(&seg2).unwrap();
    assert_eq!(&header_and_zeros[..8], journal::SEGMENT_MAGIC);
    assert!(header_and_zeros[8..].iter().all(|b| *b == 0));
    {
        let s = Store::open(dir.path(), SyncPolicy::Always).unwrap();
        assert_eq!(docs(&s, &all), want);
        assert_eq!(stat(&s, "segment"), 2, "an empty journal 3 segment is appended to");
        s.create(&record(&extra, "180027512345678", &[(1, 0)]), Some(T0)).unwrap();
        s.cancel(&all[0], RPPS, Some(T0 + 2)).unwrap();
    }
    assert_eq!(std::fs::read(journal::segment_path(dir.path(), 1)).unwrap(), v2);
    let s = Store::open(dir.path(), SyncPolicy::Always).unwrap();
    assert_eq!(stat(&s, "recovered_records"), 10);
    assert_eq!(s.len(), 5);
    assert_eq!(json(&s.get(&all[0], Some(T0 + 5)).unwrap())["status"], "cancelled");
    assert_eq!(docs(&s, &all[1..]), want[1..]);
    // A checkpoint covers both formats: one snapshot and one new segment remain.
    s.checkpoint().unwrap();
    drop(s);
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != "LOCK")
        .collect();
    names.sort();
    assert_eq!(names, ["snap-0000000000000003.snap", "wal-0000000000000003.log"]);
    let s = Store::open(dir.path(), SyncPolicy::Always).unwrap();
    assert_eq!(s.len(), 5);
    assert!(s.get(&extra, Some(T0)).is_ok());
}

#[test]
fn a_torn_multi_page_batch_is_a_torn_tail_not_corruption() {
    // The last batch (one `create_many`) spans several 4 KiB pages. A power cut while it is
    // written, not yet synced, may persist its pages in any order: here the first page of
    // it is lost (zeros, as the pre-zeroed space held) and a later page is kept, with whole
    // records in it. Journal 2's rule on records (and journal-prealloc's, c67ff40) finds
    // those valid records after the hole and refuses to open; the batch frame makes it a
    // torn tail: the synced batches come back, nothing of the torn one.
    const PAGE: usize = 4096;
    let all = ids(40);
    let (early, bulk) = all.split_at(4);
    let src = tempfile::tempdir().unwrap();
    let want_early = {
        let s = Store::open(src.path(), SyncPolicy::Always).unwrap();
        for (i, id) in early.iter().enumerate() {
            s.create(&record(id, "180027512345678", &[(3, 0)]), Some(T0)).unwrap();
            s.dispense(id, &disp(&[(0, 1)]), &format!("k{i}"), CODE, Some(T0 + 1)).unwrap();
        }
        let recs: Vec<Vec<u8>> =
            bulk.iter().map(|id| record_with_token(id, &"T".repeat(200))).collect();
        let before = stat(&s, "batches");
        assert_eq!(
            s.create_many(&recs.iter().map(Vec::as_slice).collect::<Vec<_>>(), Some(T0)).unwrap(),
            bulk.len()
        );
        assert_eq!(stat(&s, "batches"), before + 1, "one group commit");
        expected_after(&all, 2 * early.len())
    };
    let path = journal::segment_path(src.path(), 1);
    let file = std::fs::read(&path).unwrap();
    let end = journal::scan_segment(&file, &path, true).unwrap().end;
    let batches = batch_starts(&file[..end]);
    assert_eq!(batches.len(), 2 * early.len() + 1, "the bulk load is one batch (<= MAX_BATCH)");
    let last = batches[batches.len() - 1];
    assert!(end - last > 3 * PAGE, "the last batch spans several pages: {}", end - last);
    // The page holding the batch's start is lost; the pages after it persisted.
    let lost = last / PAGE * PAGE..(last / PAGE + 1) * PAGE;
    let mut image = file.clone();
    image[lost.clone()].fill(0);
    // What the synced batches hold before the lost page, as written.
    image[..last].copy_from_slice(&file[..last]);
    assert!(
        journal::valid_record_after(&image, last),
        "whole records of the torn batch follow the hole (the per-record rule refuses this)"
    );
    for (k, image) in [image.clone(), {
        // Also: only one later page of the batch persisted, the rest of it is zeros.
        let mut one = vec![0u8; file.len()];
        one[..last].copy_from_slice(&file[..last]);
        let keep = lost.end + PAGE..lost.end + 2 * PAGE;
        one[keep.clone()].copy_from_slice(&file[keep]);
        one
    }]
    .into_iter()
    .enumerate()
    {
        assert!(journal::valid_record_after(&image, last), "image {k}");
        let dir = tempfile::tempdir().unwrap();
        let p = journal::segment_path(dir.path(), 1);
        std::fs::write(&p, &image).unwrap();
        let s = Store::open(dir.path(), SyncPolicy::Always).unwrap();
        assert_eq!(docs(&s, &all), want_early, "image {k}");
        assert_eq!(s.len(), early.len());
        assert_eq!(stat(&s, "recovered_records") as usize, 2 * early.len());
        assert_eq!(stat(&s, "journal_bytes") as usize, last);
        let torn = journal::nonzero_end(&image, last) - last;
        assert_eq!(stat(&s, "truncated_bytes") as usize, torn, "image {k}");
        // The torn batch's bytes are zeros now: a later batch is never next to them.
        assert!(std::fs::read(&p).unwrap()[last..].iter().all(|b| *b == 0), "image {k}");
        let extra = ids(41)[40];
        s.create(&record(&extra, "180027512345678", &[(1, 0)]), Some(T0)).unwrap();
        drop(s);
        let s = Store::open(dir.path(), SyncPolicy::Always).unwrap();
        assert!(s.get(&extra, Some(T0)).is_ok(), "image {k}");
        assert_eq!(docs(&s, early), want_early[..early.len()], "image {k}");
        assert_eq!(s.len(), early.len() + 1);
        assert_eq!(stat(&s, "truncated_bytes"), 0);
    }
}

/// A fresh data dir whose only segment is `bytes` with `mask` flipped in byte `off`, and
/// that segment's path.
fn with_flipped_bit(bytes: &[u8], off: usize, mask: u8) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let mut b = bytes.to_vec();
    b[off] ^= mask;
    let path = journal::segment_path(dir.path(), 1);
    std::fs::write(&path, &b).unwrap();
    (dir, path)
}

#[test]
fn flipped_bit_in_the_last_batch_truncates_in_an_earlier_one_refuses() {
    let src = tempfile::tempdir().unwrap();
    let all = ids(3);
    let img = journal_with(src.path(), &all);
    let (bytes, starts) = (&img.bytes, &img.batches);
    let n = starts.len();
    // Tail: a bit of the last batch -> that batch is dropped, the rest comes back.
    let (dir, _) = with_flipped_bit(bytes, starts[n - 1] + 20, 0x10);
    let s = Store::open(dir.path(), SyncPolicy::Always).unwrap();
    assert_eq!(docs(&s, &all), expected_after(&all, n - 1));
    drop(s);
    // Middle: a bit of the second batch (header, record header, payload, last byte), valid
    // batches after it -> open fails, naming the file and the offset of the bad batch.
    for off in [starts[1], starts[1] + 3, starts[1] + 9, starts[1] + 20, starts[2] - 1] {
        let (dir, path) = with_flipped_bit(bytes, off, 0x01);
        let err = Store::open(dir.path(), SyncPolicy::Always).err().unwrap();
        assert_eq!(
            err,
            StoreError::Corrupt {
                file: path.clone(),
                offset: starts[1] as u64,
                reason: "batch fails its length or CRC32C check".into()
            },
            "flip at {off}"
        );
        assert!(err.to_string().starts_with(&format!(
            "{} is corrupted at offset {}: batch fails its length or CRC32C check",
            path.display(),
            starts[1]
        )));
    }
}

#[test]
fn flipped_bit_in_a_journal_2_segment_truncates_at_the_end_refuses_in_the_middle() {
    let all = ids(3);
    let (bytes, starts) = v2_segment(&journal_with(tempfile::tempdir().unwrap().path(), &all));
    let n = starts.len();
    let (dir, _) = with_flipped_bit(&bytes, starts[n - 1] + 12, 0x10);
    let s = Store::open(dir.path(), SyncPolicy::Always).unwrap();
    assert_eq!(docs(&s, &all), expected_after(&all, n - 1));
    drop(s);
    for off in [starts[1], starts[1] + 3, starts[1] + 9, starts[2] - 1] {
        let (dir, path) = with_flipped_bit(&bytes, off, 0x01);
        let err = Store::open(dir.path(), SyncPolicy::Always).err().unwrap();
        assert_eq!(
            err,
            StoreError::Corrupt {
                file: path.clone(),
                offset: starts[1] as u64,
                reason: "record fails its length or CRC32C check".into()
            }
        );
        // Nothing was created next to the refused segment.
        assert!(!journal::segment_path(dir.path(), 2).exists());
    }
}

#[test]
fn corruption_followed_by_valid_batches_refuses_to_open_also_across_zeros() {
    let src = tempfile::tempdir().unwrap();
    let all = ids(3);
    let img = journal_with(src.path(), &all);
    let (bytes, starts) = (&img.bytes, &img.batches);
    let zeros = vec![0u8; 3 * journal::ZERO_CHUNK as usize + 5];
    let flipped = {
        let mut b = bytes.clone();
        b[starts[1] + 20] ^= 0x04;
        b
    };
    let images: Vec<(Vec<u8>, usize)> = vec![
        // Batches, a run of zeros (a lost write), more batches, the zeroed tail.
        ([&bytes[..starts[2]], &zeros, &bytes[starts[2]..], &zeros].concat(), starts[2]),
        // A flipped bit, then zeros, then valid batches.
        ([&flipped[..starts[2]], &zeros, &flipped[starts[2]..]].concat(), starts[1]),
        // A flipped bit with valid batches right after it, and the zeroed tail.
        ([&flipped[..], &zeros].concat(), starts[1]),
        // A flipped bit, valid batches right after it, no zeros.
        (flipped.clone(), starts[1]),
        // Zeros, then one valid batch at the very end of the file.
        ([&bytes[..starts[5]], &zeros, &bytes[starts[5]..]].concat(), starts[5]),
    ];
    for (k, (image, offset)) in images.into_iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let path = journal::segment_path(dir.path(), 1);
        std::fs::write(&path, &image).unwrap();
        let err = Store::open(dir.path(), SyncPolicy::Always).err();
        assert_eq!(
            err,
            Some(StoreError::Corrupt {
                file: path.clone(),
                offset: offset as u64,
                reason: "batch fails its length or CRC32C check".into()
            }),
            "image {k}"
        );
        // The refused file is left as it was.
        assert_eq!(std::fs::read(&path).unwrap(), image, "image {k}");
    }
}

#[test]
fn a_bad_record_inside_a_checked_batch_is_corruption_even_at_the_end() {
    let src = tempfile::tempdir().unwrap();
    let all = ids(2);
    let img = journal_with(src.path(), &all);
    let (bytes, starts) = (&img.bytes, &img.batches);
    let n = starts.len();
    for k in [1, n - 1] {
        // A bit of the record inside batch k flips, and the batch CRC is computed over it
        // (a bug in the writer, or memory corruption before the CRC): the batch checks out,
        // its record does not.
        let mut b = bytes.clone();
        let end = starts.get(k + 1).copied().unwrap_or(b.len());
        b[starts[k] + journal::BATCH_HEADER + 12] ^= 0x02;
        journal::seal_batch(&mut b[starts[k]..end]);
        let dir = tempfile::tempdir().unwrap();
        let path = journal::segment_path(dir.path(), 1);
        std::fs::write(&path, &b).unwrap();
        assert_eq!(
            Store::open(dir.path(), SyncPolicy::Always).err(),
            Some(StoreError::Corrupt {
                file: path.clone(),
                offset: (starts[k] + journal::BATCH_HEADER) as u64,
                reason: "record inside a checked batch fails its length or CRC32C check".into()
            }),
            "batch {k}"
        );
    }
}

#[test]
fn files_of_the_format_that_numbered_lines_from_1_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let all = ids(1);
    let mut bytes = journal_with(dir.path(), &all).bytes;
    bytes[..8].copy_from_slice(b"ORDJRNL1");
    let path = journal::segment_path(dir.path(), 1);
    std::fs::write(&path, &bytes).unwrap();
    let err = Store::open(dir.path(), SyncPolicy::Always).err().unwrap();
    assert!(matches!(err, StoreError::Failed { errno: None, .. }), "{err:?}");
    assert!(
        err.to_string().starts_with(&format!(
            "{} is in format ORDJRNL1, this version reads ORDJRNL2 and ORDJRNL3 only",
            path.display()
        )),
        "{err}"
    );
    // The dispensation record of line 0 says line 0 on disk.
    let img = journal_with(tempfile::tempdir().unwrap().path(), &all);
    let payload = journal::read_frame(&img.bytes, img.records[1]).unwrap();
    let (_, ev) = Event::decode(&img.bytes[payload]).unwrap();
    let Event::Dispense { d, .. } = ev else { panic!("{ev:?}") };
    assert_eq!(d.lines[0].line, 0);
}

#[test]
fn commits_inside_the_zeroed_space_leave_the_file_size_alone_and_a_long_segment_round_trips() {
    use journal::{ZERO_CHUNK, ZERO_MARGIN};
    let dir = tempfile::tempdir().unwrap();
    let path = journal::segment_path(dir.path(), 1);
    let size = || std::fs::metadata(&path).unwrap().len();
    let header = journal::SEGMENT_MAGIC.len() as u64;
    let all = ids(400);
    let mut docs = Vec::new();
    {
        let s = Store::open(dir.path(), SyncPolicy::Always).unwrap();
        assert_eq!((size(), stat(&s, "journal_bytes")), (header + ZERO_CHUNK, header));
        let mut unchanged = 0;
        for (i, id) in all.iter().enumerate() {
            let before = (size(), stat(&s, "journal_bytes"));
            s.create(&record_with_token(id, &"Q".repeat(300)), Some(T0)).unwrap();
            s.dispense(id, &disp(&[(0, 1)]), "k", CODE, Some(T0 + 1)).unwrap();
            // The writer zero-fills after acknowledging: let it finish before looking.
            s.quiesce_journal();
            let logical = stat(&s, "journal_bytes");
            assert!(logical > before.1);
            if before.1 + ZERO_MARGIN + 4096 < before.0 {
                // Far from the zeroed end: the commits change no file size.
                assert_eq!(size(), before.0, "commit {i} grew the file inside the zeros");
                unchanged += 1;
            }
            // Zeros stay ahead of the batches, and the file grows only chunk by chunk.
            assert!(size() >= logical + ZERO_MARGIN, "commit {i}: {} < {logical}", size());
            assert_eq!((size() - header) % ZERO_CHUNK, 0, "commit {i}");
        }
        assert!(unchanged > all.len() / 2, "{unchanged}");
        let logical = stat(&s, "journal_bytes");
        assert!(logical > 3 * ZERO_CHUNK, "the test must cross several chunks: {logical}");
        docs.extend(all.iter().map(|id| s.get(id, Some(T0 + 2)).unwrap()));
        drop(s);
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(journal::scan_segment(&bytes, &path, true).unwrap().end as u64, logical);
        assert!(bytes[logical as usize..].iter().all(|b| *b == 0));
    }
    let logical = {
        let s = Store::open(dir.path(), SyncPolicy::Always).unwrap();
        assert_eq!(stat(&s, "recovered_records"), 2 * all.len() as u64);
        assert_eq!(stat(&s, "truncated_bytes"), 0);
        for (id, doc) in all.iter().zip(&docs) {
            assert_eq!(&s.get(id, Some(T0 + 2)).unwrap(), doc);
        }
        // The writer goes on at the logical end, into the zeros already there.
        let (logical, file) = (stat(&s, "journal_bytes"), size());
        s.cancel(&all[0], RPPS, Some(T0 + 3)).unwrap();
        s.quiesce_journal();
        assert!(stat(&s, "journal_bytes") > logical);
        assert_eq!(size(), file);
        // A checkpoint's new segment is pre-zeroed too, and counts its header only; the old
        // one was cut to its batches first.
        s.checkpoint().unwrap();
        let seg2 = journal::segment_path(dir.path(), 2);
        assert_eq!(std::fs::metadata(&seg2).unwrap().len(), header + ZERO_CHUNK);
        assert_eq!((stat(&s, "segment"), stat(&s, "journal_bytes")), (2, header));
        s.cancel(&all[1], RPPS, Some(T0 + 3)).unwrap();
        assert_eq!(std::fs::metadata(&seg2).unwrap().len(), header + ZERO_CHUNK);
        stat(&s, "journal_bytes")
    };
    let s = Store::open(dir.path(), SyncPolicy::Always).unwrap();
    assert_eq!(stat(&s, "journal_bytes"), logical);
    assert_eq!(stat(&s, "recovered_records"), 1);
    for id in &all[..2] {
        assert_eq!(json(&s.get(id, Some(T0 + 4)).unwrap())["status"], "cancelled");
    }
    assert_eq!(s.len(), all.len());
}

#[test]
fn under_delay_the_segment_grows_with_its_batches_and_sheds_zeros_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = journal::segment_path(dir.path(), 1);
    let size = || std::fs::metadata(&path).unwrap().len();
    let all = ids(20);
    let delay = SyncPolicy::Delay(Duration::from_millis(1));
    {
        // Written under `Always` first: pre-zeroed.
        let s = Store::open(dir.path(), SyncPolicy::Always).unwrap();
        s.create(&record(&all[0], "180027512345678", &[(3, 0)]), Some(T0)).unwrap();
        assert!(size() > stat(&s, "journal_bytes") + journal::ZERO_MARGIN);
    }
    {
        let s = Store::open(dir.path(), delay).unwrap();
        // The zeros are gone: the file is its batches.
        assert_eq!(size(), stat(&s, "journal_bytes"));
        for id in &all[1..] {
            let before = size();
            s.create(&record(id, "180027512345678", &[(3, 0)]), Some(T0)).unwrap();
            assert!(size() > before);
            assert_eq!(size(), stat(&s, "journal_bytes"));
        }
        s.checkpoint().unwrap();
        let seg2 = journal::segment_path(dir.path(), 2);
        assert_eq!(std::fs::metadata(&seg2).unwrap().len(), 8, "no zeros under Delay");
        s.cancel(&all[0], RPPS, Some(T0 + 1)).unwrap();
        assert_eq!(std::fs::metadata(&seg2).unwrap().len(), stat(&s, "journal_bytes"));
    }
    let s = Store::open(dir.path(), SyncPolicy::Always).unwrap();
    assert_eq!(s.len(), all.len());
    assert_eq!(json(&s.get(&all[0], Some(T0 + 2)).unwrap())["status"], "cancelled");
}

#[test]
fn a_group_commit_larger_than_a_batch_is_cut_at_record_boundaries() {
    let dir = tempfile::tempdir().unwrap();
    let all = ids(120);
    let recs: Vec<Vec<u8>> = all.iter().map(|id| record_with_token(id, &"B".repeat(200))).collect();
    let want: Vec<Vec<u8>> = {
        let s = Store::open(dir.path(), SyncPolicy::Always).unwrap();
        let f = stat(&s, "fsyncs");
        assert_eq!(
            s.create_many(&recs.iter().map(Vec::as_slice).collect::<Vec<_>>(), Some(T0)).unwrap(),
            all.len()
        );
        // One group commit, in several batches, each synced before the next.
        assert_eq!(stat(&s, "batches"), 1);
        let path = journal::segment_path(dir.path(), 1);
        let bytes = std::fs::read(&path).unwrap();
        let end = stat(&s, "journal_bytes") as usize;
        let starts = batch_starts(&bytes[..end]);
        assert!(starts.len() >= 3, "{}", starts.len());
        assert_eq!(stat(&s, "fsyncs") - f, starts.len() as u64);
        for (i, b) in starts.iter().enumerate() {
            let body = journal::read_batch(&bytes, *b).unwrap();
            assert!(body.len() <= journal::MAX_BATCH);
            // Not cut earlier than needed: the next record would not have fitted.
            if let Some(next) = starts.get(i + 1) {
                let r = journal::read_frame(&bytes, next + journal::BATCH_HEADER).unwrap();
                assert!(body.len() + r.len() + journal::FRAME_HEADER > journal::MAX_BATCH);
            }
        }
        all.iter().map(|id| s.get(id, Some(T0)).unwrap()).collect()
    };
    let s = Store::open(dir.path(), SyncPolicy::Always).unwrap();
    assert_eq!(stat(&s, "recovered_records"), all.len() as u64);
    let got: Vec<Vec<u8>> = all.iter().map(|id| s.get(id, Some(T0)).unwrap()).collect();
    assert_eq!(got, want);
}

#[test]
fn a_crash_between_a_new_segment_and_its_snapshot_leaves_older_segments_readable() {
    // The journal moved to segment 2 (and 3) but no snapshot was written (a crash, or a
    // failed snapshot): recovery reads segments 1 and 2 as middle segments, where any bad
    // byte is corruption, so their pre-zeroed space must be gone by then.
    let dir = tempfile::tempdir().unwrap();
    let all = ids(3);
    let docs: Vec<Vec<u8>> = {
        let s = Store::open(dir.path(), SyncPolicy::Always).unwrap();
        let Backend::Durable { journal, .. } = &s.backend else { unreachable!() };
        for (i, id) in all.iter().enumerate() {
            s.create(&record(id, "180027512345678", &[(5, 0)]), Some(T0)).unwrap();
            s.dispense(id, &disp(&[(0, 1)]), "k", CODE, Some(T0 + 1)).unwrap();
            if i < 2 {
                assert_eq!(journal.rotate().unwrap().0, i as u64 + 2);
            }
        }
        all.iter().map(|id| s.get(id, Some(T0 + 2)).unwrap()).collect()
    };
    for n in 1..3 {
        let path = journal::segment_path(dir.path(), n);
        let bytes = std::fs::read(&path).unwrap();
        let scanned = journal::scan_segment(&bytes, &path, false);
        assert_eq!(scanned.map(|s| (s.end, s.records.len())), Ok((bytes.len(), 2)), "segment {n}");
    }
    let s = Store::open(dir.path(), SyncPolicy::Always).unwrap();
    assert_eq!(stat(&s, "recovered_records"), 6);
    for (id, doc) in all.iter().zip(&docs) {
        assert_eq!(&s.get(id, Some(T0 + 2)).unwrap(), doc);
    }
}

// ---- property tests -----------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    Dispense { rx: usize, line: u32, qty: u32, key: u8 },
    Cancel { rx: usize },
    Consent { rx: usize, allowed: bool },
    Scan { rx: usize },
    Checkpoint,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..3usize, 0..2u32, 1..4u32, 0..12u8).prop_map(|(rx, line, qty, key)| Op::Dispense { rx, line, qty, key }),
        1 => (0..3usize).prop_map(|rx| Op::Cancel { rx }),
        1 => (0..3usize, any::<bool>()).prop_map(|(rx, allowed)| Op::Consent { rx, allowed }),
        1 => (0..3usize).prop_map(|rx| Op::Scan { rx }),
        1 => Just(Op::Checkpoint),
        1 => Just(Op::Reopen),
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
    fn state_machine_matches_the_model_and_survives_reopen(
        ops in proptest::collection::vec(op(), 1..40), from_v2: bool, delay: bool,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let all = ids(3);
        let mut model: Vec<ModelRx> = Vec::new();
        let mut docs = Vec::new();
        let sync = if delay { SyncPolicy::Delay(Duration::from_millis(1)) } else { SyncPolicy::Always };
        let rec = |id: &RxId| record(id, "180027512345678", &[(3, 1), (2, 0)]);
        if from_v2 {
            // The creations are in a journal 2 segment (a data dir from before journal 3).
            let mut seg = journal::SEGMENT_MAGIC_V2.to_vec();
            for (lsn, id) in (1..).zip(&all) {
                let ev = Event::Create { content: model::build_content(&rec(id), T0).unwrap() };
                journal::frame(&mut seg, |o| ev.encode(lsn, o));
            }
            std::fs::write(journal::segment_path(dir.path(), 1), seg).unwrap();
        }
        {
            let mut s = Store::open(dir.path(), sync).unwrap();
            for id in &all {
                if !from_v2 {
                    s.create(&rec(id), Some(T0)).unwrap();
                }
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
                    Op::Reopen => {
                        let before: Vec<_> = all.iter().map(|id| (s.get(id, Some(T0 + 2)).unwrap(), s.access_log(id).unwrap())).collect();
                        drop(s);
                        s = Store::open(dir.path(), sync).unwrap();
                        prop_assert_eq!(stat(&s, "truncated_bytes"), 0);
                        let after: Vec<_> = all.iter().map(|id| (s.get(id, Some(T0 + 2)).unwrap(), s.access_log(id).unwrap())).collect();
                        prop_assert_eq!(after, before);
                    }
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
        prop_assert_eq!(stat(&s, "truncated_bytes"), 0);
        // Segment 1 keeps its format (journal 2 is never appended to), every later one is
        // journal 3.
        for e in std::fs::read_dir(dir.path()).unwrap() {
            let name = e.unwrap().file_name().into_string().unwrap();
            if name.starts_with("wal-") {
                let head = std::fs::read(dir.path().join(&name)).unwrap()[..8].to_vec();
                let v2 = from_v2 && name == "wal-0000000000000001.log";
                let want = if v2 { journal::SEGMENT_MAGIC_V2 } else { journal::SEGMENT_MAGIC };
                prop_assert_eq!(&head[..], &want[..], "{}", name);
            }
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

/// Under `Always`, group commits start at least `COMMIT_WINDOW` apart: writers that come
/// back to back share syncs instead of paying one each (fails if the window is removed on
/// any disk that syncs faster than the window, as this project's VMs do).
#[test]
fn always_commits_start_at_least_a_commit_window_apart() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), SyncPolicy::Always).unwrap();
    let all = ids(160);
    let stat = |s: &Store, name: &str| s.stats().iter().find(|(k, _)| *k == name).unwrap().1;
    let before = stat(&s, "batches");
    let start = std::time::Instant::now();
    std::thread::scope(|scope| {
        for chunk in all.chunks(20) {
            let s = &s;
            scope.spawn(move || {
                for id in chunk {
                    s.create(&record(id, "180027512345678", &[(1, 0)]), Some(T0)).unwrap();
                }
            });
        }
    });
    let elapsed = start.elapsed();
    let batches = stat(&s, "batches") - before;
    let bound = (elapsed.as_secs_f64() / journal::COMMIT_WINDOW.as_secs_f64()).floor() as u64 + 1;
    assert!(batches <= bound, "{batches} batches in {elapsed:?} (at most {bound})");
    assert_eq!(s.len(), 160);
}
