//! Faults of the file system under a database, on a small tmpfs each test mounts: a
//! disk that fills up while writes go on, and a file system that is read-only when the
//! database opens. Each fault is answered with a clear error, nothing acknowledged is
//! lost, nothing unacknowledged is half there, and the database works again once the
//! fault is gone. fsync failures cannot be injected this way (that takes a device
//! mapper or a FUSE file system); they are not tested.
//!
//! Mounting needs the right to (root); where it is missing the
//! tests say so on stderr and check nothing.

use std::path::{Path, PathBuf};
use std::process::Command;

use remdb::{Batch, Db, Entity, Error, Table};

/// A tmpfs mounted on a temporary directory, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output();
        match mounted {
            Ok(out) if out.status.success() => Some(Tmpfs { dir }),
            Ok(out) => {
                eprintln!(
                    "cannot mount a tmpfs ({}): the fault test checks nothing",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("cannot run mount ({e}): the fault test checks nothing");
                None
            }
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("db")
    }

    fn remount(&self, options: &str) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,{options}")])
            .arg(self.dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "remount {options}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .output();
    }
}

const PER_BATCH: usize = 16;

/// Batch `b`: `PER_BATCH` entities of 4 KiB each.
fn batch(b: usize) -> Batch {
    let filler = "x".repeat(4096);
    let mut batch = Batch::new();
    for i in 0..PER_BATCH {
        batch = batch.insert(Entity {
            id: format!("e{b}-{i}"),
            entity_type: "filler".into(),
            name: format!("n{b}-{i}"),
            properties: format!(r#"{{"b": {b}, "filler": "{filler}"}}"#),
            ..Default::default()
        });
    }
    batch
}

fn assert_whole(path: &Path, acked: usize) -> usize {
    let db = Db::open(path, Default::default()).expect("the database opens again");
    let t = db.tenant("acme").unwrap();
    let n = t.count(Table::Entities).unwrap() as usize;
    assert_eq!(n % PER_BATCH, 0, "a partial batch is visible ({n} rows)");
    assert!(
        n / PER_BATCH == acked || n / PER_BATCH == acked + 1,
        "{acked} batches acknowledged, {} found",
        n / PER_BATCH
    );
    for b in 0..acked {
        assert!(
            t.get_entity(&format!("e{b}-{}", PER_BATCH - 1))
                .unwrap()
                .is_some(),
            "acknowledged batch {b} lost"
        );
    }
    n / PER_BATCH
}

#[test]
fn a_full_disk_fails_writes_clearly_and_loses_nothing_acknowledged() {
    let Some(fs) = Tmpfs::mount("24m") else {
        return;
    };
    let path = fs.path();
    let mut acked = 0;
    {
        let db = Db::open(&path, Default::default()).unwrap();
        let t = db.create_tenant("acme").unwrap();
        let error = loop {
            match t.write(batch(acked)) {
                Ok(_) => acked += 1,
                Err(e) => break e,
            }
            assert!(acked < 10_000, "24 MiB never filled up");
        };
        match &error {
            Error::Storage(m) => assert!(m.contains("No space left"), "{m}"),
            other => panic!("expected a storage error, got {other:?}"),
        }
        assert!(acked > 0, "the disk was full before the first write");
        // Reads go on, and further writes fail the same way instead of hanging.
        let last = t.get_entity(&format!("e{}-0", acked - 1)).unwrap();
        assert!(last.is_some(), "the last acknowledged batch reads back");
        assert!(matches!(t.write(batch(acked)), Err(Error::Storage(_))));
    }
    // The fault clears: more room. Everything acknowledged is there, and writes go on.
    fs.remount("size=96m");
    let found = assert_whole(&path, acked);
    let db = Db::open(&path, Default::default()).unwrap();
    let t = db.tenant("acme").unwrap();
    t.write(batch(found))
        .expect("writes go on once there is room");
    assert_eq!(
        t.count(Table::Entities).unwrap() as usize,
        (found + 1) * PER_BATCH
    );
}

#[test]
fn a_read_only_file_system_is_a_clear_error_and_nothing_changes() {
    let Some(fs) = Tmpfs::mount("32m") else {
        return;
    };
    let path = fs.path();
    {
        let db = Db::open(&path, Default::default()).unwrap();
        let t = db.create_tenant("acme").unwrap();
        for b in 0..3 {
            t.write(batch(b)).unwrap();
        }
    }
    fs.remount("ro");
    match Db::open(&path, Default::default()) {
        Err(Error::Storage(m)) => assert!(m.contains("Read-only file system"), "{m}"),
        Err(other) => panic!("expected a storage error, got {other:?}"),
        Ok(_) => panic!("a database on a read-only file system opened for writing"),
    }
    fs.remount("rw");
    assert_eq!(assert_whole(&path, 3), 3);
}
