//! Import files: many devices described at once, as CSV or NDJSON.
//!
//! - **CSV**: a header row naming the columns (`id` required; `name`, `group`
//!   and `tags` optional, in any order), one device per row. Tags are
//!   `key=value` pairs separated by `;`. An empty cell is "not given".
//! - **NDJSON**: one JSON object per line, `{"id": .., "name": .., "group":
//!   .., "tags": {"key": "value"}}`; blank lines are skipped.
//!
//! Guarantee: a file either parses whole, every device valid and no id twice,
//! or the error names the first bad line (1-based, as an editor shows it) and
//! field; the caller then writes nothing.

use std::collections::BTreeMap;

use serde_json::Value;

use super::NewDevice;

/// The two file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Comma-separated values with a header row.
    Csv,
    /// One JSON object per line.
    Ndjson,
}

impl Format {
    /// The format a file name's extension implies, if any.
    pub fn from_path(path: &std::path::Path) -> Option<Self> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "csv" => Some(Self::Csv),
            "ndjson" | "jsonl" | "json" => Some(Self::Ndjson),
            _ => None,
        }
    }
}

/// Why a file cannot be imported: where, and what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}{}: {message}", field.as_deref().map(|f| format!(", field {f}")).unwrap_or_default())]
pub struct ImportError {
    /// The line (1-based).
    pub line: u64,
    /// The field or column, when one is at fault.
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

fn at(line: u64, field: Option<&str>, message: impl Into<String>) -> ImportError {
    ImportError {
        line,
        field: field.map(str::to_owned),
        message: message.into(),
    }
}

/// Parse a whole file.
pub fn parse(text: &str, format: Format) -> Result<Vec<NewDevice>, ImportError> {
    let devices = match format {
        Format::Csv => parse_csv(text)?,
        Format::Ndjson => parse_ndjson(text)?,
    };
    let mut first_line: std::collections::HashMap<&str, u64> = std::collections::HashMap::with_capacity(devices.len());
    for (line, d) in &devices {
        d.validate()
            .map_err(|e| at(*line, Some(e.field), format!("device {:?}: {}", e.device, e.reason)))?;
        if let Some(first) = first_line.insert(d.id.as_str(), *line) {
            return Err(at(
                *line,
                Some("id"),
                format!("device {:?} is already on line {first}", d.id),
            ));
        }
    }
    Ok(devices.into_iter().map(|(_, d)| d).collect())
}

const CSV_COLUMNS: [&str; 4] = ["id", "name", "group", "tags"];

fn parse_csv(text: &str) -> Result<Vec<(u64, NewDevice)>, ImportError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let csv_error = |e: csv::Error| {
        let line = e.position().map_or(1, csv::Position::line);
        at(line, None, e.to_string())
    };
    let headers = reader.headers().map_err(csv_error)?.clone();
    let mut column = BTreeMap::new();
    for (i, h) in headers.iter().enumerate() {
        if !CSV_COLUMNS.contains(&h) {
            return Err(at(
                1,
                Some(h),
                format!("unknown column (expected some of {})", CSV_COLUMNS.join(", ")),
            ));
        }
        if column.insert(h.to_owned(), i).is_some() {
            return Err(at(1, Some(h), "column appears twice"));
        }
    }
    if !column.contains_key("id") {
        return Err(at(1, Some("id"), "the header row has no id column"));
    }
    let mut out = Vec::new();
    for record in reader.records() {
        let record = record.map_err(csv_error)?;
        let line = record.position().map_or(0, csv::Position::line);
        let cell = |name: &str| {
            column
                .get(name)
                .and_then(|&i| record.get(i))
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        let Some(id) = cell("id") else {
            return Err(at(line, Some("id"), "missing"));
        };
        let tags = match cell("tags") {
            None => BTreeMap::new(),
            Some(text) => parse_tags(&text).map_err(|m| at(line, Some("tags"), m))?,
        };
        out.push((
            line,
            NewDevice {
                id,
                name: cell("name"),
                group: cell("group"),
                tags,
            },
        ));
    }
    Ok(out)
}

/// `key=value;key=value` (spaces around keys and values trimmed).
fn parse_tags(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut tags = BTreeMap::new();
    for pair in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| format!("{pair:?} is not key=value (pairs are separated by ;)"))?;
        if tags.insert(k.trim().to_owned(), v.trim().to_owned()).is_some() {
            return Err(format!("tag {:?} appears twice", k.trim()));
        }
    }
    Ok(tags)
}

fn parse_ndjson(text: &str) -> Result<Vec<(u64, NewDevice)>, ImportError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i as u64 + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(raw).map_err(|e| at(line, None, format!("not JSON: {e}")))?;
        let Value::Object(fields) = value else {
            return Err(at(line, None, "expected a JSON object"));
        };
        let mut device = NewDevice::default();
        let mut has_id = false;
        for (name, v) in fields {
            let text = |v: Value| match v {
                Value::String(s) => Ok(Some(s)),
                Value::Null => Ok(None),
                other => Err(at(
                    line,
                    Some(&name),
                    format!("expected a string, got {}", json_type(&other)),
                )),
            };
            match name.as_str() {
                "id" => {
                    device.id = text(v)?.ok_or_else(|| at(line, Some("id"), "must not be null"))?;
                    has_id = true;
                }
                "name" => device.name = text(v)?,
                "group" => device.group = text(v)?,
                "tags" => device.tags = json_tags(v).map_err(|m| at(line, Some("tags"), m))?,
                _ => {
                    return Err(at(
                        line,
                        Some(&name),
                        "unknown field (expected some of id, name, group, tags)",
                    ));
                }
            }
        }
        if !has_id {
            return Err(at(line, Some("id"), "missing"));
        }
        out.push((line, device));
    }
    Ok(out)
}

fn json_tags(v: Value) -> Result<BTreeMap<String, String>, String> {
    match v {
        Value::Null => Ok(BTreeMap::new()),
        Value::Object(map) => map
            .into_iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k, s)),
                other => Err(format!("tag {k:?}: expected a string, got {}", json_type(&other))),
            })
            .collect(),
        other => Err(format!("expected an object of strings, got {}", json_type(&other))),
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str, format: Format) -> ImportError {
        parse(text, format).expect_err("refused")
    }

    #[test]
    fn csv_rows_become_devices() {
        let text = "group,id,name,tags\ntrucks,truck-1,Truck one,site=Oslo; fleet = north\n,sensor-2,,\n\"freezers\",\"f-3\",\"Freezer, back room\",\n";
        let devices = parse(text, Format::Csv).expect("parses");
        assert_eq!(devices.len(), 3);
        assert_eq!(devices[0].id, "truck-1");
        assert_eq!(devices[0].group.as_deref(), Some("trucks"));
        assert_eq!(devices[0].name.as_deref(), Some("Truck one"));
        assert_eq!(
            devices[0].tags,
            [
                ("fleet".to_string(), "north".to_string()),
                ("site".into(), "Oslo".into())
            ]
            .into()
        );
        assert_eq!(devices[1], NewDevice::new("sensor-2"));
        assert_eq!(devices[2].name.as_deref(), Some("Freezer, back room"));
        // Only an id column is fine.
        assert_eq!(parse("id\na\nb\n", Format::Csv).expect("ids").len(), 2);
        // A header with no rows is an empty import.
        assert!(parse("id,name\n", Format::Csv).expect("empty").is_empty());
    }

    #[test]
    fn csv_errors_name_the_line_and_field() {
        let e = err("id,name\nok-1,One\nbad id,Two\n", Format::Csv);
        assert_eq!((e.line, e.field.as_deref()), (3, Some("id")), "{e}");
        let e = err("id,colour\na,red\n", Format::Csv);
        assert_eq!((e.line, e.field.as_deref()), (1, Some("colour")), "{e}");
        let e = err("name\nOne\n", Format::Csv);
        assert_eq!((e.line, e.field.as_deref()), (1, Some("id")), "{e}");
        let e = err("id,tags\na,site=x\nb,site\n", Format::Csv);
        assert_eq!((e.line, e.field.as_deref()), (3, Some("tags")), "{e}");
        let e = err("id,group\na,g\nb,g\na,h\n", Format::Csv);
        assert_eq!((e.line, e.field.as_deref()), (4, Some("id")), "{e}");
        assert!(e.message.contains("line 2"), "{e}");
        let e = err("id,group\na,g\nb\n", Format::Csv);
        assert_eq!(e.line, 3, "{e}");
        let e = err("id,name\na,\n,Nameless\n", Format::Csv);
        assert_eq!((e.line, e.field.as_deref()), (3, Some("id")), "{e}");
        assert_eq!(e.to_string(), "line 3, field id: missing");
    }

    #[test]
    fn ndjson_lines_become_devices() {
        let text = "{\"id\":\"truck-1\",\"group\":\"trucks\",\"tags\":{\"site\":\"Oslo\"}}\n\n{\"id\":\"s-2\",\"name\":null}\n";
        let devices = parse(text, Format::Ndjson).expect("parses");
        assert_eq!(devices.len(), 2);
        assert_eq!(devices[0].tags.get("site").map(String::as_str), Some("Oslo"));
        assert_eq!(devices[1], NewDevice::new("s-2"));
    }

    #[test]
    fn ndjson_errors_name_the_line_and_field() {
        let cases: [(&str, u64, Option<&str>); 7] = [
            ("{\"id\":\"a\"}\n{\"id\":5}\n", 2, Some("id")),
            (
                "{\"id\":\"a\"}\n\n{\"id\":\"b\",\"colour\":\"red\"}\n",
                3,
                Some("colour"),
            ),
            ("{\"name\":\"x\"}\n", 1, Some("id")),
            ("{\"id\":\"a\",\"tags\":{\"k\":1}}\n", 1, Some("tags")),
            ("{\"id\":\"a\",\"group\":\"two words\"}\n", 1, Some("group")),
            ("[1]\n", 1, None),
            ("{\"id\":\"a\"}\n{\"id\":\"a\"}\n", 2, Some("id")),
        ];
        for (text, line, field) in cases {
            let e = err(text, Format::Ndjson);
            assert_eq!((e.line, e.field.as_deref()), (line, field), "{text:?}: {e}");
        }
        let e = err("{\"id\":\"a\"}\n{not json\n", Format::Ndjson);
        assert_eq!((e.line, e.field.as_deref()), (2, None), "{e}");
    }

    #[test]
    fn formats_follow_the_extension() {
        use std::path::Path;
        assert_eq!(Format::from_path(Path::new("fleet.CSV")), Some(Format::Csv));
        assert_eq!(Format::from_path(Path::new("fleet.ndjson")), Some(Format::Ndjson));
        assert_eq!(Format::from_path(Path::new("fleet.jsonl")), Some(Format::Ndjson));
        assert_eq!(Format::from_path(Path::new("fleet")), None);
    }
}
