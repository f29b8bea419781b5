//! The simulated org's schema: which sObjects exist, their fields with the describe
//! metadata a connector reads (type, compound membership, formulas, picklists), and the
//! global and per-object describe bodies of crm-apis.md A4.
//!
//! Field lookups are case-insensitive, as SOQL's are; everything served back uses the
//! describe casing.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

/// The one API version served; any other `vNN.0` in a path answers 404.
pub(crate) const API_VERSION: &str = "62.0";
/// Prefix of every data URL the simulator hands out (record urls, `nextRecordsUrl`).
pub(crate) const DATA_PATH: &str = "/services/data/v62.0";
/// Key prefix of the simulated users that own records (`OwnerId`).
pub(crate) const USER_PREFIX: &str = "005";

/// Number of generated text columns on `Wide__c`: enough that selecting them all makes a
/// query URL well over the 16,384-byte limit, so connectors must split the field list.
pub(crate) const WIDE_TEXT_FIELDS: usize = 700;

/// The sObjects of the simulated org.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum SObject {
    Account,
    Contact,
    Opportunity,
    Lead,
    Wide,
    AggregateResult,
}

impl SObject {
    /// In global-describe order; [`SObject::index`] is the position here.
    pub(crate) const ALL: [SObject; 6] = [
        SObject::Account,
        SObject::Contact,
        SObject::Opportunity,
        SObject::Lead,
        SObject::Wide,
        SObject::AggregateResult,
    ];

    /// The API name, as describe spells it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            SObject::Account => "Account",
            SObject::Contact => "Contact",
            SObject::Opportunity => "Opportunity",
            SObject::Lead => "Lead",
            SObject::Wide => "Wide__c",
            SObject::AggregateResult => "AggregateResult",
        }
    }

    fn label(self) -> &'static str {
        match self {
            SObject::Wide => "Wide",
            SObject::AggregateResult => "Aggregate Result",
            other => other.name(),
        }
    }

    fn label_plural(self) -> &'static str {
        match self {
            SObject::Account => "Accounts",
            SObject::Contact => "Contacts",
            SObject::Opportunity => "Opportunities",
            SObject::Lead => "Leads",
            SObject::Wide => "Wides",
            SObject::AggregateResult => "Aggregate Result",
        }
    }

    /// The 3-character Id prefix; `AggregateResult` rows have no Ids.
    pub(crate) fn key_prefix(self) -> Option<&'static str> {
        match self {
            SObject::Account => Some("001"),
            SObject::Contact => Some("003"),
            SObject::Opportunity => Some("006"),
            SObject::Lead => Some("00Q"),
            SObject::Wide => Some("a0W"),
            SObject::AggregateResult => None,
        }
    }

    /// Whether SOQL may select from it; `AggregateResult` is only a describe entry.
    pub(crate) fn queryable(self) -> bool {
        self != SObject::AggregateResult
    }

    fn custom(self) -> bool {
        self == SObject::Wide
    }

    /// Position in per-object arrays.
    pub(crate) fn index(self) -> usize {
        match self {
            SObject::Account => 0,
            SObject::Contact => 1,
            SObject::Opportunity => 2,
            SObject::Lead => 3,
            SObject::Wide => 4,
            SObject::AggregateResult => 5,
        }
    }

    /// Case-insensitive, as Salesforce resolves object names.
    pub(crate) fn parse(name: &str) -> Option<Self> {
        SObject::ALL
            .into_iter()
            .find(|object| object.name().eq_ignore_ascii_case(name))
    }

    /// Keeps each object's random stream independent, so resizing one object leaves the
    /// others' data unchanged.
    pub(crate) fn seed_salt(self) -> u64 {
        match self {
            SObject::Account => 0x7366_6163_636f_756e,
            SObject::Contact => 0x7366_636f_6e74_6163,
            SObject::Opportunity => 0x7366_6f70_706f_7274,
            SObject::Lead => 0x7366_6c65_6164_0000,
            SObject::Wide => 0x7366_7769_6465_0000,
            SObject::AggregateResult => 0x7366_6167_6772_0000,
        }
    }
}

/// An 18-character record Id: the key prefix and the record number zero-padded to 15
/// digits, so Ids sort like their numbers.
pub(crate) fn record_id(prefix: &str, number: u64) -> String {
    format!("{prefix}{number:015}")
}

/// The describe `type` of a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FieldType {
    Id,
    Boolean,
    String,
    Picklist,
    Currency,
    Int,
    Double,
    Percent,
    Address,
    Reference,
    Date,
    DateTime,
    Email,
    Phone,
}

/// How SOQL compares a field's values, which decides the literals it accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ValueKind {
    Text,
    Number,
    Boolean,
    Date,
    DateTime,
    /// Compound fields: selectable over REST, never filterable or sortable.
    Compound,
}

impl FieldType {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            FieldType::Id => "id",
            FieldType::Boolean => "boolean",
            FieldType::String => "string",
            FieldType::Picklist => "picklist",
            FieldType::Currency => "currency",
            FieldType::Int => "int",
            FieldType::Double => "double",
            FieldType::Percent => "percent",
            FieldType::Address => "address",
            FieldType::Reference => "reference",
            FieldType::Date => "date",
            FieldType::DateTime => "datetime",
            FieldType::Email => "email",
            FieldType::Phone => "phone",
        }
    }

    pub(crate) fn soap_type(self) -> &'static str {
        match self {
            FieldType::Id | FieldType::Reference => "tns:ID",
            FieldType::Boolean => "xsd:boolean",
            FieldType::String | FieldType::Picklist | FieldType::Email | FieldType::Phone => {
                "xsd:string"
            }
            FieldType::Currency | FieldType::Double | FieldType::Percent => "xsd:double",
            FieldType::Int => "xsd:int",
            FieldType::Address => "urn:address",
            FieldType::Date => "xsd:date",
            FieldType::DateTime => "xsd:dateTime",
        }
    }

    pub(crate) fn kind(self) -> ValueKind {
        match self {
            FieldType::Id
            | FieldType::String
            | FieldType::Picklist
            | FieldType::Reference
            | FieldType::Email
            | FieldType::Phone => ValueKind::Text,
            FieldType::Currency | FieldType::Int | FieldType::Double | FieldType::Percent => {
                ValueKind::Number
            }
            FieldType::Boolean => ValueKind::Boolean,
            FieldType::Date => ValueKind::Date,
            FieldType::DateTime => ValueKind::DateTime,
            FieldType::Address => ValueKind::Compound,
        }
    }

    /// The type name SOQL error messages use (`dateTime`, not describe's `datetime`).
    pub(crate) fn message_name(self) -> &'static str {
        match self {
            FieldType::DateTime => "dateTime",
            FieldType::Int => "integer",
            other => other.as_str(),
        }
    }

    /// `(length, precision, scale, digits)` as describe reports them by default.
    fn sizes(self) -> (u32, u32, u32, u32) {
        match self {
            FieldType::Id | FieldType::Reference => (18, 0, 0, 0),
            FieldType::String | FieldType::Picklist => (255, 0, 0, 0),
            FieldType::Email => (80, 0, 0, 0),
            FieldType::Phone => (40, 0, 0, 0),
            FieldType::Currency | FieldType::Double => (0, 18, 2, 0),
            FieldType::Percent => (0, 3, 0, 0),
            FieldType::Int => (0, 0, 0, 9),
            FieldType::Boolean | FieldType::Address | FieldType::Date | FieldType::DateTime => {
                (0, 0, 0, 0)
            }
        }
    }
}

/// How a field's values are produced (see `records.rs`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Gen {
    Id,
    IsDeleted,
    CreatedDate,
    LastModifiedDate,
    SystemModstamp,
    /// A compound field: no stored value, served from its components.
    Compound,
    /// `Rating_Score__c`, computed from `AnnualRevenue`.
    RatingScore,
    /// `Opportunity.Probability`, following `StageName`.
    StageProbability,
    /// `Opportunity.IsWon`, following `StageName`.
    StageWon,
    /// Reference to one of the few simulated users.
    Owner,
    /// Reference to one of the initial Accounts.
    Account,
    CompanyName,
    FirstName,
    LastName,
    Email,
    Phone,
    /// One of the field's picklist values.
    Choice,
    /// A currency amount with cents below `max` units.
    Currency {
        max: i64,
    },
    Int {
        max: i64,
    },
    /// `YYYY-MM-DD` within `years` from January 1st of `first_year`.
    Date {
        first_year: i32,
        years: u64,
    },
    Bool {
        p_true: f64,
    },
    Street,
    City,
    State,
    PostalCode,
    Country,
    Latitude,
    Longitude,
    DealName,
    WideName,
    WideText,
}

impl Gen {
    /// Plain data a user edits: what `update` changes and what may be generated null.
    /// System, derived and reference fields stay put so relationships remain stable.
    pub(crate) fn is_data(self) -> bool {
        !matches!(
            self,
            Gen::Id
                | Gen::IsDeleted
                | Gen::CreatedDate
                | Gen::LastModifiedDate
                | Gen::SystemModstamp
                | Gen::Compound
                | Gen::RatingScore
                | Gen::StageProbability
                | Gen::StageWon
                | Gen::Owner
                | Gen::Account
        )
    }

    fn is_system(self) -> bool {
        matches!(
            self,
            Gen::Id
                | Gen::IsDeleted
                | Gen::CreatedDate
                | Gen::LastModifiedDate
                | Gen::SystemModstamp
        )
    }
}

/// One field of an sObject with the describe metadata the simulator serves.
#[derive(Debug, Clone)]
pub(crate) struct FieldDef {
    pub(crate) name: String,
    pub(crate) label: String,
    pub(crate) ty: FieldType,
    pub(crate) nillable: bool,
    pub(crate) custom: bool,
    /// Set on calculated (formula) fields.
    pub(crate) formula: Option<&'static str>,
    /// The compound field this one is a component of (`BillingAddress`).
    pub(crate) compound: Option<&'static str>,
    /// This component's key inside the compound value (`street`, `postalCode`, …).
    pub(crate) component_key: Option<&'static str>,
    pub(crate) picklist: &'static [&'static str],
    pub(crate) reference_to: Option<&'static str>,
    pub(crate) relationship_name: Option<&'static str>,
    pub(crate) length: u32,
    pub(crate) precision: u32,
    pub(crate) scale: u32,
    pub(crate) digits: u32,
    pub(crate) source: Gen,
}

impl FieldDef {
    fn new(name: impl Into<String>, label: impl Into<String>, ty: FieldType, source: Gen) -> Self {
        let (length, precision, scale, digits) = ty.sizes();
        let name: String = name.into();
        FieldDef {
            custom: name.ends_with("__c"),
            name,
            label: label.into(),
            ty,
            nillable: true,
            formula: None,
            compound: None,
            component_key: None,
            picklist: &[],
            reference_to: None,
            relationship_name: None,
            length,
            precision,
            scale,
            digits,
            source,
        }
    }

    fn required(mut self) -> Self {
        self.nillable = false;
        self
    }

    fn picklist(mut self, values: &'static [&'static str]) -> Self {
        self.picklist = values;
        self
    }

    fn formula(mut self, formula: &'static str) -> Self {
        self.formula = Some(formula);
        self
    }

    fn component(mut self, compound: &'static str, key: &'static str) -> Self {
        self.compound = Some(compound);
        self.component_key = Some(key);
        self
    }

    fn reference(mut self, to: &'static str, relationship: &'static str) -> Self {
        self.reference_to = Some(to);
        self.relationship_name = Some(relationship);
        self
    }

    fn scale(mut self, scale: u32) -> Self {
        self.scale = scale;
        self
    }

    pub(crate) fn calculated(&self) -> bool {
        self.formula.is_some()
    }

    /// Filterable and sortable in SOQL: everything but compound fields.
    pub(crate) fn filterable(&self) -> bool {
        self.ty != FieldType::Address
    }

    /// One `fields[]` entry of an object describe, with Salesforce's key names.
    fn describe(&self) -> Value {
        let writable =
            !self.source.is_system() && !self.calculated() && self.ty != FieldType::Address;
        let groupable = !matches!(
            self.ty,
            FieldType::Address | FieldType::Currency | FieldType::Double | FieldType::Percent
        ) && !self.calculated();
        let picklist: Vec<Value> = self
            .picklist
            .iter()
            .map(|value| {
                json!({
                    "active": true,
                    "defaultValue": false,
                    "label": value,
                    "validFor": null,
                    "value": value,
                })
            })
            .collect();
        let reference_to: Vec<&str> = self.reference_to.into_iter().collect();
        json!({
            "autoNumber": false,
            "byteLength": self.length * 3,
            "calculated": self.calculated(),
            "calculatedFormula": self.formula,
            "compoundFieldName": self.compound,
            "createable": writable,
            "custom": self.custom,
            "defaultedOnCreate": self.source.is_system() || self.ty == FieldType::Boolean,
            "deprecatedAndHidden": false,
            "digits": self.digits,
            "externalId": false,
            "extraTypeInfo": null,
            "filterable": self.filterable(),
            "groupable": groupable,
            "htmlFormatted": false,
            "idLookup": self.ty == FieldType::Id,
            "label": self.label,
            "length": self.length,
            "name": self.name,
            "nameField": self.name == "Name",
            "nillable": self.nillable,
            "picklistValues": picklist,
            "precision": self.precision,
            "referenceTo": reference_to,
            "relationshipName": self.relationship_name,
            "scale": self.scale,
            "soapType": self.ty.soap_type(),
            "sortable": self.filterable(),
            "type": self.ty.as_str(),
            "unique": false,
            "updateable": writable,
        })
    }
}

const ACCOUNT_TYPES: &[&str] = &[
    "Prospect",
    "Customer - Direct",
    "Customer - Channel",
    "Channel Partner / Reseller",
    "Other",
];
const INDUSTRIES: &[&str] = &[
    "Technology",
    "Finance",
    "Healthcare",
    "Retail",
    "Manufacturing",
    "Education",
];
const LEAD_SOURCES: &[&str] = &[
    "Web",
    "Phone Inquiry",
    "Partner Referral",
    "Purchased List",
    "Other",
];
/// Opportunity stages with the default probability Salesforce assigns to each.
pub(crate) const STAGES: &[(&str, f64)] = &[
    ("Prospecting", 10.0),
    ("Qualification", 10.0),
    ("Needs Analysis", 20.0),
    ("Proposal/Price Quote", 75.0),
    ("Negotiation/Review", 90.0),
    ("Closed Won", 100.0),
    ("Closed Lost", 0.0),
];
const STAGE_NAMES: &[&str] = &[
    "Prospecting",
    "Qualification",
    "Needs Analysis",
    "Proposal/Price Quote",
    "Negotiation/Review",
    "Closed Won",
    "Closed Lost",
];
const LEAD_STATUSES: &[&str] = &[
    "Open - Not Contacted",
    "Working - Contacted",
    "Closed - Converted",
    "Closed - Not Converted",
];

fn id_field() -> FieldDef {
    FieldDef::new("Id", "Record ID", FieldType::Id, Gen::Id).required()
}

fn is_deleted() -> FieldDef {
    FieldDef::new("IsDeleted", "Deleted", FieldType::Boolean, Gen::IsDeleted).required()
}

fn created_date() -> FieldDef {
    FieldDef::new(
        "CreatedDate",
        "Created Date",
        FieldType::DateTime,
        Gen::CreatedDate,
    )
    .required()
}

fn last_modified_date() -> FieldDef {
    FieldDef::new(
        "LastModifiedDate",
        "Last Modified Date",
        FieldType::DateTime,
        Gen::LastModifiedDate,
    )
    .required()
}

fn system_modstamp() -> FieldDef {
    FieldDef::new(
        "SystemModstamp",
        "System Modstamp",
        FieldType::DateTime,
        Gen::SystemModstamp,
    )
    .required()
}

fn account_reference() -> FieldDef {
    FieldDef::new(
        "AccountId",
        "Account ID",
        FieldType::Reference,
        Gen::Account,
    )
    .reference("Account", "Account")
}

fn fields_of(object: SObject) -> Vec<FieldDef> {
    use FieldType as T;
    match object {
        SObject::Account => vec![
            id_field(),
            is_deleted(),
            FieldDef::new("Name", "Account Name", T::String, Gen::CompanyName).required(),
            FieldDef::new("Type", "Account Type", T::Picklist, Gen::Choice).picklist(ACCOUNT_TYPES),
            FieldDef::new("Industry", "Industry", T::Picklist, Gen::Choice).picklist(INDUSTRIES),
            FieldDef::new(
                "AnnualRevenue",
                "Annual Revenue",
                T::Currency,
                Gen::Currency { max: 50_000_000 },
            ),
            FieldDef::new(
                "NumberOfEmployees",
                "Employees",
                T::Int,
                Gen::Int { max: 100_000 },
            ),
            FieldDef::new(
                "Rating_Score__c",
                "Rating Score",
                T::Double,
                Gen::RatingScore,
            )
            .formula("ROUND(AnnualRevenue / 1000000, 2)"),
            FieldDef::new(
                "BillingAddress",
                "Billing Address",
                T::Address,
                Gen::Compound,
            ),
            FieldDef::new("BillingStreet", "Billing Street", T::String, Gen::Street)
                .component("BillingAddress", "street"),
            FieldDef::new("BillingCity", "Billing City", T::String, Gen::City)
                .component("BillingAddress", "city"),
            FieldDef::new(
                "BillingState",
                "Billing State/Province",
                T::String,
                Gen::State,
            )
            .component("BillingAddress", "state"),
            FieldDef::new(
                "BillingPostalCode",
                "Billing Zip/Postal Code",
                T::String,
                Gen::PostalCode,
            )
            .component("BillingAddress", "postalCode"),
            FieldDef::new("BillingCountry", "Billing Country", T::String, Gen::Country)
                .component("BillingAddress", "country"),
            FieldDef::new(
                "BillingLatitude",
                "Billing Latitude",
                T::Double,
                Gen::Latitude,
            )
            .component("BillingAddress", "latitude")
            .scale(15),
            FieldDef::new(
                "BillingLongitude",
                "Billing Longitude",
                T::Double,
                Gen::Longitude,
            )
            .component("BillingAddress", "longitude")
            .scale(15),
            FieldDef::new("OwnerId", "Owner ID", T::Reference, Gen::Owner)
                .required()
                .reference("User", "Owner"),
            created_date(),
            last_modified_date(),
            system_modstamp(),
        ],
        SObject::Contact => vec![
            id_field(),
            is_deleted(),
            account_reference(),
            FieldDef::new("FirstName", "First Name", T::String, Gen::FirstName),
            FieldDef::new("LastName", "Last Name", T::String, Gen::LastName).required(),
            FieldDef::new("Email", "Email", T::Email, Gen::Email),
            FieldDef::new("Phone", "Business Phone", T::Phone, Gen::Phone),
            FieldDef::new(
                "Birthdate",
                "Birthdate",
                T::Date,
                Gen::Date {
                    first_year: 1950,
                    years: 55,
                },
            ),
            FieldDef::new("LeadSource", "Lead Source", T::Picklist, Gen::Choice)
                .picklist(LEAD_SOURCES),
            FieldDef::new(
                "HasOptedOutOfEmail",
                "Email Opt Out",
                T::Boolean,
                Gen::Bool { p_true: 0.2 },
            )
            .required(),
            created_date(),
            last_modified_date(),
            system_modstamp(),
        ],
        SObject::Opportunity => vec![
            id_field(),
            is_deleted(),
            account_reference(),
            FieldDef::new("Name", "Name", T::String, Gen::DealName).required(),
            FieldDef::new("StageName", "Stage", T::Picklist, Gen::Choice)
                .required()
                .picklist(STAGE_NAMES),
            FieldDef::new(
                "Amount",
                "Amount",
                T::Currency,
                Gen::Currency { max: 2_000_000 },
            ),
            FieldDef::new(
                "Probability",
                "Probability (%)",
                T::Percent,
                Gen::StageProbability,
            ),
            FieldDef::new(
                "CloseDate",
                "Close Date",
                T::Date,
                Gen::Date {
                    first_year: 2024,
                    years: 2,
                },
            )
            .required(),
            FieldDef::new("IsWon", "Won", T::Boolean, Gen::StageWon).required(),
            created_date(),
            last_modified_date(),
            system_modstamp(),
        ],
        SObject::Lead => vec![
            id_field(),
            is_deleted(),
            FieldDef::new("FirstName", "First Name", T::String, Gen::FirstName),
            FieldDef::new("LastName", "Last Name", T::String, Gen::LastName).required(),
            FieldDef::new("Company", "Company", T::String, Gen::CompanyName).required(),
            FieldDef::new("Status", "Status", T::Picklist, Gen::Choice)
                .required()
                .picklist(LEAD_STATUSES),
            FieldDef::new("Email", "Email", T::Email, Gen::Email),
            created_date(),
            last_modified_date(),
            system_modstamp(),
        ],
        SObject::Wide => {
            let mut fields = vec![
                id_field(),
                is_deleted(),
                FieldDef::new("Name", "Wide Name", T::String, Gen::WideName).required(),
                system_modstamp(),
                created_date(),
            ];
            fields.extend((1..=WIDE_TEXT_FIELDS).map(|n| {
                FieldDef::new(
                    wide_field_name(n),
                    format!("Custom Field With A Long Name {n:04}"),
                    T::String,
                    Gen::WideText,
                )
            }));
            fields
        }
        SObject::AggregateResult => vec![id_field()],
    }
}

/// `Custom_Field_With_A_Long_Name_0001__c` … `_0700__c`.
pub(crate) fn wide_field_name(n: usize) -> String {
    format!("Custom_Field_With_A_Long_Name_{n:04}__c")
}

/// One sObject's fields with a case-insensitive name index.
#[derive(Debug, Clone)]
pub(crate) struct ObjectSchema {
    pub(crate) object: SObject,
    pub(crate) fields: Vec<FieldDef>,
    by_name: HashMap<String, usize>,
}

impl ObjectSchema {
    pub(crate) fn new(object: SObject) -> Self {
        let fields = fields_of(object);
        let by_name = fields
            .iter()
            .enumerate()
            .map(|(index, field)| (field.name.to_ascii_lowercase(), index))
            .collect();
        ObjectSchema {
            object,
            fields,
            by_name,
        }
    }

    /// Every object's schema, indexed by [`SObject::index`].
    pub(crate) fn all() -> Vec<ObjectSchema> {
        SObject::ALL.into_iter().map(ObjectSchema::new).collect()
    }

    /// Position of the field called `name`, compared case-insensitively.
    pub(crate) fn field_index(&self, name: &str) -> Option<usize> {
        self.by_name.get(&name.to_ascii_lowercase()).copied()
    }

    /// The components of compound field `compound`, in describe order.
    pub(crate) fn components<'a>(
        &'a self,
        compound: &'a str,
    ) -> impl Iterator<Item = &'a FieldDef> + 'a {
        self.fields
            .iter()
            .filter(move |field| field.compound == Some(compound))
    }

    fn urls(&self) -> Value {
        let name = self.object.name();
        json!({
            "sobject": format!("{DATA_PATH}/sobjects/{name}"),
            "describe": format!("{DATA_PATH}/sobjects/{name}/describe"),
            "rowTemplate": format!("{DATA_PATH}/sobjects/{name}/{{ID}}"),
        })
    }

    /// The object-level flags shared by the global and the object describe.
    fn summary(&self) -> Map<String, Value> {
        let object = self.object;
        let data = object.queryable();
        let summary = json!({
            "name": object.name(),
            "label": object.label(),
            "labelPlural": object.label_plural(),
            "keyPrefix": object.key_prefix(),
            "custom": object.custom(),
            "customSetting": false,
            "queryable": data,
            "replicateable": data,
            "retrieveable": data,
            "searchable": data,
            "createable": data,
            "updateable": data,
            "deletable": data,
            "layoutable": data,
            "triggerable": data,
            "deprecatedAndHidden": false,
            "urls": self.urls(),
        });
        match summary {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }

    /// `GET /sobjects/{O}/describe`.
    pub(crate) fn describe(&self) -> Value {
        let mut body = self.summary();
        body.insert(
            "fields".to_owned(),
            Value::Array(self.fields.iter().map(FieldDef::describe).collect()),
        );
        body.insert("childRelationships".to_owned(), json!([]));
        body.insert("recordTypeInfos".to_owned(), json!([]));
        Value::Object(body)
    }
}

/// `GET /sobjects`: the global describe of crm-apis.md A4.
pub(crate) fn global_describe(schemas: &[ObjectSchema]) -> Value {
    let sobjects: Vec<Value> = schemas
        .iter()
        .map(|schema| Value::Object(schema.summary()))
        .collect();
    json!({
        "encoding": "UTF-8",
        "maxBatchSize": 200,
        "sobjects": sobjects,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_prefix_plus_fifteen_digits_and_sort_by_number() {
        assert_eq!(record_id("001", 7), "001000000000000007");
        assert_eq!(record_id("00Q", 123_456), "00Q000000000123456");
        assert_eq!(record_id("a0W", 1).len(), 18);
        assert!(record_id("003", 9) < record_id("003", 10));
        assert!(record_id("003", 999) < record_id("003", 1_000));
    }

    #[test]
    fn field_and_object_lookups_ignore_case() {
        let account = ObjectSchema::new(SObject::Account);
        let index = account.field_index("systemMODSTAMP").expect("known field");
        assert_eq!(account.fields[index].name, "SystemModstamp");
        assert_eq!(account.field_index("NoSuchField"), None);
        assert_eq!(SObject::parse("wide__C"), Some(SObject::Wide));
        assert_eq!(SObject::parse("Widget"), None);
    }

    #[test]
    fn describe_marks_compound_components_and_formulas() {
        let account = ObjectSchema::new(SObject::Account).describe();
        let fields = account["fields"].as_array().expect("fields");
        let by_name = |name: &str| {
            fields
                .iter()
                .find(|field| field["name"] == name)
                .unwrap_or_else(|| panic!("{name} described"))
        };
        assert_eq!(by_name("BillingAddress")["type"], "address");
        assert_eq!(by_name("BillingAddress")["filterable"], false);
        assert_eq!(
            by_name("BillingCity")["compoundFieldName"],
            "BillingAddress"
        );
        assert_eq!(by_name("BillingLatitude")["type"], "double");
        assert_eq!(by_name("Rating_Score__c")["calculated"], true);
        assert!(by_name("Rating_Score__c")["calculatedFormula"].is_string());
        assert_eq!(by_name("Rating_Score__c")["custom"], true);
        assert_eq!(by_name("OwnerId")["referenceTo"], json!(["User"]));
        assert_eq!(by_name("OwnerId")["relationshipName"], "Owner");
        assert_eq!(by_name("Type")["picklistValues"][0]["value"], "Prospect");
        assert_eq!(by_name("SystemModstamp")["soapType"], "xsd:dateTime");
        assert_eq!(account["keyPrefix"], "001");
    }

    #[test]
    fn wide_object_field_list_overflows_the_uri_limit() {
        let wide = ObjectSchema::new(SObject::Wide);
        assert_eq!(wide.fields.len(), 5 + WIDE_TEXT_FIELDS);
        let last = wide
            .field_index("Custom_Field_With_A_Long_Name_0700__c")
            .expect("700th field");
        assert_eq!(last, wide.fields.len() - 1);
        let encoded: usize = wide
            .fields
            .iter()
            .map(|field| field.name.len() + "%2C".len())
            .sum();
        assert!(encoded > 16_384 + 8_000, "{encoded} bytes");
    }

    #[test]
    fn global_describe_lists_aggregate_result_as_not_queryable() {
        let body = global_describe(&ObjectSchema::all());
        let sobjects = body["sobjects"].as_array().expect("sobjects");
        assert_eq!(sobjects.len(), SObject::ALL.len());
        let aggregate = sobjects
            .iter()
            .find(|entry| entry["name"] == "AggregateResult")
            .expect("listed");
        assert_eq!(aggregate["queryable"], false);
        assert!(aggregate["keyPrefix"].is_null());
        assert_eq!(
            sobjects[0]["urls"]["describe"],
            "/services/data/v62.0/sobjects/Account/describe"
        );
    }
}
