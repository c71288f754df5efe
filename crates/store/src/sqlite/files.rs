//! Uploaded batch files in the embedded store: plain files under `<data>/batches/`, as they
//! always were. A file is written to `<name>.partial`, synced, renamed to its name and the
//! folder synced (from then on it survives a crash); a `.partial` file is never read.

use crate::files::{file_name, FileSink, BATCH_FILES_DIR, FILE_CHUNK_BYTES};
use crate::{Result, StoreError};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// A file operation's error: a full disk is [`StoreError::Full`] (the upload is answered 503
/// and its `.partial` file removed), anything else `Unavailable`.
fn io_error(what: &str, path: &Path, error: &std::io::Error) -> StoreError {
    StoreError::from_io(&format!("cannot {what} {}", path.display()), error)
}

/// The path of the stored file named `file` under `folder` (the data folder).
fn path(folder: &Path, file: &str) -> Result<PathBuf> {
    Ok(folder.join(BATCH_FILES_DIR).join(file_name(file)?))
}

/// Bytes written between two early syncs of an upload (see [`PartialFile::sync_early`]).
const EARLY_SYNC_BYTES: u64 = 32 * 1024 * 1024;

/// A file being written to `<name>.partial`.
struct PartialFile {
    out: Option<BufWriter<File>>,
    partial: PathBuf,
    path: PathBuf,
    size: u64,
    /// `size` when the last early sync started, that sync's thread, and the first early sync
    /// that failed.
    synced_at: u64,
    syncing: Option<std::thread::JoinHandle<std::io::Result<()>>>,
    failed: Option<std::io::Error>,
}

impl PartialFile {
    /// Starts syncing what was written so far on a thread of its own, once [`EARLY_SYNC_BYTES`]
    /// more were written and the last such sync has ended, so that the disk writes a large
    /// upload while it arrives, and the sync that makes the file durable ([`FileSink::finish`])
    /// finds little left (the kernel otherwise holds an upload of a few hundred MB in memory
    /// until that sync). The writer does not wait for it. The early sync shares the file's
    /// open description, so a write-back error it sees is not seen again by the last sync:
    /// it is kept, and `finish` fails with it.
    fn sync_early(&mut self) {
        if self.size - self.synced_at < EARLY_SYNC_BYTES || self.syncing.as_ref().is_some_and(|s| !s.is_finished()) {
            return;
        }
        self.ended_sync();
        let Some(out) = &self.out else { return };
        let Ok(file) = out.get_ref().try_clone() else { return };
        self.synced_at = self.size;
        self.syncing =
            std::thread::Builder::new().name("paycore-upload-sync".into()).spawn(move || file.sync_data()).ok();
    }

    /// Waits for the early sync, if one runs, and keeps its failure.
    fn ended_sync(&mut self) {
        let Some(syncing) = self.syncing.take() else { return };
        let result = syncing.join().unwrap_or_else(|_| Err(std::io::Error::other("the early sync panicked")));
        if let Err(error) = result {
            self.failed.get_or_insert(error);
        }
    }
}

pub(super) fn writer(folder: &Path, file: &str) -> Result<Box<dyn FileSink>> {
    Ok(Box::new(partial_file(folder, file)?))
}

fn partial_file(folder: &Path, file: &str) -> Result<PartialFile> {
    let path = path(folder, file)?;
    let dir = folder.join(BATCH_FILES_DIR);
    std::fs::create_dir_all(&dir).map_err(|e| io_error("create", &dir, &e))?;
    let mut partial = path.clone().into_os_string();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let out = File::create(&partial).map_err(|e| io_error("create", &partial, &e))?;
    Ok(PartialFile {
        out: Some(BufWriter::with_capacity(FILE_CHUNK_BYTES, out)),
        partial,
        path,
        size: 0,
        synced_at: 0,
        syncing: None,
        failed: None,
    })
}

impl FileSink for PartialFile {
    fn write_chunk(&mut self, bytes: &[u8]) -> Result<()> {
        let out = self.out.as_mut().ok_or_else(|| StoreError::Internal("a finished file written to".into()))?;
        out.write_all(bytes).map_err(|e| io_error("write", &self.partial, &e))?;
        self.size += bytes.len() as u64;
        self.sync_early();
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<u64> {
        let out = self.out.take().ok_or_else(|| StoreError::Internal("a file finished twice".into()))?;
        // The last buffered bytes are written here, so a full disk often shows here first:
        // then the `.partial` file goes too (the drop below only removes an unfinished one).
        let kept = out
            .into_inner()
            .map_err(|e| io_error("write", &self.partial, e.error()))
            .and_then(|file| file.sync_all().map_err(|e| io_error("sync", &self.partial, &e)));
        self.ended_sync();
        let kept = match self.failed.take() {
            Some(error) => kept.and(Err(io_error("sync", &self.partial, &error))),
            None => kept,
        };
        if let Err(error) = kept {
            let _ = std::fs::remove_file(&self.partial);
            return Err(error);
        }
        std::fs::rename(&self.partial, &self.path).map_err(|e| io_error("rename", &self.partial, &e))?;
        let dir = self.path.parent().unwrap_or(Path::new("."));
        File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io_error("sync", dir, &e))?;
        Ok(self.size)
    }

    fn abort(mut self: Box<Self>) -> Result<()> {
        self.out = None;
        std::fs::remove_file(&self.partial).map_err(|e| io_error("remove", &self.partial, &e))
    }
}

impl Drop for PartialFile {
    /// A file neither finished nor aborted (its writer failed or panicked) leaves nothing.
    fn drop(&mut self) {
        if self.out.take().is_some() {
            let _ = std::fs::remove_file(&self.partial);
        }
    }
}

pub(super) fn open(folder: &Path, file: &str) -> Result<Option<Box<dyn std::io::Read + Send>>> {
    let path = path(folder, file)?;
    match File::open(&path) {
        Ok(file) => Ok(Some(Box::new(file))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error("open", &path, &e)),
    }
}

pub(super) fn size(folder: &Path, file: &str) -> Result<Option<u64>> {
    let path = path(folder, file)?;
    match std::fs::metadata(&path) {
        Ok(metadata) => Ok(Some(metadata.len())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error("read the size of", &path, &e)),
    }
}

pub(super) fn remove(folder: &Path, file: &str) -> Result<()> {
    let path = path(folder, file)?;
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_error("remove", &path, &e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::io::Read;

    /// An upload past [`EARLY_SYNC_BYTES`] is synced while it is written, and comes back whole.
    #[test]
    fn a_large_upload_is_synced_as_it_arrives_and_kept_whole() {
        let dir = tempfile::tempdir().unwrap();
        let len = usize::try_from(EARLY_SYNC_BYTES).unwrap() * 2 + 12_345;
        let content: Vec<u8> = (0..len).map(|i| u8::try_from(i % 251).unwrap()).collect();
        let mut sink = partial_file(dir.path(), "batches/bat_1.csv").unwrap();
        for piece in content.chunks(1_000_003) {
            sink.write_chunk(piece).unwrap();
        }
        assert!(sink.synced_at >= EARLY_SYNC_BYTES, "an early sync started at {}", sink.synced_at);
        assert_eq!(Box::new(sink).finish().unwrap(), len as u64);
        let mut back = Vec::new();
        open(dir.path(), "batches/bat_1.csv").unwrap().unwrap().read_to_end(&mut back).unwrap();
        assert!(back == content, "the file read back differs");
    }
}
