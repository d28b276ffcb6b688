//! `keyward run`: the operator's start-up — its own credentials (tokens, the value-hash key), the clients,
//! the HTTP endpoints, leader election — handed to the controller, until a signal or a lost lease stops it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::PostParams;
use kube::{Api, Client};
use zeroize::Zeroizing;

use super::args::RunArgs;
use super::preflight;
use crate::authz::grants::Policies;
use crate::consumers::{Planner, PlannerConfig, RestartWindowSpec, parse_windows};
use crate::controller::context::Settings;
use crate::controller::error::ControllerError;
use crate::controller::leader::{self, Elector, LeaderConfig};
use crate::controller::wiring;
use crate::credentials::{Credential, CredentialSource, Form, Watched};
use crate::esc::{EscClient, EscConfig};
use crate::http::health::{self, HealthState};
use crate::http::webhook::{self, ReplayGuard, WebhookState};
use crate::push::github::{GithubClient, GithubConfig};
use crate::secret::ValueHasher;
use crate::source::Sources;
use crate::source::esc::EscSource;
use crate::source::kubernetes::KubernetesSource;
use crate::telemetry::audit::Audit;
use crate::telemetry::metrics::{EscRequestLabels, ManagedView, Metrics};
use crate::telemetry::{self};

fn read_secret_file(path: &PathBuf) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?);
    Ok(bytes)
}

/// Where one of keyward's credentials comes from: a file, or a key of a Secret named `NAMESPACE/NAME[:KEY]`
/// (key `token` by default; `flag` names it in errors). None: not configured.
fn credential_source(
    file: Option<&PathBuf>,
    secret: Option<&String>,
    flag: &'static str,
) -> anyhow::Result<Option<CredentialSource>> {
    Ok(match (file, secret) {
        (Some(path), _) => Some(CredentialSource::File(path.clone())),
        (None, Some(reference)) => Some(CredentialSource::secret(reference, "token", flag)?),
        (None, None) => None,
    })
}

/// Reads a credential, and keeps reading it every `--credential-reload-seconds` (a task that runs until
/// keyward stops). Not configured: an empty credential.
async fn credential(
    client: &Client,
    args: &RunArgs,
    name: &'static str,
    source: Option<CredentialSource>,
    form: Form,
) -> anyhow::Result<Credential> {
    let Some(source) = source else {
        return Ok(Credential::default());
    };
    let watched = Watched { name, source, form };
    let credential = watched.load(Some(client)).await?;
    let interval = Duration::from_secs(args.credential_reload_seconds);
    tokio::spawn(watched.keep_fresh(credential.clone(), Some(client.clone()), interval));
    Ok(credential)
}

/// The grants of `--access-policy-file`, read again every `--credential-reload-seconds`: a file that changed and
/// parses replaces them (a sender's receivers see it), one that does not parse is logged and the grants in force
/// stay.
fn policy_file(path: &Path, interval: Duration) -> anyhow::Result<tokio::sync::watch::Receiver<Policies>> {
    let text = read_secret_file(&path.to_path_buf())?;
    let shown = path.display().to_string();
    let parse = move |bytes: &[u8]| {
        let text = std::str::from_utf8(bytes).map_err(|_| format!("{shown} is not UTF-8"))?;
        Policies::parse(text, &shown).map_err(|e| e.to_string())
    };
    let policies = parse(&text).map_err(|e| anyhow::anyhow!(e))?;
    let (sender, receiver) = tokio::sync::watch::channel(policies);
    let watched = Watched {
        name: "access policy file",
        source: CredentialSource::File(path.to_path_buf()),
        form: Form::Key,
    };
    tokio::spawn(async move {
        watched
            // As `Form::Key` reads it, so that the first read of an unchanged file is not a change.
            .on_change(None, interval, Some(text.trim_ascii_end()), |bytes| {
                sender.send_replace(parse(&bytes)?);
                Ok(())
            })
            .await;
    });
    Ok(receiver)
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
        // Reached when the namespace could not be checked up front (no permission to read Namespaces).
        Err(e) if preflight::is_missing_namespace(&e, &args.namespace) => {
            Err(preflight::missing_namespace(&args.namespace, "--namespace").into())
        }
        // Another replica created it first: use theirs.
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let s = api.get(HASH_KEY_SECRET).await?;
            Ok(s.data.and_then(|mut d| d.remove("key")).map(|k| k.0).unwrap_or(key))
        }
        Err(e) => Err(e.into()),
    }
}

/// Runs the operator until SIGTERM or SIGINT (or a lost leader lease).
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
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
    let esc_url = Some(args.esc_url.as_str()).filter(|u| !u.is_empty());
    if let Some(url) = esc_url {
        preflight::esc_url(url)?;
    }
    preflight::access_policy(&args)?;
    let client = Client::try_default().await.map_err(|e| {
        anyhow::anyhow!("no cluster to connect to ({e}): outside a cluster set KUBECONFIG (or write ~/.kube/config)")
    })?;
    preflight::cluster(&client, &args).await?;
    let view: ManagedView = Arc::default();
    let metrics = Arc::new(Metrics::with_view(view.clone()));
    let esc = match esc_url {
        Some(url) => {
            let source = credential_source(
                args.esc_token_file.as_ref(),
                args.esc_token_secret.as_ref(),
                "--esc-token-secret",
            )?;
            let mut config = EscConfig::new(url, None);
            config.token = credential(&client, &args, "ESC token", source, Form::Token).await?;
            let requests = metrics.esc_requests.clone();
            config.observer = Some(Arc::new(move |endpoint, code| {
                let code = code.to_string();
                requests.get_or_create(&EscRequestLabels { endpoint, code }).inc();
            }));
            config.timeout = Duration::from_secs(args.esc_timeout_seconds);
            Some(Arc::new(EscSource::new(EscClient::new(config)?)))
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
    let source = credential_source(
        args.github_token_file.as_ref(),
        args.github_token_secret.as_ref(),
        "--github-token-secret",
    )?;
    let mut github_config = GithubConfig::new(&args.github_url, None);
    github_config.token = credential(&client, &args, "GitHub token", source, Form::Token).await?;
    let github = GithubClient::new(github_config)?;

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
    let policies = match (&args.access_policy_file, args.allow_all) {
        (Some(path), _) => policy_file(path, Duration::from_secs(args.credential_reload_seconds))?,
        (None, true) => {
            tracing::warn!("--allow-all: every namespace may make keyward do anything (development only)");
            tokio::sync::watch::channel(Policies::allow_all()).1
        }
        (None, false) => tokio::sync::watch::channel(Policies::default()).1,
    };
    if policies.borrow().is_empty() && !args.watch_access_policies {
        tracing::warn!(
            "no access policy: no ManagedSecret may do anything (see --access-policy-file and AccessPolicy objects)"
        );
    }
    // A trailing newline (`echo secret > file`) is not part of the secret.
    let source = args.webhook_secret_file.clone().map(CredentialSource::File);
    let webhook_secret = credential(&client, &args, "webhook secret", source, Form::Key).await?;
    let health = health::router(HealthState {
        metrics: metrics.clone(),
        ready: ready.clone(),
        view: view.clone(),
    });
    let webhook = webhook::router(WebhookState {
        metrics: metrics.clone(),
        view: view.clone(),
        client: Some(client.clone()),
        watch_namespace: args.watch_namespace.clone(),
        secret: webhook_secret,
        audit: audit.clone(),
        replays: ReplayGuard::new(Duration::from_secs(args.webhook_replay_window_seconds)),
    });
    for (addr, router, what) in [
        (args.http_listen, health, "/metrics, /healthz, /readyz, /health/secrets"),
        (args.webhook_listen, webhook, "the ESC webhook /webhooks/esc"),
    ] {
        tokio::spawn(async move {
            if let Err(e) = crate::http::serve(addr, router, what).await {
                tracing::error!(error = %e, "the HTTP endpoints stopped: {what}");
            }
        });
    }
    let leader = leader_config.map(|config| Elector::start(client.clone(), config));
    let source = Arc::new(Sources {
        esc: esc.clone(),
        kubernetes: KubernetesSource::new(client.clone()),
    });
    let settings = Settings {
        source,
        esc,
        hasher,
        concurrency: args.concurrency,
        coalesce_window: Duration::from_secs(args.coalesce_seconds),
        watch_namespace: args.watch_namespace.clone(),
        shard_selector: args.shard_selector.clone(),
        metrics,
        ready,
        planner: Some(planner),
        rollout_deadline: Duration::from_secs(args.rollout_deadline_seconds),
        github: Some(github),
        policies,
        watch_access_policies: args.watch_access_policies,
        audit,
        view,
        instance,
        leader,
    };
    tracing::info!(version = env!("CARGO_PKG_VERSION"), "keyward starting");
    match wiring::run(client, settings, shutdown_signal()).await {
        Err(ControllerError::LostLeadership) => {
            // Restarted by its Deployment, it contends again as a follower with nothing left over from this run.
            tracing::error!("exiting: this replica lost the leader lease and starts again as a follower");
            return Err(ControllerError::LostLeadership.into());
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
