//! The lake's two tables, their columns, and the records of `telemetry.raw`
//! and `telemetry.aggregates` as Arrow record batches.
//!
//! Guarantees:
//! - a table's columns are the same whatever its rows: metrics and tags are
//!   maps (name to value), so a new metric name or tag is a new key in a
//!   row, never a new column, and no reader breaks on it;
//! - times are UTC timestamps (microsecond type, as Delta's `timestamp` is,
//!   holding the records' millisecond values);
//! - each row carries the Kafka partition and offset it came from, so a
//!   reader can tell a replayed record (never written twice, see
//!   [`crate::delta`]) from a device's resend (a second record, same id);
//! - a row's partition (`date`, `hour`) is the UTC date and hour of its
//!   event time (raw) or window start (aggregates): the data files do not
//!   hold these two columns; Delta gives them from each file's partition values.

use std::sync::Arc;

use arrow_array::builder::{
    BooleanBuilder, Float64Builder, Int32Builder, Int64Builder, MapBuilder, MapFieldNames, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch, StructArray};
use arrow_schema::{ArrowError, DataType, Field, Fields, Schema};
use chrono::{DateTime, NaiveDate, Timelike, Utc};
use tributary_shared::model::Reading;
use tributary_shared::records::Aggregate;

/// Which table a topic goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TableKind {
    /// Every reading of `telemetry.raw`.
    Raw,
    /// Every window aggregate of `telemetry.aggregates`.
    Aggregates,
}

impl TableKind {
    /// The table's directory under the lake's root.
    pub fn dir(self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::Aggregates => "aggregates",
        }
    }

    /// Decode one record of the table's topic.
    pub fn decode(self, value: &[u8]) -> Result<Row, String> {
        match self {
            Self::Raw => serde_json::from_slice::<Reading>(value)
                .map(Row::Raw)
                .map_err(|e| format!("not a valid Reading: {e}")),
            Self::Aggregates => serde_json::from_slice::<Aggregate>(value)
                .map(|a| Row::Aggregate(Box::new(a)))
                .map_err(|e| format!("not a valid Aggregate: {e}")),
        }
    }

    /// The columns of the table's data files (without the partition columns).
    pub fn file_schema(self) -> Schema {
        // Built from an empty batch, so the schema is exactly what rows build.
        match to_batch(self, &[]) {
            Ok(b) => b.schema().as_ref().clone(),
            // Unreachable: an empty batch of the builders' own types always builds.
            Err(_) => Schema::empty(),
        }
    }

    /// The table's columns as Delta knows them: the file columns, then `date` and `hour`.
    pub fn table_schema(self) -> Schema {
        let mut fields: Vec<Arc<Field>> = self.file_schema().fields().iter().cloned().collect();
        fields.push(Arc::new(Field::new("date", DataType::Date32, false)));
        fields.push(Arc::new(Field::new("hour", DataType::Int32, false)));
        Schema::new(fields)
    }
}

/// The partition columns, in order.
pub const PARTITION_COLUMNS: [&str; 2] = ["date", "hour"];

/// A decoded record and where it came from.
#[derive(Clone, Debug, PartialEq)]
pub enum Row {
    /// A reading.
    Raw(Reading),
    /// A window aggregate (boxed: it is large).
    Aggregate(Box<Aggregate>),
}

/// The (date, hour) partition of a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Partition {
    /// UTC date.
    pub date: NaiveDate,
    /// UTC hour, 0..=23.
    pub hour: u32,
}

impl Partition {
    /// The partition of time `t`.
    pub fn of(t: DateTime<Utc>) -> Self {
        Self {
            date: t.date_naive(),
            hour: t.hour(),
        }
    }

    /// The directory of the partition under the table root (Hive style, as Spark writes it).
    pub fn dir(&self) -> String {
        format!("date={}/hour={:02}", self.date.format("%Y-%m-%d"), self.hour)
    }

    /// The partition values as Delta serializes them.
    pub fn values(&self) -> Vec<(String, String)> {
        vec![
            ("date".into(), self.date.format("%Y-%m-%d").to_string()),
            ("hour".into(), self.hour.to_string()),
        ]
    }
}

impl Row {
    /// The partition this row goes to.
    pub fn partition(&self) -> Partition {
        match self {
            Self::Raw(r) => Partition::of(r.event_time),
            Self::Aggregate(a) => Partition::of(a.window_start),
        }
    }
}

/// A row with the Kafka coordinates it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct SourcedRow {
    /// The Kafka partition.
    pub partition: i32,
    /// The Kafka offset.
    pub offset: i64,
    /// The record.
    pub row: Row,
}

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn timestamps(n: usize) -> TimestampMicrosecondBuilder {
    TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC")
}

fn map_names() -> Option<MapFieldNames> {
    // The names the Parquet spec and Spark use for a map's entries.
    Some(MapFieldNames {
        entry: "key_value".into(),
        key: "key".into(),
        value: "value".into(),
    })
}

/// The rows of one table as one record batch (rows of the other table are skipped).
pub fn to_batch(kind: TableKind, rows: &[&SourcedRow]) -> Result<RecordBatch, ArrowError> {
    match kind {
        TableKind::Raw => raw_batch(rows),
        TableKind::Aggregates => aggregate_batch(rows),
    }
}

fn raw_batch(rows: &[&SourcedRow]) -> Result<RecordBatch, ArrowError> {
    let n = rows.len();
    let mut id = StringBuilder::with_capacity(n, n * 16);
    let mut device = StringBuilder::with_capacity(n, n * 16);
    let (mut event, mut received) = (timestamps(n), timestamps(n));
    let mut metrics = MapBuilder::new(map_names(), StringBuilder::new(), Float64Builder::new())
        .with_values_field(Field::new("value", DataType::Float64, false));
    let mut tags = MapBuilder::new(map_names(), StringBuilder::new(), StringBuilder::new())
        .with_values_field(Field::new("value", DataType::Utf8, false));
    let (mut lat, mut lon, mut alt) = (
        Float64Builder::with_capacity(n),
        Float64Builder::with_capacity(n),
        Float64Builder::with_capacity(n),
    );
    let mut located = Vec::with_capacity(n);
    let (mut part, mut off) = (Int32Builder::with_capacity(n), Int64Builder::with_capacity(n));
    for s in rows {
        let Row::Raw(r) = &s.row else { continue };
        id.append_value(&r.id);
        device.append_value(&r.device_id);
        event.append_value(micros(r.event_time));
        received.append_value(micros(r.received_time));
        for (k, v) in &r.metrics {
            metrics.keys().append_value(k);
            metrics.values().append_value(*v);
        }
        metrics.append(true)?;
        for (k, v) in &r.tags {
            tags.keys().append_value(k);
            tags.values().append_value(v);
        }
        tags.append(true)?;
        // A missing location is a null struct; its children hold placeholders.
        located.push(r.location.is_some());
        lat.append_value(r.location.as_ref().map_or(0.0, |l| l.lat));
        lon.append_value(r.location.as_ref().map_or(0.0, |l| l.lon));
        alt.append_option(r.location.as_ref().and_then(|l| l.alt));
        part.append_value(s.partition);
        off.append_value(s.offset);
    }
    let location_fields = Fields::from(vec![
        Field::new("lat", DataType::Float64, false),
        Field::new("lon", DataType::Float64, false),
        Field::new("alt", DataType::Float64, true),
    ]);
    let location = StructArray::try_new(
        location_fields,
        vec![Arc::new(lat.finish()), Arc::new(lon.finish()), Arc::new(alt.finish())],
        Some(located.into()),
    )?;
    columns(vec![
        ("id", Arc::new(id.finish()), false),
        ("device_id", Arc::new(device.finish()), false),
        ("event_time", Arc::new(event.finish()), false),
        ("received_time", Arc::new(received.finish()), false),
        ("metrics", Arc::new(metrics.finish()), false),
        ("tags", Arc::new(tags.finish()), false),
        ("location", Arc::new(location), true),
        ("source_partition", Arc::new(part.finish()), false),
        ("source_offset", Arc::new(off.finish()), false),
    ])
}

fn aggregate_batch(rows: &[&SourcedRow]) -> Result<RecordBatch, ArrowError> {
    let n = rows.len();
    let mut device = StringBuilder::with_capacity(n, n * 16);
    let mut metric = StringBuilder::with_capacity(n, n * 12);
    let mut size = Int32Builder::with_capacity(n);
    let (mut start, mut end) = (timestamps(n), timestamps(n));
    let mut count = Int64Builder::with_capacity(n);
    let mut stats: [Float64Builder; 8] = std::array::from_fn(|_| Float64Builder::with_capacity(n));
    let mut model = StringBuilder::with_capacity(n, n * 8);
    let (mut low, mut high) = (Float64Builder::with_capacity(n), Float64Builder::with_capacity(n));
    let mut warming = BooleanBuilder::with_capacity(n);
    let (mut part, mut off) = (Int32Builder::with_capacity(n), Int64Builder::with_capacity(n));
    for s in rows {
        let Row::Aggregate(a) = &s.row else { continue };
        device.append_value(&a.device_id);
        metric.append_value(&a.metric);
        size.append_value(i32::try_from(a.window_seconds).unwrap_or(i32::MAX));
        start.append_value(micros(a.window_start));
        end.append_value(micros(a.window_end));
        count.append_value(i64::try_from(a.count).unwrap_or(i64::MAX));
        let values = [a.min, a.max, a.mean, a.stddev, a.p50, a.p95, a.p99, a.anomaly_score];
        for (b, v) in stats.iter_mut().zip(values) {
            b.append_value(v);
        }
        model.append_value(&a.model);
        low.append_option(a.expected_low);
        high.append_option(a.expected_high);
        warming.append_value(a.warming);
        part.append_value(s.partition);
        off.append_value(s.offset);
    }
    let mut cols: Vec<(&str, ArrayRef, bool)> = vec![
        ("device_id", Arc::new(device.finish()), false),
        ("metric", Arc::new(metric.finish()), false),
        ("window_seconds", Arc::new(size.finish()), false),
        ("window_start", Arc::new(start.finish()), false),
        ("window_end", Arc::new(end.finish()), false),
        ("count", Arc::new(count.finish()), false),
    ];
    let names = ["min", "max", "mean", "stddev", "p50", "p95", "p99", "anomaly_score"];
    for (name, b) in names.into_iter().zip(stats.iter_mut()) {
        cols.push((name, Arc::new(b.finish()), false));
    }
    cols.extend([
        ("model", Arc::new(model.finish()) as ArrayRef, false),
        ("expected_low", Arc::new(low.finish()), true),
        ("expected_high", Arc::new(high.finish()), true),
        ("warming", Arc::new(warming.finish()), false),
        ("source_partition", Arc::new(part.finish()), false),
        ("source_offset", Arc::new(off.finish()), false),
    ]);
    columns(cols)
}

fn columns(cols: Vec<(&str, ArrayRef, bool)>) -> Result<RecordBatch, ArrowError> {
    let fields: Vec<Field> = cols
        .iter()
        .map(|(name, a, nullable)| Field::new(*name, a.data_type().clone(), *nullable))
        .collect();
    RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        cols.into_iter().map(|(_, a, _)| a).collect(),
    )
}
