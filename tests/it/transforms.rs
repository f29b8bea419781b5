//! Stream transforms through the whole pipeline: JSONL exports → staged raw Parquet →
//! transformed Parquet → a real PostgreSQL, run as the `syncline` binary.

use std::process::Command;

use syncline::reconcile::Fingerprint;
use syncline::reconcile::report::{RunReport, Status};

use crate::support::files::FilesHarness;
use crate::support::report_stream;

/// 2024-03-01T00:00:00Z.
const T0: i64 = 1_709_251_200_000;
const HOUR: i64 = 3_600_000;

fn contact(id: i64, stage: &str, deleted: bool, minute: i64) -> String {
    format!(
        r#"{{"id": {id}, "email": "user{id}@example.com", "FirstName": "Name{id}", "lifecyclestage": "{stage}", "annualrevenue": "{id}00.25", "notes": "private", "updated_at": "2024-03-01T10:{minute:02}:00Z", "is_deleted": {deleted}}}"#
    ) + "\n"
}

const CONTACTS_TABLE: &str = r#"
[source.files.contacts]
glob = "contacts/*.jsonl"
format = "jsonl"
key = "id"
version_column = "updated_at"
deleted_column = "is_deleted"
[source.files.contacts.schema]
id = "int64"
email = "utf8"
FirstName = "utf8"
lifecyclestage = "utf8"
annualrevenue = "utf8"
notes = "utf8"
updated_at = "timestamp"
is_deleted = "boolean"
"#;

const TRANSFORM: &str = r#"
[streams.contacts]
select = ["id", "email", "FirstName", "lifecyclestage", "annualrevenue", "updated_at"]
rename = { id = "contact_id", lifecyclestage = "stage" }
hash = ["email"]
cast = { annualrevenue = "double" }
filter = "stage <> 'other'"
column_case = "snake"
"#;

/// Runs `syncline run` with the hash salt set; returns the exit code, stderr and the report.
fn run(h: &FilesHarness) -> (i32, String, RunReport) {
    let report = h
        .dir
        .path()
        .join(format!("report-{}.json", uuid::Uuid::new_v4()));
    let report_arg = report.display().to_string();
    let (code, stderr) = h.run_binary_env(
        &["--report", &report_arg],
        &[("SYNCLINE_HASH_SALT", "pepper")],
    );
    let report: RunReport = serde_json::from_slice(
        &std::fs::read(&report).unwrap_or_else(|e| panic!("no report ({e}): {stderr}")),
    )
    .expect("report is JSON");
    (code, stderr, report)
}

fn syncline(h: &FilesHarness, args: &[&str]) -> (i32, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_syncline"));
    command.args(args);
    for (k, v) in h.env() {
        command.env(k, v);
    }
    let output = command.output().expect("spawn syncline");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Rows whose email is sha256("pepper" || the original email) as PostgreSQL computes it.
async fn hashed_emails(h: &FilesHarness) -> i64 {
    h.client()
        .await
        .query_one(
            "SELECT count(*) FROM files.contacts WHERE email = \
             encode(sha256(convert_to('pepper' || 'user' || contact_id || '@example.com', 'UTF8')), 'hex')",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// The fingerprint of `contact` rows, by key, minute past 10:00 and delete flag.
fn fingerprint(rows: &[(&str, i64, bool)]) -> Fingerprint {
    let mut fingerprint = Fingerprint::default();
    for (key, minute, deleted) in rows {
        fingerprint.add(key, T0 + 10 * HOUR + minute * 60_000, *deleted);
    }
    fingerprint
}

fn sum(a: Fingerprint, b: Fingerprint) -> Fingerprint {
    let mut total = a;
    total.merge(b);
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transform_loads_reconciles_at_every_hop_and_a_delete_passes_its_filter() {
    let h = FilesHarness::start().await;
    // 4 is `other`: filtered. 5 and 6 are leads now.
    let first: String = [
        contact(1, "lead", false, 1),
        contact(2, "customer", false, 2),
        contact(3, "lead", false, 3),
        contact(4, "other", false, 4),
        contact(5, "lead", false, 5),
        contact(6, "lead", false, 6),
    ]
    .concat();
    h.write_file("contacts/part-1.jsonl", &first, T0 + HOUR);
    h.write_config(&["contacts"], &format!("{CONTACTS_TABLE}{TRANSFORM}"));

    let (code, stderr, report) = run(&h);
    assert_eq!(code, 0, "{stderr}");
    let contacts = report_stream(&report, "contacts");
    assert_eq!(contacts.status, Status::Success, "{contacts:#?}");
    assert_eq!(contacts.rows_extracted, 6);
    assert_eq!(contacts.rows_filtered, 1);
    assert_eq!(contacts.rows_inserted, 5);
    // source = stage (raw), raw = transformed + filtered, transformed = destination.
    let r = &contacts.reconciliation;
    let transformed = r.transformed.expect("transformed fingerprint");
    let filtered = r.filtered.expect("filtered fingerprint");
    assert_eq!(r.source, r.stage);
    assert_eq!((transformed.rows, filtered.rows), (5, 1));
    // The filtered row is contact 4, by its own hash: each row's hash, carried through the
    // plan from the staging, stays with its row.
    assert_eq!(filtered, fingerprint(&[("4", 4, false)]));
    assert_eq!(sum(transformed, filtered), r.stage);
    assert_eq!(r.destination, Some(transformed));
    assert!(r.matched, "{contacts:#?}");
    // A first load into PostgreSQL is transformed as it is staged and copied at once.
    assert!(
        contacts.phases.copied_while_staging,
        "{:#?}",
        contacts.phases
    );

    // The destination has the output's names and types; the renamed key is its key.
    assert_eq!(
        h.column_types("contacts").await,
        vec![
            ("contact_id".to_string(), "bigint".to_string()),
            ("email".to_string(), "text".to_string()),
            ("first_name".to_string(), "text".to_string()),
            ("stage".to_string(), "text".to_string()),
            ("annualrevenue".to_string(), "double precision".to_string()),
            (
                "updated_at".to_string(),
                "timestamp with time zone".to_string()
            ),
        ]
    );
    assert_eq!(
        h.rows(
            "contacts",
            &["contact_id", "first_name", "stage", "annualrevenue"]
        )
        .await,
        [
            (1, "lead"),
            (2, "customer"),
            (3, "lead"),
            (5, "lead"),
            (6, "lead")
        ]
        .iter()
        .map(|(id, stage)| vec![
            Some(id.to_string()),
            Some(format!("Name{id}")),
            Some(stage.to_string()),
            Some(format!("{id}00.25")),
        ])
        .collect::<Vec<_>>()
    );
    // sha256("pepper" || email) as PostgreSQL computes it, for every row.
    let hashed = hashed_emails(&h).await;
    assert_eq!(hashed, 5);

    // The raw load stays staged beside the transformed one, which is what was merged.
    let load_id = contacts.load_id.clone().unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(h.dir.path().join(format!(
            "stage/files/contacts/loads/{load_id}/manifest.json"
        )))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["key"], "contact_id");
    assert_eq!(manifest["transform"]["key"], "id");
    assert_eq!(manifest["transform"]["rows"], 6);
    assert_eq!(manifest["transform"]["filtered_rows"], 1);
    assert!(
        manifest["files"][0]["path"]
            .as_str()
            .unwrap()
            .contains("/transformed/"),
        "{manifest:#}"
    );

    // preview shows the transformed rows of the last staged load.
    let config = h.config_path.display().to_string();
    let (code, stdout, stderr) = syncline(
        &h,
        &[
            "preview", "--config", &config, "--stream", "contacts", "--limit", "10",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("contact_id") && stdout.contains("first_name"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Name3") && !stdout.contains("Name4"),
        "{stdout}"
    );

    // Later: 5 changes to `other` and is deleted; 6 changes to `other`. The filter drops
    // live rows only, so 5's delete still reaches the destination, by the renamed key.
    let second = [
        contact(5, "other", true, 30),
        contact(6, "other", false, 31),
    ]
    .concat();
    h.write_file("contacts/part-2.jsonl", &second, T0 + 2 * HOUR);
    let (code, stderr, report) = run(&h);
    assert_eq!(code, 0, "{stderr}");
    let contacts = report_stream(&report, "contacts");
    assert_eq!(contacts.rows_extracted, 2, "{contacts:#?}");
    assert_eq!(contacts.rows_filtered, 1, "{contacts:#?}");
    assert_eq!(contacts.rows_deleted, 1, "{contacts:#?}");
    let r = &contacts.reconciliation;
    assert_eq!(
        sum(r.transformed.unwrap(), r.filtered.unwrap()),
        r.stage,
        "{contacts:#?}"
    );
    assert_eq!(r.filtered, Some(fingerprint(&[("6", 31, false)])));
    assert_eq!(r.transformed, Some(fingerprint(&[("5", 30, true)])));
    assert!(r.matched, "{contacts:#?}");
    assert_eq!(
        h.rows("contacts", &["contact_id", "stage"]).await,
        [(1, "lead"), (2, "customer"), (3, "lead"), (6, "lead")]
            .iter()
            .map(|(id, stage)| vec![Some(id.to_string()), Some(stage.to_string())])
            .collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_and_run_reject_a_transform_that_drops_the_key() {
    let h = FilesHarness::start().await;
    h.write_file("contacts/part-1.jsonl", &contact(1, "lead", false, 1), T0);
    h.write_config(
        &["contacts"],
        &format!("{CONTACTS_TABLE}\n[streams.contacts]\nselect = [\"email\", \"FirstName\"]\n"),
    );
    let config = h.config_path.display().to_string();
    let (code, stdout, stderr) = syncline(&h, &["check", "--config", &config]);
    assert_eq!(code, 2, "{stdout}{stderr}");
    let line = stdout
        .lines()
        .find(|l| l.contains("source stream contacts"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(
        line.starts_with('✗')
            && line.contains("stream contacts")
            && line.contains("drops column id"),
        "{line}"
    );

    let (code, stderr) = h.run_binary(&[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("drops column id"), "{stderr}");
    // Nothing was read: no load was staged.
    assert!(
        !h.dir.path().join("stage/files/contacts/loads").exists(),
        "a load was staged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sql_transform_that_does_not_parse_stops_the_run_before_the_source_is_called() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("transforms")).unwrap();
    std::fs::write(
        dir.path().join("transforms/contacts.sql"),
        "SELEC id FROM contacts",
    )
    .unwrap();
    // Nothing listens on port 1: a source that was called would fail with a network error
    // (exit 1) after its retries, not a configuration error.
    let config = crate::support::config_toml(
        "name = \"bad_sql\"",
        &dir.path().join("stage"),
        "[source]\ntype = \"hubspot\"\nbase_url = \"http://127.0.0.1:1\"\ntoken = \"t\"\nstreams = [\"contacts\"]",
        "[destination]\ntype = \"lake\"",
        "[streams.contacts]\nsql = \"transforms/contacts.sql\"",
    );
    let path = dir.path().join("crm.toml");
    std::fs::write(&path, config).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_syncline"))
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("stream contacts")
            && stderr.contains("transforms/contacts.sql")
            && stderr.contains("does not parse"),
        "{stderr}"
    );
    assert!(!dir.path().join("stage/bad_sql/contacts").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snowflake_copies_the_transformed_files_and_reconciles() {
    use crate::support::Harness;
    use crate::support::snowflake::TestSnowflake;

    let sim = syncline::sim::SimConfig {
        contacts: 400,
        companies: 5,
        deals: 5,
        ..Default::default()
    };
    let h = Harness::start(sim, &["contacts"], "").await;
    let snowflake = TestSnowflake::start().await;
    let destination = snowflake
        .destination_toml(&h.stage_dir())
        .replace("${SNOWFLAKE_PASSWORD}", "fakesnow-accepts-any");
    h.write_hubspot_config(
        &["contacts"],
        "file_rows = 1000",
        &destination,
        "[streams.contacts]\n\
         select = [\"id\", \"email\", \"firstname\", \"lifecyclestage\"]\n\
         rename = { id = \"contact_id\", lifecyclestage = \"stage\" }\n\
         hash = [\"email\"]\n\
         filter = \"stage = 'lead'\"\n",
    );
    let report = h.run(false).await;
    assert_eq!(report.status, Status::Success, "{report:#?}");
    let contacts = report_stream(&report, "contacts");
    let expected = h.expected("contacts");
    let leads: Vec<String> = expected
        .iter()
        .filter(|(_, values)| {
            values.get("lifecyclestage").cloned().flatten().as_deref() == Some("lead")
        })
        .map(|(id, _)| id.to_string())
        .collect();
    assert!(!leads.is_empty() && leads.len() < expected.len());
    let r = &contacts.reconciliation;
    assert_eq!(r.transformed.map(|t| t.rows), Some(leads.len() as u64));
    assert_eq!(
        contacts.rows_filtered,
        (expected.len() - leads.len()) as u64
    );
    assert_eq!(sum(r.transformed.unwrap(), r.filtered.unwrap()), r.stage);
    assert_eq!(r.destination, r.transformed);
    assert!(r.matched, "{contacts:#?}");

    let loaded: Vec<String> = snowflake
        .rows("SELECT \"contact_id\" FROM \"crm\".\"contacts\" ORDER BY \"contact_id\"")
        .await
        .into_iter()
        .map(|row| row[0].clone().unwrap())
        .collect();
    let mut wanted = leads.clone();
    wanted.sort_by_key(|id| id.parse::<i64>().unwrap());
    let mut got = loaded;
    got.sort_by_key(|id| id.parse::<i64>().unwrap());
    assert_eq!(got, wanted);
    // Every email arrived hashed (64 hex digits), none as written.
    assert_eq!(
        snowflake
            .count("SELECT COUNT(*) FROM \"crm\".\"contacts\" WHERE \"email\" IS NOT NULL AND (LENGTH(\"email\") <> 64 OR \"email\" LIKE '%@%')")
            .await,
        0
    );
}

/// A `[reconcile]` schedule skips a transformed stream (it differs from its source by design)
/// instead of failing every run after the load committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconcile_schedule_skips_a_transformed_stream_and_the_run_succeeds() {
    let h = FilesHarness::start().await;
    h.write_file(
        "contacts/part-1.jsonl",
        &[contact(1, "lead", false, 1), contact(2, "other", false, 2)].concat(),
        T0 + HOUR,
    );
    h.write_config(
        &["contacts"],
        &format!("{CONTACTS_TABLE}{TRANSFORM}\n[reconcile]\nevery = \"1h\"\n"),
    );
    let (code, stderr, report) = run(&h);
    assert_eq!(code, 0, "{stderr}");
    let contacts = report_stream(&report, "contacts");
    assert_eq!(contacts.status, Status::Success, "{contacts:#?}");
    assert!(contacts.reconcile.is_none(), "{contacts:#?}");
}

/// `count` contacts, ids from `first`, all leads, as one JSONL text.
fn contacts(first: i64, count: i64) -> String {
    (first..first + count)
        .map(|id| contact(id, "lead", false, (id % 60) as i64))
        .collect()
}

async fn count(h: &FilesHarness, table: &str) -> i64 {
    h.client()
        .await
        .query_one(&format!("SELECT count(*) FROM files.{table}"), &[])
        .await
        .unwrap()
        .get(0)
}

/// A first load is transformed as it is staged and copied into PostgreSQL at once; a value
/// the transform cannot cast, after batches were already copied, must leave nothing merged and
/// nothing saved, and the run after the export is fixed loads everything once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cast_failing_midway_through_a_copied_full_load_merges_nothing() {
    let h = FilesHarness::start().await;
    h.write_file("contacts/part-1.jsonl", &contacts(1, 2500), T0 + HOUR);
    let bad = contact(2501, "lead", false, 1).replace("250100.25", "n/a");
    h.write_file("contacts/part-2.jsonl", &bad, T0 + HOUR);
    h.write_config(&["contacts"], &format!("{CONTACTS_TABLE}{TRANSFORM}"));

    let (code, stderr) = h.run_binary_env(&[], &[("SYNCLINE_HASH_SALT", "pepper")]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("the transform failed on the staged rows"),
        "{stderr}"
    );
    assert!(!stderr.contains("n/a"), "a value is never quoted: {stderr}");
    assert_eq!(
        count(&h, "contacts").await,
        0,
        "the copied rows rolled back"
    );
    assert_eq!(h.ledger_count().await, 0);

    h.write_file(
        "contacts/part-2.jsonl",
        &contact(2501, "lead", false, 1),
        T0 + HOUR,
    );
    let (code, stderr, report) = run(&h);
    assert_eq!(code, 0, "{stderr}");
    let contacts = report_stream(&report, "contacts");
    assert!(
        !contacts.recovered,
        "nothing was left pending: {contacts:#?}"
    );
    assert!(contacts.reconciliation.matched, "{contacts:#?}");
    assert_eq!(count(&h, "contacts").await, 2501);
    assert_eq!(h.ledger_count().await, 1);
}

/// Killed after a transformed full load was staged while its copy waited to commit: the copy
/// dies with the process, and the next run merges the staged transformed load once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_while_a_transformed_full_load_is_copied_reruns_exactly_once() {
    let h = FilesHarness::start().await;
    h.write_file("contacts/part-1.jsonl", &contacts(1, 2500), T0 + HOUR);
    h.write_config(&["contacts"], &format!("{CONTACTS_TABLE}{TRANSFORM}"));

    let (code, stderr) = h.run_binary_env(
        &[],
        &[
            ("SYNCLINE_HASH_SALT", "pepper"),
            ("SYNCLINE_CRASH_AT", "after-stage"),
        ],
    );
    assert_ne!(code, 0, "the run should have been killed: {stderr}");
    assert_eq!(count(&h, "contacts").await, 0, "the copy died uncommitted");
    assert_eq!(h.ledger_count().await, 0);

    let (code, stderr, report) = run(&h);
    assert_eq!(code, 0, "{stderr}");
    let contacts = report_stream(&report, "contacts");
    assert!(contacts.recovered, "{contacts:#?}");
    assert!(contacts.reconciliation.matched, "{contacts:#?}");
    assert_eq!(count(&h, "contacts").await, 2500);
    assert_eq!(
        h.ledger_count().await,
        1,
        "the transformed load merged once"
    );
    // What was merged is the transformed load: hashed emails, the renamed key.
    let hashed = hashed_emails(&h).await;
    assert_eq!(hashed, 2500);
}
