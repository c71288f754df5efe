//! Online backup and restore of the data folder (see [`crate::backup`]).

use super::open::{connect, DATABASE_FILE};
use crate::backup::{BackupSummary, MANIFEST, MANIFEST_V1};
use crate::files::{file_name, BATCH_FILES_DIR};
use crate::{Result, StoreError};
use rusqlite::{Connection, OpenFlags};
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

fn io_error(what: &str, path: &Path, error: &std::io::Error) -> StoreError {
    StoreError::Unavailable(format!("cannot {what} {}: {error}", path.display()))
}

/// `path` with `suffix` appended to its file name.
fn beside(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io_error("sync", dir, &e))
}

/// Removes what a failed backup left.
struct Leftovers(Vec<PathBuf>);

impl Drop for Leftovers {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = std::fs::remove_file(path);
        }
    }
}

pub(crate) fn backup(data_dir: &Path, to: &Path) -> Result<BackupSummary> {
    let database = data_dir.join(DATABASE_FILE);
    if !database.exists() {
        return Err(StoreError::Refused(format!("{} has no paycore database", data_dir.display())));
    }
    if to.exists() {
        return Err(StoreError::Refused(format!("{} exists already; give a new file", to.display())));
    }
    let (copy, partial) = (beside(to, ".db.partial"), beside(to, ".partial"));
    let mut leftovers = Leftovers(vec![copy.clone(), partial.clone()]);
    // No lock and no write: a plain connection whose one statement reads a snapshot. The
    // engine keeps committing meanwhile (WAL readers never block the writer).
    let source = connect(&database)?;
    source.execute("VACUUM INTO ?1", [copy.to_string_lossy()])?;
    drop(source);
    let files = {
        let snapshot = Connection::open_with_flags(&copy, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        let mut stmt = snapshot.prepare("SELECT file FROM batches WHERE file IS NOT NULL ORDER BY file")?;
        let files = stmt.query_map([], |r| r.get::<_, String>(0))?.collect::<rusqlite::Result<Vec<_>>>()?;
        files
    };
    let database_bytes = std::fs::metadata(&copy).map_err(|e| io_error("read", &copy, &e))?.len();
    let out = File::create(&partial).map_err(|e| io_error("create", &partial, &e))?;
    let mut tar = tar::Builder::new(BufWriter::with_capacity(1024 * 1024, out));
    let tar_error = |e: std::io::Error| io_error("write", &partial, &e);
    append(&mut tar, MANIFEST, MANIFEST_V1.as_bytes()).map_err(tar_error)?;
    tar.append_path_with_name(&copy, DATABASE_FILE).map_err(tar_error)?;
    let mut copied = 0;
    for file in &files {
        let path = data_dir.join(BATCH_FILES_DIR).join(file_name(file)?);
        // A file pruned since the snapshot was read: its batch has ended, and a restored
        // store reads it as pruned.
        let Ok(mut input) = File::open(&path) else { continue };
        let size = input.metadata().map_err(|e| io_error("read", &path, &e))?.len();
        let mut header = header(size);
        tar.append_data(&mut header, file, &mut input).map_err(tar_error)?;
        copied += 1;
    }
    let out = tar.into_inner().map_err(tar_error)?;
    let out = out.into_inner().map_err(|e| io_error("write", &partial, e.error()))?;
    out.sync_all().map_err(|e| io_error("sync", &partial, &e))?;
    let bytes = out.metadata().map_err(|e| io_error("read", &partial, &e))?.len();
    drop(out);
    std::fs::rename(&partial, to).map_err(|e| io_error("rename", &partial, &e))?;
    sync_dir(to.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")))?;
    leftovers.0.retain(|p| *p != partial);
    Ok(BackupSummary { database_bytes, files: copied, bytes })
}

fn header(size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_size(size);
    header.set_mode(0o600);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    header
}

fn append<W: Write>(tar: &mut tar::Builder<W>, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    tar.append_data(&mut header(bytes.len() as u64), name, bytes)
}

pub(crate) fn restore(from: &Path, data_dir: &Path) -> Result<BackupSummary> {
    let existed = match std::fs::read_dir(data_dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(StoreError::Refused(format!(
                    "{} is not empty: restore into a new folder (nothing was written)",
                    data_dir.display()
                )));
            }
            true
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(io_error("read", data_dir, &e)),
    };
    let restored = restore_into(from, data_dir);
    if restored.is_err() {
        // The folder was empty or absent: what is in it now is this restore's, cut short.
        let _ = std::fs::remove_dir_all(data_dir);
        if existed {
            let _ = std::fs::create_dir_all(data_dir);
        }
    }
    restored
}

/// Unpacks `from` into the empty or absent folder `data_dir`.
fn restore_into(from: &Path, data_dir: &Path) -> Result<BackupSummary> {
    let input = File::open(from).map_err(|e| io_error("open", from, &e))?;
    let bytes = input.metadata().map_err(|e| io_error("read", from, &e))?.len();
    std::fs::create_dir_all(data_dir.join(BATCH_FILES_DIR)).map_err(|e| io_error("create", data_dir, &e))?;
    let mut archive = tar::Archive::new(std::io::BufReader::with_capacity(1024 * 1024, input));
    let bad = |what: String| StoreError::Refused(format!("{} is not a paycore backup: {what}", from.display()));
    let read_error = |e: std::io::Error| io_error("read", from, &e);
    let mut summary = BackupSummary { bytes, ..BackupSummary::default() };
    let mut manifest = false;
    for entry in archive.entries().map_err(read_error)? {
        let mut entry = entry.map_err(read_error)?;
        let name = entry.path().map_err(read_error)?.to_string_lossy().into_owned();
        if entry.header().entry_type() != tar::EntryType::Regular {
            return Err(bad(format!("{name:?} is not a plain file")));
        }
        if !manifest {
            let mut text = String::new();
            entry.read_to_string(&mut text).map_err(read_error)?;
            if name != MANIFEST || text != MANIFEST_V1 {
                return Err(bad(format!("its first entry is {name:?}, not the manifest of a known version")));
            }
            manifest = true;
            continue;
        }
        let target = if name == DATABASE_FILE {
            data_dir.join(DATABASE_FILE)
        } else if name.starts_with(BATCH_FILES_DIR) {
            let plain = file_name(&name).map_err(|_| bad(format!("an entry named {name:?}")))?;
            data_dir.join(BATCH_FILES_DIR).join(plain)
        } else {
            return Err(bad(format!("an entry named {name:?}")));
        };
        let mut out = File::create_new(&target).map_err(|e| io_error("create", &target, &e))?;
        let copied = std::io::copy(&mut entry, &mut out).map_err(|e| io_error("write", &target, &e))?;
        out.sync_all().map_err(|e| io_error("sync", &target, &e))?;
        if name == DATABASE_FILE {
            summary.database_bytes = copied;
        } else {
            summary.files += 1;
        }
    }
    if summary.database_bytes == 0 {
        return Err(bad("it holds no database".into()));
    }
    sync_dir(&data_dir.join(BATCH_FILES_DIR))?;
    sync_dir(data_dir)?;
    Ok(summary)
}
