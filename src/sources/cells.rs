//! Converted values and the Arrow column builders they go into, shared by the connectors:
//! each connector parses its wire format into [`Cell`]s, then appends a whole record at once.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Date32Builder, Decimal128Builder, Float64Builder, Int64Builder,
    StringBuilder, TimestampMillisecondBuilder,
};
use arrow::datatypes::DataType;

/// One converted value.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Int(i64),
    Float(f64),
    Text(String),
    Bool(bool),
    Date(i32),
    /// Epoch milliseconds, UTC.
    Millis(i64),
    /// A decimal's digits, at its column's scale (`12.30` in a scale-2 column is 1230).
    Decimal(i128),
}

/// A builder for one column of a staged schema (the types `crate::stage` can stage).
pub enum ColumnBuilder {
    Int(Int64Builder),
    Float(Float64Builder),
    Text(StringBuilder),
    Bool(BooleanBuilder),
    Date(Date32Builder),
    Millis(TimestampMillisecondBuilder),
    Decimal(Decimal128Builder),
}

impl ColumnBuilder {
    pub fn new(data_type: &DataType) -> ColumnBuilder {
        match data_type {
            DataType::Int64 => ColumnBuilder::Int(Int64Builder::new()),
            DataType::Float64 => ColumnBuilder::Float(Float64Builder::new()),
            DataType::Boolean => ColumnBuilder::Bool(BooleanBuilder::new()),
            DataType::Date32 => ColumnBuilder::Date(Date32Builder::new()),
            DataType::Timestamp(..) => {
                ColumnBuilder::Millis(TimestampMillisecondBuilder::new().with_timezone("UTC"))
            }
            DataType::Decimal128(..) => {
                ColumnBuilder::Decimal(Decimal128Builder::new().with_data_type(data_type.clone()))
            }
            _ => ColumnBuilder::Text(StringBuilder::new()),
        }
    }

    /// Appends the cell; a cell of another type (only `Null` by construction) appends null.
    pub fn append(&mut self, cell: Cell) {
        match (self, cell) {
            (ColumnBuilder::Int(b), Cell::Int(v)) => b.append_value(v),
            (ColumnBuilder::Float(b), Cell::Float(v)) => b.append_value(v),
            (ColumnBuilder::Text(b), Cell::Text(v)) => b.append_value(v),
            (ColumnBuilder::Bool(b), Cell::Bool(v)) => b.append_value(v),
            (ColumnBuilder::Date(b), Cell::Date(v)) => b.append_value(v),
            (ColumnBuilder::Millis(b), Cell::Millis(v)) => b.append_value(v),
            (ColumnBuilder::Decimal(b), Cell::Decimal(v)) => b.append_value(v),
            (ColumnBuilder::Int(b), _) => b.append_null(),
            (ColumnBuilder::Float(b), _) => b.append_null(),
            (ColumnBuilder::Text(b), _) => b.append_null(),
            (ColumnBuilder::Bool(b), _) => b.append_null(),
            (ColumnBuilder::Date(b), _) => b.append_null(),
            (ColumnBuilder::Millis(b), _) => b.append_null(),
            (ColumnBuilder::Decimal(b), _) => b.append_null(),
        }
    }

    /// Appends a copy of the cell, so a reused row buffer keeps its text allocations.
    pub fn append_ref(&mut self, cell: &Cell) {
        match (self, cell) {
            (ColumnBuilder::Text(b), Cell::Text(v)) => b.append_value(v),
            (builder, Cell::Text(_)) => builder.append(Cell::Null),
            (builder, other) => builder.append(other.clone()),
        }
    }

    /// The column so far; the builder is empty afterwards.
    pub fn finish(&mut self) -> ArrayRef {
        match self {
            ColumnBuilder::Int(b) => Arc::new(b.finish()),
            ColumnBuilder::Float(b) => Arc::new(b.finish()),
            ColumnBuilder::Text(b) => Arc::new(b.finish()),
            ColumnBuilder::Bool(b) => Arc::new(b.finish()),
            ColumnBuilder::Date(b) => Arc::new(b.finish()),
            ColumnBuilder::Millis(b) => Arc::new(b.finish()),
            ColumnBuilder::Decimal(b) => Arc::new(b.finish()),
        }
    }
}
