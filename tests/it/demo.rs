//! `syncline demo` end to end, and the lake it writes read back by an independent reader.

use syncline::demo::{DemoDestination, DemoOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_syncs_changes_runs_models_and_reconciles() {
    let dir = tempfile::tempdir().unwrap();
    let options = DemoOptions {
        dir: dir.path().join("demo"),
        destination: DemoDestination::Lake,
        contacts: 800,
        companies: 150,
        deals: 200,
    };
    let summary = syncline::demo::run(&options).await.expect("demo runs");

    let full: Vec<(&str, u64)> = summary
        .full
        .iter()
        .map(|s| (s.stream.as_str(), s.inserted))
        .collect();
    assert_eq!(
        full,
        [
            ("contacts", 800),
            ("companies", 150),
            ("deals", 200),
            ("Account", 300),
            ("Contact", 600),
            ("Opportunity", 400),
            ("Lead", 200)
        ]
    );
    let contacts = &summary.incremental[0];
    assert_eq!(
        contacts.inserted as usize,
        summary.changes.contacts_inserted
    );
    assert_eq!(contacts.deleted as usize, summary.changes.contacts_archived);
    assert_eq!(contacts.updated as usize, summary.changes.contacts_updated);
    assert_eq!(
        summary.incremental[1].deleted as usize,
        summary.changes.companies_archived
    );
    assert_eq!(
        summary.incremental[2].updated as usize,
        summary.changes.deals_updated
    );
    let account = &summary.incremental[3];
    assert_eq!(
        (account.stream.as_str(), account.updated as usize),
        ("Account", summary.changes.sf_accounts_updated)
    );
    assert_eq!(
        summary.incremental[4].inserted as usize,
        summary.changes.sf_contacts_inserted
    );
    assert_eq!(
        summary.incremental[5].deleted as usize,
        summary.changes.sf_opportunities_deleted
    );
    let models: Vec<&str> = summary.models.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(
        models,
        [
            "contacts_by_lifecycle",
            "deal_pipeline",
            "duplicate_contacts",
            "contacts_with_company",
            "opportunities_by_stage",
            "opportunities_won_by_account",
        ]
    );
    assert!(
        summary
            .models
            .iter()
            .all(|m| m.status == syncline::transform::materialize::ModelStatus::Built),
        "{:?}",
        summary.models
    );
    assert!(
        summary
            .models
            .iter()
            .filter(|m| m.name != "duplicate_contacts")
            .all(|m| m.rows > 0),
        "{:?}",
        summary.models
    );
    for r in &summary.reconcile {
        assert!(r.matched, "{r:?}");
    }
    let expected_contacts =
        800 + summary.changes.contacts_inserted - summary.changes.contacts_archived;
    assert_eq!(
        summary.reconcile[0].destination.rows as usize,
        expected_contacts
    );

    // The leads went through the demo's stream transform: every email a SHA-256 digest in hex,
    // Company under its new name, nothing filtered.
    let lead = summary.full.iter().find(|s| s.stream == "Lead").unwrap();
    assert!(lead.transformed && lead.filtered == 0, "{lead:?}");
    let lake = syncline::destinations::lake::LakeDestination::new(
        &format!("file://{}/lake", options.dir.display()),
        Default::default(),
    )
    .unwrap();
    let leads = lake
        .open_table("Lead")
        .await
        .unwrap()
        .expect("a Lead table");
    let ctx = datafusion::prelude::SessionContext::new();
    ctx.register_table("lead", leads.table_provider().await.unwrap())
        .unwrap();
    let counts = ctx
        .sql(
            "SELECT count(*), count(\"Email\"), \
             count(*) FILTER (WHERE \"Email\" ~ '^[0-9a-f]{64}$'), count(company_name) FROM lead",
        )
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let counts: Vec<String> = counts[0]
        .columns()
        .iter()
        .map(|c| arrow::util::display::array_value_to_string(c, 0).unwrap())
        .collect();
    assert_eq!(counts[0], "200", "{counts:?}");
    assert!(counts[1] != "0" && counts[1] == counts[2], "{counts:?}");
    assert!(counts[3] != "0", "{counts:?}");

    let text = syncline::demo::render(&summary);
    assert!(
        text.contains("match") && !text.contains("MISMATCH"),
        "{text}"
    );
    assert!(text.contains("transformed, 0 filtered"), "{text}");
}

#[test]
fn the_demo_binary_prints_a_summary_and_its_lake_reads_with_python_deltalake() {
    let dir = tempfile::tempdir().unwrap();
    let demo_dir = dir.path().join("demo");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_syncline"))
        .args([
            "demo",
            "--contacts",
            "400",
            "--companies",
            "60",
            "--deals",
            "90",
            "--json",
            "--dir",
        ])
        .arg(&demo_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let contacts_rows = summary["reconcile"][0]["destination"]["rows"]
        .as_u64()
        .unwrap();

    // An independent reader: delta-rs's Python package, not this crate's code.
    let python = crate::support::python_with_deltalake();
    let script = r#"
import os
import sys
from deltalake import DeltaTable
t = DeltaTable(sys.argv[1])
rows = t.to_pyarrow_table(columns=["id", "_syncline_version"])
ids = rows.column("id").to_pylist()
assert len(ids) == len(set(ids)), "duplicate ids"
print(len(ids), t.version(), flush=True)
# The reading is done and printed. Skip the interpreter's teardown: deltalake's native threads
# sometimes abort the process there ("terminate called without an active exception"), which
# says nothing about the table.
os._exit(0)
"#;
    let read = std::process::Command::new(&python)
        .arg("-c")
        .arg(script)
        .arg(demo_dir.join("lake/contacts"))
        .output()
        .unwrap();
    assert!(
        read.status.success(),
        "{}",
        String::from_utf8_lossy(&read.stderr)
    );
    let stdout = String::from_utf8_lossy(&read.stdout);
    let mut words = stdout.split_whitespace();
    assert_eq!(words.next().unwrap().parse::<u64>().unwrap(), contacts_rows);
    assert!(
        words.next().unwrap().parse::<u64>().unwrap() >= 1,
        "a full and an incremental commit"
    );
}
