//! The postgres source against real PostgreSQL as source and destination (two databases on
//! one throwaway cluster), run through the `syncline` binary: CDC snapshot under concurrent
//! writes, streaming, deletes, a column added mid-stream, unchanged TOAST values, a killed
//! run, configuration errors, and cursor mode.

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use syncline::reconcile::report::{RunReport, Status};

use crate::support::{TestPostgres, config_toml, connect};

/// Every compared column, as the same text expression on both sides.
const COMPARED: &str = "id::text, email, score::text, active::text, born::text, \
     extract(epoch FROM updated_at)::text, extract(epoch FROM seen)::text, md5(big), n::text";

struct Setup {
    /// Kept until the test ends: dropping it stops the cluster.
    _pg: TestPostgres,
    dir: tempfile::TempDir,
    source_url: String,
    dest_url: String,
    config: PathBuf,
}

impl Setup {
    async fn start(wal_level: &'static str, source_extra: &str, extra: &str) -> Setup {
        let pg = tokio::task::spawn_blocking(move || TestPostgres::start_with_wal_level(wal_level))
            .await
            .unwrap();
        let source_url = pg.create_database("source");
        let dest_url = pg.create_database("dest");
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("pg.toml");
        let source = format!(
            "[source]\ntype = \"postgres\"\nurl = \"${{SOURCE_URL}}\"\nstreams = [\"contacts\"]\n{source_extra}"
        );
        let destination = if extra.contains("[destination]") {
            ""
        } else {
            "[destination]\ntype = \"postgres\"\nurl = \"${DEST_URL}\"\nschema = \"crm\""
        };
        let text = config_toml(
            "name = \"pgsync\"\nbatch_rows = 500",
            &dir.path().join("stage"),
            &source,
            destination,
            extra,
        );
        std::fs::write(&config, text).unwrap();
        let setup = Setup {
            _pg: pg,
            dir,
            source_url,
            dest_url,
            config,
        };
        setup
            .source()
            .await
            .batch_execute(
                "CREATE TABLE contacts (
                    id bigint PRIMARY KEY,
                    email text,
                    score numeric(12, 2),
                    active boolean,
                    born date,
                    updated_at timestamptz NOT NULL DEFAULT now(),
                    seen timestamp,
                    big text,
                    n integer
                );
                INSERT INTO contacts (id, email, score, active, born, updated_at, seen, big, n)
                SELECT i, 'c' || i || '@example.com', i * 1.25, i % 2 = 0,
                       date '1980-01-01' + i, now() - (i || ' minutes')::interval,
                       timestamp '2024-02-29 12:34:56.789012' + (i || ' seconds')::interval,
                       CASE WHEN i % 7 = 0 THEN NULL ELSE repeat('x', i % 50) END, i
                FROM generate_series(1, 3000) AS i;",
            )
            .await
            .unwrap();
        setup
    }

    async fn source(&self) -> tokio_postgres::Client {
        connect(&self.source_url).await
    }

    async fn dest(&self) -> tokio_postgres::Client {
        connect(&self.dest_url).await
    }

    /// Runs `syncline` with `args`; returns the exit status, the report and stderr.
    fn syncline(
        &self,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> (std::process::ExitStatus, Option<RunReport>, String) {
        let report = self
            .dir
            .path()
            .join(format!("report-{}.json", uuid::Uuid::new_v4()));
        let mut command = Command::new(env!("CARGO_BIN_EXE_syncline"));
        command
            .arg("run")
            .arg("--config")
            .arg(&self.config)
            .arg("--report")
            .arg(&report)
            .args(args)
            .env("SOURCE_URL", &self.source_url)
            .env("DEST_URL", &self.dest_url);
        for (k, v) in env {
            command.env(k, v);
        }
        let output = command.output().expect("run syncline");
        let report = std::fs::read(&report)
            .ok()
            .map(|b| serde_json::from_slice(&b).expect("report is JSON"));
        (
            output.status,
            report,
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// Runs `syncline COMMAND --config ...` (status, check).
    fn command(&self, command: &str) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_syncline"))
            .args([command, "--config"])
            .arg(&self.config)
            .env("SOURCE_URL", &self.source_url)
            .env("DEST_URL", &self.dest_url)
            .output()
            .expect("run syncline")
    }

    async fn run_ok(&self, args: &[&str]) -> RunReport {
        let (status, report, stderr) = self.syncline(args, &[]);
        assert!(
            status.success(),
            "syncline {args:?}: {status:?}\n{stderr}\n{report:#?}"
        );
        report.expect("report")
    }

    async fn assert_converged(&self, columns: &str) {
        self.assert_converged_but(columns, &[]).await;
    }

    /// Like [`Setup::assert_converged`], with the source rows of `ids` left out (dead letters).
    async fn assert_converged_but(&self, columns: &str, ids: &[i64]) {
        let source = rows(
            &self.source().await,
            &format!(
                "SELECT {columns} FROM contacts WHERE NOT id = ANY('{{{}}}'::bigint[]) ORDER BY id",
                ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
            ),
        )
        .await;
        let dest = rows(
            &self.dest().await,
            &format!("SELECT {columns} FROM crm.contacts ORDER BY id"),
        )
        .await;
        assert_eq!(source.len(), dest.len(), "row counts differ");
        for (s, d) in source.iter().zip(&dest) {
            assert_eq!(s, d, "rows differ");
        }
    }

    async fn ledger_count(&self) -> i64 {
        self.dest()
            .await
            .query_one("SELECT count(*) FROM crm._syncline_loads", &[])
            .await
            .unwrap()
            .get(0)
    }

    async fn slot_confirmed(&self) -> Option<String> {
        self.source()
            .await
            .query_opt(
                "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = \
                 'syncline_pgsync_contacts'",
                &[],
            )
            .await
            .unwrap()
            .map(|row| row.get(0))
    }
}

async fn rows(client: &tokio_postgres::Client, query: &str) -> Vec<Vec<Option<String>>> {
    client
        .query(query, &[])
        .await
        .unwrap()
        .iter()
        .map(|row| (0..row.len()).map(|i| row.get(i)).collect())
        .collect()
}

/// Inserts, updates and deletes rows in a loop until `stop` is set; returns how many
/// statements committed.
async fn keep_writing(url: String, stop: Arc<AtomicBool>) -> u64 {
    let client = connect(&url).await;
    let mut round = 0u64;
    while !stop.load(Ordering::Relaxed) {
        round += 1;
        let id = 10_000 + round as i64;
        client
            .batch_execute(&format!(
                "BEGIN;
                 INSERT INTO contacts (id, email, n) VALUES ({id}, 'new{round}@example.com', {round});
                 UPDATE contacts SET email = email || '.u', score = score + 1, updated_at = now()
                  WHERE id = {};
                 UPDATE contacts SET n = n + 1 WHERE id = {id};
                 DELETE FROM contacts WHERE id = {};
                 COMMIT;",
                1 + (round * 7) % 3000,
                1 + (round * 13) % 3000,
            ))
            .await
            .unwrap();
    }
    round
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdc_snapshot_under_writes_then_streams_until_equal() {
    let setup = Setup::start("logical", "", "").await;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(keep_writing(setup.source_url.clone(), stop.clone()));

    let first = tokio::task::block_in_place(|| setup.syncline(&[], &[]));
    stop.store(true, Ordering::Relaxed);
    let rounds = writer.await.unwrap();
    assert!(first.0.success(), "{}\n{:#?}", first.2, first.1);
    assert!(rounds > 0, "the writer ran during the snapshot");
    // Streaming catches up with everything written during and after the snapshot.
    let second = setup.run_ok(&[]).await;
    assert_eq!(second.streams[0].status, Status::Success);
    setup.assert_converged(COMPARED).await;
    let confirmed = setup.slot_confirmed().await.expect("the slot exists");

    // Deletes, an update of every kind of column, and a change of the key.
    let to_delete: i64 = setup
        .source()
        .await
        .query_one(
            "SELECT count(*) FROM contacts WHERE id BETWEEN 100 AND 149 OR id = 300",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    setup
        .source()
        .await
        .batch_execute(
            "DELETE FROM contacts WHERE id BETWEEN 100 AND 149;
             UPDATE contacts SET active = NOT active, born = NULL, seen = now()::timestamp
              WHERE id BETWEEN 200 AND 260;
             UPDATE contacts SET id = 99999 WHERE id = 300;
             BEGIN; UPDATE contacts SET email = 'twice-1' WHERE id = 400;
                    UPDATE contacts SET email = 'twice-2' WHERE id = 400;
                    DELETE FROM contacts WHERE id = 401;
                    INSERT INTO contacts (id, email) VALUES (401, 'reborn'); COMMIT;",
        )
        .await
        .unwrap();
    let third = setup.run_ok(&[]).await;
    assert_eq!(
        third.streams[0].rows_deleted, to_delete as u64,
        "{third:#?}"
    );
    setup.assert_converged(COMPARED).await;
    assert_ne!(
        setup.slot_confirmed().await.unwrap(),
        confirmed,
        "the slot advanced"
    );

    // A column added on the source reaches the destination.
    setup
        .source()
        .await
        .batch_execute(
            "ALTER TABLE contacts ADD COLUMN note text;
             UPDATE contacts SET note = 'note ' || id WHERE id % 10 = 0;",
        )
        .await
        .unwrap();
    setup.run_ok(&[]).await;
    setup.assert_converged(&format!("{COMPARED}, note")).await;

    // An unchanged TOASTed value survives an update of another column. The rows are made
    // sure of first: the writer of the first phase deletes ids all over 1..3000, depending on
    // how many rounds it ran.
    let big: String = (0..20_000)
        .map(|i| char::from_digit((i * 7919 % 16) as u32, 16).unwrap())
        .collect();
    let random_hex = "SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 700)";
    setup
        .source()
        .await
        .batch_execute(&format!(
            "INSERT INTO contacts (id, email) VALUES (500, 'a'), (501, 'b'), (502, 'c')
               ON CONFLICT (id) DO NOTHING;
             UPDATE contacts SET big = ({random_hex}) WHERE id IN (500, 501);
             UPDATE contacts SET big = '{big}' WHERE id = 502;"
        ))
        .await
        .unwrap();
    setup.run_ok(&[]).await;
    setup
        .source()
        .await
        .batch_execute(
            "UPDATE contacts SET email = 'toast@example.com' WHERE id IN (500, 501, 502)",
        )
        .await
        .unwrap();
    setup.run_ok(&[]).await;
    setup.assert_converged(&format!("{COMPARED}, note")).await;
    let dest_big: i32 = setup
        .dest()
        .await
        .query_one("SELECT length(big) FROM crm.contacts WHERE id = 500", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(dest_big, 22_400, "the TOASTed value is whole");

    // `status` shows the slot's retained WAL.
    let status = setup.command("status");
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{text}");
    assert!(text.contains("slot syncline_pgsync_contacts"), "{text}");
    assert!(text.contains("of WAL retained"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdc_run_killed_mid_stream_resumes_from_the_confirmed_lsn() {
    let setup = Setup::start("logical", "", "").await;
    setup.run_ok(&[]).await;
    let ledger_before = setup.ledger_count().await;
    let confirmed_before = setup.slot_confirmed().await.unwrap();
    setup
        .source()
        .await
        .batch_execute(
            "UPDATE contacts SET n = n + 1000, updated_at = now();
             DELETE FROM contacts WHERE id % 11 = 0;",
        )
        .await
        .unwrap();

    let (status, report, _) = setup.syncline(&[], &[("SYNCLINE_CRASH_AT", "cdc-mid-stream")]);
    assert_eq!(status.signal(), Some(9), "killed mid-stream: {status:?}");
    assert!(report.is_none());
    assert_eq!(setup.ledger_count().await, ledger_before, "nothing merged");
    assert_eq!(
        setup.slot_confirmed().await.unwrap(),
        confirmed_before,
        "the slot did not move"
    );

    // Killed after the merge but before the state commit: the slot must not move either.
    let (status, _, _) = setup.syncline(&[], &[("SYNCLINE_CRASH_AT", "after-merge")]);
    assert_eq!(status.signal(), Some(9));
    assert_eq!(setup.ledger_count().await, ledger_before + 1);
    assert_eq!(setup.slot_confirmed().await.unwrap(), confirmed_before);

    let report = setup.run_ok(&[]).await;
    assert!(report.streams[0].recovered, "{report:#?}");
    setup.assert_converged(COMPARED).await;
    // The recovered load was not applied twice; the re-run read the same changes again and
    // changed nothing (same versions).
    let ledger_after = setup.ledger_count().await;
    assert!(
        ledger_after == ledger_before + 1 || ledger_after == ledger_before + 2,
        "{ledger_before} -> {ledger_after}"
    );
    assert_eq!(report.streams[0].rows_updated, 0, "{report:#?}");
    assert_eq!(report.streams[0].rows_inserted, 0, "{report:#?}");
    assert_ne!(setup.slot_confirmed().await.unwrap(), confirmed_before);
    // Every updated row carries the WAL position of its own change: one version per row.
    let row = setup
        .dest()
        .await
        .query_one(
            "SELECT count(*), count(DISTINCT _syncline_version) FROM crm.contacts WHERE n > 1000",
            &[],
        )
        .await
        .unwrap();
    let (rows, versions): (i64, i64) = (row.get(0), row.get(1));
    assert_eq!(versions, rows, "each change its own version");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdc_soft_deletes_keep_the_row_marked() {
    let setup = Setup::start("logical", "", "[streams.contacts]\ndeletes = \"soft\"").await;
    setup.run_ok(&[]).await;
    setup
        .source()
        .await
        .batch_execute(
            "DELETE FROM contacts WHERE id <= 10; UPDATE contacts SET id = 7777 WHERE id = 20;",
        )
        .await
        .unwrap();
    let report = setup.run_ok(&[]).await;
    assert_eq!(report.streams[0].rows_deleted, 11, "{report:#?}");
    let deleted: Vec<i64> = setup
        .dest()
        .await
        .query(
            "SELECT id FROM crm.contacts WHERE _syncline_deleted_at IS NOT NULL ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(deleted, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 20]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_level_replica_is_a_configuration_error() {
    let setup = Setup::start("replica", "", "").await;
    let (status, report, stderr) = setup.syncline(&[], &[]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    let error = report
        .and_then(|r| r.streams[0].error.clone())
        .unwrap_or(stderr);
    assert!(error.contains("wal_level = logical"), "{error}");
    assert!(error.contains("mode = \"cursor\""), "{error}");

    let check = setup.command("check");
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert_eq!(check.status.code(), Some(2), "{stdout}");
    assert!(stdout.contains("wal_level = logical"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_slot_is_a_clear_error_and_a_full_refresh_recovers() {
    let setup = Setup::start("logical", "", "").await;
    let check = setup.command("check");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    setup.run_ok(&[]).await;
    setup
        .source()
        .await
        .batch_execute("SELECT pg_drop_replication_slot('syncline_pgsync_contacts')")
        .await
        .unwrap();
    let (status, report, stderr) = setup.syncline(&[], &[]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    let error = report.unwrap().streams[0].error.clone().unwrap();
    assert!(error.contains("cannot be read"), "{error}");
    assert!(error.contains("--full-refresh --streams"), "{error}");

    setup
        .source()
        .await
        .batch_execute("UPDATE contacts SET email = 'after' WHERE id < 5")
        .await
        .unwrap();
    setup.run_ok(&["--full-refresh"]).await;
    setup.run_ok(&[]).await;
    setup.assert_converged(COMPARED).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursor_mode_reads_incrementally_with_inclusive_dedup() {
    let setup = Setup::start(
        "replica",
        "mode = \"cursor\"\n[source.tables.contacts]\ncursor_column = \"updated_at\"",
        "",
    )
    .await;
    let first = setup.run_ok(&[]).await;
    assert_eq!(first.streams[0].rows_inserted, 3000);
    setup.assert_converged(COMPARED).await;

    // Nothing changed: the boundary rows are read again, and nothing is rewritten.
    let again = setup.run_ok(&[]).await;
    assert!(again.streams[0].rows_extracted >= 1, "{again:#?}");
    assert_eq!(again.streams[0].rows_updated, 0, "{again:#?}");

    setup
        .source()
        .await
        .batch_execute(
            "UPDATE contacts SET email = 'moved', updated_at = now() + interval '1 second'
              WHERE id <= 25;
             INSERT INTO contacts (id, email, updated_at) VALUES (5000, 'new', now() + interval '1 second');",
        )
        .await
        .unwrap();
    let third = setup.run_ok(&[]).await;
    assert_eq!(third.streams[0].rows_updated, 25, "{third:#?}");
    assert_eq!(third.streams[0].rows_inserted, 1, "{third:#?}");
    assert_eq!(third.streams[0].rows_extracted, 26, "{third:#?}");
    setup.assert_converged(COMPARED).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdc_into_the_lake_keeps_microseconds_and_converges() {
    let setup = Setup::start("logical", "", "[destination]\ntype = \"lake\"").await;
    setup.run_ok(&[]).await;
    setup
        .source()
        .await
        .batch_execute(
            "UPDATE contacts SET seen = seen + interval '1.000001 seconds', n = n + 1
              WHERE id % 3 = 0;
             DELETE FROM contacts WHERE id % 17 = 0;
             INSERT INTO contacts (id, email, seen) VALUES (7000, 'new', '2025-01-01 00:00:00.000007');",
        )
        .await
        .unwrap();
    let report = setup.run_ok(&[]).await;
    assert!(report.streams[0].reconciliation.matched, "{report:#?}");

    let source = rows(
        &setup.source().await,
        "SELECT id::text, email, n::text, score::text, md5(big), \
                ((extract(epoch FROM seen) * 1000000)::bigint)::text \
         FROM contacts ORDER BY contacts.id",
    )
    .await;
    let text = std::fs::read_to_string(&setup.config).unwrap();
    let config = syncline::config::Config::parse(&text, &setup.config, &|name| match name {
        "SOURCE_URL" => Some(setup.source_url.clone()),
        _ => None,
    })
    .unwrap();
    let ctx = syncline::transform::lake_session(&config).await.unwrap();
    let batches = syncline::transform::query(
        &ctx,
        "SELECT CAST(id AS VARCHAR) AS k, email AS e, CAST(n AS VARCHAR) AS n_text, \
                score AS s, md5(big) AS b, CAST(CAST(seen AS BIGINT) AS VARCHAR) AS seen_us \
         FROM contacts ORDER BY id",
    )
    .await
    .unwrap();
    let mut lake = Vec::new();
    for batch in &batches {
        for row in 0..batch.num_rows() {
            lake.push(
                batch
                    .columns()
                    .iter()
                    .map(|column| {
                        (!arrow::array::Array::is_null(column, row)).then(|| {
                            arrow::util::display::array_value_to_string(column, row).unwrap()
                        })
                    })
                    .collect::<Vec<_>>(),
            );
        }
    }
    assert_eq!(source.len(), lake.len(), "row counts differ");
    for (s, l) in source.iter().zip(&lake) {
        assert_eq!(s, l, "rows differ");
    }
}

/// A stream's `table` changed in the config: the publication still covers the old table, so
/// streaming from the slot would read nothing of the new one, silently. The run says so
/// (exit 2); a full refresh repairs the publication, and the stream then follows the new table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publication_that_covers_another_table_is_caught_and_repaired() {
    let setup = Setup::start("logical", "", "").await;
    setup.run_ok(&[]).await;
    setup
        .source()
        .await
        .batch_execute(
            "CREATE TABLE people (LIKE contacts INCLUDING ALL);
             INSERT INTO people SELECT * FROM contacts WHERE id <= 100;
             UPDATE people SET email = 'p' || id;",
        )
        .await
        .unwrap();
    let mut config = std::fs::read_to_string(&setup.config).unwrap();
    config.push_str("\n[source.tables.contacts]\ntable = \"people\"\n");
    std::fs::write(&setup.config, config).unwrap();
    setup
        .source()
        .await
        .batch_execute("UPDATE people SET email = 'changed' WHERE id = 7")
        .await
        .unwrap();

    let (status, report, stderr) = setup.syncline(&[], &[]);
    assert_eq!(status.code(), Some(2), "{stderr}\n{report:#?}");
    assert!(stderr.contains("publication"), "{stderr}");
    assert!(
        stderr.contains("--full-refresh --streams contacts"),
        "{stderr}"
    );

    setup.run_ok(&["--full-refresh"]).await;
    setup
        .source()
        .await
        .batch_execute("UPDATE people SET email = 'streamed' WHERE id = 8")
        .await
        .unwrap();
    setup.run_ok(&[]).await;
    let dest = setup.dest().await;
    let email = |id: i64| {
        let dest = &dest;
        async move {
            dest.query_one("SELECT email FROM crm.contacts WHERE id = $1", &[&id])
                .await
                .unwrap()
                .get::<_, String>(0)
        }
    };
    assert_eq!(email(7).await, "changed");
    assert_eq!(email(8).await, "streamed");
    assert_eq!(email(9).await, "p9");
}

/// A table whose deletes carry no key (REPLICA IDENTITY NOTHING) cannot be followed by CDC,
/// and once a publication covers it PostgreSQL refuses the application's deletes on it. It is
/// a configuration error at `check` and at `run`, before any publication is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_without_replica_identity_is_refused_before_a_publication_exists() {
    let setup = Setup::start("logical", "", "").await;
    let source = setup.source().await;
    source
        .batch_execute("ALTER TABLE contacts REPLICA IDENTITY NOTHING")
        .await
        .unwrap();

    let check = setup.command("check");
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert_eq!(check.status.code(), Some(2), "{stdout}");
    assert!(stdout.contains("REPLICA IDENTITY FULL"), "{stdout}");
    let (status, _, stderr) = setup.syncline(&[], &[]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("replica identity"), "{stderr}");
    let publications: i64 = source
        .query_one("SELECT count(*) FROM pg_publication", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        publications, 0,
        "no publication, so the application's deletes still work"
    );
    source
        .batch_execute("DELETE FROM contacts WHERE id = 1")
        .await
        .unwrap();

    source
        .batch_execute("ALTER TABLE contacts REPLICA IDENTITY FULL")
        .await
        .unwrap();
    setup.run_ok(&[]).await;
    setup.assert_converged(COMPARED).await;
}

/// One transaction that changes one key many times (a delete and a re-insert among them) and
/// touches 200k other rows: the key ends at its last value, and every row at its own. The
/// version of a change is its own WAL position, so changes of one key never tie, however
/// many there are, and nothing is held per key while a transaction is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdc_a_key_changed_many_times_in_one_huge_transaction_ends_at_its_last_value() {
    let setup = Setup::start("logical", "", "").await;
    setup.run_ok(&[]).await;
    let source = setup.source().await;
    source
        .batch_execute(
            "INSERT INTO contacts (id, email, n)
             SELECT i, 'bulk' || i, i FROM generate_series(100001, 300000) AS i",
        )
        .await
        .unwrap();
    let mut transaction = String::from("BEGIN;\nUPDATE contacts SET n = n + 1;\n");
    for round in 1..=14 {
        transaction.push_str(&format!(
            "UPDATE contacts SET email = 'v{round}' WHERE id = 5;\n"
        ));
    }
    // The 15th change and later: a delete, then the key comes back and changes again.
    transaction.push_str("DELETE FROM contacts WHERE id = 5;\n");
    transaction.push_str("INSERT INTO contacts (id, email, n) VALUES (5, 'reborn', 0);\n");
    for round in 1..=8 {
        transaction.push_str(&format!(
            "UPDATE contacts SET email = 'last{round}', n = n + 1 WHERE id = 5;\n"
        ));
    }
    transaction.push_str("COMMIT;");
    source.batch_execute(&transaction).await.unwrap();

    let report = setup.run_ok(&[]).await;
    assert_eq!(report.streams[0].status, Status::Success, "{report:#?}");
    setup.assert_converged(COMPARED).await;
    let email: String = setup
        .dest()
        .await
        .query_one("SELECT email FROM crm.contacts WHERE id = 5", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(email, "last8");
}

/// A big transaction on a table the stream does not follow sends no change at all, only
/// keepalives while the server reads past it. Spilled to disk in small pieces (a small
/// `logical_decoding_work_mem`), a million rows keep the server busy for a minute or more.
/// The run still reaches the WAL end it saw at the start, loads the change after the backlog,
/// and the slot moves past the backlog, so the next run does not read it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdc_a_backlog_of_unrelated_wal_is_read_past_and_confirmed() {
    let setup = Setup::start("logical", "", "").await;
    setup.run_ok(&[]).await;
    let source = setup.source().await;
    source
        .batch_execute("ALTER SYSTEM SET logical_decoding_work_mem = '64kB'")
        .await
        .unwrap();
    source
        .batch_execute("SELECT pg_reload_conf()")
        .await
        .unwrap();
    source
        .batch_execute(
            "CREATE TABLE unrelated (id bigint PRIMARY KEY, payload text);
             UPDATE contacts SET email = 'before' WHERE id = 1;
             INSERT INTO unrelated
             SELECT i, md5(i::text) FROM generate_series(1, 1000000) AS i;
             UPDATE contacts SET email = 'after' WHERE id = 2;",
        )
        .await
        .unwrap();
    let backlog_end: String = source
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .unwrap()
        .get(0);

    let report = setup.run_ok(&[]).await;
    assert_eq!(report.streams[0].status, Status::Success, "{report:#?}");
    assert_eq!(report.streams[0].stopped, None, "{report:#?}");
    setup.assert_converged(COMPARED).await;
    let past_backlog = |confirmed: &str| {
        let confirmed = syncline::sources::postgres::cdc::parse_lsn(confirmed).unwrap();
        confirmed >= syncline::sources::postgres::cdc::parse_lsn(&backlog_end).unwrap()
    };
    let confirmed = setup.slot_confirmed().await.unwrap();
    assert!(
        past_backlog(&confirmed),
        "the slot moved past the backlog: {confirmed} < {backlog_end}"
    );

    // The next run starts after the backlog.
    source
        .batch_execute("UPDATE contacts SET email = 'later' WHERE id = 3")
        .await
        .unwrap();
    let again = setup.run_ok(&[]).await;
    assert_eq!(again.streams[0].rows_extracted, 1, "{again:#?}");
    let from = again.streams[0].cursor.unwrap().from.unwrap();
    assert!(
        from >= syncline::sources::postgres::cdc::parse_lsn(&backlog_end).unwrap(),
        "{again:#?}"
    );
    setup.assert_converged(COMPARED).await;
}

/// The database and the source role default to other date styles and a time zone far from
/// UTC. Dates and timestamps at the edges of the range every destination stores (years
/// 0001 and 9999), timestamps before 1900 (when zones had local-mean-time offsets with
/// seconds) and ordinary ones arrive equal to the source's, in the full load and through CDC;
/// dates before Christ or after 9999 are dead letters by the value rule (`values.rs`), decoded
/// first whatever the session's style, so the rest of the load arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdc_dates_and_times_arrive_whatever_the_datestyle_and_time_zone() {
    let setup = Setup::start("logical", "", "").await;
    let source = odd_session_defaults(&setup).await;
    source
        .batch_execute(
            "INSERT INTO contacts (id, email, born, updated_at, seen) VALUES
               (8001, 'edge', '0001-01-02', '1850-06-01 12:00:00', '0001-01-01 10:00:00'),
               (8002, 'old', '1899-12-31', '1850-06-01 00:00:00.5', '1850-06-01 00:00:00'),
               (8003, 'far', '9999-12-30', '2262-04-11 23:00:00', '9999-12-31 23:59:59.999');",
        )
        .await
        .unwrap();
    let first = setup.run_ok(&[]).await;
    assert_eq!(first.streams[0].rows_dead_lettered, 0, "{first:#?}");
    setup.assert_converged(DATES).await;

    source
        .batch_execute(
            "UPDATE contacts SET born = born - 1, updated_at = updated_at + interval '1 day'
              WHERE id BETWEEN 8001 AND 8003;
             INSERT INTO contacts (id, email, born, updated_at, seen) VALUES
               (8005, 'late', '1066-10-14', '1800-01-01 00:00:00', '0001-01-01 00:00:00');",
        )
        .await
        .unwrap();
    let second = setup.run_ok(&[]).await;
    assert_eq!(second.streams[0].rows_extracted, 4, "{second:#?}");
    setup.assert_converged(DATES).await;

    // Outside 0001-9999: decoded (not a failed run), then refused with the reason.
    source
        .batch_execute(
            "INSERT INTO contacts (id, email, born, updated_at, seen) VALUES
               (8006, 'bc', '0044-03-15 BC', '1850-06-01 12:00:00', '0100-01-01 10:00:00 BC'),
               (8007, 'beyond', '12000-01-01', '2000-01-01 00:00:00', '2000-01-01 00:00:00');",
        )
        .await
        .unwrap();
    let third = setup.run_ok(&[]).await;
    assert_eq!(third.streams[0].status, Status::Success, "{third:#?}");
    assert_eq!(third.streams[0].rows_dead_lettered, 2, "{third:#?}");
    setup.assert_converged_but(DATES, &[8006, 8007]).await;
}

/// An infinite date or timestamp has no value a destination can hold: its row goes to the
/// dead letters with the reason, in the full load and through CDC, never as a NULL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_infinite_date_is_a_dead_letter_not_a_null() {
    let setup = Setup::start("logical", "", "").await;
    let source = odd_session_defaults(&setup).await;
    source
        .batch_execute("INSERT INTO contacts (id, email, born) VALUES (8004, 'inf', 'infinity')")
        .await
        .unwrap();
    let dead_lettered_only = |report: RunReport| {
        let setup = &setup;
        async move {
            assert_eq!(report.streams[0].rows_dead_lettered, 1, "{report:#?}");
            setup.assert_converged_but(DATES, &[8004]).await;
        }
    };
    dead_lettered_only(setup.run_ok(&[]).await).await;
    source
        .batch_execute(
            "UPDATE contacts SET updated_at = '-infinity' WHERE id = 8004;
             UPDATE contacts SET born = '0001-01-01' WHERE id = 1;",
        )
        .await
        .unwrap();
    dead_lettered_only(setup.run_ok(&[]).await).await;
}

/// Dates and times compared without depending on the session's DateStyle or TimeZone.
const DATES: &str = "id::text, email, (born - date '2000-01-01')::text, \
     extract(epoch FROM updated_at)::text, extract(epoch FROM seen)::text";

/// Gives the source database and role other DateStyle, TimeZone and IntervalStyle defaults
/// than ISO and UTC; returns a session that has them.
async fn odd_session_defaults(setup: &Setup) -> tokio_postgres::Client {
    setup
        .source()
        .await
        .batch_execute(
            "ALTER DATABASE source SET DateStyle = 'SQL, DMY';
             ALTER DATABASE source SET TimeZone = 'Asia/Kolkata';
             ALTER DATABASE source SET IntervalStyle = 'sql_standard';
             ALTER ROLE postgres IN DATABASE source SET DateStyle = 'German, DMY';
             ALTER ROLE postgres IN DATABASE source SET TimeZone = 'Asia/Kolkata';",
        )
        .await
        .unwrap();
    setup.source().await
}

/// A backlog that holds nothing for the stream sends no change at all, only keepalives while
/// the server reads past it, and this one keeps the server busy for well over 30 s (minutes on
/// a loaded machine) on little WAL: a 1.5-million-row transaction elsewhere, then one with
/// 50,000 subtransactions, decoded with a small `logical_decoding_work_mem`; replaying that
/// commit keeps the server silent for minutes. The run waits for the server while its
/// connection holds the slot, loads the change after the backlog, and the slot moves past the
/// backlog, so the next run does not read it again. Ignored by default for its length:
/// `cargo nextest run --run-ignored all -E 'test(silent_for_minutes)'`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "keeps the server busy for minutes"]
async fn cdc_a_backlog_that_keeps_the_server_silent_for_minutes_does_not_stop_the_run() {
    let setup = Setup::start("logical", "", "").await;
    setup.run_ok(&[]).await;
    let source = setup.source().await;
    source
        .batch_execute(
            "CREATE TABLE unrelated (id bigint PRIMARY KEY, payload text);
             INSERT INTO unrelated
             SELECT i, repeat(md5(i::text), 4) FROM generate_series(1, 1500000) AS i;",
        )
        .await
        .unwrap();
    setup.run_ok(&[]).await;
    source
        .batch_execute("ALTER SYSTEM SET logical_decoding_work_mem = '64kB'")
        .await
        .unwrap();
    source
        .batch_execute("SELECT pg_reload_conf()")
        .await
        .unwrap();
    let mut backlog = String::from("BEGIN;\n");
    for i in 0..50_000 {
        backlog.push_str(&format!(
            "SAVEPOINT s{i}; INSERT INTO unrelated VALUES ({}, 'x'); RELEASE SAVEPOINT s{i};\n",
            2_000_000 + i
        ));
    }
    backlog.push_str("COMMIT;\nUPDATE contacts SET email = 'after' WHERE id = 2;");
    source.batch_execute(&backlog).await.unwrap();
    let backlog_end = lsn(&source
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .unwrap()
        .get::<_, String>(0));

    let report = setup.run_ok(&[]).await;
    assert_eq!(report.streams[0].stopped, None, "{report:#?}");
    assert_eq!(report.streams[0].status, Status::Success, "{report:#?}");
    assert_eq!(report.streams[0].rows_extracted, 1, "{report:#?}");
    setup.assert_converged(COMPARED).await;
    let confirmed = lsn(&setup.slot_confirmed().await.unwrap());
    assert!(confirmed >= backlog_end, "the slot moved past the backlog");

    // The next run starts after the backlog.
    source
        .batch_execute("UPDATE contacts SET email = 'later' WHERE id = 3")
        .await
        .unwrap();
    let again = setup.run_ok(&[]).await;
    assert_eq!(again.streams[0].rows_extracted, 1, "{again:#?}");
    assert!(again.streams[0].cursor.unwrap().from.unwrap() >= backlog_end);
    setup.assert_converged(COMPARED).await;
}

fn lsn(text: &str) -> i64 {
    syncline::sources::postgres::cdc::parse_lsn(text).expect("an LSN")
}

/// The run report breaks each stream's time down by phase (every phase present, in whole
/// milliseconds), and `-v` logs the same breakdown. A first load goes straight into the empty
/// table, copied while it is staged; the next one, into a table with rows, does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_and_the_log_break_a_stream_down_by_phase() {
    let setup = Setup::start(
        "replica",
        "mode = \"cursor\"\n[source.tables.contacts]\ncursor_column = \"updated_at\"",
        "",
    )
    .await;
    // The report as written, not as `RunReport` would read it back (with defaults).
    let phases = |args: &[&str]| {
        let report = setup.dir.path().join("phases.json");
        let output = Command::new(env!("CARGO_BIN_EXE_syncline"))
            .arg("run")
            .arg("--config")
            .arg(&setup.config)
            .arg("--report")
            .arg(&report)
            .args(args)
            .env("SOURCE_URL", &setup.source_url)
            .env("DEST_URL", &setup.dest_url)
            .output()
            .expect("run syncline");
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(output.status.success(), "{:?}\n{stderr}", output.status);
        let report: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
        (report["streams"][0]["phases"].clone(), stderr)
    };
    let names = [
        "extract_ms",
        "convert_ms",
        "parquet_write_ms",
        "read_back_ms",
        "manifest_ms",
        "ensure_table_ms",
        "load_ms",
        "merge_ms",
        "commit_ms",
        "state_ms",
    ];
    let (first, stderr) = phases(&["-v"]);
    for name in names {
        assert!(first[name].as_u64().is_some(), "{name} in {first}");
        assert!(stderr.contains(name), "{name} not logged:\n{stderr}");
    }
    assert!(stderr.contains("phase timings"), "{stderr}");
    assert_eq!(first["direct_copy"], true, "{first}");
    // A first load is copied while it is staged.
    assert_eq!(first["copied_while_staging"], true, "{first}");
    setup.assert_converged(COMPARED).await;

    let (second, _) = phases(&[]);
    for name in names {
        assert!(second[name].as_u64().is_some(), "{name} in {second}");
    }
    assert_eq!(second["direct_copy"], false, "{second}");
    assert_eq!(second["copied_while_staging"], false, "{second}");
}

/// A `numeric(p,s)` source column arrives as `numeric(p,s)` with every digit, snapshot and
/// streamed changes alike; `NaN`, which no destination's decimal holds, is a dead letter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_numeric_column_arrives_as_numeric_and_nan_is_a_dead_letter() {
    let setup = Setup::start("logical", "", "").await;
    setup
        .source()
        .await
        .batch_execute(
            "INSERT INTO contacts (id, email, score) VALUES
                (9001, 'a', 12345.67), (9002, 'b', -0.01), (9003, 'c', 0), (9004, 'nan', 'NaN'),
                (9005, 'max', 9999999999.99), (9006, 'none', NULL)",
        )
        .await
        .unwrap();
    let report = setup.run_ok(&[]).await;
    assert_eq!(report.streams[0].rows_dead_lettered, 1, "{report:#?}");
    let score_type: String = setup
        .dest()
        .await
        .query_one(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute \
             WHERE attrelid = 'crm.contacts'::regclass AND attname = 'score'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(score_type, "numeric(12,2)");
    setup
        .assert_converged_but("id::text, score::text", &[9004])
        .await;

    // Streamed changes are decoded from pgoutput's text.
    setup
        .source()
        .await
        .batch_execute(
            "UPDATE contacts SET score = -9999999999.99 WHERE id = 9001;
             UPDATE contacts SET score = score + 0.01 WHERE id % 100 = 0;",
        )
        .await
        .unwrap();
    setup.run_ok(&[]).await;
    setup
        .assert_converged_but("id::text, score::text", &[9004])
        .await;
}
