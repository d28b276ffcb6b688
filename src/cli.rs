//! The `keyward` command line: subcommands hand over to the library.

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
}

/// Parses the command line and runs the chosen subcommand.
pub fn main() -> ExitCode {
    crate::install_crypto_provider();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("keyward: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Crd => {
            let yaml = crate::api::crds_yaml()?;
            std::io::stdout().write_all(yaml.as_bytes())?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
