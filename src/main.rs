//! `sockscope`: socket-state observability for reverse-proxy hosts.
//!
//! Parses flags and runs the agent, the snapshot, or the lab (the
//! `sockscope_lab` crate) with the process's SIGTERM/SIGINT as its stop.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, Parser, Subcommand};
use sockscope::agent::{PollLoop, Sampler};
use sockscope::collector::census::CensusPolicy;
use sockscope::events::EventSource;
use sockscope::events::ebpf::{self, EbpfMode, EbpfSettings};
use sockscope::exporter;
use sockscope::namespaces::{NamespaceSample, Namespaces, NamespacesConfig};
use sockscope::poller::{Config, Poller, SourceMode};
use sockscope::signal::{on_sighup, shutdown_signal};
use sockscope::snapshot;
use sockscope::source::ProcRoot;
use sockscope::source::kernel::Kernel;
use sockscope::source::stub_status::{Scraper, Target};
use sockscope::web::config::WebConfig;
use sockscope::web::conn::{Limits, Server};
use sockscope::web::stats::WebStats;
use sockscope_lab::proxy::ProxyConfig;
use sockscope_lab::upstream::Behavior;
use sockscope_lab::{self as lab, Addr};

#[derive(Parser)]
#[command(
    name = "sockscope",
    version,
    about = "Socket-state observability for reverse-proxy hosts"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log level: off, error, warn (or warning), info, debug, trace; or
    /// comma-separated directives such as info,sockscope::web=debug.
    #[arg(long = "log.level", default_value = "info", global = true, value_parser = parse_log_level)]
    log_level: String,
    /// Log format.
    #[arg(long = "log.format", value_enum, default_value = "text", global = true)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Poll kernel socket state in the background and serve it on /metrics.
    Agent(AgentArgs),
    /// Poll once and print the analysis as tables (or JSON).
    Snapshot(SnapshotArgs),
    /// A reference HTTP/1.1 reverse proxy modelled on nginx.
    Proxy(ProxyArgs),
    /// A lab upstream that misbehaves on purpose: stops accepting, reading,
    /// writing or closing (or a fast keep-alive server).
    Upstream(UpstreamArgs),
}

#[derive(Args)]
struct ProxyArgs {
    /// Address to accept clients on: IP:PORT or unix:PATH.
    #[arg(long, value_parser = parse_addr)]
    listen: Addr,
    /// The listen() backlog (capped by net.core.somaxconn).
    #[arg(long, default_value_t = 511)]
    backlog: u32,
    /// Upstream: http://IP:PORT or unix:PATH; repeat for round-robin.
    #[arg(long = "upstream", required = true, value_parser = parse_addr)]
    upstreams: Vec<Addr>,
    /// Idle upstream connections kept per upstream (nginx's keepalive N);
    /// 0 = a new upstream connection per request, closed by the proxy.
    #[arg(long, default_value_t = 0)]
    keepalive: usize,
    /// How long an idle upstream connection is kept.
    #[arg(long = "keepalive-timeout", default_value = "60s", value_parser = parse_interval)]
    keepalive_timeout: Duration,
    /// Cap on open connections per upstream (waits up to --connect-timeout).
    #[arg(long = "max-upstream-connections")]
    max_upstream_connections: Option<usize>,
    /// Cap on open client connections (like worker_connections): at the cap
    /// the proxy stops accepting.
    #[arg(long = "max-connections")]
    max_connections: Option<usize>,
    /// Upstream connect timeout (then 504).
    #[arg(long = "connect-timeout", default_value = "60s", value_parser = parse_interval)]
    connect_timeout: Duration,
    /// Time to wait for the upstream's response header (then 504).
    #[arg(long = "read-timeout", default_value = "60s", value_parser = parse_interval)]
    read_timeout: Duration,
    /// Path answered with an nginx stub_status page (e.g. /stub_status).
    #[arg(long = "status-path")]
    status_path: Option<String>,
    /// Worker threads (like worker_processes).
    #[arg(long, default_value_t = 2)]
    workers: usize,
}

#[derive(Args)]
struct UpstreamArgs {
    /// Address to listen on: IP:PORT or unix:PATH.
    #[arg(long, value_parser = parse_addr)]
    listen: Addr,
    /// The listen() backlog (capped by net.core.somaxconn).
    #[arg(long, default_value_t = 511)]
    backlog: u32,
    /// What to do with each connection.
    #[arg(long, value_parser = parse_behavior())]
    behavior: Behavior,
    /// Worker threads.
    #[arg(long, default_value_t = 1)]
    workers: usize,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum NetnsMode {
    #[value(name = "self")]
    Own,
    All,
}

/// Where `ip netns add` binds network namespaces.
const RUN_NETNS: &str = "/run/netns";

fn parse_addr(s: &str) -> Result<Addr, String> {
    s.parse()
}

/// `--behavior`: one of the lab's names, listed in the help and errors.
fn parse_behavior() -> impl TypedValueParser<Value = Behavior> {
    PossibleValuesParser::new(Behavior::NAMES)
        .map(|s| s.parse::<Behavior>().expect("a possible value"))
}

#[derive(Args, Clone)]
struct PollArgs {
    /// Root of the proc filesystem every /proc reader joins.
    #[arg(long = "path.procfs", default_value = "/proc")]
    procfs: PathBuf,
    /// Where socket tables come from: netlink (sock_diag), procfs, or auto
    /// (netlink, falling back per family to procfs when it fails).
    #[arg(long = "source", value_enum, default_value = "auto")]
    source: SourceMode,
    /// Per-destination series kept (fullest pools); the rest are summed
    /// into destination="other".
    #[arg(long = "ephemeral.top-destinations", default_value_t = 20, value_parser = at_least_one())]
    top_destinations: usize,
    /// Per-listener series kept (fullest queues); the rest are summed into
    /// listener="other".
    #[arg(long = "listen.max-listeners", default_value_t = 200, value_parser = at_least_one())]
    max_listeners: usize,
}

#[derive(Args)]
struct NetnsArgs {
    /// Which network namespaces to read: self (this process's own, no netns
    /// label) or all (every namespace under --path.procfs and /run/netns,
    /// each labelled netns; needs CAP_SYS_ADMIN and CAP_SYS_PTRACE, and
    /// hostPID on Kubernetes).
    #[arg(long = "netns", value_enum, default_value = "self")]
    netns: NetnsMode,
    /// With --netns all: namespaces reported at most (those with the most
    /// sockets); the rest are counted in sockscope_netns_over_limit.
    #[arg(long = "netns.max-namespaces", default_value_t = 128, value_parser = at_least_one())]
    max_namespaces: usize,
}

impl NetnsArgs {
    /// `--netns all`'s settings over `poller`'s (`None` for `self`).
    fn namespaces(&self, procfs: &std::path::Path, poller: &Poller) -> Option<NamespacesConfig> {
        match self.netns {
            NetnsMode::Own => None,
            NetnsMode::All => Some(NamespacesConfig {
                procfs: procfs.to_owned(),
                run_netns: RUN_NETNS.into(),
                poller: poller.config().clone(),
                max_namespaces: self.max_namespaces,
            }),
        }
    }
}

#[derive(Args)]
struct AgentArgs {
    #[command(flatten)]
    poll: PollArgs,
    #[command(flatten)]
    netns: NetnsArgs,
    /// Time between polls (e.g. 1s, 500ms). Every poll samples the
    /// listeners' accept queues; the census of every socket runs as
    /// --census.* allow.
    #[arg(long = "poll.interval", default_value = "1s", value_parser = parse_interval)]
    interval: Duration,
    /// Share of one CPU the census of every socket (states, ephemeral
    /// ports) may take on average: after a census that took D, the next
    /// waits D / RATIO (at least one poll). 1 = a census every poll.
    #[arg(long = "census.cpu-budget-ratio", default_value_t = 0.01, value_parser = parse_ratio)]
    census_budget: f64,
    /// The longest time between two censuses, whatever they cost.
    #[arg(long = "census.max-interval", default_value = "15s", value_parser = parse_interval)]
    census_max_interval: Duration,
    /// Address to serve on: ":9977" (all interfaces), "127.0.0.1:9977", "[::1]:9977".
    #[arg(long = "web.listen-address", default_value = ":9977")]
    listen: String,
    /// nginx stub_status to scrape every --poll.interval, on its own clock
    /// beside the kernel poll: http://HOST[:PORT]/PATH (port 1-65535,
    /// default 80) or unix:/path/to.sock:/PATH (repeatable).
    #[arg(long = "nginx.scrape-uri", value_parser = parse_target)]
    nginx: Vec<Target>,
    /// Time limit of one stub_status scrape (connect, request and body).
    #[arg(long = "nginx.timeout", default_value = "2s", value_parser = parse_interval)]
    nginx_timeout: Duration,
    /// Path under which metrics are served.
    #[arg(long = "web.telemetry-path", default_value = "/metrics", value_parser = parse_path)]
    telemetry_path: String,
    /// exporter-toolkit web configuration (YAML) for TLS and basic auth.
    #[arg(long = "web.config.file")]
    web_config: Option<PathBuf>,
    /// Time a connection may take to send a complete request header (from
    /// its accept, or from its previous response); then it is closed.
    #[arg(long = "web.read-header-timeout", default_value = "10s", value_parser = parse_interval)]
    read_header_timeout: Duration,
    /// Open connections at most; at the cap, the connection that has
    /// waited longest for its request header is closed to make room.
    #[arg(long = "web.max-connections", default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,
    /// Scrapes served at once; beyond, 503 (0 = no limit).
    #[arg(long = "web.max-requests", default_value_t = 40)]
    max_requests: usize,
    /// eBPF event source counting every TCP connect() outcome
    /// (sockscope_connects_total) and entry into TIME_WAIT in the kernel:
    /// auto (on where the kernel and the privileges allow, else off with
    /// one log line saying why), on (or do not start), off.
    #[arg(long = "ebpf", value_enum, default_value = "auto")]
    ebpf: EbpfMode,
    /// Rows of the eBPF map (one per namespace, local IP, destination and
    /// result); events needing a new row once it is full are counted in
    /// sockscope_ebpf_events_lost_total.
    #[arg(long = "ebpf.max-entries", default_value_t = 16384, value_parser = clap::value_parser!(u32).range(1..=1_048_576))]
    ebpf_max_entries: u32,
    /// Export the eBPF programs' kernel time
    /// (sockscope_ebpf_program_run_seconds_total): BPF_ENABLE_STATS, which
    /// needs CAP_SYS_ADMIN and turns run-time statistics on host-wide.
    #[arg(long = "ebpf.kernel-stats")]
    ebpf_kernel_stats: bool,
}

/// The longest request header (hyper's read buffer): beyond, 431.
const MAX_HEADER_BYTES: usize = 64 * 1024;

#[derive(Args)]
struct SnapshotArgs {
    #[command(flatten)]
    poll: PollArgs,
    #[command(flatten)]
    netns: NetnsArgs,
    /// Print JSON instead of tables (schema: README, "snapshot --json").
    #[arg(long)]
    json: bool,
    /// Also print how long each source took (tables only: the JSON always
    /// has sources[].duration_seconds).
    #[arg(long)]
    timing: bool,
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d < Duration::from_millis(10) {
        return Err("must be at least 10ms".into());
    }
    Ok(d)
}

fn parse_ratio(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r > 0.0 && r <= 1.0 => Ok(r),
        _ => Err("must be a number in (0, 1]".into()),
    }
}

/// A count of at least 1 (a cap on series or namespaces).
fn at_least_one() -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::<usize>::new().range(1..)
}

fn parse_log_level(s: &str) -> Result<String, String> {
    sockscope::logging::parse_filter(s)
}

fn parse_target(s: &str) -> Result<Target, String> {
    s.parse()
}

fn parse_path(s: &str) -> Result<String, String> {
    if s.starts_with('/') && s.len() > 1 && s != "/healthz" {
        Ok(s.to_owned())
    } else {
        Err("must start with '/' and not be '/' or '/healthz'".into())
    }
}

impl PollArgs {
    /// Checks the procfs root is readable and builds the poller.
    fn poller(&self, census: CensusPolicy) -> Result<Poller, String> {
        let net = self.procfs.join("net");
        std::fs::read_dir(&net).map_err(|e| {
            format!(
                "--path.procfs {}: cannot read {}: {e}",
                self.procfs.display(),
                net.display()
            )
        })?;
        let cfg = Config {
            source: self.source,
            top_destinations: self.top_destinations,
            max_listeners: self.max_listeners,
            census,
            inet_diag_any_family: true,
            netstat_with_census: false,
        };
        Ok(Poller::new(cfg, Kernel::new(ProcRoot::new(&self.procfs))))
    }
}

fn init_logging(level: &str, format: LogFormat) -> Result<(), String> {
    let filter = sockscope::logging::env_filter(level)?;
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}

/// Resolves ":9977" to all interfaces; anything else must be IP:port.
fn listen_addrs(s: &str) -> Result<Vec<SocketAddr>, String> {
    if let Some(port) = s.strip_prefix(':') {
        let port: u16 = port
            .parse()
            .map_err(|_| format!("--web.listen-address {s:?}: bad port"))?;
        return Ok(vec![
            SocketAddr::from(([0u16; 8], port)),
            SocketAddr::from(([0, 0, 0, 0], port)),
        ]);
    }
    s.parse()
        .map(|a| vec![a])
        .map_err(|_| format!("--web.listen-address {s:?}: expected :PORT, IP:PORT or [IPv6]:PORT"))
}

async fn bind(s: &str) -> Result<tokio::net::TcpListener, String> {
    let mut last = String::new();
    for addr in listen_addrs(s)? {
        match sockscope::web::conn::listen(addr) {
            Ok(l) => return Ok(l),
            // An in-use port is final; an unsupported family tries the next.
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                return Err(format!(
                    "--web.listen-address {s}: cannot listen on {addr}: {e}"
                ));
            }
            Err(e) => last = format!("--web.listen-address {s}: cannot listen on {addr}: {e}"),
        }
    }
    Err(last)
}

/// `--netns all` holds two descriptors per namespace (its file and its
/// sock_diag socket) besides the web server's connections: the soft
/// `RLIMIT_NOFILE` (often 1024) is raised to the hard limit, as Go's
/// runtime does for every exporter since Go 1.19. Failing that, it stays
/// as it was (a namespace that cannot be opened is counted in
/// `sockscope_netns_errors_total`).
fn raise_nofile_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut l = getrlimit(Resource::Nofile);
    if l.current < l.maximum {
        l.current = l.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, l) {
            tracing::debug!(error = %e, "cannot raise RLIMIT_NOFILE");
        }
    }
}

fn run_agent(args: AgentArgs) -> Result<(), String> {
    let poller = args.poll.poller(CensusPolicy {
        cpu_budget_ratio: args.census_budget,
        max_interval: args.census_max_interval,
    })?;
    let sampler = match args.netns.namespaces(&args.poll.procfs, &poller) {
        None => Sampler::Own(Box::new(poller)),
        Some(cfg) => {
            raise_nofile_limit();
            Sampler::All(cfg)
        }
    };
    let own_netns = std::fs::metadata("/proc/self/ns/net")
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .map_err(|e| format!("/proc/self/ns/net: {e}"))?;

    let web = match &args.web_config {
        Some(file) => WebConfig::load(file).map_err(|e| e.to_string())?,
        None => WebConfig::default(),
    };
    let tls = match &web.tls {
        Some(t) => {
            let file = args
                .web_config
                .as_deref()
                .unwrap_or(std::path::Path::new("?"));
            Some(
                sockscope::web::tls::acceptor(t)
                    .map_err(|e| format!("--web.config.file {}: {e}", file.display()))?,
            )
        }
        None => None,
    };
    let rt = runtime(2)?;
    rt.block_on(async move {
        let listener = bind(&args.listen).await?;
        let local = listener.local_addr().map_err(|e| e.to_string())?;
        // After the flags and the listen address were found good: a bad
        // flag fails with one line, before eBPF programs are loaded.
        let mut event_sources: Vec<Box<dyn EventSource>> = Vec::new();
        if let Some(s) = ebpf::start(EbpfSettings {
            mode: args.ebpf,
            max_entries: args.ebpf_max_entries,
            kernel_stats: args.ebpf_kernel_stats,
            top_destinations: args.poll.top_destinations,
            all_namespaces: args.netns.netns == NetnsMode::All,
            own_netns,
        })? {
            event_sources.push(Box::new(s));
        }
        let scrapers = args.nginx.iter().cloned().map(Scraper::new).collect();
        let poll_loop = PollLoop::with_events(
            sampler,
            event_sources,
            scrapers,
            args.interval,
            args.nginx_timeout,
        )
        .map_err(|e| format!("starting the poller: {e}"))?;
        let (latest, running) = poll_loop.start().await;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let polling = tokio::spawn(running.run(async {
            let _ = stop_rx.await;
        }));
        let tls_on = tls.is_some();
        let (acceptor, reloader) = tls.unzip();
        if let Some(r) = reloader {
            // Installed before "serving" is logged (see on_sighup).
            tokio::spawn(on_sighup(move || r.reload()));
        }
        tracing::info!(address = %local, path = %args.telemetry_path, interval = ?args.interval,
            tls = tls_on, basic_auth = !web.users.is_empty(), "serving");
        let stats = std::sync::Arc::new(WebStats::default());
        tokio::spawn(sockscope::web::trim::trim_after_closes(
            std::sync::Arc::clone(&stats),
            std::time::Duration::from_secs(1),
        ));
        let router = exporter::router(
            latest,
            exporter::RouterConfig {
                telemetry_path: args.telemetry_path.clone(),
                max_requests: args.max_requests,
                users: web.users,
                stats: std::sync::Arc::clone(&stats),
                headers: web.headers,
            },
        );
        let server = Server {
            router,
            tls: acceptor,
            limits: Limits {
                read_header_timeout: args.read_header_timeout,
                max_connections: args.max_connections as usize,
                max_header_bytes: MAX_HEADER_BYTES,
            },
            stats,
        };
        let served = sockscope::web::conn::serve(listener, server, shutdown_signal()).await;
        let _ = stop_tx.send(());
        let _ = polling.await;
        served.map_err(|e| format!("serving: {e}"))
    })
}

fn run_snapshot(args: SnapshotArgs) -> Result<(), String> {
    let mut poller = args.poll.poller(CensusPolicy::EVERY_POLL)?;
    let (samples, stats) = match args.netns.namespaces(&args.poll.procfs, &poller) {
        None => {
            let sample = poller.poll();
            (
                vec![NamespaceSample {
                    netns: None,
                    sample,
                }],
                None,
            )
        }
        Some(cfg) => {
            raise_nofile_limit();
            let mut all = Namespaces::new(cfg).map_err(|e| format!("--netns all: {e}"))?;
            let (samples, stats) = all.poll();
            (samples, Some(stats))
        }
    };
    let out = match (&stats, args.json) {
        (None, true) => json(&snapshot::Json::new(&samples[0]))?,
        (None, false) => snapshot::render(&samples[0].sample, args.timing),
        (Some(stats), true) => json(&snapshot::JsonAll {
            namespaces: samples.iter().map(snapshot::Json::new).collect(),
            discovery: stats,
        })?,
        (Some(stats), false) => snapshot::render_all(&samples, stats, args.timing),
    };
    {
        use std::io::Write;
        let mut stdout = std::io::stdout().lock();
        match stdout
            .write_all(out.as_bytes())
            .and_then(|()| stdout.flush())
        {
            // A reader that stopped early (`| head`) is not a failure.
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                return Err(format!("writing the snapshot: {e}"));
            }
            _ => {}
        }
    }
    let unread: Vec<String> = samples
        .iter()
        .flat_map(|ns| {
            let netns = ns.netns.as_ref().map(|i| format!("netns {}: ", i.inode));
            snapshot::unread(&ns.sample)
                .into_iter()
                .map(move |u| format!("{}{u}", netns.as_deref().unwrap_or("")))
        })
        .collect();
    if unread.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "snapshot: could not read {} (shown as -; see \"Sources down\" or sources[] for why)",
            unread.join(", ")
        ))
    }
}

fn json(doc: &impl serde::Serialize) -> Result<String, String> {
    serde_json::to_string_pretty(doc)
        .map(|s| s + "\n")
        .map_err(|e| format!("encoding the snapshot as JSON: {e}"))
}

fn runtime(workers: usize) -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers.max(1))
        // /metrics encodes on the blocking pool: one thread, kept, so the
        // agent's thread count stays put between scrapes.
        .max_blocking_threads(1)
        .thread_keep_alive(Duration::from_secs(3600))
        .enable_all()
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))
}

/// The lab commands' main-thread runtime: it only waits for the stop
/// signal while their worker threads serve.
fn signal_thread_runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))
}

fn run_proxy(a: ProxyArgs) -> Result<(), String> {
    if let Some(p) = &a.status_path
        && !p.starts_with('/')
    {
        return Err(format!("--status-path {p:?}: must start with '/'"));
    }
    let cfg = ProxyConfig {
        upstreams: a.upstreams,
        keepalive: a.keepalive,
        keepalive_timeout: a.keepalive_timeout,
        max_upstream_connections: a.max_upstream_connections,
        max_connections: a.max_connections,
        connect_timeout: a.connect_timeout,
        read_timeout: a.read_timeout,
        status_path: a.status_path,
    };
    // This thread only waits for the signal; `--workers` threads serve,
    // each on a runtime of its own (see sockscope_lab::proxy::run).
    signal_thread_runtime()?.block_on(async move {
        let listener = lab::listen(&a.listen, a.backlog)?;
        tracing::info!(listen = %a.listen, backlog = a.backlog, upstreams = ?cfg.upstreams, keepalive = cfg.keepalive, workers = a.workers, "proxy serving");
        lab::proxy::run(listener, cfg, a.workers, shutdown_signal()).await
    })
}

fn run_upstream(a: UpstreamArgs) -> Result<(), String> {
    // This thread only waits for the signal; `--workers` threads serve,
    // each on a runtime of its own (see sockscope_lab::upstream::run_workers).
    signal_thread_runtime()?.block_on(async move {
        let listener = lab::listen(&a.listen, a.backlog)?;
        tracing::info!(listen = %a.listen, backlog = a.backlog, behavior = ?a.behavior, workers = a.workers, "upstream serving");
        lab::upstream::run_workers(listener, a.behavior, a.workers, shutdown_signal())
            .await
            .map_err(|e| format!("upstream workers: {e}"))
    })
}

/// Exit status of a bad command line (clap's, for every usage error).
const EXIT_USAGE: u8 = 2;
/// Exit status of every other failure (one line on stderr).
const EXIT_FAILURE: u8 = 1;

/// The one line of a usage error: clap's message without its `error: `
/// prefix, usage and hints.
fn usage_error_line(e: &clap::Error) -> String {
    let rendered = e.render().to_string();
    let msg: Vec<&str> = rendered
        .lines()
        .map(str::trim)
        .take_while(|l| !l.is_empty() && !l.starts_with("Usage:"))
        .collect();
    let msg = msg.join(" ");
    let msg = msg.strip_prefix("error: ").unwrap_or(&msg);
    format!("sockscope: {msg} (see --help)")
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // --help, --version, and the help printed for a missing subcommand.
        Err(e)
            if !e.use_stderr()
                || e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand =>
        {
            e.exit()
        }
        Err(e) => {
            eprintln!("{}", usage_error_line(&e));
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if let Err(e) = init_logging(&cli.log_level, cli.log_format) {
        eprintln!("sockscope: {e}");
        return ExitCode::from(EXIT_USAGE);
    }
    let res = match cli.command {
        Command::Agent(a) => run_agent(a),
        Command::Snapshot(s) => run_snapshot(s),
        Command::Proxy(p) => run_proxy(p),
        Command::Upstream(u) => run_upstream(u),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        // Printed once, not also logged: the README promises one line.
        Err(e) => {
            eprintln!("sockscope: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}
