//! What the benchmarks share: free ports, waiting for the simulator, and measuring a child
//! process's peak memory.

/// The row count a benchmark runs with: `SYNCLINE_BENCH_ROWS`, else its own default.
pub fn bench_rows(default: usize) -> usize {
    std::env::var("SYNCLINE_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

pub fn wait_for_port(port: u16) {
    for _ in 0..600 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("the simulator did not start listening on {port}");
}

/// A number setting of a benchmark: the variable `name`, else `default`.
pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Starts `syncline sim` with `contacts` HubSpot contacts (and one company and deal) as its
/// own process on a free port, token `bench-token`, and waits until it listens.
pub fn start_hubspot_simulator(contacts: usize) -> (std::process::Child, u16) {
    start_hubspot_simulator_with(contacts, &[])
}

/// [`start_hubspot_simulator`] with more `syncline sim` arguments (`--webhook-url ...`).
pub fn start_hubspot_simulator_with(contacts: usize, extra: &[&str]) -> (std::process::Child, u16) {
    let port = free_port();
    let sim = std::process::Command::new(env!("CARGO_BIN_EXE_syncline"))
        .args([
            "sim",
            "--companies",
            "1",
            "--deals",
            "1",
            "--token",
            "bench-token",
        ])
        .arg("--contacts")
        .arg(contacts.to_string())
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .args(extra)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn syncline sim");
    wait_for_port(port);
    (sim, port)
}

/// A pipeline of the simulator's contacts into PostgreSQL schema `schema`, staged under `dir`.
pub fn hubspot_pipeline(
    name: &str,
    dir: &std::path::Path,
    port: u16,
    pg_url: &str,
    schema: &str,
) -> String {
    format!(
        "[pipeline]\nname = \"{name}\"\nbatch_rows = 10000\n[staging]\nurl = \"file://{}/stage\"\n\
         [source]\ntype = \"hubspot\"\nbase_url = \"http://127.0.0.1:{port}\"\ntoken = \"bench-token\"\nstreams = [\"contacts\"]\nlag_seconds = 0\n\
         [destination]\ntype = \"postgres\"\nurl = \"{pg_url}\"\nschema = \"{schema}\"\n",
        dir.display(),
    )
}

/// Waits for the child and returns its exit code and maximum resident set size in KiB.
pub fn wait_with_rusage(pid: i32) -> (i32, i64) {
    let mut status = 0;
    // SAFETY: rusage is plain data; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid, "wait4 failed");
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    (code, usage.ru_maxrss)
}

/// One `syncline run` as the benchmarks measure it.
pub struct MeasuredRun {
    pub elapsed: std::time::Duration,
    pub peak_rss_mib: f64,
    /// The first stream of the run report.
    pub stream: serde_json::Value,
}

/// The `syncline` binary [`measure_run`] runs: `SYNCLINE_BENCH_BIN` (an earlier build, to
/// compare two builds on the same machine in one session), else the one built with the bench.
pub fn syncline_bin() -> std::path::PathBuf {
    std::env::var_os("SYNCLINE_BENCH_BIN")
        .map(Into::into)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_syncline").into())
}

/// Runs `syncline run --config CONFIG --report REPORT` as its own process (so its peak memory
/// is its own) and fails the benchmark unless it exits 0.
pub fn measure_run(what: &str, config: &std::path::Path, report: &std::path::Path) -> MeasuredRun {
    measure_run_with(what, config, report, &[])
}

/// [`measure_run`] with more arguments to `syncline run` (`--full-refresh`, say).
pub fn measure_run_with(
    what: &str,
    config: &std::path::Path,
    report: &std::path::Path,
    args: &[&str],
) -> MeasuredRun {
    let started = std::time::Instant::now();
    let child = std::process::Command::new(syncline_bin())
        .arg("run")
        .args(args)
        .arg("--config")
        .arg(config)
        .arg("--report")
        .arg(report)
        .spawn()
        .expect("spawn syncline run");
    let (status, max_rss_kib) = wait_with_rusage(child.id() as i32);
    let elapsed = started.elapsed();
    assert_eq!(status, 0, "syncline run ({what}) failed");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(report).expect("report")).expect("json");
    MeasuredRun {
        elapsed,
        peak_rss_mib: max_rss_kib as f64 / 1024.0,
        stream: report["streams"][0].clone(),
    }
}

/// A syncline command as the benchmarks measure it, whatever its exit code.
pub struct Measured {
    pub code: i32,
    pub elapsed: std::time::Duration,
    pub peak_rss_mib: f64,
    pub output: String,
}

/// Runs `syncline ARGS --config CONFIG` as its own process (so its peak memory is its own),
/// its output kept in a file under `dir`.
pub fn measure_command(config: &std::path::Path, args: &[&str], dir: &std::path::Path) -> Measured {
    let out = dir.join(format!("out-{}.txt", args.join("-")));
    let file = std::fs::File::create(&out).expect("output file");
    let started = std::time::Instant::now();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_syncline"))
        .args(args)
        .arg("--config")
        .arg(config)
        .stdout(file.try_clone().expect("clone"))
        .stderr(file)
        .spawn()
        .expect("spawn syncline");
    let (code, max_rss_kib) = wait_with_rusage(child.id() as i32);
    Measured {
        code,
        elapsed: started.elapsed(),
        peak_rss_mib: max_rss_kib as f64 / 1024.0,
        output: std::fs::read_to_string(&out).unwrap_or_default(),
    }
}

/// A client of `url`, its connection driven on the current runtime.
pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    client
}

/// Waits until `syncline stream`'s `/health` on `port` answers 200 (every stream flows).
pub async fn wait_healthy(port: u16) {
    for _ in 0..1200 {
        if let Ok(response) = reqwest::get(format!("http://127.0.0.1:{port}/health")).await
            && response.status() == 200
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("syncline stream never became healthy");
}

/// Prints p50, p99 and max of `latencies` (seconds) in milliseconds.
pub fn print_latencies(what: &str, latencies: &[f64]) {
    let mut sorted = latencies.to_vec();
    sorted.sort_by(f64::total_cmp);
    let at = |q: f64| sorted[((sorted.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "{what} over {} changes: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        sorted.len(),
        at(0.5) * 1000.0,
        at(0.99) * 1000.0,
        sorted.last().copied().unwrap_or_default() * 1000.0
    );
}
