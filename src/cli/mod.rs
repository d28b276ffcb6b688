//! The `keyward` command line: the subcommands hand over to the library.

mod args;
mod commands;
mod preflight;
mod run;

use std::io::Write;
use std::process::ExitCode;

pub use args::{Cli, Command, ImportArgs, KubeArgs, ReportArgs, ReportFormat, RotateArgs, RunArgs, StatusArgs};

/// Parses the command line and runs the chosen subcommand.
pub fn main() -> ExitCode {
    crate::tls::install_crypto_provider();
    let cli = match args::parse() {
        Ok(cli) => cli,
        Err(code) => return ExitCode::from(code),
    };
    let result = match cli.command {
        Command::Completion { shell } => {
            let mut command = args::command();
            let name = command.get_bin_name().unwrap_or("keyward").to_string();
            clap_complete::generate(shell, &mut command, name, &mut std::io::stdout());
            Ok(())
        }
        Command::Version(kube) => return commands::version(kube),
        Command::Crd { name } => print_crds(name.as_deref()),
        // The operations commands report their own errors and choose their own exit codes.
        Command::Import(args) => return commands::import(args),
        Command::Report(args) => return commands::report(args),
        Command::Rotate(args) => return commands::rotate(args),
        Command::Status(args) => return commands::status(args),
        Command::Run(args) => tokio::runtime::Runtime::new()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(run::run(*args))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keyward: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn print_crds(name: Option<&str>) -> anyhow::Result<()> {
    let mut crds = crate::api::crds();
    if let Some(name) = name {
        crds.retain(|c| c.spec.names.plural == name);
        anyhow::ensure!(
            !crds.is_empty(),
            "no CRD named {name:?} (managedsecrets, accesspolicies)"
        );
    }
    let yaml = crate::api::crds_yaml(&crds)?;
    std::io::stdout().write_all(yaml.as_bytes())?;
    Ok(())
}
