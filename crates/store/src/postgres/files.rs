//! Uploaded batch files in PostgreSQL (see [`crate::files`]): a `batch_files` row per file and
//! its content in `batch_file_chunks`, one row of [`FILE_CHUNK_BYTES`] per chunk, each written
//! in a transaction of its own. The file becomes readable when `finish` sets `finished_at` (and
//! how many chunks it has) in one statement; until then no reader sees it, so a process that
//! dies mid-upload leaves only an unfinished row, removed at a later start ([`remove_stale`]).
//! The file is read back a chunk at a time, one pooled connection per chunk.

use super::codec::get;
use super::reader::Connections;
use crate::files::{file_name, FileSink, FILE_CHUNK_BYTES};
use crate::{Result, StoreError};
use postgres::Client;
use std::io::Read;
use std::sync::Arc;

/// A file being written: the bytes not yet stored as a whole chunk, and the next chunk's number.
struct ChunkSink {
    connections: Arc<Connections>,
    name: String,
    buffer: Vec<u8>,
    next: i32,
    size: u64,
}

pub(super) fn writer(connections: Arc<Connections>, file: &str) -> Result<Box<dyn FileSink>> {
    file_name(file)?;
    connections.with(|client| Ok(client.execute("INSERT INTO batch_files (name) VALUES ($1)", &[&file])?))?;
    Ok(Box::new(ChunkSink {
        connections,
        name: file.to_owned(),
        buffer: Vec::with_capacity(FILE_CHUNK_BYTES),
        next: 0,
        size: 0,
    }))
}

impl ChunkSink {
    /// Stores `bytes` as the next chunk.
    fn store(&mut self, bytes: &[u8]) -> Result<()> {
        let (name, seq) = (&self.name, self.next);
        self.connections.with(|client| {
            Ok(client.execute(
                "INSERT INTO batch_file_chunks (name, seq, data) VALUES ($1, $2, $3)",
                &[name, &seq, &bytes],
            )?)
        })?;
        self.next = seq.checked_add(1).ok_or_else(|| StoreError::Internal("a file of too many chunks".into()))?;
        Ok(())
    }
}

impl FileSink for ChunkSink {
    fn write_chunk(&mut self, mut bytes: &[u8]) -> Result<()> {
        self.size += bytes.len() as u64;
        while !bytes.is_empty() {
            let room = FILE_CHUNK_BYTES - self.buffer.len();
            let (now, later) = bytes.split_at(room.min(bytes.len()));
            self.buffer.extend_from_slice(now);
            bytes = later;
            if self.buffer.len() == FILE_CHUNK_BYTES {
                let full = std::mem::replace(&mut self.buffer, Vec::with_capacity(FILE_CHUNK_BYTES));
                self.store(&full)?;
            }
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<u64> {
        if !self.buffer.is_empty() {
            let rest = std::mem::take(&mut self.buffer);
            self.store(&rest)?;
        }
        let size = i64::try_from(self.size).map_err(|_| StoreError::Internal("a file too large".into()))?;
        let (name, chunks) = (&self.name, self.next);
        let finished = self.connections.with(|client| {
            Ok(client.execute(
                "UPDATE batch_files SET finished_at = now(), size = $2, chunks = $3
                 WHERE name = $1 AND finished_at IS NULL",
                &[name, &size, &chunks],
            )?)
        })?;
        if finished != 1 {
            return Err(StoreError::Corrupt(format!("the unfinished file {name} is gone")));
        }
        Ok(self.size)
    }

    fn abort(self: Box<Self>) -> Result<()> {
        remove(&self.connections, &self.name)
    }
}

/// A finished file, read a chunk at a time.
struct ChunkReader {
    connections: Arc<Connections>,
    name: String,
    chunks: i32,
    next: i32,
    chunk: Vec<u8>,
    at: usize,
}

pub(super) fn open(connections: Arc<Connections>, file: &str) -> Result<Option<Box<dyn Read + Send>>> {
    file_name(file)?;
    let chunks = connections.with(|client| {
        let row =
            client.query_opt("SELECT chunks FROM batch_files WHERE name = $1 AND finished_at IS NOT NULL", &[&file])?;
        row.map(|row| get::<Option<i32>>(&row, "chunks")).transpose()
    })?;
    let Some(chunks) = chunks else { return Ok(None) };
    let chunks = chunks.ok_or_else(|| StoreError::Corrupt(format!("the finished file {file} has no chunk count")))?;
    Ok(Some(Box::new(ChunkReader { connections, name: file.to_owned(), chunks, next: 0, chunk: Vec::new(), at: 0 })))
}

impl ChunkReader {
    fn fetch(&mut self) -> Result<()> {
        let (name, seq) = (&self.name, self.next);
        let data = self.connections.with(|client| {
            let row =
                client.query_opt("SELECT data FROM batch_file_chunks WHERE name = $1 AND seq = $2", &[name, &seq])?;
            row.map(|row| get::<Vec<u8>>(&row, "data")).transpose()
        })?;
        self.chunk = data.ok_or_else(|| StoreError::Corrupt(format!("chunk {seq} of the file {name} is missing")))?;
        self.at = 0;
        self.next += 1;
        Ok(())
    }
}

impl Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.chunk.len() {
            if self.next >= self.chunks {
                return Ok(0);
            }
            self.fetch().map_err(std::io::Error::other)?;
        }
        let n = out.len().min(self.chunk.len() - self.at);
        out[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

pub(super) fn remove(connections: &Connections, file: &str) -> Result<()> {
    file_name(file)?;
    connections.with(|client| Ok(client.execute("DELETE FROM batch_files WHERE name = $1", &[&file])?))?;
    Ok(())
}

/// Removes the files left unfinished for a day: uploads that broke off with their process.
/// (An upload in progress elsewhere is younger than that.)
pub(super) fn remove_stale(client: &mut Client) -> Result<()> {
    client
        .execute("DELETE FROM batch_files WHERE finished_at IS NULL AND started_at < now() - interval '1 day'", &[])?;
    Ok(())
}
