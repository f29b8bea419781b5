//! Staging and state on `s3://` against a real S3-compatible server (moto, started by the
//! test), and the stream lease: two runs started together, a run that outlives its lease, a
//! lease left by a killed run.
//!
//! moto checks `If-None-Match` but does not serialise concurrent writers (see
//! shared test-services notes), so the test that starts two runs at once stages on the local
//! file system, whose create-if-absent is atomic; the lease tests on moto move one run at a time.

use std::os::unix::process::ExitStatusExt;
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use syncline::reconcile::report::Status;
use syncline::sim::SimConfig;
use syncline::state::StreamState;

use crate::support::background::{Background, until_stopped};
use crate::support::files::Moto;
use crate::support::{Harness, postgres_destination, settle};

const ROOT: &str = "syncline";

/// Rewrites the harness's config to stage (and keep state and leases) in `s3://stage/syncline`
/// on moto, with `pipeline` lines added to `[pipeline]`.
fn stage_on_s3(h: &Harness, moto: &Moto, streams: &[&str], pipeline: &str) {
    h.write_hubspot_config(streams, pipeline, &postgres_destination("crm"), "");
    let text = std::fs::read_to_string(&h.config_path).unwrap();
    let local = format!("url = \"file://{}\"", h.stage_dir().display());
    assert!(text.contains(&local), "{text}");
    let s3 = format!(
        "url = \"s3://stage/{ROOT}\"\n[staging.s3]\nendpoint = \"{}\"\naccess_key_id = \"test\"\nsecret_access_key = \"test\"\nallow_http = true",
        moto.endpoint
    );
    std::fs::write(&h.config_path, text.replace(&local, &s3)).unwrap();
}

/// Rewrites a files harness's config to stage in `s3://stage/syncline` through `endpoint` (and,
/// for a lake destination, to keep the lake there: its default is under the staging URL).
fn stage_files_on_s3(h: &crate::support::files::FilesHarness, endpoint: &str) {
    let text = std::fs::read_to_string(&h.config_path).unwrap();
    let local = format!("url = \"file://{}\"", h.dir.path().join("stage").display());
    assert!(text.contains(&local), "{text}");
    let s3 = format!(
        "url = \"s3://stage/{ROOT}\"\n[staging.s3]\nendpoint = \"{endpoint}\"\naccess_key_id = \"test\"\nsecret_access_key = \"test\"\nallow_http = true",
    );
    std::fs::write(&h.config_path, text.replace(&local, &s3)).unwrap();
}

fn bucket(moto: &Moto) -> Arc<dyn ObjectStore> {
    Arc::new(moto.store("stage"))
}

async fn state_in(store: &dyn ObjectStore, stream: &str) -> (Vec<u8>, StreamState) {
    let path = Path::from(format!("{ROOT}/crm/_state/{stream}.json"));
    let bytes = store
        .get(&path)
        .await
        .expect("state is in the bucket")
        .bytes()
        .await
        .unwrap()
        .to_vec();
    let state = serde_json::from_slice(&bytes).expect("state is JSON");
    (bytes, state)
}

async fn keys_under(store: &dyn ObjectStore, prefix: &str) -> Vec<String> {
    let listed: Vec<_> = store
        .list(Some(&Path::from(prefix)))
        .try_collect()
        .await
        .unwrap();
    listed.iter().map(|m| m.location.to_string()).collect()
}

/// Runs `syncline run` until it is no longer refused a held lease; returns the last exit
/// code and stderr. Each refusal must be the documented one.
fn run_until_lease_is_free(h: &Harness) -> (i32, String) {
    loop {
        let (code, stderr) = crate::support::files::run_binary(&h.config_path, &[], &h.env());
        if code == 1 && stderr.contains("is being synced by pid") {
            assert!(stderr.contains("expires at"), "{stderr}");
            std::thread::sleep(Duration::from_millis(200));
            continue;
        }
        return (code, stderr);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hubspot_to_postgres_with_staging_and_state_on_s3() {
    let moto = Moto::start("stage").await;
    let streams = ["contacts", "companies"];
    let h = Harness::start(
        SimConfig {
            contacts: 1500,
            companies: 200,
            deals: 10,
            ..Default::default()
        },
        &streams,
        "",
    )
    .await;
    stage_on_s3(&h, &moto, &streams, "");
    let store = bucket(&moto);

    let (status, report) = h.run_binary(&[], &[]);
    let report = report.expect("report");
    assert!(status.success(), "{report:#?}");
    for stream in streams {
        h.assert_converged(stream, false).await;
    }
    let (_, state) = state_in(store.as_ref(), "contacts").await;
    assert!(
        state.cursor.is_some() && state.pending.is_none(),
        "{state:#?}"
    );
    let staged = keys_under(store.as_ref(), &format!("{ROOT}/crm/contacts/loads")).await;
    assert!(
        staged.iter().any(|k| k.ends_with(".parquet"))
            && staged.iter().any(|k| k.ends_with("manifest.json")),
        "{staged:?}"
    );
    assert!(
        !h.stage_dir().exists(),
        "nothing was staged on the local disk"
    );

    // Incremental runs read only what changed, from the cursor saved in the bucket.
    for round in 0..2 {
        h.sim.hubspot.update("contacts", 100);
        h.sim.hubspot.insert("contacts", 30);
        h.sim.hubspot.archive("contacts", 10);
        h.sim.hubspot.update("companies", 20);
        settle(&h).await;
        let report = h.run(false).await;
        assert_eq!(report.status, Status::Success, "round {round}: {report:#?}");
        let contacts = &report.streams[0];
        assert_eq!(
            contacts.mode,
            Some(syncline::load::LoadMode::Incremental),
            "round {round}: {contacts:#?}"
        );
        for stream in streams {
            h.assert_converged(stream, false).await;
        }
    }
    let (_, after) = state_in(store.as_ref(), "contacts").await;
    assert!(after.cursor > state.cursor, "{state:#?} -> {after:#?}");
    // Each run released its lease: the chain's head says so, and the next run took it at once.
    let lease = keys_under(store.as_ref(), &format!("{ROOT}/crm/_locks/contacts")).await;
    assert_eq!(lease.len(), 1, "{lease:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runs_of_one_stream_started_together_one_proceeds_one_is_refused() {
    let h = Harness::start(
        SimConfig {
            contacts: 500,
            companies: 10,
            deals: 10,
            ..Default::default()
        },
        &["contacts"],
        "",
    )
    .await;
    // The run that takes the lease stops itself once its load is staged, holding the lease,
    // so the other always meets it, however the two are scheduled.
    let stop = [("SYNCLINE_STOP_AT", "after-stage")];
    let mut first = Background::spawn(&h, &stop);
    let mut second = Background::spawn(&h, &stop);
    let (holder, refused) = loop {
        if let Some(status) = first.exited() {
            until_stopped(&mut second).await;
            break (second, (status, first.stderr()));
        }
        if let Some(status) = second.exited() {
            until_stopped(&mut first).await;
            break (first, (status, second.stderr()));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (status, stderr) = refused;
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("stream contacts is being synced by pid")
            && stderr.contains(&format!("pid {}", holder.pid()))
            && stderr.contains("expires at"),
        "{stderr}"
    );
    assert!(holder.is_stopped());
    assert_eq!(h.ledger_count().await, 0, "the refused run merged nothing");

    holder.cont();
    let (status, stderr) = holder.wait();
    assert!(status.success(), "{stderr}");
    h.assert_converged("contacts", false).await;
}

/// A run stopped (as a paused VM would be) past its lease's TTL is taken over; when it
/// continues it finds the lease lost and stops before merging or writing state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_lease_was_taken_over_writes_no_state() {
    let moto = Moto::start("stage").await;
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
    stage_on_s3(&h, &moto, &["contacts"], "lock_ttl_seconds = 10");
    let store = bucket(&moto);

    let mut paused = Background::spawn(&h, &[("SYNCLINE_STOP_AT", "after-stage")]);
    until_stopped(&mut paused).await;
    let (_, left) = state_in(store.as_ref(), "contacts").await;
    let pending = left.pending.clone().expect("the paused run staged a load");

    // Another run is refused until the paused run's lease expires, then takes over and
    // finishes the staged load as its own recovery.
    let (code, stderr) = run_until_lease_is_free(&h);
    assert_eq!(code, 0, "{stderr}");
    h.assert_converged("contacts", false).await;
    let (written, state) = state_in(store.as_ref(), "contacts").await;
    assert!(
        state.pending.is_none() && state.cursor.is_some(),
        "{state:#?}"
    );
    let ledger = h.ledger_count().await;
    assert!(ledger >= 1);

    paused.cont();
    let (status, stderr) = paused.wait();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("this run lost its lease to another run"),
        "{stderr}"
    );
    let (after, _) = state_in(store.as_ref(), "contacts").await;
    assert_eq!(
        String::from_utf8_lossy(&after),
        String::from_utf8_lossy(&written),
        "the run that lost its lease wrote state"
    );
    assert_eq!(
        h.ledger_count().await,
        ledger,
        "the run that lost its lease merged"
    );
    let committed: i64 = h
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM crm._syncline_loads WHERE load_id = $1",
            &[&pending.load_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(committed, 1, "the staged load merged exactly once");
    h.assert_converged("contacts", false).await;
}

/// `syncline status --json`: the stream's row.
fn status_of(h: &Harness, stream: &str) -> serde_json::Value {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_syncline"))
        .args(["status", "--json", "--config"])
        .arg(&h.config_path)
        .envs(h.env())
        .output()
        .expect("spawn syncline status");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rows: Vec<serde_json::Value> =
        serde_json::from_slice(&output.stdout).expect("status --json is JSON");
    rows.into_iter()
        .find(|r| r["stream"] == stream)
        .expect("the stream's row")
}

/// A run slower than its lease's TTL (stalled after staging, alive, as behind a slow
/// destination) keeps renewing its lease: a run started meanwhile is refused, `status` names
/// the holder, and the slow run then merges and completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_slower_than_its_lease_ttl_keeps_its_lease_and_completes() {
    let moto = Moto::start("stage").await;
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
    stage_on_s3(&h, &moto, &["contacts"], "lock_ttl_seconds = 10");
    let store = bucket(&moto);
    let go = h.dir.path().join("go");
    let mut slow = Background::spawn(
        &h,
        &[
            ("SYNCLINE_STALL_AT", "after-stage"),
            ("SYNCLINE_STALL_UNTIL", go.to_str().unwrap()),
        ],
    );
    // Its load is staged and pending: the run waits at its stall point.
    let state_path = Path::from(format!("{ROOT}/crm/_state/contacts.json"));
    loop {
        if let Some(status) = slow.exited() {
            panic!(
                "the run exited ({status:?}) instead of stalling: {}",
                slow.stderr()
            );
        }
        if let Ok(got) = store.get(&state_path).await {
            let state: StreamState = serde_json::from_slice(&got.bytes().await.unwrap()).unwrap();
            if state.pending.is_some() {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let lease_dir = format!("{ROOT}/crm/_locks/contacts");
    let mut chain = keys_under(store.as_ref(), &lease_dir).await;
    chain.sort();
    let head = Path::from(chain.last().expect("the run holds a lease").as_str());
    let record: serde_json::Value =
        serde_json::from_slice(&store.get(&head).await.unwrap().bytes().await.unwrap()).unwrap();
    let acquired: chrono::DateTime<chrono::Utc> =
        record["acquired_at"].as_str().unwrap().parse().unwrap();
    // Wait until the lease as first taken would have expired twice over.
    while chrono::Utc::now() < acquired + chrono::Duration::seconds(20) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(slow.exited().is_none(), "{}", slow.stderr());

    let (code, stderr) = crate::support::files::run_binary(&h.config_path, &[], &h.env());
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "stream contacts is being synced by pid {}",
            slow.pid()
        )),
        "{stderr}"
    );

    let lease = status_of(&h, "contacts")["lease"].clone();
    assert_eq!(lease["pid"], slow.pid(), "{lease:#}");
    assert_eq!(lease["expired"], false, "{lease:#}");
    assert!(
        lease["run_id"].as_str().is_some_and(|id| !id.is_empty())
            && lease["since"] == record["acquired_at"]
            && lease["expires_at"].is_string()
            && lease["host"].is_string(),
        "{lease:#}"
    );
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_syncline"))
        .args(["status", "--config"])
        .arg(&h.config_path)
        .envs(h.env())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains(&format!(
            "lease: held by pid {} on {} (run {}) since",
            slow.pid(),
            lease["host"].as_str().unwrap(),
            lease["run_id"].as_str().unwrap()
        )) && text.contains("expires at"),
        "{text}"
    );

    std::fs::write(&go, b"").unwrap();
    let (status, stderr) = slow.wait();
    assert!(status.success(), "{stderr}");
    h.assert_converged("contacts", false).await;
    assert_eq!(h.ledger_count().await, 1);
    let (_, state) = state_in(store.as_ref(), "contacts").await;
    assert!(
        state.pending.is_none() && state.cursor.is_some(),
        "{state:#?}"
    );
    assert_eq!(
        status_of(&h, "contacts")["lease"],
        serde_json::Value::Null,
        "a released lease has no holder"
    );
}

/// A SIGKILLed run's lease stays behind. Written by a process of this host that is gone, it
/// is free at once; written on another machine, it is taken over only after its TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_left_by_a_killed_run_is_taken_over_after_it_expires() {
    let moto = Moto::start("stage").await;
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
    stage_on_s3(&h, &moto, &["contacts"], "lock_ttl_seconds = 10");
    let store = bucket(&moto);

    let (status, _) = h.run_binary(&[], &[("SYNCLINE_CRASH_AT", "after-stage")]);
    assert_eq!(status.signal(), Some(9), "{status:?}");
    let lease_dir = format!("{ROOT}/crm/_locks/contacts");
    let mut left = keys_under(store.as_ref(), &lease_dir).await;
    left.sort();
    let head = Path::from(left.last().expect("the killed run left its lease").as_str());
    // Make it a lease from a run on another machine, freshly renewed.
    let mut record: serde_json::Value =
        serde_json::from_slice(&store.get(&head).await.unwrap().bytes().await.unwrap()).unwrap();
    assert_eq!(record["released"], serde_json::json!(false), "{record}");
    record["host"] = "another-machine".into();
    record["written_at"] = chrono::Utc::now().to_rfc3339().into();
    store
        .put(&head, serde_json::to_vec(&record).unwrap().into())
        .await
        .unwrap();

    let (code, stderr) = crate::support::files::run_binary(&h.config_path, &[], &h.env());
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("stream contacts is being synced by pid")
            && stderr.contains("on another-machine"),
        "{stderr}"
    );
    let (code, stderr) = run_until_lease_is_free(&h);
    assert_eq!(code, 0, "{stderr}");
    h.assert_converged("contacts", false).await;
    let (_, state) = state_in(store.as_ref(), "contacts").await;
    assert!(state.pending.is_none(), "{state:#?}");
}

/// A PostgreSQL CDC pipeline (logical replication) staging and keeping its state, including
/// the replication position, on `s3://`: a snapshot, then changes streamed run after run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_cdc_with_staging_and_state_on_s3() {
    let moto = Moto::start("stage").await;
    let pg = tokio::task::spawn_blocking(|| {
        crate::support::TestPostgres::start_with_wal_level("logical")
    })
    .await
    .unwrap();
    let source_url = pg.create_database("source");
    let dest_url = pg.create_database("dest");
    let source = crate::support::connect(&source_url).await;
    source
        .batch_execute(
            "CREATE TABLE contacts (id bigint PRIMARY KEY, email text, score integer);
             INSERT INTO contacts SELECT i, 'c' || i || '@example.com', i FROM generate_series(1, 2000) AS i;",
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cdc.toml");
    std::fs::write(
        &config,
        format!(
            "[pipeline]\nname = \"cdc\"\nbatch_rows = 500\n\
             [staging]\nurl = \"s3://stage/{ROOT}\"\n\
             [staging.s3]\nendpoint = \"{endpoint}\"\naccess_key_id = \"test\"\nsecret_access_key = \"test\"\nallow_http = true\n\
             [source]\ntype = \"postgres\"\nurl = \"${{SOURCE_URL}}\"\nstreams = [\"contacts\"]\n\
             {destination}\n",
            endpoint = moto.endpoint,
            destination = postgres_destination("crm").replace("TEST_DATABASE_URL", "DEST_URL"),
        ),
    )
    .unwrap();
    let env = vec![
        ("SOURCE_URL", source_url.clone()),
        ("DEST_URL", dest_url.clone()),
    ];
    let dest = crate::support::connect(&dest_url).await;
    let compare =
        "SELECT id::text || ':' || coalesce(email, '') || ':' || score::text FROM {} ORDER BY id";
    let converged = || async {
        let want: Vec<String> = source
            .query(&compare.replace("{}", "contacts"), &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let got: Vec<String> = dest
            .query(&compare.replace("{}", "crm.contacts"), &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(want.len(), got.len(), "row counts differ");
        assert!(want == got, "rows differ");
    };

    let (code, stderr) = crate::support::files::run_binary(&config, &[], &env);
    assert_eq!(code, 0, "{stderr}");
    converged().await;
    let store = bucket(&moto);
    let path = Path::from(format!("{ROOT}/cdc/_state/contacts.json"));
    let first: StreamState =
        serde_json::from_slice(&store.get(&path).await.unwrap().bytes().await.unwrap()).unwrap();
    // The CDC cursor is the confirmed replication position (LSN).
    assert!(first.cursor.is_some(), "{first:#?}");

    for round in 0..2 {
        source
            .batch_execute(&format!(
                "UPDATE contacts SET score = score + 1000 WHERE id % 10 = {round};
                 DELETE FROM contacts WHERE id % 97 = {round};
                 INSERT INTO contacts SELECT i, NULL, -i FROM generate_series(5000 + {round} * 100, 5049 + {round} * 100) AS i;"
            ))
            .await
            .unwrap();
        let (code, stderr) = crate::support::files::run_binary(&config, &[], &env);
        assert_eq!(code, 0, "round {round}: {stderr}");
        converged().await;
    }
    let last: StreamState =
        serde_json::from_slice(&store.get(&path).await.unwrap().bytes().await.unwrap()).unwrap();
    assert!(
        last.cursor > first.cursor,
        "the replication position moved: {first:#?} -> {last:#?}"
    );
    assert!(last.pending.is_none(), "{last:#?}");
}

/// `count` JSONL records of about `width` bytes of incompressible text each: a staged
/// Parquet file well past object_store's 10 MB multipart threshold.
fn wide_jsonl(count: u64, width: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut out = String::with_capacity(count as usize * (width + 32));
    for id in 1..=count {
        out.push_str(&format!("{{\"id\": {id}, \"blob\": \""));
        for _ in 0..width {
            // xorshift64: cheap, and zstd finds nothing to squeeze in it.
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            out.push(ALPHABET[(seed % 64) as usize] as char);
        }
        out.push_str("\"}\n");
    }
    out
}

/// The S3 server goes away in the middle of a multipart upload of a large staged file (a
/// proxy in front of moto cuts every connection after 6 MB): the run fails cleanly, exit 1;
/// no manifest lists the partial file and nothing of the load looks complete; the upload is
/// left incomplete (what the bucket's abort-incomplete-multipart lifecycle rule is for).
/// With the server back, the next run loads everything, exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_cut_midway_fails_cleanly_and_the_next_run_loads_everything_once() {
    use crate::support::cut_proxy::CutProxy;
    use crate::support::files::FilesHarness;

    let moto = Moto::start("stage").await;
    let proxy = CutProxy::start(&moto.endpoint).await;
    let h = FilesHarness::start().await;
    let rows = 24_000u64;
    h.write_file(
        "contacts/big.jsonl",
        &wide_jsonl(rows, 800),
        1_709_251_200_000,
    );
    h.write_config(
        &["contacts"],
        "[source.files.contacts]\nglob = \"contacts/*.jsonl\"\nformat = \"jsonl\"\nkey = \"id\"\n",
    );
    stage_files_on_s3(&h, &proxy.endpoint);
    let store = bucket(&moto);
    let loads_prefix = format!("{ROOT}/files/contacts/loads");

    proxy.cut_after(6 * 1024 * 1024);
    let (code, stderr) = h.run_binary(&[]);
    assert!(proxy.is_cut(), "the run never sent 6 MB: {stderr}");
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("contacts") && stderr.contains("part-00000.parquet"),
        "the failure names the stream and the file: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");

    // Nothing of the load looks complete: no manifest, no staged file as an object, no
    // pending load, no cursor; the destination has nothing.
    let left = keys_under(store.as_ref(), &loads_prefix).await;
    assert!(
        !left
            .iter()
            .any(|k| k.ends_with("manifest.json") || k.ends_with(".parquet")),
        "{left:?}"
    );
    if let Ok(got) = store
        .get(&Path::from(format!("{ROOT}/files/_state/contacts.json")))
        .await
    {
        let state: StreamState = serde_json::from_slice(&got.bytes().await.unwrap()).unwrap();
        assert!(
            state.pending.is_none() && state.cursor.is_none(),
            "{state:#?}"
        );
    }
    // The cut came in the middle of a multipart upload, which the server still holds open.
    let uploads = reqwest::get(format!("{}/stage?uploads", moto.endpoint))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        uploads.contains("part-00000.parquet") && uploads.contains("<UploadId>"),
        "no multipart upload was in progress: {uploads}"
    );

    proxy.restore();
    let (code, stderr) = h.run_binary(&[]);
    assert_eq!(code, 0, "{stderr}");
    let (code, stderr) = h.run_binary(&[]);
    assert_eq!(code, 0, "a run with nothing new: {stderr}");
    let client = h.client().await;
    let row = client
        .query_one(
            "SELECT count(*), count(DISTINCT id), sum(length(blob)) FROM files.contacts",
            &[],
        )
        .await
        .unwrap();
    let (count, distinct, bytes): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    assert_eq!((count, distinct), (rows as i64, rows as i64));
    assert_eq!(bytes, rows as i64 * 800);
    assert_eq!(h.ledger_count().await, 1, "the load merged exactly once");
    let manifests: Vec<_> = keys_under(store.as_ref(), &loads_prefix)
        .await
        .into_iter()
        .filter(|k| k.ends_with("manifest.json"))
        .collect();
    assert_eq!(manifests.len(), 1, "{manifests:?}");
}

/// `syncline run` with a clean AWS environment plus `env`: no `AWS_*` variable of the test
/// process leaks in. Returns the exit code and stderr.
fn run_with_aws_env(h: &Harness, env: &[(&str, &str)]) -> (i32, String) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_syncline"));
    command.args(["run", "--config"]).arg(&h.config_path);
    for (key, _) in std::env::vars() {
        if key.starts_with("AWS_") {
            command.env_remove(key);
        }
    }
    command.envs(h.env()).envs(env.iter().copied());
    let output = command.output().expect("spawn syncline");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// S3 credentials from the standard AWS profile files, against a moto that checks
/// signatures: with no keys in the config or the environment, the `default` profile of
/// `~/.aws/credentials` loads the pipeline; `AWS_PROFILE` picks a profile of `~/.aws/config`
/// whose keys the server refuses (exit 2, the refusal named), or a profile that does not
/// exist (exit 2, naming the profile and the files).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_credentials_come_from_the_aws_profile_files() {
    let (moto, key, secret) = Moto::start_with_auth("stage").await;
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
    stage_on_s3(&h, &moto, &["contacts"], "");
    let text = std::fs::read_to_string(&h.config_path).unwrap();
    let without_keys = text.replace(
        "access_key_id = \"test\"\nsecret_access_key = \"test\"\n",
        "",
    );
    assert_ne!(text, without_keys);
    std::fs::write(&h.config_path, without_keys).unwrap();
    let home = h.dir.path().join("home");
    std::fs::create_dir_all(home.join(".aws")).unwrap();
    std::fs::write(
        home.join(".aws/credentials"),
        format!("[default]\naws_access_key_id = {key}\naws_secret_access_key = {secret}\n"),
    )
    .unwrap();
    std::fs::write(
        home.join(".aws/config"),
        "[default]\nregion = us-east-1\n\n[profile wrong]\naws_access_key_id = AKIAWRONGWRONGWRONG1\naws_secret_access_key = not-the-secret\n",
    )
    .unwrap();
    let home = home.to_str().unwrap();

    let (code, stderr) = run_with_aws_env(&h, &[("HOME", home)]);
    assert_eq!(code, 0, "{stderr}");
    h.assert_converged("contacts", false).await;
    let (_, state) = state_in(bucket_with(&moto, &key, &secret).as_ref(), "contacts").await;
    assert!(state.cursor.is_some(), "{state:#?}");

    let (code, stderr) = run_with_aws_env(&h, &[("HOME", home), ("AWS_PROFILE", "wrong")]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("403") && stderr.contains("InvalidAccessKeyId"),
        "the refusal is named: {stderr}"
    );
    assert!(!stderr.contains("not-the-secret"), "{stderr}");

    let (code, stderr) = run_with_aws_env(&h, &[("HOME", home), ("AWS_PROFILE", "nope")]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("S3 credentials from AWS profile `nope`")
            && stderr.contains(".aws/credentials")
            && stderr.contains("AWS_PROFILE"),
        "{stderr}"
    );
}

fn bucket_with(moto: &Moto, key: &str, secret: &str) -> Arc<dyn ObjectStore> {
    Arc::new(
        object_store::aws::AmazonS3Builder::new()
            .with_endpoint(&moto.endpoint)
            .with_bucket_name("stage")
            .with_region("us-east-1")
            .with_access_key_id(key)
            .with_secret_access_key(secret)
            .with_allow_http(true)
            .build()
            .unwrap(),
    )
}

/// A lake on `s3://` (under the staging URL, the default) takes a merge into a table that has
/// rows: the rewrite reads the table's data files and writes new ones through the bucket, and
/// a full refresh of the same rows writes nothing. Both run in passes of 50 keys
/// (`merge_keys_per_pass`), so later passes read the files earlier ones wrote from the bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lake_on_s3_merges_into_a_table_with_rows() {
    use crate::support::files::FilesHarness;

    let moto = Moto::start("stage").await;
    let h = FilesHarness::start().await;
    h.write_contacts("a.jsonl", 1..=300, "contact", 1_709_251_200_000);
    h.write_contacts_lake_config();
    stage_files_on_s3(&h, &moto.endpoint);
    h.add_destination_key("merge_keys_per_pass = 50");
    let (code, stderr) = h.run_binary(&[]);
    assert_eq!(code, 0, "first load: {stderr}");

    h.write_contacts("b.jsonl", 201..=400, "changed", 1_709_251_300_000);
    let merged = h.run_reported(&[], "the merge");
    assert_eq!(
        (&merged["rows_inserted"], &merged["rows_updated"]),
        (&serde_json::json!(100), &serde_json::json!(100)),
        "{merged:#}"
    );
    let rows = h
        .lake_rows(
            "SELECT count(*), count(DISTINCT id), \
             sum(CASE WHEN name LIKE 'changed%' THEN 1 ELSE 0 END) FROM contacts",
        )
        .await;
    assert_eq!(
        rows,
        [[
            Some("400".to_owned()),
            Some("400".to_owned()),
            Some("200".to_owned())
        ]]
    );
    let keys = keys_under(bucket(&moto).as_ref(), ROOT).await;
    assert!(
        keys.iter()
            .any(|key| key.contains("/lake/contacts/") && key.ends_with(".parquet")),
        "the table's files are in the bucket: {keys:?}"
    );

    let refreshed = h.run_reported(&["--full-refresh"], "the full refresh");
    assert_eq!(
        (&refreshed["rows_inserted"], &refreshed["rows_updated"]),
        (&serde_json::json!(0), &serde_json::json!(0)),
        "{refreshed:#}"
    );
    assert_eq!(
        refreshed["reconciliation"]["matched"], true,
        "{refreshed:#}"
    );
}
