//! `syncline loads`, `replay` and `gc` over a HubSpot → PostgreSQL pipeline: the stage is the
//! only copy of what the source sent, so it can be listed, merged again without the source,
//! and expired without ever losing a load that is not merged.

use std::path::Path;
use std::process::Command;

use syncline::sim::SimConfig;

use crate::support::background::{Background, until_stopped};
use crate::support::{Harness, settle};

/// Runs `syncline <args> --config <config>`; returns exit code, stdout and stderr.
fn syncline(h: &Harness, args: &[&str]) -> (i32, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_syncline"));
    command.args(args).arg("--config").arg(&h.config_path);
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

fn loads(h: &Harness) -> Vec<serde_json::Value> {
    let (code, out, err) = syncline(h, &["loads", "--stream", "contacts", "--json"]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).expect("loads --json is JSON")
}

async fn count(h: &Harness) -> i64 {
    h.client()
        .await
        .query_one("SELECT count(*) FROM crm.contacts", &[])
        .await
        .unwrap()
        .get(0)
}

async fn changed_run(h: &Harness) {
    h.sim.hubspot.update("contacts", 40);
    h.sim.hubspot.insert("contacts", 10);
    settle(h).await;
    let (status, report) = h.run_binary(&[], &[]);
    assert!(status.success(), "{report:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_restores_an_emptied_table_from_the_stage_without_the_source() {
    let h = Harness::start(
        SimConfig {
            contacts: 300,
            companies: 10,
            deals: 10,
            ..Default::default()
        },
        &["contacts"],
        "",
    )
    .await;
    let (status, report) = h.run_binary(&[], &[]);
    assert!(status.success(), "{report:#?}");
    changed_run(&h).await;
    h.assert_converged("contacts", false).await;

    let listed = loads(&h);
    assert_eq!(listed.len(), 2, "{listed:#?}");
    let (first, second) = (&listed[0], &listed[1]);
    assert_eq!(first["rows"], 300, "{first:#}");
    assert_eq!(first["mode"], "full");
    assert_eq!(second["mode"], "incremental");
    for load in &listed {
        assert_eq!(load["merged"], true, "{load:#}");
        assert!(
            load["checksum"].is_u64() && load["bytes"].as_u64() > Some(0),
            "{load:#}"
        );
        assert!(load["cursor_to"].is_string(), "{load:#}");
    }
    let (_, table, _) = syncline(&h, &["loads"]);
    assert!(
        table.contains(first["load_id"].as_str().unwrap()),
        "{table}"
    );

    h.client()
        .await
        .batch_execute("TRUNCATE crm.contacts")
        .await
        .unwrap();
    let requests = h.sim.hubspot.request_count();
    let first_id = first["load_id"].as_str().unwrap();

    // Merged loads are a no-op without --force.
    let (code, out, err) = syncline(
        &h,
        &["replay", "--stream", "contacts", "--load-id", first_id],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("already merged"), "{out}");
    assert_eq!(count(&h).await, 0);

    // --force applies every load since a time again, oldest first: the table is back.
    let (code, out, err) = syncline(
        &h,
        &[
            "replay",
            "--stream",
            "contacts",
            "--since",
            "2000-01-01",
            "--force",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.matches("re-applied").count(), 2, "{out}");
    h.assert_converged("contacts", false).await;

    // Replaying the older load over newer rows changes nothing: older never over newer.
    let (code, out, err) = syncline(
        &h,
        &[
            "replay",
            "--stream",
            "contacts",
            "--load-id",
            first_id,
            "--force",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("re-applied"), "{out}");
    h.assert_converged("contacts", false).await;
    assert_eq!(
        h.sim.hubspot.request_count(),
        requests,
        "replay called the source"
    );

    let (code, _, err) = syncline(&h, &["replay", "--stream", "contacts", "--load-id", "nope"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("has no staged load nope"), "{err}");

    // The stream goes on from its own state.
    changed_run(&h).await;
    h.assert_converged("contacts", false).await;
}

/// Files left in a folder (the local store leaves emptied folders behind).
fn files_under(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .map(|e| e.unwrap())
        .map(|e| {
            if e.file_type().unwrap().is_dir() {
                files_under(&e.path())
            } else {
                1
            }
        })
        .sum()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_deletes_only_merged_loads_past_retention_never_the_latest_or_an_unmerged_one() {
    let h = Harness::start(
        SimConfig {
            contacts: 200,
            companies: 10,
            deals: 10,
            ..Default::default()
        },
        &["contacts"],
        "",
    )
    .await;
    let (status, report) = h.run_binary(&[], &[]);
    assert!(status.success(), "{report:#?}");
    changed_run(&h).await;
    changed_run(&h).await;
    let merged: Vec<String> = loads(&h)
        .iter()
        .map(|l| l["load_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(merged.len(), 3, "{merged:?}");
    let loads_dir = h.stage_dir().join("crm/contacts/loads");

    // Plant a complete load that never merged (a copy of the first under a new id), and a
    // dead-letter file in the oldest load.
    let unmerged = uuid::Uuid::now_v7().to_string();
    copy_dir(&loads_dir.join(&merged[0]), &loads_dir.join(&unmerged));
    let manifest = loads_dir.join(&unmerged).join("manifest.json");
    let text = std::fs::read_to_string(&manifest)
        .unwrap()
        .replace(&merged[0], &unmerged);
    std::fs::write(&manifest, text).unwrap();
    let dead_letter = loads_dir
        .join(&merged[0])
        .join("dead_letter/part-00000.parquet");
    std::fs::create_dir_all(dead_letter.parent().unwrap()).unwrap();
    std::fs::write(&dead_letter, b"kept").unwrap();
    let listed = loads(&h);
    let planted = listed
        .iter()
        .find(|l| l["load_id"] == unmerged.as_str())
        .unwrap();
    assert_eq!(planted["merged"], false, "{planted:#}");

    // Within retention nothing goes.
    let (code, out, err) = syncline(&h, &["gc", "--older-than", "30d"]);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("deleted"), "{out}");

    let (code, out, err) = syncline(&h, &["gc", "--older-than", "0s", "--dry-run"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.matches("would delete").count(), 2, "{out}");
    assert!(loads_dir.join(&merged[0]).join("manifest.json").exists());

    let (code, out, err) = syncline(&h, &["gc", "--older-than", "0s"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("kept   contacts {unmerged} (not merged)")),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "kept   contacts {} (latest merged load)",
            merged[2]
        )),
        "{out}"
    );
    for old in &merged[..2] {
        assert!(out.contains(&format!("deleted contacts {old}")), "{out}");
        assert!(!loads_dir.join(old).join("manifest.json").exists());
    }
    assert!(dead_letter.exists(), "dead letters are kept unless asked");
    assert_eq!(files_under(&loads_dir.join(&merged[1])), 0, "{out}");
    assert!(loads_dir.join(&merged[2]).join("manifest.json").exists());
    assert!(loads_dir.join(&unmerged).join("manifest.json").exists());
    let listed = loads(&h);
    let collected = listed
        .iter()
        .find(|l| l["load_id"] == merged[0].as_str())
        .unwrap();
    assert_eq!(
        collected["note"], "collected; dead letters kept",
        "{collected:#}"
    );

    let (code, _, err) = syncline(&h, &["gc", "--older-than", "0s", "--dead-letters"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(files_under(&loads_dir.join(&merged[0])), 0);
    assert!(loads_dir.join(&merged[2]).join("manifest.json").exists());
    assert!(loads_dir.join(&unmerged).join("manifest.json").exists());

    // The pipeline goes on; its new load becomes the latest, and the old latest may now go.
    changed_run(&h).await;
    h.assert_converged("contacts", false).await;
    let (code, out, err) = syncline(&h, &["gc", "--older-than", "0s"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("deleted contacts {}", merged[2])),
        "{out}"
    );
    assert!(loads_dir.join(&unmerged).join("manifest.json").exists());

    let (code, _, err) = syncline(&h, &["gc", "--older-than", "30x"]);
    assert_eq!(code, 2, "{err}");
}

/// gc takes each stream's lease while it decides and deletes: a stream whose run holds its
/// lease (stopped after staging) is skipped, named, and nothing of it is deleted; gc exits 1
/// so a scheduler notices. Once the run is done, gc collects the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_leaves_a_stream_alone_while_a_run_holds_its_lease() {
    let h = Harness::start(
        SimConfig {
            contacts: 200,
            companies: 10,
            deals: 10,
            ..Default::default()
        },
        &["contacts"],
        "",
    )
    .await;
    let (status, report) = h.run_binary(&[], &[]);
    assert!(status.success(), "{report:#?}");
    changed_run(&h).await;
    let merged: Vec<String> = loads(&h)
        .iter()
        .map(|l| l["load_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(merged.len(), 2, "{merged:?}");
    let loads_dir = h.stage_dir().join("crm/contacts/loads");

    h.sim.hubspot.update("contacts", 20);
    settle(&h).await;
    let mut run = Background::spawn(&h, &[("SYNCLINE_STOP_AT", "after-stage")]);
    until_stopped(&mut run).await;

    let (code, out, err) = syncline(&h, &["gc", "--older-than", "0s"]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        err.contains("skipped stream contacts: a run holds its lease")
            && err.contains(&format!("is being synced by pid {}", run.pid())),
        "{err}"
    );
    assert!(!out.contains("deleted"), "{out}");
    for load in &merged {
        assert!(
            loads_dir.join(load).join("manifest.json").exists(),
            "{load}"
        );
    }
    // A dry run deletes nothing and takes no lease: it may look while the run holds it.
    let (code, out, err) = syncline(&h, &["gc", "--older-than", "0s", "--dry-run"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("would delete contacts {}", merged[0])),
        "{out}"
    );

    run.cont();
    let (status, stderr) = run.wait();
    assert!(status.success(), "{stderr}");
    h.assert_converged("contacts", false).await;
    let (code, out, err) = syncline(&h, &["gc", "--older-than", "0s"]);
    assert_eq!(code, 0, "{err}");
    for old in &merged {
        assert!(out.contains(&format!("deleted contacts {old}")), "{out}");
    }
}

/// The codecs of the Parquet files staged for `load_id` (column chunks of every row group).
fn staged_codecs(h: &Harness, load_id: &str) -> std::collections::BTreeSet<String> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let mut codecs = std::collections::BTreeSet::new();
    let mut pending = vec![h.stage_dir()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("read the stage") {
            let path = entry.expect("stage entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "parquet")
                && path.to_string_lossy().contains(load_id)
                && !path.to_string_lossy().contains("dead")
            {
                let file = std::fs::File::open(&path).expect("open a staged file");
                let reader = SerializedFileReader::new(file).expect("a Parquet file");
                for group in reader.metadata().row_groups() {
                    for column in group.columns() {
                        codecs.insert(format!("{:?}", column.compression()));
                    }
                }
            }
        }
    }
    codecs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_staging_codec_follows_the_config_and_loads_of_either_codec_replay() {
    let h = Harness::start(
        SimConfig {
            contacts: 200,
            companies: 10,
            deals: 10,
            ..Default::default()
        },
        &["contacts"],
        "",
    )
    .await;
    let (status, report) = h.run_binary(&[], &[]);
    assert!(status.success(), "{report:#?}");
    // Edited between runs, as an operator would.
    let text = std::fs::read_to_string(&h.config_path).unwrap();
    let edited = text.replacen("[staging]\n", "[staging]\ncompression = \"zstd\"\n", 1);
    assert_ne!(text, edited);
    std::fs::write(&h.config_path, edited).unwrap();
    changed_run(&h).await;

    let listed = loads(&h);
    assert_eq!(listed.len(), 2, "{listed:#?}");
    let first = listed[0]["load_id"].as_str().unwrap();
    let second = listed[1]["load_id"].as_str().unwrap();
    assert_eq!(
        staged_codecs(&h, first).into_iter().collect::<Vec<_>>(),
        ["SNAPPY"],
        "the default codec"
    );
    assert_eq!(
        staged_codecs(&h, second).into_iter().collect::<Vec<_>>(),
        ["ZSTD(ZstdLevel(1))"],
        "`staging.compression = \"zstd\"`"
    );

    h.client()
        .await
        .batch_execute("TRUNCATE crm.contacts")
        .await
        .unwrap();
    let (code, out, err) = syncline(
        &h,
        &[
            "replay",
            "--stream",
            "contacts",
            "--since",
            "2000-01-01",
            "--force",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.matches("re-applied").count(), 2, "{out}");
    h.assert_converged("contacts", false).await;

    let text = std::fs::read_to_string(&h.config_path).unwrap();
    std::fs::write(
        &h.config_path,
        text.replacen("compression = \"zstd\"", "compression = \"brotli\"", 1),
    )
    .unwrap();
    let (code, _, err) = syncline(&h, &["check"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("unknown variant `brotli`, expected one of `snappy`, `zstd`, `none`"),
        "{err}"
    );
}
