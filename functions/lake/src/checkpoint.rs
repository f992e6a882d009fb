//! Delta checkpoints: a table's state at one version in one Parquet file, so
//! a reader (Spark, delta-rs, DuckDB, and this writer when it starts) reads
//! the newest checkpoint and the few commits after it, not every commit
//! since the table began (a commit every few minutes is a hundred thousand a
//! year).
//!
//! Guarantees:
//! - a checkpoint holds the protocol, the metadata, every `txn`, every file
//!   in the table and the tombstones of files removed within
//!   [`TOMBSTONE_RETENTION_MS`], as the Delta protocol's classic single-file
//!   checkpoint (`<version>.checkpoint.parquet`) does; it is written after
//!   the commit of its version and before `_last_checkpoint` names it, so a
//!   reader that finds the name finds the file;
//! - actions go through JSON values both ways ([`to_parquet`],
//!   [`from_parquet`]), so the log and its checkpoints are read by the same
//!   code; columns another engine adds (`stats_parsed`, `tags`,
//!   `deletionVector`) are read and ignored.

use std::sync::Arc;

use arrow_array::builder::{BooleanBuilder, Int32Builder, Int64Builder, StringBuilder};
use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type};
use arrow_array::{Array, ArrayRef, ListArray, MapArray, RecordBatch, StructArray};
use arrow_buffer::{NullBuffer, OffsetBuffer};
use arrow_schema::{ArrowError, DataType, Field, Fields, Schema};
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::{Map, Value};

/// A checkpoint every this many versions (Delta's default `checkpointInterval`).
pub const CHECKPOINT_INTERVAL: u64 = 10;

/// How long a removed file's tombstone stays in checkpoints (Delta's default
/// `deletedFileRetentionDuration`, a week): a `VACUUM` keeps files younger.
pub const TOMBSTONE_RETENTION_MS: i64 = 7 * 24 * 3600 * 1000;

/// The action columns of a checkpoint, in the order a state is written.
const ACTIONS: [&str; 5] = ["protocol", "metaData", "txn", "add", "remove"];

fn string_map() -> DataType {
    let entries = Fields::from(vec![
        Field::new("key", DataType::Utf8, false),
        Field::new("value", DataType::Utf8, true),
    ]);
    DataType::Map(
        Arc::new(Field::new("key_value", DataType::Struct(entries), false)),
        false,
    )
}

fn nullable(name: &str, t: DataType) -> Field {
    Field::new(name, t, true)
}

fn action(name: &str, fields: Vec<Field>) -> Field {
    nullable(name, DataType::Struct(Fields::from(fields)))
}

/// The checkpoint schema of the Delta protocol (reader 1, writer 2).
pub fn schema() -> Schema {
    use DataType::{Boolean, Int32, Int64, Utf8};
    Schema::new(vec![
        action(
            "protocol",
            vec![nullable("minReaderVersion", Int32), nullable("minWriterVersion", Int32)],
        ),
        action(
            "metaData",
            vec![
                nullable("id", Utf8),
                nullable("name", Utf8),
                nullable("description", Utf8),
                action(
                    "format",
                    vec![nullable("provider", Utf8), nullable("options", string_map())],
                ),
                nullable("schemaString", Utf8),
                nullable(
                    "partitionColumns",
                    DataType::List(Arc::new(Field::new("element", Utf8, true))),
                ),
                nullable("configuration", string_map()),
                nullable("createdTime", Int64),
            ],
        ),
        action(
            "txn",
            vec![
                nullable("appId", Utf8),
                nullable("version", Int64),
                nullable("lastUpdated", Int64),
            ],
        ),
        action(
            "add",
            vec![
                nullable("path", Utf8),
                nullable("partitionValues", string_map()),
                nullable("size", Int64),
                nullable("modificationTime", Int64),
                nullable("dataChange", Boolean),
                nullable("stats", Utf8),
                nullable("tags", string_map()),
            ],
        ),
        action(
            "remove",
            vec![
                nullable("path", Utf8),
                nullable("deletionTimestamp", Int64),
                nullable("dataChange", Boolean),
                nullable("extendedFileMetadata", Boolean),
                nullable("partitionValues", string_map()),
                nullable("size", Int64),
            ],
        ),
    ])
}

/// `actions` (each `{"<kind>": {...}}`, as a commit's lines are) as a
/// checkpoint file: one row per action, the other action columns null.
pub fn to_parquet(actions: &[Value]) -> Result<Vec<u8>, ArrowError> {
    let schema = Arc::new(schema());
    let columns = schema
        .fields()
        .iter()
        .map(|f| {
            let values: Vec<Option<&Value>> = actions.iter().map(|a| a.get(f.name())).collect();
            build(f.data_type(), &values)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let batch = RecordBatch::try_new(schema.clone(), columns)?;
    let mut writer = ArrowWriter::try_new(Vec::new(), schema, None).map_err(|e| ArrowError::ExternalError(e.into()))?;
    writer.write(&batch).map_err(|e| ArrowError::ExternalError(e.into()))?;
    writer.into_inner().map_err(|e| ArrowError::ExternalError(e.into()))
}

/// The actions of a checkpoint file (ours or another engine's), as JSON
/// values shaped as a commit's lines.
pub fn from_parquet(bytes: Bytes) -> Result<Vec<Value>, ArrowError> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .and_then(|b| b.build())
        .map_err(|e| ArrowError::ExternalError(e.into()))?;
    let mut actions = Vec::new();
    for batch in reader {
        let batch = batch?;
        let columns: Vec<(&str, &ArrayRef)> = ACTIONS
            .iter()
            .filter_map(|name| batch.column_by_name(name).map(|c| (*name, c)))
            .collect();
        for row in 0..batch.num_rows() {
            for (name, column) in &columns {
                if column.is_valid(row) {
                    let mut action = Map::new();
                    action.insert((*name).to_owned(), to_json(column.as_ref(), row));
                    actions.push(Value::Object(action));
                }
            }
        }
    }
    Ok(actions)
}

/// An Arrow array of type `t` from JSON values (`None` or JSON null: a null).
fn build(t: &DataType, values: &[Option<&Value>]) -> Result<ArrayRef, ArrowError> {
    let present = |v: &Option<&Value>| v.is_some_and(|v| !v.is_null());
    Ok(match t {
        DataType::Utf8 => {
            let mut b = StringBuilder::new();
            values.iter().for_each(|v| b.append_option(v.and_then(Value::as_str)));
            Arc::new(b.finish())
        }
        DataType::Int64 => {
            let mut b = Int64Builder::new();
            values.iter().for_each(|v| b.append_option(v.and_then(Value::as_i64)));
            Arc::new(b.finish())
        }
        DataType::Int32 => {
            let mut b = Int32Builder::new();
            for v in values {
                b.append_option(v.and_then(Value::as_i64).and_then(|n| i32::try_from(n).ok()));
            }
            Arc::new(b.finish())
        }
        DataType::Boolean => {
            let mut b = BooleanBuilder::new();
            values.iter().for_each(|v| b.append_option(v.and_then(Value::as_bool)));
            Arc::new(b.finish())
        }
        DataType::Struct(fields) => {
            let children = fields
                .iter()
                .map(|f| {
                    let child: Vec<Option<&Value>> = values.iter().map(|v| v.and_then(|v| v.get(f.name()))).collect();
                    build(f.data_type(), &child)
                })
                .collect::<Result<Vec<_>, _>>()?;
            let nulls = NullBuffer::from(values.iter().map(present).collect::<Vec<_>>());
            Arc::new(StructArray::try_new(fields.clone(), children, Some(nulls))?)
        }
        DataType::Map(entries, sorted) => {
            let DataType::Struct(kv) = entries.data_type() else {
                return Err(ArrowError::SchemaError("map entries are not a struct".into()));
            };
            let objects: Vec<Option<&Map<String, Value>>> =
                values.iter().map(|v| v.and_then(Value::as_object)).collect();
            let lengths = objects.iter().map(|o| o.map_or(0, Map::len));
            let mut keys = StringBuilder::new();
            let mut items: Vec<Option<&Value>> = Vec::new();
            for (k, v) in objects.iter().flatten().flat_map(|o| o.iter()) {
                keys.append_value(k);
                items.push(Some(v));
            }
            let value_type = kv.get(1).map_or(DataType::Utf8, |f| f.data_type().clone());
            let entry_array = StructArray::try_new(
                kv.clone(),
                vec![Arc::new(keys.finish()), build(&value_type, &items)?],
                None,
            )?;
            let nulls = NullBuffer::from(objects.iter().map(Option::is_some).collect::<Vec<_>>());
            Arc::new(MapArray::try_new(
                entries.clone(),
                OffsetBuffer::from_lengths(lengths),
                entry_array,
                Some(nulls),
                *sorted,
            )?)
        }
        DataType::List(item) => {
            let lists: Vec<Option<&Vec<Value>>> = values.iter().map(|v| v.and_then(Value::as_array)).collect();
            let lengths = lists.iter().map(|l| l.map_or(0, Vec::len));
            let items: Vec<Option<&Value>> = lists.iter().flatten().flat_map(|l| l.iter().map(Some)).collect();
            let nulls = NullBuffer::from(lists.iter().map(Option::is_some).collect::<Vec<_>>());
            Arc::new(ListArray::try_new(
                item.clone(),
                OffsetBuffer::from_lengths(lengths),
                build(item.data_type(), &items)?,
                Some(nulls),
            )?)
        }
        other => {
            return Err(ArrowError::NotYetImplemented(format!(
                "checkpoint column of type {other}"
            )));
        }
    })
}

/// Row `i` of `array` as JSON (types a checkpoint holds; others are null).
fn to_json(array: &dyn Array, i: usize) -> Value {
    if array.is_null(i) {
        return Value::Null;
    }
    match array.data_type() {
        DataType::Utf8 => Value::from(array.as_string::<i32>().value(i)),
        DataType::LargeUtf8 => Value::from(array.as_string::<i64>().value(i)),
        DataType::Utf8View => Value::from(array.as_string_view().value(i)),
        DataType::Int64 => Value::from(array.as_primitive::<Int64Type>().value(i)),
        DataType::Int32 => Value::from(array.as_primitive::<Int32Type>().value(i)),
        DataType::Boolean => Value::from(array.as_boolean().value(i)),
        DataType::Struct(fields) => {
            let s = array.as_struct();
            let object = fields
                .iter()
                .zip(s.columns())
                .map(|(f, c)| (f.name().clone(), to_json(c.as_ref(), i)))
                .collect();
            Value::Object(object)
        }
        DataType::Map(_, _) => {
            let entries = array.as_map().value(i);
            let (keys, values) = (entries.column(0), entries.column(1));
            let object = (0..entries.len())
                .map(|j| {
                    let key = match to_json(keys.as_ref(), j) {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    (key, to_json(values.as_ref(), j))
                })
                .collect();
            Value::Object(object)
        }
        DataType::List(_) => {
            let items = array.as_list::<i32>().value(i);
            Value::Array((0..items.len()).map(|j| to_json(items.as_ref(), j)).collect())
        }
        _ => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn actions_come_back_from_a_checkpoint_as_they_went_in() {
        let actions = vec![
            json!({"protocol": {"minReaderVersion": 1, "minWriterVersion": 2}}),
            json!({"metaData": {"id": "t", "format": {"provider": "parquet", "options": {}},
                "schemaString": "{}", "partitionColumns": ["date", "hour"], "configuration": {}, "createdTime": 5}}),
            json!({"txn": {"appId": "tributary-lake/raw/0/3", "version": 41, "lastUpdated": 7}}),
            json!({"add": {"path": "date=2026-12-08/hour=01/p3-1-41.zstd.parquet",
                "partitionValues": {"date": "2026-12-08", "hour": "1"}, "size": 1234,
                "modificationTime": 9, "dataChange": false, "stats": "{\"numRecords\":41}"}}),
            json!({"remove": {"path": "old.parquet", "deletionTimestamp": 8, "dataChange": false,
                "extendedFileMetadata": true, "partitionValues": {"date": "2026-12-08", "hour": "1"}, "size": 3}}),
        ];
        let file = to_parquet(&actions).expect("a checkpoint is written");
        let back = from_parquet(Bytes::from(file)).expect("and read");
        assert_eq!(back.len(), actions.len());
        for (went, came) in actions.iter().zip(&back) {
            let (kind, fields) = went.as_object().and_then(|o| o.iter().next()).expect("one action");
            for (k, v) in fields.as_object().expect("fields") {
                assert_eq!(&came[kind][k], v, "{kind}.{k}");
            }
        }
        // Fields the action did not have are null, not invented.
        assert_eq!(back[3]["add"]["tags"], Value::Null);
        assert_eq!(back[1]["metaData"]["name"], Value::Null);
    }
}
