//! HubSpot → Parquet staging → PostgreSQL, over real HTTP (the simulator) and a real PostgreSQL.

use syncline::reconcile::report::Status;
use syncline::sim::{RateLimit, SimChange, SimConfig};

use crate::support::{Harness, report_stream, settle};

fn sim(contacts: usize, companies: usize, deals: usize) -> SimConfig {
    SimConfig {
        contacts,
        companies,
        deals,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_load_then_changes_then_idle_run_converge() {
    let h = Harness::start(
        sim(3000, 2000, 2000),
        &["contacts", "companies", "deals"],
        "",
    )
    .await;

    let first = h.run(false).await;
    assert_eq!(first.status, Status::Success, "{first:#?}");
    assert_eq!(first.exit_code, 0);
    for object in ["contacts", "companies", "deals"] {
        h.assert_converged(object, false).await;
        let stream = report_stream(&first, object);
        assert_eq!(
            stream.rows_inserted as usize,
            h.sim.hubspot.live_records(object).len()
        );
        assert!(stream.reconciliation.matched, "{stream:#?}");
        assert_eq!(
            stream.reconciliation.destination,
            Some(stream.reconciliation.source)
        );
    }

    // A round of changes: updates, inserts, archives.
    let updated = h.sim.hubspot.update("contacts", 250);
    let inserted = h.sim.hubspot.insert("contacts", 40);
    let archived = h.sim.hubspot.archive("contacts", 30);
    h.sim.hubspot.update("deals", 100);
    h.sim.hubspot.archive("companies", 10);
    settle(&h).await;

    let second = h.run(false).await;
    assert_eq!(second.status, Status::Success, "{second:#?}");
    for object in ["contacts", "companies", "deals"] {
        h.assert_converged(object, false).await;
    }
    let contacts = report_stream(&second, "contacts");
    assert_eq!(contacts.mode, Some(syncline::load::LoadMode::Incremental));
    // A record inserted and archived within one round never reaches the destination.
    let inserted_live = inserted.iter().filter(|id| !archived.contains(id)).count() as u64;
    assert_eq!(contacts.rows_inserted, inserted_live);
    assert_eq!(contacts.rows_deleted, archived.len() as u64);
    // Archived records may have been among the updated ones.
    let still_live = updated
        .iter()
        .filter(|id| !archived.contains(id) && !inserted.contains(id))
        .count() as u64;
    assert_eq!(contacts.rows_updated, still_live);
    assert_eq!(report_stream(&second, "companies").rows_deleted, 10);

    // Nothing changed: the overlap re-reads records, but nothing is merged.
    settle(&h).await;
    let idle = h.run(false).await;
    assert_eq!(idle.status, Status::Success, "{idle:#?}");
    for stream in &idle.streams {
        assert_eq!(
            (
                stream.rows_inserted,
                stream.rows_updated,
                stream.rows_deleted
            ),
            (0, 0, 0),
            "{stream:#?}"
        );
    }
    for object in ["contacts", "companies", "deals"] {
        h.assert_converged(object, false).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_a_staged_load_changes_nothing() {
    let h = Harness::start(sim(500, 10, 10), &["contacts"], "").await;
    let first = h.run(false).await;
    assert_eq!(first.status, Status::Success, "{first:#?}");
    let load_id = report_stream(&first, "contacts").load_id.clone().unwrap();
    let ledger_before = h.ledger_count().await;

    // Merge the same staged load again, straight from the stage, as a replay would.
    let config = h.config();
    let stage = syncline::stage::Stage::open(&config.staging).unwrap();
    let manifest = stage
        .read_manifest("crm", "contacts", &load_id)
        .await
        .unwrap()
        .expect("manifest");
    let destination = syncline::destinations::build(&config).await.unwrap();
    let request = syncline::destinations::MergeRequest {
        load_id: load_id.clone(),
        stream: "contacts".into(),
        table: "contacts".into(),
        key: manifest.key.clone(),
        deletes: Default::default(),
        schema: manifest.arrow_schema().unwrap(),
        staged: manifest.fingerprint(),
        files: Vec::new(),
        complete: None,
    };
    let outcome = destination
        .merge(&request, stage.read_load(&manifest))
        .await
        .unwrap();
    assert!(outcome.skipped);
    assert_eq!(
        (outcome.inserted, outcome.updated, outcome.deleted),
        (0, 0, 0)
    );
    assert_eq!(h.ledger_count().await, ledger_before);
    h.assert_converged("contacts", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_than_ten_thousand_changes_even_with_one_timestamp() {
    let h = Harness::start(sim(21_000, 10, 10), &["contacts"], "").await;
    assert_eq!(h.run(false).await.status, Status::Success);

    // 10,500 records share one timestamp: a time cursor alone would stall at the 10k cap.
    let tie = chrono::Utc::now().timestamp_millis();
    let tied = h.sim.hubspot.update_at("contacts", 10_500, tie);
    assert_eq!(tied.len(), 10_500);
    settle(&h).await;
    let report = h.run(false).await;
    let contacts = report_stream(&report, "contacts");
    assert_eq!(contacts.status, Status::Success, "{contacts:#?}");
    assert_eq!(contacts.rows_updated, 10_500);
    h.assert_converged("contacts", false).await;

    // More than 10,000 changes spread over time in one window.
    h.sim.hubspot.update("contacts", 6_000);
    h.sim.hubspot.update("contacts", 6_000);
    settle(&h).await;
    let report = h.run(false).await;
    assert_eq!(report.status, Status::Success, "{report:#?}");
    h.assert_converged("contacts", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_429s_is_waited_out() {
    let h = Harness::start(sim(1500, 10, 10), &["contacts"], "").await;
    h.sim.hubspot.inject_429(5);
    let first = h.run(false).await;
    assert_eq!(first.status, Status::Success, "{first:#?}");
    h.assert_converged("contacts", false).await;

    h.sim.hubspot.update("contacts", 300);
    settle(&h).await;
    let before = h.sim.hubspot.request_count();
    h.sim.hubspot.inject_429(6);
    let second = h.run(false).await;
    assert_eq!(second.status, Status::Success, "{second:#?}");
    // The 429s were served and retried, not skipped.
    assert!(h.sim.hubspot.request_count() - before >= 6 + 2);
    h.assert_converged("contacts", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unparsable_value_goes_to_the_dead_letter_file_and_the_run_succeeds() {
    let h = Harness::start(sim(300, 10, 10), &["contacts"], "").await;
    assert_eq!(h.run(false).await.status, Status::Success);

    h.sim
        .hubspot
        .set_raw_property("contacts", 17, "num_employees", Some("a few"));
    h.sim.hubspot.update("contacts", 20);
    settle(&h).await;
    let report = h.run(false).await;
    let contacts = report_stream(&report, "contacts");
    assert_eq!(contacts.status, Status::Success, "{contacts:#?}");
    assert_eq!(contacts.rows_dead_lettered, 1);
    let file = contacts.dead_letter_file.clone().expect("dead-letter file");

    let stage = syncline::stage::Stage::open(&h.config().staging).unwrap();
    let letters = syncline::stage::read_dead_letters(
        &stage,
        &syncline::stage::DeadLetterFile {
            path: file,
            rows: 1,
        },
    )
    .await
    .unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].key, "17");
    assert_eq!(letters[0].field.as_deref(), Some("num_employees"));
    assert!(
        letters[0].reason.contains("\"a few\" is not a number"),
        "{}",
        letters[0].reason
    );
    assert!(letters[0].raw.contains("a few"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soft_deletes_keep_the_row_with_a_delete_time() {
    let h = Harness::start(
        sim(400, 10, 10),
        &["contacts"],
        "[streams.contacts]\ndeletes = \"soft\"\n",
    )
    .await;
    assert_eq!(h.run(false).await.status, Status::Success);
    let archived = h.sim.hubspot.archive("contacts", 25);
    settle(&h).await;
    let report = h.run(false).await;
    assert_eq!(
        report_stream(&report, "contacts").rows_deleted,
        25,
        "{report:#?}"
    );
    h.assert_converged("contacts", true).await;
    let deleted: i64 = h
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM crm.contacts WHERE _syncline_deleted_at IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(deleted as usize, archived.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_token_exits_2_and_never_shows_the_token() {
    let h = Harness::start(sim(10, 10, 10), &["contacts"], "").await;
    let (status, report) = h.run_binary(&[], &[("SIM_TOKEN", "not-the-token-xyz")]);
    assert_eq!(
        status.code(),
        Some(2),
        "a rejected token is the user's to fix"
    );
    let report = report.expect("a report");
    let stream = &report.streams[0];
    assert_eq!(stream.retryable, Some(false));
    let error = stream.error.clone().unwrap_or_default();
    assert!(error.contains("configuration error"), "{error}");
    assert!(error.contains("source.token"), "{error}");
    assert!(
        !serde_json::to_string(&report)
            .unwrap()
            .contains("not-the-token-xyz")
    );
}

/// Search results are computed per request (B2), so a record modified or archived while a run
/// pages through them leaves the result set between two pages. An offset (`after`) then skips
/// the record at the next page boundary; paging by key never does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_changed_between_search_pages_lose_no_other_record() {
    let objects = ["contacts", "deals"];
    let h = Harness::start(sim(3000, 10, 2000), &objects, "").await;
    assert_eq!(h.run(false).await.status, Status::Success);

    let mut before = Vec::new();
    for object in objects {
        let changed = h.sim.hubspot.update(object, 1_500);
        assert_eq!(changed.len(), 1_500);
        // Both are on the first page (sorted by id); they change once it has been served.
        let (modified, archived) = (changed[10], changed[20]);
        h.sim.hubspot.after_search_pages(
            object,
            1,
            vec![SimChange::Modify(modified), SimChange::Archive(archived)],
        );
        before.push((object, modified, archived));
    }
    settle(&h).await;
    let snapshots: Vec<_> = objects.iter().map(|o| h.expected(o)).collect();

    let report = h.run(false).await;
    assert_eq!(report.status, Status::Success, "{report:#?}");
    for ((object, modified, archived), mut want) in before.into_iter().zip(snapshots) {
        let stream = report_stream(&report, object);
        // Every changed record once, plus the archive read as a delete.
        assert_eq!(stream.rows_extracted, 1_501, "{object}: {stream:#?}");
        assert_eq!(stream.rows_deleted, 1, "{object}: {stream:#?}");
        assert!(h.sim.hubspot.archived_ids(object).contains(&archived));
        // Every record unchanged during the run is at its version; the one modified again
        // keeps the version the first page read, and the archived one is gone.
        want.remove(&archived);
        let got = h.table(object, false).await;
        assert_ne!(
            h.expected(object)[&modified]["_version"],
            want[&modified]["_version"],
            "{object} {modified} changed during the run"
        );
        crate::support::assert_same_rows(object, &got, &want);
    }

    // The next run picks up the change made during the previous one.
    settle(&h).await;
    let next = h.run(false).await;
    assert_eq!(next.status, Status::Success, "{next:#?}");
    for object in objects {
        h.assert_converged(object, false).await;
    }
}

/// The list endpoint's `after` is a cursor on the id, not an offset, so a record archived or
/// modified while a full load pages through it shifts no other record past a page boundary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_changed_between_list_pages_lose_no_other_record() {
    let h = Harness::start(sim(1500, 10, 10), &["contacts"], "").await;
    let want_before = h.expected("contacts");
    // Both are on the first page of 100; they change once it has been served.
    let (modified, archived) = (10, 20);
    h.sim.hubspot.after_list_pages(
        "contacts",
        1,
        vec![SimChange::Modify(modified), SimChange::Archive(archived)],
    );

    let report = h.run(false).await;
    assert_eq!(report.status, Status::Success, "{report:#?}");
    let stream = report_stream(&report, "contacts");
    // Every live record once, plus the archive read as a delete.
    assert_eq!(stream.rows_extracted, 1_501, "{stream:#?}");
    let mut want = want_before;
    want.remove(&archived);
    crate::support::assert_same_rows("contacts", &h.table("contacts", false).await, &want);

    settle(&h).await;
    let next = h.run(false).await;
    assert_eq!(next.status, Status::Success, "{next:#?}");
    h.assert_converged("contacts", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daily_limit_stops_the_run_cleanly_and_the_next_run_converges() {
    let h = Harness::start(
        SimConfig {
            rate_limit: Some(RateLimit {
                per_ten_seconds: 10_000,
                search_per_second: 10_000,
                // The properties call and four list pages of contacts: the limit is met mid-read.
                daily: 5,
            }),
            ..sim(1000, 200, 10)
        },
        &["contacts", "companies"],
        "",
    )
    .await;
    let (status, report) = h.run_binary(&[], &[]);
    let report = report.expect("a report");
    assert_eq!(status.code(), Some(4), "{report:#?}");
    assert_eq!(report.status, Status::Stopped);
    let contacts = report_stream(&report, "contacts");
    assert_eq!(contacts.status, Status::Stopped, "{contacts:#?}");
    assert!(
        contacts
            .stopped
            .as_deref()
            .unwrap_or_default()
            .contains("daily"),
        "{contacts:#?}"
    );
    assert_eq!(contacts.error, None);
    // What was read before the stop is merged; the cursor stays, so nothing is skipped.
    assert!(contacts.rows_inserted > 0, "{contacts:#?}");
    let companies = report_stream(&report, "companies");
    assert_eq!(companies.status, Status::Stopped, "{companies:#?}");
    assert_eq!(
        h.sim.hubspot.request_count(),
        6,
        "nothing asked after the refusal"
    );

    h.sim.hubspot.set_daily_limit(1_000_000);
    let next = h.run(false).await;
    assert_eq!(next.status, Status::Success, "{next:#?}");
    h.assert_converged("contacts", false).await;
    h.assert_converged("companies", false).await;
}
