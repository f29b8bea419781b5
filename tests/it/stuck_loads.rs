//! A staged load that can never merge must not stop its stream forever: the run that fails
//! on it keeps it pending with the reason, the next run sets it aside (kept in the stage,
//! listed by `status`) and reads its range again.

use syncline::reconcile::report::Status;

use crate::support::files::FilesHarness;
use crate::support::report_stream;

/// 2024-03-01T00:00:00Z.
const T0: i64 = 1_709_251_200_000;
const HOUR: i64 = 3_600_000;

const CONTACTS: &str = "[source.files.contacts]\nglob = \"*.jsonl\"\nformat = \"jsonl\"\nkey = \"id\"\n\
                        [source.files.contacts.schema]\nid = \"int64\"\nemail = \"utf8\"\n";

/// A rule on the warehouse table, added by hand, that rows with a bounced email break.
async fn add_bounce_rule(h: &FilesHarness) {
    h.client()
        .await
        .batch_execute(
            "ALTER TABLE files.contacts ADD CONSTRAINT no_bounces CHECK (email NOT LIKE '%bounce%')",
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_the_destination_rejects_is_set_aside_and_the_stream_goes_on() {
    let h = FilesHarness::start().await;
    h.write_config(&["contacts"], CONTACTS);
    h.write_file(
        "a.jsonl",
        "{\"id\": 1, \"email\": \"one@x\"}\n{\"id\": 2, \"email\": \"two@x\"}\n",
        T0,
    );
    let first = h.run(false).await;
    assert_eq!(report_stream(&first, "contacts").status, Status::Success);

    // Someone adds a rule to the warehouse table that the next export breaks.
    add_bounce_rule(&h).await;
    h.write_file(
        "a.jsonl",
        "{\"id\": 1, \"email\": \"one@x\"}\n{\"id\": 2, \"email\": \"bounce@x\"}\n",
        T0 + HOUR,
    );
    let (code, stderr) = h.run_binary(&[]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("no_bounces"), "{stderr}");
    let state_file = h.dir.path().join("stage/files/_state/contacts.json");
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state_file).unwrap()).unwrap();
    let rejected = state["pending"]["load_id"].as_str().unwrap().to_string();
    assert!(
        state["pending"]["failure"]
            .as_str()
            .is_some_and(|f| f.contains("no_bounces")),
        "{state:#}"
    );

    // The export is corrected. The rejected load can never merge (it holds the old row), so
    // the next run sets it aside and loads the file again instead of failing on it forever.
    h.write_file(
        "a.jsonl",
        "{\"id\": 1, \"email\": \"one@x\"}\n{\"id\": 2, \"email\": \"two@y\"}\n",
        T0 + 2 * HOUR,
    );
    let third = h.run(false).await;
    let contacts = report_stream(&third, "contacts");
    assert_eq!(contacts.status, Status::Success, "{contacts:#?}");
    assert_eq!(contacts.set_aside.len(), 1, "{contacts:#?}");
    assert_eq!(contacts.set_aside[0].load_id, rejected);
    assert!(contacts.set_aside[0].reason.contains("no_bounces"));
    assert_eq!(
        h.rows("contacts", &["id", "email"]).await,
        vec![
            vec![Some("1".to_string()), Some("one@x".to_string())],
            vec![Some("2".to_string()), Some("two@y".to_string())],
        ]
    );
    // The set-aside load stays in the stage, and `status` lists it.
    assert!(
        h.dir
            .path()
            .join(format!(
                "stage/files/contacts/loads/{rejected}/manifest.json"
            ))
            .exists()
    );
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_syncline"))
        .args(["status", "--config"])
        .arg(&h.config_path)
        .envs(h.env())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{text}");
    assert!(
        text.contains(&format!("set aside: load {rejected}")),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_refresh_sets_aside_a_pending_load_that_cannot_merge() {
    let h = FilesHarness::start().await;
    h.write_config(&["contacts"], CONTACTS);
    h.write_file("a.jsonl", "{\"id\": 1, \"email\": \"one@x\"}\n", T0);
    assert_eq!(
        report_stream(&h.run(false).await, "contacts").status,
        Status::Success
    );
    add_bounce_rule(&h).await;
    // The rejected load is left pending by a run killed before it could note why.
    h.write_file(
        "a.jsonl",
        "{\"id\": 1, \"email\": \"bounce@x\"}\n",
        T0 + HOUR,
    );
    let (code, _) = h.run_binary_env(&[], &[("SYNCLINE_CRASH_AT", "after-stage")]);
    assert_ne!(code, 0);
    h.write_file(
        "a.jsonl",
        "{\"id\": 1, \"email\": \"one@y\"}\n",
        T0 + 2 * HOUR,
    );

    let refreshed = h.run(true).await;
    let contacts = report_stream(&refreshed, "contacts");
    assert_eq!(contacts.status, Status::Success, "{contacts:#?}");
    assert_eq!(contacts.set_aside.len(), 1, "{contacts:#?}");
    assert_eq!(
        h.rows("contacts", &["id", "email"]).await,
        vec![vec![Some("1".to_string()), Some("one@y".to_string())]]
    );
}
