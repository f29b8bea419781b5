//! TLS to PostgreSQL as libpq's `sslmode` asks, against a throwaway cluster with `ssl = on`
//! serving a certificate from a CA the test makes: `verify-full` with that CA succeeds, a
//! wrong host name or an untrusted CA fails with a clear configuration error, `require`
//! encrypts without verifying, and a whole pipeline runs into a TLS-only destination URL.

use syncline::error::ErrorKind;
use syncline::reconcile::report::RunReport;

use crate::support::certs::TestCerts;
use crate::support::files::files_config;
use crate::support::pg::TestPostgres;

async fn start() -> (TestCerts, TestPostgres) {
    // The certificate names `localhost` only: connecting by IP is a wrong host name.
    let certs = TestCerts::new("DNS:localhost");
    let (cert, key) = (certs.server_cert(), certs.server_key());
    let pg = tokio::task::spawn_blocking(move || TestPostgres::start_with_ssl(&cert, &key))
        .await
        .unwrap();
    (certs, pg)
}

fn url(host: &str, pg: &TestPostgres, query: &str) -> String {
    // A password the server does not need (`trust`), to prove errors never show it.
    format!(
        "postgres://postgres:hunter2@{host}:{}/postgres?{query}",
        pg.port
    )
}

/// Whether the session the client holds is encrypted, as the server sees it.
async fn encrypted(client: &tokio_postgres::Client) -> bool {
    client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_sslmode_connects_as_libpq_would() {
    let (certs, pg) = start().await;
    let ca = certs.ca();
    let ca = ca.display();

    let full = url(
        "localhost",
        &pg,
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    );
    let client = syncline::tls::connect(&full, "destination.url")
        .await
        .unwrap();
    assert!(encrypted(&client).await);

    // verify-ca checks the chain, not the name: connecting by IP is fine.
    let ca_only = url(
        "127.0.0.1",
        &pg,
        &format!("sslmode=verify-ca&sslrootcert={ca}"),
    );
    let client = syncline::tls::connect(&ca_only, "destination.url")
        .await
        .unwrap();
    assert!(encrypted(&client).await);

    for (mode, tls) in [("require", true), ("prefer", true), ("disable", false)] {
        let plain = url("127.0.0.1", &pg, &format!("sslmode={mode}"));
        let client = syncline::tls::connect(&plain, "source.url").await.unwrap();
        assert_eq!(encrypted(&client).await, tls, "sslmode={mode}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_host_name_or_an_untrusted_ca_is_a_clear_configuration_error() {
    let (certs, pg) = start().await;
    let other = TestCerts::new("DNS:localhost");

    let wrong_host = url(
        "127.0.0.1",
        &pg,
        &format!("sslmode=verify-full&sslrootcert={}", certs.ca().display()),
    );
    let untrusted = url(
        "localhost",
        &pg,
        &format!("sslmode=verify-full&sslrootcert={}", other.ca().display()),
    );
    // `require` with a root certificate verifies the chain, as libpq does.
    let untrusted_require = url(
        "localhost",
        &pg,
        &format!("sslmode=require&sslrootcert={}", other.ca().display()),
    );
    for (case, url) in [
        ("wrong host", wrong_host),
        ("untrusted CA", untrusted),
        ("require + untrusted CA", untrusted_require),
    ] {
        let err = syncline::tls::connect(&url, "destination.url")
            .await
            .expect_err(case);
        assert_eq!(err.kind(), ErrorKind::Config, "{case}: {}", err.report());
        assert_eq!(err.exit_code(), 2);
        let text = err.report();
        assert!(
            text.contains("destination.url") && text.contains("TLS"),
            "{case}: {text}"
        );
        assert!(text.contains("certificate"), "{case}: {text}");
        assert!(!text.contains("hunter2"), "{case}: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_loads_into_a_destination_reached_over_verified_tls() {
    let (certs, pg) = start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("exports")).unwrap();
    std::fs::write(
        dir.path().join("exports/a.jsonl"),
        "{\"id\": 1, \"email\": \"one@x\"}\n{\"id\": 2, \"email\": \"two@x\"}\n",
    )
    .unwrap();
    let config = dir.path().join("files.toml");
    std::fs::write(
        &config,
        files_config(
            dir.path(),
            &["contacts"],
            "[source.files.contacts]\nglob = \"*.jsonl\"\nformat = \"jsonl\"\nkey = \"id\"\n\
             [source.files.contacts.schema]\nid = \"int64\"\nemail = \"utf8\"\n",
        ),
    )
    .unwrap();
    let tls_url = url(
        "localhost",
        &pg,
        &format!("sslmode=verify-full&sslrootcert={}", certs.ca().display()),
    );
    let report_path = dir.path().join("report.json");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_syncline"))
        .args(["run", "--config"])
        .arg(&config)
        .arg("--report")
        .arg(&report_path)
        .env("TEST_DATABASE_URL", &tls_url)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: RunReport = serde_json::from_slice(&std::fs::read(&report_path).unwrap()).unwrap();
    assert_eq!(report.streams[0].rows_inserted, 2, "{report:#?}");

    // The same run against an untrusted CA stops before touching anything, exit 2.
    let other = TestCerts::new("DNS:localhost");
    let untrusted = url(
        "localhost",
        &pg,
        &format!("sslmode=verify-full&sslrootcert={}", other.ca().display()),
    );
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_syncline"))
        .args(["run", "--config"])
        .arg(&config)
        .env("TEST_DATABASE_URL", &untrusted)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("sslrootcert"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
}
