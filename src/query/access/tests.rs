use super::*;
use TableProviderFilterPushDown::{Exact, Inexact, Unsupported};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::Between;
use datafusion::logical_expr::{col, lit};
use datafusion::prelude::in_list;

fn plan(table: Table, filters: &[Expr]) -> AccessPlan {
    let refs: Vec<&Expr> = filters.iter().collect();
    plan_access(table, &refs, &[])
}

fn ts(v: i64) -> Expr {
    lit(ScalarValue::TimestampMicrosecond(
        Some(v),
        Some("UTC".into()),
    ))
}

#[test]
fn id_point_and_in_list() {
    let p = plan(
        Table::Entities,
        &[col("id").eq(lit("a")), col("type").eq(lit("person"))],
    );
    assert_eq!(
        p.path,
        AccessPath::PrimaryPrefix {
            prefixes: vec![vec!["a".into()]]
        }
    );
    assert_eq!(p.pushdown, [Exact, Unsupported]);
    let p = plan(
        Table::Resources,
        &[in_list(col("id"), vec![lit("a"), lit("b")], false)],
    );
    assert_eq!(
        p.path,
        AccessPath::PrimaryPrefix {
            prefixes: vec![vec!["a".into()], vec!["b".into()]]
        }
    );
    // NOT IN is not an index lookup.
    let p = plan(
        Table::Resources,
        &[in_list(col("id"), vec![lit("a")], true)],
    );
    assert_eq!(
        (p.path, p.pushdown),
        (AccessPath::FullScan, vec![Unsupported])
    );
}

#[test]
fn literal_on_either_side_and_or_chains() {
    let p = plan(Table::Entities, &[lit("person").eq(col("type"))]);
    assert_eq!(p.pushdown, [Exact]);
    let p = plan(
        Table::Entities,
        &[col("type").eq(lit("a")).or(col("type").eq(lit("b")))],
    );
    assert!(
        matches!(p.path, AccessPath::IndexPrefix { index: IndexId::EntityType, ref prefixes } if prefixes.len() == 2)
    );
    // An OR over two indexed columns is the union of two index sets; the name side
    // is normalized, so the whole is re-checked.
    let p = plan(
        Table::Entities,
        &[col("type").eq(lit("a")).or(col("name").eq(lit("B")))],
    );
    assert!(
        matches!(&p.path, AccessPath::RowSet(RowSet::Or(parts)) if parts.len() == 2),
        "{:?}",
        p.path
    );
    assert_eq!(
        p.access(Table::Entities).to_string(),
        "index set (entities_type = 'a' OR entities_name = 'b')"
    );
    assert_eq!(p.pushdown, [Inexact]);
    // With a column no index has, it is a scan.
    let p = plan(
        Table::Entities,
        &[col("type").eq(lit("a")).or(col("id").gt(lit("b")))],
    );
    assert_eq!(p.path, AccessPath::FullScan);
    assert_eq!(p.pushdown, [Unsupported]);
}

#[test]
fn names_are_normalized_and_inexact() {
    let p = plan(
        Table::Entities,
        &[
            col("name").eq(lit("Ada  LOVELACE")),
            col("type").eq(lit("person")),
        ],
    );
    assert_eq!(
        p.path,
        AccessPath::IndexPrefix {
            index: IndexId::EntityName,
            prefixes: vec![vec!["ada lovelace".into()]]
        }
    );
    assert_eq!(p.pushdown, [Inexact, Unsupported]);
}

#[test]
fn edges_use_src_then_dst() {
    let p = plan(
        Table::Edges,
        &[col("edge_type").eq(lit("knows")), col("src").eq(lit("a"))],
    );
    assert_eq!(
        p.path,
        AccessPath::PrimaryPrefix {
            prefixes: vec![vec!["a".into(), "knows".into()]]
        }
    );
    assert_eq!(p.pushdown, [Exact, Exact]);
    let p = plan(Table::Edges, &[col("dst").eq(lit("b"))]);
    assert_eq!(
        p.path,
        AccessPath::IndexPrefix {
            index: IndexId::EdgeDst,
            prefixes: vec![vec!["b".into()]]
        }
    );
    // dst without edge_type does not extend a src prefix (the key order is src, type, dst).
    let p = plan(
        Table::Edges,
        &[col("src").eq(lit("a")), col("dst").eq(lit("b"))],
    );
    assert_eq!(p.pushdown, [Exact, Unsupported]);
    let p = plan(Table::Edges, &[col("edge_type").eq(lit("knows"))]);
    assert_eq!(p.path, AccessPath::FullScan);
}

#[test]
fn timestamp_ranges_merge() {
    let p = plan(
        Table::Moments,
        &[
            col("timestamp").gt_eq(ts(10)),
            col("timestamp").lt(ts(20)),
            col("timestamp").gt(ts(12)),
            col("type").eq(lit("chat")),
        ],
    );
    assert_eq!(
        p.path,
        AccessPath::IndexRange {
            index: IndexId::MomentTimestamp,
            lower: Bound::Excluded(vec![KeyPart::I64(12)]),
            upper: Bound::Excluded(vec![KeyPart::I64(20)]),
            descending: false,
        }
    );
    assert_eq!(p.pushdown, [Exact, Exact, Exact, Unsupported]);
    let between = Expr::Between(Between::new(
        Box::new(col("timestamp")),
        false,
        Box::new(ts(1)),
        Box::new(ts(2)),
    ));
    assert_eq!(plan(Table::Moments, &[between]).pushdown, [Exact]);
    // A nanosecond bound that is not a whole microsecond is widened and re-checked.
    let ns = lit(ScalarValue::TimestampNanosecond(Some(1_500), None));
    let p = plan(Table::Moments, &[col("timestamp").gt_eq(ns)]);
    assert_eq!(p.pushdown, [Inexact]);
    // Ranges on a text column are not index lookups.
    assert_eq!(
        plan(Table::Entities, &[col("type").gt(lit("a"))]).path,
        AccessPath::FullScan
    );
}

#[test]
fn type_index_when_nothing_better() {
    let p = plan(Table::Moments, &[col("type").eq(lit("chat"))]);
    assert_eq!(
        p.path,
        AccessPath::IndexPrefix {
            index: IndexId::MomentType,
            prefixes: vec![vec!["chat".into()]]
        }
    );
    let p = plan(
        Table::Resources,
        &[col("uri").eq(lit("doc://1")), col("content").eq(lit("x"))],
    );
    assert_eq!(p.pushdown, [Exact, Unsupported]);
    // Comparing a column with NULL or a non-text literal is left to DataFusion.
    assert_eq!(
        plan(
            Table::Entities,
            &[col("type").eq(lit(ScalarValue::Utf8(None)))]
        )
        .path,
        AccessPath::FullScan
    );
    assert_eq!(
        plan(Table::Entities, &[col("type").eq(lit(3))]).path,
        AccessPath::FullScan
    );
}

fn created_index() -> IndexDef {
    IndexDef {
        name: "idx_created".into(),
        table: "entities".into(),
        column: "created_at".into(),
        path: vec![],
        kind: crate::storage::IndexKind::Value,
        id: 7,
    }
}

fn label(p: &AccessPlan) -> String {
    match (&p.path, &p.set) {
        (AccessPath::RowSet(_), Some(set)) => set.to_string(),
        (other, _) => format!("{other:?}"),
    }
}

/// How EXPLAIN shows `path` of `table`.
fn describe(table: Table, path: &AccessPath) -> String {
    Access::plain(table, path.clone()).to_string()
}

#[test]
fn timestamp_column_index_answers_comparisons() {
    let user = [created_index()];
    let plan_user = |filters: &[Expr]| {
        let refs: Vec<&Expr> = filters.iter().collect();
        plan_access(Table::Entities, &refs, &user)
    };
    // Alone: an exact set, no residual.
    let p = plan_user(&[col("created_at").gt(ts(1_000))]);
    assert_eq!(label(&p), "idx_created (created_at) > 1000");
    assert_eq!(p.pushdown, [Exact]);
    // Two comparisons (BETWEEN) merge into one range of the index.
    let p = plan_user(&[
        col("created_at").gt_eq(ts(1_000)),
        col("created_at").lt(ts(5_000)),
    ]);
    assert_eq!(label(&p), "idx_created (created_at) >= 1000 and < 5000");
    assert_eq!(p.pushdown, [Exact, Exact]);
    // ANDed with a built-in index's set.
    let p = plan_user(&[col("type").eq(lit("person")), col("created_at").lt(ts(9))]);
    assert_eq!(
        label(&p),
        "(entities_type = 'person' AND idx_created (created_at) < 9)"
    );
    assert_eq!(p.pushdown, [Exact, Exact]);
    // A nanosecond literal off the microsecond is not the index's.
    let nanos = lit(ScalarValue::TimestampNanosecond(
        Some(1_000_500),
        Some("UTC".into()),
    ));
    let p = plan_user(&[col("created_at").gt(nanos)]);
    assert_eq!(p.path, AccessPath::FullScan);
    // Without the index, the comparison stays DataFusion's.
    assert_eq!(
        plan(Table::Entities, &[col("created_at").gt(ts(1_000))]).path,
        AccessPath::FullScan
    );
    // A name is near-unique: its own index, with the time re-checked, not a set.
    let p = plan_user(&[col("name").eq(lit("Ada")), col("created_at").gt(ts(1_000))]);
    assert!(
        matches!(
            p.path,
            AccessPath::IndexPrefix {
                index: IndexId::EntityName,
                ..
            }
        ),
        "{p:?}"
    );
    assert_eq!(p.pushdown, [Inexact, Unsupported]);
}

#[test]
fn describe_paths() {
    let p = AccessPath::IndexPrefix {
        index: IndexId::EntityType,
        prefixes: vec![vec!["person".into()]],
    };
    assert_eq!(
        describe(Table::Entities, &p),
        "index entities_type = 'person'"
    );
    let p = AccessPath::PrimaryPrefix {
        prefixes: vec![vec!["a".into()], vec!["b".into()]],
    };
    assert_eq!(describe(Table::Entities, &p), "primary id IN ('a', 'b')");
}
