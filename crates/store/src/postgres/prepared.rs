//! The engine connection's prepared statements, kept for the connection's life.
//!
//! `execute` and `query` given a statement's text prepare it first, in a round trip of its
//! own (Parse, Describe, Sync), then bind and run it, then close it: two round trips and one
//! parse a statement. The engine runs the same few statements in every commit, so it prepares
//! each once and runs the prepared one after that: one round trip each, no parse, and
//! PostgreSQL may keep a generic plan. Prepared statements are not transactional: one prepared
//! inside a commit that rolls back stays prepared. They belong to the connection, and go with it.

use crate::Result;
use postgres::types::ToSql;
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

    /// `query` of the statement `sql`, prepared once.
    pub(super) fn query(
        &mut self,
        client: &mut impl GenericClient,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>> {
        let statement = self.get(client, sql)?;
        Ok(client.query(&statement, params)?)
    }
}
