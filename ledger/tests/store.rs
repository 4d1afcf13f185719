//! The ledger's JSON Lines store: order, a torn last line, rotation, a missing folder.

mod common;

use std::fs::OpenOptions;
use std::io::Write;

use common::rec;
use owl_ledger::store::{files, read_all, Options, CURRENT};
use owl_ledger::Ledger;

#[test]
fn appends_read_back_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (l, w) = Ledger::open(dir.path(), Options::default()).unwrap();
    assert!(w.is_empty());
    for i in 0..20 {
        l.append(rec(i), None);
    }
    l.append_sync(rec(20)).unwrap();
    let (r, w) = read_all(dir.path());
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(r, (0..=20).map(rec).collect::<Vec<_>>());
}

#[test]
fn a_torn_last_line_is_skipped_once_and_cut_on_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (l, _) = Ledger::open(dir.path(), Options::default()).unwrap();
        l.append_sync(rec(1)).unwrap();
        l.append_sync(rec(2)).unwrap();
    }
    let path = dir.path().join(CURRENT);
    let mut f = OpenOptions::new().append(true).open(&path).unwrap();
    f.write_all(br#"{"time":3.0,"source":"ser"#).unwrap();
    drop(f);
    let (r, w) = read_all(dir.path());
    assert_eq!(r, vec![rec(1), rec(2)]);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].contains("torn last line"), "{w:?}");
    // Opening the writer cuts the fragment off, with one warning; new records follow the old.
    let (l, w) = Ledger::open(dir.path(), Options::default()).unwrap();
    assert_eq!(w.len(), 1, "{w:?}");
    l.append_sync(rec(4)).unwrap();
    let (r, w) = read_all(dir.path());
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(r, vec![rec(1), rec(2), rec(4)]);
}

#[test]
fn rotates_by_size_and_reads_across_files() {
    let dir = tempfile::tempdir().unwrap();
    let (l, _) = Ledger::open(dir.path(), Options { max_bytes: 600 }).unwrap();
    for i in 0..12 {
        l.append_sync(rec(i)).unwrap();
    }
    drop(l);
    let f = files(dir.path());
    assert!(f.len() >= 3, "{f:?}");
    for p in &f {
        assert!(std::fs::metadata(p).unwrap().len() < 600 + 400, "{p:?}");
    }
    let (r, w) = read_all(dir.path());
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(r, (0..12).map(rec).collect::<Vec<_>>());
}

#[test]
fn a_missing_ledger_reads_as_empty() {
    let dir = tempfile::tempdir().unwrap();
    let (r, w) = read_all(&dir.path().join("nothing"));
    assert!(r.is_empty() && w.is_empty());
}
