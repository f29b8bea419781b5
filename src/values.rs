//! What a value may hold on its way to any destination: the one rule every source and
//! destination share, applied to each batch before it is staged.
//!
//! Text: U+0000 (NUL) is replaced by U+FFFD (the replacement character). PostgreSQL cannot
//! store NUL in `text` at all, and a load holding one would fail its merge on every retry;
//! the other destinations get the same value so that every destination holds the same rows.
//! Each replaced value is counted in the run report (`values_replaced`), never silent.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, StringArray};
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;

use crate::Result;

/// `batch` with NUL in text replaced, and how many values changed. Batches without NUL
/// come back as they were (no copy).
pub fn without_nul(batch: RecordBatch) -> Result<(RecordBatch, u64)> {
    let mut replaced = 0u64;
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(batch.num_columns());
    let mut changed = false;
    for column in batch.columns() {
        if column.data_type() != &DataType::Utf8 {
            columns.push(column.clone());
            continue;
        }
        let text = column.as_string::<i32>();
        // The values buffer holds every value's bytes back to back: one scan says whether
        // any value needs a look.
        if !text.value_data().contains(&0) {
            columns.push(column.clone());
            continue;
        }
        let cleaned: StringArray = text
            .iter()
            .map(|value| {
                value.map(|v| {
                    if v.contains('\0') {
                        replaced += 1;
                        v.replace('\0', "\u{FFFD}")
                    } else {
                        v.to_string()
                    }
                })
            })
            .collect();
        columns.push(Arc::new(cleaned));
        changed = true;
    }
    if !changed {
        return Ok((batch, 0));
    }
    Ok((RecordBatch::try_new(batch.schema(), columns)?, replaced))
}

#[cfg(test)]
mod tests {
    use arrow::array::Int64Array;
    use arrow::datatypes::{Field, Schema};

    use super::*;

    #[test]
    fn nul_becomes_the_replacement_character_and_is_counted() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("email", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![1, 2, 3])),
                Arc::new(StringArray::from(vec![Some("a\0b\0"), None, Some("plain")])),
            ],
        )
        .unwrap();
        let (cleaned, replaced) = without_nul(batch).unwrap();
        assert_eq!(replaced, 1);
        let emails = cleaned.column(1).as_string::<i32>();
        assert_eq!(emails.value(0), "a\u{FFFD}b\u{FFFD}");
        assert!(emails.is_null(1));
        assert_eq!(emails.value(2), "plain");
        let (_, again) = without_nul(cleaned).unwrap();
        assert_eq!(again, 0);
    }
}
