//! The `syncline` binary: parse arguments, call the library, map the outcome to an exit code.
//!
//! Exit codes: 0 success, 1 failure, 2 configuration or usage error, 3 reconciliation mismatch.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use syncline::cli::{Cli, Command, DemoTarget, LogFormat, ModelsCommand};
use syncline::config::Config;
use syncline::{Error, demo, pipeline, sim, status, transform};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
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
            eprintln!("error: {err}");
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
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn execute(command: Command) -> Result<u8, Error> {
    match command {
        Command::Run {
            config,
            streams,
            full_refresh,
            report,
        } => {
            let config = Config::load(&config)?;
            let options = pipeline::RunOptions {
                streams,
                full_refresh,
            };
            let run = pipeline::run(&config, &options).await?;
            let json = serde_json::to_string_pretty(&run)?;
            match report.as_deref() {
                Some(path) if path.as_os_str() == "-" => println!("{json}"),
                Some(path) => std::fs::write(path, json.as_bytes()).map_err(|e| {
                    Error::Config(format!(
                        "cannot write the report to {}: {e}",
                        path.display()
                    ))
                })?,
                None => {}
            }
            let mut err = std::io::stderr().lock();
            for stream in &run.streams {
                let _ = writeln!(
                    err,
                    "{:<12} {:<8} extracted {:>8}  inserted {:>8}  updated {:>8}  deleted {:>6}  dead-lettered {:>4}  {} ms{}",
                    stream.stream,
                    format!("{:?}", stream.status).to_lowercase(),
                    stream.rows_extracted,
                    stream.rows_inserted,
                    stream.rows_updated,
                    stream.rows_deleted,
                    stream.rows_dead_lettered,
                    stream.duration_ms,
                    stream
                        .error
                        .as_deref()
                        .map(|e| format!("\n             error: {e}"))
                        .unwrap_or_default(),
                );
            }
            Ok(run.exit_code as u8)
        }
        Command::Check { config } => {
            let config = Config::load(&config)?;
            for line in pipeline::check(&config).await? {
                println!("ok  {line}");
            }
            Ok(0)
        }
        Command::Status { config, json } => {
            let config = Config::load(&config)?;
            let rows = status::collect(&config).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                print!("{}", status::render(&rows));
            }
            Ok(0)
        }
        Command::Demo {
            dir,
            destination,
            url,
            contacts,
            companies,
            deals,
            json,
        } => {
            let destination = match destination {
                DemoTarget::Lake => demo::DemoDestination::Lake,
                DemoTarget::Postgres => demo::DemoDestination::Postgres {
                    url: url.ok_or_else(|| {
                        Error::Config("--destination postgres needs --url or DATABASE_URL".into())
                    })?,
                },
            };
            let options = demo::DemoOptions {
                dir,
                destination,
                contacts,
                companies,
                deals,
            };
            let summary = demo::run(&options).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                print!("{}", demo::render(&summary));
            }
            Ok(if summary.all_matched() { 0 } else { 3 })
        }
        Command::Query { config, sql } => {
            let config = Config::load(&config)?;
            let ctx = transform::lake_session(&config).await?;
            let batches = transform::query(&ctx, &sql).await?;
            println!("{}", arrow::util::pretty::pretty_format_batches(&batches)?);
            Ok(0)
        }
        Command::Models {
            command: ModelsCommand::Run { config, models },
        } => {
            let config = Config::load(&config)?;
            let ctx = transform::lake_session(&config).await?;
            for run in transform::run_models(&ctx, &transform::models_in(&models)?).await? {
                println!("model {} ({} rows)", run.name, run.rows);
                println!(
                    "{}",
                    arrow::util::pretty::pretty_format_batches(&run.batches)?
                );
            }
            Ok(0)
        }
        Command::Sim {
            listen,
            seed,
            contacts,
            companies,
            deals,
            token,
            rate_limit,
            sf_accounts,
            sf_contacts,
            sf_opportunities,
            sf_leads,
            sf_daily_limit,
        } => {
            let config = sim::SimConfig {
                seed,
                contacts,
                companies,
                deals,
                token,
                sf_accounts,
                sf_contacts,
                sf_opportunities,
                sf_leads,
                sf_daily_limit,
                rate_limit: (rate_limit > 0).then_some(sim::RateLimit {
                    per_ten_seconds: rate_limit,
                    search_per_second: 5,
                    daily: 1_000_000,
                }),
                ..Default::default()
            };
            sim::serve_forever(config, listen)
                .await
                .map_err(|e| Error::Source(format!("simulator: {e}")))?;
            Ok(0)
        }
    }
}
