//! A write the disk refuses part-way (here a file size limit, RLIMIT_FSIZE, as a full
//! disk or a quota would) leaves the ledger valid JSON Lines: the torn bytes are cut
//! back, the append says why it failed, and the record is written once the disk takes
//! writes again. Nothing acknowledged before is touched.
//!
//! This file holds one test on purpose: the limit is per process, and each file under
//! tests/ is a process of its own, so no other test's writes meet the limit.
#![cfg(unix)]

mod common;

use common::rec;
use owl_ledger::store::{read_all, Options, CURRENT};
use owl_ledger::Ledger;

/// Sets the soft file size limit of this process (the hard one stays, so it can be raised again).
fn limit_file_size(bytes: Option<u64>) {
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        assert_eq!(libc::getrlimit(libc::RLIMIT_FSIZE, &mut r), 0);
        r.rlim_cur = bytes.map_or(r.rlim_max, |b| b as libc::rlim_t);
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &r), 0);
    }
}

#[test]
fn a_write_cut_short_by_the_disk_is_cut_back_reported_and_retried() {
    // Past the limit a write fails with EFBIG instead of killing the process.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(CURRENT);
    let (l, w) = Ledger::open(dir.path(), Options::default()).unwrap();
    assert!(w.is_empty(), "{w:?}");
    for i in 1..=3 {
        l.append_sync(rec(i)).unwrap();
    }
    let good = std::fs::metadata(&path).unwrap().len();

    // Room for a third of the next line: the kernel writes that much, then refuses.
    let line = serde_json::to_vec(&rec(4)).unwrap().len() as u64 + 1;
    limit_file_size(Some(good + line / 3));
    let err = l.append_sync(rec(4)).unwrap_err();
    assert!(err.contains("cannot write the ledger") && err.contains("retried"), "{err}");
    // The torn third of a line is gone: the file is its last good length and reads clean.
    assert_eq!(std::fs::metadata(&path).unwrap().len(), good);
    let (r, w) = read_all(dir.path());
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(r, vec![rec(1), rec(2), rec(3)]);

    // Still refused: the held record and the new one both wait; the file stays whole.
    let err = l.append_sync(rec(5)).unwrap_err();
    assert!(err.contains("2 records held"), "{err}");
    assert_eq!(std::fs::metadata(&path).unwrap().len(), good);

    // The disk takes writes again: both held records land before the new one.
    limit_file_size(None);
    l.append_sync(rec(6)).unwrap();
    drop(l);
    let (r, w) = read_all(dir.path());
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(r, (1..=6).map(rec).collect::<Vec<_>>());

    // A reopened ledger finds nothing torn and appends after them.
    let (l, w) = Ledger::open(dir.path(), Options::default()).unwrap();
    assert!(w.is_empty(), "{w:?}");
    l.append_sync(rec(7)).unwrap();
    let (r, _) = read_all(dir.path());
    assert_eq!(r.len(), 7);
}
