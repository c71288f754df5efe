//! The engine connection's prepared statements, kept for [`REPREPARE_AFTER`] runs each.
//!
//! `execute` and `query` given a statement's text prepare it first, in a round trip of its
//! own (Parse, Describe, Sync), then bind and run it, then close it: two round trips and one
//! parse a statement. The engine runs the same few statements in every commit, so it prepares
//! each once and runs the prepared one after that: one round trip each, no parse, and
//! PostgreSQL may keep a generic plan. Prepared statements are not transactional: one prepared
//! inside a commit that rolls back stays prepared. They belong to the connection, and go with it.
//!
//! The engine's reads by key ([`lookup`]) are not prepared: a generic plan is made once, for
//! the table as it was then, and kept. On a new cluster the first lookups see an empty
//! `transfers` table, PostgreSQL settles on a sequential scan, and keeps it while the table
//! grows: 4–24 ms a lookup at 10–15 thousand transfers, on the engine's thread, which set the
//! real-time tail (`crates/bench/NOTES.md`, "Session 17"). A lookup is planned at each call,
//! for its own values and the table's size then, in one round trip all the same.

use crate::Result;
use postgres::types::{ToSql, Type};
use postgres::{GenericClient, Row, Statement};
use std::collections::HashMap;

/// Statements prepared on one connection, by their text, each with how often it ran.
#[derive(Default)]
pub(super) struct Prepared(HashMap<String, (Statement, u32)>);

/// How many runs a prepared statement gets before it is prepared anew. PostgreSQL keeps the
/// plan it settles on after five runs; a table that was small then (a new cluster's first
/// accounts) keeps a sequential scan as it grows, until an `ANALYZE` (autovacuum's, a minute or
/// more later) makes it plan again: a balance update on 40 accounts, then on 300 000, took 61 ms
/// with the kept hash join against 0.05 ms by the primary key (psql, session 17). Prepared anew,
/// the statement is planned for the table as it is: one more round trip every this many runs.
pub(super) const REPREPARE_AFTER: u32 = 1_000;

impl Prepared {
    /// The statement `sql`, prepared on `client` the first time it is asked for, and again
    /// after [`REPREPARE_AFTER`] runs. `client` must be the connection (or a transaction of the
    /// connection) of every earlier call.
    fn get(&mut self, client: &mut impl GenericClient, sql: &str) -> Result<Statement> {
        if let Some((statement, runs)) = self.0.get_mut(sql) {
            if *runs < REPREPARE_AFTER {
                *runs += 1;
                return Ok(statement.clone());
            }
        }
        // The statement replaced, if any, is closed on the server when its last handle goes.
        let statement = client.prepare(sql)?;
        self.0.insert(sql.to_owned(), (statement.clone(), 1));
        Ok(statement)
    }

    /// `execute` of the statement `sql`, prepared once.
    pub(super) fn execute(
        &mut self,
        client: &mut impl GenericClient,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64> {
        let statement = self.get(client, sql)?;
        Ok(client.execute(&statement, params)?)
    }
}

/// A read by key (`id = ANY($1)` and the like) from a table that grows, planned at each call
/// for its values (see the module's note), in one round trip: `params` name their types.
pub(super) fn lookup(
    client: &mut impl GenericClient,
    sql: &str,
    params: &[(&(dyn ToSql + Sync), Type)],
) -> Result<Vec<Row>> {
    Ok(client.query_typed(sql, params)?)
}
