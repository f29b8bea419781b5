//! `[reconcile]`: the reconcile `syncline run` schedules for each stream it runs.

use std::time::Duration;

use serde::Deserialize;

use super::KeyError;

/// `[reconcile]`
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReconcileConfig {
    /// How often `syncline run` also reconciles each stream it ran (after that stream's load
    /// committed): when the stream's last reconcile is older than this. A duration such as
    /// `"24h"`, `"30m"`, `"7d"` or `"1h30m"` (units `s`, `m`, `h`, `d`).
    pub every: String,
    /// Repair the drift found (fetch the missing and stale records, delete the orphaned ones)
    /// as `syncline reconcile --repair` does. Default false: drift is reported and the run
    /// exits 3.
    #[serde(default)]
    pub repair: bool,
}

impl ReconcileConfig {
    /// The interval `every` names (validated at load, so this never fails after it).
    pub fn interval(&self) -> Duration {
        parse_duration(&self.every).unwrap_or(Duration::MAX)
    }

    pub(super) fn validate(&self) -> Result<(), KeyError> {
        match parse_duration(&self.every) {
            Some(d) if !d.is_zero() => Ok(()),
            _ => Err(KeyError::new(
                &["reconcile", "every"],
                "must be a duration above zero such as \"24h\", \"30m\", \"7d\" or \"1h30m\" (units s, m, h, d)",
            )),
        }
    }
}

/// `"24h"`, `"1h30m"`, `"90s"`: numbers each followed by a unit; spaces between parts allowed.
fn parse_duration(text: &str) -> Option<Duration> {
    let mut total: u64 = 0;
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let number: u64 = rest[..digits].parse().ok()?;
        rest = rest[digits..].trim_start();
        let unit_len = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "s" | "sec" | "secs" => 1,
            "m" | "min" | "mins" => 60,
            "h" | "hr" | "hrs" => 3600,
            "d" | "day" | "days" => 86_400,
            _ => return None,
        };
        total = total.checked_add(number.checked_mul(seconds)?)?;
        rest = rest[unit_len..].trim_start();
    }
    Some(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("24h"), Some(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5_400)));
        assert_eq!(parse_duration("1h 30m"), Some(Duration::from_secs(5_400)));
        assert_eq!(parse_duration("7d"), Some(Duration::from_secs(604_800)));
        assert_eq!(parse_duration("90s"), Some(Duration::from_secs(90)));
        for bad in ["", "24", "h", "3 weeks", "-1h", "1.5h"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    fn parse(
        source: &str,
        destination: &str,
        reconcile: &str,
    ) -> crate::Result<super::super::Config> {
        super::super::Config::parse(
            &format!(
                "[pipeline]\nname = \"ops\"\n[staging]\nurl = \"file:///tmp/s\"\n\
                 [source]\ntype = \"postgres\"\nurl = \"postgres://u@h/db\"\nstreams = [\"contacts\"]\n{source}\n\
                 [destination]\n{destination}\n[reconcile]\n{reconcile}\n"
            ),
            std::path::Path::new("ops.toml"),
            &|_| None,
        )
    }

    const SNOWFLAKE: &str = "type = \"snowflake\"\naccount = \"a\"\nuser = \"u\"\npassword = \"p\"\ndatabase = \"d\"\nwarehouse = \"w\"";

    #[test]
    fn a_schedule_that_cannot_run_is_refused_at_load() {
        let config = parse("", "type = \"lake\"", "every = \"24h\"\nrepair = true").unwrap();
        let schedule = config.reconcile.expect("[reconcile]");
        assert_eq!(schedule.interval(), Duration::from_secs(86_400));
        assert!(schedule.repair);

        let bad = parse("", "type = \"lake\"", "every = \"daily\"").unwrap_err();
        assert_eq!(bad.exit_code(), 2);
        assert!(bad.to_string().contains("ops.toml:"), "{bad}");
        assert!(bad.to_string().contains("reconcile.every"), "{bad}");
        let zero = parse("", "type = \"lake\"", "every = \"0s\"").unwrap_err();
        assert!(zero.to_string().contains("reconcile.every"), "{zero}");

        // CDC streams compare by content hash, which Snowflake does not compute.
        let cdc = parse("", SNOWFLAKE, "every = \"1h\"").unwrap_err();
        assert_eq!(cdc.exit_code(), 2);
        assert!(cdc.to_string().contains("content hash"), "{cdc}");
        parse(
            "mode = \"cursor\"\n[source.tables.contacts]\ncursor_column = \"updated_at\"",
            SNOWFLAKE,
            "every = \"1h\"",
        )
        .unwrap();
    }
}
