//! SQL text shared by everything that writes SQL (PostgreSQL, Snowflake and DataFusion all
//! quote identifiers the same way): identifier quoting, qualified names, and the renderer of
//! the `{name}` templates under `sql/`.

mod template;

#[cfg(test)]
pub(crate) use template::script;
pub(crate) use template::{render, with_vars};

/// Quotes an identifier: wraps it in double quotes and doubles embedded ones, so any name from
/// CRM metadata or a source catalog is taken literally, case and all.
pub fn quote_ident(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// `"schema"."name"`.
pub fn qualified(schema: &str, name: &str) -> String {
    format!("{}.{}", quote_ident(schema), quote_ident(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_ident_wraps_and_doubles_quotes() {
        assert_eq!(quote_ident("FirstName"), r#""FirstName""#);
        assert_eq!(
            quote_ident(r#"x"; DROP TABLE t; --"#),
            r#""x""; DROP TABLE t; --""#
        );
        assert_eq!(quote_ident(""), r#""""#);
        assert_eq!(qualified("a\"b", "c"), r#""a""b"."c""#);
    }
}
