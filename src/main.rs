//! The `syncline` binary: parse arguments, call the library, map the outcome to an exit code.
//!
//! Exit codes: 0 success, 1 failure, 2 configuration or usage error, 3 the destination does
//! not match the source, 4 a clean stop on a used-up API quota.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use clap::Parser;
use syncline::cli::{
    CheckArgs, Cli, Command, ConfigCommand, DeadlettersArgs, DemoArgs, DemoTarget, ExportFormat,
    GcArgs, InitArgs, InitDestination, InitSource, LoadsArgs, LogFormat, ModelsArgs, ModelsCommand,
    PlanArgs, QueryArgs, ReconcileArgs, ReplayArgs, RunArgs, SimArgs, StatusArgs, StreamArgs,
    UiArgs,
};
use syncline::config::Config;
use syncline::error::{Classified, ErrorKind};
use syncline::{Error, demo, init, orchestrate, pipeline, sim, status, transform, ui};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::prelude::*;

/// Requests at least this large get pages of their own from the kernel (see
/// [`bound_malloc_arenas`]). 512 KiB sent a batch's text buffers (a 10,000-row column of
/// 64-character digests is 640 KB) and Parquet's pages through `mmap`, fresh zeroed pages each
/// time: about 1 s of system time on the 1M-row lake load (W4) and 0.3 s on a transformed
/// load. At 2 MiB those come from the arenas; the lake's 2M-row memory test went 198 → 202 MiB.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MALLOC_MMAP_THRESHOLD: libc::c_int = 2 * 1024 * 1024;

/// Keeps glibc's allocator from holding memory the program has freed, so that resident memory
/// follows what a load holds at a time (batches and row groups) rather than how long it ran.
///
/// Left alone, glibc gives each thread that meets contention an arena of its own (up to eight
/// per core) and serves large blocks (Arrow buffers, Parquet pages) from those arenas once the
/// first one is freed, where freed blocks stay resident. A 500,000-row lake load measured
/// 165 MiB of anonymous memory for a live heap of 95 MiB (heaptrack). Capping the arenas at
/// one per core, and serving blocks of [`MALLOC_MMAP_THRESHOLD`] and more by `mmap` (returned
/// to the kernel on free), brought it down by about 70 MiB. An operator who sets
/// `MALLOC_ARENA_MAX` or `MALLOC_MMAP_THRESHOLD_` keeps glibc's own handling of both.
fn bound_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        if std::env::var_os("MALLOC_ARENA_MAX").is_some()
            || std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_some()
        {
            return;
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let arenas = libc::c_int::try_from(cores).unwrap_or(libc::c_int::MAX);
        // SAFETY: mallopt only sets allocator parameters; it is called before any other thread
        // exists. A refused setting (return value 0) leaves glibc's default, which is harmless.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, arenas);
            libc::mallopt(libc::M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD);
        }
    }
}

fn main() -> ExitCode {
    bound_malloc_arenas();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            // clap uses 0 for --help/--version and 2 for usage errors, as we document.
            return ExitCode::from(err.exit_code() as u8);
        }
    };
    init_logging(&cli);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(execute(cli.command)) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("error: {}", err.report());
            ExitCode::from(err.exit_code() as u8)
        }
    }
}

fn init_logging(cli: &Cli) {
    let default = match cli.verbose {
        // delta-rs warns about merge metrics it derives itself; that is not the user's concern.
        0 => "warn,deltalake_core::operations::merge=error",
        1 => "info,syncline=info",
        _ => "debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    // Under Dagster Pipes the same events also go to Dagster (`Session::forward_logs`).
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(orchestrate::pipes::ForwardLogs);
    match cli.log_format {
        LogFormat::Json => registry.with(fmt.json()).init(),
        LogFormat::Text => registry.with(fmt).init(),
    }
}

/// What a command itself can fail at, beside the library's errors.
#[derive(Debug, thiserror::Error)]
enum CommandError {
    #[error("cannot write the report to {}", path.display())]
    Report {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--destination postgres needs --url or DATABASE_URL")]
    DemoUrl,
    #[error("the simulator stopped")]
    Simulator(#[source] anyhow::Error),
    #[error("{} exists; pass --force to overwrite it", .0.display())]
    Exists(std::path::PathBuf),
    #[error("cannot write {}", path.display())]
    Write {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Classified for CommandError {
    fn kind(&self) -> ErrorKind {
        match self {
            CommandError::Report { .. }
            | CommandError::DemoUrl
            | CommandError::Exists(_)
            | CommandError::Write { .. } => ErrorKind::Config,
            CommandError::Simulator(_) => ErrorKind::Source,
        }
    }
}

/// Runs one command; returns the process exit code (README, "Exit codes").
async fn execute(command: Command) -> Result<u8, Error> {
    match command {
        Command::Run(args) => run(args).await,
        Command::Stream(args) => stream(args).await,
        Command::Check(args) => check(args).await,
        Command::Reconcile(args) => reconcile(args).await,
        Command::Status(args) => show_status(args).await,
        Command::Ui(args) => serve_ui(args).await,
        Command::Demo(args) => run_demo(args).await,
        Command::Query(args) => query(args).await,
        Command::Models {
            command: ModelsCommand::Run(args),
        } => run_models(args, false).await,
        Command::Models {
            command: ModelsCommand::Test(args),
        } => run_models(args, true).await,
        Command::Sim(args) => serve_simulator(args).await,
        Command::Loads(args) => list_loads(args).await,
        Command::Replay(args) => replay(args).await,
        Command::Preview(args) => preview(args).await,
        Command::Gc(args) => gc(args).await,
        Command::Deadletters(args) => dead_letters(args).await,
        Command::Init(args) => init(args),
        Command::Config { command } => config_command(command),
        Command::Completions { shell } => {
            let mut cli = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cli, "syncline", &mut std::io::stdout());
            Ok(0)
        }
        Command::Man { dir } => man(dir.as_deref()),
        Command::Plan(args) => plan(args),
    }
}

/// The man page from the same clap definitions as `--help`, so the two cannot disagree.
fn man(dir: Option<&Path>) -> Result<u8, Error> {
    let cli = <Cli as clap::CommandFactory>::command();
    let write_error = |path: &Path, source| CommandError::Write {
        path: path.to_owned(),
        source,
    };
    match dir {
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(cli)
                .render(&mut page)
                .map_err(|e| write_error(Path::new("-"), e))?;
            std::io::stdout()
                .write_all(&page)
                .map_err(|e| write_error(Path::new("-"), e))?;
        }
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| write_error(dir, e))?;
            clap_mangen::generate_to(cli, dir).map_err(|e| write_error(dir, e))?;
        }
    }
    Ok(0)
}

async fn dead_letters(args: DeadlettersArgs) -> Result<u8, Error> {
    use pipeline::deadletters::{self, Export, Selection};
    let config = Config::load(&args.config)?;
    let selection = Selection {
        stream: args.stream,
        load_id: args.load_id,
    };
    let letters = deadletters::read(&config, &selection).await?;
    let Some(format) = args.export else {
        print!(
            "{}",
            deadletters::render(&deadletters::group(&letters, args.examples))
        );
        return Ok(0);
    };
    let format = match format {
        ExportFormat::Csv => Export::Csv,
        ExportFormat::Jsonl => Export::Jsonl,
    };
    let written = match &args.output {
        Some(path) => std::fs::File::create(path)
            .and_then(|file| deadletters::export(&letters, format, file))
            .map_err(|source| CommandError::Write {
                path: path.clone(),
                source,
            }),
        None => deadletters::export(&letters, format, std::io::stdout().lock()).map_err(|source| {
            CommandError::Write {
                path: "-".into(),
                source,
            }
        }),
    };
    written?;
    eprintln!("{} dead letters exported", letters.len());
    Ok(0)
}

async fn list_loads(args: LoadsArgs) -> Result<u8, Error> {
    let config = Config::load(&args.config)?;
    let rows = pipeline::loads::list(&config, args.stream.as_deref()).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print!("{}", pipeline::loads::render(&rows));
    }
    Ok(0)
}

/// `syncline preview`: the transformed rows of the stream's last staged load, as a table.
async fn preview(args: syncline::cli::PreviewArgs) -> Result<u8, Error> {
    let config = Config::load(&args.config)?;
    let batches = pipeline::transform::preview(&config, &args.stream, args.limit).await?;
    println!("{}", arrow::util::pretty::pretty_format_batches(&batches)?);
    Ok(0)
}

async fn replay(args: ReplayArgs) -> Result<u8, Error> {
    let config = Config::load(&args.config)?;
    let selection = match (args.load_id, args.since) {
        (Some(id), _) => pipeline::loads::ReplaySelection::LoadId(id),
        (None, Some(since)) => pipeline::loads::ReplaySelection::Since(since),
        (None, None) => unreachable!("clap requires --load-id or --since"),
    };
    let done = pipeline::loads::replay(&config, &args.stream, &selection, args.force).await?;
    for r in &done {
        println!(
            "{} {:<15} inserted {:>8}  updated {:>8}  deleted {:>6}",
            r.load_id, r.action, r.inserted, r.updated, r.deleted
        );
    }
    if done.is_empty() {
        println!("no staged load matched");
    }
    Ok(0)
}

async fn gc(args: GcArgs) -> Result<u8, Error> {
    let config = Config::load(&args.config)?;
    let outcome =
        pipeline::loads::gc(&config, args.older_than, args.dry_run, args.dead_letters).await?;
    let verb = if args.dry_run {
        "would delete"
    } else {
        "deleted"
    };
    for d in &outcome.decisions {
        if d.deleted {
            println!(
                "{verb} {} {} ({} bytes; {})",
                d.stream, d.load_id, d.bytes, d.reason
            );
        } else {
            println!("kept   {} {} ({})", d.stream, d.load_id, d.reason);
        }
    }
    // A stream a run holds was not collected: say so, and fail so a scheduler notices.
    for skipped in &outcome.skipped {
        eprintln!(
            "skipped stream {}: a run holds its lease, so gc left it alone ({}); run gc again later",
            skipped.stream, skipped.reason
        );
    }
    Ok(if outcome.skipped.is_empty() { 0 } else { 1 })
}

/// `syncline run`: the report goes to `--report`, a line per stream to stderr, and the
/// run's status decides the exit code.
async fn run(args: RunArgs) -> Result<u8, Error> {
    // Under Dagster Pipes the session opens first, so even a config error reaches Dagster.
    let Some(session) = orchestrate::pipes::Session::from_env()? else {
        return run_reported(args, None).await.map(|(code, _)| code);
    };
    let session = std::sync::Arc::new(session);
    session.forward_logs();
    let outcome = run_reported(args, Some(session.clone())).await;
    match &outcome {
        Ok((_, Some(failure))) => session.close(Some((&failure.0, failure.1.clone()))),
        Ok((_, None)) => session.close(None),
        Err(err) => {
            let (name, message) = orchestrate::pipes::error_failure(err);
            session.close(Some((&name, message)));
        }
    }
    outcome.map(|(code, _)| code)
}

/// `syncline run`, reporting to a Dagster Pipes session when there is one; returns the exit
/// code and, for Pipes, the failure to close the session with.
async fn run_reported(
    args: RunArgs,
    pipes: Option<std::sync::Arc<orchestrate::pipes::Session>>,
) -> Result<(u8, Option<(String, String)>), Error> {
    let config = Config::load(&args.config)?;
    let options = pipeline::RunOptions {
        streams: args.streams,
        full_refresh: args.full_refresh,
    };
    let run = match pipes {
        Some(session) => orchestrate::pipes::run(&config, &options, session).await?,
        None => pipeline::run(&config, &options).await?,
    };
    let json = serde_json::to_string_pretty(&run)?;
    match args.report.as_deref() {
        Some(path) if path.as_os_str() == "-" => println!("{json}"),
        Some(path) => {
            std::fs::write(path, json.as_bytes()).map_err(|source| CommandError::Report {
                path: path.to_path_buf(),
                source,
            })?
        }
        None => {}
    }
    let mut err = std::io::stderr().lock();
    for stream in &run.streams {
        let _ = writeln!(
            err,
            "{:<12} {:<8} extracted {:>8}  inserted {:>8}  updated {:>8}  deleted {:>6}  dead-lettered {:>4}{}  {} ms{}{}{}",
            stream.stream,
            format!("{:?}", stream.status).to_lowercase(),
            stream.rows_extracted,
            stream.rows_inserted,
            stream.rows_updated,
            stream.rows_deleted,
            stream.rows_dead_lettered,
            // Only transformed streams filter; the others keep the line as it was.
            if stream.reconciliation.filtered.is_some() {
                format!("  filtered {:>6}", stream.rows_filtered)
            } else {
                String::new()
            },
            stream.duration_ms,
            stream
                .stopped
                .as_deref()
                .map(|reason| format!("\n             stopped: {reason}"))
                .unwrap_or_default(),
            stream
                .error
                .as_deref()
                .map(|e| format!("\n             error: {e}"))
                .unwrap_or_default(),
            stream
                .reconcile
                .as_ref()
                .map(|r| format!("\n             reconcile: {}", r.summary()))
                .unwrap_or_default(),
        );
    }
    let failure = orchestrate::pipes::run_failure(&run);
    if args.models && run.exit_code == 0 {
        let changed: Vec<String> = run
            .streams
            .iter()
            .filter(|s| s.rows_inserted + s.rows_updated + s.rows_deleted > 0)
            .map(|s| s.stream.clone())
            .collect();
        let report = transform::changed_models(&config, &changed).await?;
        eprint!("{}", report.render());
        return Ok((report.exit_code() as u8, failure));
    }
    Ok((run.exit_code as u8, failure))
}

/// `syncline plan`: the streams a run would load, as a table or JSON.
fn plan(args: PlanArgs) -> Result<u8, Error> {
    let config = Config::load(&args.config)?;
    let plan = orchestrate::plan::plan(&config)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&plan)?);
    } else {
        print!("{}", orchestrate::plan::render(&plan));
    }
    Ok(0)
}

/// `syncline reconcile`: the estimate on stderr first, then the summary table on stdout (or
/// the JSON report with `--report -`); the report's exit code is the process's.
async fn reconcile(args: ReconcileArgs) -> Result<u8, Error> {
    let config = Config::load(&args.config)?;
    let options = pipeline::ReconcileOptions {
        streams: args.streams,
        repair: args.repair,
        dry_run: args.dry_run,
    };
    let mut progress = |line: String| eprintln!("{line}");
    let report = pipeline::reconcile(&config, &options, &mut progress).await?;
    let json = serde_json::to_string_pretty(&report)?;
    match args.report.as_deref() {
        Some(path) if path.as_os_str() == "-" => println!("{json}"),
        Some(path) => {
            std::fs::write(path, json.as_bytes()).map_err(|source| CommandError::Report {
                path: path.to_path_buf(),
                source,
            })?;
            print!("{}", pipeline::reconcile::render(&report));
        }
        None => print!("{}", pipeline::reconcile::render(&report)),
    }
    Ok(report.exit_code as u8)
}

/// `syncline check`: one line per component on stdout, every component tried; the exit code
/// is the highest of the failures'.
async fn check(args: CheckArgs) -> Result<u8, Error> {
    let config = Config::load(&args.config)?;
    let options = pipeline::CheckOptions {
        timeout: std::time::Duration::from_secs(args.timeout.max(1)),
    };
    let checks = pipeline::check(&config, &options).await;
    for checked in &checks {
        println!("{}", checked.line());
    }
    Ok(pipeline::check::exit_code(&checks) as u8)
}

/// `syncline stream`: runs until SIGTERM/SIGINT; 0 after a clean shutdown.
async fn stream(args: StreamArgs) -> Result<u8, Error> {
    let config = Config::load(&args.config)?;
    let options = syncline::stream::StreamOptions {
        streams: args.streams,
    };
    syncline::stream::run(&config, &options).await
}

async fn show_status(args: StatusArgs) -> Result<u8, Error> {
    let config = Config::load(&args.config)?;
    if let Some(path) = args.html {
        let page = ui::render(&config).await?;
        std::fs::write(&path, page).map_err(|source| CommandError::Write { path, source })?;
        return Ok(0);
    }
    let rows = status::collect(&config).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print!("{}", status::render(&rows));
    }
    Ok(0)
}

/// `syncline ui`: serves until Ctrl-C.
async fn serve_ui(args: UiArgs) -> Result<u8, Error> {
    let config = Config::load(&args.config)?;
    ui::serve(config, args.listen).await?;
    Ok(0)
}

/// `syncline demo`: exit 0 only when every table reconciles with the simulator.
async fn run_demo(args: DemoArgs) -> Result<u8, Error> {
    let destination = match args.destination {
        DemoTarget::Lake => demo::DemoDestination::Lake,
        DemoTarget::Postgres => demo::DemoDestination::Postgres {
            url: args.url.ok_or(CommandError::DemoUrl)?,
        },
    };
    let options = demo::DemoOptions {
        dir: args.dir,
        destination,
        contacts: args.contacts,
        companies: args.companies,
        deals: args.deals,
    };
    let summary = demo::run(&options).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print!("{}", demo::render(&summary));
    }
    Ok(if summary.all_matched() { 0 } else { 3 })
}

async fn query(args: QueryArgs) -> Result<u8, Error> {
    let config = Config::load(&args.config)?;
    let ctx = transform::lake_session(&config).await?;
    let mut out = std::io::BufWriter::new(std::io::stdout());
    match transform::print_query(&ctx, &args.sql, QUERY_ROWS_PER_TABLE, &mut out).await {
        Ok(_) => Ok(0),
        // The reader went away (`syncline query ... | head`): it has what it wanted.
        Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(0),
        Err(e) => Err(e),
    }
}

/// `syncline query` prints its result as it comes, a table of this many rows at a time.
const QUERY_ROWS_PER_TABLE: usize = 1000;

/// `syncline models run|test`; under Dagster Pipes each model is reported as its asset (a
/// materialization with the table's rows, its tests as checks), as `run` reports streams.
async fn run_models(args: ModelsArgs, test_only: bool) -> Result<u8, Error> {
    let Some(session) = orchestrate::pipes::Session::from_env()? else {
        return models_reported(args, test_only, None).await;
    };
    let session = std::sync::Arc::new(session);
    session.forward_logs();
    let outcome = models_reported(args, test_only, Some(&session)).await;
    match &outcome {
        Ok(_) => {}
        Err(err) => {
            let (name, message) = orchestrate::pipes::error_failure(err);
            session.close(Some((&name, message)));
        }
    }
    outcome
}

async fn models_reported(
    args: ModelsArgs,
    test_only: bool,
    session: Option<&orchestrate::pipes::Session>,
) -> Result<u8, Error> {
    let config = Config::load(&args.config)?;
    let report = transform::models_command(
        &config,
        args.models.as_deref(),
        args.select.as_deref(),
        args.full_refresh,
        test_only,
    )
    .await?;
    if let Some(session) = session {
        let graph = transform::model_graph(&config, args.models.as_deref())?;
        orchestrate::pipes::report_models(&config, &graph, &report, test_only, session).await?;
        match orchestrate::pipes::models_failure(&report) {
            Some((name, message)) => session.close(Some((&name, message))),
            None => session.close(None),
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render());
    }
    Ok(report.exit_code() as u8)
}

async fn serve_simulator(args: SimArgs) -> Result<u8, Error> {
    let config = sim::SimConfig {
        seed: args.seed,
        contacts: args.contacts,
        companies: args.companies,
        deals: args.deals,
        token: args.token,
        sf_accounts: args.sf_accounts,
        sf_contacts: args.sf_contacts,
        sf_opportunities: args.sf_opportunities,
        sf_leads: args.sf_leads,
        sf_daily_limit: args.sf_daily_limit,
        sf_purge_after_ms: args.sf_purge_after_ms,
        sf_deleted_id_limit: args.sf_deleted_id_limit,
        webhooks: args.webhook_url.map(|url| sim::WebhookSettings {
            duplicate_rate: args.webhook_duplicate_rate,
            reorder_rate: args.webhook_reorder_rate,
            lost_answer_rate: args.webhook_lost_answer_rate,
            max_attempts: args.webhook_max_attempts,
            ..sim::WebhookSettings::new(url, args.webhook_secret.unwrap_or_default())
        }),
        rate_limit: (args.rate_limit > 0).then_some(sim::RateLimit {
            per_ten_seconds: args.rate_limit,
            search_per_second: 5,
            daily: 1_000_000,
        }),
        ..Default::default()
    };
    sim::serve_forever(config, args.listen)
        .await
        .map_err(CommandError::Simulator)?;
    Ok(0)
}

/// `syncline init`: the file, then what to set and run next (on stderr when the file went to
/// stdout).
fn init(args: InitArgs) -> Result<u8, Error> {
    let source = match args.source {
        InitSource::Hubspot => init::SourceKind::Hubspot,
        InitSource::Salesforce => init::SourceKind::Salesforce,
        InitSource::Postgres => init::SourceKind::Postgres,
        InitSource::Files => init::SourceKind::Files,
    };
    let destination = match args.destination {
        InitDestination::Postgres => init::DestinationKind::Postgres,
        InitDestination::Snowflake => init::DestinationKind::Snowflake,
        InitDestination::Lake => init::DestinationKind::Lake,
    };
    let staging = args.staging.as_deref().unwrap_or(init::DEFAULT_STAGING);
    let template = init::template(source, destination, staging);
    if args.output.as_os_str() == "-" {
        print!("{}", template.text);
        eprint!("{}", init::next_steps(&template, "FILE"));
        return Ok(0);
    }
    let path = &args.output;
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if args.force {
        options.create(true).truncate(true);
    } else {
        // create_new: an existing file is never touched, even if it appears meanwhile.
        options.create_new(true);
    }
    let write = options
        .open(path)
        .and_then(|mut file| file.write_all(template.text.as_bytes()));
    match write {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(CommandError::Exists(path.clone()).into());
        }
        Err(source) => {
            return Err(CommandError::Write {
                path: path.clone(),
                source,
            }
            .into());
        }
    }
    print!(
        "{}",
        init::next_steps(&template, &path.display().to_string())
    );
    Ok(0)
}

fn config_command(command: ConfigCommand) -> Result<u8, Error> {
    match command {
        ConfigCommand::Schema => {
            println!("{}", serde_json::to_string_pretty(&Config::json_schema())?);
        }
        ConfigCommand::Show { config } => {
            let config = Config::load(&config)?;
            print!("{}", config.show());
        }
    }
    Ok(0)
}
