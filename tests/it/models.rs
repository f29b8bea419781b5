//! SQL models materialized into PostgreSQL: read from the staging store's mirror, tested
//! before they replace their table, swapped in atomically; the example models equal the same
//! SQL run by PostgreSQL itself over the loaded tables.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use syncline::reconcile::report::Status;
use syncline::sim::SimConfig;
use syncline::transform::materialize::ModelStatus;

use crate::support::{Harness, connect, settle};

fn sim() -> SimConfig {
    SimConfig {
        contacts: 600,
        companies: 100,
        deals: 400,
        ..Default::default()
    }
}

fn repo_models(folder: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("models")
        .join(folder)
}

fn models_table(dir: &Path) -> String {
    format!(
        "[models]\ndir = \"{}\"\ntests = \"{}\"\n",
        dir.display(),
        dir.join("no-tests").display()
    )
}

async fn harness(models: &Path) -> Harness {
    Harness::start(
        sim(),
        &["contacts", "companies", "deals"],
        &models_table(models),
    )
    .await
}

async fn run_models(h: &Harness) -> syncline::transform::ModelsReport {
    syncline::transform::models_command(&h.config(), None, None, false, false)
        .await
        .expect("models run starts")
}

/// `syncline models <args>` with the harness's environment: exit code and stdout + stderr.
fn models_binary(h: &Harness, args: &[&str]) -> (i32, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_syncline"));
    command
        .arg("models")
        .args(args)
        .arg("--config")
        .arg(&h.config_path);
    for (k, v) in h.env() {
        command.env(k, v);
    }
    let out = command.output().expect("spawn syncline");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

async fn count(client: &tokio_postgres::Client, table: &str) -> i64 {
    client
        .query_one(&format!("SELECT count(*) FROM crm.{table}"), &[])
        .await
        .expect("count")
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_models_materialize_as_tables_equal_to_postgres_running_their_sql() {
    let h = harness(&repo_models("hubspot")).await;
    let run = h.run(false).await;
    assert_eq!(run.status, Status::Success, "{run:#?}");

    let report = run_models(&h).await;
    assert_eq!(report.exit_code(), 0, "{}", report.render());
    let names: Vec<&str> = report.models.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "contacts_by_lifecycle",
            "deal_pipeline",
            "duplicate_contacts"
        ]
    );

    let client = h.client().await;
    client
        .batch_execute("SET search_path = crm; SET TimeZone = 'UTC'")
        .await
        .unwrap();
    // The model's columns, with sums of money compared to the cent.
    let projections = [
        (
            "contacts_by_lifecycle",
            "lifecyclestage, contacts, customers",
        ),
        (
            "deal_pipeline",
            "dealstage, close_month, deals, round(amount::numeric, 2)",
        ),
        ("duplicate_contacts", "email, contacts, first_id, last_id"),
    ];
    for (model, projection) in projections {
        let sql =
            std::fs::read_to_string(repo_models("hubspot").join(format!("{model}.sql"))).unwrap();
        let by_postgres = format!("SELECT {projection} FROM ({sql}) m");
        let materialized = format!("SELECT {projection} FROM crm.{model}");
        for (a, b) in [(&by_postgres, &materialized), (&materialized, &by_postgres)] {
            let differing: i64 = client
                .query_one(&format!("SELECT count(*) FROM ({a} EXCEPT ALL {b}) d"), &[])
                .await
                .unwrap_or_else(|e| panic!("{model}: {e:?}"))
                .get(0);
            assert_eq!(
                differing, 0,
                "{model}: rows differ from PostgreSQL's own result"
            );
        }
        let rows = report.models.iter().find(|m| m.name == model).unwrap().rows;
        assert_eq!(count(&client, model).await as u64, rows, "{model}");
        if model != "duplicate_contacts" {
            assert!(rows > 0, "{model} is empty");
        }
    }
    // Each model table is a load in the ledger, like any stream's.
    let ledger: i64 = client
        .query_one(
            "SELECT count(*) FROM crm._syncline_loads WHERE stream = 'deal_pipeline'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(ledger, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_model_test_keeps_the_previous_table_and_exits_3() {
    let models = tempfile::tempdir().unwrap();
    let model = models.path().join("stages.sql");
    std::fs::write(
        &model,
        "-- tests: not_null(contacts)\nSELECT lifecyclestage, count(*) AS contacts FROM contacts GROUP BY lifecyclestage",
    )
    .unwrap();
    let h = harness(models.path()).await;
    let (code, out) = {
        let (status, report) = h.run_binary(&["--models"], &[]);
        (status.code(), format!("{report:?}"))
    };
    assert_eq!(code, Some(0), "{out}");
    let client = h.client().await;
    let before = count(&client, "stages").await;
    assert!(before > 0);

    // A stage the test does not accept: the run syncs, the model is evaluated and refused.
    std::fs::write(
        &model,
        "-- tests: accepted_values(lifecyclestage: 'no such stage')\nSELECT lifecyclestage, count(*) AS contacts FROM contacts WHERE lifecyclestage IS NOT NULL GROUP BY lifecyclestage",
    )
    .unwrap();
    h.sim.hubspot.insert("contacts", 5);
    settle(&h).await;
    let (status, _) = h.run_binary(&["--models"], &[]);
    assert_eq!(status.code(), Some(3), "a failing model test exits 3");
    assert_eq!(
        count(&client, "stages").await,
        before,
        "the previous table stays"
    );

    let (code, text) = models_binary(&h, &["test"]);
    assert_eq!(code, 3, "{text}");
    assert!(
        text.contains("accepted_values(lifecyclestage: 'no such stage')")
            && text.contains("failing rows"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_during_the_swap_sees_the_old_table_or_the_new_one() {
    let models = tempfile::tempdir().unwrap();
    let model = models.path().join("ids.sql");
    let all = "SELECT id FROM contacts";
    let even = "SELECT id FROM contacts WHERE id % 2 = 0";
    std::fs::write(&model, all).unwrap();
    let h = harness(models.path()).await;
    assert_eq!(h.run(false).await.status, Status::Success);
    assert_eq!(run_models(&h).await.exit_code(), 0);
    let client = h.client().await;
    let all_rows = count(&client, "ids").await;
    std::fs::write(&model, even).unwrap();
    assert_eq!(run_models(&h).await.exit_code(), 0);
    let even_rows = count(&client, "ids").await;
    assert!(even_rows > 0 && even_rows < all_rows);

    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let stop = stop.clone();
        let url = h.db_url.clone();
        tokio::spawn(async move {
            let client = connect(&url).await;
            let mut seen = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let n: std::result::Result<i64, String> = client
                    .query_one("SELECT count(*) FROM crm.ids", &[])
                    .await
                    .map(|row| row.get(0))
                    .map_err(|e| format!("{e:?}"));
                seen.push(n);
            }
            seen
        })
    };
    for round in 0..6 {
        std::fs::write(&model, if round % 2 == 0 { all } else { even }).unwrap();
        let report = run_models(&h).await;
        assert_eq!(report.exit_code(), 0, "{}", report.render());
    }
    stop.store(true, Ordering::SeqCst);
    let seen = reader.await.unwrap();
    assert!(!seen.is_empty());
    for n in &seen {
        match n {
            Ok(n) => assert!(
                *n == all_rows || *n == even_rows,
                "a reader saw {n} rows, neither {all_rows} nor {even_rows}"
            ),
            Err(e) => panic!("a reader failed during the swap: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cycle_and_an_unknown_name_are_exit_2_naming_the_file_and_the_name() {
    let models = tempfile::tempdir().unwrap();
    std::fs::write(models.path().join("a.sql"), "SELECT * FROM b").unwrap();
    std::fs::create_dir(models.path().join("marts")).unwrap();
    std::fs::write(models.path().join("marts/b.sql"), "SELECT * FROM a").unwrap();
    let h = harness(models.path()).await;
    let (code, text) = models_binary(&h, &["run"]);
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("a.sql") && text.contains("a -> b -> a"),
        "{text}"
    );

    std::fs::write(
        models.path().join("marts/b.sql"),
        "SELECT * FROM contacts JOIN dealz ON true",
    )
    .unwrap();
    let (code, text) = models_binary(&h, &["run"]);
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("marts/b.sql") && text.contains("`dealz` is neither a stream"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mirror_catches_up_after_a_crash_between_the_destination_and_the_mirror() {
    let models = tempfile::tempdir().unwrap();
    std::fs::write(
        models.path().join("contact_count.sql"),
        "SELECT count(*) AS n FROM contacts",
    )
    .unwrap();
    let h = harness(models.path()).await;
    assert_eq!(h.run(false).await.status, Status::Success);
    h.sim.hubspot.insert("contacts", 25);
    h.sim.hubspot.archive("contacts", 10);
    settle(&h).await;

    // Killed after PostgreSQL committed the load, before the mirror and the state.
    let (status, _) = h.run_binary(&[], &[("SYNCLINE_CRASH_AT", "after-merge")]);
    assert_eq!(status.signal(), Some(9), "{status:?}");
    let mirrored = || async {
        let ctx = syncline::transform::lake_session(&h.config())
            .await
            .unwrap();
        let batches = syncline::transform::query(&ctx, "SELECT count(*) AS n FROM contacts")
            .await
            .unwrap();
        arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string()
    };
    let client = h.client().await;
    let in_postgres = count(&client, "contacts").await;
    assert!(
        !mirrored().await.contains(&format!("| {in_postgres} ")),
        "the crash came before the mirror"
    );

    // The re-run finds the load pending and in the ledger: it brings the mirror up to date.
    let again = h.run(false).await;
    assert_eq!(again.status, Status::Success, "{again:#?}");
    assert!(
        mirrored().await.contains(&format!("| {in_postgres} ")),
        "{} vs {in_postgres}",
        mirrored().await
    );
    h.assert_converged("contacts", false).await;
    let report = run_models(&h).await;
    assert_eq!(report.models[0].status, ModelStatus::Built);
    let n: i64 = client
        .query_one("SELECT n FROM crm.contact_count", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, in_postgres);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn salesforce_example_models_equal_postgres_running_their_sql_after_deletes() {
    let h = Harness::start(
        SimConfig {
            contacts: 1,
            companies: 1,
            deals: 1,
            sf_accounts: 120,
            sf_contacts: 200,
            sf_opportunities: 150,
            sf_leads: 1,
            ..Default::default()
        },
        &["contacts"],
        "",
    )
    .await;
    let dir = repo_models("salesforce");
    let models = format!(
        "[models]\ndir = \"{}\"\ntests = \"{}\"\n",
        dir.display(),
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("models/tests/salesforce")
            .display()
    );
    let streams = ["Account", "Contact", "Opportunity"];
    crate::support::write_salesforce_config(&h, &streams, "", &models);
    assert_eq!(h.run(false).await.status, Status::Success);
    // Deletes reach the mirror as they reach PostgreSQL.
    h.sim.salesforce.delete("Account", 10);
    h.sim.salesforce.delete("Opportunity", 10);
    h.sim.salesforce.update("Opportunity", 30);
    crate::support::settle_sf(&h, &streams).await;
    assert_eq!(h.run(false).await.status, Status::Success);

    let (code, text) = models_binary(&h, &["test"]);
    assert_eq!(code, 0, "{text}");
    let report = run_models(&h).await;
    assert_eq!(report.exit_code(), 0, "{}", report.render());

    let client = h.client().await;
    client.batch_execute("SET search_path = crm").await.unwrap();
    let projections = [
        (
            "contacts_with_company",
            "contact_id, first_name, last_name, email, account_id, company, industry, country",
        ),
        (
            "opportunities_by_stage",
            "stage, opportunities, round(amount::numeric, 2), won",
        ),
        (
            "opportunities_won_by_account",
            "account_id, company, won, round(amount::numeric, 2)",
        ),
    ];
    for (model, projection) in projections {
        let sql = std::fs::read_to_string(dir.join(format!("{model}.sql"))).unwrap();
        let by_postgres = format!("SELECT {projection} FROM ({sql}) m");
        let materialized = format!("SELECT {projection} FROM crm.{model}");
        for (a, b) in [(&by_postgres, &materialized), (&materialized, &by_postgres)] {
            let differing: i64 = client
                .query_one(&format!("SELECT count(*) FROM ({a} EXCEPT ALL {b}) d"), &[])
                .await
                .unwrap_or_else(|e| panic!("{model}: {e:?}"))
                .get(0);
            assert_eq!(
                differing, 0,
                "{model}: rows differ from PostgreSQL's own result"
            );
        }
        assert!(count(&client, model).await > 0, "{model} is empty");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incremental_model_merges_only_the_rows_of_newer_loads_by_key() {
    let models = tempfile::tempdir().unwrap();
    let model = models.path().join("tagged.sql");
    let sql = |tag: &str| {
        format!(
            "-- materialized: incremental\n-- key: id\nSELECT id, email, '{tag}' AS tag FROM contacts"
        )
    };
    std::fs::write(&model, sql("first")).unwrap();
    let h = harness(models.path()).await;
    assert_eq!(h.run(false).await.status, Status::Success);
    let report = run_models(&h).await;
    assert_eq!(report.exit_code(), 0, "{}", report.render());
    let client = h.client().await;
    let all = count(&client, "tagged").await;
    assert_eq!(all as u64, report.models[0].rows);

    // Changed rows only: the tag shows which run wrote each row.
    let updated = h.sim.hubspot.update("contacts", 7);
    let inserted = h.sim.hubspot.insert("contacts", 3);
    settle(&h).await;
    assert_eq!(h.run(false).await.status, Status::Success);
    std::fs::write(&model, sql("second")).unwrap();
    let report = run_models(&h).await;
    assert_eq!(report.exit_code(), 0, "{}", report.render());
    let changed = updated.len() + inserted.len();
    assert_eq!(report.models[0].rows, changed as u64, "{}", report.render());
    let second: i64 = client
        .query_one("SELECT count(*) FROM crm.tagged WHERE tag = 'second'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(second as usize, changed);
    assert_eq!(count(&client, "tagged").await, all + inserted.len() as i64);

    // Nothing new: nothing read.
    let report = run_models(&h).await;
    assert_eq!(report.models[0].rows, 0, "{}", report.render());

    // --full-refresh recomputes every row and replaces the table.
    std::fs::write(&model, sql("third")).unwrap();
    let report = syncline::transform::models_command(&h.config(), None, None, true, false)
        .await
        .unwrap();
    assert_eq!(report.exit_code(), 0, "{}", report.render());
    let third: i64 = client
        .query_one("SELECT count(*) FROM crm.tagged WHERE tag = 'third'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(third, all + inserted.len() as i64);
}

/// Records deleted at the source leave an incremental model too: a run that finds deletes
/// (tombstones, or soft-deleted rows) written after the model's cursor in a stream it reads
/// rebuilds the model in full and replaces its table, so the model equals its SQL over the
/// streams' current rows again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incremental_model_loses_the_rows_of_records_deleted_upstream() {
    let models = tempfile::tempdir().unwrap();
    std::fs::write(
        models.path().join("emails.sql"),
        "-- materialized: incremental\n-- key: id\nSELECT id, lower(email) AS email FROM contacts",
    )
    .unwrap();
    let h = harness(models.path()).await;
    assert_eq!(h.run(false).await.status, Status::Success);
    let report = run_models(&h).await;
    assert_eq!(report.exit_code(), 0, "{}", report.render());
    let client = h.client().await;
    let live = h.sim.hubspot.live_records("contacts").len() as i64;
    assert_eq!(count(&client, "emails").await, live);

    let archived = h.sim.hubspot.archive("contacts", 6);
    let updated = h.sim.hubspot.update("contacts", 4);
    settle(&h).await;
    assert_eq!(h.run(false).await.status, Status::Success);
    let report = run_models(&h).await;
    assert_eq!(report.exit_code(), 0, "{}", report.render());
    assert_eq!(
        report.models[0].rebuilt.as_deref(),
        Some("deletes in contacts"),
        "{}",
        report.render()
    );
    assert_eq!(count(&client, "emails").await, live - archived.len() as i64);
    let ids: Vec<i64> = archived
        .iter()
        .copied()
        .chain(updated.iter().copied())
        .collect();
    let left: i64 = client
        .query_one(
            "SELECT count(*) FROM crm.emails WHERE id = ANY($1)",
            &[&archived],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "deleted contacts are still in the model");
    assert!(!ids.is_empty());

    // No delete since: the next run is incremental again (reads nothing new).
    let report = run_models(&h).await;
    assert_eq!(report.models[0].rebuilt, None, "{}", report.render());
    assert_eq!(report.models[0].rows, 0, "{}", report.render());
}

/// A model streams into the stage; a row whose key is NULL cannot be staged, so it counts as
/// failing the key's `not_null` test: nothing is merged, the staged files are removed, and
/// a model without such rows that reads a model builds from the staged result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_row_without_its_key_fails_not_null_and_nothing_staged_is_left() {
    let models = tempfile::tempdir().unwrap();
    std::fs::write(
        models.path().join("odd_keys.sql"),
        "-- key: k\nSELECT CASE WHEN id % 2 = 0 THEN NULL ELSE id END AS k, email FROM contacts",
    )
    .unwrap();
    std::fs::write(
        models.path().join("all_contacts.sql"),
        "-- key: id\nSELECT id, email FROM contacts",
    )
    .unwrap();
    std::fs::write(
        models.path().join("contact_count.sql"),
        "SELECT count(*) AS contacts FROM all_contacts",
    )
    .unwrap();
    let h = harness(models.path()).await;
    assert_eq!(h.run(false).await.status, Status::Success);
    let report = run_models(&h).await;
    assert_eq!(report.exit_code(), 3, "{}", report.render());
    let odd = report.models.iter().find(|m| m.name == "odd_keys").unwrap();
    assert_eq!(odd.status, ModelStatus::TestsFailed, "{}", report.render());
    let live = h.sim.hubspot.live_records("contacts");
    let even = live.iter().filter(|r| r.id % 2 == 0).count() as u64;
    assert_eq!(odd.failures.len(), 1, "{}", report.render());
    assert_eq!(odd.failures[0].test, "not_null(k)");
    assert_eq!(odd.failures[0].failing_rows, even);
    assert_eq!(odd.rows, live.len() as u64);
    let loads = h.stage_dir().join("crm/odd_keys/loads");
    let parquet = walkdir::WalkDir::new(&loads)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "parquet"))
        .count();
    assert_eq!(parquet, 0, "staged files of a failed model are left");

    let client = h.client().await;
    assert_eq!(count(&client, "all_contacts").await, live.len() as i64);
    let counted: i64 = client
        .query_one("SELECT contacts FROM crm.contact_count", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(counted, live.len() as i64);
}

/// A model whose result holds decimals (`SUM` over a decimal, `CAST(... AS DECIMAL(p,s))`)
/// materializes them as `numeric(p,s)` with every digit, not as doubles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_with_decimal_columns_materializes_numeric_columns_with_every_digit() {
    let models = tempfile::tempdir().unwrap();
    std::fs::write(
        models.path().join("deal_fees.sql"),
        "-- materialized: table\n\
         SELECT dealstage,\n\
             count(*) AS deals,\n\
             CAST(count(*) AS DECIMAL(12,2)) AS deals_exact,\n\
             sum(CAST('2.05' AS DECIMAL(6,2))) AS fees\n\
         FROM deals GROUP BY dealstage",
    )
    .unwrap();
    let h = harness(models.path()).await;
    let run = h.run(false).await;
    assert_eq!(run.status, Status::Success, "{run:#?}");
    let report = run_models(&h).await;
    assert_eq!(report.exit_code(), 0, "{}", report.render());

    let client = h.client().await;
    let types: Vec<(String, String)> = client
        .query(
            "SELECT column_name::text, format_type(atttypid, atttypmod) \
             FROM information_schema.columns c \
             JOIN pg_attribute a ON a.attrelid = 'crm.deal_fees'::regclass AND a.attname = c.column_name \
             WHERE c.table_schema = 'crm' AND c.table_name = 'deal_fees' \
             AND c.column_name IN ('deals_exact', 'fees') ORDER BY c.column_name",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    // DataFusion's SUM of a decimal(6,2) has 10 more digits of precision.
    assert_eq!(
        types,
        [
            ("deals_exact".to_owned(), "numeric(12,2)".to_owned()),
            ("fees".to_owned(), "numeric(16,2)".to_owned())
        ]
    );
    // Exact: 2.05 a deal to the cent, which a double would not keep for every count.
    let wrong: i64 = client
        .query_one(
            "SELECT count(*) FROM crm.deal_fees \
             WHERE fees <> deals * 2.05 OR deals_exact <> deals OR fees::text NOT LIKE '%.__'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(wrong, 0);
    assert!(count(&client, "deal_fees").await > 0);
}

/// A model keyed on a decimal materializes as a table and incrementally: the key stages as a
/// `numeric(12,2)` and fingerprints as its text (`17.00`) on both sides, the way PostgreSQL's
/// own `k::text` reads it, so the load reconciles; the incremental model merges new rows by
/// it. A float key is refused before anything is staged, naming the model and the column.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_keyed_on_a_decimal_materializes_and_a_float_key_is_refused_naming_both() {
    let models = tempfile::tempdir().unwrap();
    std::fs::write(
        models.path().join("priced_contacts.sql"),
        "-- materialized: table\n-- key: k\n\
         SELECT CAST(id AS DECIMAL(12,2)) AS k, email FROM contacts",
    )
    .unwrap();
    std::fs::write(
        models.path().join("priced_emails.sql"),
        "-- materialized: incremental\n-- key: k\n\
         SELECT CAST(id AS DECIMAL(12,2)) AS k, lower(email) AS email FROM contacts",
    )
    .unwrap();
    let h = harness(models.path()).await;
    assert_eq!(h.run(false).await.status, Status::Success);
    let report = run_models(&h).await;
    assert_eq!(report.exit_code(), 0, "{}", report.render());

    let client = h.client().await;
    let check = |live: i64| {
        let client = &client;
        async move {
            for table in ["priced_contacts", "priced_emails"] {
                assert_eq!(count(client, table).await, live, "{table}");
                let key_type: String = client
                    .query_one(
                        &format!(
                            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute \
                             WHERE attrelid = 'crm.{table}'::regclass AND attname = 'k'"
                        ),
                        &[],
                    )
                    .await
                    .unwrap()
                    .get(0);
                assert_eq!(key_type, "numeric(12,2)", "{table}");
                let wrong: i64 = client
                    .query_one(
                        &format!(
                            "SELECT count(*) FROM crm.{table} WHERE k::text !~ '^[0-9]+\\.00$'"
                        ),
                        &[],
                    )
                    .await
                    .unwrap()
                    .get(0);
                assert_eq!(wrong, 0, "{table}");
            }
        }
    };
    let live = h.sim.hubspot.live_records("contacts").len() as i64;
    check(live).await;

    // New contacts: the table is rebuilt, the incremental model merges them by key.
    h.sim.hubspot.insert("contacts", 15);
    settle(&h).await;
    assert_eq!(h.run(false).await.status, Status::Success);
    let report = run_models(&h).await;
    assert_eq!(report.exit_code(), 0, "{}", report.render());
    check(live + 15).await;

    let floats = tempfile::tempdir().unwrap();
    std::fs::write(
        floats.path().join("float_keyed.sql"),
        "-- key: score\nSELECT CAST(id AS DOUBLE) / 3 AS score, email FROM contacts",
    )
    .unwrap();
    let folder = floats.path().display().to_string();
    let (code, out) = models_binary(&h, &["run", "--models", &folder]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("configuration error")
            && out.contains("model float_keyed")
            && out.contains("key column score is Float64")
            && out.contains("integer, text or a decimal"),
        "{out}"
    );
    let loads = h.stage_dir().join("crm/float_keyed/loads");
    assert!(!loads.exists(), "nothing was staged for the refused model");
}

/// `--select NAME` builds NAME only: a model it reads and does not select is read as its last
/// run left it (its table, through the merged state: the mirror here), not evaluated again; one
/// never built is a configuration error naming it and saying how to build it (exit 2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_selected_model_reads_its_unselected_upstream_as_last_built() {
    let models = tempfile::tempdir().unwrap();
    std::fs::write(
        models.path().join("emails.sql"),
        "-- key: id\nSELECT id, email FROM contacts",
    )
    .unwrap();
    std::fs::write(
        models.path().join("email_count.sql"),
        "SELECT count(*) AS contacts FROM emails",
    )
    .unwrap();
    let h = harness(models.path()).await;
    assert_eq!(h.run(false).await.status, Status::Success);
    let client = h.client().await;

    let (code, text) = models_binary(&h, &["run", "--select", "email_count"]);
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("model emails") && text.contains("--select +email_count"),
        "{text}"
    );
    let exists: bool = client
        .query_one("SELECT to_regclass('crm.email_count') IS NOT NULL", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!exists, "nothing was built");

    assert_eq!(run_models(&h).await.exit_code(), 0);
    let built = count(&client, "emails").await;
    h.sim.hubspot.insert("contacts", 4);
    settle(&h).await;
    assert_eq!(h.run(false).await.status, Status::Success);
    // emails is read as built, before the four new contacts.
    let (code, text) = models_binary(&h, &["run", "--select", "email_count"]);
    assert_eq!(code, 0, "{text}");
    assert_eq!(counted(&client).await, built);
    assert_eq!(count(&client, "emails").await, built);

    // With its upstream selected, both are rebuilt.
    let (code, text) = models_binary(&h, &["run", "--select", "+email_count"]);
    assert_eq!(code, 0, "{text}");
    assert_eq!(counted(&client).await, built + 4);
}

async fn counted(client: &tokio_postgres::Client) -> i64 {
    client
        .query_one("SELECT contacts FROM crm.email_count", &[])
        .await
        .unwrap()
        .get(0)
}

/// The same on the lake destination: a model left out of `--select` is read from its Delta
/// table (its own columns: not `model_row` nor the bookkeeping), as its last run left it.
#[test]
fn on_the_lake_a_selected_model_reads_its_unselected_upstream_as_last_built() {
    use crate::support::{config_toml, toml_list};
    let dir = tempfile::tempdir().unwrap();
    let exports = dir.path().join("exports");
    let models = dir.path().join("models");
    std::fs::create_dir_all(&exports).unwrap();
    std::fs::create_dir_all(&models).unwrap();
    std::fs::write(exports.join("events-1.csv"), "id,name\n1,a\n2,b\n3,c\n").unwrap();
    std::fs::write(models.join("names.sql"), "SELECT id, name FROM events").unwrap();
    std::fs::write(
        models.join("name_count.sql"),
        "SELECT count(*) AS n, max(name) AS last FROM names",
    )
    .unwrap();
    let source = format!(
        "[source]\ntype = \"files\"\nurl = \"file://{}\"\nstreams = {}",
        exports.display(),
        toml_list(&["events"]),
    );
    let extra = format!(
        "[source.files.events]\nglob = \"events-*.csv\"\nformat = \"csv\"\nkey = \"id\"\n\
         [source.files.events.schema]\nid = \"int64\"\nname = \"utf8\"\n\
         [models]\ndir = \"{}\"\ntests = \"{}\"\n",
        models.display(),
        dir.path().join("no-tests").display()
    );
    let config = dir.path().join("lake.toml");
    std::fs::write(
        &config,
        config_toml(
            "name = \"selected\"",
            &dir.path().join("stage"),
            &source,
            "[destination]\ntype = \"lake\"",
            &extra,
        ),
    )
    .unwrap();
    let syncline = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_syncline"))
            .args(args)
            .arg("--config")
            .arg(&config)
            .output()
            .expect("spawn syncline");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(0), "{args:?}: {text}");
    };
    let counted = || {
        let cfg = crate::support::parse_config(&config, &[]);
        tokio::runtime::Runtime::new().unwrap().block_on(async {
            let syncline::config::DestinationConfig::Lake(lake) = &cfg.destination else {
                unreachable!("a lake pipeline")
            };
            let lake =
                syncline::destinations::lake::LakeDestination::from_config(&cfg, lake).unwrap();
            let table = lake.open_table("name_count").await.unwrap().unwrap();
            let ctx = datafusion::prelude::SessionContext::new();
            table.update_datafusion_session(&ctx.state()).unwrap();
            ctx.register_table("name_count", table.table_provider().await.unwrap())
                .unwrap();
            let batches = syncline::transform::query(
                &ctx,
                "SELECT CAST(n AS VARCHAR) || last FROM name_count",
            )
            .await
            .unwrap();
            arrow::util::display::array_value_to_string(batches[0].column(0), 0).unwrap()
        })
    };
    syncline(&["run"]);
    syncline(&["models", "run"]);
    assert_eq!(counted(), "3c");
    std::fs::write(exports.join("events-2.csv"), "id,name\n4,d\n5,e\n").unwrap();
    syncline(&["run"]);
    syncline(&["models", "run", "--select", "name_count"]);
    assert_eq!(counted(), "3c", "names as its last run left it");
    syncline(&["models", "run", "--select", "+name_count"]);
    assert_eq!(counted(), "5e");
}

/// A model built before the mirror kept models (an earlier version), or whose run stopped
/// before its mirror copy, has its table in PostgreSQL but none in the mirror models read.
/// `--select` of a model that reads it builds it in this run, saying so, instead of stopping
/// with "never built"; from then on it is read as built.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_built_without_a_mirror_copy_is_built_with_the_selected_model() {
    let models = tempfile::tempdir().unwrap();
    std::fs::write(
        models.path().join("emails.sql"),
        "-- key: id\nSELECT id, email FROM contacts",
    )
    .unwrap();
    std::fs::write(
        models.path().join("email_count.sql"),
        "SELECT count(*) AS contacts FROM emails",
    )
    .unwrap();
    let h = harness(models.path()).await;
    assert_eq!(h.run(false).await.status, Status::Success);
    assert_eq!(run_models(&h).await.exit_code(), 0);
    let client = h.client().await;
    let built = count(&client, "emails").await;

    // As an earlier version left it: the model's table in PostgreSQL, no mirror table.
    let mirrored = h.stage_dir().join("crm/mirror/emails");
    assert!(mirrored.exists(), "{}", mirrored.display());
    std::fs::remove_dir_all(&mirrored).unwrap();
    h.sim.hubspot.insert("contacts", 4);
    settle(&h).await;
    assert_eq!(h.run(false).await.status, Status::Success);

    let (code, text) = models_binary(&h, &["run", "--select", "email_count"]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains(&format!("model emails (table): {} rows, ok", built + 4))
            && text.contains(
                "built in this run: email_count reads it, and its table in the destination has \
                 no copy in the mirror models read"
            ),
        "{text}"
    );
    assert_eq!(count(&client, "emails").await, built + 4);
    assert_eq!(counted(&client).await, built + 4);
    assert!(mirrored.exists(), "the mirror has the model again");

    // Now it is read as built: only the selected model runs.
    let (code, text) = models_binary(&h, &["run", "--select", "email_count"]);
    assert_eq!(code, 0, "{text}");
    assert!(!text.contains("model emails"), "{text}");

    // A model never built at all is still refused, naming it.
    std::fs::write(
        models.path().join("domains.sql"),
        "-- key: id\nSELECT id, split_part(email, '@', 2) AS domain FROM contacts",
    )
    .unwrap();
    std::fs::write(
        models.path().join("domain_count.sql"),
        "SELECT count(DISTINCT domain) AS domains FROM domains",
    )
    .unwrap();
    let (code, text) = models_binary(&h, &["run", "--select", "domain_count"]);
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("model domain_count reads model domains")
            && text.contains("never built")
            && text.contains("--select +domain_count"),
        "{text}"
    );
}
