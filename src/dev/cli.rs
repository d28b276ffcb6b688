//! The `keyward-dev` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio::io::AsyncReadExt;
use tokio::signal::unix::{SignalKind, signal};

use super::control_plane::{ControlPlane, Options};

#[derive(Parser, Debug)]
#[command(
    name = "keyward-dev",
    version,
    about = "Developer tools for keyward: a local control plane"
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
}

/// Entry point of `keyward-dev`.
pub fn main() -> ExitCode {
    crate::install_crypto_provider();
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
            let mut term = signal(SignalKind::terminate())?;
            let mut int = signal(SignalKind::interrupt())?;
            let cp = ControlPlane::start(Options {
                dir,
                with_controllers,
                keep,
            })
            .await?;
            print!("{}", std::fs::read_to_string(cp.kubeconfig_path())?);
            println!("# keyward-dev: control plane ready at {}", cp.server());
            println!("# export KUBECONFIG={}", cp.kubeconfig_path().display());
            let stdin_closed = async {
                if !stop_on_stdin_eof {
                    return std::future::pending::<()>().await;
                }
                let mut stdin = tokio::io::stdin();
                let mut buf = [0u8; 64];
                while matches!(stdin.read(&mut buf).await, Ok(n) if n > 0) {}
            };
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
                () = stdin_closed => {}
            }
            eprintln!("keyward-dev: stopping the control plane");
            cp.stop().await;
            Ok(())
        }
    }
}
