//! sObject describe (crm-apis.md A4) to the staged Arrow schema and the field list we select.
//!
//! The staged schema is `Id` first, the other fields sorted by name, then `_syncline_version`
//! (from SystemModstamp, or LastModifiedDate where an object has none) and `_syncline_deleted`
//! (from IsDeleted, false where an object has none). Compound `address`/`location` fields are
//! dropped and their components kept: Bulk rejects compounds, and components are plain
//! columns in every warehouse. `base64` fields are dropped: REST returns a blob URL, not data.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use serde::Deserialize;

use super::SalesforceError;
use crate::Result;
use crate::schema::{deleted_field, is_system_column, timestamp_type, version_field};

use super::KEY;

/// The cursor field, in order of preference (A3): SystemModstamp changes on every write.
pub const CURSOR_FIELDS: [&str; 2] = ["SystemModstamp", "LastModifiedDate"];
/// The soft-delete flag `queryAll` exposes (A2).
pub const DELETED_FIELD: &str = "IsDeleted";

/// The part of `GET /sobjects/{O}/describe` the connector uses.
#[derive(Debug, Clone, Deserialize)]
pub struct Describe {
    pub name: String,
    #[serde(default = "yes")]
    pub queryable: bool,
    #[serde(default)]
    pub fields: Vec<DescribeField>,
}

fn yes() -> bool {
    true
}

/// One entry of `fields[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DescribeField {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// Set on the components of an address or location (`BillingCity` → `BillingAddress`).
    #[serde(default)]
    pub compound_field_name: Option<String>,
    /// Formula fields: their values change without touching SystemModstamp (A9.3).
    #[serde(default)]
    pub calculated: bool,
}

/// The Arrow type of a Salesforce field type (A4), `None` for fields that are not staged.
pub fn arrow_type(kind: &str) -> Option<DataType> {
    match kind.to_ascii_lowercase().as_str() {
        // Compounds are read through their components; blobs are URLs in REST and absent in Bulk.
        "address" | "location" | "base64" => None,
        "boolean" => Some(DataType::Boolean),
        "int" | "long" => Some(DataType::Int64),
        "double" | "currency" | "percent" => Some(DataType::Float64),
        "date" => Some(DataType::Date32),
        "datetime" => Some(timestamp_type()),
        // id, reference, string, textarea, picklist, multipicklist, combobox, email, phone,
        // url, encryptedstring, time, anyType and any type Salesforce adds later: text keeps
        // the value whatever it is.
        _ => Some(DataType::Utf8),
    }
}

/// SOQL has no identifier quoting, so only names Salesforce itself can produce are selected.
fn is_plain_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Everything a read of one object needs, derived from its describe.
#[derive(Debug, Clone)]
pub struct ObjectPlan {
    pub object: String,
    pub queryable: bool,
    /// The staged schema.
    pub schema: SchemaRef,
    /// The source field of each staged column before the system columns: `Id`, then the data
    /// columns in schema order. Also the SELECT list: every field a read returns.
    pub fields: Vec<String>,
    /// The field `_syncline_version` comes from and windows filter on; `None` only for objects
    /// that are not queryable (they are never read).
    pub cursor: Option<String>,
    /// `IsDeleted` when the object has it.
    pub deleted: Option<String>,
}

impl ObjectPlan {
    /// Builds the plan; fails when the object has no `Id` or (if queryable) no cursor field.
    pub fn from_describe(describe: &Describe) -> Result<ObjectPlan> {
        let object = describe.name.clone();
        if !describe.fields.iter().any(|f| f.name == KEY) {
            return Err(SalesforceError::NoIdField(object).into());
        }
        let mut data: Vec<(&str, DataType)> = Vec::new();
        for field in &describe.fields {
            if field.name == KEY || is_system_column(&field.name) {
                continue;
            }
            if !is_plain_name(&field.name) {
                tracing::warn!(object = %object, field = %field.name, "field name cannot be used in SOQL; skipped");
                continue;
            }
            if let Some(data_type) = arrow_type(&field.kind) {
                data.push((field.name.as_str(), data_type));
            }
        }
        data.sort_by(|a, b| a.0.cmp(b.0));
        data.dedup_by(|a, b| a.0 == b.0);
        let has = |name: &str| {
            data.iter()
                .any(|(n, t)| *n == name && *t == timestamp_type())
        };
        let cursor = CURSOR_FIELDS
            .iter()
            .find(|name| has(name))
            .map(|name| name.to_string());
        if cursor.is_none() && describe.queryable {
            return Err(SalesforceError::NoCursorField(object).into());
        }
        let deleted = data
            .iter()
            .any(|(n, t)| *n == DELETED_FIELD && *t == DataType::Boolean)
            .then(|| DELETED_FIELD.to_string());
        let mut columns = vec![Field::new(KEY, DataType::Utf8, false)];
        columns.extend(data.iter().map(|(n, t)| Field::new(*n, t.clone(), true)));
        columns.push(version_field());
        columns.push(deleted_field());
        let mut fields = vec![KEY.to_string()];
        fields.extend(data.iter().map(|(n, _)| n.to_string()));
        Ok(ObjectPlan {
            object,
            queryable: describe.queryable,
            schema: Arc::new(Schema::new(columns)),
            fields,
            cursor,
            deleted,
        })
    }

    /// The fields every chunk of a split read must carry: the key to merge on, and what
    /// `_syncline_version` and `_syncline_deleted` come from.
    pub fn anchor_fields(&self) -> Vec<String> {
        let mut anchors = vec![KEY.to_string()];
        anchors.extend(self.cursor.iter().cloned());
        anchors.extend(self.deleted.iter().cloned());
        anchors
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn account() -> Describe {
        serde_json::from_value(json!({
            "name": "Account",
            "queryable": true,
            "fields": [
                {"name": "Name", "type": "string", "compoundFieldName": null, "calculated": false},
                {"name": "Id", "type": "id"},
                {"name": "IsDeleted", "type": "boolean"},
                {"name": "AnnualRevenue", "type": "currency"},
                {"name": "NumberOfEmployees", "type": "int"},
                {"name": "BillingAddress", "type": "address"},
                {"name": "BillingCity", "type": "string", "compoundFieldName": "BillingAddress"},
                {"name": "BillingLatitude", "type": "double", "compoundFieldName": "BillingAddress"},
                {"name": "Location__c", "type": "location"},
                {"name": "Location__Latitude__s", "type": "double", "compoundFieldName": "Location__c"},
                {"name": "Logo__c", "type": "base64"},
                {"name": "SLAExpirationDate__c", "type": "date"},
                {"name": "SystemModstamp", "type": "datetime"},
                {"name": "LastModifiedDate", "type": "datetime"},
                {"name": "OwnerId", "type": "reference"},
                {"name": "Tags__c", "type": "multipicklist"},
                {"name": "OpenTime__c", "type": "time"},
                {"name": "Score__c", "type": "double", "calculated": true},
                {"name": "Shiny__c", "type": "somethingNew"},
                {"name": "BigCount__c", "type": "long"},
                {"name": "Share__c", "type": "percent"}
            ]
        }))
        .unwrap()
    }

    #[test]
    fn describe_becomes_the_staged_schema() {
        let plan = ObjectPlan::from_describe(&account()).unwrap();
        let columns: Vec<String> = plan
            .schema
            .fields()
            .iter()
            .map(|f| format!("{}:{}:{}", f.name(), f.data_type(), f.is_nullable()))
            .collect();
        assert_eq!(
            columns,
            vec![
                "Id:Utf8:false",
                "AnnualRevenue:Float64:true",
                "BigCount__c:Int64:true",
                "BillingCity:Utf8:true",
                "BillingLatitude:Float64:true",
                "IsDeleted:Boolean:true",
                "LastModifiedDate:Timestamp(ms, \"UTC\"):true",
                "Location__Latitude__s:Float64:true",
                "Name:Utf8:true",
                "NumberOfEmployees:Int64:true",
                "OpenTime__c:Utf8:true",
                "OwnerId:Utf8:true",
                "SLAExpirationDate__c:Date32:true",
                "Score__c:Float64:true",
                "Share__c:Float64:true",
                "Shiny__c:Utf8:true",
                "SystemModstamp:Timestamp(ms, \"UTC\"):true",
                "Tags__c:Utf8:true",
                "_syncline_version:Timestamp(ms, \"UTC\"):false",
                "_syncline_deleted:Boolean:false",
            ]
        );
        assert_eq!(plan.fields.len(), plan.schema.fields().len() - 2);
        assert_eq!(plan.fields[0], "Id");
        assert!(
            !plan
                .fields
                .iter()
                .any(|f| f == "BillingAddress" || f == "Location__c" || f == "Logo__c")
        );
        assert_eq!(plan.cursor.as_deref(), Some("SystemModstamp"));
        assert_eq!(plan.deleted.as_deref(), Some("IsDeleted"));
        assert_eq!(
            plan.anchor_fields(),
            vec!["Id", "SystemModstamp", "IsDeleted"]
        );
    }

    #[test]
    fn last_modified_date_is_the_fallback_cursor() {
        let describe: Describe = serde_json::from_value(json!({
            "name": "User",
            "fields": [
                {"name": "Id", "type": "id"},
                {"name": "LastModifiedDate", "type": "datetime"},
                {"name": "Username", "type": "string"}
            ]
        }))
        .unwrap();
        let plan = ObjectPlan::from_describe(&describe).unwrap();
        assert!(plan.queryable, "queryable defaults to true");
        assert_eq!(plan.cursor.as_deref(), Some("LastModifiedDate"));
        assert_eq!(plan.deleted, None);
        assert_eq!(plan.anchor_fields(), vec!["Id", "LastModifiedDate"]);
    }

    #[test]
    fn objects_without_cursor_or_id_fail_clearly() {
        let no_cursor: Describe = serde_json::from_value(json!({
            "name": "Thing__c",
            "fields": [{"name": "Id", "type": "id"}, {"name": "Name", "type": "string"}]
        }))
        .unwrap();
        let err = ObjectPlan::from_describe(&no_cursor)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("Thing__c") && err.contains("SystemModstamp"),
            "{err}"
        );

        let not_queryable: Describe = serde_json::from_value(json!({
            "name": "Vote", "queryable": false,
            "fields": [{"name": "Id", "type": "id"}]
        }))
        .unwrap();
        let plan = ObjectPlan::from_describe(&not_queryable).unwrap();
        assert!(!plan.queryable);
        assert_eq!(plan.cursor, None);

        let no_id: Describe = serde_json::from_value(json!({
            "name": "AggregateResult",
            "fields": [{"name": "SystemModstamp", "type": "datetime"}]
        }))
        .unwrap();
        assert!(
            ObjectPlan::from_describe(&no_id)
                .unwrap_err()
                .to_string()
                .contains("no Id")
        );
    }

    #[test]
    fn type_mapping_follows_a4() {
        assert_eq!(arrow_type("id"), Some(DataType::Utf8));
        assert_eq!(arrow_type("encryptedstring"), Some(DataType::Utf8));
        assert_eq!(arrow_type("anyType"), Some(DataType::Utf8));
        assert_eq!(arrow_type("boolean"), Some(DataType::Boolean));
        assert_eq!(arrow_type("int"), Some(DataType::Int64));
        assert_eq!(arrow_type("currency"), Some(DataType::Float64));
        assert_eq!(arrow_type("date"), Some(DataType::Date32));
        assert_eq!(arrow_type("datetime"), Some(timestamp_type()));
        assert_eq!(arrow_type("address"), None);
        assert_eq!(arrow_type("location"), None);
        assert_eq!(arrow_type("base64"), None);
    }
}
