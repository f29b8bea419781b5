//! The checks every destination makes of a merge request's staged schema before it maps the
//! columns onto its own types: usable and unreserved column names, no two columns the
//! destination cannot tell apart, a key among the data columns, and the two system columns.

use std::collections::HashMap;

use arrow::datatypes::{DataType, TimeUnit};

use super::MergeRequest;
use crate::schema::{DELETED_COLUMN, VERSION_COLUMN, is_system_column};
use crate::{Error, Result};

/// How a destination treats column names.
pub(crate) struct NameRules<'a> {
    /// Why the destination cannot use a column name, when it cannot.
    pub problem: &'a dyn Fn(&str) -> Option<String>,
    /// `Some(why)` when names that differ only by case collide in the destination.
    pub case_insensitive: Option<&'a str>,
}

/// Unusable or reserved column names and colliding names are `Error::SchemaDrift` (the source
/// changed shape); a key that is not a staged data column is `Error::Config`; a staged schema
/// without proper system columns is `Error::Destination` (staging is broken, not the source).
pub(crate) fn check_staged_schema(request: &MergeRequest, names: &NameRules<'_>) -> Result<()> {
    let stream = &request.stream;
    let mut seen: HashMap<String, &str> = HashMap::new();
    for field in request.schema.fields() {
        let name = field.name();
        if let Some(problem) = (names.problem)(name) {
            return Err(Error::SchemaDrift(format!(
                "stream `{stream}`: column `{name}` {problem}"
            )));
        }
        if is_system_column(name) && name != VERSION_COLUMN && name != DELETED_COLUMN {
            return Err(Error::SchemaDrift(format!(
                "stream `{stream}`: column `{name}` uses the reserved prefix `_syncline_`"
            )));
        }
        let folded = match names.case_insensitive {
            Some(_) => name.to_lowercase(),
            None => name.clone(),
        };
        if let Some(other) = seen.insert(folded, name.as_str()) {
            return Err(Error::SchemaDrift(match names.case_insensitive {
                Some(why) => format!(
                    "stream `{stream}`: columns `{other}` and `{name}` differ only by case, \
                     which the destination cannot tell apart ({why})"
                ),
                None => {
                    format!("stream `{stream}`: column `{name}` appears twice in the staged schema")
                }
            }));
        }
    }

    if is_system_column(&request.key) || request.schema.field_with_name(&request.key).is_err() {
        return Err(Error::Config(format!(
            "stream `{stream}`: key column `{}` is not a data column of the staged schema",
            request.key
        )));
    }
    let utc_timestamp = |data_type: &DataType| {
        matches!(
            data_type,
            DataType::Timestamp(TimeUnit::Millisecond | TimeUnit::Microsecond, Some(tz))
                if is_utc(tz)
        )
    };
    if !matches!(request.schema.field_with_name(VERSION_COLUMN), Ok(f) if utc_timestamp(f.data_type()))
    {
        return Err(Error::Destination(format!(
            "stream `{stream}`: the staged schema lacks `{VERSION_COLUMN}` as a UTC millisecond \
             or microsecond timestamp"
        )));
    }
    if !matches!(request.schema.field_with_name(DELETED_COLUMN), Ok(f) if f.data_type() == &DataType::Boolean)
    {
        return Err(Error::Destination(format!(
            "stream `{stream}`: the staged schema lacks `{DELETED_COLUMN}` as a boolean"
        )));
    }
    Ok(())
}

/// Whether an Arrow timestamp's time zone is UTC under one of its spellings.
pub(crate) fn is_utc(tz: &str) -> bool {
    matches!(tz, "UTC" | "+00:00" | "Etc/UTC" | "Z")
}
