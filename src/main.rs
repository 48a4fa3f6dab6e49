//! The vigil CLI: config → tracing → App::start → wait for SIGTERM/SIGINT (reloading the config
//! on SIGHUP or when its file changes) → App::shutdown.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use vigil::config::{self, Config, LogFormat};
use vigil::reload::{self, Reloader, Trigger};

#[derive(Parser)]
#[command(name = "vigil", version, about = "Kubernetes node agent: container logs and node metrics, shipped")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent.
    Run {
        /// Config file (YAML). Without it, the embedded default config is used.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Parse, expand and validate a config; print the effective config with secrets masked.
    Validate {
        #[arg(long, short)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate { config } => match Config::load(Some(&config), &config::process_env) {
            Ok(c) => {
                print!("{}", c.to_yaml());
                eprintln!("config {} is valid", config.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Run { config } => {
            // The text is kept: a reload compares the file with what runs.
            let loaded = match &config {
                Some(p) => std::fs::read_to_string(p)
                    .map_err(|error| config::Error::Read { path: p.display().to_string(), error }),
                None => Ok(config::DEFAULT_CONFIG.to_string()),
            }
            .and_then(|text| Ok((Config::from_yaml(&text, &config::process_env)?, text)));
            let (cfg, text) = match loaded {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            };
            init_tracing(&cfg);
            match run(cfg, config, text) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "vigil stopped");
                    eprintln!("error: {e:#}");
                    // A dead sink is an internal failure like a tail thread panic: 70 (EX_SOFTWARE).
                    if e.downcast_ref::<vigil::app::SinkFailed>().is_some() {
                        ExitCode::from(70)
                    } else {
                        ExitCode::FAILURE
                    }
                }
            }
        }
    }
}

fn init_tracing(cfg: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::try_new(&cfg.log.level).expect("log.level was validated"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match cfg.log.format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

/// glibc gives each thread that allocates under contention its own arena (up to 8 per core),
/// and memory freed in one arena is not reused by another: at 10,000 files that held ~3.5 MB
/// more (issue 17). Two arenas, unless `MALLOC_ARENA_MAX` says otherwise.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: sets a malloc tunable before any other thread starts.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, 2) };
    }
}

fn run(cfg: Config, path: Option<PathBuf>, text: String) -> anyhow::Result<()> {
    limit_malloc_arenas();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = rt.block_on(async {
        tracing::info!(version = env!("CARGO_PKG_VERSION"), node = %cfg.node_name, "vigil starting");
        // Before anything starts: SIGHUP's default action would kill the process.
        let mut signals = Signals::install()?;
        // Before start too: a change while starting is seen (and compared with `text`) after.
        let watched = path.as_deref().and_then(reload::watch);
        let mut app = vigil::app::App::start(cfg.clone()).await?;
        let mut reloader = Reloader::new(path, text, cfg, config::process_env, app.reload_metrics.clone());
        let (_watcher, mut changes) = match watched {
            Some((w, rx)) => (Some(w), Some(rx)),
            None => (None, None),
        };
        enum Next {
            Stop,
            Failed(vigil::app::SinkFailed),
            Reload(Trigger),
        }
        let failed = loop {
            let next = tokio::select! {
                signal = signals.stop_or_hup() => match signal {
                    Signal::Stop => Next::Stop,
                    Signal::Hup => Next::Reload(Trigger::Sighup),
                },
                failed = app.sink_failed() => Next::Failed(failed),
                Some(()) = async {
                    match changes.as_mut() {
                        Some(rx) => reload::changed(rx).await,
                        None => std::future::pending().await,
                    }
                } => Next::Reload(Trigger::FileChanged),
            };
            match next {
                Next::Stop => break None,
                Next::Failed(f) => break Some(f),
                Next::Reload(trigger) => reloader.reload(&mut app, trigger).await,
            }
        };
        tracing::info!("shutting down");
        app.shutdown().await;
        tracing::info!("stopped");
        match failed {
            Some(f) => Err(f.into()),
            None => Ok(()),
        }
    });
    // The grace period is spent: a sink still blocked (a hung request, a full disk) must not keep
    // the process alive; what it held is not checkpointed and is read again at the next start.
    rt.shutdown_timeout(std::time::Duration::from_millis(200));
    result
}

enum Signal {
    Stop,
    Hup,
}

/// SIGTERM, SIGINT (stop) and SIGHUP (reload), installed once.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            hup: signal(SignalKind::hangup()).context("installing the SIGHUP handler")?,
        })
    }

    async fn stop_or_hup(&mut self) -> Signal {
        tokio::select! {
            _ = self.term.recv() => Signal::Stop,
            _ = self.int.recv() => Signal::Stop,
            _ = self.hup.recv() => Signal::Hup,
        }
    }
}
