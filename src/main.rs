//! The `mirador-router` command: load the config, then serve or check it.

use clap::Parser;
use mirador_router::config::Source;
use mirador_router::reload::{self, Reloader};
use mirador_router::routing::{RouteStore, RoutingTable};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Parser)]
#[command(version, about = "Multi-tenant reverse proxy for VictoriaMetrics, VictoriaLogs and VictoriaTraces")]
struct Cli {
    /// Config file; default conf/mirador-router.toml, else the embedded default.
    #[arg(short, long)]
    config: Option<PathBuf>,
    /// Validate the config, print every error, and exit (1 on errors).
    #[arg(long)]
    check: bool,
    /// Take the listening sockets over from a running instance (send it SIGQUIT).
    #[arg(short, long)]
    upgrade: bool,
}

fn main() -> ExitCode {
    let sighup = match reload::catch_sighup() {
        Ok(signals) => signals,
        Err(e) => {
            eprintln!("cannot install the SIGHUP handler: {e}");
            return ExitCode::FAILURE;
        }
    };
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let source = Source::choose(cli.config);
    let config = match source.load() {
        Ok(config) => config,
        Err(errors) => {
            for error in &errors {
                eprintln!("{error}");
            }
            eprintln!("{}: {} error(s); nothing started", source.name(), errors.len());
            return ExitCode::FAILURE;
        }
    };
    if cli.check {
        println!("{}: ok ({} tenants)", source.name(), config.tenants.len());
        return ExitCode::SUCCESS;
    }

    let routes = Arc::new(RouteStore::new(RoutingTable::build(&config)));
    tracing::info!(config = %source.name(), tenants = config.tenants.len(), "config loaded");
    let server = mirador_router::server::build(&config, routes.clone(), cli.upgrade);
    reload::serve_sighup(sighup, Arc::new(Reloader::new(source, routes, config)));
    server.run_forever()
}
