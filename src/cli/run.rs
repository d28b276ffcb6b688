//! `keyward run`: the operator's start-up — its own credentials (tokens, the value-hash key), the clients,
//! the HTTP endpoints, leader election — handed to the controller, until a signal or a lost lease stops it.

use std::path::PathBuf;
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
            let token = token(
                &client,
                args.esc_token_file.as_ref(),
                args.esc_token_secret.as_ref(),
                "--esc-token-secret",
            );
            let mut config = EscConfig::new(url, token.await?);
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
    let policies = match (&args.access_policy_file, args.allow_all) {
        (Some(path), _) => Policies::load(path)?,
        (None, true) => {
            tracing::warn!("--allow-all: every namespace may make keyward do anything (development only)");
            Policies::allow_all()
        }
        (None, false) => Policies::default(),
    };
    if policies.is_empty() && !args.watch_access_policies {
        tracing::warn!(
            "no access policy: no ManagedSecret may do anything (see --access-policy-file and AccessPolicy objects)"
        );
    }
    // A trailing newline (`echo secret > file`) is not part of the secret.
    let webhook_secret = args
        .webhook_secret_file
        .as_ref()
        .map(read_secret_file)
        .transpose()?
        .map(|b| Zeroizing::new(b.trim_ascii_end().to_vec()));
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
