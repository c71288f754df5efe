//! A small bounded pool of connections, for any backend: the API's calls borrow a connection,
//! waiting for one when all are lent, so that a burst of requests cannot open more than
//! `connections_max` (memory, file handles, server connections).
//!
//! A mutex, a condition variable and a vector: a pool crate (`r2d2`, `deadpool`) would bring a
//! dependency, and for the async ones a runtime, for what these few lines do.

use crate::{Result, StoreError};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// The longest a call waits for a connection when all are lent before it answers `Busy`.
const WAIT_MAX: Duration = Duration::from_secs(30);

pub(crate) struct Pool<C> {
    slots: Mutex<Slots<C>>,
    /// Signalled when a connection goes back to the pool (or a slot frees up).
    returned: Condvar,
    connections_max: usize,
    /// Connections kept idle; up to `connections_max` may be open while many calls run at
    /// once, the ones past this number are closed when they come back.
    idle_max: usize,
    /// Whether a connection that comes back may be lent again (false: it broke, close it).
    reusable: fn(&C) -> bool,
}

/// The pool's connections: those idle, and how many exist in all (idle or lent).
struct Slots<C> {
    idle: Vec<C>,
    open: usize,
}

/// A connection lent by the pool; it goes back when dropped, even if the borrower panicked.
pub(crate) struct Lease<'a, C> {
    pool: &'a Pool<C>,
    conn: Option<C>,
}

impl<C> Lease<'_, C> {
    pub(crate) fn conn(&mut self) -> Result<&mut C> {
        self.conn.as_mut().ok_or_else(|| StoreError::Internal("a lease without its connection".into()))
    }
}

impl<C> Drop for Lease<'_, C> {
    fn drop(&mut self) {
        let mut slots = self.pool.lock();
        match self.conn.take() {
            Some(conn) if slots.idle.len() < self.pool.idle_max && (self.pool.reusable)(&conn) => slots.idle.push(conn),
            // A slot whose connect failed, a connection past the idle bound, or a broken one.
            _ => slots.open -= 1,
        }
        drop(slots);
        self.pool.returned.notify_one();
    }
}

impl<C> Pool<C> {
    pub(crate) fn new(connections_max: usize, idle_max: usize, reusable: fn(&C) -> bool) -> Pool<C> {
        Pool {
            slots: Mutex::new(Slots { idle: Vec::new(), open: 0 }),
            returned: Condvar::new(),
            connections_max: connections_max.max(1),
            idle_max,
            reusable,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Slots<C>> {
        // The pool's state is two plain fields, valid even if a holder panicked.
        self.slots.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes the idle connections out of the pool, to close them where closing is allowed.
    pub(crate) fn take_idle(&self) -> Vec<C> {
        let mut slots = self.lock();
        let idle = std::mem::take(&mut slots.idle);
        slots.open -= idle.len();
        idle
    }

    /// An idle connection, or a new one from `connect` while fewer than `connections_max` are
    /// open, or the next one given back; `Busy` after waiting [`WAIT_MAX`] for one.
    pub(crate) fn lease(&self, connect: impl FnOnce() -> Result<C>) -> Result<Lease<'_, C>> {
        let mut slots = self.lock();
        loop {
            if let Some(conn) = slots.idle.pop() {
                return Ok(Lease { pool: self, conn: Some(conn) });
            }
            if slots.open < self.connections_max {
                slots.open += 1;
                drop(slots);
                // From here the slot is the lease's: a failed connect gives it back on drop.
                let mut lease = Lease { pool: self, conn: None };
                lease.conn = Some(connect()?);
                return Ok(lease);
            }
            let (next, waited) =
                self.returned.wait_timeout(slots, WAIT_MAX).unwrap_or_else(std::sync::PoisonError::into_inner);
            slots = next;
            if waited.timed_out() && slots.idle.is_empty() && slots.open >= self.connections_max {
                return Err(StoreError::Busy(format!(
                    "all {} store connections stayed in use for {} s",
                    self.connections_max,
                    WAIT_MAX.as_secs()
                )));
            }
        }
    }

    /// How many connections are open (idle or lent).
    #[cfg(test)]
    pub(crate) fn open(&self) -> usize {
        self.lock().open
    }
}
