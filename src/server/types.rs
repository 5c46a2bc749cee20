//! Front end: the Arrow types results carry to a client. DataFusion computes on view
//! types (`Utf8View`, `BinaryView`, `ListView`); many clients cannot read them (the
//! Arrow Flight SQL JDBC driver 18.x, Grafana's plugin), so by default every schema and
//! batch a client receives carries the plain types (`Utf8`, `Binary`, `List`), nested
//! ones too. `--keep-view-types` sends the views as they are, for clients that read them
//! (ADBC, pyarrow, arrow-rs), saving the conversion.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, RecordBatchOptions};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Fields, Schema, SchemaRef};
use datafusion::arrow::error::ArrowError;

/// The type a client receives for `ty`: `None` when it is sent as it is.
fn plain(ty: &DataType) -> Option<DataType> {
    let field = |f: &FieldRef| -> Option<FieldRef> {
        plain(f.data_type()).map(|t| Arc::new(f.as_ref().clone().with_data_type(t)))
    };
    let fields = |fs: &Fields| -> Option<Fields> {
        let changed: Vec<Option<FieldRef>> = fs.iter().map(field).collect();
        changed.iter().any(Option::is_some).then(|| {
            fs.iter()
                .zip(changed)
                .map(|(f, c)| c.unwrap_or_else(|| Arc::clone(f)))
                .collect()
        })
    };
    match ty {
        DataType::Utf8View => Some(DataType::Utf8),
        DataType::BinaryView => Some(DataType::Binary),
        DataType::ListView(f) => Some(DataType::List(field(f).unwrap_or_else(|| Arc::clone(f)))),
        DataType::LargeListView(f) => Some(DataType::LargeList(
            field(f).unwrap_or_else(|| Arc::clone(f)),
        )),
        DataType::List(f) => field(f).map(DataType::List),
        DataType::LargeList(f) => field(f).map(DataType::LargeList),
        DataType::FixedSizeList(f, n) => field(f).map(|f| DataType::FixedSizeList(f, *n)),
        DataType::Struct(fs) => fields(fs).map(DataType::Struct),
        DataType::Map(f, sorted) => field(f).map(|f| DataType::Map(f, *sorted)),
        _ => None,
    }
}

/// What crosses to a client: results with plain types, or with views kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Boundary {
    pub keep_views: bool,
}

impl Boundary {
    /// The schema a client is told (a FlightInfo, a prepared statement's) and receives.
    pub fn schema(self, schema: &SchemaRef) -> SchemaRef {
        if self.keep_views
            || !schema
                .fields()
                .iter()
                .any(|f| plain(f.data_type()).is_some())
        {
            return Arc::clone(schema);
        }
        let fields: Vec<Field> = schema
            .fields()
            .iter()
            .map(|f| match plain(f.data_type()) {
                Some(t) => f.as_ref().clone().with_data_type(t),
                None => f.as_ref().clone(),
            })
            .collect();
        Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
    }

    /// `batch` in the types of `to` (from [`Boundary::schema`] of the batch's schema).
    pub fn batch(self, batch: RecordBatch, to: &SchemaRef) -> Result<RecordBatch, ArrowError> {
        if Arc::ptr_eq(&batch.schema(), to) || batch.schema().fields() == to.fields() {
            return Ok(batch);
        }
        let columns = batch
            .columns()
            .iter()
            .zip(to.fields())
            .map(|(c, f)| {
                if c.data_type() == f.data_type() {
                    Ok(Arc::clone(c))
                } else {
                    cast(c, f.data_type())
                }
            })
            .collect::<Result<Vec<ArrayRef>, _>>()?;
        let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
        RecordBatch::try_new_with_options(Arc::clone(to), columns, &options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Array, ListBuilder, StringViewBuilder, StructArray};

    #[test]
    fn view_types_become_plain_types_nested_ones_too() {
        let mut list = ListBuilder::new(StringViewBuilder::new());
        list.values().append_value("a");
        list.append(true);
        list.append(false);
        let list: ArrayRef = Arc::new(list.finish());
        let text: ArrayRef = Arc::new(datafusion::arrow::array::StringViewArray::from(vec![
            Some("x"),
            None,
        ]));
        let nested: ArrayRef = Arc::new(StructArray::from(vec![(
            Arc::new(Field::new("t", DataType::Utf8View, true)),
            Arc::clone(&text),
        )]));
        let batch = RecordBatch::try_from_iter([
            ("text", text),
            ("tags", list),
            ("nested", nested),
            (
                "n",
                Arc::new(datafusion::arrow::array::Int64Array::from(vec![1, 2])) as ArrayRef,
            ),
        ])
        .unwrap();
        let boundary = Boundary::default();
        let schema = boundary.schema(&batch.schema());
        let out = boundary.batch(batch.clone(), &schema).unwrap();
        assert_eq!(out.schema(), schema);
        assert_eq!(out.column(0).data_type(), &DataType::Utf8);
        let DataType::List(item) = out.column(1).data_type() else {
            panic!("{:?}", out.column(1).data_type());
        };
        assert_eq!(item.data_type(), &DataType::Utf8);
        let DataType::Struct(fs) = out.column(2).data_type() else {
            panic!()
        };
        assert_eq!(fs[0].data_type(), &DataType::Utf8);
        assert_eq!(out.column(3).data_type(), &DataType::Int64);
        assert!(out.column(0).is_null(1) && out.column(1).is_null(1));

        let kept = Boundary { keep_views: true };
        let same = kept.schema(&batch.schema());
        assert!(Arc::ptr_eq(&same, &batch.schema()));
        assert_eq!(kept.batch(batch.clone(), &same).unwrap(), batch);
    }
}
