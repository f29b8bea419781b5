//! `syncline reconcile`, black-box: the binary against a real PostgreSQL source (cursor mode
//! and CDC), the HubSpot simulator over HTTP, and the PostgreSQL and lake destinations. Each
//! kind of drift is planted by hand, found with its class and key (exit 3), repaired as an
//! ordinary load, and a second reconcile is clean (exit 0).

use std::path::{Path, PathBuf};
use std::process::Command;

use syncline::pipeline::ReconcileReport;
use syncline::reconcile::drift::{Class, Drift, Key};
use syncline::sim::SimConfig;

use crate::support::{Harness, TestPostgres, config_toml, connect};

/// Runs `syncline reconcile --config CONFIG ARGS` with `env`; returns the exit code, the JSON
/// report (none for a failure before one) and stdout + stderr.
fn reconcile(
    config: &Path,
    env: &[(&str, String)],
    args: &[&str],
) -> (i32, Option<ReconcileReport>, String) {
    let report = config
        .parent()
        .unwrap()
        .join(format!("reconcile-{}.json", uuid::Uuid::new_v4()));
    let mut command = Command::new(env!("CARGO_BIN_EXE_syncline"));
    command
        .args(["reconcile", "--config"])
        .arg(config)
        .arg("--report")
        .arg(&report)
        .args(args);
    for (k, v) in env {
        command.env(k, v);
    }
    let output = command.output().expect("run syncline reconcile");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let report = std::fs::read(&report)
        .ok()
        .map(|b| serde_json::from_slice(&b).expect("report is JSON"));
    (output.status.code().unwrap_or(-1), report, text)
}

/// Runs `syncline run` and insists it succeeds.
fn run(config: &Path, env: &[(&str, String)]) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_syncline"));
    command.args(["run", "--config"]).arg(config);
    for (k, v) in env {
        command.env(k, v);
    }
    let output = command.output().expect("run syncline");
    assert!(
        output.status.success(),
        "syncline run: {:?}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

fn drift(report: &ReconcileReport) -> &Drift {
    let stream = &report.streams[0];
    assert!(stream.error.is_none(), "{report:#?}");
    stream.drift.as_ref().expect("compared")
}

fn examples(drift: &Drift, class: Class) -> Vec<Key> {
    let found = drift.class(class);
    assert_eq!(found.count as usize, found.examples.len(), "{drift:#?}");
    found.examples.clone()
}

fn ints(keys: &[i64]) -> Vec<Key> {
    keys.iter().map(|&k| Key::Int(k)).collect()
}

/// A PostgreSQL cluster with a source and a destination database, and a config.
struct PgSetup {
    _pg: TestPostgres,
    _dir: tempfile::TempDir,
    source_url: String,
    dest_url: String,
    config: PathBuf,
}

impl PgSetup {
    async fn start(wal_level: &'static str, source_extra: &str, destination: &str) -> PgSetup {
        PgSetup::start_with(wal_level, source_extra, destination, "").await
    }

    /// Like `start`, with `extra` (e.g. `[streams.contacts]` settings) appended to the config.
    async fn start_with(
        wal_level: &'static str,
        source_extra: &str,
        destination: &str,
        extra: &str,
    ) -> PgSetup {
        let pg = tokio::task::spawn_blocking(move || TestPostgres::start_with_wal_level(wal_level))
            .await
            .unwrap();
        let source_url = pg.create_database("source");
        let dest_url = pg.create_database("dest");
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("pg.toml");
        let destination = if destination.is_empty() {
            "[destination]\ntype = \"postgres\"\nurl = \"${DEST_URL}\"\nschema = \"crm\""
                .to_string()
        } else {
            destination.replace("{dir}", &dir.path().display().to_string())
        };
        let text = config_toml(
            "name = \"recon\"\nbatch_rows = 70",
            &dir.path().join("stage"),
            &format!(
                "[source]\ntype = \"postgres\"\nurl = \"${{SOURCE_URL}}\"\nstreams = [\"contacts\"]\n{source_extra}"
            ),
            &destination,
            extra,
        );
        std::fs::write(&config, text).unwrap();
        let setup = PgSetup {
            _pg: pg,
            _dir: dir,
            source_url,
            dest_url,
            config,
        };
        connect(&setup.source_url)
            .await
            .batch_execute(
                "CREATE TABLE contacts (
                    id bigint PRIMARY KEY,
                    email text,
                    score double precision,
                    born date,
                    updated_at timestamptz NOT NULL,
                    seen timestamp,
                    n integer,
                    amount numeric(12, 2),
                    active boolean
                );
                INSERT INTO contacts (id, email, score, born, updated_at, seen, n, amount, active)
                SELECT i, CASE WHEN i % 11 = 0 THEN NULL ELSE 'c' || i || '@example.com' END,
                       i / 3.0, date '1980-01-01' + i,
                       now() - interval '1 day' + (i || ' seconds')::interval,
                       timestamp '2024-02-29 12:34:56.789012' + (i || ' seconds')::interval,
                       i, i * 1.25, i % 2 = 0
                FROM generate_series(1, 300) AS i;",
            )
            .await
            .unwrap();
        setup
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("SOURCE_URL", self.source_url.clone()),
            ("DEST_URL", self.dest_url.clone()),
        ]
    }

    async fn source(&self) -> tokio_postgres::Client {
        connect(&self.source_url).await
    }

    async fn dest(&self) -> tokio_postgres::Client {
        connect(&self.dest_url).await
    }
}

const CURSOR: &str = "mode = \"cursor\"\n[source.tables.contacts]\ncursor_column = \"updated_at\"";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursor_stream_drift_planted_in_the_destination_is_classified_and_repaired() {
    let setup = PgSetup::start("replica", CURSOR, "").await;
    let env = setup.env();
    run(&setup.config, &env);
    let (code, report, text) = reconcile(&setup.config, &env, &[]);
    assert_eq!(code, 0, "{text}");
    let clean = drift(report.as_ref().unwrap());
    assert!(clean.is_clean(), "{clean:#?}");
    assert_eq!((clean.source_rows, clean.destination_rows), (300, 300));

    let dest = setup.dest().await;
    dest.batch_execute(
        "DELETE FROM crm.contacts WHERE id = 10;
         UPDATE crm.contacts SET email = 'old', _syncline_version = _syncline_version - interval '1 hour'
          WHERE id = 20;
         UPDATE crm.contacts SET _syncline_version = _syncline_version + interval '1 hour' WHERE id = 30;
         CREATE TEMP TABLE extra AS SELECT * FROM crm.contacts WHERE id = 50;
         UPDATE extra SET id = 99999;
         INSERT INTO crm.contacts SELECT * FROM extra;",
    )
    .await
    .unwrap();
    // Deleted at the source: a cursor-mode run never sees it.
    setup
        .source()
        .await
        .batch_execute("DELETE FROM contacts WHERE id = 40")
        .await
        .unwrap();

    let (code, report, text) = reconcile(&setup.config, &env, &[]);
    assert_eq!(code, 3, "{text}");
    let found = drift(report.as_ref().unwrap());
    assert_eq!(examples(found, Class::Missing), ints(&[10]), "{found:#?}");
    assert_eq!(examples(found, Class::Stale), ints(&[20]), "{found:#?}");
    assert_eq!(examples(found, Class::Ahead), ints(&[30]), "{found:#?}");
    assert_eq!(examples(found, Class::Orphaned), ints(&[40, 99999]));
    assert!(text.contains("orphaned"), "the summary table: {text}");

    let ledger = |client: tokio_postgres::Client| async move {
        client
            .query_one("SELECT count(*) FROM crm._syncline_loads", &[])
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    let loads_before = ledger(setup.dest().await).await;
    let (code, report, text) = reconcile(&setup.config, &env, &["--repair"]);
    // The row someone wrote newer than the source stays as it is: a merge never writes an
    // older version over a newer one.
    assert_eq!(code, 3, "{text}");
    let repaired = report.unwrap();
    let load = repaired.streams[0].repair.as_ref().expect("a repair load");
    assert_eq!(
        (load.rows_inserted, load.rows_updated, load.rows_deleted),
        (1, 1, 2),
        "{load:#?}"
    );
    assert!(load.reconciliation.matched, "{load:#?}");
    assert_eq!(repaired.streams[0].unrepaired, 1);
    // An ordinary load: one more ledger row.
    assert_eq!(ledger(setup.dest().await).await, loads_before + 1);
    let email: String = dest
        .query_one("SELECT email FROM crm.contacts WHERE id = 20", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(email, "c20@example.com");

    let (code, report, text) = reconcile(&setup.config, &env, &[]);
    assert_eq!(code, 3, "{text}");
    let left = drift(report.as_ref().unwrap());
    assert_eq!(examples(left, Class::Ahead), ints(&[30]));
    assert_eq!(
        left.missing.count + left.stale.count + left.orphaned.count,
        0
    );

    // Undo the hand edit; a change the source made after the last run is in flight, not drift.
    dest.batch_execute(
        "UPDATE crm.contacts SET _syncline_version = _syncline_version - interval '1 hour' WHERE id = 30",
    )
    .await
    .unwrap();
    setup
        .source()
        .await
        .batch_execute("UPDATE contacts SET email = 'live', updated_at = now() WHERE id = 60")
        .await
        .unwrap();
    let (code, report, text) = reconcile(&setup.config, &env, &[]);
    assert_eq!(code, 0, "{text}");
    let after = drift(report.as_ref().unwrap());
    assert!(after.is_clean(), "{after:#?}");
    assert_eq!(after.in_flight, 1, "{after:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdc_stream_is_compared_by_content_hash_and_repaired() {
    let setup = PgSetup::start("logical", "", "").await;
    let env = setup.env();
    run(&setup.config, &env);
    // Streamed changes too, decoded from pgoutput's text rather than COPY's binary.
    setup
        .source()
        .await
        .batch_execute(
            "UPDATE contacts SET score = score * 7, seen = seen + interval '0.000001 seconds',
                    amount = amount + 0.01, email = NULL, active = NOT active WHERE id % 5 = 0",
        )
        .await
        .unwrap();
    run(&setup.config, &env);
    let (code, report, text) = reconcile(&setup.config, &env, &[]);
    assert_eq!(code, 0, "{text}");
    let report = report.unwrap();
    assert_eq!(
        report.streams[0].compared_by.as_deref(),
        Some("content hash")
    );
    assert!(drift(&report).is_clean(), "{report:#?}");

    setup
        .dest()
        .await
        .batch_execute(
            "DELETE FROM crm.contacts WHERE id = 10;
             UPDATE crm.contacts SET email = 'tampered' WHERE id = 20;
             UPDATE crm.contacts SET score = score + 1e-9 WHERE id = 21;
             UPDATE crm.contacts SET amount = amount + 0.01 WHERE id = 22;
             CREATE TEMP TABLE extra AS SELECT * FROM crm.contacts WHERE id = 50;
             UPDATE extra SET id = 99999;
             INSERT INTO crm.contacts SELECT * FROM extra;",
        )
        .await
        .unwrap();
    let (code, report, text) = reconcile(&setup.config, &env, &[]);
    assert_eq!(code, 3, "{text}");
    let found = drift(report.as_ref().unwrap());
    assert_eq!(examples(found, Class::Missing), ints(&[10]));
    // A cent off in a numeric(12,2) is drift: decimals hash as their text with the scale's
    // digits on both sides.
    assert_eq!(examples(found, Class::Stale), ints(&[20, 21, 22]));
    assert_eq!(examples(found, Class::Orphaned), ints(&[99999]));

    let (code, _, text) = reconcile(&setup.config, &env, &["--repair"]);
    assert_eq!(code, 0, "{text}");
    let (code, report, text) = reconcile(&setup.config, &env, &[]);
    assert_eq!(code, 0, "{text}");
    assert!(drift(report.as_ref().unwrap()).is_clean());

    // The slot goes on as before: a later change arrives and the stream stays clean.
    setup
        .source()
        .await
        .batch_execute("UPDATE contacts SET email = 'later' WHERE id = 10")
        .await
        .unwrap();
    run(&setup.config, &env);
    let (code, _, text) = reconcile(&setup.config, &env, &[]);
    assert_eq!(code, 0, "{text}");

    // Changes still in the slot are in flight, not drift: the next run brings them.
    setup
        .source()
        .await
        .batch_execute(
            "UPDATE contacts SET email = 'pending' WHERE id = 11;
             DELETE FROM contacts WHERE id = 12;
             INSERT INTO contacts (id, email, updated_at) VALUES (6000, 'new', now());",
        )
        .await
        .unwrap();
    let (code, report, text) = reconcile(&setup.config, &env, &[]);
    assert_eq!(code, 0, "{text}");
    let pending = drift(report.as_ref().unwrap());
    assert!(pending.is_clean(), "{pending:#?}");
    assert_eq!(pending.in_flight, 3, "{pending:#?}");
    run(&setup.config, &env);

    // A delete made while the slot was gone never arrives through CDC; reconcile finds it.
    let source = setup.source().await;
    source
        .batch_execute(
            "SELECT pg_drop_replication_slot('syncline_recon_contacts');
             DELETE FROM contacts WHERE id = 15;",
        )
        .await
        .unwrap();
    let (code, report, text) = reconcile(&setup.config, &env, &[]);
    assert_eq!(code, 3, "{text}");
    let found = drift(report.as_ref().unwrap());
    assert_eq!(examples(found, Class::Orphaned), ints(&[15]), "{found:#?}");
    assert_eq!(found.missing.count + found.stale.count, 0, "{found:#?}");
    let (code, _, text) = reconcile(&setup.config, &env, &["--repair"]);
    assert_eq!(code, 0, "{text}");
    let (code, _, text) = reconcile(&setup.config, &env, &[]);
    assert_eq!(code, 0, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursor_stream_drift_at_the_source_is_repaired_in_the_lake() {
    let setup = PgSetup::start(
        "replica",
        CURSOR,
        "[destination]\ntype = \"lake\"\nurl = \"file://{dir}/lake\"",
    )
    .await;
    let env = setup.env();
    run(&setup.config, &env);
    let (code, report, text) = reconcile(&setup.config, &env, &[]);
    assert_eq!(code, 0, "{text}");
    assert!(drift(report.as_ref().unwrap()).is_clean());

    // What cursor mode misses: a row committed late with an old stamp, an update that kept an
    // old stamp, and a delete.
    setup
        .source()
        .await
        .batch_execute(
            "INSERT INTO contacts (id, email, updated_at) VALUES (5000, 'late', now() - interval '2 days');
             UPDATE contacts SET email = 'quiet', updated_at = updated_at + interval '1 millisecond'
              WHERE id = 7;
             DELETE FROM contacts WHERE id = 8;",
        )
        .await
        .unwrap();
    run(&setup.config, &env);
    let (code, report, text) = reconcile(&setup.config, &env, &[]);
    assert_eq!(code, 3, "{text}");
    let found = drift(report.as_ref().unwrap());
    assert_eq!(examples(found, Class::Missing), ints(&[5000]));
    assert_eq!(examples(found, Class::Stale), ints(&[7]));
    assert_eq!(examples(found, Class::Orphaned), ints(&[8]));
    assert_eq!(found.ahead.count, 0);

    let (code, _, text) = reconcile(&setup.config, &env, &["--repair"]);
    assert_eq!(code, 0, "{text}");
    let (code, report, text) = reconcile(&setup.config, &env, &[]);
    assert_eq!(code, 0, "{text}");
    let after = drift(report.as_ref().unwrap());
    assert!(after.is_clean(), "{after:#?}");
    assert_eq!(after.destination_rows, 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hubspot_drift_is_repaired_through_batch_read_within_the_estimate() {
    let harness = Harness::start(
        SimConfig {
            contacts: 450,
            ..Default::default()
        },
        &["contacts"],
        "",
    )
    .await;
    let env: Vec<(&str, String)> = harness.env();
    run(&harness.config_path, &env);
    let (code, report, text) = reconcile(&harness.config_path, &env, &[]);
    assert_eq!(code, 0, "{text}");
    assert!(drift(report.as_ref().unwrap()).is_clean());

    let dest = harness.client().await;
    dest.batch_execute(
        "DELETE FROM crm.contacts WHERE id IN (3, 4);
         UPDATE crm.contacts SET _syncline_version = _syncline_version - interval '1 day' WHERE id = 5;
         UPDATE crm.contacts SET _syncline_version = _syncline_version + interval '1 day' WHERE id = 6;
         CREATE TEMP TABLE extra AS SELECT * FROM crm.contacts WHERE id = 9;
         UPDATE extra SET id = 777777;
         INSERT INTO crm.contacts SELECT * FROM extra;",
    )
    .await
    .unwrap();

    // The estimate alone: nothing is listed.
    let requests = harness.sim.hubspot.request_count();
    let (code, report, text) = reconcile(&harness.config_path, &env, &["--dry-run"]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("estimate"), "{text}");
    let estimate = report.unwrap().streams[0].estimated_list_calls;
    assert_eq!(estimate, 5, "450 rows at 100 a page");
    assert!(
        harness.sim.hubspot.request_count() - requests <= 1,
        "only the schema is read"
    );

    let (code, report, text) = reconcile(&harness.config_path, &env, &[]);
    assert_eq!(code, 3, "{text}");
    let found = drift(report.as_ref().unwrap());
    assert_eq!(examples(found, Class::Missing), ints(&[3, 4]));
    assert_eq!(examples(found, Class::Stale), ints(&[5]));
    assert_eq!(examples(found, Class::Ahead), ints(&[6]));
    assert_eq!(examples(found, Class::Orphaned), ints(&[777777]));

    dest.batch_execute(
        "UPDATE crm.contacts SET _syncline_version = _syncline_version - interval '1 day' WHERE id = 6",
    )
    .await
    .unwrap();
    let requests = harness.sim.hubspot.request_count();
    let (code, report, text) = reconcile(&harness.config_path, &env, &["--repair"]);
    assert_eq!(code, 0, "{text}");
    let stream = &report.unwrap().streams[0];
    // Listing (5 pages) and one batch read for three ids, plus the schema.
    let estimated = stream.estimated_list_calls + stream.estimated_repair_calls.unwrap();
    let made = harness.sim.hubspot.request_count() - requests;
    assert_eq!(estimated, 6, "{stream:#?}");
    assert!(
        made <= estimated + 1 && made >= estimated,
        "made {made}, estimated {estimated}"
    );
    let (code, report, text) = reconcile(&harness.config_path, &env, &[]);
    assert_eq!(code, 0, "{text}");
    assert!(drift(report.as_ref().unwrap()).is_clean());
    harness.assert_converged("contacts", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pair_that_cannot_be_compared_is_a_configuration_error() {
    // A CDC stream compares by content hash, which Snowflake does not compute yet.
    let snowflake = crate::support::snowflake::TestSnowflake::start().await;
    let setup = PgSetup::start(
        "logical",
        "",
        &snowflake
            .destination_toml(std::path::Path::new("/unused"))
            .replace("${SNOWFLAKE_PASSWORD}", "fakesnow-accepts-any"),
    )
    .await;
    let env = setup.env();
    let (code, report, text) = reconcile(&setup.config, &env, &[]);
    assert_eq!(code, 2, "{text}");
    let error = report.unwrap().streams[0].error.clone().unwrap();
    assert!(
        error.contains("does not support the destination"),
        "{error}"
    );
    assert!(error.contains("content hash"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_source_drift_is_found_and_repaired() {
    let h = crate::support::files::FilesHarness::start().await;
    h.write_config(
        &["deals"],
        "[source.files.deals]\nglob = \"deals/*.csv\"\nformat = \"csv\"\nkey = \"deal_id\"\n\
         [source.files.deals.schema]\ndeal_id = \"utf8\"\nname = \"utf8\"",
    );
    let an_hour_ago = chrono::Utc::now().timestamp_millis() - 3_600_000;
    h.write_file(
        "deals/a.csv",
        "deal_id,name\nD-1,x\nD-2,y\nD-3,z\n",
        an_hour_ago,
    );
    h.write_file(
        "deals/b.csv",
        "deal_id,name\nD-4,w\nD-5,v\nD-1,older\n",
        an_hour_ago - 60_000,
    );
    let env = h.env();
    run(&h.config_path, &env);
    let (code, report, text) = reconcile(&h.config_path, &env, &[]);
    assert_eq!(code, 0, "{text}");
    let clean = drift(report.as_ref().unwrap());
    assert!(clean.is_clean(), "{clean:#?}");
    assert_eq!((clean.source_rows, clean.destination_rows), (5, 5));

    h.client()
        .await
        .batch_execute(
            "DELETE FROM files.deals WHERE deal_id = 'D-1';
             UPDATE files.deals SET _syncline_version = _syncline_version - interval '1 day'
              WHERE deal_id = 'D-2';
             CREATE TEMP TABLE extra AS SELECT * FROM files.deals WHERE deal_id = 'D-3';
             UPDATE extra SET deal_id = 'D-9';
             INSERT INTO files.deals SELECT * FROM extra;",
        )
        .await
        .unwrap();
    // A file gone from the export: its records never arrive as deletes in ordinary runs.
    std::fs::remove_file(h.exports().join("deals/b.csv")).unwrap();
    let (code, report, text) = reconcile(&h.config_path, &env, &[]);
    assert_eq!(code, 3, "{text}");
    let found = drift(report.as_ref().unwrap());
    let text_keys = |class| {
        examples(found, class)
            .iter()
            .map(Key::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(text_keys(Class::Missing), ["D-1"]);
    assert_eq!(text_keys(Class::Stale), ["D-2"]);
    assert_eq!(text_keys(Class::Orphaned), ["D-4", "D-5", "D-9"]);

    let (code, _, text) = reconcile(&h.config_path, &env, &["--repair"]);
    assert_eq!(code, 0, "{text}");
    let (code, report, text) = reconcile(&h.config_path, &env, &[]);
    assert_eq!(code, 0, "{text}");
    assert_eq!(drift(report.as_ref().unwrap()).destination_rows, 3);
    let name: String = h
        .client()
        .await
        .query_one("SELECT name FROM files.deals WHERE deal_id = 'D-1'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        name, "x",
        "the newest version of the key, from the newer file"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn salesforce_drift_including_a_late_stamp_is_found_and_repaired() {
    let harness = Harness::start(
        SimConfig {
            sf_accounts: 450,
            ..Default::default()
        },
        &["contacts"],
        "",
    )
    .await;
    crate::support::write_salesforce_config(&harness, &["Account"], "", "");
    let env = harness.env();
    run(&harness.config_path, &env);
    let (code, report, text) = reconcile(&harness.config_path, &env, &[]);
    assert_eq!(code, 0, "{text}");
    assert!(drift(report.as_ref().unwrap()).is_clean());

    let sf = &harness.sim.salesforce;
    let live: Vec<String> = sf
        .live_records("Account")
        .iter()
        .map(|r| r.id.clone())
        .collect();
    let dest = harness.client().await;
    dest.execute("DELETE FROM crm.\"Account\" WHERE \"Id\" = $1", &[&live[0]])
        .await
        .unwrap();
    dest.execute(
        "UPDATE crm.\"Account\" SET _syncline_version = _syncline_version - interval '1 day' WHERE \"Id\" = $1",
        &[&live[1]],
    )
    .await
    .unwrap();
    dest.batch_execute(&format!(
        "CREATE TEMP TABLE extra AS SELECT * FROM crm.\"Account\" WHERE \"Id\" = '{}';
         UPDATE extra SET \"Id\" = '001zzzzzzzzzzzzzzz';
         INSERT INTO crm.\"Account\" SELECT * FROM extra;",
        live[2]
    ))
    .await
    .unwrap();
    // A late commit: changed with a stamp behind the saved cursor, so incremental runs miss it.
    // Older than the 600 s overlap, so the next incremental window starts after it.
    let late = sf.touch_late(
        "Account",
        2,
        chrono::Utc::now().timestamp_millis() - 1_800_000,
    );
    run(&harness.config_path, &env);

    let (code, report, text) = reconcile(&harness.config_path, &env, &[]);
    assert_eq!(code, 3, "{text}");
    let found = drift(report.as_ref().unwrap());
    let text_keys = |keys: Vec<Key>| {
        let mut keys: Vec<String> = keys.iter().map(Key::to_string).collect();
        keys.sort();
        keys
    };
    assert_eq!(
        text_keys(examples(found, Class::Missing)),
        [live[0].clone()]
    );
    let mut stale = vec![live[1].clone()];
    stale.extend(late.iter().filter(|id| **id != live[0]).cloned());
    stale.sort();
    stale.dedup();
    assert_eq!(
        text_keys(examples(found, Class::Stale)),
        stale,
        "{found:#?}"
    );
    assert_eq!(
        text_keys(examples(found, Class::Orphaned)),
        ["001zzzzzzzzzzzzzzz"]
    );

    let (code, _, text) = reconcile(&harness.config_path, &env, &["--repair"]);
    assert_eq!(code, 0, "{text}");
    let (code, report, text) = reconcile(&harness.config_path, &env, &[]);
    assert_eq!(code, 0, "{text}");
    assert!(drift(report.as_ref().unwrap()).is_clean());
    harness.assert_sf_converged("Account").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hubspot_drift_in_snowflake_is_found_and_repaired() {
    let harness = Harness::start(
        SimConfig {
            contacts: 120,
            ..Default::default()
        },
        &["contacts"],
        "",
    )
    .await;
    let snowflake = crate::support::snowflake::TestSnowflake::start().await;
    let destination = snowflake
        .destination_toml(&harness.stage_dir())
        .replace("${SNOWFLAKE_PASSWORD}", "fakesnow-accepts-any");
    harness.write_hubspot_config(&["contacts"], "", &destination, "");
    let env = harness.env();
    run(&harness.config_path, &env);
    let (code, report, text) = reconcile(&harness.config_path, &env, &[]);
    assert_eq!(code, 0, "{text}");
    assert!(drift(report.as_ref().unwrap()).is_clean());

    for statement in [
        "DELETE FROM \"crm\".\"contacts\" WHERE \"id\" = 3",
        "UPDATE \"crm\".\"contacts\" SET \"_syncline_version\" = DATEADD(day, -1, \"_syncline_version\") WHERE \"id\" = 5",
        "UPDATE \"crm\".\"contacts\" SET \"_syncline_version\" = DATEADD(day, 1, \"_syncline_version\") WHERE \"id\" = 6",
        "INSERT INTO \"crm\".\"contacts\" (\"id\", \"_syncline_version\") VALUES (777777, '2024-01-01 00:00:00+00:00')",
    ] {
        snowflake.rows(statement).await;
    }
    let (code, report, text) = reconcile(&harness.config_path, &env, &[]);
    assert_eq!(code, 3, "{text}");
    let found = drift(report.as_ref().unwrap());
    assert_eq!(examples(found, Class::Missing), ints(&[3]));
    assert_eq!(examples(found, Class::Stale), ints(&[5]));
    assert_eq!(examples(found, Class::Ahead), ints(&[6]));
    assert_eq!(examples(found, Class::Orphaned), ints(&[777777]));

    let (code, report, text) = reconcile(&harness.config_path, &env, &["--repair"]);
    assert_eq!(code, 3, "only the row ahead is left: {text}");
    assert_eq!(report.unwrap().streams[0].unrepaired, 1);
    let (code, report, text) = reconcile(&harness.config_path, &env, &[]);
    assert_eq!(code, 3, "{text}");
    let left = drift(report.as_ref().unwrap());
    assert_eq!(examples(left, Class::Ahead), ints(&[6]));
    assert_eq!(
        left.missing.count + left.stale.count + left.orphaned.count,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_soft_delete_stream_is_repaired_with_soft_deletes() {
    let setup = PgSetup::start_with(
        "replica",
        CURSOR,
        "",
        "[streams.contacts]\ndeletes = \"soft\"",
    )
    .await;
    let env = setup.env();
    run(&setup.config, &env);
    setup
        .source()
        .await
        .batch_execute(
            "DELETE FROM contacts WHERE id IN (30, 31);
             INSERT INTO contacts (id, email, updated_at) VALUES (4000, 'late', now() - interval '2 days');",
        )
        .await
        .unwrap();
    let (code, report, text) = reconcile(&setup.config, &env, &[]);
    assert_eq!(code, 3, "{text}");
    let found = drift(report.as_ref().unwrap());
    assert_eq!(examples(found, Class::Orphaned), ints(&[30, 31]));
    assert_eq!(examples(found, Class::Missing), ints(&[4000]));

    let (code, _, text) = reconcile(&setup.config, &env, &["--repair"]);
    assert_eq!(code, 0, "{text}");
    let kept: i64 = setup
        .dest()
        .await
        .query_one(
            "SELECT count(*) FROM crm.contacts WHERE id IN (30, 31) AND _syncline_deleted_at IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(kept, 2, "soft deletes keep the rows with a delete time");
    let (code, report, text) = reconcile(&setup.config, &env, &[]);
    assert_eq!(code, 0, "{text}");
    assert_eq!(drift(report.as_ref().unwrap()).destination_rows, 299);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdc_stream_into_the_lake_is_compared_by_content_hash_and_repaired() {
    let setup = PgSetup::start(
        "logical",
        "",
        "[destination]\ntype = \"lake\"\nurl = \"file://{dir}/lake\"",
    )
    .await;
    let env = setup.env();
    run(&setup.config, &env);
    // Streamed changes too, decoded from pgoutput's text rather than COPY's binary.
    setup
        .source()
        .await
        .batch_execute(
            "UPDATE contacts SET score = score * 7, seen = seen + interval '0.000001 seconds',
                    amount = amount + 0.01, email = NULL WHERE id % 5 = 0",
        )
        .await
        .unwrap();
    run(&setup.config, &env);
    let (code, report, text) = reconcile(&setup.config, &env, &[]);
    assert_eq!(code, 0, "{text}");
    let report = report.unwrap();
    assert_eq!(
        report.streams[0].compared_by.as_deref(),
        Some("content hash")
    );
    assert!(drift(&report).is_clean(), "{report:#?}");

    // Changes made while the slot was gone never arrive through CDC; reconcile finds them.
    setup
        .source()
        .await
        .batch_execute(
            "SELECT pg_drop_replication_slot('syncline_recon_contacts');
             UPDATE contacts SET email = 'moved' WHERE id = 20;
             DELETE FROM contacts WHERE id = 21;
             INSERT INTO contacts (id, email, updated_at) VALUES (7000, 'new', now());",
        )
        .await
        .unwrap();
    let (code, report, text) = reconcile(&setup.config, &env, &[]);
    assert_eq!(code, 3, "{text}");
    let found = drift(report.as_ref().unwrap());
    assert_eq!(examples(found, Class::Missing), ints(&[7000]));
    assert_eq!(examples(found, Class::Stale), ints(&[20]));
    assert_eq!(examples(found, Class::Orphaned), ints(&[21]));

    let (code, _, text) = reconcile(&setup.config, &env, &["--repair"]);
    assert_eq!(code, 0, "{text}");
    let (code, report, text) = reconcile(&setup.config, &env, &[]);
    assert_eq!(code, 0, "{text}");
    assert!(drift(report.as_ref().unwrap()).is_clean());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repair_that_runs_out_of_api_quota_stops_cleanly_and_the_next_one_finishes() {
    let harness = Harness::start(
        SimConfig {
            sf_accounts: 450,
            ..Default::default()
        },
        &["contacts"],
        "",
    )
    .await;
    crate::support::write_salesforce_config(&harness, &["Account"], "", "");
    let env = harness.env();
    run(&harness.config_path, &env);
    let dest = harness.client().await;
    dest.batch_execute(
        "DELETE FROM crm.\"Account\" WHERE \"Id\" IN (SELECT \"Id\" FROM crm.\"Account\" ORDER BY \"Id\" LIMIT 300)",
    )
    .await
    .unwrap();

    // Describe, one listing page and the first of two fetches (200 ids each) are admitted.
    let sf = &harness.sim.salesforce;
    sf.exhaust_api_after(3);
    let (code, report, text) = reconcile(&harness.config_path, &env, &["--repair"]);
    assert_eq!(code, 4, "{text}");
    let stream = &report.unwrap().streams[0];
    assert!(stream.stopped.is_some(), "{stream:#?}");
    assert_eq!(stream.estimated_repair_calls, Some(2));
    assert_eq!(
        stream.repair.as_ref().unwrap().rows_inserted,
        200,
        "{stream:#?}"
    );

    // The quota is back: the next call repairs the rest.
    let (_, max) = sf.api_usage();
    sf.set_api_usage(0, max);
    let (code, report, text) = reconcile(&harness.config_path, &env, &["--repair"]);
    assert_eq!(code, 0, "{text}");
    assert_eq!(drift(report.as_ref().unwrap()).missing.count, 100);
    let (code, _, text) = reconcile(&harness.config_path, &env, &[]);
    assert_eq!(code, 0, "{text}");
    harness.assert_sf_converged("Account").await;
}

/// Runs `syncline run ARGS`; returns the exit code and the run report.
fn run_args(
    config: &Path,
    env: &[(&str, String)],
    args: &[&str],
) -> (i32, syncline::reconcile::report::RunReport) {
    let report = config
        .parent()
        .unwrap()
        .join(format!("run-{}.json", uuid::Uuid::new_v4()));
    let mut command = Command::new(env!("CARGO_BIN_EXE_syncline"));
    command
        .args(["run", "--config"])
        .arg(config)
        .arg("--report")
        .arg(&report)
        .args(args);
    for (k, v) in env {
        command.env(k, v);
    }
    let output = command.output().expect("run syncline");
    let report = std::fs::read(&report).unwrap_or_else(|_| {
        panic!(
            "no report: {:?}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (
        output.status.code().unwrap_or(-1),
        serde_json::from_slice(&report).expect("report is JSON"),
    )
}

async fn ids_of(client: &tokio_postgres::Client, sql: &str) -> Vec<i64> {
    client
        .query(sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_refresh_deletes_the_rows_the_source_no_longer_has() {
    let setup = PgSetup::start("replica", CURSOR, "").await;
    let env = setup.env();
    run(&setup.config, &env);
    setup
        .source()
        .await
        .batch_execute("DELETE FROM contacts WHERE id IN (8, 9, 250)")
        .await
        .unwrap();
    // Cursor mode does not see deletes in an incremental run.
    run(&setup.config, &env);
    let dest = setup.dest().await;
    let count = "SELECT count(*) FROM crm.contacts";
    assert_eq!(ids_of(&dest, count).await, [300]);

    let (code, report) = run_args(&setup.config, &env, &["--full-refresh"]);
    assert_eq!(code, 0, "{report:#?}");
    let stream = &report.streams[0];
    assert_eq!(stream.rows_deleted, 3, "{stream:#?}");
    assert!(stream.reconciliation.matched, "{stream:#?}");
    assert_eq!(ids_of(&dest, count).await, [297]);
    // Hard deletes leave a tombstone at the row's version.
    let tombstones = ids_of(
        &dest,
        "SELECT key::bigint FROM crm._syncline_tombstones WHERE table_name = 'contacts' ORDER BY 1",
    )
    .await;
    assert_eq!(tombstones, [8, 9, 250]);
    let (code, report, text) = reconcile(&setup.config, &env, &[]);
    assert_eq!(code, 0, "{text}");
    assert_eq!(drift(report.as_ref().unwrap()).destination_rows, 297);

    // A full refresh of an unchanged source deletes nothing more.
    let (code, report) = run_args(&setup.config, &env, &["--full-refresh"]);
    assert_eq!(code, 0, "{report:#?}");
    assert_eq!(report.streams[0].rows_deleted, 0, "{report:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_refresh_marks_the_rows_the_source_no_longer_has_deleted_in_soft_mode() {
    let setup = PgSetup::start_with(
        "replica",
        CURSOR,
        "",
        "[streams.contacts]\ndeletes = \"soft\"",
    )
    .await;
    let env = setup.env();
    run(&setup.config, &env);
    setup
        .source()
        .await
        .batch_execute("DELETE FROM contacts WHERE id IN (30, 31)")
        .await
        .unwrap();
    let (code, report) = run_args(&setup.config, &env, &["--full-refresh"]);
    assert_eq!(code, 0, "{report:#?}");
    assert_eq!(report.streams[0].rows_deleted, 2, "{report:#?}");
    let dest = setup.dest().await;
    let marked = ids_of(
        &dest,
        "SELECT id FROM crm.contacts WHERE _syncline_deleted_at IS NOT NULL ORDER BY id",
    )
    .await;
    assert_eq!(
        marked,
        [30, 31],
        "soft deletes keep the rows with a delete time"
    );
    assert_eq!(
        ids_of(&dest, "SELECT count(*) FROM crm.contacts").await,
        [300]
    );
    let (code, report, text) = reconcile(&setup.config, &env, &[]);
    assert_eq!(code, 0, "{text}");
    assert_eq!(drift(report.as_ref().unwrap()).destination_rows, 298);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_refresh_deletes_the_rows_the_source_no_longer_has_in_the_lake() {
    let setup = PgSetup::start(
        "replica",
        CURSOR,
        "[destination]\ntype = \"lake\"\nurl = \"file://{dir}/lake\"",
    )
    .await;
    let env = setup.env();
    run(&setup.config, &env);
    setup
        .source()
        .await
        .batch_execute("DELETE FROM contacts WHERE id IN (8, 9)")
        .await
        .unwrap();
    let (code, report) = run_args(&setup.config, &env, &["--full-refresh"]);
    assert_eq!(code, 0, "{report:#?}");
    assert_eq!(report.streams[0].rows_deleted, 2, "{report:#?}");
    assert!(report.streams[0].reconciliation.matched, "{report:#?}");
    let (code, report, text) = reconcile(&setup.config, &env, &[]);
    assert_eq!(code, 0, "{text}");
    let after = drift(report.as_ref().unwrap());
    assert!(after.is_clean(), "{after:#?}");
    assert_eq!(after.destination_rows, 298);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hubspot_full_refresh_deletes_purged_records_unless_the_quota_stops_it() {
    let harness = Harness::start(
        SimConfig {
            contacts: 450,
            rate_limit: Some(syncline::sim::RateLimit {
                per_ten_seconds: 100_000,
                search_per_second: 100_000,
                daily: 1_000_000,
            }),
            ..Default::default()
        },
        &["contacts"],
        "",
    )
    .await;
    let env: Vec<(&str, String)> = harness.env();
    run(&harness.config_path, &env);
    let sim = &harness.sim.hubspot;
    let archived = sim.archive("contacts", 4);
    assert_eq!(sim.purge_archived("contacts"), archived);
    let dest = harness.client().await;
    let purged_left = format!(
        "SELECT count(*) FROM crm.contacts WHERE id IN ({})",
        archived
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );

    // The daily limit is met mid-read: what was read merges, and nothing it did not see goes.
    sim.set_daily_limit(sim.request_count() as u32 + 3);
    let (code, report) = run_args(&harness.config_path, &env, &["--full-refresh"]);
    assert_eq!(code, 4, "{report:#?}");
    let stream = &report.streams[0];
    assert!(stream.stopped.is_some(), "{stream:#?}");
    assert_eq!(stream.rows_deleted, 0, "{stream:#?}");
    assert_eq!(
        ids_of(&dest, "SELECT count(*) FROM crm.contacts").await,
        [450]
    );

    sim.set_daily_limit(1_000_000);
    let (code, report) = run_args(&harness.config_path, &env, &["--full-refresh"]);
    assert_eq!(code, 0, "{report:#?}");
    assert_eq!(report.streams[0].rows_deleted, 4, "{report:#?}");
    assert_eq!(ids_of(&dest, &purged_left).await, [0]);
    harness.assert_converged("contacts", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hubspot_full_refresh_deletes_purged_records_in_snowflake() {
    let harness = Harness::start(
        SimConfig {
            contacts: 120,
            ..Default::default()
        },
        &["contacts"],
        "",
    )
    .await;
    let snowflake = crate::support::snowflake::TestSnowflake::start().await;
    let destination = snowflake
        .destination_toml(&harness.stage_dir())
        .replace("${SNOWFLAKE_PASSWORD}", "fakesnow-accepts-any");
    harness.write_hubspot_config(&["contacts"], "", &destination, "");
    let env = harness.env();
    run(&harness.config_path, &env);
    let sim = &harness.sim.hubspot;
    let archived = sim.archive("contacts", 3);
    assert_eq!(sim.purge_archived("contacts"), archived);

    let (code, report) = run_args(&harness.config_path, &env, &["--full-refresh"]);
    assert_eq!(code, 0, "{report:#?}");
    assert_eq!(report.streams[0].rows_deleted, 3, "{report:#?}");
    let (code, report, text) = reconcile(&harness.config_path, &env, &[]);
    assert_eq!(code, 0, "{text}");
    let after = drift(report.as_ref().unwrap());
    assert!(after.is_clean(), "{after:#?}");
    assert_eq!(after.destination_rows, 117);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hubspot_full_refresh_marks_purged_records_deleted_in_snowflake() {
    let harness = Harness::start(
        SimConfig {
            contacts: 120,
            ..Default::default()
        },
        &["contacts"],
        "",
    )
    .await;
    let snowflake = crate::support::snowflake::TestSnowflake::start().await;
    let destination = snowflake
        .destination_toml(&harness.stage_dir())
        .replace("${SNOWFLAKE_PASSWORD}", "fakesnow-accepts-any");
    harness.write_hubspot_config(
        &["contacts"],
        "",
        &destination,
        "[streams.contacts]\ndeletes = \"soft\"",
    );
    let env = harness.env();
    run(&harness.config_path, &env);
    let sim = &harness.sim.hubspot;
    let archived = sim.archive("contacts", 3);
    assert_eq!(sim.purge_archived("contacts"), archived);

    let (code, report) = run_args(&harness.config_path, &env, &["--full-refresh"]);
    assert_eq!(code, 0, "{report:#?}");
    assert_eq!(report.streams[0].rows_deleted, 3, "{report:#?}");
    let marked = snowflake
        .rows(
            "SELECT \"id\" FROM \"crm\".\"contacts\" WHERE \"_syncline_deleted_at\" IS NOT NULL ORDER BY 1",
        )
        .await;
    let expected: Vec<Vec<Option<String>>> = archived
        .iter()
        .map(|id| vec![Some(id.to_string())])
        .collect();
    assert_eq!(marked, expected);
    let (code, report, text) = reconcile(&harness.config_path, &env, &[]);
    assert_eq!(code, 0, "{text}");
    assert_eq!(drift(report.as_ref().unwrap()).destination_rows, 117);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_float4_column_stages_one_value_from_the_snapshot_and_the_stream() {
    let setup = PgSetup::start("logical", "", "").await;
    setup
        .source()
        .await
        .batch_execute(
            "ALTER TABLE contacts ADD COLUMN ratio real; UPDATE contacts SET ratio = 1.1",
        )
        .await
        .unwrap();
    let env = setup.env();
    run(&setup.config, &env);
    // The same float4 value again, now decoded from pgoutput's text rather than COPY's binary.
    setup
        .source()
        .await
        .batch_execute("UPDATE contacts SET ratio = 1.1, email = 'streamed' WHERE id % 5 = 0")
        .await
        .unwrap();
    run(&setup.config, &env);
    let ratios: Vec<f64> = setup
        .dest()
        .await
        .query("SELECT DISTINCT ratio FROM crm.contacts", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(ratios, [f64::from(1.1f32)]);
    let (code, report, text) = reconcile(&setup.config, &env, &[]);
    assert_eq!(code, 0, "{text}");
    assert!(drift(report.as_ref().unwrap()).is_clean(), "{report:#?}");
}

/// Runs `syncline status --config CONFIG [--json]`; returns stdout.
fn status(config: &Path, env: &[(&str, String)], json: bool) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_syncline"));
    command.args(["status", "--config"]).arg(config);
    if json {
        command.arg("--json");
    }
    for (k, v) in env {
        command.env(k, v);
    }
    let output = command.output().expect("run syncline status");
    assert!(
        output.status.success(),
        "syncline status: {:?}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Moves the stream's saved last reconcile `hours` into the past, as if it ran then.
fn age_last_reconcile(config: &Path, stream: &str, hours: i64) {
    let path = config
        .parent()
        .unwrap()
        .join("stage/recon/_state")
        .join(format!("{stream}.json"));
    let mut state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let at = chrono::Utc::now() - chrono::Duration::hours(hours);
    state["last_reconcile"]["at"] = serde_json::json!(at.to_rfc3339());
    std::fs::write(&path, serde_json::to_vec_pretty(&state).unwrap()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_reconcile_runs_when_due_and_its_drift_fails_the_run() {
    use syncline::reconcile::report::ReconcileResult;
    let setup = PgSetup::start_with("replica", CURSOR, "", "[reconcile]\nevery = \"1h\"").await;
    let env = setup.env();
    // The first run has no last reconcile: it reconciles after its load.
    let (code, report) = run_args(&setup.config, &env, &[]);
    assert_eq!(code, 0, "{report:#?}");
    let first = report.streams[0].reconcile.as_ref().expect("reconciled");
    assert_eq!(first.result, ReconcileResult::Clean, "{first:#?}");

    setup
        .dest()
        .await
        .batch_execute("DELETE FROM crm.contacts WHERE id = 10")
        .await
        .unwrap();
    // Within the hour: no reconcile, so the drift goes unseen.
    let (code, report) = run_args(&setup.config, &env, &[]);
    assert_eq!(code, 0, "{report:#?}");
    assert!(report.streams[0].reconcile.is_none(), "{report:#?}");

    // An hour later it is due again, finds the row missing, and the run exits 3.
    age_last_reconcile(&setup.config, "contacts", 2);
    let (code, report) = run_args(&setup.config, &env, &[]);
    assert_eq!(code, 3, "{report:#?}");
    let found = report.streams[0].reconcile.as_ref().expect("reconciled");
    assert_eq!(found.result, ReconcileResult::Drift, "{found:#?}");
    assert_eq!((found.missing, found.orphaned), (1, 0), "{found:#?}");
    assert_eq!(
        report.streams[0].status,
        syncline::reconcile::report::Status::Success
    );

    let text = status(&setup.config, &env, false);
    assert!(text.contains("last reconcile: drift at"), "{text}");
    assert!(text.contains("missing 1"), "{text}");
    let json: serde_json::Value = serde_json::from_str(&status(&setup.config, &env, true)).unwrap();
    assert_eq!(json[0]["last_reconcile"]["result"], "drift", "{json:#}");
    assert_eq!(json[0]["last_reconcile"]["missing"], 1, "{json:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_reconcile_with_repair_repairs_drift_in_run() {
    use syncline::reconcile::report::ReconcileResult;
    let setup = PgSetup::start_with(
        "replica",
        CURSOR,
        "",
        "[reconcile]\nevery = \"24h\"\nrepair = true",
    )
    .await;
    let env = setup.env();
    let (code, report) = run_args(&setup.config, &env, &[]);
    assert_eq!(code, 0, "{report:#?}");
    assert_eq!(
        report.streams[0].reconcile.as_ref().map(|r| r.result),
        Some(ReconcileResult::Clean)
    );

    let dest = setup.dest().await;
    dest.batch_execute(
        "DELETE FROM crm.contacts WHERE id = 10;
         CREATE TEMP TABLE extra AS SELECT * FROM crm.contacts WHERE id = 50;
         UPDATE extra SET id = 99999;
         INSERT INTO crm.contacts SELECT * FROM extra;",
    )
    .await
    .unwrap();
    age_last_reconcile(&setup.config, "contacts", 25);
    let (code, report) = run_args(&setup.config, &env, &[]);
    assert_eq!(code, 0, "{report:#?}");
    let repaired = report.streams[0].reconcile.as_ref().expect("reconciled");
    assert_eq!(repaired.result, ReconcileResult::Repaired, "{repaired:#?}");
    assert_eq!(
        (repaired.missing, repaired.orphaned),
        (1, 1),
        "{repaired:#?}"
    );
    assert_eq!(repaired.repaired_rows, 2, "{repaired:#?}");
    assert_eq!(
        ids_of(&dest, "SELECT id FROM crm.contacts WHERE id IN (10, 99999)").await,
        [10]
    );
    let text = status(&setup.config, &env, false);
    assert!(text.contains("last reconcile: repaired at"), "{text}");

    let (code, report, text) = reconcile(&setup.config, &env, &[]);
    assert_eq!(code, 0, "{text}");
    assert!(drift(report.as_ref().unwrap()).is_clean());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_emptied_is_emptied_in_the_destination_only_by_an_explicit_repair() {
    let setup = PgSetup::start("replica", CURSOR, "").await;
    let env = setup.env();
    run(&setup.config, &env);
    setup
        .source()
        .await
        .batch_execute("DELETE FROM contacts")
        .await
        .unwrap();
    let dest = setup.dest().await;
    let count = "SELECT count(*) FROM crm.contacts";
    // A full refresh that reads nothing merges nothing: an empty answer alone wipes no table.
    let (code, report) = run_args(&setup.config, &env, &["--full-refresh"]);
    assert_eq!(code, 0, "{report:#?}");
    assert_eq!(ids_of(&dest, count).await, [300]);
    // Reconcile says every row is orphaned; --repair deletes them.
    let (code, report, text) = reconcile(&setup.config, &env, &["--repair"]);
    assert_eq!(code, 0, "{text}");
    assert_eq!(drift(report.as_ref().unwrap()).orphaned.count, 300);
    assert_eq!(ids_of(&dest, count).await, [0]);
    let (code, _, text) = reconcile(&setup.config, &env, &[]);
    assert_eq!(code, 0, "{text}");
}
