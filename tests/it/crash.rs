//! Crash tests: the `syncline` process is killed with SIGKILL between staging, merge and the
//! state commit; the next run must converge with no row lost and none applied twice.

use std::os::unix::process::ExitStatusExt;

use syncline::reconcile::report::Status;
use syncline::sim::SimConfig;

use crate::support::{Harness, settle};

async fn killed_then_rerun_converges(point: &str) {
    let h = Harness::start(
        SimConfig {
            contacts: 2000,
            companies: 10,
            deals: 10,
            ..Default::default()
        },
        &["contacts"],
        "",
    )
    .await;
    let (status, _) = h.run_binary(&[], &[]);
    assert!(status.success(), "first run: {status:?}");
    h.assert_converged("contacts", false).await;
    let ledger_before = h.ledger_count().await;

    h.sim.hubspot.update("contacts", 300);
    h.sim.hubspot.insert("contacts", 50);
    h.sim.hubspot.archive("contacts", 20);
    settle(&h).await;

    let (status, report) = h.run_binary(&[], &[("SYNCLINE_CRASH_AT", point)]);
    assert_eq!(
        status.signal(),
        Some(9),
        "the run should have been killed at {point}: {status:?}"
    );
    assert!(report.is_none(), "a killed run writes no report");
    let after_crash = h.ledger_count().await;
    match point {
        "after-stage" => assert_eq!(
            after_crash, ledger_before,
            "nothing merged before the crash"
        ),
        _ => assert_eq!(
            after_crash,
            ledger_before + 1,
            "the merge committed before the crash"
        ),
    }

    let (status, report) = h.run_binary(&[], &[]);
    assert!(status.success(), "re-run: {status:?}");
    let report = report.expect("report");
    assert_eq!(report.status, Status::Success);
    assert!(report.streams[0].recovered, "{report:#?}");
    h.assert_converged("contacts", false).await;
    // Exactly one more load than before the crash: the recovered one (the re-run's own
    // incremental load finds only re-read rows and merges nothing, but still commits).
    let ledger_after = h.ledger_count().await;
    assert!(
        ledger_after == ledger_before + 1 || ledger_after == ledger_before + 2,
        "{ledger_before} -> {ledger_after}"
    );
    let last = &report.streams[0];
    if point == "after-merge" {
        // The recovered load was found in the ledger, not applied a second time.
        assert_eq!(last.rows_inserted, 0, "{last:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_staging_reruns_exactly_once() {
    killed_then_rerun_converges("after-stage").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_merge_before_state_commit_reruns_exactly_once() {
    killed_then_rerun_converges("after-merge").await;
}

/// A full load into PostgreSQL is copied into the table while it is staged; a kill at either
/// point of that overlap must leave what the ordinary order leaves.
async fn killed_during_a_full_load_then_rerun_converges(point: &str) {
    let h = Harness::start(
        SimConfig {
            contacts: 3000,
            companies: 10,
            deals: 10,
            ..Default::default()
        },
        &["contacts"],
        "",
    )
    .await;
    let (status, report) = h.run_binary(&[], &[("SYNCLINE_CRASH_AT", point)]);
    assert_eq!(
        status.signal(),
        Some(9),
        "the run should have been killed at {point}: {status:?}"
    );
    assert!(report.is_none(), "a killed run writes no report");
    let rows: i64 = h
        .client()
        .await
        .query_one("SELECT count(*) FROM crm.contacts", &[])
        .await
        .unwrap()
        .get(0);
    match point {
        // The copy ran, but its transaction waits for the pending state: it died with it.
        "after-stage" => {
            assert_eq!(
                h.ledger_count().await,
                0,
                "nothing committed before the crash"
            );
            assert_eq!(rows, 0, "the copied rows were rolled back");
        }
        _ => {
            assert_eq!(
                h.ledger_count().await,
                1,
                "the copy committed before the crash"
            );
            assert_eq!(rows, 3000, "every contact was copied");
        }
    }

    let (status, report) = h.run_binary(&[], &[]);
    assert!(status.success(), "re-run: {status:?}");
    let report = report.expect("report");
    assert_eq!(report.status, Status::Success);
    let stream = &report.streams[0];
    assert!(stream.recovered, "{report:#?}");
    h.assert_converged("contacts", false).await;
    let ledger = h.ledger_count().await;
    assert!(
        ledger == 1 || ledger == 2,
        "the full load once, then at most an empty incremental: {ledger}"
    );
    if point == "after-merge" {
        // Found in the ledger, not applied a second time.
        assert_eq!(stream.rows_inserted, 0, "{stream:#?}");
    } else {
        assert_eq!(stream.rows_inserted, 3000, "{stream:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_while_a_full_load_is_copied_and_staged_reruns_exactly_once() {
    killed_during_a_full_load_then_rerun_converges("after-stage").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_a_copied_full_load_committed_reruns_exactly_once() {
    killed_during_a_full_load_then_rerun_converges("after-merge").await;
}

/// A full load into the lake is spooled for its merge while it is staged; a kill once it is
/// staged (spooled, nothing committed) or once its Delta commit is made must leave what the
/// ordinary order leaves: the re-run applies the load exactly once.
async fn lake_full_load_killed_then_rerun_converges(point: &str) {
    use crate::support::files::FilesHarness;
    const ROWS: usize = 3000;
    let h = FilesHarness::start().await;
    let lines: String = (1..=ROWS)
        .map(|id| {
            format!(
                "{{\"id\": {id}, \"name\": \"contact {id}\", \"score\": {}}}\n",
                id % 7
            )
        })
        .collect();
    h.write_file("contacts/a.jsonl", &lines, 1_700_000_000_000);
    h.write_contacts_lake_config();
    let (code, stderr) = h.run_binary_env(&[], &[("SYNCLINE_CRASH_AT", point)]);
    assert_eq!(
        code, -1,
        "the run should have been killed at {point}: {stderr}"
    );
    let expected = match point {
        // The spool is local and the commit waits for the pending state: nothing is in the table.
        "after-stage" => "0",
        _ => "3000",
    };
    assert_eq!(
        lake_count(&h).await,
        (expected.to_string(), expected.to_string())
    );

    let stream = h.run_reported(&[], "re-run");
    assert_eq!(stream["recovered"], true, "{stream:#}");
    let inserted = if point == "after-stage" { ROWS } else { 0 };
    // Found in the table's log, not applied a second time.
    assert_eq!(stream["rows_inserted"], inserted, "{stream:#}");
    assert_eq!(
        lake_count(&h).await,
        ("3000".to_string(), "3000".to_string())
    );

    // A full refresh into the table that now has rows takes the same overlapped path, then
    // the general merge: nothing new, nothing doubled.
    let stream = h.run_reported(&["--full-refresh"], "full refresh");
    assert_eq!(stream["phases"]["copied_while_staging"], true, "{stream:#}");
    assert_eq!(stream["rows_inserted"], 0, "{stream:#}");
    assert_eq!(stream["reconciliation"]["matched"], true, "{stream:#}");
    assert_eq!(
        lake_count(&h).await,
        ("3000".to_string(), "3000".to_string())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_while_a_lake_full_load_is_spooled_and_staged_reruns_exactly_once() {
    lake_full_load_killed_then_rerun_converges("after-stage").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_a_spooled_lake_full_load_committed_reruns_exactly_once() {
    lake_full_load_killed_then_rerun_converges("after-merge").await;
}

/// A load merged into a lake table that has rows writes its new data files before one commit
/// adds them: a kill between the two leaves the table as it was (the files are in no commit),
/// and the re-run applies the load exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_a_lake_merge_wrote_its_files_reruns_exactly_once() {
    lake_merge_killed_then_rerun_converges("lake-files-written", None).await;
}

/// The same load merged in three passes (`merge_keys_per_pass = 1000`), killed after the first
/// pass wrote its files: the table is as it was, and the re-run applies the load exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_between_two_passes_of_a_lake_merge_reruns_exactly_once() {
    lake_merge_killed_then_rerun_converges("lake-pass-written", Some(1000)).await;
}

/// A lake table of 3,000 contacts, then a load changing half of them and adding as many,
/// killed at `point`, then run again; `keys_per_pass` sets `destination.merge_keys_per_pass`.
async fn lake_merge_killed_then_rerun_converges(point: &str, keys_per_pass: Option<u64>) {
    use crate::support::files::FilesHarness;
    let h = FilesHarness::start().await;
    h.write_contacts("a.jsonl", 1..=3000, "contact", 1_700_000_000_000);
    h.write_contacts_lake_config();
    if let Some(keys) = keys_per_pass {
        h.add_destination_key(&format!("merge_keys_per_pass = {keys}"));
    }
    let (code, stderr) = h.run_binary(&[]);
    assert_eq!(code, 0, "first load: {stderr}");

    // Half the rows change, as many are new.
    h.write_contacts("b.jsonl", 1501..=4500, "changed", 1_700_000_100_000);
    let (code, stderr) = h.run_binary_env(&[], &[("SYNCLINE_CRASH_AT", point)]);
    assert_eq!(
        code, -1,
        "the run should have been killed at {point}: {stderr}"
    );
    let changed = "SELECT count(*), count(DISTINCT id), \
                   sum(CASE WHEN name LIKE 'changed%' THEN 1 ELSE 0 END) FROM contacts";
    let counts = |rows: Vec<Vec<Option<String>>>| -> Vec<String> {
        rows[0]
            .iter()
            .map(|cell| cell.clone().unwrap_or_default())
            .collect()
    };
    assert_eq!(counts(h.lake_rows(changed).await), ["3000", "3000", "0"]);

    let stream = h.run_reported(&[], "re-run");
    assert_eq!(stream["rows_inserted"], 1500, "{stream:#}");
    assert_eq!(stream["rows_updated"], 1500, "{stream:#}");
    assert_eq!(counts(h.lake_rows(changed).await), ["4500", "4500", "3000"]);
}

/// Rows and distinct ids of the lake's `contacts`.
async fn lake_count(h: &crate::support::files::FilesHarness) -> (String, String) {
    let rows = h
        .lake_rows("SELECT count(*), count(DISTINCT id) FROM contacts")
        .await;
    (rows[0][0].clone().unwrap(), rows[0][1].clone().unwrap())
}
