//! The `mirador-router` command: load the config, then serve or check it.

use clap::{Parser, Subcommand};
use mirador_router::access_log::{self, AccessLogLayer};
use mirador_router::activity::{self, Activity};
use mirador_router::admin::Readings;
use mirador_router::config::{AccessLogFormat, QuotaBackend, Source, Store};
use mirador_router::edge::Edge;
use mirador_router::metrics::Metrics;
use mirador_router::otlp_grpc;
use mirador_router::quota::{self, QuotaRegistry};
use mirador_router::reload::{self, Reloader};
use mirador_router::routing::{self, RouteStore, Shared};
use mirador_router::store::{self, EtcdStore};
use mirador_router::upstream::HealthRegistry;
use mirador_router::usage::{self, Usage};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Parser)]
#[command(version, about = "Multi-tenant reverse proxy for VictoriaMetrics, VictoriaLogs and VictoriaTraces")]
struct Cli {
    /// Config file; default conf/mirador-router.toml, else the embedded default.
    #[arg(short, long, global = true)]
    config: Option<PathBuf>,
    /// Validate the config, print every error, and exit (1 on errors).
    #[arg(long)]
    check: bool,
    /// Take the listening sockets over from a running instance (send it SIGQUIT).
    #[arg(short, long)]
    upgrade: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// The tenant store of `[store] kind = "etcd"`.
    Store {
        #[command(subcommand)]
        action: StoreAction,
    },
}

#[derive(Subcommand)]
enum StoreAction {
    /// Write the [tenants] and [tiers] of a TOML file to etcd (validated first).
    Import {
        /// The TOML file holding the tenants (a router config of `[store] kind = "file"` will do).
        #[arg(long)]
        from: PathBuf,
        /// Replace tenants and tiers that exist in etcd already.
        #[arg(long)]
        overwrite: bool,
    },
    /// Print every tenant and tier in etcd as TOML (or write it to --to).
    Export {
        #[arg(long)]
        to: Option<PathBuf>,
    },
}

/// glibc malloc/free were the top user-space functions in a profile of the
/// proxy path (README, Performance).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Returns the memory the calling thread has freed to the OS now instead of
/// when mimalloc next gets to it (after a large parse on that thread, a lot
/// of RSS; README, Performance).
fn release_memory() {
    // SAFETY: mi_collect takes no pointers and may be called from any thread.
    unsafe { libmimalloc_sys::mi_collect(true) }
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
    let source = Source::choose(cli.config);
    // Parsed on a thread of its own that then ends: its temporary memory
    // goes back with the thread instead of staying in the main thread's heap,
    // which never allocates again and so would never give it back.
    let loaded = std::thread::scope(|scope| {
        scope
            .spawn(|| source.read().and_then(|text| Ok((mirador_router::config::parse(&source.name(), &text)?, text))))
            .join()
            .expect("the config parse does not panic")
    });
    let (config, text) = match loaded {
        Ok(loaded) => loaded,
        Err(errors) => {
            for error in &errors {
                eprintln!("{error}");
            }
            eprintln!("{}: {} error(s); nothing started", source.name(), errors.len());
            return ExitCode::FAILURE;
        }
    };
    if let Some(Command::Store { action }) = cli.command {
        return store_command(&config, &source, &text, action);
    }
    // With tenants in etcd: the file's settings with every tenant and tier read there.
    let (config, text, store) = match &config.store {
        Store::File => (config, text, None),
        Store::Etcd(settings) => match store::transfer::open(settings, &source.name(), &text) {
            Ok(opened) => (opened.config, opened.text, Some((opened.store, opened.snapshot))),
            Err(errors) => {
                for error in &errors {
                    eprintln!("{error}");
                }
                eprintln!("{}: {} error(s) with the tenants in etcd; nothing started", source.name(), errors.len());
                return ExitCode::FAILURE;
            }
        },
    };
    for warning in &config.warnings {
        eprintln!("warning: {warning}");
    }
    if cli.check {
        println!("{}: ok ({} tenants)", source.name(), config.tenants.len());
        return ExitCode::SUCCESS;
    }
    // Kept for the life of the process: dropping it stops the access log writer.
    let _access_log = init_logging(config.observability.access_log);

    // Probes run on a runtime of their own, never on the proxy's workers.
    let health_runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("health-probes")
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cannot start the health-check runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let metrics = config.observability.metrics.then(Metrics::new);
    let registry = HealthRegistry::new(health_runtime.handle().clone(), metrics.clone());
    let mut shared = Shared::new(registry.clone(), metrics.clone());
    // Global rate quotas: leased from the fleet's Redis on the probes' runtime.
    if let QuotaBackend::Redis(settings) = &config.quotas {
        match quota::Redis::connect(settings, health_runtime.handle().clone()) {
            Ok(redis) => {
                if let Some(metrics) = &metrics {
                    for collector in redis.collectors() {
                        metrics.register(collector);
                    }
                }
                shared = shared.with_quotas(QuotaRegistry::global(redis));
            }
            Err(e) => {
                eprintln!("cannot use Redis for quotas: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let shared = Arc::new(shared);
    let routes = Arc::new(RouteStore::new(reload::build_table(&config, &shared, None)));
    if let Some(metrics) = &metrics {
        routing::watch(metrics, routes.clone());
        metrics.reload(true);
    }
    tracing::info!(config = %source.name(), tenants = config.tenants.len(), endpoints = registry.len(), "config loaded");
    let watch_config = config.admin.watch_config;
    // The JWKS of [tenancy.jwt] (when set, now or after a reload), read again on its interval.
    let (jwks_routes, jwks_metrics) = (routes.clone(), metrics.clone());
    let spawned = std::thread::Builder::new()
        .name("jwks-refresh".into())
        .spawn(move || routing::refresh_forever(jwks_routes, jwks_metrics));
    if let Err(e) = spawned {
        eprintln!("cannot start the JWKS refresh thread: {e}");
        return ExitCode::FAILURE;
    }
    let edge = Arc::new(Edge::new(&config.server.tls, metrics.clone()));
    let reloader = Reloader::new(source, routes.clone(), shared, config.clone(), text).with_memory_trim(release_memory);
    let reloader = reloader.with_edge(edge.clone());
    let reloader = Arc::new(match &store {
        Some((store, snapshot)) => reloader.with_store(store.clone(), snapshot.clone()),
        None => reloader,
    });
    if let Some((store, _)) = store {
        if let Some(metrics) = &metrics {
            metrics.register(Box::new(store.up_gauge()));
        }
        store.up_gauge().set(1);
        let watched = reloader.clone();
        store::etcd::watch(store, Arc::new(move || watched.reload("etcd", "etcd watch").is_ok()));
    }
    // Tenant usage from the deployments' own /metrics, on the probes' runtime.
    let usage = Arc::new(Usage::default());
    if let Some(interval) = config.observability.usage_interval {
        health_runtime.spawn(usage::collect_forever(routes.clone(), usage.clone(), interval, metrics.clone()));
    }
    // OTLP over gRPC, on a runtime of its own beside Pingora's.
    if let Some(addr) = config.server.otlp_grpc_listen {
        let settings = &config.server;
        let tls = settings.otlp_grpc_tls.and_then(|tls| edge.grpc_server_config(tls));
        let observability = config.observability.clone();
        let spawned = otlp_grpc::spawn(addr, settings.threads, routes.clone(), observability, settings.clients, tls);
        if let Err(e) = spawned {
            eprintln!("cannot serve OTLP/gRPC on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    }
    // Each pool's last minute, for the status page.
    let activity = Arc::new(Activity::default());
    health_runtime.spawn(activity::sample_forever(routes.clone(), activity.clone()));
    let readings = Readings { usage, activity };
    let server =
        mirador_router::server::build(&config, routes, metrics, reloader.clone(), &edge, readings, cli.upgrade);
    // The reloader holds the config from here on; main's copy would live as
    // long as the process.
    drop(config);
    release_memory();
    reload::serve_sighup(sighup, reloader.clone());
    reload::refresh_dns_forever(reloader.clone());
    if watch_config {
        reload::watch_file(reloader, std::time::Duration::from_secs(1));
    }
    server.run_forever()
}

/// `mirador-router store import|export`: between a TOML file and etcd.
fn store_command(
    config: &mirador_router::config::Config,
    source: &Source,
    text: &str,
    action: StoreAction,
) -> ExitCode {
    let Store::Etcd(settings) = &config.store else {
        eprintln!("{}: [store] kind is not \"etcd\": there is no store to import to or export from", source.name());
        return ExitCode::FAILURE;
    };
    let store = match EtcdStore::connect(settings.clone()) {
        Ok(store) => store,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match action {
        StoreAction::Import { from, overwrite } => std::fs::read_to_string(&from)
            .map_err(|e| vec![format!("cannot read {}: {e}", from.display())])
            .and_then(|from_text| {
                store::transfer::import(
                    &store,
                    &source.name(),
                    text,
                    &from.display().to_string(),
                    &from_text,
                    overwrite,
                )
            })
            .map(|written| format!("imported {} key(s) into etcd: {}", written.len(), written.join(" "))),
        StoreAction::Export { to } => store::transfer::export(&store).map_err(|e| vec![e]).and_then(|toml| match to {
            None => {
                print!("{toml}");
                Ok(String::new())
            }
            Some(path) => std::fs::write(&path, toml)
                .map(|_| format!("exported to {}", path.display()))
                .map_err(|e| vec![format!("cannot write {}: {e}", path.display())]),
        }),
    };
    match result {
        Ok(said) => {
            if !said.is_empty() {
                eprintln!("{said}");
            }
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for error in &errors {
                eprintln!("{error}");
            }
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr (filtered by `RUST_LOG`, default `info`); access log lines,
/// when on, to stdout through a non-blocking writer that drops lines rather
/// than slow the proxy down.
fn init_logging(access_log: AccessLogFormat) -> Option<tracing_appender::non_blocking::WorkerGuard> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;

    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info".into())
        .add_directive(format!("{}=off", access_log::TARGET).parse().expect("valid directive"));
    let log = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(filter);
    let (access, guard) = match access_log {
        AccessLogFormat::Off => (None, None),
        format => {
            let (writer, guard) = tracing_appender::non_blocking(std::io::stdout());
            let only_access = tracing_subscriber::filter::filter_fn(|meta| meta.target() == access_log::TARGET);
            (Some(AccessLogLayer::new(format, writer).with_filter(only_access)), Some(guard))
        }
    };
    tracing_subscriber::registry().with(log).with(access).init();
    guard
}
