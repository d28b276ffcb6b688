//! The command line as clap reads it: the subcommands and their arguments, and the parse that says
//! `kubectl keyward` in usage when keyward runs as the kubectl plugin.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

use crate::telemetry::LogFormat;

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
    /// Print the CustomResourceDefinitions keyward serves, as YAML (all, or the one named by its plural).
    Crd {
        /// `managedsecrets` or `accesspolicies`.
        name: Option<String>,
    },
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
    /// Print a completion script for a shell, e.g. `source <(keyward completion bash)`.
    Completion {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// This keyward's version, and, when the cluster answers, the Kubernetes version and the keyward
    /// operators deployed there (their Deployments' images).
    Version(KubeArgs),
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// ESC API base URL, including /api/esc (Pulumi Cloud's by default, as in Pulumi's ESC OpenAPI spec).
    /// An empty value turns ESC sources off (they report SourceNotConfigured).
    #[arg(long, env = "KEYWARD_ESC_URL", default_value = "https://api.pulumi.com/api/esc")]
    pub esc_url: String,
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
    /// AccessPolicy objects in a file (a YAML stream; the older `rules: [{namespaces, environments}]` form
    /// grants reads), for running outside a cluster. They add to the cluster's AccessPolicies.
    #[arg(long, env = "KEYWARD_ACCESS_POLICY_FILE")]
    pub access_policy_file: Option<PathBuf>,
    /// Let every namespace make keyward do anything (development only: no tenancy).
    #[arg(
        long,
        alias = "allow-all-environments",
        env = "KEYWARD_ALLOW_ALL",
        conflicts_with = "access_policy_file"
    )]
    pub allow_all: bool,
    /// Watch the cluster's AccessPolicy objects (their grants take effect within seconds). Without them (and
    /// without a file or --allow-all) every ManagedSecret is refused.
    #[arg(long, env = "KEYWARD_WATCH_ACCESS_POLICIES", default_value_t = true, action = clap::ArgAction::Set,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub watch_access_policies: bool,
    /// Where audit lines go: `stdout` (logs go to stderr), a file path to append to, or `off`.
    #[arg(long, env = "KEYWARD_AUDIT_LOG", default_value = "stdout")]
    pub audit_log: String,
    /// File holding the ESC webhook's shared secret. Without it, POST /webhooks/esc refuses every call.
    #[arg(long, env = "KEYWARD_WEBHOOK_SECRET_FILE")]
    pub webhook_secret_file: Option<PathBuf>,
    /// How often keyward's own credentials (the token files or Secrets, the webhook secret file) and the
    /// access policy file are read again, in seconds: a changed one is used from the next request on, without
    /// a restart. A kubelet updates a mounted Secret within about a minute of its change.
    #[arg(long, env = "KEYWARD_CREDENTIAL_RELOAD_SECONDS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub credential_reload_seconds: u64,
    /// File holding the key for value hashes (any bytes). Without it, keyward keeps one in the Secret
    /// `keyward-hash-key` of its namespace, created on first start.
    #[arg(long, env = "KEYWARD_HASH_KEY_FILE")]
    pub hash_key_file: Option<PathBuf>,
    /// keyward's own namespace.
    #[arg(long, env = "POD_NAMESPACE", default_value = "keyward-system")]
    pub namespace: String,
    /// Reconciles running at once (different objects; one object is never reconciled twice at once). A
    /// reconcile mostly waits on the API server, and 32 in flight let it batch their writes: at 10,000 new
    /// ManagedSecrets, 32 converged in 3.7x the floor's time where 8 took 5.7x (docs/benchmarks.md).
    #[arg(long, default_value_t = 32)]
    pub concurrency: u16,
    /// Seconds within which a fresh ESC snapshot is shared by reconciles that demand fresh data.
    #[arg(long, default_value_t = 2)]
    pub coalesce_seconds: u64,
    /// Watch ManagedSecrets and Secrets in this namespace only (namespaced mode).
    #[arg(long, env = "KEYWARD_WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,
    /// Reconcile only the ManagedSecrets this label selector selects: one shard of several keyward
    /// Deployments, each with its own selector and its own `--lease-name` (as Flux shards with
    /// `sharding.fluxcd.io/key`: `sharding.fluxcd.io/key=shard-1` for a shard, `!sharding.fluxcd.io/key` for
    /// the one that takes the rest). The selectors must not overlap. Restarts count only this shard's
    /// ManagedSecrets, so every ManagedSecret whose Secret a workload consumes belongs in one shard (label a
    /// namespace's ManagedSecrets alike). A selector the API server refuses stops keyward at start.
    #[arg(long, env = "KEYWARD_SHARD_SELECTOR")]
    pub shard_selector: Option<String>,
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
    /// Address for /metrics, /healthz, /readyz and /health/secrets (the operations port).
    #[arg(long, env = "KEYWARD_HTTP_LISTEN", default_value = "0.0.0.0:8080")]
    pub http_listen: std::net::SocketAddr,
    /// Address for the ESC webhook receiver, POST /webhooks/esc (the port that faces Pulumi Cloud).
    #[arg(long, env = "KEYWARD_WEBHOOK_LISTEN", default_value = "0.0.0.0:8081")]
    pub webhook_listen: std::net::SocketAddr,
    /// Seconds a webhook delivery is remembered: the same delivery again within them is refused (409).
    #[arg(long, env = "KEYWARD_WEBHOOK_REPLAY_WINDOW_SECONDS", default_value_t = 86_400)]
    pub webhook_replay_window_seconds: u64,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Json, env = "KEYWARD_LOG_FORMAT")]
    pub log_format: LogFormat,
}

/// The name kubectl runs a plugin by: `kubectl keyward ...` executes `kubectl-keyward ...`.
const PLUGIN_FILE: &str = "kubectl-keyward";

/// Whether the binary runs as the kubectl plugin (its file name, as kubectl found it on PATH).
pub fn invoked_as_plugin(argv0: &OsStr) -> bool {
    Path::new(argv0)
        .file_name()
        .and_then(OsStr::to_str)
        .is_some_and(|f| f == PLUGIN_FILE || f.strip_prefix(PLUGIN_FILE).is_some_and(|rest| rest.starts_with('.')))
}

/// The command as clap knows it; usage and help say `kubectl keyward` when run as the plugin.
pub fn command() -> clap::Command {
    let command = Cli::command().after_help(EXIT_CODES);
    if std::env::args_os().next().is_some_and(|a| invoked_as_plugin(&a)) {
        return command.bin_name("kubectl keyward").display_name("kubectl-keyward");
    }
    command
}

/// Exit codes, the same for every subcommand (README, "Exit codes").
pub const EXIT_CODES: &str = "Exit codes: 0 done; 1 failed (the message says why and what to do); \
2 `report` found a rotation overdue; 64 usage error (unknown subcommand or flag, bad value).";

/// A usage error: sysexits' EX_USAGE, distinct from `report`'s 2 (clap's own default for usage errors).
pub const EXIT_USAGE: u8 = 64;

/// Parses the command line. Help and `--version` are printed and give `Err(0)`; a usage error is printed and
/// gives `Err(EXIT_USAGE)`.
pub fn parse() -> Result<Cli, u8> {
    let parsed = command()
        .try_get_matches()
        .and_then(|matches| Cli::from_arg_matches(&matches));
    parsed.map_err(|e| {
        let _ = e.print();
        if e.use_stderr() { EXIT_USAGE } else { 0 }
    })
}

/// How to reach the cluster, as kubectl takes it.
#[derive(Args, Debug, Clone)]
pub struct KubeArgs {
    /// Path to the kubeconfig file (instead of KUBECONFIG or ~/.kube/config).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (instead of the current one).
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// The secret map: one `SECRET_NAME: esc.path` per line (e.g. config/pulumi/secret_map.yaml).
    #[arg(required_unless_present = "from_external_secrets")]
    pub file: Option<PathBuf>,
    /// The ESC environment every secret is read from, as org/project/env.
    #[arg(
        long,
        short = 'e',
        value_name = "ORG/PROJECT/ENV",
        required_unless_present = "from_external_secrets"
    )]
    pub environment: Option<String>,
    /// The namespace of the ManagedSecrets (an override may move an entry); with --from-external-secrets, the
    /// namespace of objects that name none.
    #[arg(
        long,
        short = 'n',
        value_name = "NS",
        required_unless_present = "from_external_secrets"
    )]
    pub namespace: Option<String>,
    /// Per-secret adjustments (YAML, keyed by secret name): category, period, strategy, gracePeriod, namespace,
    /// name, refreshInterval, consumers, skip.
    #[arg(long, value_name = "FILE", conflicts_with = "from_external_secrets")]
    pub overrides: Option<PathBuf>,
    /// Fill one Secret of this name (per namespace) with every secret, each under its own name as the key (an
    /// app reads them all with one `envFrom`); still one ManagedSecret per secret, as rotation periods differ.
    #[arg(long, value_name = "NAME", conflicts_with = "from_external_secrets")]
    pub target_secret: Option<String>,
    /// Convert External Secrets Operator objects instead (ExternalSecrets with their Pulumi ESC SecretStores and
    /// ClusterSecretStores; `-` reads stdin): ManagedSecrets and an AccessPolicy draft on stdout, or a list of
    /// what does not convert (and nothing written).
    #[arg(long, value_name = "FILE|-", conflicts_with_all = ["file", "environment", "out"])]
    pub from_external_secrets: Option<PathBuf>,
    /// Write one file per ManagedSecret and a kustomization.yaml into this directory (replaced as a whole)
    /// instead of one YAML stream to stdout.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// Output formats of `report`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportFormat {
    Table,
    Json,
    Csv,
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    #[command(flatten)]
    pub kube: KubeArgs,
    /// The namespace to report on (default: the context's namespace).
    #[arg(long, short = 'n', value_name = "NS", conflicts_with = "all_namespaces")]
    pub namespace: Option<String>,
    /// Report on every namespace.
    #[arg(long, short = 'A')]
    pub all_namespaces: bool,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = ReportFormat::Table)]
    pub output: ReportFormat,
}

#[derive(Args, Debug)]
pub struct RotateArgs {
    /// The ManagedSecret to rotate.
    pub name: String,
    #[command(flatten)]
    pub kube: KubeArgs,
    /// Its namespace (default: the context's namespace).
    #[arg(long, short = 'n', value_name = "NS")]
    pub namespace: Option<String>,
    /// Why: recorded in the status and the Rotated Event. Each distinct reason rotates once.
    #[arg(long, value_name = "TEXT")]
    pub reason: String,
    /// Rotate again for a reason that was already handled (a timestamp is appended to it).
    #[arg(long)]
    pub force: bool,
    /// Follow the rotation step by step until its consumers have restarted.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits, e.g. 30s, 5m, 1h.
    #[arg(long, default_value = "5m", value_name = "DURATION", value_parser = parse_timeout)]
    pub timeout: Duration,
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    match crate::duration::parse(s) {
        Ok(d) if d.is_zero() => Err("must be longer than 0s".into()),
        Ok(d) => Ok(d),
        Err(e) => Err(e.to_string()),
    }
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// The ManagedSecret to show.
    pub name: String,
    #[command(flatten)]
    pub kube: KubeArgs,
    /// Its namespace (default: the context's namespace).
    #[arg(long, short = 'n', value_name = "NS")]
    pub namespace: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn plugin_names() {
        for (argv0, plugin) in [
            ("kubectl-keyward", true),
            ("/home/u/.local/bin/kubectl-keyward", true),
            ("kubectl-keyward.exe", true),
            ("keyward", false),
            ("/usr/bin/keyward", false),
            ("kubectl-keywardx", false),
        ] {
            assert_eq!(invoked_as_plugin(OsStr::new(argv0)), plugin, "{argv0}");
        }
    }

    #[test]
    fn usage_says_kubectl_keyward_as_a_plugin() {
        let mut command = Cli::command()
            .bin_name("kubectl keyward")
            .display_name("kubectl-keyward");
        let err = command
            .try_get_matches_from_mut(["kubectl-keyward", "report", "--bogus"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("Usage: kubectl keyward report"), "{err}");
    }

    #[test]
    fn flags_parse_like_kubectl() {
        let cli = Cli::try_parse_from(["keyward", "report", "-A", "-o", "csv", "--context", "prod"]).unwrap();
        let super::super::Command::Report(r) = cli.command else {
            panic!()
        };
        assert!(r.all_namespaces);
        assert_eq!(r.output, ReportFormat::Csv);
        assert_eq!(r.kube.context.as_deref(), Some("prod"));
        assert!(Cli::try_parse_from(["keyward", "report", "-A", "-n", "x"]).is_err());
        let cli = Cli::try_parse_from([
            "keyward",
            "rotate",
            "db",
            "-n",
            "x",
            "--reason",
            "leak",
            "--wait",
            "--timeout",
            "30s",
        ])
        .unwrap();
        let super::super::Command::Rotate(r) = cli.command else {
            panic!()
        };
        assert_eq!(r.timeout, Duration::from_secs(30));
        assert!(Cli::try_parse_from(["keyward", "rotate", "db", "--reason", "x", "--timeout", "0s"]).is_err());
        assert!(
            Cli::try_parse_from(["keyward", "rotate", "db"]).is_err(),
            "--reason is required"
        );
    }
}
