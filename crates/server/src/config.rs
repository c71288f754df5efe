//! The server's configuration.

use crate::auth::Secret;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Everything `run` needs. Build it with [`Config::new`] and adjust the public fields.
#[derive(Clone, Debug)]
pub struct Config {
    /// The data folder: the database and, on first start, the `api-key` file.
    pub data_dir: PathBuf,
    /// Where to listen; port 0 picks a free port (printed on stdout).
    pub listen: SocketAddr,
    /// Requests with a larger body are refused with 413.
    pub max_body_bytes: usize,
    /// Batch files larger than this are refused with 413 `file_too_large`.
    pub max_batch_bytes: u64,
    /// Requests waiting for the engine beyond this are refused with 503 and `Retry-After`.
    pub queue_capacity: usize,
    /// The first API key, used only when the store has none (from `PAYCORE_API_KEY`).
    pub api_key: Option<Secret>,
}

impl Config {
    /// The default body size limit: 4 MiB, enough for a bulk request of 8 190 transfers.
    pub const MAX_BODY_BYTES_DEFAULT: usize = 4 * 1024 * 1024;
    /// The default largest batch file: 1 GiB.
    pub const MAX_BATCH_BYTES_DEFAULT: u64 = 1024 * 1024 * 1024;
    /// The default capacity of the engine's queue, in requests.
    pub const QUEUE_CAPACITY_DEFAULT: usize = 16 * 1024;

    pub fn new(data_dir: PathBuf, listen: SocketAddr) -> Config {
        Config {
            data_dir,
            listen,
            max_body_bytes: Config::MAX_BODY_BYTES_DEFAULT,
            max_batch_bytes: Config::MAX_BATCH_BYTES_DEFAULT,
            queue_capacity: Config::QUEUE_CAPACITY_DEFAULT,
            api_key: None,
        }
    }
}
