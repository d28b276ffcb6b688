//! The `keyward-dev` command line.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio::io::AsyncReadExt;
use tokio::signal::unix::{SignalKind, signal};

use crate::control_plane::{ControlPlane, Options};
use crate::esc_server::{EscServer, EscServerOptions};
use crate::github_server::{GithubServer, GithubServerOptions, read_token_file, repositories_from_flags};

#[derive(Parser, Debug)]
#[command(
    name = "keyward-dev",
    version,
    about = "Developer tools for keyward: a local control plane and a local Pulumi ESC server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start etcd and kube-apiserver on free loopback ports and run until SIGINT/SIGTERM.
    ControlPlane {
        /// Directory for certificates, data, logs and the kubeconfig (a temporary one if absent).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Also run kube-controller-manager, kube-scheduler and kwok with one fake Node.
        #[arg(long)]
        with_controllers: bool,
        /// Keep the directory after stopping.
        #[arg(long)]
        keep: bool,
        /// Also stop when standard input closes (the test harness uses this so that a dying parent never
        /// leaves a control plane behind).
        #[arg(long)]
        stop_on_stdin_eof: bool,
    },
    /// Serve the Pulumi ESC API (under /api/esc) from a local data file until SIGINT/SIGTERM.
    EscServer {
        /// Address to listen on; port 0 picks a free port (the ready line shows it).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Data file (JSON) with the environments, their revisions and the server's encryption key; created
        /// when missing.
        #[arg(long)]
        data: PathBuf,
        /// Require `Authorization: token <T>` on every ESC request (by default any or none is accepted).
        #[arg(long, env = "KEYWARD_DEV_ESC_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Definitions to load at start, YAML: `{environments: {"org/project/env": "<definition>"}}`. An
        /// environment that already has exactly that definition gets no new revision.
        #[arg(long)]
        seed: Option<PathBuf>,
        /// Also stop when standard input closes.
        #[arg(long)]
        stop_on_stdin_eof: bool,
    },
    /// Serve GitHub's Actions secrets API (organization, repository and environment secrets) until
    /// SIGINT/SIGTERM.
    GithubServer {
        /// Address to listen on; port 0 picks a free port (the ready line shows it).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// File holding the token to require as `Authorization: Bearer <T>` or `token <T>` (by default any or
        /// none is accepted).
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// A repository that exists, `owner/name` (repeatable). With no --repository or --environment, every
        /// organization, repository and environment exists.
        #[arg(long = "repository")]
        repositories: Vec<String>,
        /// A deployment environment that exists, `owner/name/environment` (repeatable; implies the repository).
        #[arg(long = "environment")]
        environments: Vec<String>,
        /// Also stop when standard input closes.
        #[arg(long)]
        stop_on_stdin_eof: bool,
    },
}

/// Entry point of `keyward-dev`.
pub fn main() -> ExitCode {
    keyward::install_crypto_provider();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("keyward-dev: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keyward-dev: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::ControlPlane {
            dir,
            with_controllers,
            keep,
            stop_on_stdin_eof,
        } => {
            let dir = match dir {
                Some(d) => d,
                None => tempfile::Builder::new().prefix("keyward-cp-").tempdir()?.keep(),
            };
            // Listen for signals before starting, so none is missed during start-up.
            let stop = StopSignals::install()?;
            let cp = ControlPlane::start(Options {
                dir,
                with_controllers,
                keep,
            })
            .await?;
            // The ready line comes last: whoever waits for it may stop reading then. A closed stdout must
            // not stop the control plane, so write errors are ignored.
            let kubeconfig = std::fs::read_to_string(cp.kubeconfig_path())?;
            announce(&format!(
                "{kubeconfig}# export KUBECONFIG={}\n# keyward-dev: control plane ready at {}",
                cp.kubeconfig_path().display(),
                cp.server()
            ));
            stop.wait(stop_on_stdin_eof).await;
            eprintln!("keyward-dev: stopping the control plane");
            cp.stop().await;
            Ok(())
        }
        Command::EscServer {
            listen,
            data,
            token,
            seed,
            stop_on_stdin_eof,
        } => {
            let stop = StopSignals::install()?;
            let server = EscServer::start(EscServerOptions { listen, data, token }).await?;
            if let Some(seed) = seed {
                match server.seed(&seed) {
                    Ok(n) => eprintln!("keyward-dev: seeded {n} environment(s) from {}", seed.display()),
                    Err(e) => {
                        server.stop().await;
                        return Err(e.into());
                    }
                }
            }
            announce(&format!("# keyward-dev: esc server ready at {}", server.base_url()));
            stop.wait(stop_on_stdin_eof).await;
            eprintln!("keyward-dev: stopping the esc server");
            server.stop().await;
            Ok(())
        }
        Command::GithubServer {
            listen,
            token_file,
            repositories,
            environments,
            stop_on_stdin_eof,
        } => {
            let stop = StopSignals::install()?;
            let token = token_file.as_deref().map(read_token_file).transpose()?;
            let repositories = repositories_from_flags(&repositories, &environments)?;
            let server = GithubServer::start(GithubServerOptions {
                listen,
                token,
                repositories,
            })
            .await?;
            announce(&format!("# keyward-dev: github server ready at {}", server.base_url()));
            stop.wait(stop_on_stdin_eof).await;
            eprintln!("keyward-dev: stopping the github server");
            server.stop().await;
            Ok(())
        }
    }
}

/// Resolves when standard input closes, if asked to watch it (the test harness uses this so that a dying
/// parent never leaves a server behind); otherwise never.
/// Prints `text` and a newline. A closed stdout must not stop a running server, so errors are ignored.
fn announce(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
}

/// SIGTERM and SIGINT, installed before start-up so that none is missed.
struct StopSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn install() -> std::io::Result<Self> {
        Ok(StopSignals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Resolves on a signal, or when stdin closes if `stdin` is set.
    async fn wait(mut self, stdin: bool) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
            () = stdin_closed(stdin) => {}
        }
    }
}

async fn stdin_closed(watch: bool) {
    if !watch {
        return std::future::pending::<()>().await;
    }
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 64];
    while matches!(stdin.read(&mut buf).await, Ok(n) if n > 0) {}
}
