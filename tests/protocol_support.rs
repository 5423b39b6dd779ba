//! Test support shared by the protocol and shell tests (included with
//! `#[path]`): certificates made with rcgen, and a small in-test
//! executor and schema source standing in for the query layer, so that
//! these tests exercise the protocol, the server, the client and the shell
//! alone.
//!
//! The executor parses with cql-lite (so syntax errors carry the real
//! caret) and keeps one fixed keyspace, `demo`, in memory:
//!
//! - `users (id int PRIMARY KEY, name text, age int)`, 25 rows;
//! - `conflicts (id int PRIMARY KEY, v text)`, one row with two siblings.
//!
//! It runs USE, SELECT (optionally `WHERE <first column> = x`, LIMIT,
//! paging, `WITH SIBLINGS`), INSERT and batches of INSERTs; other
//! statements are acknowledged without effect. SELECT at consistency ALL, or
//! at an explicit count above 1, is Unavailable (one replica alive); at TWO
//! it is a Timeout and at THREE a Failure; a statement containing `panic_please` panics.

#![allow(dead_code)]

use cql_lite::ast::{BatchStatement, Insert, Relation, Selection, Selector, Term};
use cql_lite::error::render_at;
use cql_lite::{literal_to_value, DataType, MarkerType, Statement, Value};
use parking_lot::Mutex;
use ringdb::client::protocol::{KeyspaceDescription, SchemaSnapshot, TableDescription};
use ringdb::model::Consistency;
use ringdb::query::api::{
    BoxFuture, ColumnSpec, MarkerSpec, PagingState, Prepared, QueryError, QueryExecutor,
    QueryOptions, QueryResult, Response, ResultSet, Row, SessionState,
};
use ringdb::server::SchemaSource;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// The name the test server certificate carries.
pub const SERVER_NAME: &str = "ringdb-node";

/// A CA and a server certificate it signed, in PEM.
pub struct TestCerts {
    /// The CA certificate.
    pub ca_pem: String,
    /// The server certificate.
    pub cert_pem: String,
    /// The server key.
    pub key_pem: String,
}

/// Makes a fresh CA and a server certificate for [`SERVER_NAME`] and 127.0.0.1.
pub fn test_certs() -> TestCerts {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
    let issuer = Issuer::new(ca_params, &ca_key);
    let key = KeyPair::generate().expect("server key");
    let params = CertificateParams::new(vec![SERVER_NAME.to_string(), "127.0.0.1".to_string()])
        .expect("server params");
    let cert = params.signed_by(&key, &issuer).expect("server certificate");
    TestCerts {
        ca_pem: ca_cert.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

/// The server's TLS configuration for these certificates.
pub fn server_tls(certs: &TestCerts) -> rustls::ServerConfig {
    ringdb::server::tls_config_from_pem(&certs.cert_pem, &certs.key_pem).expect("server TLS")
}

/// The client's TLS configuration for these certificates.
pub fn client_tls(certs: &TestCerts) -> ringdb::client::ClientTlsConfig {
    ringdb::client::ClientTlsConfig::new(certs.ca_pem.clone(), SERVER_NAME)
}

struct Table {
    columns: Vec<ColumnSpec>,
    create: String,
    /// Rows by the value of the first column.
    rows: BTreeMap<Value, Row>,
}

/// The in-test executor and schema source.
pub struct TestExecutor {
    tables: Mutex<BTreeMap<String, Table>>,
    prepared: Mutex<HashMap<Vec<u8>, String>>,
}

fn col(name: &str, data_type: DataType) -> ColumnSpec {
    ColumnSpec {
        name: name.to_string(),
        data_type,
    }
}

impl TestExecutor {
    /// The executor with its fixed data.
    pub fn new() -> Arc<TestExecutor> {
        let mut tables = BTreeMap::new();
        let mut users = Table {
            columns: vec![
                col("id", DataType::Int),
                col("name", DataType::Text),
                col("age", DataType::Int),
            ],
            create: "CREATE TABLE demo.users (\n    id int PRIMARY KEY,\n    name text,\n    age int\n);".into(),
            rows: BTreeMap::new(),
        };
        for i in 1..=25 {
            users.rows.insert(
                Value::Int(i),
                Row {
                    values: vec![
                        Value::Int(i),
                        Value::Text(format!("user{i}")),
                        Value::Int(20 + i),
                    ],
                    conflict: false,
                    siblings: Vec::new(),
                },
            );
        }
        tables.insert("users".to_string(), users);
        let mut conflicts = Table {
            columns: vec![col("id", DataType::Int), col("v", DataType::Text)],
            create: "CREATE TABLE demo.conflicts (\n    id int PRIMARY KEY,\n    v text\n);".into(),
            rows: BTreeMap::new(),
        };
        conflicts.rows.insert(
            Value::Int(1),
            Row {
                values: vec![Value::Int(1), Value::Text("left".into())],
                conflict: true,
                siblings: vec![
                    vec![Value::Int(1), Value::Text("left".into())],
                    vec![Value::Int(1), Value::Text("right".into())],
                ],
            },
        );
        conflicts.rows.insert(
            Value::Int(2),
            Row {
                values: vec![Value::Int(2), Value::Text("calm".into())],
                conflict: false,
                siblings: Vec::new(),
            },
        );
        tables.insert("conflicts".to_string(), conflicts);
        Arc::new(TestExecutor {
            tables: Mutex::new(tables),
            prepared: Mutex::new(HashMap::new()),
        })
    }

    fn run(
        &self,
        session: &mut SessionState,
        text: &str,
        values: Vec<Value>,
        options: &QueryOptions,
    ) -> Result<Response, QueryError> {
        if text.contains("panic_please") {
            panic!("the test executor was asked to panic");
        }
        let statement = cql_lite::parse_statement(text).map_err(|e| QueryError::Syntax {
            message: e.to_string(),
            rendered: e.render(text),
        })?;
        let result = match statement {
            Statement::Use(ks) => {
                if ks.name != "demo" {
                    return Err(invalid(
                        text,
                        ks.span,
                        &format!("keyspace '{}' does not exist", ks.name),
                    ));
                }
                session.keyspace = Some(ks.name.clone());
                QueryResult::SetKeyspace(ks.name)
            }
            Statement::Select(select) => {
                if options.consistency == Consistency::All {
                    return Err(QueryError::Unavailable {
                        consistency: Consistency::All,
                        required: 3,
                        alive: 1,
                    });
                }
                if let Consistency::Count(n @ 2..) = options.consistency {
                    return Err(QueryError::Unavailable {
                        consistency: options.consistency,
                        required: n.into(),
                        alive: 1,
                    });
                }
                if options.consistency == Consistency::Two {
                    return Err(QueryError::Timeout {
                        consistency: Consistency::Two,
                        required: 2,
                        received: 1,
                        write: false,
                    });
                }
                if options.consistency == Consistency::Three {
                    return Err(QueryError::Failure {
                        consistency: Consistency::Three,
                        required: 3,
                        received: 2,
                        failures: vec![
                            "192.0.2.3:7000: storage error on the replica: disk full".into()
                        ],
                        write: false,
                    });
                }
                self.select(session, text, &select, values, options)?
            }
            Statement::Insert(insert) => {
                let mut values = values.into_iter();
                self.insert(session, text, &insert, &mut values)?;
                QueryResult::Void
            }
            Statement::Batch(batch) => {
                let mut values = values.into_iter();
                for statement in &batch.statements {
                    if let BatchStatement::Insert(insert) = statement {
                        self.insert(session, text, insert, &mut values)?;
                    }
                }
                QueryResult::Void
            }
            Statement::CreateKeyspace(_) | Statement::CreateTable(_) => QueryResult::SchemaChange {
                description: "CREATED (test executor: no effect)".into(),
            },
            _ => QueryResult::Void,
        };
        Ok(Response {
            result,
            warnings: Vec::new(),
        })
    }

    fn table_name(
        &self,
        session: &SessionState,
        text: &str,
        name: &cql_lite::ast::QualifiedName,
    ) -> Result<String, QueryError> {
        let keyspace = match &name.keyspace {
            Some(k) => k.name.clone(),
            None => session
                .keyspace
                .clone()
                .ok_or_else(|| invalid(text, name.name.span, "no keyspace has been specified"))?,
        };
        if keyspace != "demo" || !self.tables.lock().contains_key(&name.name.name) {
            return Err(invalid(
                text,
                name.name.span,
                &format!("table '{}' does not exist", name.name.name),
            ));
        }
        Ok(name.name.name.clone())
    }

    fn select(
        &self,
        session: &SessionState,
        text: &str,
        select: &cql_lite::ast::Select,
        values: Vec<Value>,
        options: &QueryOptions,
    ) -> Result<QueryResult, QueryError> {
        let table_name = self.table_name(session, text, &select.table)?;
        let tables = self.tables.lock();
        let table = &tables[&table_name];
        let mut picks = Vec::new();
        match &select.selection {
            Selection::All => picks.extend(0..table.columns.len()),
            Selection::Items(items) => {
                for item in items {
                    let Selector::Column(c) = &item.selector else {
                        return Err(invalid(text, None, "only columns can be selected here"));
                    };
                    let i = table
                        .columns
                        .iter()
                        .position(|s| s.name == c.name)
                        .ok_or_else(|| {
                            invalid(text, c.span, &format!("undefined column name {}", c.name))
                        })?;
                    picks.push(i);
                }
            }
        }
        let mut values = values.into_iter();
        let mut key: Option<Value> = None;
        for relation in &select.where_clause {
            if let Relation::Compare { column, value, .. } = relation {
                if column.name != table.columns[0].name {
                    return Err(invalid(
                        text,
                        column.span,
                        "only the first column can be restricted",
                    ));
                }
                key = Some(term_value(
                    text,
                    value,
                    table.columns[0].data_type,
                    &mut values,
                )?);
            }
        }
        let limit = match &select.limit {
            Some(term) => match term_value(text, term, DataType::Int, &mut values)? {
                Value::Int(n) if n > 0 => Some(n as usize),
                _ => return Err(invalid(text, None, "LIMIT must be a positive integer")),
            },
            None => None,
        };
        let mut rows: Vec<&Row> = match &key {
            Some(k) => table.rows.get(k).into_iter().collect(),
            None => table.rows.values().collect(),
        };
        if let Some(limit) = limit {
            rows.truncate(limit);
        }
        let start = match &options.paging_state {
            Some(PagingState(bytes)) => {
                let raw: [u8; 8] = bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| invalid(text, None, "bad paging state"))?;
                u64::from_be_bytes(raw) as usize
            }
            None => 0,
        };
        let end = match options.page_size {
            Some(n) if n > 0 => (start + n as usize).min(rows.len()),
            _ => rows.len(),
        };
        let page: Vec<Row> = rows
            .get(start.min(rows.len())..end.max(start.min(rows.len())))
            .unwrap_or(&[])
            .iter()
            .map(|r| Row {
                values: picks.iter().map(|&i| r.values[i].clone()).collect(),
                conflict: r.conflict,
                siblings: if select.with_siblings {
                    r.siblings
                        .iter()
                        .map(|s| picks.iter().map(|&i| s[i].clone()).collect())
                        .collect()
                } else {
                    Vec::new()
                },
            })
            .collect();
        let paging_state =
            (end < rows.len()).then(|| PagingState((end as u64).to_be_bytes().to_vec()));
        Ok(QueryResult::Rows(ResultSet {
            columns: picks.iter().map(|&i| table.columns[i].clone()).collect(),
            rows: page,
            paging_state,
            causal_context: None,
        }))
    }

    fn insert(
        &self,
        session: &SessionState,
        text: &str,
        insert: &Insert,
        values: &mut impl Iterator<Item = Value>,
    ) -> Result<(), QueryError> {
        let table_name = self.table_name(session, text, &insert.table)?;
        let mut tables = self.tables.lock();
        let table = tables
            .get_mut(&table_name)
            .ok_or_else(|| invalid(text, None, "no table"))?;
        let mut row = vec![Value::Null; table.columns.len()];
        for (column, term) in insert.columns.iter().zip(&insert.values) {
            let i = table
                .columns
                .iter()
                .position(|s| s.name == column.name)
                .ok_or_else(|| {
                    invalid(
                        text,
                        column.span,
                        &format!("undefined column name {}", column.name),
                    )
                })?;
            row[i] = term_value(text, term, table.columns[i].data_type, values)?;
        }
        if row[0].is_null() {
            return Err(invalid(text, None, "missing the primary key"));
        }
        table.rows.insert(
            row[0].clone(),
            Row {
                values: row,
                conflict: false,
                siblings: Vec::new(),
            },
        );
        Ok(())
    }
}

fn invalid(text: &str, span: Option<cql_lite::Span>, message: &str) -> QueryError {
    let span = span.unwrap_or(cql_lite::Span {
        line: 1,
        column: 1,
        offset: 0,
        len: 1,
    });
    QueryError::Invalid {
        message: message.to_string(),
        rendered: render_at(text, span, message),
    }
}

fn term_value(
    text: &str,
    term: &Term,
    data_type: DataType,
    values: &mut impl Iterator<Item = Value>,
) -> Result<Value, QueryError> {
    match term {
        Term::Literal(l) => {
            literal_to_value(l, data_type).map_err(|e| invalid(text, None, &e.to_string()))
        }
        Term::BindMarker(_) => values
            .next()
            .ok_or_else(|| invalid(text, None, "not enough values for the bind markers")),
        Term::FunctionCall { .. } => Err(invalid(text, None, "functions are not supported here")),
    }
}

impl QueryExecutor for TestExecutor {
    fn execute<'a>(
        &'a self,
        session: &'a mut SessionState,
        text: &'a str,
        values: Vec<Value>,
        options: QueryOptions,
    ) -> BoxFuture<'a, Result<Response, QueryError>> {
        Box::pin(async move { self.run(session, text, values, &options) })
    }

    fn prepare<'a>(
        &'a self,
        _session: &'a SessionState,
        text: &'a str,
    ) -> BoxFuture<'a, Result<Prepared, QueryError>> {
        Box::pin(async move {
            let statement = cql_lite::parse_statement(text).map_err(|e| QueryError::Syntax {
                message: e.to_string(),
                rendered: e.render(text),
            })?;
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            text.hash(&mut hasher);
            let id = hasher.finish().to_be_bytes().to_vec();
            self.prepared.lock().insert(id.clone(), text.to_string());
            let bind_markers = statement
                .bind_markers()
                .into_iter()
                .map(|m| MarkerSpec {
                    name: m.unwrap_or_else(|| "?".into()),
                    marker_type: MarkerType::Single(DataType::Text),
                })
                .collect();
            Ok(Prepared {
                id,
                bind_markers,
                result_columns: Vec::new(),
            })
        })
    }

    fn execute_prepared<'a>(
        &'a self,
        session: &'a mut SessionState,
        id: &'a [u8],
        values: Vec<Value>,
        options: QueryOptions,
    ) -> BoxFuture<'a, Result<Response, QueryError>> {
        Box::pin(async move {
            let text = self.prepared.lock().get(id).cloned();
            match text {
                Some(text) => self.run(session, &text, values, &options),
                None => Err(QueryError::UnknownPrepared(format!("{id:02x?}"))),
            }
        })
    }
}

impl SchemaSource for TestExecutor {
    fn snapshot(&self) -> SchemaSnapshot {
        let tables = self.tables.lock();
        SchemaSnapshot {
            keyspaces: vec![KeyspaceDescription {
                name: "demo".into(),
                create_statement:
                    "CREATE KEYSPACE demo WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 3};"
                        .into(),
                tables: tables
                    .iter()
                    .map(|(name, t)| TableDescription {
                        name: name.clone(),
                        columns: t.columns.clone(),
                        create_statement: t.create.clone(),
                    })
                    .collect(),
            }],
        }
    }
}

#[test]
fn the_test_executor_pages_and_fails_like_the_real_one_should() {
    let executor = TestExecutor::new();
    let mut session = SessionState::default();
    let run = |session: &mut SessionState, text: &str, options: QueryOptions| {
        executor.run(session, text, Vec::new(), &options)
    };
    assert!(matches!(
        run(&mut session, "SELECT * FROM users", QueryOptions::default()),
        Err(QueryError::Invalid { .. })
    ));
    run(&mut session, "USE demo", QueryOptions::default()).expect("use");
    let options = QueryOptions {
        page_size: Some(10),
        ..QueryOptions::default()
    };
    let Ok(Response {
        result: QueryResult::Rows(page),
        ..
    }) = run(&mut session, "SELECT * FROM users", options)
    else {
        panic!("rows expected");
    };
    assert_eq!(page.rows.len(), 10);
    assert!(page.paging_state.is_some());
    let Err(QueryError::Syntax { rendered, .. }) =
        run(&mut session, "SELEC * FROM users", QueryOptions::default())
    else {
        panic!("syntax error expected");
    };
    assert!(rendered.contains('^'), "{rendered}");
}
