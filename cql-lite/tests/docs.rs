//! The `cql` examples of docs/cql-lite.md form one script: each statement
//! parses, prints back to itself and passes the schema checks against what
//! the statements before it created.

use cql_lite::analyze::{check_statement, Catalog, TableSchema};
use cql_lite::ast::{AlterTableOp, Statement};
use cql_lite::{parse, parse_statement};

const DOC: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/cql-lite.md"));

/// The text of the fenced blocks of one kind.
fn blocks(kind: &str) -> Vec<String> {
    let fence = format!("```{kind}");
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in DOC.lines() {
        match &mut current {
            None if line.trim() == fence => current = Some(String::new()),
            None => {}
            Some(_) if line.trim() == "```" => out.extend(current.take()),
            Some(text) => {
                text.push_str(line);
                text.push('\n');
            }
        }
    }
    out
}

#[derive(Default)]
struct Schema {
    keyspaces: Vec<String>,
    tables: Vec<TableSchema>,
}

impl Catalog for Schema {
    fn has_keyspace(&self, keyspace: &str) -> bool {
        self.keyspaces.iter().any(|k| k == keyspace)
    }

    fn table(&self, keyspace: &str, table: &str) -> Option<&TableSchema> {
        self.tables
            .iter()
            .find(|t| t.keyspace == keyspace && t.name == table)
    }
}

impl Schema {
    /// Applies a schema change, as the node would after executing it.
    fn apply(&mut self, stmt: &Statement, current: &mut Option<String>) {
        let ks_of = |n: &cql_lite::ast::QualifiedName, current: &Option<String>| {
            n.keyspace
                .as_ref()
                .map(|k| k.name.clone())
                .or_else(|| current.clone())
                .unwrap()
        };
        match stmt {
            Statement::CreateKeyspace(s) if !self.has_keyspace(&s.name.name) => {
                self.keyspaces.push(s.name.name.clone())
            }
            Statement::DropKeyspace(s) => {
                self.keyspaces.retain(|k| k != &s.name.name);
                self.tables.retain(|t| t.keyspace != s.name.name);
            }
            Statement::Use(ks) => *current = Some(ks.name.clone()),
            Statement::CreateTable(s) => {
                let ks = ks_of(&s.name, current);
                if self.table(&ks, &s.name.name.name).is_none() {
                    self.tables.push(TableSchema::from_create(&ks, s));
                }
            }
            Statement::DropTable(s) => {
                let ks = ks_of(&s.name, current);
                self.tables
                    .retain(|t| !(t.keyspace == ks && t.name == s.name.name.name));
            }
            Statement::AlterTable(s) => {
                let ks = ks_of(&s.name, current);
                let t = self
                    .tables
                    .iter_mut()
                    .find(|t| t.keyspace == ks && t.name == s.name.name.name)
                    .unwrap();
                match &s.op {
                    AlterTableOp::Add(defs) => {
                        for d in defs {
                            t.columns.push(cql_lite::analyze::ColumnSchema {
                                name: d.name.name.clone(),
                                data_type: d.data_type,
                                kind: cql_lite::analyze::ColumnKind::Regular,
                            });
                        }
                    }
                    AlterTableOp::Drop(cols) => {
                        t.columns.retain(|c| !cols.iter().any(|d| d.name == c.name))
                    }
                    AlterTableOp::With(_) => {}
                }
            }
            _ => {}
        }
    }
}

#[test]
fn documented_examples_run_in_order() {
    let script = blocks("cql").join("\n");
    assert!(script.len() > 1000, "the examples were not found");
    let stmts = parse(&script).unwrap_or_else(|e| panic!("{}", e.render(&script)));
    assert!(stmts.len() >= 25, "{} statements", stmts.len());
    let mut schema = Schema::default();
    let mut current = None;
    for stmt in &stmts {
        let printed = stmt.to_string();
        assert_eq!(&parse_statement(&printed).unwrap(), stmt, "{printed}");
        if let Err(e) = check_statement(stmt, current.as_deref(), &schema) {
            panic!("{printed}\n{e}");
        }
        schema.apply(stmt, &mut current);
    }
}

#[test]
fn documented_errors_are_the_real_ones() {
    // The first error example, exactly as shown.
    let src = "SELECT * FORM readings";
    let e = parse_statement(src).unwrap_err();
    assert!(DOC.contains(&e.render(src)), "{}", e.render(src));
    // The schema error example.
    let mut schema = Schema::default();
    let mut current = None;
    for stmt in parse(&blocks("cql").join("\n")).unwrap() {
        schema.apply(&stmt, &mut current);
    }
    let src = "SELECT *\nFROM readings\nWHERE temp > 3 ALLOW FILTERING";
    let e =
        check_statement(&parse_statement(src).unwrap(), current.as_deref(), &schema).unwrap_err();
    assert!(DOC.contains(&e.render(src)), "{}", e.render(src));
}
