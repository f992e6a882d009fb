//! The Delta schema (the JSON of a `metaData` action's `schemaString`) of
//! the Arrow schemas the lake writes.

use arrow_schema::{DataType, Field, Schema, TimeUnit};
use serde_json::{Value, json};

/// The Delta schema (its JSON form) of `schema`.
pub fn delta_schema(schema: &Schema) -> Value {
    json!({"type": "struct", "fields": schema.fields().iter().map(|f| delta_field(f)).collect::<Vec<_>>()})
}

fn delta_field(f: &Field) -> Value {
    json!({"name": f.name(), "type": delta_type(f.data_type()), "nullable": f.is_nullable(), "metadata": {}})
}

fn delta_type(t: &DataType) -> Value {
    match t {
        DataType::Utf8 => json!("string"),
        DataType::Int32 => json!("integer"),
        DataType::Int64 => json!("long"),
        DataType::Float64 => json!("double"),
        DataType::Boolean => json!("boolean"),
        DataType::Date32 => json!("date"),
        DataType::Timestamp(TimeUnit::Microsecond, Some(_)) => json!("timestamp"),
        DataType::Struct(fields) => {
            json!({"type": "struct", "fields": fields.iter().map(|f| delta_field(f)).collect::<Vec<_>>()})
        }
        DataType::Map(entries, _) => match entries.data_type() {
            DataType::Struct(kv) if kv.len() == 2 => json!({
                "type": "map",
                "keyType": delta_type(kv[0].data_type()),
                "valueType": delta_type(kv[1].data_type()),
                "valueContainsNull": kv[1].is_nullable(),
            }),
            // Arrow's maps are always entries of (key, value).
            other => json!(format!("unsupported map entries {other}")),
        },
        // Only the types above are written (see `rows`): a test checks each table's.
        other => json!(format!("unsupported {other}")),
    }
}
