//! The manifest of a staged load: what a complete load holds and where it came from.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde::{Deserialize, Serialize};

use super::StageError;
use crate::Result;
use crate::load::{CursorRange, LoadMode};
use crate::reconcile::Fingerprint;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedFile {
    /// Object store path.
    pub path: String,
    pub rows: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetterFile {
    pub path: String,
    pub rows: u64,
}

/// One column of the staged schema, in a form that survives JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnSpec {
    pub name: String,
    /// `int64`, `float64`, `utf8`, `boolean`, `date32`, `timestamp_ms_utc`, `timestamp_us_utc`
    /// or `decimal128(precision,scale)`.
    #[serde(rename = "type")]
    pub kind: String,
    pub nullable: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    pub pipeline: String,
    pub stream: String,
    pub load_id: String,
    pub mode: LoadMode,
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// The key column.
    pub key: String,
    pub schema: Vec<ColumnSpec>,
    pub cursor: CursorRange,
    /// The source stopped early without a contiguous range read (an unordered bulk read):
    /// committing this load must not move the stream's cursor.
    #[serde(default)]
    pub keeps_cursor: bool,
    /// The source's position to save with the cursor when this load commits
    /// (see `sources::Extraction::state`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_state: Option<serde_json::Value>,
    /// Count and checksum of the staged rows (see crate::reconcile).
    pub rows: u64,
    pub checksum: u64,
    pub files: Vec<StagedFile>,
    pub dead_letter: Option<DeadLetterFile>,
    /// A complete full load (no early stop, no dead letter): when its extraction started.
    /// Merging it deletes the destination rows it lacks (`destinations::MergeRequest::complete`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub complete_as_of: Option<chrono::DateTime<chrono::Utc>>,
    /// Set when the stream has a transform: then `key`, `schema`, `files`, `rows` and
    /// `checksum` describe the transformed load (what is merged and replayed), and this keeps
    /// the raw load as extracted, the audit copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transform: Option<RawLoadFiles>,
}

/// The raw load of a transformed stream, and how the transform accounted for its rows:
/// `raw = transformed + filtered` in count and checksum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawLoadFiles {
    /// The key column as extracted.
    pub key: String,
    pub schema: Vec<ColumnSpec>,
    pub files: Vec<StagedFile>,
    pub rows: u64,
    pub checksum: u64,
    /// Live rows the transform's filter left out.
    pub filtered_rows: u64,
    pub filtered_checksum: u64,
}

impl Manifest {
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint {
            rows: self.rows,
            checksum: self.checksum,
        }
    }

    /// The rows as extracted: the raw load's figures when the stream is transformed.
    pub fn raw_fingerprint(&self) -> Fingerprint {
        match &self.transform {
            Some(raw) => Fingerprint {
                rows: raw.rows,
                checksum: raw.checksum,
            },
            None => self.fingerprint(),
        }
    }

    pub fn arrow_schema(&self) -> Result<SchemaRef> {
        schema_of(&self.schema)
    }
}

/// The Arrow schema of staged columns.
pub fn schema_of(columns: &[ColumnSpec]) -> Result<SchemaRef> {
    let fields = columns
        .iter()
        .map(|c| Ok(Field::new(&c.name, data_type_of(&c.kind)?, c.nullable)))
        .collect::<Result<Vec<_>>>()?;
    Ok(Arc::new(Schema::new(fields)))
}

pub fn columns_of(schema: &Schema) -> Result<Vec<ColumnSpec>> {
    schema
        .fields()
        .iter()
        .map(|f| {
            Ok(ColumnSpec {
                name: f.name().clone(),
                kind: kind_of(f.data_type())?,
                nullable: f.is_nullable(),
            })
        })
        .collect()
}

fn kind_of(data_type: &DataType) -> Result<String> {
    Ok(match data_type {
        // An exact decimal: `decimal128(precision,scale)`.
        DataType::Decimal128(precision, scale) if *scale >= 0 && (*scale as u8) <= *precision => {
            return Ok(format!("decimal128({precision},{scale})"));
        }
        DataType::Int64 => "int64",
        DataType::Float64 => "float64",
        DataType::Utf8 => "utf8",
        DataType::Boolean => "boolean",
        DataType::Date32 => "date32",
        DataType::Timestamp(TimeUnit::Millisecond, Some(tz)) if tz.as_ref() == "UTC" => {
            "timestamp_ms_utc"
        }
        DataType::Timestamp(TimeUnit::Microsecond, Some(tz)) if tz.as_ref() == "UTC" => {
            "timestamp_us_utc"
        }
        other => return Err(StageError::UnstageableType(other.clone()).into()),
    }
    .to_owned())
}

fn data_type_of(kind: &str) -> Result<DataType> {
    if let Some(decimal) = kind
        .strip_prefix("decimal128(")
        .and_then(|rest| rest.strip_suffix(')'))
    {
        let parsed = decimal.split_once(',').and_then(|(precision, scale)| {
            let precision: u8 = precision.parse().ok()?;
            let scale: i8 = scale.parse().ok()?;
            (1..=38).contains(&precision).then_some((precision, scale))
        });
        return match parsed {
            Some((precision, scale)) => Ok(DataType::Decimal128(precision, scale)),
            None => Err(StageError::UnknownColumnType(kind.to_string()).into()),
        };
    }
    Ok(match kind {
        "int64" => DataType::Int64,
        "float64" => DataType::Float64,
        "utf8" => DataType::Utf8,
        "boolean" => DataType::Boolean,
        "date32" => DataType::Date32,
        "timestamp_ms_utc" => crate::schema::timestamp_type(),
        "timestamp_us_utc" => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        other => return Err(StageError::UnknownColumnType(other.to_string()).into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_decimal_column_round_trips_through_the_manifest() {
        let schema = Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("amount", DataType::Decimal128(18, 2), true),
            Field::new("whole", DataType::Decimal128(38, 0), true),
        ]);
        let columns = columns_of(&schema).unwrap();
        assert_eq!(columns[1].kind, "decimal128(18,2)");
        assert_eq!(schema_of(&columns).unwrap().as_ref(), &schema);
        // Decimals no destination holds are not staged.
        let wide = Schema::new(vec![Field::new("x", DataType::Decimal256(40, 2), true)]);
        assert!(columns_of(&wide).is_err());
        for unknown in ["decimal128(39,2)", "decimal128(18)", "decimal128(a,b)"] {
            let columns = vec![ColumnSpec {
                name: "x".into(),
                kind: unknown.into(),
                nullable: true,
            }];
            assert!(schema_of(&columns).is_err(), "{unknown}");
        }
    }
}
