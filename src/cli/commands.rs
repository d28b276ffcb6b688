//! Arguments of the operations commands (import, report, rotate, status) and their hand-over to `crate::ops`.
//! Each decides its own exit code: `report` exits 2 when something is overdue.

use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, CommandFactory, FromArgMatches, ValueEnum};

use super::Cli;
use crate::ops::client::{self, Connection};
use crate::ops::{OpsError, human, import, report, rotate, status};

/// The name kubectl runs a plugin by: `kubectl keyward ...` executes `kubectl-keyward ...`.
const PLUGIN_FILE: &str = "kubectl-keyward";

/// Whether the binary runs as the kubectl plugin (its file name, as kubectl found it on PATH).
pub fn invoked_as_plugin(argv0: &OsStr) -> bool {
    Path::new(argv0)
        .file_name()
        .and_then(OsStr::to_str)
        .is_some_and(|f| f == PLUGIN_FILE || f.strip_prefix(PLUGIN_FILE).is_some_and(|rest| rest.starts_with('.')))
}

/// Parses the command line; usage and help say `kubectl keyward` when run as the plugin.
pub fn parse() -> Cli {
    let mut command = Cli::command();
    if std::env::args_os().next().is_some_and(|a| invoked_as_plugin(&a)) {
        command = command.bin_name("kubectl keyward").display_name("kubectl-keyward");
    }
    let matches = command.get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
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
    pub file: PathBuf,
    /// The ESC environment every secret is read from, as org/project/env.
    #[arg(long, short = 'e', value_name = "ORG/PROJECT/ENV")]
    pub environment: String,
    /// The namespace of the ManagedSecrets (an override may move an entry).
    #[arg(long, short = 'n', value_name = "NS")]
    pub namespace: String,
    /// Per-secret adjustments (YAML, keyed by secret name): category, period, strategy, gracePeriod, namespace,
    /// name, refreshInterval, consumers, skip.
    #[arg(long, value_name = "FILE")]
    pub overrides: Option<PathBuf>,
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

fn connection(kube: &KubeArgs, namespace: Option<&String>) -> Connection {
    Connection {
        kubeconfig: kube.kubeconfig.clone(),
        context: kube.context.clone(),
        namespace: namespace.cloned(),
    }
}

fn failed(e: &OpsError) -> ExitCode {
    eprintln!("keyward: {e}");
    ExitCode::FAILURE
}

fn stdout(text: &str) -> Result<(), OpsError> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|source| OpsError::Write {
            path: "stdout".into(),
            source,
        })
}

/// Runs `future` to completion on a runtime of its own (these commands make a handful of requests).
fn block_on<T>(future: impl Future<Output = Result<T, OpsError>>) -> Result<T, OpsError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| OpsError::Internal(format!("starting the runtime: {e}")))?
        .block_on(future)
}

fn read(path: &Path) -> Result<String, OpsError> {
    std::fs::read_to_string(path).map_err(|source| OpsError::Read {
        path: path.display().to_string(),
        source,
    })
}

pub fn import(args: ImportArgs) -> ExitCode {
    let run = || -> Result<(), OpsError> {
        let text = read(&args.file)?;
        let overrides = match &args.overrides {
            Some(path) => import::parse_overrides(&read(path)?, &path.display().to_string())?,
            None => import::Overrides::new(),
        };
        let options = import::Options {
            environment: args.environment.clone(),
            namespace: args.namespace.clone(),
            source_name: args.file.display().to_string(),
        };
        let outcome = import::import(&text, &overrides, &options)?;
        match &args.out {
            Some(dir) => {
                let files = import::render_files(&outcome)?;
                import::write_dir(dir, &files)?;
                eprint!("{}", import::summary(&outcome));
                eprintln!("wrote {} files to {}", files.len(), dir.display());
            }
            None => {
                stdout(&import::render_stream(&outcome)?)?;
                eprint!("{}", import::summary(&outcome));
            }
        }
        Ok(())
    };
    run().map_or_else(|e| failed(&e), |()| ExitCode::SUCCESS)
}

pub fn report(args: ReportArgs) -> ExitCode {
    let result = block_on(async {
        let (client, namespace) = client::connect(&connection(&args.kube, args.namespace.as_ref())).await?;
        let scope = (!args.all_namespaces).then_some(namespace);
        let objects = report::fetch(&client, scope.as_deref()).await?;
        Ok((scope, report::rows(&objects, jiff::Timestamp::now())))
    });
    let (scope, rows) = match result {
        Ok(r) => r,
        Err(e) => return failed(&e),
    };
    let text = match args.output {
        ReportFormat::Table if rows.is_empty() => {
            match &scope {
                Some(ns) => eprintln!("No ManagedSecrets found in namespace {ns}."),
                None => eprintln!("No ManagedSecrets found."),
            }
            String::new()
        }
        ReportFormat::Table => report::table(&rows, human::colour_stdout()),
        ReportFormat::Json => report::json(&rows),
        ReportFormat::Csv => report::csv(&rows),
    };
    if let Err(e) = stdout(&text) {
        return failed(&e);
    }
    // The tally goes to stderr, so the table stays a table when piped.
    if args.output == ReportFormat::Table && !rows.is_empty() {
        eprintln!("{}", report::summary(&rows));
    }
    ExitCode::from(report::exit_code(&rows))
}

pub fn rotate(args: RotateArgs) -> ExitCode {
    let result = block_on(async {
        let (client, namespace) = client::connect(&connection(&args.kube, args.namespace.as_ref())).await?;
        let (base, ms) = rotate::request(&client, &namespace, &args.name, &args.reason, args.force, args.wait).await?;
        if rotate::notify_only(&ms) {
            eprintln!(
                "note: {namespace}/{} has rotation strategy Notify: keyward records the request and raises a \
                 RotationRequested Event, but the value must be replaced in ESC by hand",
                args.name
            );
        }
        if !args.wait {
            println!(
                "rotation requested for {namespace}/{}: {}={:?}\nfollow it with `keyward status {} -n {namespace}`, \
                 or use --wait",
                args.name,
                crate::api::ROTATE_NOW_ANNOTATION,
                base.reason,
                args.name
            );
            return Ok(());
        }
        println!(
            "rotating {namespace}/{} (waiting up to {})",
            args.name,
            human::period(args.timeout)
        );
        rotate::wait(&client, &namespace, &args.name, &base, args.timeout, &mut |line| {
            println!("{line}")
        })
        .await
    });
    result.map_or_else(|e| failed(&e), |()| ExitCode::SUCCESS)
}

pub fn status(args: StatusArgs) -> ExitCode {
    let result = block_on(async {
        let (client, namespace) = client::connect(&connection(&args.kube, args.namespace.as_ref())).await?;
        let (ms, events) = status::fetch(&client, &namespace, &args.name).await?;
        Ok(status::render(&ms, &events, jiff::Timestamp::now()))
    });
    match result.and_then(|text| stdout(&text)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => failed(&e),
    }
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
