//! SQL templates: `{name}` placeholders in the statements under `sql/`, filled with quoted
//! identifiers by each destination and by the PostgreSQL source, all rendered the same way.

/// Replaces each `{name}` placeholder (lowercase letters, digits, `_`) in `template` with its
/// value from `vars`. Other braces are kept; values are inserted as is and never re-scanned, so
/// an identifier containing `{x}` cannot inject a placeholder.
///
/// # Panics
///
/// When the template has a placeholder `vars` lacks: templates are compiled in, so that is a
/// bug in this module, caught by the tests that render every template.
pub(crate) fn render(template: &str, vars: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len() + 128);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find('}') {
            Some(close) if is_placeholder(&after[..close]) => {
                let name = &after[..close];
                let value = vars
                    .iter()
                    .find(|(key, _)| *key == name)
                    .map(|(_, value)| *value)
                    .unwrap_or_else(|| panic!("SQL template placeholder {{{name}}} has no value"));
                out.push_str(value);
                rest = &after[close + 1..];
            }
            _ => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The variables every statement of a table shares, followed by one statement's own.
pub(crate) fn with_vars<'a>(
    common: &[(&'a str, &'a str)],
    extra: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    common.iter().chain(extra).copied().collect()
}

/// Statements as one script in execution order, each headed by its name: how tests review
/// and snapshot the SQL of a merge.
#[cfg(test)]
pub(crate) fn script(statements: &[(&str, &String)]) -> String {
    statements
        .iter()
        .map(|(name, statement)| format!("-- {name}\n{};\n", statement.trim_end()))
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_placeholder(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'_'))
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}
