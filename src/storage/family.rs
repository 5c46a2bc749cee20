//! Storage layer: [`Family`], the column family of one tenant, and the only way the
//! parts of storage below the tenant registry reach RocksDB. A [`Handle`] is the family
//! bound for one piece of work (checked not dropped when taken); its reads, iterators and
//! [`Batch`]es name no column family, so no part can touch another tenant's keys.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rocksdb::{
    BoundColumnFamily, DBPinnableSlice, DBRawIteratorWithThreadMode, DBWithThreadMode,
    IteratorMode, MultiThreaded, ReadOptions, WriteBatch, WriteOptions,
};

use crate::error::{Error, Result};

pub(super) type Rocks = DBWithThreadMode<MultiThreaded>;
/// A key and its value, as an iterator returns them.
pub(super) type KeyValue = (Box<[u8]>, Box<[u8]>);

/// Which column family a tenant's is, shared by every handle on the tenant.
#[derive(Debug)]
pub(super) struct FamilyName {
    pub(super) tenant: String,
    pub(super) name: String,
    /// Set when the tenant is dropped: a handle kept from before must not reach the
    /// column family of a new tenant of the same name (families are found by name).
    pub(super) dropped: AtomicBool,
}

impl FamilyName {
    pub(super) fn new(tenant: &str, name: String) -> FamilyName {
        FamilyName {
            tenant: tenant.to_string(),
            name,
            dropped: AtomicBool::new(false),
        }
    }
}

/// The column family of one tenant.
#[derive(Clone)]
pub(super) struct Family {
    db: Arc<Rocks>,
    name: Arc<FamilyName>,
    /// fsync the write-ahead log on every commit.
    sync: bool,
}

impl Family {
    pub(super) fn new(db: Arc<Rocks>, name: Arc<FamilyName>, sync: bool) -> Family {
        Family { db, name, sync }
    }

    pub(super) fn tenant(&self) -> &str {
        &self.name.tenant
    }

    /// The family bound for reads and writes; an error once the tenant is dropped.
    pub(super) fn handle(&self) -> Result<Handle<'_>> {
        let dropped = || Error::NotFound(format!("tenant '{}' (dropped)", self.name.tenant));
        let cf = self.db.cf_handle(&self.name.name).ok_or_else(dropped)?;
        // Checked after the lookup: the flag is set before the family is dropped, and a
        // new tenant of the name is created after, so a clear flag here means `cf` is
        // this tenant's family.
        if self.name.dropped.load(Ordering::SeqCst) {
            return Err(dropped());
        }
        Ok(Handle {
            db: &self.db,
            cf,
            sync: self.sync,
        })
    }
}

/// A tenant's column family, bound (see [`Family::handle`]).
pub(super) struct Handle<'a> {
    db: &'a Rocks,
    cf: Arc<BoundColumnFamily<'a>>,
    sync: bool,
}

impl<'a> Handle<'a> {
    pub(super) fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get_cf(&self.cf, key)?)
    }

    /// The values of `keys`, in order.
    pub(super) fn multi_get<K: AsRef<[u8]>>(
        &self,
        keys: &[K],
    ) -> Vec<std::result::Result<Option<DBPinnableSlice<'a>>, rocksdb::Error>> {
        self.db.batched_multi_get_cf(&self.cf, keys.iter(), false)
    }

    /// The entries of `[start, end)` (to the end of the family without `end`), in order.
    pub(super) fn range(
        &self,
        start: Vec<u8>,
        end: Option<Vec<u8>>,
    ) -> impl Iterator<Item = Result<KeyValue>> + 'a {
        let mut read_options = ReadOptions::default();
        if let Some(end) = end {
            read_options.set_iterate_upper_bound(end);
        }
        self.db
            .iterator_cf_opt(
                &self.cf,
                read_options,
                IteratorMode::From(&start, rocksdb::Direction::Forward),
            )
            .map(|item| item.map_err(Error::from))
    }

    /// The entries `options` bound, from `mode`'s end.
    pub(super) fn iterate(
        &self,
        options: ReadOptions,
        mode: IteratorMode<'_>,
    ) -> impl Iterator<Item = Result<KeyValue>> + 'a {
        self.db
            .iterator_cf_opt(&self.cf, options, mode)
            .map(|item| item.map_err(Error::from))
    }

    /// A raw iterator with `options` (seek, step both ways, keys without values).
    pub(super) fn raw_iterator(
        &self,
        options: ReadOptions,
    ) -> DBRawIteratorWithThreadMode<'a, Rocks> {
        self.db.raw_iterator_cf_opt(&self.cf, options)
    }

    /// An empty batch of writes to this family.
    pub(super) fn batch(&self) -> Batch<'_> {
        Batch {
            cf: &self.cf,
            inner: WriteBatch::default(),
        }
    }

    /// Commits a batch atomically (fsynced first with `sync`).
    pub(super) fn write(&self, batch: Batch<'_>) -> Result<()> {
        let mut options = WriteOptions::default();
        options.set_sync(self.sync);
        self.db.write_opt(batch.inner, &options)?;
        Ok(())
    }

    /// Writes one key alone (fsynced first with `sync`).
    pub(super) fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        let mut batch = self.batch();
        batch.put(key, value);
        self.write(batch)
    }

    /// Makes every commit so far durable in the write-ahead log (a no-op with `sync`,
    /// where each commit already is).
    pub(super) fn flush_wal(&self) -> Result<()> {
        if !self.sync {
            self.db.flush_wal(true)?;
        }
        Ok(())
    }

    /// Deletes every key of `[start, end)` at once.
    pub(super) fn delete_range(&self, start: &[u8], end: &[u8]) -> Result<()> {
        self.db.delete_range_cf(&self.cf, start, end)?;
        Ok(())
    }
}

/// Writes to one tenant's family, committed together by [`Handle::write`].
pub(super) struct Batch<'h> {
    cf: &'h Arc<BoundColumnFamily<'h>>,
    inner: WriteBatch,
}

impl Batch<'_> {
    pub(super) fn put(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        self.inner.put_cf(self.cf, key, value);
    }

    pub(super) fn delete(&mut self, key: impl AsRef<[u8]>) {
        self.inner.delete_cf(self.cf, key);
    }

    pub(super) fn delete_range<K: AsRef<[u8]>>(&mut self, start: K, end: K) {
        self.inner.delete_range_cf(self.cf, start, end);
    }
}
