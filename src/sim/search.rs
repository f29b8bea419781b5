//! Search semantics of `POST /crm/v3/objects/{objectType}/search` (crm-apis.md B2): request
//! validation with HubSpot's caps, filter evaluation, sorting and the 10,000-result window.
//!
//! Pure functions over [`SimRecord`]s; visibility (archived records, search lag) is decided
//! by the caller before filters run.

use std::cmp::Ordering;

use serde::Deserialize;
use serde_json::Value;

use super::data::{self, PropertyDef, SimRecord};

/// Most filter groups one request may carry.
pub(crate) const MAX_FILTER_GROUPS: usize = 5;
/// Most filters in one group (current docs; the Aug-2024 changelog said 10).
pub(crate) const MAX_FILTERS_PER_GROUP: usize = 6;
/// Most filters across all groups (current docs; the Aug-2024 changelog said 25).
pub(crate) const MAX_FILTERS_TOTAL: usize = 18;
/// Largest accepted `limit`.
pub(crate) const MAX_LIMIT: usize = 200;
/// `limit` when the request gives none.
pub(crate) const DEFAULT_LIMIT: usize = 10;
/// No query may page past this many results.
pub(crate) const RESULT_WINDOW: usize = 10_000;

/// A request HubSpot would refuse with 400 `VALIDATION_ERROR`; the text is the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SearchError(pub(crate) String);

fn invalid(message: impl Into<String>) -> SearchError {
    SearchError(message.into())
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireRequest {
    #[serde(default)]
    filter_groups: Option<Vec<WireGroup>>,
    #[serde(default)]
    sorts: Option<Vec<WireSort>>,
    #[serde(default)]
    properties: Option<Vec<String>>,
    #[serde(default)]
    limit: Option<Value>,
    #[serde(default)]
    after: Option<Value>,
    #[serde(default)]
    query: Option<String>,
}

#[derive(Debug, Deserialize)]
struct WireGroup {
    #[serde(default)]
    filters: Option<Vec<WireFilter>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireFilter {
    property_name: String,
    operator: String,
    #[serde(default)]
    value: Option<Value>,
    #[serde(default)]
    high_value: Option<Value>,
    #[serde(default)]
    values: Option<Vec<Value>>,
}

/// HubSpot takes either `{"propertyName":..,"direction":..}` or a bare property name.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum WireSort {
    Name(String),
    Spec(WireSortSpec),
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireSortSpec {
    property_name: String,
    #[serde(default)]
    direction: Option<String>,
}

/// How a property's string values compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ValueKind {
    Number,
    Time,
    Bool,
    Text,
}

impl ValueKind {
    fn of(def: &PropertyDef) -> Self {
        match def.kind.as_str() {
            "number" => ValueKind::Number,
            "datetime" | "date" => ValueKind::Time,
            "bool" => ValueKind::Bool,
            _ => ValueKind::Text,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operator {
    Eq,
    Neq,
    Lt,
    Lte,
    Gt,
    Gte,
    Between,
    In,
    NotIn,
    HasProperty,
    NotHasProperty,
    ContainsToken,
    NotContainsToken,
}

impl Operator {
    fn parse(name: &str) -> Option<Self> {
        let operator = match name.to_ascii_uppercase().as_str() {
            "EQ" => Operator::Eq,
            "NEQ" => Operator::Neq,
            "LT" => Operator::Lt,
            "LTE" => Operator::Lte,
            "GT" => Operator::Gt,
            "GTE" => Operator::Gte,
            "BETWEEN" => Operator::Between,
            "IN" => Operator::In,
            "NOT_IN" => Operator::NotIn,
            "HAS_PROPERTY" => Operator::HasProperty,
            "NOT_HAS_PROPERTY" => Operator::NotHasProperty,
            "CONTAINS_TOKEN" => Operator::ContainsToken,
            "NOT_CONTAINS_TOKEN" => Operator::NotContainsToken,
            _ => return None,
        };
        Some(operator)
    }
}

/// A filter value already converted to the property's comparison domain, so a malformed
/// value is rejected once at validation instead of silently matching nothing.
#[derive(Debug, Clone, PartialEq)]
enum Operand {
    Number(f64),
    Time(i64),
    Text(String),
}

#[derive(Debug, Clone)]
struct Filter {
    property: String,
    kind: ValueKind,
    operator: Operator,
    operands: Vec<Operand>,
}

#[derive(Debug, Clone)]
struct Sort {
    property: String,
    kind: ValueKind,
    descending: bool,
}

/// A validated search request.
#[derive(Debug, Clone)]
pub(crate) struct SearchQuery {
    groups: Vec<Vec<Filter>>,
    sort: Option<Sort>,
    text: Option<String>,
    /// Requested property names as sent; empty means the object's defaults.
    pub(crate) properties: Vec<String>,
    pub(crate) limit: usize,
    /// Zero-based offset decoded from `after`.
    pub(crate) offset: usize,
}

/// Validates a search body against the object's property definitions.
///
/// Fails on malformed JSON, unknown properties or operators, values that do not parse as
/// the property's type, more groups, filters or sorts than HubSpot allows, `limit` above
/// 200, and a page that would reach past the 10,000-result window.
pub(crate) fn parse(body: &[u8], defs: &[PropertyDef]) -> Result<SearchQuery, SearchError> {
    let wire: WireRequest = if body.iter().all(u8::is_ascii_whitespace) {
        WireRequest::default()
    } else {
        serde_json::from_slice(body).map_err(|err| invalid(format!("Invalid input JSON: {err}")))?
    };

    let wire_groups = wire.filter_groups.unwrap_or_default();
    if wire_groups.len() > MAX_FILTER_GROUPS {
        return Err(invalid(format!(
            "Too many filter groups: {} given, at most {MAX_FILTER_GROUPS} are allowed",
            wire_groups.len()
        )));
    }
    let mut groups = Vec::with_capacity(wire_groups.len());
    let mut total_filters = 0;
    for group in wire_groups {
        let filters = group.filters.unwrap_or_default();
        if filters.len() > MAX_FILTERS_PER_GROUP {
            return Err(invalid(format!(
                "Too many filters in a filter group: {} given, at most {MAX_FILTERS_PER_GROUP} are allowed",
                filters.len()
            )));
        }
        total_filters += filters.len();
        let parsed = filters
            .into_iter()
            .map(|filter| parse_filter(filter, defs))
            .collect::<Result<Vec<_>, _>>()?;
        groups.push(parsed);
    }
    if total_filters > MAX_FILTERS_TOTAL {
        return Err(invalid(format!(
            "Too many filters: {total_filters} given, at most {MAX_FILTERS_TOTAL} are allowed across all filter groups"
        )));
    }

    let wire_sorts = wire.sorts.unwrap_or_default();
    if wire_sorts.len() > 1 {
        return Err(invalid(format!(
            "Only one sort is allowed, {} given",
            wire_sorts.len()
        )));
    }
    let sort = wire_sorts
        .into_iter()
        .next()
        .map(|sort| parse_sort(sort, defs))
        .transpose()?;

    let limit = match wire.limit {
        None | Some(Value::Null) => DEFAULT_LIMIT,
        Some(value) => non_negative(&value)
            .ok_or_else(|| invalid(format!("limit must be a non-negative integer, got {value}")))?,
    };
    if limit > MAX_LIMIT {
        return Err(invalid(format!(
            "limit must be at most {MAX_LIMIT}, got {limit}"
        )));
    }
    let offset = match wire.after {
        None | Some(Value::Null) => 0,
        Some(Value::String(text)) if text.trim().is_empty() => 0,
        Some(value) => non_negative(&value)
            .ok_or_else(|| invalid(format!("after must be a numeric offset, got {value}")))?,
    };
    check_result_window(offset, limit)?;

    let properties = wire
        .properties
        .unwrap_or_default()
        .into_iter()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .collect();
    let text = wire
        .query
        .map(|q| q.trim().to_lowercase())
        .filter(|q| !q.is_empty());

    Ok(SearchQuery {
        groups,
        sort,
        text,
        properties,
        limit,
        offset,
    })
}

/// HubSpot refuses any page that would end past result 10,000 (`after + limit > 10000`),
/// however many results actually match.
pub(crate) fn check_result_window(offset: usize, limit: usize) -> Result<(), SearchError> {
    if offset.saturating_add(limit) > RESULT_WINDOW {
        return Err(invalid(format!(
            "Search results are limited to 10,000 per query: after ({offset}) + limit ({limit}) \
             exceeds {RESULT_WINDOW}. Narrow the filters and start again from after=0."
        )));
    }
    Ok(())
}

fn find_def<'a>(defs: &'a [PropertyDef], name: &str) -> Result<&'a PropertyDef, SearchError> {
    defs.iter()
        .find(|def| def.name == name)
        .ok_or_else(|| invalid(format!("Property \"{name}\" does not exist")))
}

fn parse_filter(wire: WireFilter, defs: &[PropertyDef]) -> Result<Filter, SearchError> {
    let def = find_def(defs, &wire.property_name)?;
    let kind = ValueKind::of(def);
    let operator = Operator::parse(&wire.operator)
        .ok_or_else(|| invalid(format!("Unknown filter operator \"{}\"", wire.operator)))?;
    let name = wire.property_name.as_str();
    let required = |value: Option<&Value>, field: &str| -> Result<Value, SearchError> {
        value
            .filter(|value| !value.is_null())
            .cloned()
            .ok_or_else(|| {
                invalid(format!(
                    "Filter on \"{name}\" with {} needs {field}",
                    wire.operator
                ))
            })
    };
    let operands = match operator {
        Operator::HasProperty | Operator::NotHasProperty => Vec::new(),
        Operator::Between => vec![
            operand(kind, &required(wire.value.as_ref(), "value")?, name)?,
            operand(
                kind,
                &required(wire.high_value.as_ref(), "highValue")?,
                name,
            )?,
        ],
        Operator::In | Operator::NotIn => {
            let values = wire.values.as_deref().unwrap_or_default();
            if values.is_empty() {
                return Err(invalid(format!(
                    "Filter on \"{name}\" with {} needs a non-empty values list",
                    wire.operator
                )));
            }
            values
                .iter()
                .map(|value| operand(kind, value, name))
                .collect::<Result<_, _>>()?
        }
        Operator::ContainsToken | Operator::NotContainsToken => {
            let value = required(wire.value.as_ref(), "value")?;
            let token = scalar_text(&value)
                .ok_or_else(|| invalid(format!("Filter value for \"{name}\" must be a string")))?;
            vec![Operand::Text(token.to_lowercase())]
        }
        Operator::Eq
        | Operator::Neq
        | Operator::Lt
        | Operator::Lte
        | Operator::Gt
        | Operator::Gte => vec![operand(
            kind,
            &required(wire.value.as_ref(), "value")?,
            name,
        )?],
    };
    Ok(Filter {
        property: wire.property_name.clone(),
        kind,
        operator,
        operands,
    })
}

fn parse_sort(wire: WireSort, defs: &[PropertyDef]) -> Result<Sort, SearchError> {
    let (property, descending) = match wire {
        WireSort::Name(name) => match name.strip_prefix('-') {
            Some(rest) => (rest.to_owned(), true),
            None => (name, false),
        },
        WireSort::Spec(spec) => {
            let descending = match spec
                .direction
                .as_deref()
                .map(str::to_ascii_uppercase)
                .as_deref()
            {
                None | Some("ASCENDING") => false,
                Some("DESCENDING") => true,
                Some(other) => {
                    return Err(invalid(format!(
                        "Sort direction must be ASCENDING or DESCENDING, got \"{other}\""
                    )));
                }
            };
            (spec.property_name, descending)
        }
    };
    let kind = ValueKind::of(find_def(defs, &property)?);
    Ok(Sort {
        property,
        kind,
        descending,
    })
}

fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        _ => None,
    }
}

fn non_negative(value: &Value) -> Option<usize> {
    match value {
        Value::Number(number) => number.as_u64().and_then(|n| usize::try_from(n).ok()),
        Value::String(text) => text.trim().parse().ok(),
        _ => None,
    }
}

fn operand(kind: ValueKind, value: &Value, property: &str) -> Result<Operand, SearchError> {
    let text = scalar_text(value).ok_or_else(|| {
        invalid(format!(
            "Filter value for \"{property}\" must be a string or number"
        ))
    })?;
    match kind {
        ValueKind::Number => text.trim().parse::<f64>().map(Operand::Number).map_err(|_| {
            invalid(format!("Filter value \"{text}\" for number property \"{property}\" is not a number"))
        }),
        ValueKind::Time => data::parse_time_ms(&text).map(Operand::Time).ok_or_else(|| {
            invalid(format!(
                "Filter value \"{text}\" for \"{property}\" is neither epoch milliseconds nor an ISO-8601 date"
            ))
        }),
        ValueKind::Bool => Ok(Operand::Text(text.to_ascii_lowercase())),
        ValueKind::Text => Ok(Operand::Text(text)),
    }
}

/// `None` when the stored value cannot be read in the operand's domain (for example
/// `"not-a-number"` in a number property): such a record satisfies no ordered comparison.
fn compare(kind: ValueKind, stored: &str, operand: &Operand) -> Option<Ordering> {
    match operand {
        Operand::Number(number) => stored.trim().parse::<f64>().ok()?.partial_cmp(number),
        Operand::Time(ms) => Some(data::parse_time_ms(stored)?.cmp(ms)),
        Operand::Text(text) if kind == ValueKind::Bool => {
            Some(stored.to_ascii_lowercase().as_str().cmp(text.as_str()))
        }
        Operand::Text(text) => Some(stored.cmp(text.as_str())),
    }
}

impl Filter {
    fn matches(&self, record: &SimRecord) -> bool {
        // HubSpot treats an empty string as "no value".
        let stored = record
            .properties
            .get(&self.property)
            .and_then(|value| value.as_deref())
            .filter(|value| !value.is_empty());
        let cmp = |operand: &Operand| stored.and_then(|value| compare(self.kind, value, operand));
        let first = self.operands.first().and_then(cmp);
        let equal_any = || {
            self.operands
                .iter()
                .any(|operand| cmp(operand) == Some(Ordering::Equal))
        };
        match self.operator {
            Operator::HasProperty => stored.is_some(),
            Operator::NotHasProperty => stored.is_none(),
            Operator::Eq => first == Some(Ordering::Equal),
            // Unset values equal nothing, so NEQ and NOT_IN match them.
            Operator::Neq => first != Some(Ordering::Equal),
            Operator::Lt => first == Some(Ordering::Less),
            Operator::Lte => matches!(first, Some(Ordering::Less | Ordering::Equal)),
            Operator::Gt => first == Some(Ordering::Greater),
            Operator::Gte => matches!(first, Some(Ordering::Greater | Ordering::Equal)),
            Operator::Between => {
                let high = self.operands.get(1).and_then(cmp);
                matches!(first, Some(Ordering::Greater | Ordering::Equal))
                    && matches!(high, Some(Ordering::Less | Ordering::Equal))
            }
            Operator::In => equal_any(),
            Operator::NotIn => !equal_any(),
            Operator::ContainsToken => self.contains_token(stored),
            Operator::NotContainsToken => !self.contains_token(stored),
        }
    }

    /// Tokens are runs of letters and digits; a `*` in the filter value makes it a
    /// wildcard pattern over the whole value instead (HubSpot's `*@example.com` idiom).
    fn contains_token(&self, stored: Option<&str>) -> bool {
        let (Some(stored), Some(Operand::Text(token))) = (stored, self.operands.first()) else {
            return false;
        };
        let stored = stored.to_lowercase();
        if token.contains('*') {
            return wildcard_match(token, &stored);
        }
        stored == *token
            || stored
                .split(|c: char| !c.is_alphanumeric())
                .any(|part| part == token.as_str())
    }
}

/// `*` matches any run of characters; everything else matches literally.
fn wildcard_match(pattern: &str, text: &str) -> bool {
    let mut pieces = pattern.split('*');
    let first = pieces.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let pieces: Vec<&str> = pieces.collect();
    let Some((last, middle)) = pieces.split_last() else {
        // No `*` at all: the whole text must equal the pattern.
        return rest.is_empty();
    };
    for piece in middle {
        match rest.find(piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// A sort key in the property's comparison domain. Values that do not parse sort after
/// those that do, and unset values sort last (first when descending).
#[derive(Debug, Clone, PartialEq)]
enum SortKey {
    Number(f64),
    Time(i64),
    Text(String),
    Missing,
}

impl SortKey {
    fn of(record: &SimRecord, sort: &Sort) -> Self {
        let Some(stored) = record
            .properties
            .get(&sort.property)
            .and_then(|value| value.as_deref())
            .filter(|value| !value.is_empty())
        else {
            return SortKey::Missing;
        };
        match sort.kind {
            ValueKind::Number => stored
                .trim()
                .parse::<f64>()
                .map(SortKey::Number)
                .unwrap_or_else(|_| SortKey::Text(stored.to_owned())),
            ValueKind::Time => data::parse_time_ms(stored)
                .map(SortKey::Time)
                .unwrap_or_else(|| SortKey::Text(stored.to_owned())),
            ValueKind::Bool => SortKey::Text(stored.to_ascii_lowercase()),
            ValueKind::Text => SortKey::Text(stored.to_owned()),
        }
    }

    fn rank(&self) -> u8 {
        match self {
            SortKey::Number(_) | SortKey::Time(_) => 0,
            SortKey::Text(_) => 1,
            SortKey::Missing => 2,
        }
    }

    fn compare(&self, other: &Self) -> Ordering {
        match (self, other) {
            (SortKey::Number(a), SortKey::Number(b)) => a.total_cmp(b),
            (SortKey::Time(a), SortKey::Time(b)) => a.cmp(b),
            (SortKey::Text(a), SortKey::Text(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl SearchQuery {
    /// Whether `record` passes the filter groups (ORed; filters inside a group ANDed) and
    /// the free-text `query`, which matches a case-insensitive substring of any value.
    pub(crate) fn matches(&self, record: &SimRecord) -> bool {
        let filtered = self.groups.is_empty()
            || self
                .groups
                .iter()
                .any(|group| group.iter().all(|filter| filter.matches(record)));
        filtered
            && self.text.as_ref().is_none_or(|text| {
                record
                    .properties
                    .values()
                    .flatten()
                    .any(|value| value.to_lowercase().contains(text.as_str()))
            })
    }

    /// Orders matches by the requested sort, ties (and the default) by id ascending, so
    /// offsets stay stable between pages.
    pub(crate) fn sorted<'a>(&self, records: Vec<&'a SimRecord>) -> Vec<&'a SimRecord> {
        let Some(sort) = &self.sort else {
            let mut records = records;
            records.sort_by_key(|record| record.id);
            return records;
        };
        let mut keyed: Vec<(SortKey, &'a SimRecord)> = records
            .into_iter()
            .map(|record| (SortKey::of(record, sort), record))
            .collect();
        keyed.sort_by(|(key_a, a), (key_b, b)| {
            let order = key_a.compare(key_b);
            let order = if sort.descending {
                order.reverse()
            } else {
                order
            };
            order.then(a.id.cmp(&b.id))
        });
        keyed.into_iter().map(|(_, record)| record).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::sim::data::{ObjectKind, iso_millis, property_defs};

    fn record(id: i64, values: &[(&str, Option<&str>)]) -> SimRecord {
        let properties: BTreeMap<String, Option<String>> = values
            .iter()
            .map(|(name, value)| ((*name).to_owned(), value.map(str::to_owned)))
            .chain([("hs_object_id".to_owned(), Some(id.to_string()))])
            .collect();
        SimRecord {
            id,
            properties,
            created_ms: 0,
            updated_ms: 0,
            archived: false,
            archived_ms: None,
        }
    }

    fn query(body: serde_json::Value) -> Result<SearchQuery, SearchError> {
        parse(
            body.to_string().as_bytes(),
            &property_defs(ObjectKind::Contacts),
        )
    }

    fn matching_ids(q: &SearchQuery, records: &[SimRecord]) -> Vec<i64> {
        let hits = records.iter().filter(|r| q.matches(r)).collect();
        q.sorted(hits).into_iter().map(|r| r.id).collect()
    }

    fn at(ms: i64) -> Option<String> {
        Some(iso_millis(ms))
    }

    fn modified(id: i64, ms: i64) -> SimRecord {
        record(id, &[("lastmodifieddate", at(ms).as_deref())])
    }

    #[test]
    fn datetime_filters_compare_epoch_ms_and_iso_numerically() {
        let base = data::BASE_EPOCH_MS;
        let records = vec![
            modified(1, base - 1),
            modified(2, base),
            modified(3, base + 999),
            modified(4, base + 1_000),
        ];
        let by_ms = query(serde_json::json!({"filterGroups":[{"filters":[
            {"propertyName":"lastmodifieddate","operator":"GTE","value":base.to_string()},
            {"propertyName":"lastmodifieddate","operator":"LT","value":base + 1_000}]}]}))
        .unwrap();
        assert_eq!(matching_ids(&by_ms, &records), vec![2, 3]);
        let by_iso = query(serde_json::json!({"filterGroups":[{"filters":[
            {"propertyName":"lastmodifieddate","operator":"BETWEEN",
             "value":"2024-01-01T00:00:00Z","highValue":"2024-01-01T00:00:00.999Z"}]}]}))
        .unwrap();
        assert_eq!(matching_ids(&by_iso, &records), vec![2, 3]);
    }

    #[test]
    fn number_filters_compare_numerically_and_strings_lexically() {
        let records: Vec<SimRecord> = (1..=12)
            .map(|id| {
                let email = format!("u{id}@x.test");
                record(id, &[("email", Some(email.as_str()))])
            })
            .collect();
        let numeric = query(serde_json::json!({"filterGroups":[{"filters":[
            {"propertyName":"hs_object_id","operator":"GT","value":"9"}]}]}))
        .unwrap();
        assert_eq!(matching_ids(&numeric, &records), vec![10, 11, 12]);
        let lexical = query(serde_json::json!({"filterGroups":[{"filters":[
            {"propertyName":"email","operator":"GT","value":"u9"}]}]}))
        .unwrap();
        assert_eq!(matching_ids(&lexical, &records), vec![9]);
    }

    #[test]
    fn groups_or_and_set_operators() {
        let records = vec![
            record(
                1,
                &[
                    ("lifecyclestage", Some("lead")),
                    ("email", Some("a@x.test")),
                ],
            ),
            record(2, &[("lifecyclestage", Some("customer")), ("email", None)]),
            record(3, &[("lifecyclestage", None), ("email", Some(""))]),
        ];
        let either = query(serde_json::json!({"filterGroups":[
            {"filters":[{"propertyName":"lifecyclestage","operator":"EQ","value":"lead"}]},
            {"filters":[{"propertyName":"lifecyclestage","operator":"EQ","value":"customer"}]}]}))
        .unwrap();
        assert_eq!(matching_ids(&either, &records), vec![1, 2]);
        let not_in = query(serde_json::json!({"filterGroups":[{"filters":[
            {"propertyName":"lifecyclestage","operator":"NOT_IN","values":["lead"]}]}]}))
        .unwrap();
        assert_eq!(matching_ids(&not_in, &records), vec![2, 3]);
        let has = query(serde_json::json!({"filterGroups":[{"filters":[
            {"propertyName":"email","operator":"HAS_PROPERTY"}]}]}))
        .unwrap();
        assert_eq!(matching_ids(&has, &records), vec![1]);
        let has_not = query(serde_json::json!({"filterGroups":[{"filters":[
            {"propertyName":"email","operator":"NOT_HAS_PROPERTY"}]}]}))
        .unwrap();
        assert_eq!(matching_ids(&has_not, &records), vec![2, 3]);
        let token = query(serde_json::json!({"filterGroups":[{"filters":[
            {"propertyName":"email","operator":"CONTAINS_TOKEN","value":"*@x.test"}]}]}))
        .unwrap();
        assert_eq!(matching_ids(&token, &records), vec![1]);
    }

    #[test]
    fn unparseable_stored_numbers_match_no_ordered_comparison() {
        let records = vec![
            record(1, &[("score", Some("not-a-number"))]),
            record(2, &[("score", Some("12.5"))]),
        ];
        let q = query(serde_json::json!({"filterGroups":[{"filters":[
            {"propertyName":"score","operator":"GTE","value":0}]}]}))
        .unwrap();
        assert_eq!(matching_ids(&q, &records), vec![2]);
    }

    #[test]
    fn sorts_numerically_with_id_tiebreak() {
        let records = vec![
            record(1, &[("score", Some("10"))]),
            record(2, &[("score", Some("9.5"))]),
            record(3, &[("score", Some("10.0"))]),
            record(4, &[("score", None)]),
        ];
        let ascending =
            query(serde_json::json!({"sorts":[{"propertyName":"score","direction":"ASCENDING"}]}))
                .unwrap();
        assert_eq!(matching_ids(&ascending, &records), vec![2, 1, 3, 4]);
        let descending = query(serde_json::json!({"sorts":["-score"]})).unwrap();
        assert_eq!(matching_ids(&descending, &records), vec![4, 1, 3, 2]);
    }

    #[test]
    fn rejects_requests_beyond_hubspot_caps() {
        let filter = serde_json::json!({"propertyName":"email","operator":"HAS_PROPERTY"});
        let group = serde_json::json!({"filters":[filter.clone()]});
        assert!(
            query(serde_json::json!({"filterGroups": vec![group.clone(); MAX_FILTER_GROUPS]}))
                .is_ok()
        );
        assert!(
            query(serde_json::json!({"filterGroups": vec![group; MAX_FILTER_GROUPS + 1]})).is_err()
        );
        assert!(query(serde_json::json!({"filterGroups":[{"filters": vec![filter.clone(); MAX_FILTERS_PER_GROUP]}]})).is_ok());
        assert!(query(serde_json::json!({"filterGroups":[{"filters": vec![filter; MAX_FILTERS_PER_GROUP + 1]}]})).is_err());
        assert!(query(serde_json::json!({"sorts":["email","firstname"]})).is_err());
        assert!(query(serde_json::json!({"limit":200})).is_ok());
        assert!(query(serde_json::json!({"limit":201})).is_err());
        assert!(
            query(serde_json::json!({"filterGroups":[{"filters":[
            {"propertyName":"no_such_property","operator":"EQ","value":"x"}]}]}))
            .is_err()
        );
        assert!(
            query(serde_json::json!({"filterGroups":[{"filters":[
            {"propertyName":"lastmodifieddate","operator":"GTE","value":"last tuesday"}]}]}))
            .is_err()
        );
    }

    #[test]
    fn ten_thousand_window_is_after_plus_limit() {
        assert!(check_result_window(0, 200).is_ok());
        assert!(check_result_window(9_800, 200).is_ok());
        assert!(check_result_window(9_999, 1).is_ok());
        assert!(check_result_window(9_801, 200).is_err());
        assert!(check_result_window(10_000, 1).is_err());
        let err = query(serde_json::json!({"limit":200,"after":"9900"})).unwrap_err();
        assert!(err.0.contains("10,000"), "{}", err.0);
        let ok = query(serde_json::json!({"limit":100,"after":"9900"})).unwrap();
        assert_eq!((ok.offset, ok.limit), (9_900, 100));
    }

    #[test]
    fn defaults_apply_to_an_empty_body() {
        let q = parse(b"", &property_defs(ObjectKind::Contacts)).unwrap();
        assert_eq!((q.limit, q.offset), (DEFAULT_LIMIT, 0));
        assert!(q.properties.is_empty());
    }

    #[test]
    fn wildcards_match_whole_values() {
        assert!(wildcard_match("*@x.test", "a@x.test"));
        assert!(wildcard_match("a*t", "a@x.test"));
        assert!(!wildcard_match("*@y.test", "a@x.test"));
        assert!(wildcard_match("*", ""));
    }
}
