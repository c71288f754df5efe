//! The engine connection's prepared statements, kept for the connection's life.
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

/// Statements prepared on one connection, by their text.
#[derive(Default)]
pub(super) struct Prepared(HashMap<String, Statement>);

impl Prepared {
    /// The statement `sql`, prepared on `client` the first time it is asked for. `client`
    /// must be the connection (or a transaction of the connection) of every earlier call.
    fn get(&mut self, client: &mut impl GenericClient, sql: &str) -> Result<Statement> {
        if let Some(statement) = self.0.get(sql) {
            return Ok(statement.clone());
        }
        let statement = client.prepare(sql)?;
        self.0.insert(sql.to_owned(), statement.clone());
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
