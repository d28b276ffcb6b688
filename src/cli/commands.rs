//! The operations commands (import, report, rotate, status), handed over to `crate::ops`. Each decides its own
//! exit code: `report` exits 2 when something is overdue.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use super::args::{ImportArgs, KubeArgs, ReportArgs, ReportFormat, RotateArgs, StatusArgs};
use crate::ops::client::{self, Connection};
use crate::ops::{OpsError, eso, human, import, report, rotate_now, status, version};

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
    if let Some(path) = &args.from_external_secrets {
        return from_external_secrets(path, args.namespace.as_deref());
    }
    let (Some(file), Some(environment), Some(namespace)) = (&args.file, &args.environment, &args.namespace) else {
        // clap requires all three without --from-external-secrets.
        return failed(&OpsError::Usage(
            "import needs FILE, --environment and --namespace".into(),
        ));
    };
    let run = || -> Result<(), OpsError> {
        let text = read(file)?;
        let overrides = match &args.overrides {
            Some(path) => import::parse_overrides(&read(path)?, &path.display().to_string())?,
            None => import::Overrides::new(),
        };
        let options = import::Options {
            environment: environment.clone(),
            namespace: namespace.clone(),
            source_name: file.display().to_string(),
            target_secret: args.target_secret.clone(),
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

/// `keyward import --from-external-secrets FILE|-`: the conversion on stdout, what it notes on stderr; nothing
/// on stdout when something does not convert.
fn from_external_secrets(path: &std::path::Path, namespace: Option<&str>) -> ExitCode {
    let run = || -> Result<(), OpsError> {
        let (text, name) = if path.as_os_str() == "-" {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).map_err(|source| OpsError::Read {
                path: "stdin".into(),
                source,
            })?;
            (text, "stdin".to_string())
        } else {
            (read(path)?, path.display().to_string())
        };
        let converted = eso::convert(&text, &name, namespace)?;
        stdout(&eso::render(&converted, &name)?)?;
        eprintln!(
            "converted {} ExternalSecret(s) into ManagedSecrets, with {} AccessPolicy draft(s){}",
            converted.objects.len(),
            converted.policies.len(),
            if converted.notes.is_empty() {
                ""
            } else {
                "; see the notes at the top"
            }
        );
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
        let (base, ms) =
            rotate_now::request(&client, &namespace, &args.name, &args.reason, args.force, args.wait).await?;
        if rotate_now::notify_only(&ms) {
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
        rotate_now::wait(&client, &namespace, &args.name, &base, args.timeout, &mut |line| {
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

/// `keyward version`: the client line always; the cluster's lines when a kubeconfig leads to an API server that
/// answers within 10 s (exit 0 either way: the client's version is the answer asked for).
pub fn version(kube: KubeArgs) -> ExitCode {
    let client_version = format!("keyward {}", env!("CARGO_PKG_VERSION"));
    let server = block_on(async {
        let (client, _) = client::connect(&connection(&kube, None)).await?;
        tokio::time::timeout(std::time::Duration::from_secs(10), version::server(&client))
            .await
            .map_err(|_| OpsError::Timeout {
                after: "10s".into(),
                step: "the API server's answer".into(),
            })
    });
    let text = match &server {
        Ok(server) => version::render(&client_version, Some(server)),
        Err(e) => format!("{}cluster: unreachable ({e})\n", version::render(&client_version, None)),
    };
    match stdout(&text) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => failed(&e),
    }
}
