//! Seeded Salesforce records: deterministic generation from the schema, the edits `update`
//! makes, the stamps every write sets, and the wire formats of datetimes (REST's
//! `…000+0000`, Bulk CSV's `…000Z`).
//!
//! Everything here is pure: the same seed and sizes always produce the same records.

use std::collections::BTreeMap;

use chrono::{DateTime, Days, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

use super::SfRecord;
use super::schema::{FieldDef, Gen, ObjectSchema, SObject, STAGES, USER_PREFIX, record_id};
use crate::sim::data::{BASE_EPOCH_MS, DAY_MS};

/// 2024 is a leap year; initial timestamps stay inside it.
const YEAR_2024_MS: i64 = 366 * DAY_MS;
/// Share of nillable data values generated null, so connectors meet nulls on every column.
const NULL_RATE: f64 = 0.1;
/// Simulated users that own Accounts (`OwnerId` 005…1 to 005…5).
const OWNERS: u64 = 5;

/// When a new record was created, last edited and last written.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stamps {
    pub(crate) created: i64,
    pub(crate) modified: i64,
    pub(crate) modstamp: i64,
}

impl Stamps {
    /// All three at one instant, as for a record inserted now.
    pub(crate) fn at(ms: i64) -> Self {
        Stamps {
            created: ms,
            modified: ms,
            modstamp: ms,
        }
    }
}

/// The initial records of `schema`'s object: numbers `1..=count`, stamps inside 2024 with
/// `CreatedDate <= LastModifiedDate <= SystemModstamp`. `accounts` is how many Accounts
/// exist for `AccountId` references to point at.
pub(crate) fn generate_initial(
    schema: &ObjectSchema,
    count: usize,
    seed: u64,
    accounts: u64,
) -> Vec<SfRecord> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ schema.object.seed_salt());
    let last_ms = BASE_EPOCH_MS + YEAR_2024_MS - 1;
    (1..=count as u64)
        .map(|number| {
            let created = BASE_EPOCH_MS + rng.random_range(0..YEAR_2024_MS);
            let modified = created + rng.random_range(0..=last_ms - created);
            let modstamp = modified + rng.random_range(0..=last_ms - modified);
            let stamps = Stamps {
                created,
                modified,
                modstamp,
            };
            generate_record(schema, number, stamps, &mut rng, accounts)
        })
        .collect()
}

/// A new live record with seeded data values.
pub(crate) fn generate_record(
    schema: &ObjectSchema,
    number: u64,
    stamps: Stamps,
    rng: &mut ChaCha8Rng,
    accounts: u64,
) -> SfRecord {
    let id = record_id(schema.object.key_prefix().unwrap_or("000"), number);
    let mut fields = BTreeMap::new();
    for def in &schema.fields {
        let value = match def.source {
            Gen::Compound => continue,
            Gen::Id => Value::String(id.clone()),
            Gen::IsDeleted => Value::Bool(false),
            Gen::CreatedDate => Value::String(rest_datetime(stamps.created)),
            Gen::LastModifiedDate => Value::String(rest_datetime(stamps.modified)),
            Gen::SystemModstamp => Value::String(rest_datetime(stamps.modstamp)),
            // Derived values are filled in once their inputs exist.
            Gen::RatingScore | Gen::StageProbability | Gen::StageWon => Value::Null,
            Gen::Owner => value_for(def, rng, accounts),
            _ if def.nillable && rng.random_bool(NULL_RATE) => Value::Null,
            _ => value_for(def, rng, accounts),
        };
        fields.insert(def.name.clone(), value);
    }
    let mut record = SfRecord {
        id,
        fields,
        system_modstamp_ms: stamps.modstamp,
        is_deleted: false,
    };
    derive(&mut record);
    record
}

/// Gives 1–2 data fields of `record` new, different, non-null values and recomputes the
/// fields derived from them. Stamps are the caller's job, since one change call stamps all
/// its records alike.
pub(crate) fn mutate(schema: &ObjectSchema, record: &mut SfRecord, rng: &mut ChaCha8Rng) {
    let candidates: Vec<&FieldDef> = schema
        .fields
        .iter()
        .filter(|def| def.source.is_data())
        .collect();
    if candidates.is_empty() {
        return;
    }
    let count = rng.random_range(1..=2usize).min(candidates.len());
    for index in rand::seq::index::sample(rng, candidates.len(), count) {
        let def = candidates[index];
        let old = record.fields.get(&def.name).cloned().unwrap_or(Value::Null);
        let new = fresh_value(def, &old, rng);
        record.fields.insert(def.name.clone(), new);
    }
    derive(record);
}

/// Records a write at `ms`: `SystemModstamp` always, `LastModifiedDate` (where the object
/// has one) when `edited`, since only user or API edits move it (crm-apis.md A3).
pub(crate) fn stamp(record: &mut SfRecord, ms: i64, edited: bool) {
    record.system_modstamp_ms = ms;
    record.fields.insert(
        "SystemModstamp".to_owned(),
        Value::String(rest_datetime(ms)),
    );
    if edited && record.fields.contains_key("LastModifiedDate") {
        record.fields.insert(
            "LastModifiedDate".to_owned(),
            Value::String(rest_datetime(ms)),
        );
    }
}

/// Soft delete: `IsDeleted` and a new `SystemModstamp`.
pub(crate) fn mark_deleted(record: &mut SfRecord, ms: i64) {
    record.is_deleted = true;
    record
        .fields
        .insert("IsDeleted".to_owned(), Value::Bool(true));
    stamp(record, ms, false);
}

/// Formula and system-derived values, recomputed after every edit so they always agree
/// with their inputs.
fn derive(record: &mut SfRecord) {
    if record.fields.contains_key("Rating_Score__c") {
        let score = record
            .fields
            .get("AnnualRevenue")
            .and_then(Value::as_f64)
            .map_or(Value::Null, |revenue| {
                json!((revenue / 1_000_000.0 * 100.0).round() / 100.0)
            });
        record.fields.insert("Rating_Score__c".to_owned(), score);
    }
    if record.fields.contains_key("Probability") || record.fields.contains_key("IsWon") {
        let stage = record
            .fields
            .get("StageName")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let probability = stage
            .as_deref()
            .and_then(|stage| STAGES.iter().find(|(name, _)| *name == stage))
            .map_or(Value::Null, |(_, probability)| json!(probability));
        if record.fields.contains_key("Probability") {
            record.fields.insert("Probability".to_owned(), probability);
        }
        if record.fields.contains_key("IsWon") {
            let won = stage.as_deref() == Some("Closed Won");
            record.fields.insert("IsWon".to_owned(), Value::Bool(won));
        }
    }
}

/// A value guaranteed (picklists, booleans) or all but certain (wide ranges) to differ
/// from `old`, so an update is always visible to a connector comparing rows.
fn fresh_value(def: &FieldDef, old: &Value, rng: &mut ChaCha8Rng) -> Value {
    match def.source {
        Gen::Choice => {
            let others: Vec<&str> = def
                .picklist
                .iter()
                .copied()
                .filter(|value| old.as_str() != Some(*value))
                .collect();
            if let Some(value) = others.choose(rng) {
                return Value::String((*value).to_owned());
            }
        }
        Gen::Bool { .. } => return Value::Bool(!old.as_bool().unwrap_or(true)),
        _ => {}
    }
    let mut value = value_for(def, rng, 0);
    for _ in 0..16 {
        if value != *old {
            break;
        }
        value = value_for(def, rng, 0);
    }
    value
}

const FIRST_NAMES: &[&str] = &[
    "Ada", "Alan", "Barbara", "Claude", "Dana", "Edsger", "Frances", "Grace", "Hedy", "Ivan",
    "Joan", "Ken", "Leslie", "Margaret", "Niklaus", "Olga", "Radia", "Sophie", "Tim", "Zoë",
];
const LAST_NAMES: &[&str] = &[
    "Lovelace",
    "Turing",
    "Liskov",
    "Shannon",
    "Scott",
    "Dijkstra",
    "Allen",
    "Hopper",
    "Lamarr",
    "Sutherland",
    "O'Neil",
    "Thompson",
    "Lamport",
    "Hamilton",
    "Wirth",
    "Müller",
];
/// One word carries double quotes and one a comma so CSV quoting is exercised.
const COMPANY_WORDS: &[&str] = &[
    "Acme",
    "Globex",
    "Initech",
    "Umbrella",
    "Hooli",
    "Vandelay",
    "Stark",
    "Wayne",
    "Tyrell",
    "Cyberdyne",
    "\"Big Q\"",
    "Smith, Jones &",
];
const COMPANY_NOUNS: &[&str] = &[
    "Systems",
    "Logistics",
    "Analytics",
    "Foods",
    "Robotics",
    "Labs",
];
const COMPANY_SUFFIXES: &[&str] = &["Inc", "LLC", "GmbH", "Ltd", "SA"];
const EMAIL_DOMAINS: &[&str] = &["example.com", "example.org", "mail.test"];
const STREET_NAMES: &[&str] = &["Main", "Market", "Mission", "Oak", "Elm", "Harbor", "King"];
const STREET_KINDS: &[&str] = &["St", "Ave", "Blvd", "Rd"];
const CITIES: &[&str] = &[
    "San Francisco",
    "Austin",
    "Boston",
    "Denver",
    "Seattle",
    "Chicago",
];
const STATES: &[&str] = &["CA", "TX", "MA", "CO", "WA", "IL"];
const COUNTRIES: &[&str] = &["United States", "USA", "US"];
const DEAL_KINDS: &[&str] = &["renewal", "expansion", "new business", "pilot", "upsell"];

fn pick(rng: &mut ChaCha8Rng, words: &'static [&'static str]) -> &'static str {
    words.choose(rng).copied().unwrap_or("")
}

/// A non-null value for a data or reference field. `accounts` bounds `AccountId` targets;
/// 0 leaves the reference null.
fn value_for(def: &FieldDef, rng: &mut ChaCha8Rng, accounts: u64) -> Value {
    let text = match def.source {
        Gen::CompanyName => format!(
            "{} {} {}",
            pick(rng, COMPANY_WORDS),
            pick(rng, COMPANY_NOUNS),
            pick(rng, COMPANY_SUFFIXES)
        ),
        Gen::FirstName => pick(rng, FIRST_NAMES).to_owned(),
        Gen::LastName => pick(rng, LAST_NAMES).to_owned(),
        Gen::Email => format!(
            "{}.{}{}@{}",
            pick(rng, FIRST_NAMES).to_lowercase(),
            pick(rng, LAST_NAMES)
                .to_lowercase()
                .replace(['\'', 'ü'], ""),
            rng.random_range(1..10_000),
            pick(rng, EMAIL_DOMAINS)
        ),
        Gen::Phone => format!(
            "(555) {:03}-{:04}",
            rng.random_range(0..1_000),
            rng.random_range(0..10_000)
        ),
        Gen::Choice => pick_owned(rng, def.picklist),
        Gen::Currency { max } => {
            let cents = rng.random_range(0..max * 100);
            return json!(cents as f64 / 100.0);
        }
        Gen::Int { max } => return json!(rng.random_range(1..=max)),
        Gen::Date { first_year, years } => {
            let offset = rng.random_range(0..years * 365);
            NaiveDate::from_ymd_opt(first_year, 1, 1)
                .and_then(|start| start.checked_add_days(Days::new(offset)))
                .map(|date| date.format("%Y-%m-%d").to_string())
                .unwrap_or_else(|| "2000-01-01".to_owned())
        }
        Gen::Bool { p_true } => return Value::Bool(rng.random_bool(p_true)),
        Gen::Street => {
            let mut street = format!(
                "{} {} {}",
                rng.random_range(1..2_000),
                pick(rng, STREET_NAMES),
                pick(rng, STREET_KINDS)
            );
            // Real streets carry commas and line breaks; both must survive CSV.
            if rng.random_bool(0.25) {
                street.push_str(&format!(", Suite {}", rng.random_range(100..900)));
            }
            if rng.random_bool(0.1) {
                street.push_str(&format!("\nFloor {}", rng.random_range(2..40)));
            }
            street
        }
        Gen::City => pick(rng, CITIES).to_owned(),
        Gen::State => pick(rng, STATES).to_owned(),
        Gen::PostalCode => format!("{:05}", rng.random_range(1_000..99_999)),
        Gen::Country => pick(rng, COUNTRIES).to_owned(),
        Gen::Latitude => return json!(rng.random_range(-90_000_000..=90_000_000_i64) as f64 / 1e6),
        Gen::Longitude => {
            return json!(rng.random_range(-180_000_000..=180_000_000_i64) as f64 / 1e6);
        }
        Gen::Owner => record_id(USER_PREFIX, rng.random_range(1..=OWNERS)),
        Gen::Account => {
            if accounts == 0 {
                return Value::Null;
            }
            let prefix = SObject::Account.key_prefix().unwrap_or("001");
            record_id(prefix, rng.random_range(1..=accounts))
        }
        Gen::DealName => format!("{} {}", pick(rng, COMPANY_WORDS), pick(rng, DEAL_KINDS)),
        Gen::WideName => format!("Wide {}", rng.random_range(1..1_000_000)),
        Gen::WideText => format!("v-{:08x}", rng.random::<u32>()),
        // System and derived fields are set by the record's own lifecycle.
        Gen::Id
        | Gen::IsDeleted
        | Gen::CreatedDate
        | Gen::LastModifiedDate
        | Gen::SystemModstamp
        | Gen::Compound
        | Gen::RatingScore
        | Gen::StageProbability
        | Gen::StageWon => return Value::Null,
    };
    Value::String(text)
}

fn pick_owned(rng: &mut ChaCha8Rng, values: &[&str]) -> String {
    values
        .choose(rng)
        .map_or_else(String::new, |value| (*value).to_owned())
}

/// REST's datetime form, e.g. `2024-05-01T10:00:00.000+0000` (crm-apis.md A0).
pub(crate) fn rest_datetime(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|at| at.format("%Y-%m-%dT%H:%M:%S%.3f+0000").to_string())
        .unwrap_or_else(|| ms.to_string())
}

/// Bulk CSV's datetime form, e.g. `2024-05-01T10:00:00.000Z` (crm-apis.md A6).
pub(crate) fn bulk_datetime(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|at| at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_else(|| ms.to_string())
}

fn digits(bytes: &[u8]) -> Option<u32> {
    if bytes.is_empty() {
        return None;
    }
    bytes.iter().try_fold(0_u32, |acc, &byte| {
        byte.is_ascii_digit()
            .then(|| acc * 10 + u32::from(byte - b'0'))
    })
}

/// A `YYYY-MM-DD` date, exactly that shape.
pub(crate) fn parse_date(text: &str) -> Option<NaiveDate> {
    let b = text.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let year = i32::try_from(digits(&b[0..4])?).ok()?;
    NaiveDate::from_ymd_opt(year, digits(&b[5..7])?, digits(&b[8..10])?)
}

/// Epoch ms of a datetime in any form Salesforce writes or SOQL accepts:
/// `YYYY-MM-DDTHH:MM:SS`, optional fraction, then `Z`, `±HH:MM` or `±HHMM`.
pub(crate) fn parse_datetime(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() < 20 || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let date = parse_date(text.get(..10)?)?;
    let (hour, minute, second) = (
        digits(&b[11..13])?,
        digits(&b[14..16])?,
        digits(&b[17..19])?,
    );
    let mut rest = &b[19..];
    let mut millis = 0;
    if let [b'.', fraction @ ..] = rest {
        let len = fraction
            .iter()
            .take_while(|byte| byte.is_ascii_digit())
            .count();
        if len == 0 {
            return None;
        }
        // Only milliseconds matter; pad or cut the fraction to three digits.
        let mut three = [b'0'; 3];
        for (slot, &byte) in three.iter_mut().zip(&fraction[..len]) {
            *slot = byte;
        }
        millis = digits(&three)?;
        rest = &fraction[len..];
    }
    let offset_minutes: i64 = match rest {
        [b'Z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] | [sign @ (b'+' | b'-'), h1, h2, m1, m2] => {
            let (hours, minutes) = (digits(&[*h1, *h2])?, digits(&[*m1, *m2])?);
            if hours > 23 || minutes > 59 {
                return None;
            }
            let total = i64::from(hours * 60 + minutes);
            if *sign == b'-' { -total } else { total }
        }
        _ => return None,
    };
    let time = NaiveTime::from_hms_milli_opt(hour, minute, second, millis)?;
    let utc = NaiveDateTime::new(date, time).and_utc().timestamp_millis();
    Some(utc - offset_minutes * 60_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetime_forms_round_trip() {
        let ms = 1_714_557_600_000; // 2024-05-01T10:00:00Z
        assert_eq!(rest_datetime(ms), "2024-05-01T10:00:00.000+0000");
        assert_eq!(bulk_datetime(ms + 5), "2024-05-01T10:00:00.005Z");
        assert_eq!(parse_datetime("2024-05-01T10:00:00.000+0000"), Some(ms));
        assert_eq!(parse_datetime("2024-05-01T10:00:00Z"), Some(ms));
        assert_eq!(parse_datetime("2024-05-01T12:00:00+02:00"), Some(ms));
        assert_eq!(parse_datetime("2024-05-01T02:00:00.0-08:00"), Some(ms));
        assert_eq!(parse_datetime("2024-05-01T10:00:00.1234Z"), Some(ms + 123));
        // An unencoded `+` arrives as a space and must not parse.
        assert_eq!(parse_datetime("2024-05-01T10:00:00.000 00:00"), None);
        assert_eq!(parse_datetime("2024-05-01T10:00:00"), None);
        assert_eq!(parse_datetime("2024-02-30T10:00:00Z"), None);
        assert_eq!(
            parse_date("2024-01-31").map(|d| d.to_string()).as_deref(),
            Some("2024-01-31")
        );
        assert_eq!(parse_date("2024-1-31"), None);
    }

    #[test]
    fn generation_is_deterministic_and_well_formed() {
        let schema = ObjectSchema::new(SObject::Account);
        let a = generate_initial(&schema, 200, 7, 200);
        assert_eq!(a, generate_initial(&schema, 200, 7, 200));
        assert_ne!(a, generate_initial(&schema, 200, 8, 200));
        for (n, record) in a.iter().enumerate() {
            assert_eq!(record.id, record_id("001", n as u64 + 1));
            assert!(!record.fields.contains_key("BillingAddress"));
            let at = |name: &str| {
                parse_datetime(record.fields[name].as_str().expect("datetime string"))
                    .expect("parses")
            };
            assert!(at("CreatedDate") <= at("LastModifiedDate"));
            assert!(at("LastModifiedDate") <= at("SystemModstamp"));
            assert_eq!(at("SystemModstamp"), record.system_modstamp_ms);
            assert!(record.fields["Name"].is_string(), "Name is required");
            assert!(record.fields["OwnerId"].is_string(), "OwnerId is required");
            assert_eq!(record.fields["IsDeleted"], Value::Bool(false));
        }
        let nulls = a
            .iter()
            .filter(|record| record.fields["Industry"].is_null())
            .count();
        assert!((5..=45).contains(&nulls), "{nulls} null industries of 200");
    }

    #[test]
    fn derived_fields_follow_their_inputs() {
        let schema = ObjectSchema::new(SObject::Opportunity);
        for record in generate_initial(&schema, 50, 3, 10) {
            let stage = record.fields["StageName"].as_str().expect("required stage");
            assert_eq!(record.fields["IsWon"], Value::Bool(stage == "Closed Won"));
            assert!(record.fields["Probability"].is_number());
        }
        let accounts = ObjectSchema::new(SObject::Account);
        for record in generate_initial(&accounts, 50, 3, 0) {
            match record.fields["AnnualRevenue"].as_f64() {
                Some(revenue) => {
                    let score = record.fields["Rating_Score__c"].as_f64().expect("score");
                    assert!((score - revenue / 1e6).abs() <= 0.005 + 1e-9);
                }
                None => assert!(record.fields["Rating_Score__c"].is_null()),
            }
        }
        let contacts = ObjectSchema::new(SObject::Contact);
        assert!(
            generate_initial(&contacts, 20, 3, 0)
                .iter()
                .all(|record| record.fields["AccountId"].is_null()),
            "no accounts to point at"
        );
    }

    #[test]
    fn mutate_changes_one_or_two_data_fields() {
        let schema = ObjectSchema::new(SObject::Lead);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for before in generate_initial(&schema, 30, 5, 0) {
            let mut after = before.clone();
            mutate(&schema, &mut after, &mut rng);
            let changed: Vec<&String> = after
                .fields
                .iter()
                .filter(|(name, value)| before.fields.get(*name) != Some(*value))
                .map(|(name, _)| name)
                .collect();
            assert!((1..=2).contains(&changed.len()), "{changed:?}");
            assert!(changed.iter().all(|name| {
                ![
                    "Id",
                    "IsDeleted",
                    "CreatedDate",
                    "LastModifiedDate",
                    "SystemModstamp",
                ]
                .contains(&name.as_str())
            }));
        }
    }

    #[test]
    fn stamps_and_soft_deletes() {
        let schema = ObjectSchema::new(SObject::Wide);
        let mut record = generate_initial(&schema, 1, 1, 0).remove(0);
        assert_eq!(record.fields.len(), schema.fields.len());
        stamp(&mut record, 1_717_000_000_000, true);
        assert!(
            !record.fields.contains_key("LastModifiedDate"),
            "Wide__c has none"
        );
        assert_eq!(
            record.fields["SystemModstamp"],
            "2024-05-29T16:26:40.000+0000"
        );
        mark_deleted(&mut record, 1_717_000_000_001);
        assert!(record.is_deleted);
        assert_eq!(record.fields["IsDeleted"], Value::Bool(true));
        assert_eq!(record.system_modstamp_ms, 1_717_000_000_001);
    }
}
