//! Schema agreement: a schema change answers only once every node that is
//! up has the same schema, so the statement that follows it (on any node)
//! finds the table. Cassandra's drivers wait the same way.

use crate::cluster::membership::Membership;
use crate::query::api::{
    BoxFuture, Prepared, QueryError, QueryExecutor, QueryOptions, QueryResult, Response,
    SessionState,
};
use crate::schema::SchemaStore;
use cql_lite::Value;
use std::sync::Arc;
use std::time::Duration;

/// Runs statements through `inner`; after a schema change, waits (up to
/// `patience`) until gossip shows every live node on this node's schema.
pub struct AgreeingExecutor {
    inner: Arc<dyn QueryExecutor>,
    membership: Membership,
    schema: Arc<SchemaStore>,
    patience: Duration,
}

impl AgreeingExecutor {
    /// Wraps `inner`.
    pub fn new(
        inner: Arc<dyn QueryExecutor>,
        membership: Membership,
        schema: Arc<SchemaStore>,
        patience: Duration,
    ) -> Self {
        AgreeingExecutor {
            inner,
            membership,
            schema,
            patience,
        }
    }

    /// Whether every live node with known metadata reports our schema.
    fn agreed(&self) -> bool {
        let ours = self.schema.current().fingerprint();
        let view = self.membership.view();
        view.members
            .values()
            .filter(|m| m.liveness.is_up())
            .all(|m| {
                m.metadata
                    .as_ref()
                    .is_some_and(|md| (md.schema_version, md.schema_digest) == ours)
            })
    }

    async fn settle(&self, mut response: Response) -> Response {
        if !matches!(response.result, QueryResult::SchemaChange { .. }) {
            return response;
        }
        let deadline = tokio::time::Instant::now() + self.patience;
        while !self.agreed() {
            if tokio::time::Instant::now() >= deadline {
                response.warnings.push(format!(
                    "schema change applied, but not every live node has it after {} s; statements on other nodes may not see it yet",
                    self.patience.as_secs()
                ));
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        response
    }
}

impl QueryExecutor for AgreeingExecutor {
    fn execute<'a>(
        &'a self,
        session: &'a mut SessionState,
        text: &'a str,
        values: Vec<Value>,
        options: QueryOptions,
    ) -> BoxFuture<'a, Result<Response, QueryError>> {
        Box::pin(async move {
            let response = self.inner.execute(session, text, values, options).await?;
            Ok(self.settle(response).await)
        })
    }

    fn prepare<'a>(
        &'a self,
        session: &'a SessionState,
        text: &'a str,
    ) -> BoxFuture<'a, Result<Prepared, QueryError>> {
        self.inner.prepare(session, text)
    }

    fn execute_prepared<'a>(
        &'a self,
        session: &'a mut SessionState,
        id: &'a [u8],
        values: Vec<Value>,
        options: QueryOptions,
    ) -> BoxFuture<'a, Result<Response, QueryError>> {
        Box::pin(async move {
            let response = self
                .inner
                .execute_prepared(session, id, values, options)
                .await?;
            Ok(self.settle(response).await)
        })
    }
}
