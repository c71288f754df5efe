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

/// A file being written to `<name>.partial`.
struct PartialFile {
    out: Option<BufWriter<File>>,
    partial: PathBuf,
    path: PathBuf,
    size: u64,
}

pub(super) fn writer(folder: &Path, file: &str) -> Result<Box<dyn FileSink>> {
    let path = path(folder, file)?;
    let dir = folder.join(BATCH_FILES_DIR);
    std::fs::create_dir_all(&dir).map_err(|e| io_error("create", &dir, &e))?;
    let mut partial = path.clone().into_os_string();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let out = File::create(&partial).map_err(|e| io_error("create", &partial, &e))?;
    Ok(Box::new(PartialFile { out: Some(BufWriter::with_capacity(FILE_CHUNK_BYTES, out)), partial, path, size: 0 }))
}

impl FileSink for PartialFile {
    fn write_chunk(&mut self, bytes: &[u8]) -> Result<()> {
        let out = self.out.as_mut().ok_or_else(|| StoreError::Internal("a finished file written to".into()))?;
        out.write_all(bytes).map_err(|e| io_error("write", &self.partial, &e))?;
        self.size += bytes.len() as u64;
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
