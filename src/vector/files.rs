//! Vector layer: saving and loading a [`VectorIndex`] (the file names and the atomic save
//! described in the parent module).

use std::fs;
use std::path::{Path, PathBuf};

use usearch::MetricKind;

use super::{Metric, VectorIndex, VectorOptions, concurrent_calls, usearch_err};
use crate::error::Result;

impl VectorIndex {
    /// Saves the index atomically into `dir` as covering change `covered`: its
    /// [`VectorIndex::image`] written by [`save_image`].
    pub fn save(&self, dir: &Path, table: &str, covered: u64) -> Result<PathBuf> {
        let mut image = self.image_buffer();
        self.image_into(&mut image)?;
        save_image(dir, table, covered, &image)
    }

    /// A buffer for [`VectorIndex::image_into`], its memory written once so that the
    /// copy itself takes no page faults: made before taking a lock the copy needs.
    pub fn image_buffer(&self) -> Vec<u8> {
        let mut buffer = Vec::new();
        // A little room for what may be added before the copy.
        let n = self.index.read().serialized_length();
        buffer.resize(n + n / 64, 0);
        buffer
    }

    /// The index serialized into `image` (resized to fit), as a saved file holds it: a
    /// copy at memory speed (no disk write), so a caller that must keep adds out while
    /// the index is read (the tenant's write lock) holds them off only that long.
    /// Searches go on meanwhile.
    pub fn image_into(&self, image: &mut Vec<u8>) -> Result<()> {
        let index = self.index.read();
        let n = index.serialized_length();
        image.resize(n, 0);
        index.save_to_buffer(image).map_err(usearch_err)
    }

    /// Removes the saved files of `table` in `dir` that cover change `next_change` or
    /// later (changes the rows do not have); returns how many.
    pub fn remove_saved_ahead(dir: &Path, table: &str, next_change: u64) -> usize {
        let Ok(files) = saved_files(dir, table) else {
            return 0;
        };
        files
            .into_iter()
            .filter(|(covered, path)| *covered >= next_change && fs::remove_file(path).is_ok())
            .count()
    }

    /// Loads the newest saved index of `table` in `dir` that opens cleanly; returns it
    /// with the change number it covers. Files that fail to load are skipped.
    pub fn load_latest(
        dir: &Path,
        table: &str,
        options: VectorOptions,
        dimensions: usize,
    ) -> Result<Option<(VectorIndex, u64)>> {
        let mut files = saved_files(dir, table)?;
        files.sort_by_key(|f| std::cmp::Reverse(f.0));
        for (covered, path) in files {
            let Some(p) = path.to_str() else { continue };
            let index = VectorIndex::new(options, dimensions)?;
            let loaded = {
                let native = index.index.write();
                native.load(p).and_then(|()| {
                    // As many contexts as a new index has.
                    let room = native.capacity().max(native.size() + 1).max(1024);
                    native.reserve_capacity_and_threads(room, concurrent_calls())
                })
            };
            match loaded {
                Ok(()) if index.index.read().dimensions() == dimensions => {
                    // A file saved with usearch's cosine metric holds the vectors as
                    // written: served as built, without normalizing what enters it.
                    let mut index = index;
                    index.normalized = options.metric == Metric::Cosine
                        && index.index.read().metric_kind() == MetricKind::IP;
                    return Ok(Some((index, covered)));
                }
                Ok(()) => {
                    tracing::warn!(path = %path.display(), "vector index file has other dimensions; skipped")
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "vector index file does not load; skipped")
                }
            }
        }
        Ok(None)
    }
}

/// Writes an index `image` atomically into `dir` as covering change `covered` (temp
/// file, fsync, rename, fsync of the directory), then removes older files of the same
/// table, and the temporary files of saves that did not finish (a crash midway). Callers
/// serialize the saves of one table, so a temporary file other than this save's is a
/// leftover.
pub fn save_image(dir: &Path, table: &str, covered: u64, image: &[u8]) -> Result<PathBuf> {
    fs::create_dir_all(dir)?;
    let final_path = dir.join(format!("{table}.{covered:020}.usearch"));
    let tmp_path = dir.join(format!("{table}.{covered:020}.usearch.tmp"));
    let written = (|| -> Result<()> {
        let mut file = fs::File::create(&tmp_path)?;
        std::io::Write::write_all(&mut file, image)?;
        file.sync_all()?;
        fs::rename(&tmp_path, &final_path)?;
        Ok(fs::File::open(dir)?.sync_all()?)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp_path);
    }
    written?;
    for (n, path) in saved_files(dir, table)? {
        if n < covered {
            let _ = fs::remove_file(path);
        }
    }
    for path in unfinished_files(dir, table) {
        let _ = fs::remove_file(path);
    }
    Ok(final_path)
}

/// The temporary files of saves of `table` in `dir` (`<table>.<n>.usearch.tmp`).
fn unfinished_files(dir: &Path, table: &str) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return vec![];
    };
    let prefix = format!("{table}.");
    entries
        .flatten()
        .filter(|entry| {
            entry.file_name().to_str().is_some_and(|name| {
                name.strip_prefix(&prefix)
                    .and_then(|r| r.strip_suffix(".usearch.tmp"))
                    .is_some_and(|n| n.parse::<u64>().is_ok())
            })
        })
        .map(|entry| entry.path())
        .collect()
}

/// `(covered change, path)` of the saved index files of `table` in `dir`.
pub(super) fn saved_files(dir: &Path, table: &str) -> Result<Vec<(u64, PathBuf)>> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(vec![]);
    };
    let prefix = format!("{table}.");
    let mut out = vec![];
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(rest) = name
            .strip_prefix(&prefix)
            .and_then(|r| r.strip_suffix(".usearch"))
            && let Ok(n) = rest.parse::<u64>()
        {
            out.push((n, entry.path()));
        }
    }
    Ok(out)
}
