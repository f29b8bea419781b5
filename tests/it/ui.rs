//! `syncline ui`: the status page served by the binary, read over plain HTTP and in headless
//! Chromium after a demo run, checked against what the demo says the destination holds.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use syncline::config::Config;
use syncline::stage::Stage;
use syncline::state::{LastLoad, StateStore};

/// A `syncline ui` process, stopped when dropped.
struct Ui {
    child: Child,
    url: String,
}

impl Ui {
    /// Starts `syncline ui` on a free port and waits for the address it prints.
    fn start(config: &Path) -> Ui {
        let mut child = Command::new(env!("CARGO_BIN_EXE_syncline"))
            .args(["ui", "--listen", "127.0.0.1:0", "--config"])
            .arg(config)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("syncline ui starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_string();
        Ui { child, url }
    }
}

impl Drop for Ui {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Debian's `chromium`, or the browser SYNCLINE_CHROMIUM names (`.ci/run` installs it).
fn chromium() -> PathBuf {
    if let Some(path) = std::env::var_os("SYNCLINE_CHROMIUM") {
        return PathBuf::from(path);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("chromium"))
        .find(|p| p.is_file())
        .expect("chromium is not installed: `apt-get install -y chromium` (as .ci/run does), or set SYNCLINE_CHROMIUM")
}

/// Runs headless Chromium on `url` with `args`; returns stdout.
fn browse(profile: &Path, url: &str, args: &[&str]) -> String {
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--no-first-run",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .output()
        .expect("chromium runs");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `1234` as the page writes it: `1,234`.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The part of the page that is the card of `stream`.
fn card<'a>(html: &'a str, stream: &str) -> &'a str {
    let start = html
        .find(&format!("<section class=\"stream\" id=\"stream-{stream}\""))
        .unwrap_or_else(|| panic!("no card for {stream} in:\n{html}"));
    let rest = &html[start..];
    &rest[..rest.find("</section>").unwrap()]
}

/// Replaces the value of `key = "..."` in a TOML file.
fn set_toml_string(path: &Path, key: &str, value: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    let changed: Vec<String> = text
        .lines()
        .map(|line| {
            if line.starts_with(&format!("{key} = ")) {
                format!("{key} = \"{value}\"")
            } else {
                line.to_string()
            }
        })
        .collect();
    assert_ne!(changed.join("\n"), text.trim_end(), "no {key} in {text}");
    std::fs::write(path, changed.join("\n") + "\n").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_after_a_demo_shows_every_stream_its_figures_and_chart_and_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let demo_dir = dir.path().join("demo");
    let out = Command::new(env!("CARGO_BIN_EXE_syncline"))
        .args([
            "demo",
            "--contacts",
            "300",
            "--companies",
            "60",
            "--deals",
            "90",
        ])
        .args(["--json", "--dir"])
        .arg(&demo_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();

    // A secret the page must never show, set on purpose.
    let secret = "pat-na1-ui-test-secret-7c3f9e1d";
    let config_path = demo_dir.join("crm.toml");
    set_toml_string(&config_path, "token", secret);

    // A run holds the deals stream's lease while the page is read: it must name this process.
    let config = Config::load(&config_path).unwrap();
    let state = StateStore::new(
        &Stage::open(&config.staging).unwrap(),
        &config.pipeline.name,
    );
    let lock = state.lock("deals", 600).await.unwrap();

    let ui = Ui::start(&config_path);
    let profile = dir.path().join("chromium-profile");
    let dom = browse(&profile, &ui.url, &["--dump-dom"]);
    let screenshot = std::env::var_os("SYNCLINE_UI_SCREENSHOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.path().join("ui.png"));
    let _ = std::fs::remove_file(&screenshot);
    browse(
        &profile,
        &ui.url,
        &[
            &format!("--screenshot={}", screenshot.display()),
            "--window-size=1280,2000",
        ],
    );
    let png = std::fs::read(&screenshot).expect("chromium wrote the screenshot");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
    assert_eq!(width, 1280, "the screenshot is not of the window");

    let status = Command::new(env!("CARGO_BIN_EXE_syncline"))
        .args(["status", "--json", "--config"])
        .arg(&config_path)
        .output()
        .unwrap();
    let text = Command::new(env!("CARGO_BIN_EXE_syncline"))
        .args(["status", "--config"])
        .arg(&config_path)
        .output()
        .unwrap();
    lock.release().await.unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains(&format!("lease: held by pid {} on ", std::process::id())),
        "{text}"
    );
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();

    assert!(!dom.contains(secret), "the secret is on the page");
    assert!(dom.contains("<title>demo · syncline</title>"), "{dom}");
    let pid = std::process::id().to_string();
    for (i, stream) in ["contacts", "companies", "deals"].into_iter().enumerate() {
        let card = card(&dom, stream);
        // The destination's row count, as the demo read it back from the lake.
        let rows = summary["reconcile"][i]["destination"]["rows"]
            .as_u64()
            .unwrap();
        assert_eq!(summary["reconcile"][i]["stream"], stream);
        assert!(
            card.contains(&format!("data-figure=\"live-rows\">{}<", grouped(rows))),
            "{stream}: live rows {rows} not on the page:\n{card}"
        );
        let last = &summary["incremental"][i];
        for (class, field) in [("ins", "inserted"), ("upd", "updated"), ("del", "deleted")] {
            let n = last[field].as_u64().unwrap();
            assert!(
                card.contains(&format!(
                    "<span class=\"num {class}\">{}</span> {field}",
                    grouped(n)
                )),
                "{stream}: last load's {field} ({n}) not on the page:\n{card}"
            );
        }
        // The chart: one bar per load, the full and the incremental one.
        assert!(
            card.contains("<svg class=\"chart\""),
            "{stream}: no chart:\n{card}"
        );
        assert_eq!(
            card.matches("<g class=\"load\"").count(),
            2,
            "{stream}: bars:\n{card}"
        );
        assert!(card.contains("✓ none"), "{stream}: failures:\n{card}");
        let holder = &status[i]["lease"];
        if stream == "deals" {
            assert!(card.contains(&format!("● pid {pid} on ")), "{card}");
            assert_eq!(holder["pid"].to_string(), pid, "{status}");
        } else {
            assert!(card.contains("no run holds the lease"), "{card}");
            assert!(holder.is_null(), "{status}");
        }
    }
}

/// A pipeline with no state yet, and one stream whose state holds a failure whose reason looks
/// like markup: the page escapes it, answers 404 elsewhere and never shows the secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_over_http_escapes_values_and_answers_404_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "super-secret-token-0b5e";
    let config_path = dir.path().join("pipeline.toml");
    std::fs::write(
        &config_path,
        format!(
            r#"[pipeline]
name = "crm"

[staging]
url = "file://{stage}"

[source]
type = "hubspot"
base_url = "http://127.0.0.1:9"
token = "{secret}"
streams = ["contacts", "deals"]

[destination]
type = "lake"
url = "file://{lake}"
"#,
            stage = dir.path().join("stage").display(),
            lake = dir.path().join("lake").display(),
        ),
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("stage")).unwrap();
    let config = Config::load(&config_path).unwrap();
    let state = StateStore::new(&Stage::open(&config.staging).unwrap(), "crm");
    let lock = state.lock("contacts", 60).await.unwrap();
    let mut contacts = state.load("contacts").await.unwrap();
    contacts.record_load(LastLoad {
        load_id: "0190f000-0000-7000-8000-000000000001".into(),
        committed_at: chrono::Utc::now(),
        rows: 1234,
        inserted: 1200,
        updated: 30,
        deleted: 4,
        duration_ms: Some(1500),
        dead_lettered: 3,
    });
    contacts.record_failure("<script>alert(1)</script> & more".into());
    state.save("contacts", &contacts).await.unwrap();
    lock.release().await.unwrap();

    let ui = Ui::start(&config_path);
    let client = reqwest::Client::new();
    let page = client.get(&ui.url).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"),
        "{:?}",
        page.headers()
    );
    let html = page.text().await.unwrap();
    assert!(!html.contains(secret), "the secret is on the page");
    assert!(html.contains("<meta http-equiv=\"refresh\""), "{html}");
    let contacts = card(&html, "contacts");
    assert!(!contacts.contains("<script>"), "{contacts}");
    assert!(
        contacts.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; more"),
        "{contacts}"
    );
    assert!(contacts.contains("✗ failing"), "{contacts}");
    assert!(
        contacts.contains("✗ 1 failed run</span> since the last load"),
        "{contacts}"
    );
    assert!(
        contacts.contains("data-figure=\"live-rows\">1,196<"),
        "{contacts}"
    );
    assert!(contacts.contains("✗ 3 in the last load"), "{contacts}");
    assert!(contacts.contains("took 1.5 s"), "{contacts}");
    assert_eq!(
        contacts.matches("<g class=\"load\"").count(),
        1,
        "{contacts}"
    );
    let deals = card(&html, "deals");
    assert!(deals.contains("– never synced"), "{deals}");
    assert!(deals.contains("no loads yet"), "{deals}");

    for path in ["/nope", "/streams/contacts", "/../etc/passwd"] {
        let missing = client
            .get(format!("{}{}", ui.url.trim_end_matches('/'), path))
            .send()
            .await
            .unwrap();
        assert_eq!(missing.status(), 404, "{path}");
        let body = missing.text().await.unwrap();
        assert!(body.contains("Not found"), "{body}");
    }
    // The page is for reading: nothing is posted to it.
    let posted = client.post(&ui.url).send().await.unwrap();
    assert_eq!(posted.status(), 405);

    // The same page, written to a file by `syncline status --html`.
    let file = dir.path().join("status.html");
    let out = Command::new(env!("CARGO_BIN_EXE_syncline"))
        .args(["status", "--config"])
        .arg(&config_path)
        .arg("--html")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let written = std::fs::read_to_string(&file).unwrap();
    assert!(card(&written, "contacts").contains("data-figure=\"live-rows\">1,196<"));
    assert!(!written.contains(secret));
}
