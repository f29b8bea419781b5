//! A small SOQL engine for the simulator's `query`, `queryAll` and Bulk endpoints:
//!
//! ```text
//! SELECT f1, f2, … | COUNT()  FROM Obj
//!   [WHERE cond]  [ORDER BY f [ASC|DESC] [NULLS FIRST|LAST], …]  [LIMIT n]
//! cond := term (AND term)* | term (OR term)*
//! term := NOT term | ( cond ) | f (= | != | <> | < | <= | > | >=) literal | f [NOT] IN (literal, …)
//! ```
//!
//! Keywords and field names are case-insensitive; results use the describe casing. As in
//! Salesforce, AND and OR cannot be mixed at one level without parentheses, datetime
//! fields only take datetime literals (`2024-01-31T23:01:01Z`, optional millis, `Z` or
//! `±hh:mm`), date fields only date literals, text fields only quoted strings, and text
//! comparisons ignore case. Date functions (`TODAY`, `LAST_N_DAYS:n`), `LIKE`, relationship
//! paths and aggregates other than `COUNT()` are not supported.

use std::cmp::Ordering;

use serde_json::Value;

use super::SfRecord;
use super::records::{parse_date, parse_datetime};
use super::schema::{FieldDef, ObjectSchema, SObject, ValueKind};

/// A query Salesforce would refuse: `code` is the `errorCode` of the 400 body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SoqlError {
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

impl SoqlError {
    fn malformed(message: impl Into<String>) -> Self {
        SoqlError {
            code: "MALFORMED_QUERY",
            message: message.into(),
        }
    }

    fn invalid_field(message: impl Into<String>) -> Self {
        SoqlError {
            code: "INVALID_FIELD",
            message: message.into(),
        }
    }

    fn invalid_type(name: &str) -> Self {
        SoqlError {
            code: "INVALID_TYPE",
            message: format!(
                "sObject type '{name}' is not supported. If you are attempting to use a custom \
                 object, be sure to append the '__c' after the entity name. Please reference \
                 your WSDL or the describe call for the appropriate names."
            ),
        }
    }
}

/// What a query returns: a row count or the values of the listed fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Selection {
    /// `SELECT COUNT()`: only `totalSize` is answered.
    Count,
    /// Indexes into the object's schema fields, in SELECT order.
    Fields(Vec<usize>),
}

/// A parsed, schema-checked query.
#[derive(Debug, Clone)]
pub(crate) struct Query {
    pub(crate) object: SObject,
    pub(crate) selection: Selection,
    filter: Option<Condition>,
    order: Vec<OrderKey>,
    limit: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    fn symbol(self) -> &'static str {
        match self {
            CmpOp::Eq => "=",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }
}

/// A comparable value: a record's or a literal's, already typed for its field.
#[derive(Debug, Clone, PartialEq)]
enum Cell {
    /// Lowercased, since SOQL text comparison ignores case.
    Text(String),
    Number(f64),
    Bool(bool),
    /// `YYYY-MM-DD`, which sorts like the date.
    Date(String),
    /// Epoch milliseconds.
    DateTime(i64),
}

#[derive(Debug, Clone)]
enum Condition {
    All(Vec<Condition>),
    Any(Vec<Condition>),
    Not(Box<Condition>),
    /// `value` is `None` for the `null` literal.
    Compare {
        field: usize,
        op: CmpOp,
        value: Option<Cell>,
    },
    In {
        field: usize,
        negated: bool,
        values: Vec<Option<Cell>>,
    },
}

#[derive(Debug, Clone, Copy)]
struct OrderKey {
    field: usize,
    descending: bool,
    nulls_last: bool,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    /// Identifiers and keywords.
    Word(String),
    /// A quoted string, escapes resolved.
    Text(String),
    Number(f64),
    Date(String),
    DateTime(i64),
    Comma,
    LParen,
    RParen,
    Op(CmpOp),
}

#[derive(Debug, Clone, PartialEq)]
enum Literal {
    Null,
    Bool(bool),
    Number(f64),
    Text(String),
    Date(String),
    DateTime(i64),
}

/// Words that end a field list or clause; never field names.
const RESERVED: &[&str] = &[
    "SELECT", "FROM", "WHERE", "AND", "OR", "NOT", "IN", "ORDER", "BY", "LIMIT", "ASC", "DESC",
    "NULLS",
];

/// Parses `soql` and checks it against `schemas` (indexed by [`SObject::index`]).
///
/// Errors carry Salesforce's codes: `MALFORMED_QUERY` for syntax, `INVALID_TYPE` for an
/// unknown or non-queryable object, `INVALID_FIELD` for unknown fields and literals of the
/// wrong type.
pub(crate) fn parse(soql: &str, schemas: &[ObjectSchema]) -> Result<Query, SoqlError> {
    let mut parser = Parser {
        tokens: tokenize(soql)?,
        pos: 0,
    };
    parser.expect_keyword("SELECT")?;
    let names = parser.select_list()?;
    parser.expect_keyword("FROM")?;
    let object_name = parser.word()?;
    let schema = SObject::parse(&object_name)
        .filter(|object| object.queryable())
        .and_then(|object| schemas.get(object.index()))
        .ok_or_else(|| SoqlError::invalid_type(&object_name))?;
    let selection = match names {
        None => Selection::Count,
        Some(names) => {
            let mut fields: Vec<usize> = Vec::with_capacity(names.len());
            for name in &names {
                let index = resolve(schema, name)?;
                if fields.contains(&index) {
                    return Err(SoqlError::malformed(format!(
                        "duplicate field selected: {}",
                        schema.fields[index].name
                    )));
                }
                fields.push(index);
            }
            Selection::Fields(fields)
        }
    };
    let filter = if parser.eat_keyword("WHERE") {
        Some(parser.condition(schema)?)
    } else {
        None
    };
    let mut order = Vec::new();
    if parser.eat_keyword("ORDER") {
        parser.expect_keyword("BY")?;
        order = parser.order_list(schema)?;
    }
    let limit = if parser.eat_keyword("LIMIT") {
        Some(parser.limit()?)
    } else {
        None
    };
    if let Some(token) = parser.peek() {
        return Err(unexpected(Some(token)));
    }
    Ok(Query {
        object: schema.object,
        selection,
        filter,
        order,
        limit,
    })
}

impl Query {
    /// The selected field indexes; empty for `COUNT()`.
    pub(crate) fn fields(&self) -> &[usize] {
        match &self.selection {
            Selection::Fields(fields) => fields,
            Selection::Count => &[],
        }
    }

    /// The first selected compound field, which Bulk refuses.
    pub(crate) fn compound_field<'s>(&self, schema: &'s ObjectSchema) -> Option<&'s FieldDef> {
        self.fields()
            .iter()
            .map(|&index| &schema.fields[index])
            .find(|def| def.ty.kind() == ValueKind::Compound)
    }

    /// The matching records in result order: filtered (soft-deleted rows only when
    /// `include_deleted`, as `queryAll`), sorted by the ORDER BY keys with Id order
    /// breaking ties, then cut to the LIMIT.
    pub(crate) fn execute<'r>(
        &self,
        schema: &ObjectSchema,
        records: &'r [SfRecord],
        include_deleted: bool,
    ) -> Vec<&'r SfRecord> {
        let mut hits: Vec<&'r SfRecord> = records
            .iter()
            .filter(|record| include_deleted || !record.is_deleted)
            .filter(|record| {
                self.filter
                    .as_ref()
                    .is_none_or(|condition| condition.matches(schema, record))
            })
            .collect();
        if !self.order.is_empty() {
            // Keys are computed once per record: datetime parsing inside the comparator
            // would dominate large sorts.
            let mut keyed: Vec<(Vec<Option<Cell>>, &'r SfRecord)> = hits
                .into_iter()
                .map(|record| {
                    let keys = self
                        .order
                        .iter()
                        .map(|key| cell_of(&schema.fields[key.field], record))
                        .collect();
                    (keys, record)
                })
                .collect();
            // Stable, so records stored in Id order keep it among equal keys.
            keyed.sort_by(|(a, _), (b, _)| compare_keys(&self.order, a, b));
            hits = keyed.into_iter().map(|(_, record)| record).collect();
        }
        if let Some(limit) = self.limit {
            hits.truncate(limit);
        }
        hits
    }
}

impl Condition {
    fn matches(&self, schema: &ObjectSchema, record: &SfRecord) -> bool {
        match self {
            Condition::All(parts) => parts.iter().all(|part| part.matches(schema, record)),
            Condition::Any(parts) => parts.iter().any(|part| part.matches(schema, record)),
            Condition::Not(inner) => !inner.matches(schema, record),
            Condition::Compare { field, op, value } => {
                let actual = cell_of(&schema.fields[*field], record);
                compare_op(actual.as_ref(), *op, value.as_ref())
            }
            Condition::In {
                field,
                negated,
                values,
            } => {
                let actual = cell_of(&schema.fields[*field], record);
                let found = values
                    .iter()
                    .any(|value| equal(actual.as_ref(), value.as_ref()));
                found != *negated
            }
        }
    }
}

/// A record's value of `def` as a comparable cell; `None` for null.
fn cell_of(def: &FieldDef, record: &SfRecord) -> Option<Cell> {
    match record.fields.get(&def.name)? {
        Value::Bool(flag) => Some(Cell::Bool(*flag)),
        Value::Number(number) => number.as_f64().map(Cell::Number),
        Value::String(text) => match def.ty.kind() {
            ValueKind::DateTime => parse_datetime(text).map(Cell::DateTime),
            ValueKind::Date => Some(Cell::Date(text.clone())),
            _ => Some(Cell::Text(text.to_lowercase())),
        },
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

fn compare(a: &Cell, b: &Cell) -> Option<Ordering> {
    match (a, b) {
        (Cell::Text(x), Cell::Text(y)) | (Cell::Date(x), Cell::Date(y)) => Some(x.cmp(y)),
        (Cell::Number(x), Cell::Number(y)) => x.partial_cmp(y),
        (Cell::Bool(x), Cell::Bool(y)) => Some(x.cmp(y)),
        (Cell::DateTime(x), Cell::DateTime(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

/// SOQL equality: `= null` matches nulls, and `!=` (its negation) includes them.
fn equal(actual: Option<&Cell>, literal: Option<&Cell>) -> bool {
    match (actual, literal) {
        (None, None) => true,
        (Some(a), Some(b)) => compare(a, b) == Some(Ordering::Equal),
        _ => false,
    }
}

/// Range comparisons never match a null on either side.
fn compare_op(actual: Option<&Cell>, op: CmpOp, literal: Option<&Cell>) -> bool {
    match op {
        CmpOp::Eq => return equal(actual, literal),
        CmpOp::Ne => return !equal(actual, literal),
        CmpOp::Lt | CmpOp::Le | CmpOp::Gt | CmpOp::Ge => {}
    }
    let Some(ordering) = actual.zip(literal).and_then(|(a, b)| compare(a, b)) else {
        return false;
    };
    match op {
        CmpOp::Lt => ordering.is_lt(),
        CmpOp::Le => ordering.is_le(),
        CmpOp::Gt => ordering.is_gt(),
        CmpOp::Ge => ordering.is_ge(),
        CmpOp::Eq | CmpOp::Ne => false,
    }
}

fn compare_keys(order: &[OrderKey], a: &[Option<Cell>], b: &[Option<Cell>]) -> Ordering {
    for ((key, x), y) in order.iter().zip(a).zip(b) {
        let ordering = match (x, y) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) if key.nulls_last => Ordering::Greater,
            (None, Some(_)) => Ordering::Less,
            (Some(_), None) if key.nulls_last => Ordering::Less,
            (Some(_), None) => Ordering::Greater,
            (Some(x), Some(y)) => {
                let ordering = compare(x, y).unwrap_or(Ordering::Equal);
                if key.descending {
                    ordering.reverse()
                } else {
                    ordering
                }
            }
        };
        if ordering != Ordering::Equal {
            return ordering;
        }
    }
    Ordering::Equal
}

fn no_such_column(name: &str, schema: &ObjectSchema) -> SoqlError {
    SoqlError::invalid_field(format!(
        "No such column '{name}' on entity '{}'. If you are attempting to use a custom field, \
         be sure to append the '__c' after the custom field name. Please reference your WSDL \
         or the describe call for the appropriate names.",
        schema.object.name()
    ))
}

fn resolve(schema: &ObjectSchema, name: &str) -> Result<usize, SoqlError> {
    schema
        .field_index(name)
        .ok_or_else(|| no_such_column(name, schema))
}

/// Types a literal for `def`, refusing the mismatches Salesforce refuses.
fn typed(def: &FieldDef, literal: Literal) -> Result<Option<Cell>, SoqlError> {
    let cell = match (def.ty.kind(), literal) {
        (_, Literal::Null) => return Ok(None),
        (ValueKind::Text, Literal::Text(text)) => Cell::Text(text.to_lowercase()),
        (ValueKind::Number, Literal::Number(number)) => Cell::Number(number),
        (ValueKind::Boolean, Literal::Bool(flag)) => Cell::Bool(flag),
        (ValueKind::Date, Literal::Date(date)) => Cell::Date(date),
        (ValueKind::DateTime, Literal::DateTime(ms)) => Cell::DateTime(ms),
        (ValueKind::Text, _) => {
            return Err(SoqlError::invalid_field(format!(
                "value of filter criterion for field '{}' must be of type {} and should be \
                 enclosed in quotes",
                def.name,
                def.ty.message_name()
            )));
        }
        _ => {
            return Err(SoqlError::invalid_field(format!(
                "value of filter criterion for field '{}' must be of type {} and should not be \
                 enclosed in quotes",
                def.name,
                def.ty.message_name()
            )));
        }
    };
    Ok(Some(cell))
}

fn unexpected(token: Option<&Token>) -> SoqlError {
    let shown = match token {
        None => return SoqlError::malformed("unexpected end of query"),
        Some(Token::Word(word)) => word.clone(),
        Some(Token::Text(text)) => format!("'{text}'"),
        Some(Token::Number(number)) => number.to_string(),
        Some(Token::Date(date)) => date.clone(),
        Some(Token::DateTime(ms)) => super::records::rest_datetime(*ms),
        Some(Token::Comma) => ",".to_owned(),
        Some(Token::LParen) => "(".to_owned(),
        Some(Token::RParen) => ")".to_owned(),
        Some(Token::Op(op)) => op.symbol().to_owned(),
    };
    SoqlError::malformed(format!("unexpected token: '{shown}'"))
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.pos).cloned();
        if token.is_some() {
            self.pos += 1;
        }
        token
    }

    fn peek_keyword(&self, keyword: &str) -> bool {
        matches!(self.peek(), Some(Token::Word(word)) if word.eq_ignore_ascii_case(keyword))
    }

    fn eat_keyword(&mut self, keyword: &str) -> bool {
        let found = self.peek_keyword(keyword);
        if found {
            self.pos += 1;
        }
        found
    }

    fn expect_keyword(&mut self, keyword: &str) -> Result<(), SoqlError> {
        if self.eat_keyword(keyword) {
            Ok(())
        } else {
            Err(unexpected(self.peek()))
        }
    }

    fn eat(&mut self, token: &Token) -> bool {
        let found = self.peek() == Some(token);
        if found {
            self.pos += 1;
        }
        found
    }

    fn expect(&mut self, token: &Token) -> Result<(), SoqlError> {
        if self.eat(token) {
            Ok(())
        } else {
            Err(unexpected(self.peek()))
        }
    }

    /// A field or object name: any word that is not a keyword.
    fn word(&mut self) -> Result<String, SoqlError> {
        match self.peek() {
            Some(Token::Word(word)) if !RESERVED.iter().any(|kw| word.eq_ignore_ascii_case(kw)) => {
                let word = word.clone();
                self.pos += 1;
                Ok(word)
            }
            other => Err(unexpected(other)),
        }
    }

    /// `None` for `COUNT()`, else the raw field names.
    fn select_list(&mut self) -> Result<Option<Vec<String>>, SoqlError> {
        if self.peek_keyword("COUNT") && self.tokens.get(self.pos + 1) == Some(&Token::LParen) {
            self.pos += 2;
            self.expect(&Token::RParen)?;
            return Ok(None);
        }
        let mut names = vec![self.word()?];
        while self.eat(&Token::Comma) {
            names.push(self.word()?);
        }
        Ok(Some(names))
    }

    fn condition(&mut self, schema: &ObjectSchema) -> Result<Condition, SoqlError> {
        let first = self.term(schema)?;
        let (joiner, other) = if self.peek_keyword("AND") {
            ("AND", "OR")
        } else if self.peek_keyword("OR") {
            ("OR", "AND")
        } else {
            return Ok(first);
        };
        let mut parts = vec![first];
        while self.eat_keyword(joiner) {
            parts.push(self.term(schema)?);
        }
        // Salesforce refuses `a AND b OR c`: mixing needs parentheses.
        if self.peek_keyword(other) {
            return Err(unexpected(self.peek()));
        }
        Ok(if joiner == "AND" {
            Condition::All(parts)
        } else {
            Condition::Any(parts)
        })
    }

    fn term(&mut self, schema: &ObjectSchema) -> Result<Condition, SoqlError> {
        if self.eat_keyword("NOT") {
            return Ok(Condition::Not(Box::new(self.term(schema)?)));
        }
        if self.eat(&Token::LParen) {
            let inner = self.condition(schema)?;
            self.expect(&Token::RParen)?;
            return Ok(inner);
        }
        let name = self.word()?;
        let field = resolve(schema, &name)?;
        let def = &schema.fields[field];
        if !def.filterable() {
            return Err(SoqlError::invalid_field(format!(
                "field '{}' can not be filtered in a query call",
                def.name
            )));
        }
        if self.peek_keyword("NOT") || self.peek_keyword("IN") {
            let negated = self.eat_keyword("NOT");
            self.expect_keyword("IN")?;
            self.expect(&Token::LParen)?;
            let mut values = vec![typed(def, self.literal()?)?];
            while self.eat(&Token::Comma) {
                values.push(typed(def, self.literal()?)?);
            }
            self.expect(&Token::RParen)?;
            return Ok(Condition::In {
                field,
                negated,
                values,
            });
        }
        let op = match self.next() {
            Some(Token::Op(op)) => op,
            other => return Err(unexpected(other.as_ref())),
        };
        let value = typed(def, self.literal()?)?;
        Ok(Condition::Compare { field, op, value })
    }

    fn literal(&mut self) -> Result<Literal, SoqlError> {
        let literal = match self.next() {
            Some(Token::Text(text)) => Literal::Text(text),
            Some(Token::Number(number)) => Literal::Number(number),
            Some(Token::Date(date)) => Literal::Date(date),
            Some(Token::DateTime(ms)) => Literal::DateTime(ms),
            Some(Token::Word(word)) if word.eq_ignore_ascii_case("null") => Literal::Null,
            Some(Token::Word(word)) if word.eq_ignore_ascii_case("true") => Literal::Bool(true),
            Some(Token::Word(word)) if word.eq_ignore_ascii_case("false") => Literal::Bool(false),
            other => return Err(unexpected(other.as_ref())),
        };
        Ok(literal)
    }

    fn order_list(&mut self, schema: &ObjectSchema) -> Result<Vec<OrderKey>, SoqlError> {
        let mut keys = Vec::new();
        loop {
            let name = self.word()?;
            let field = resolve(schema, &name)?;
            let def = &schema.fields[field];
            if !def.filterable() {
                return Err(SoqlError::invalid_field(format!(
                    "field '{}' can not be sorted in a query call",
                    def.name
                )));
            }
            let descending = if self.eat_keyword("DESC") {
                true
            } else {
                self.eat_keyword("ASC");
                false
            };
            // Salesforce sorts nulls first unless told otherwise.
            let mut nulls_last = false;
            if self.eat_keyword("NULLS") {
                if self.eat_keyword("LAST") {
                    nulls_last = true;
                } else {
                    self.expect_keyword("FIRST")?;
                }
            }
            keys.push(OrderKey {
                field,
                descending,
                nulls_last,
            });
            if !self.eat(&Token::Comma) {
                return Ok(keys);
            }
        }
    }

    fn limit(&mut self) -> Result<usize, SoqlError> {
        match self.next() {
            Some(Token::Number(number))
                if number >= 0.0 && number.fract() == 0.0 && number <= u32::MAX as f64 =>
            {
                Ok(number as usize)
            }
            other => Err(unexpected(other.as_ref())),
        }
    }
}

fn tokenize(text: &str) -> Result<Vec<Token>, SoqlError> {
    let mut tokens = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some(&(start, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let simple = match c {
            ',' => Some(Token::Comma),
            '(' => Some(Token::LParen),
            ')' => Some(Token::RParen),
            '=' => Some(Token::Op(CmpOp::Eq)),
            _ => None,
        };
        if let Some(token) = simple {
            chars.next();
            tokens.push(token);
            continue;
        }
        match c {
            '!' | '<' | '>' => {
                chars.next();
                let next = chars.peek().map(|&(_, next)| next);
                let (op, two) = match (c, next) {
                    ('!', Some('=')) => (CmpOp::Ne, true),
                    ('<', Some('>')) => (CmpOp::Ne, true),
                    ('<', Some('=')) => (CmpOp::Le, true),
                    ('<', _) => (CmpOp::Lt, false),
                    ('>', Some('=')) => (CmpOp::Ge, true),
                    ('>', _) => (CmpOp::Gt, false),
                    _ => return Err(SoqlError::malformed("unexpected token: '!'")),
                };
                if two {
                    chars.next();
                }
                tokens.push(Token::Op(op));
            }
            '\'' => {
                chars.next();
                let mut value = String::new();
                let mut closed = false;
                while let Some((_, c)) = chars.next() {
                    match c {
                        '\'' => {
                            closed = true;
                            break;
                        }
                        '\\' => match chars.next() {
                            Some((_, escaped)) => value.push(match escaped {
                                'n' => '\n',
                                'r' => '\r',
                                't' => '\t',
                                'b' => '\u{8}',
                                'f' => '\u{c}',
                                other => other,
                            }),
                            None => break,
                        },
                        other => value.push(other),
                    }
                }
                if !closed {
                    return Err(SoqlError::malformed("unterminated string literal"));
                }
                tokens.push(Token::Text(value));
            }
            c if c.is_ascii_digit() || c == '-' => {
                let end = run_end(&mut chars, text.len(), |c| {
                    c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '+' | '-')
                });
                let run = &text[start..end];
                tokens.push(literal_token(run)?);
            }
            c if c.is_alphabetic() || c == '_' => {
                let end = run_end(&mut chars, text.len(), |c| {
                    c.is_alphanumeric() || matches!(c, '_' | '.')
                });
                tokens.push(Token::Word(text[start..end].to_owned()));
            }
            other => {
                return Err(SoqlError::malformed(format!("unexpected token: '{other}'")));
            }
        }
    }
    Ok(tokens)
}

/// Consumes characters while `keep` holds; returns the byte offset after the run.
fn run_end(
    chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>,
    len: usize,
    keep: impl Fn(char) -> bool,
) -> usize {
    while let Some(&(_, c)) = chars.peek() {
        if !keep(c) {
            break;
        }
        chars.next();
    }
    chars.peek().map_or(len, |&(at, _)| at)
}

/// A run starting with a digit or `-`: a datetime, a date or a number.
fn literal_token(run: &str) -> Result<Token, SoqlError> {
    if run.as_bytes().get(10) == Some(&b'T') {
        return parse_datetime(run).map(Token::DateTime).ok_or_else(|| {
            SoqlError::malformed(format!(
                "invalid datetime literal '{run}': expected YYYY-MM-DDThh:mm:ss[.sss](Z|+hh:mm|-hh:mm)"
            ))
        });
    }
    if run.len() == 10 && run.as_bytes().get(4) == Some(&b'-') {
        return parse_date(run)
            .map(|_| Token::Date(run.to_owned()))
            .ok_or_else(|| SoqlError::malformed(format!("invalid date literal '{run}'")));
    }
    let body = run.strip_prefix('-').unwrap_or(run);
    let (whole, fraction) = match body.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (body, None),
    };
    let all_digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    if all_digits(whole)
        && fraction.is_none_or(all_digits)
        && let Ok(number) = run.parse::<f64>()
    {
        return Ok(Token::Number(number));
    }
    Err(SoqlError::malformed(format!("unexpected token: '{run}'")))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;

    fn schemas() -> Vec<ObjectSchema> {
        ObjectSchema::all()
    }

    fn account(number: u64, name: Option<&str>, revenue: Option<f64>, stamp: &str) -> SfRecord {
        let id = format!("001{number:015}");
        let mut fields = BTreeMap::new();
        fields.insert("Id".to_owned(), json!(id));
        fields.insert("IsDeleted".to_owned(), json!(false));
        fields.insert("Name".to_owned(), json!(name));
        fields.insert("AnnualRevenue".to_owned(), json!(revenue));
        fields.insert("SystemModstamp".to_owned(), json!(stamp));
        fields.insert("CreatedDate".to_owned(), json!(stamp));
        SfRecord {
            id,
            fields,
            system_modstamp_ms: parse_datetime(stamp).expect("valid stamp"),
            is_deleted: false,
        }
    }

    fn sample() -> Vec<SfRecord> {
        let mut deleted = account(
            4,
            Some("Deleted Co"),
            Some(10.0),
            "2024-03-01T00:00:00.000+0000",
        );
        deleted.is_deleted = true;
        deleted.fields.insert("IsDeleted".to_owned(), json!(true));
        vec![
            account(1, Some("Acme"), Some(500.0), "2024-01-15T10:00:00.000+0000"),
            account(2, Some("globex"), None, "2024-02-01T00:00:00.000+0000"),
            account(3, None, Some(50.0), "2024-02-01T00:00:00.000+0000"),
            deleted,
            account(
                5,
                Some("Initech"),
                Some(75.5),
                "2024-05-01T10:00:00.000+0000",
            ),
        ]
    }

    fn ids(soql: &str, all: bool) -> Vec<u64> {
        let schemas = schemas();
        let records = sample();
        let query = parse(soql, &schemas).unwrap_or_else(|err| panic!("{soql}: {err:?}"));
        query
            .execute(&schemas[query.object.index()], &records, all)
            .into_iter()
            .map(|record| record.id[3..].parse().expect("numeric id"))
            .collect()
    }

    fn error(soql: &str) -> SoqlError {
        parse(soql, &schemas()).expect_err(soql)
    }

    #[test]
    fn parses_field_lists_case_insensitively_with_describe_casing() {
        let schemas = schemas();
        let query = parse("select id, NAME, systemmodstamp from ACCOUNT", &schemas).expect("valid");
        assert_eq!(query.object, SObject::Account);
        let account = &schemas[SObject::Account.index()];
        let names: Vec<&str> = query
            .fields()
            .iter()
            .map(|&index| account.fields[index].name.as_str())
            .collect();
        assert_eq!(names, ["Id", "Name", "SystemModstamp"]);
        let count =
            parse("SELECT COUNT() FROM Lead WHERE IsDeleted = false", &schemas).expect("count");
        assert_eq!(count.selection, Selection::Count);
        let compound = parse("SELECT Id, BillingAddress FROM Account", &schemas).expect("valid");
        assert_eq!(
            compound
                .compound_field(account)
                .map(|def| def.name.as_str()),
            Some("BillingAddress")
        );
    }

    #[test]
    fn filters_on_datetime_ranges_with_any_offset_form() {
        let window = "SELECT Id FROM Account WHERE SystemModstamp >= 2024-02-01T00:00:00Z \
                      AND SystemModstamp < 2024-05-01T10:00:00.000+00:00";
        assert_eq!(ids(window, false), [2, 3]);
        assert_eq!(ids(window, true), [2, 3, 4]);
        let shifted = "SELECT Id FROM Account WHERE SystemModstamp > 2024-01-31T16:00:00-08:00";
        assert_eq!(ids(shifted, false), [5]);
        let compound_cursor = "SELECT Id FROM Account WHERE SystemModstamp > 2024-02-01T00:00:00Z \
             OR (SystemModstamp = 2024-02-01T00:00:00Z AND Id > '001000000000000002') \
             ORDER BY SystemModstamp, Id";
        assert_eq!(ids(compound_cursor, false), [3, 5]);
    }

    #[test]
    fn compares_text_numbers_nulls_and_lists() {
        assert_eq!(
            ids("SELECT Id FROM Account WHERE Name = 'ACME'", false),
            [1]
        );
        assert_eq!(
            ids("SELECT Id FROM Account WHERE Name != 'acme'", false),
            [2, 3, 5]
        );
        assert_eq!(ids("SELECT Id FROM Account WHERE Name = null", false), [3]);
        assert_eq!(
            ids("SELECT Id FROM Account WHERE Name != NULL", false),
            [1, 2, 5]
        );
        assert_eq!(
            ids("SELECT Id FROM Account WHERE AnnualRevenue > 60", false),
            [1, 5]
        );
        assert_eq!(
            ids("SELECT Id FROM Account WHERE AnnualRevenue <= 75.5", false),
            [3, 5]
        );
        assert_eq!(
            ids(
                "SELECT Id FROM Account WHERE Id IN ('001000000000000005', '001000000000000001')",
                false
            ),
            [1, 5]
        );
        assert_eq!(
            ids(
                "SELECT Id FROM Account WHERE Name NOT IN ('Acme', 'Globex')",
                false
            ),
            [3, 5]
        );
        assert_eq!(
            ids(
                "SELECT Id FROM Account WHERE NOT (AnnualRevenue > 60)",
                false
            ),
            [2, 3]
        );
        assert_eq!(
            ids("SELECT Id FROM Account WHERE IsDeleted = true", true),
            [4]
        );
        assert_eq!(
            ids("SELECT Id FROM Account WHERE IsDeleted = true", false),
            Vec::<u64>::new()
        );
    }

    #[test]
    fn orders_with_nulls_first_and_limits() {
        assert_eq!(
            ids("SELECT Id FROM Account ORDER BY AnnualRevenue", false),
            [2, 3, 5, 1]
        );
        assert_eq!(
            ids(
                "SELECT Id FROM Account ORDER BY AnnualRevenue DESC NULLS LAST",
                false
            ),
            [1, 5, 3, 2]
        );
        assert_eq!(
            ids(
                "SELECT Id FROM Account ORDER BY SystemModstamp DESC, Id ASC LIMIT 3",
                false
            ),
            [5, 2, 3]
        );
        assert_eq!(
            ids("SELECT Id FROM Account ORDER BY Name", false),
            [3, 1, 2, 5]
        );
        assert_eq!(
            ids("SELECT Id FROM Account LIMIT 0", false),
            Vec::<u64>::new()
        );
    }

    #[test]
    fn refuses_what_salesforce_refuses() {
        let unknown = error("SELECT Id, Foo__c FROM Account");
        assert_eq!(unknown.code, "INVALID_FIELD");
        assert!(
            unknown
                .message
                .starts_with("No such column 'Foo__c' on entity 'Account'")
        );
        assert_eq!(error("SELECT Id FROM Widget").code, "INVALID_TYPE");
        assert_eq!(error("SELECT Id FROM AggregateResult").code, "INVALID_TYPE");
        assert_eq!(error("SELECT Id FRM Account").code, "MALFORMED_QUERY");
        assert_eq!(error("SELECT FROM Account").code, "MALFORMED_QUERY");
        assert_eq!(error("SELECT Id, Id FROM Account").code, "MALFORMED_QUERY");
        assert_eq!(
            error("SELECT Id FROM Account WHERE").code,
            "MALFORMED_QUERY"
        );
        assert_eq!(
            error("SELECT Id FROM Account LIMIT x").code,
            "MALFORMED_QUERY"
        );
        assert_eq!(
            error("SELECT Id FROM Account WHERE Name = 'open").code,
            "MALFORMED_QUERY"
        );
        let mixed = "SELECT Id FROM Account WHERE Name = 'a' AND Id = 'b' OR Id = 'c'";
        assert_eq!(error(mixed).code, "MALFORMED_QUERY");
        // An unencoded `+` reaches the server as a space.
        let space = "SELECT Id FROM Account WHERE SystemModstamp > 2024-01-01T00:00:00.000 00:00";
        assert_eq!(error(space).code, "MALFORMED_QUERY");
        let zoneless = "SELECT Id FROM Account WHERE SystemModstamp > 2024-01-01T00:00:00";
        assert_eq!(error(zoneless).code, "MALFORMED_QUERY");
        let date_for_datetime = error("SELECT Id FROM Account WHERE SystemModstamp > 2024-01-01");
        assert_eq!(date_for_datetime.code, "INVALID_FIELD");
        assert!(
            date_for_datetime
                .message
                .contains("must be of type dateTime")
        );
        let quoted = error("SELECT Id FROM Account WHERE CreatedDate > '2024-01-01T00:00:00Z'");
        assert_eq!(quoted.code, "INVALID_FIELD");
        assert_eq!(
            error("SELECT Id FROM Contact WHERE Birthdate > 2024-01-01T00:00:00Z").code,
            "INVALID_FIELD"
        );
        assert_eq!(
            error("SELECT Id FROM Account WHERE Name = 5").code,
            "INVALID_FIELD"
        );
        assert_eq!(
            error("SELECT Id FROM Account WHERE BillingAddress != null").code,
            "INVALID_FIELD"
        );
        assert_eq!(
            error("SELECT Id FROM Account ORDER BY BillingAddress").code,
            "INVALID_FIELD"
        );
    }

    #[test]
    fn tokenizes_literals_and_escapes() {
        let tokens = tokenize("x <> 'it\\'s' , -1.5 2024-01-31 2024-01-31T23:01:01.5+01:00")
            .expect("valid tokens");
        assert_eq!(
            tokens,
            [
                Token::Word("x".to_owned()),
                Token::Op(CmpOp::Ne),
                Token::Text("it's".to_owned()),
                Token::Comma,
                Token::Number(-1.5),
                Token::Date("2024-01-31".to_owned()),
                Token::DateTime(1_706_738_461_500),
            ]
        );
        assert!(tokenize("a ! b").is_err());
        assert!(tokenize("1e5").is_err());
        assert!(tokenize("a ; b").is_err());
    }
}
