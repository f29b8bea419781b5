//! SOQL text and request paths: literals, window filters, and the split of wide objects
//! into field chunks (crm-apis.md A2, A3, A9.1).

use chrono::{DateTime, Utc};

/// Salesforce rejects request URIs longer than this (A2) with 414.
pub const MAX_URI_BYTES: usize = 16_384;
/// What the rest of the URI (path, WHERE, ORDER BY) may take besides the field list; Airbyte
/// uses the same margin (A9.1).
pub const URI_MARGIN: usize = 2_000;

/// A datetime literal in UTC with the `Z` form: unquoted, and with no `+` that a careless
/// encoder could turn into a space (A2).
pub fn datetime_literal(millis: i64) -> String {
    let at = DateTime::<Utc>::from_timestamp_millis(millis).unwrap_or(if millis < 0 {
        DateTime::<Utc>::MIN_UTC
    } else {
        DateTime::<Utc>::MAX_UTC
    });
    at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// `cursor >= lo AND cursor < hi`, or `cursor < hi` for a full load: windows are bounded on
/// both sides so that a run reads a fixed set whatever is written meanwhile (A3).
pub fn window_filter(cursor: &str, lo: Option<i64>, hi: i64) -> String {
    match lo {
        Some(lo) => format!(
            "{cursor} >= {} AND {cursor} < {}",
            datetime_literal(lo),
            datetime_literal(hi)
        ),
        None => format!("{cursor} < {}", datetime_literal(hi)),
    }
}

/// `SELECT <fields> FROM <object> [WHERE ..] [ORDER BY ..]`.
pub fn select(
    fields: &[String],
    object: &str,
    filter: Option<&str>,
    order: Option<&str>,
) -> String {
    let mut soql = format!("SELECT {} FROM {object}", fields.join(","));
    if let Some(filter) = filter {
        soql.push_str(" WHERE ");
        soql.push_str(filter);
    }
    if let Some(order) = order {
        soql.push_str(" ORDER BY ");
        soql.push_str(order);
    }
    soql
}

/// The order of reads that can resume from a cursor: ties on the cursor broken by Id.
pub fn cursor_order(cursor: &str) -> String {
    format!("{cursor} ASC, Id ASC")
}

/// The order every chunk of a split read uses, so that their pages line up by Id (A9.1).
pub const ID_ORDER: &str = "Id ASC";

/// Percent-encodes a query-string value. Spaces become `%20` rather than `+`: both are valid,
/// but `%20` cannot be mistaken for a literal plus by any decoder.
pub fn encode(text: &str) -> String {
    let form: String = url::form_urlencoded::byte_serialize(text.as_bytes()).collect();
    // `byte_serialize` writes a space as `+` and a literal plus as `%2B`, so every `+` left
    // is a space.
    form.replace('+', "%20")
}

/// The path (from the instance root) of a `queryAll` for `soql`.
pub fn query_all_path(version_path_prefix: &str, soql: &str) -> String {
    format!("{version_path_prefix}/queryAll?q={}", encode(soql))
}

/// How many bytes the encoded field list may take for an instance (A9.1).
pub fn field_list_budget(instance_url: &str) -> usize {
    MAX_URI_BYTES.saturating_sub(instance_url.len() + URI_MARGIN)
}

/// Splits `fields` into chunks whose encoded, comma-joined list fits `budget` bytes. Every chunk
/// starts with `anchors` (Id, the cursor, IsDeleted) so its records can be merged by Id and
/// carry their version. One chunk when everything fits. `None` when even the anchors plus one
/// field do not fit (an instance URL of absurd length).
pub fn field_chunks(
    fields: &[String],
    anchors: &[String],
    budget: usize,
) -> Option<Vec<Vec<String>>> {
    let encoded_len = |name: &str| encode(name).len();
    let comma = encode(",").len();
    let list_len = |list: &[String]| -> usize {
        list.iter().map(|f| encoded_len(f)).sum::<usize>() + comma * list.len().saturating_sub(1)
    };
    if list_len(fields) <= budget {
        return Some(vec![fields.to_vec()]);
    }
    let anchor_len = list_len(anchors);
    let mut chunks: Vec<Vec<String>> = Vec::new();
    let mut current: Vec<String> = anchors.to_vec();
    let mut current_len = anchor_len;
    for field in fields.iter().filter(|f| !anchors.contains(f)) {
        let added = comma + encoded_len(field);
        if current.len() > anchors.len() && current_len + added > budget {
            chunks.push(std::mem::replace(&mut current, anchors.to_vec()));
            current_len = anchor_len;
        }
        if current_len + added > budget {
            return None;
        }
        current.push(field.clone());
        current_len += added;
    }
    if current.len() > anchors.len() || chunks.is_empty() {
        chunks.push(current);
    }
    Some(chunks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetime_literals_use_the_z_form() {
        assert_eq!(
            datetime_literal(1_706_742_061_000),
            "2024-01-31T23:01:01.000Z"
        );
        assert_eq!(
            datetime_literal(1_714_557_600_123),
            "2024-05-01T10:00:00.123Z"
        );
        assert_eq!(datetime_literal(0), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn incremental_and_full_queries() {
        let fields = vec!["Id".to_string(), "Name".into(), "SystemModstamp".into()];
        let incremental = select(
            &fields,
            "Account",
            Some(&window_filter(
                "SystemModstamp",
                Some(1_706_742_061_000),
                1_706_745_661_000,
            )),
            Some(&cursor_order("SystemModstamp")),
        );
        assert_eq!(
            incremental,
            "SELECT Id,Name,SystemModstamp FROM Account WHERE SystemModstamp >= 2024-01-31T23:01:01.000Z AND SystemModstamp < 2024-02-01T00:01:01.000Z ORDER BY SystemModstamp ASC, Id ASC"
        );
        let full = select(
            &fields,
            "Account",
            Some(&window_filter("SystemModstamp", None, 1_706_745_661_000)),
            None,
        );
        assert_eq!(
            full,
            "SELECT Id,Name,SystemModstamp FROM Account WHERE SystemModstamp < 2024-02-01T00:01:01.000Z"
        );
        assert_eq!(
            select(&["COUNT()".to_string()], "Lead", None, None),
            "SELECT COUNT() FROM Lead"
        );
    }

    #[test]
    fn encoding_keeps_plus_and_spaces_apart() {
        assert_eq!(encode("a b+c,d>=e"), "a%20b%2Bc%2Cd%3E%3De");
        let path = query_all_path("/services/data/v62.0", "SELECT Id FROM Account");
        assert_eq!(
            path,
            "/services/data/v62.0/queryAll?q=SELECT%20Id%20FROM%20Account"
        );
        assert!(!path.contains('+'));
    }

    #[test]
    fn narrow_objects_stay_one_chunk() {
        let fields: Vec<String> = ["Id", "Name", "SystemModstamp", "IsDeleted"]
            .map(String::from)
            .to_vec();
        let anchors: Vec<String> = ["Id", "SystemModstamp", "IsDeleted"]
            .map(String::from)
            .to_vec();
        let chunks = field_chunks(
            &fields,
            &anchors,
            field_list_budget("https://acme.my.salesforce.com"),
        )
        .unwrap();
        assert_eq!(chunks, vec![fields]);
    }

    #[test]
    fn wide_objects_split_into_chunks_under_the_uri_limit() {
        let instance = "https://acme-enterprise-edition.my.salesforce.com";
        let mut fields = vec!["Id".to_string()];
        fields.extend((0..1500).map(|i| format!("Custom_Field_Number_{i:04}__c")));
        fields.push("IsDeleted".into());
        fields.push("SystemModstamp".into());
        let anchors: Vec<String> = ["Id", "SystemModstamp", "IsDeleted"]
            .map(String::from)
            .to_vec();
        let chunks = field_chunks(&fields, &anchors, field_list_budget(instance)).unwrap();
        assert!(chunks.len() > 1, "{} chunks", chunks.len());
        let mut seen: Vec<&String> = Vec::new();
        for chunk in &chunks {
            assert_eq!(
                &chunk[..3],
                &anchors[..],
                "every chunk starts with the anchors"
            );
            let soql = select(
                chunk,
                "Wide__c",
                Some(&window_filter(
                    "SystemModstamp",
                    Some(1_706_742_061_000),
                    1_706_745_661_000,
                )),
                Some(ID_ORDER),
            );
            let uri = format!(
                "{instance}{}",
                query_all_path("/services/data/v62.0", &soql)
            );
            assert!(
                uri.len() < MAX_URI_BYTES,
                "chunk URI is {} bytes",
                uri.len()
            );
            seen.extend(chunk[3..].iter());
        }
        // Every non-anchor field is read exactly once.
        let mut expected: Vec<&String> = fields.iter().filter(|f| !anchors.contains(f)).collect();
        expected.sort();
        seen.sort();
        assert_eq!(seen, expected);
    }

    #[test]
    fn impossible_budgets_are_reported() {
        let fields: Vec<String> = (0..10).map(|i| format!("F{i}")).collect();
        let anchors = vec!["Id".to_string()];
        assert_eq!(field_chunks(&fields, &anchors, 3), None);
    }
}
