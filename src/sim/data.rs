//! Seeded HubSpot CRM fixtures: the object types the simulator serves, their property
//! definitions, deterministic record generation and the wire formats for time values.
//!
//! Everything here is pure: the same seed and sizes always produce the same records, so
//! tests can reason about exact ids and values without a server.

use std::collections::BTreeMap;

use chrono::{DateTime, Days, NaiveDate, NaiveDateTime, SecondsFormat, Utc};
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

/// 2024-01-01T00:00:00Z: the fixed origin of generated create and modify times.
pub(crate) const BASE_EPOCH_MS: i64 = 1_704_067_200_000;
pub(crate) const DAY_MS: i64 = 86_400_000;
/// 2024 is a leap year; generated timestamps stay inside it.
const YEAR_2024_MS: i64 = 366 * DAY_MS;
/// Share of data properties left unset, so connectors meet nulls on every column.
const NULL_RATE: f64 = 0.1;

/// One simulated CRM record, as stored (not as serialised on the wire).
///
/// `properties` holds every defined property of the object type (unset ones as `None`)
/// plus anything a test wrote with `set_raw_property`. The modified-date property and
/// `hs_object_id` are kept equal to `updated_ms` and `id` by every mutation except an
/// explicit `set_raw_property` on them.
#[derive(Debug, Clone, PartialEq)]
pub struct SimRecord {
    /// HubSpot object id; dense from 1 per object type.
    pub id: i64,
    /// Raw property values, always strings on the wire.
    pub properties: BTreeMap<String, Option<String>>,
    /// `createdAt` in epoch milliseconds.
    pub created_ms: i64,
    /// `updatedAt` in epoch milliseconds; equals the modified-date property.
    pub updated_ms: i64,
    /// Soft-deleted: hidden from search and the default list.
    pub archived: bool,
    /// `archivedAt` in epoch milliseconds, set when `archived`.
    pub archived_ms: Option<i64>,
}

/// A property definition as served by `GET /crm/v3/properties/{objectType}` (crm-apis.md B4).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PropertyDef {
    /// Internal name used in `properties` parameters and search filters.
    pub name: String,
    /// Human label.
    pub label: String,
    /// Storage type: `string`, `number`, `date`, `datetime`, `enumeration`, `bool`, `phone_number`.
    #[serde(rename = "type")]
    pub kind: String,
    /// UI field type: `text`, `number`, `date`, `select`, `radio`, `booleancheckbox`, `phonenumber`.
    #[serde(rename = "fieldType")]
    pub field_type: String,
    /// Property group (`contactinformation`, `companyinformation`, `dealinformation`).
    pub group_name: String,
    /// Free-text description; empty for generated properties.
    pub description: String,
    /// Position in the UI.
    pub display_order: i32,
    /// Allowed values of enumeration and bool properties; empty otherwise.
    pub options: Vec<PropertyOption>,
    /// Whether HubSpot computes the value.
    pub calculated: bool,
    /// Whether options come from an external source.
    pub external_options: bool,
    /// Whether values must be unique across records.
    pub has_unique_value: bool,
    /// Hidden from the UI.
    pub hidden: bool,
    /// Built in to HubSpot rather than created by the account.
    pub hubspot_defined: bool,
    /// Usable on forms.
    pub form_field: bool,
    /// What an API client may change about the property.
    pub modification_metadata: ModificationMetadata,
    /// When the definition was created (ISO-8601).
    pub created_at: String,
    /// When the definition was last changed (ISO-8601).
    pub updated_at: String,
    /// Whether the definition itself is deleted.
    pub archived: bool,
}

/// One allowed value of an enumeration or bool property.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PropertyOption {
    /// Display label.
    pub label: String,
    /// The stored string value.
    pub value: String,
    /// Free-text description.
    pub description: String,
    /// Position in the UI.
    pub display_order: i32,
    /// Hidden from the UI.
    pub hidden: bool,
}

/// The `modificationMetadata` block of a property definition.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ModificationMetadata {
    /// Whether the property can be deleted.
    pub archivable: bool,
    /// Whether the definition is read-only.
    pub read_only_definition: bool,
    /// Whether the options are read-only.
    pub read_only_options: bool,
    /// Whether record values are read-only.
    pub read_only_value: bool,
}

/// The object types the simulator serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ObjectKind {
    Contacts,
    Companies,
    Deals,
}

impl ObjectKind {
    pub(crate) const ALL: [ObjectKind; 3] = [
        ObjectKind::Contacts,
        ObjectKind::Companies,
        ObjectKind::Deals,
    ];

    /// Accepts the plural names and the `0-n` object type ids HubSpot also takes in paths.
    pub(crate) fn parse(name: &str) -> Option<Self> {
        match name {
            "contacts" | "contact" | "0-1" => Some(ObjectKind::Contacts),
            "companies" | "company" | "0-2" => Some(ObjectKind::Companies),
            "deals" | "deal" | "0-3" => Some(ObjectKind::Deals),
            _ => None,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Contacts => "contacts",
            ObjectKind::Companies => "companies",
            ObjectKind::Deals => "deals",
        }
    }

    /// The singular name that starts a webhook's `subscriptionType` (`contact.creation`).
    pub(crate) fn webhook_name(self) -> &'static str {
        match self {
            ObjectKind::Contacts => "contact",
            ObjectKind::Companies => "company",
            ObjectKind::Deals => "deal",
        }
    }

    /// Position in per-kind arrays.
    pub(crate) fn index(self) -> usize {
        match self {
            ObjectKind::Contacts => 0,
            ObjectKind::Companies => 1,
            ObjectKind::Deals => 2,
        }
    }

    /// The property that mirrors `updatedAt` (crm-apis.md B2: contacts differ from the rest).
    pub(crate) fn modified_property(self) -> &'static str {
        match self {
            ObjectKind::Contacts => "lastmodifieddate",
            ObjectKind::Companies | ObjectKind::Deals => "hs_lastmodifieddate",
        }
    }

    /// Properties returned when a request names none.
    pub(crate) fn default_properties(self) -> &'static [&'static str] {
        match self {
            ObjectKind::Contacts => &[
                "createdate",
                "email",
                "firstname",
                "hs_object_id",
                "lastmodifieddate",
                "lastname",
            ],
            ObjectKind::Companies => &[
                "createdate",
                "domain",
                "hs_lastmodifieddate",
                "hs_object_id",
                "name",
            ],
            ObjectKind::Deals => &[
                "amount",
                "closedate",
                "createdate",
                "dealname",
                "dealstage",
                "hs_lastmodifieddate",
                "hs_object_id",
                "pipeline",
            ],
        }
    }

    /// Keeps each type's random stream independent, so resizing one type leaves the
    /// others' data unchanged.
    fn seed_salt(self) -> u64 {
        match self {
            ObjectKind::Contacts => 0x636f_6e74_6163_7473,
            ObjectKind::Companies => 0x636f_6d70_616e_6965,
            ObjectKind::Deals => 0x6465_616c_7300_0000,
        }
    }
}

/// How a property's values are produced.
#[derive(Debug, Clone, Copy)]
enum Gen {
    Created,
    Modified,
    ObjectId,
    Email,
    FirstName,
    LastName,
    Phone,
    /// One of the spec's options.
    Choice,
    Integer {
        max: i64,
    },
    /// A decimal with exactly `scale` fraction digits below `max_units`.
    Decimal {
        max_units: i64,
        scale: u32,
    },
    /// `YYYY-MM-DD` within `years` from January 1st of `first_year`.
    Date {
        first_year: i32,
        years: i64,
    },
    /// ISO datetime within `span_days` from the base epoch.
    DateTime {
        span_days: i64,
    },
    CompanyName,
    Domain,
    DealName,
    Pipeline,
}

impl Gen {
    /// System properties follow the record's id and timestamps; the rest is data.
    fn is_data(self) -> bool {
        !matches!(self, Gen::Created | Gen::Modified | Gen::ObjectId)
    }
}

struct Spec {
    name: &'static str,
    label: &'static str,
    kind: &'static str,
    field_type: &'static str,
    hubspot_defined: bool,
    options: &'static [(&'static str, &'static str)],
    source: Gen,
}

const fn spec(
    name: &'static str,
    label: &'static str,
    kind: &'static str,
    field_type: &'static str,
    hubspot_defined: bool,
    source: Gen,
) -> Spec {
    Spec {
        name,
        label,
        kind,
        field_type,
        hubspot_defined,
        options: &[],
        source,
    }
}

const fn choice(
    name: &'static str,
    label: &'static str,
    kind: &'static str,
    field_type: &'static str,
    hubspot_defined: bool,
    options: &'static [(&'static str, &'static str)],
) -> Spec {
    Spec {
        name,
        label,
        kind,
        field_type,
        hubspot_defined,
        options,
        source: Gen::Choice,
    }
}

const BOOL_OPTIONS: &[(&str, &str)] = &[("true", "Yes"), ("false", "No")];
const LIFECYCLE_STAGES: &[(&str, &str)] = &[
    ("subscriber", "Subscriber"),
    ("lead", "Lead"),
    ("customer", "Customer"),
];
const INDUSTRIES: &[(&str, &str)] = &[
    ("COMPUTER_SOFTWARE", "Computer Software"),
    ("FINANCIAL_SERVICES", "Financial Services"),
    ("HOSPITAL_HEALTH_CARE", "Hospital & Health Care"),
    ("RETAIL", "Retail"),
    ("MACHINERY", "Machinery"),
    ("EDUCATION_MANAGEMENT", "Education Management"),
];
const DEAL_STAGES: &[(&str, &str)] = &[
    ("appointmentscheduled", "Appointment Scheduled"),
    ("qualifiedtobuy", "Qualified To Buy"),
    ("presentationscheduled", "Presentation Scheduled"),
    ("decisionmakerboughtin", "Decision Maker Bought-In"),
    ("contractsent", "Contract Sent"),
    ("closedwon", "Closed Won"),
    ("closedlost", "Closed Lost"),
];

const CONTACT_SPECS: &[Spec] = &[
    spec(
        "createdate",
        "Create Date",
        "datetime",
        "date",
        true,
        Gen::Created,
    ),
    spec("email", "Email", "string", "text", true, Gen::Email),
    spec(
        "firstname",
        "First Name",
        "string",
        "text",
        true,
        Gen::FirstName,
    ),
    spec(
        "lastname",
        "Last Name",
        "string",
        "text",
        true,
        Gen::LastName,
    ),
    spec(
        "hs_object_id",
        "Record ID",
        "number",
        "number",
        true,
        Gen::ObjectId,
    ),
    spec(
        "lastmodifieddate",
        "Last Modified Date",
        "datetime",
        "date",
        true,
        Gen::Modified,
    ),
    spec(
        "phone",
        "Phone Number",
        "phone_number",
        "phonenumber",
        true,
        Gen::Phone,
    ),
    choice(
        "lifecyclestage",
        "Lifecycle Stage",
        "enumeration",
        "radio",
        true,
        LIFECYCLE_STAGES,
    ),
    spec(
        "num_employees",
        "Number of Employees",
        "number",
        "number",
        false,
        Gen::Integer { max: 5_000 },
    ),
    spec(
        "score",
        "Score",
        "number",
        "number",
        false,
        Gen::Decimal {
            max_units: 100,
            scale: 1,
        },
    ),
    choice(
        "is_customer",
        "Is Customer",
        "bool",
        "booleancheckbox",
        false,
        BOOL_OPTIONS,
    ),
    spec(
        "birth_date",
        "Birth Date",
        "date",
        "date",
        false,
        Gen::Date {
            first_year: 1950,
            years: 55,
        },
    ),
    spec(
        "last_contacted",
        "Last Contacted",
        "datetime",
        "date",
        false,
        Gen::DateTime { span_days: 366 },
    ),
];

const COMPANY_SPECS: &[Spec] = &[
    spec(
        "createdate",
        "Create Date",
        "datetime",
        "date",
        true,
        Gen::Created,
    ),
    spec(
        "hs_lastmodifieddate",
        "Last Modified Date",
        "datetime",
        "date",
        true,
        Gen::Modified,
    ),
    spec(
        "hs_object_id",
        "Record ID",
        "number",
        "number",
        true,
        Gen::ObjectId,
    ),
    spec(
        "name",
        "Company name",
        "string",
        "text",
        true,
        Gen::CompanyName,
    ),
    spec(
        "domain",
        "Company Domain Name",
        "string",
        "text",
        true,
        Gen::Domain,
    ),
    choice(
        "industry",
        "Industry",
        "enumeration",
        "select",
        true,
        INDUSTRIES,
    ),
    spec(
        "numberofemployees",
        "Number of Employees",
        "number",
        "number",
        true,
        Gen::Integer { max: 100_000 },
    ),
    spec(
        "annualrevenue",
        "Annual Revenue",
        "number",
        "number",
        true,
        Gen::Decimal {
            max_units: 50_000_000,
            scale: 2,
        },
    ),
    spec(
        "founded_date",
        "Founded Date",
        "date",
        "date",
        false,
        Gen::Date {
            first_year: 1900,
            years: 120,
        },
    ),
    choice(
        "is_public",
        "Is Public",
        "bool",
        "booleancheckbox",
        false,
        BOOL_OPTIONS,
    ),
];

const DEAL_SPECS: &[Spec] = &[
    spec(
        "createdate",
        "Create Date",
        "datetime",
        "date",
        true,
        Gen::Created,
    ),
    spec(
        "hs_lastmodifieddate",
        "Last Modified Date",
        "datetime",
        "date",
        true,
        Gen::Modified,
    ),
    spec(
        "hs_object_id",
        "Record ID",
        "number",
        "number",
        true,
        Gen::ObjectId,
    ),
    spec(
        "dealname",
        "Deal Name",
        "string",
        "text",
        true,
        Gen::DealName,
    ),
    spec(
        "amount",
        "Amount",
        "number",
        "number",
        true,
        Gen::Decimal {
            max_units: 1_000_000,
            scale: 2,
        },
    ),
    choice(
        "dealstage",
        "Deal Stage",
        "enumeration",
        "radio",
        true,
        DEAL_STAGES,
    ),
    spec(
        "pipeline",
        "Pipeline",
        "string",
        "text",
        true,
        Gen::Pipeline,
    ),
    spec(
        "closedate",
        "Close Date",
        "datetime",
        "date",
        true,
        Gen::DateTime { span_days: 731 },
    ),
];

fn specs(kind: ObjectKind) -> &'static [Spec] {
    match kind {
        ObjectKind::Contacts => CONTACT_SPECS,
        ObjectKind::Companies => COMPANY_SPECS,
        ObjectKind::Deals => DEAL_SPECS,
    }
}

fn group_name(kind: ObjectKind) -> &'static str {
    match kind {
        ObjectKind::Contacts => "contactinformation",
        ObjectKind::Companies => "companyinformation",
        ObjectKind::Deals => "dealinformation",
    }
}

/// The property definitions of `kind`, in display order.
pub(crate) fn property_defs(kind: ObjectKind) -> Vec<PropertyDef> {
    const DEFINED_AT: &str = "2023-11-07T05:31:56.000Z";
    specs(kind)
        .iter()
        .enumerate()
        .map(|(position, spec)| {
            let system = !spec.source.is_data();
            PropertyDef {
                name: spec.name.to_owned(),
                label: spec.label.to_owned(),
                kind: spec.kind.to_owned(),
                field_type: spec.field_type.to_owned(),
                group_name: group_name(kind).to_owned(),
                description: String::new(),
                display_order: i32::try_from(position).unwrap_or(i32::MAX),
                options: spec
                    .options
                    .iter()
                    .enumerate()
                    .map(|(order, (value, label))| PropertyOption {
                        label: (*label).to_owned(),
                        value: (*value).to_owned(),
                        description: String::new(),
                        display_order: i32::try_from(order).unwrap_or(i32::MAX),
                        hidden: false,
                    })
                    .collect(),
                calculated: false,
                external_options: false,
                has_unique_value: false,
                hidden: false,
                hubspot_defined: spec.hubspot_defined,
                form_field: !system,
                modification_metadata: ModificationMetadata {
                    archivable: !spec.hubspot_defined,
                    read_only_definition: spec.hubspot_defined,
                    read_only_options: system,
                    read_only_value: system,
                },
                created_at: DEFINED_AT.to_owned(),
                updated_at: DEFINED_AT.to_owned(),
                archived: false,
            }
        })
        .collect()
}

/// The initial records of `kind`: ids `1..=count`, create and modify times inside 2024.
pub(crate) fn generate_initial(kind: ObjectKind, count: usize, seed: u64) -> Vec<SimRecord> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ kind.seed_salt());
    let last_ms = BASE_EPOCH_MS + YEAR_2024_MS - 1;
    (1..=count)
        .map(|n| {
            let id = i64::try_from(n).unwrap_or(i64::MAX);
            let created_ms = BASE_EPOCH_MS + rng.random_range(0..YEAR_2024_MS);
            let updated_ms = created_ms + rng.random_range(0..=last_ms - created_ms);
            generate_record(kind, id, created_ms, updated_ms, &mut rng)
        })
        .collect()
}

/// A new live record with seeded data values.
pub(crate) fn generate_record(
    kind: ObjectKind,
    id: i64,
    created_ms: i64,
    updated_ms: i64,
    rng: &mut ChaCha8Rng,
) -> SimRecord {
    let properties = specs(kind)
        .iter()
        .map(|spec| {
            let value = match spec.source {
                Gen::Created => Some(iso_millis(created_ms)),
                Gen::Modified => Some(iso_millis(updated_ms)),
                Gen::ObjectId => Some(id.to_string()),
                _ if rng.random_bool(NULL_RATE) => None,
                _ => Some(value_for(spec, rng)),
            };
            (spec.name.to_owned(), value)
        })
        .collect();
    SimRecord {
        id,
        properties,
        created_ms,
        updated_ms,
        archived: false,
        archived_ms: None,
    }
}

/// Gives 1–2 data properties of `record` new, different, non-null values and returns their
/// names (what a webhook's `propertyChange` events name). Timestamps are the caller's job,
/// since one change call stamps all its records alike.
pub(crate) fn mutate(
    kind: ObjectKind,
    record: &mut SimRecord,
    rng: &mut ChaCha8Rng,
) -> Vec<&'static str> {
    let candidates: Vec<&Spec> = specs(kind)
        .iter()
        .filter(|spec| spec.source.is_data())
        .collect();
    if candidates.is_empty() {
        return Vec::new();
    }
    let count = rng.random_range(1..=2usize).min(candidates.len());
    let mut changed = Vec::with_capacity(count);
    for index in rand::seq::index::sample(rng, candidates.len(), count) {
        let spec = candidates[index];
        let old = record.properties.get(spec.name).cloned().flatten();
        let new = fresh_value(spec, old.as_deref(), rng);
        record.properties.insert(spec.name.to_owned(), Some(new));
        changed.push(spec.name);
    }
    changed
}

/// A value guaranteed (for choices) or all but certain (for wide ranges) to differ from `old`,
/// so an update is always visible to a connector comparing rows.
fn fresh_value(spec: &Spec, old: Option<&str>, rng: &mut ChaCha8Rng) -> String {
    if matches!(spec.source, Gen::Choice) {
        let others: Vec<&str> = spec
            .options
            .iter()
            .map(|(value, _)| *value)
            .filter(|value| Some(*value) != old)
            .collect();
        if let Some(value) = others.choose(rng) {
            return (*value).to_owned();
        }
    }
    let mut value = value_for(spec, rng);
    for _ in 0..16 {
        if Some(value.as_str()) != old {
            break;
        }
        value = value_for(spec, rng);
    }
    value
}

const FIRST_NAMES: &[&str] = &[
    "Ada", "Alan", "Barbara", "Claude", "Dana", "Edsger", "Frances", "Grace", "Hedy", "Ivan",
    "Joan", "Ken", "Leslie", "Margaret", "Niklaus", "Olga", "Radia", "Sophie", "Tim", "Yukihiro",
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
    "Clarke",
    "Thompson",
    "Lamport",
    "Hamilton",
    "Wirth",
    "Taussky",
    "Perlman",
    "Wilson",
    "Berners-Lee",
    "Matsumoto",
];
const EMAIL_DOMAINS: &[&str] = &["example.com", "example.org", "mail.test", "corp.example"];
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
    "Soylent",
    "Cyberdyne",
    "Wonka",
    "Gringotts",
    "Oscorp",
    "Aperture",
    "Monarch",
];
const COMPANY_NOUNS: &[&str] = &[
    "Systems",
    "Logistics",
    "Analytics",
    "Foods",
    "Robotics",
    "Capital",
    "Labs",
    "Media",
];
const COMPANY_SUFFIXES: &[&str] = &["Inc", "LLC", "GmbH", "Ltd", "SA", "BV"];
const TLDS: &[&str] = &["com", "io", "net", "de", "co.uk"];
const DEAL_KINDS: &[&str] = &[
    "renewal",
    "expansion",
    "new business",
    "pilot",
    "upsell",
    "platform licence",
];

fn pick(rng: &mut ChaCha8Rng, words: &'static [&'static str]) -> &'static str {
    words.choose(rng).copied().unwrap_or("")
}

/// A non-null value for a data property.
fn value_for(spec: &Spec, rng: &mut ChaCha8Rng) -> String {
    match spec.source {
        // System values are derived from the record; these arms only keep the match total.
        Gen::Created | Gen::Modified => iso_millis(BASE_EPOCH_MS),
        Gen::ObjectId => "0".to_owned(),
        Gen::Email => format!(
            "{}.{}{}@{}",
            pick(rng, FIRST_NAMES).to_lowercase(),
            pick(rng, LAST_NAMES).to_lowercase().replace('-', ""),
            rng.random_range(1..10_000),
            pick(rng, EMAIL_DOMAINS)
        ),
        Gen::FirstName => pick(rng, FIRST_NAMES).to_owned(),
        Gen::LastName => pick(rng, LAST_NAMES).to_owned(),
        Gen::Phone => {
            format!(
                "+1-555-{:03}-{:04}",
                rng.random_range(0..1_000),
                rng.random_range(0..10_000)
            )
        }
        Gen::Choice => spec
            .options
            .choose(rng)
            .map(|(value, _)| (*value).to_owned())
            .unwrap_or_default(),
        Gen::Integer { max } => rng.random_range(1..=max).to_string(),
        Gen::Decimal { max_units, scale } => {
            let factor = 10_i64.pow(scale);
            let units = rng.random_range(0..max_units * factor);
            let width = scale as usize;
            format!("{}.{:0width$}", units / factor, units % factor)
        }
        Gen::Date { first_year, years } => {
            let offset = rng.random_range(0..years * 365);
            NaiveDate::from_ymd_opt(first_year, 1, 1)
                .and_then(|start| start.checked_add_days(Days::new(offset.unsigned_abs())))
                .map(|date| date.format("%Y-%m-%d").to_string())
                .unwrap_or_else(|| "1970-01-01".to_owned())
        }
        Gen::DateTime { span_days } => {
            iso_millis(BASE_EPOCH_MS + rng.random_range(0..span_days * DAY_MS))
        }
        Gen::CompanyName => format!(
            "{} {} {}",
            pick(rng, COMPANY_WORDS),
            pick(rng, COMPANY_NOUNS),
            pick(rng, COMPANY_SUFFIXES)
        ),
        Gen::Domain => format!(
            "{}{}.{}",
            pick(rng, COMPANY_WORDS).to_lowercase(),
            rng.random_range(1..1_000),
            pick(rng, TLDS)
        ),
        Gen::DealName => format!("{} {}", pick(rng, COMPANY_WORDS), pick(rng, DEAL_KINDS)),
        Gen::Pipeline => {
            let pipeline = if rng.random_bool(0.8) {
                "default"
            } else {
                "enterprise"
            };
            pipeline.to_owned()
        }
    }
}

/// Epoch milliseconds as HubSpot's v3 datetime string, e.g. `2024-03-05T10:11:12.345Z`.
pub(crate) fn iso_millis(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|at| at.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
}

/// The wall clock in epoch milliseconds.
pub(crate) fn wall_clock_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// Parses every time format HubSpot accepts or emits (crm-apis.md B4): an epoch-ms integer,
/// RFC 3339 with or without fraction and offset, a zone-less datetime taken as UTC, or a
/// `YYYY-MM-DD` date taken as UTC midnight.
pub(crate) fn parse_time_ms(text: &str) -> Option<i64> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let digits = text.strip_prefix('-').unwrap_or(text);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().ok();
    }
    if let Some(ms) = parse_canonical_iso(text) {
        return Some(ms);
    }
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Some(at.timestamp_millis());
    }
    if let Ok(at) = NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f") {
        return Some(at.and_utc().timestamp_millis());
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|date| date.and_hms_opt(0, 0, 0))
        .map(|at| at.and_utc().timestamp_millis())
}

/// The exact shape [`iso_millis`] writes (`2024-03-05T10:11:12.345Z`), parsed by hand:
/// search evaluates it for every record on every page, where chrono's general parser
/// dominated the cost. Anything else returns `None` and goes to chrono.
fn parse_canonical_iso(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let separators = [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'.'),
        (23, b'Z'),
    ];
    if b.len() != 24 || separators.iter().any(|&(at, byte)| b[at] != byte) {
        return None;
    }
    let number = |from: usize, to: usize| -> Option<i64> {
        b[from..to].iter().try_fold(0_i64, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
        })
    };
    let (year, month, day) = (number(0, 4)?, number(5, 7)?, number(8, 10)?);
    let (hour, minute, second, milli) = (
        number(11, 13)?,
        number(14, 16)?,
        number(17, 19)?,
        number(20, 23)?,
    );
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some(((days * 24 + hour) * 60 + minute) * 60_000 + second * 1_000 + milli)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_and_size_generate_identical_records() {
        for kind in ObjectKind::ALL {
            assert_eq!(generate_initial(kind, 50, 7), generate_initial(kind, 50, 7));
        }
    }

    #[test]
    fn different_seeds_generate_different_records() {
        assert_ne!(
            generate_initial(ObjectKind::Contacts, 20, 1),
            generate_initial(ObjectKind::Contacts, 20, 2)
        );
    }

    #[test]
    fn ids_are_dense_and_times_stay_inside_2024() {
        let records = generate_initial(ObjectKind::Deals, 300, 42);
        let ids: Vec<i64> = records.iter().map(|r| r.id).collect();
        assert_eq!(ids, (1..=300).collect::<Vec<i64>>());
        for record in &records {
            assert!(record.created_ms >= BASE_EPOCH_MS);
            assert!(record.updated_ms >= record.created_ms);
            assert!(record.updated_ms < BASE_EPOCH_MS + YEAR_2024_MS);
            assert_eq!(
                record.properties["hs_lastmodifieddate"].as_deref(),
                Some(iso_millis(record.updated_ms).as_str())
            );
            assert_eq!(
                record.properties["hs_object_id"].as_deref(),
                Some(record.id.to_string().as_str())
            );
        }
    }

    #[test]
    fn values_have_their_wire_shapes() {
        let records = generate_initial(ObjectKind::Contacts, 200, 42);
        for record in &records {
            if let Some(score) = record.properties["score"].as_deref() {
                let (whole, fraction) = score.split_once('.').expect("decimal point");
                assert!(
                    whole.parse::<u32>().is_ok() && fraction.len() == 1,
                    "{score}"
                );
            }
            if let Some(flag) = record.properties["is_customer"].as_deref() {
                assert!(flag == "true" || flag == "false", "{flag}");
            }
            if let Some(date) = record.properties["birth_date"].as_deref() {
                assert!(
                    NaiveDate::parse_from_str(date, "%Y-%m-%d").is_ok(),
                    "{date}"
                );
            }
            if let Some(n) = record.properties["num_employees"].as_deref() {
                assert!(n.parse::<i64>().is_ok(), "{n}");
            }
        }
    }

    #[test]
    fn about_a_tenth_of_data_values_are_null() {
        let records = generate_initial(ObjectKind::Contacts, 1_000, 42);
        let data_names: Vec<&str> = CONTACT_SPECS
            .iter()
            .filter(|s| s.source.is_data())
            .map(|s| s.name)
            .collect();
        let total = records.len() * data_names.len();
        let mut nulls = 0;
        for record in &records {
            for name in &data_names {
                if record.properties[*name].is_none() {
                    nulls += 1;
                }
            }
        }
        let share = nulls as f64 / total as f64;
        assert!((0.07..0.13).contains(&share), "null share {share}");
    }

    #[test]
    fn mutate_changes_a_data_property_only() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for original in generate_initial(ObjectKind::Companies, 50, 42) {
            let mut record = original.clone();
            let changed = mutate(ObjectKind::Companies, &mut record, &mut rng);
            assert!(!changed.is_empty());
            for name in &changed {
                assert_ne!(record.properties[*name], original.properties[*name]);
            }
            assert_ne!(record.properties, original.properties);
            for name in ["createdate", "hs_lastmodifieddate", "hs_object_id"] {
                assert_eq!(record.properties[name], original.properties[name]);
            }
        }
    }

    #[test]
    fn parses_every_time_format() {
        let expected = 1_709_633_472_345;
        assert_eq!(parse_time_ms("1709633472345"), Some(expected));
        assert_eq!(parse_time_ms("2024-03-05T10:11:12.345Z"), Some(expected));
        assert_eq!(
            parse_time_ms("2024-03-05T11:11:12.345+01:00"),
            Some(expected)
        );
        assert_eq!(parse_time_ms("2024-03-05T10:11:12.345"), Some(expected));
        assert_eq!(parse_time_ms("2024-01-01"), Some(BASE_EPOCH_MS));
        assert_eq!(parse_time_ms("yesterday"), None);
        assert_eq!(iso_millis(expected), "2024-03-05T10:11:12.345Z");
    }

    #[test]
    fn canonical_fast_path_agrees_with_chrono() {
        let samples = [
            0,
            -1,
            -86_400_001,
            951_782_400_000,             // 2000-02-29
            BASE_EPOCH_MS + 59 * DAY_MS, // 2024-02-29
            1_709_251_199_999,           // 2024-02-29T23:59:59.999Z
            4_102_444_800_000,           // 2100-01-01
            -2_208_988_800_000,          // 1900-01-01
        ];
        for ms in samples {
            let text = iso_millis(ms);
            assert_eq!(parse_canonical_iso(&text), Some(ms), "{text}");
            assert_eq!(
                DateTime::parse_from_rfc3339(&text)
                    .map(|at| at.timestamp_millis())
                    .ok(),
                Some(ms)
            );
        }
        assert_eq!(parse_canonical_iso("2023-02-29T00:00:00.000Z"), None);
        assert_eq!(parse_canonical_iso("2024-03-05T10:11:12Z"), None);
    }
}
