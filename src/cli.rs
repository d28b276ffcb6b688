//! The `keyward` command line: subcommands hand over to the library.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use k8s_openapi::api::core::v1::Secret;
use kube::api::PostParams;
use kube::{Api, Client};
use zeroize::Zeroizing;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::access::AccessPolicy;
use crate::consumers::{Planner, PlannerConfig, RestartWindowSpec, parse_windows};
use crate::controller::leader::{self, Elector, LeaderConfig};
use crate::controller::{self, Settings};
use crate::http::HttpState;
use crate::push::github::{GithubClient, GithubConfig};
use crate::source::ValueHasher;
use crate::source::esc::{EscClient, EscConfig, EscSource};
use crate::telemetry::audit::Audit;
use crate::telemetry::metrics::ManagedView;
use crate::telemetry::metrics::Metrics;
use crate::telemetry::{self, LogFormat};

mod commands;
pub use commands::{ImportArgs, KubeArgs, ReportArgs, ReportFormat, RotateArgs, StatusArgs};

#[derive(Parser, Debug)]
#[command(
    name = "keyward",
    version,
    about = "Keeps Kubernetes Secrets in step with Pulumi ESC"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print the CustomResourceDefinitions keyward serves, as YAML.
    Crd,
    /// Run the operator (current kubeconfig, or in-cluster configuration).
    Run(Box<RunArgs>),
    /// Generate ManagedSecrets from a secret map (`SECRET_NAME: esc.path` per line), checked against the CRD.
    Import(ImportArgs),
    /// Rotation compliance of every ManagedSecret. Exit code 0: nothing overdue; 2: something overdue; 1: error.
    Report(ReportArgs),
    /// Ask for an emergency rotation (keyward.dev/rotate-now) and, with --wait, follow it step by step.
    Rotate(RotateArgs),
    /// One ManagedSecret for humans: source, target, conditions, rotation, consumers, pushes, Events.
    Status(StatusArgs),
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// ESC API base URL, including /api/esc.
    #[arg(long, env = "KEYWARD_ESC_URL")]
    pub esc_url: Option<String>,
    /// File holding the ESC access token.
    #[arg(long, env = "KEYWARD_ESC_TOKEN_FILE")]
    pub esc_token_file: Option<PathBuf>,
    /// Secret holding the ESC access token, as NAMESPACE/NAME[:KEY] (key defaults to "token").
    #[arg(long, env = "KEYWARD_ESC_TOKEN_SECRET", conflicts_with = "esc_token_file")]
    pub esc_token_secret: Option<String>,
    /// ESC request timeout in seconds.
    #[arg(long, default_value_t = 10)]
    pub esc_timeout_seconds: u64,
    /// GitHub API base URL, for `rotation.pushTo` GitHub targets.
    #[arg(long, env = "KEYWARD_GITHUB_URL", default_value = "https://api.github.com")]
    pub github_url: String,
    /// File holding the GitHub token (needs the Actions secrets write permission of the targets).
    #[arg(long, env = "KEYWARD_GITHUB_TOKEN_FILE")]
    pub github_token_file: Option<PathBuf>,
    /// Secret holding the GitHub token, as NAMESPACE/NAME[:KEY] (key defaults to "token").
    #[arg(long, env = "KEYWARD_GITHUB_TOKEN_SECRET", conflicts_with = "github_token_file")]
    pub github_token_secret: Option<String>,
    /// The access policy (YAML: `rules: [{namespaces: [...], environments: [...]}]`, globs). Without it no
    /// namespace may read any ESC environment — unless --allow-all-environments says otherwise.
    #[arg(long, env = "KEYWARD_ACCESS_POLICY_FILE")]
    pub access_policy_file: Option<PathBuf>,
    /// Let every namespace read every ESC environment (development; prefer a policy file).
    #[arg(long, env = "KEYWARD_ALLOW_ALL_ENVIRONMENTS", conflicts_with = "access_policy_file")]
    pub allow_all_environments: bool,
    /// Where audit lines go: `stdout` (logs go to stderr), a file path to append to, or `off`.
    #[arg(long, env = "KEYWARD_AUDIT_LOG", default_value = "stdout")]
    pub audit_log: String,
    /// File holding the ESC webhook's shared secret. Without it, POST /webhooks/esc refuses every call.
    #[arg(long, env = "KEYWARD_WEBHOOK_SECRET_FILE")]
    pub webhook_secret_file: Option<PathBuf>,
    /// File holding the key for value hashes (any bytes). Without it, keyward keeps one in the Secret
    /// `keyward-hash-key` of its namespace, created on first start.
    #[arg(long, env = "KEYWARD_HASH_KEY_FILE")]
    pub hash_key_file: Option<PathBuf>,
    /// keyward's own namespace.
    #[arg(long, env = "POD_NAMESPACE", default_value = "keyward-system")]
    pub namespace: String,
    /// Reconciles running at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: u16,
    /// Seconds within which a fresh ESC snapshot is shared by reconciles that demand fresh data.
    #[arg(long, default_value_t = 2)]
    pub coalesce_seconds: u64,
    /// Watch ManagedSecrets and Secrets in this namespace only (namespaced mode).
    #[arg(long, env = "KEYWARD_WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,
    /// Seconds after a Secret change before its consumers restart, so that changes arriving together restart
    /// each workload once.
    #[arg(long, env = "KEYWARD_RESTART_DEBOUNCE_SECONDS", default_value_t = 10)]
    pub restart_debounce_seconds: u64,
    /// Workloads keyward lets roll at once, cluster-wide.
    #[arg(long, env = "KEYWARD_MAX_CONCURRENT_RESTARTS", default_value_t = 5)]
    pub max_concurrent_restarts: usize,
    /// Workloads keyward lets roll at once in one namespace.
    #[arg(long, env = "KEYWARD_MAX_CONCURRENT_RESTARTS_PER_NAMESPACE", default_value_t = 2)]
    pub max_concurrent_restarts_per_namespace: usize,
    /// Restart windows as JSON: `[{"days": ["Mon-Fri"], "start": "02:00", "end": "05:00", "timeZone":
    /// "Europe/Berlin"}]`. Restarts start only inside one; none means at any time.
    #[arg(long, env = "KEYWARD_RESTART_WINDOWS")]
    pub restart_windows: Option<String>,
    /// Seconds a restart's rollout may take before keyward counts it as failed.
    #[arg(long, env = "KEYWARD_ROLLOUT_DEADLINE_SECONDS", default_value_t = 600)]
    pub rollout_deadline_seconds: u64,
    /// Run as one of several replicas: only the holder of the Lease `--lease-name` writes; the others keep their
    /// caches warm and take over when it stops or its lease runs out. Off for a single process.
    /// (The variable takes true/false, yes/no, on/off or 1/0.)
    #[arg(long, env = "KEYWARD_LEADER_ELECTION", action = clap::ArgAction::SetTrue,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub leader_election: bool,
    /// The Lease the replicas elect a leader with.
    #[arg(long, env = "KEYWARD_LEASE_NAME", default_value = "keyward")]
    pub lease_name: String,
    /// The Lease's namespace (default: keyward's own, `--namespace`).
    #[arg(long, env = "KEYWARD_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// Seconds a leader's claim stands after its last renewal: the longest a failover waits for a leader that
    /// died without letting go.
    #[arg(long, env = "KEYWARD_LEASE_DURATION_SECONDS", default_value_t = 15)]
    pub lease_duration_seconds: u64,
    /// The leader renews this many seconds before its claim runs out (default: a third of the duration).
    #[arg(long, env = "KEYWARD_LEASE_RENEW_GRACE_SECONDS")]
    pub lease_renew_grace_seconds: Option<u64>,
    /// Address for /metrics, /healthz and /readyz.
    #[arg(long, env = "KEYWARD_HTTP_LISTEN", default_value = "0.0.0.0:8080")]
    pub http_listen: std::net::SocketAddr,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Json, env = "KEYWARD_LOG_FORMAT")]
    pub log_format: LogFormat,
}

/// Parses the command line and runs the chosen subcommand.
pub fn main() -> ExitCode {
    crate::install_crypto_provider();
    let cli = commands::parse();
    let result = match cli.command {
        Command::Crd => print_crds(),
        // The operations commands report their own errors and choose their own exit codes.
        Command::Import(args) => return commands::import(args),
        Command::Report(args) => return commands::report(args),
        Command::Rotate(args) => return commands::rotate(args),
        Command::Status(args) => return commands::status(args),
        Command::Run(args) => tokio::runtime::Runtime::new()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(run(*args))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keyward: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn print_crds() -> anyhow::Result<()> {
    let yaml = crate::api::crds_yaml()?;
    std::io::stdout().write_all(yaml.as_bytes())?;
    Ok(())
}

fn read_secret_file(path: &PathBuf) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?);
    Ok(bytes)
}

/// A token from a file, or from a key of a Secret named `NAMESPACE/NAME[:KEY]` (`flag` names it in errors).
async fn token(
    client: &Client,
    file: Option<&PathBuf>,
    secret: Option<&String>,
    flag: &str,
) -> anyhow::Result<Option<Zeroizing<String>>> {
    if let Some(path) = file {
        let bytes = read_secret_file(path)?;
        let text = std::str::from_utf8(&bytes).map_err(|_| anyhow::anyhow!("{} is not UTF-8", path.display()))?;
        return Ok(Some(Zeroizing::new(text.trim().to_string())));
    }
    let Some(reference) = secret else {
        return Ok(None);
    };
    let (ns_name, key) = reference.split_once(':').unwrap_or((reference.as_str(), "token"));
    let (ns, name) = ns_name
        .split_once('/')
        .ok_or_else(|| anyhow::anyhow!("{flag} must be NAMESPACE/NAME[:KEY]"))?;
    let secret = Api::<Secret>::namespaced(client.clone(), ns).get(name).await?;
    let bytes = secret
        .data
        .and_then(|mut d| d.remove(key))
        .ok_or_else(|| anyhow::anyhow!("Secret {ns}/{name} has no key {key:?}"))?;
    let bytes = Zeroizing::new(bytes.0);
    let text = std::str::from_utf8(&bytes).map_err(|_| anyhow::anyhow!("Secret {ns}/{name} key {key} is not UTF-8"))?;
    Ok(Some(Zeroizing::new(text.trim().to_string())))
}

const HASH_KEY_SECRET: &str = "keyward-hash-key";

async fn hash_key(client: &Client, args: &RunArgs) -> anyhow::Result<Vec<u8>> {
    if let Some(path) = &args.hash_key_file {
        return Ok(read_secret_file(path)?.to_vec());
    }
    // Value hashes must be stable across restarts and replicas, or every restart would look like a change.
    let api: Api<Secret> = Api::namespaced(client.clone(), &args.namespace);
    if let Some(k) = api
        .get_opt(HASH_KEY_SECRET)
        .await?
        .and_then(|s| s.data)
        .and_then(|mut d| d.remove("key"))
    {
        return Ok(k.0);
    }
    let mut key = vec![0u8; 32];
    rand::fill(&mut key[..]);
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": HASH_KEY_SECRET, "labels": {"app.kubernetes.io/managed-by": "keyward"}},
        "data": {"key": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &key)}
    }))?;
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => Ok(key),
        // Another replica created it first: use theirs.
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let s = api.get(HASH_KEY_SECRET).await?;
            Ok(s.data.and_then(|mut d| d.remove("key")).map(|k| k.0).unwrap_or(key))
        }
        Err(e) => Err(e.into()),
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    telemetry::init(args.log_format, "info,kube=warn");
    // Checked before anything else starts, so that bad settings fail at once.
    let leader_config = args
        .leader_election
        .then(|| {
            LeaderConfig::new(
                &args.lease_name,
                args.lease_namespace.as_deref().unwrap_or(&args.namespace),
                &leader::identity(),
                args.lease_duration_seconds,
                args.lease_renew_grace_seconds,
            )
        })
        .transpose()?;
    let client = Client::try_default().await?;
    let view: ManagedView = Arc::default();
    let metrics = Arc::new(Metrics::with_view(view.clone()));
    let esc = match &args.esc_url {
        Some(url) => {
            let token = token(
                &client,
                args.esc_token_file.as_ref(),
                args.esc_token_secret.as_ref(),
                "--esc-token-secret",
            );
            let mut config = EscConfig::new(url, token.await?);
            config.requests = Some(metrics.esc_requests.clone());
            config.timeout = Duration::from_secs(args.esc_timeout_seconds);
            Some(EscSource::new(EscClient::new(config)?))
        }
        None => {
            tracing::warn!("no ESC URL configured: ManagedSecrets with an ESC source will report SourceNotConfigured");
            None
        }
    };
    let windows: Vec<RestartWindowSpec> = match &args.restart_windows {
        Some(json) => serde_json::from_str(json).map_err(|e| anyhow::anyhow!("--restart-windows: {e}"))?,
        None => Vec::new(),
    };
    let planner = Planner::new(PlannerConfig {
        debounce: Duration::from_secs(args.restart_debounce_seconds),
        max_in_flight: args.max_concurrent_restarts,
        max_in_flight_per_namespace: args.max_concurrent_restarts_per_namespace,
        windows: parse_windows(&windows)?,
    })?;
    let hasher = ValueHasher::new(hash_key(&client, &args).await?);
    let github_token = token(
        &client,
        args.github_token_file.as_ref(),
        args.github_token_secret.as_ref(),
        "--github-token-secret",
    )
    .await?;
    let github = GithubClient::new(GithubConfig::new(&args.github_url, github_token))?;

    let ready = Arc::new(AtomicBool::new(false));
    let instance = std::env::var("POD_NAME").unwrap_or_else(|_| format!("keyward-{}", std::process::id()));
    let accessor = format!("keyward/{}/{instance}", args.namespace);
    let audit = Arc::new(match args.audit_log.as_str() {
        "stdout" => Audit::stdout(accessor),
        "off" => Audit::disabled(),
        path => {
            Audit::file(std::path::Path::new(path), accessor).map_err(|e| anyhow::anyhow!("--audit-log {path}: {e}"))?
        }
    });
    let policy = match (&args.access_policy_file, args.allow_all_environments) {
        (Some(path), _) => AccessPolicy::load(path)?,
        (None, true) => AccessPolicy::allow_all(),
        (None, false) => {
            tracing::warn!("no access policy: no namespace may read any ESC environment (see --access-policy-file)");
            AccessPolicy::default()
        }
    };
    // A trailing newline (`echo secret > file`) is not part of the secret.
    let webhook_secret = args
        .webhook_secret_file
        .as_ref()
        .map(read_secret_file)
        .transpose()?
        .map(|b| Zeroizing::new(b.trim_ascii_end().to_vec()));
    let http_state = HttpState {
        metrics: metrics.clone(),
        ready: ready.clone(),
        view: view.clone(),
        client: Some(client.clone()),
        watch_namespace: args.watch_namespace.clone(),
        webhook_secret,
        audit: audit.clone(),
    };
    let listener = args.http_listen;
    tokio::spawn(async move {
        if let Err(e) = crate::http::serve(listener, http_state).await {
            tracing::error!(error = %e, "the HTTP endpoints stopped");
        }
    });
    let leader = leader_config.map(|config| Elector::start(client.clone(), config));
    let settings = Settings {
        esc,
        hasher,
        concurrency: args.concurrency,
        coalesce_window: Duration::from_secs(args.coalesce_seconds),
        watch_namespace: args.watch_namespace.clone(),
        metrics,
        ready,
        planner: Some(planner),
        rollout_deadline: Duration::from_secs(args.rollout_deadline_seconds),
        github: Some(github),
        policy,
        audit,
        view,
        instance,
        leader,
    };
    tracing::info!(version = env!("CARGO_PKG_VERSION"), "keyward starting");
    match controller::run(client, settings, shutdown_signal()).await {
        Err(controller::ControllerError::LostLeadership) => {
            // Restarted by its Deployment, it contends again as a follower with nothing left over from this run.
            tracing::error!("exiting: this replica lost the leader lease and starts again as a follower");
            return Err(controller::ControllerError::LostLeadership.into());
        }
        r => r?,
    }
    tracing::info!("keyward stopped");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
