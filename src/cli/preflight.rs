//! `keyward run`'s first-run checks: the mistakes a new install makes (no CRDs, keyward's namespace missing, an
//! ESC URL without ESC's API path, no access policy at all), each refused before anything starts with one line
//! that says what to do. Anything else the API server says is left to the normal start.

use k8s_openapi::api::core::v1::Namespace;
use kube::{Api, Client};

use super::args::RunArgs;
use crate::api::{AccessPolicy, ManagedSecret};

/// ESC's REST API path under a Pulumi Cloud host: the `servers` URL of Pulumi's ESC OpenAPI spec
/// (`https://api.pulumi.com/api/esc`), which the official SDKs take as their base URL too.
pub const ESC_API_PATH: &str = "/api/esc";

/// A first-run problem: the whole message, fix included, fits on one line.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct FirstRunError(String);

/// The `--esc-url` check (no network): a URL without a path is a host whose ESC API is at `<url>/api/esc`;
/// other paths are taken as given (a proxy may serve ESC elsewhere).
pub fn esc_url(url: &str) -> Result<(), FirstRunError> {
    let parsed = reqwest::Url::parse(url).map_err(|e| {
        FirstRunError(format!(
            "--esc-url {url:?} is not a URL ({e}): give ESC's API base, e.g. https://api.pulumi.com{ESC_API_PATH}"
        ))
    })?;
    if !matches!(parsed.scheme(), "https" | "http") {
        return Err(FirstRunError(format!(
            "--esc-url {url}: the scheme must be https (or http on loopback), e.g. https://api.pulumi.com{ESC_API_PATH}"
        )));
    }
    if parsed.path().trim_end_matches('/').is_empty() {
        let base = url.trim_end_matches('/');
        return Err(FirstRunError(format!(
            "--esc-url {url} has no path, but ESC's API is under {ESC_API_PATH}: use --esc-url {base}{ESC_API_PATH}"
        )));
    }
    Ok(())
}

/// Without AccessPolicy objects (`--watch-access-policies=false`), a file or `--allow-all` is the only grant.
pub fn access_policy(args: &RunArgs) -> Result<(), FirstRunError> {
    if args.watch_access_policies || args.access_policy_file.is_some() || args.allow_all {
        return Ok(());
    }
    Err(FirstRunError(
        "no access policy: with --watch-access-policies=false every ManagedSecret would be refused; pass \
         --access-policy-file FILE, or leave AccessPolicy objects on (--watch-access-policies=true)"
            .into(),
    ))
}

/// A 404, whether or not its body is a Status: an API group that is not served answers with plain text, which
/// kube reports with the reason "Failed to parse error data" (so `Status::is_not_found` says no).
fn not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// The checks that ask the API server: the CRDs keyward watches are served, and keyward's namespace exists
/// (when the caller may read Namespaces; the chart grants no such read, and a Pod's namespace exists).
pub async fn cluster(client: &Client, args: &RunArgs) -> Result<(), FirstRunError> {
    let list = kube::api::ListParams::default().limit(1);
    let managed: Api<ManagedSecret> = match &args.watch_namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let install = "install the CRDs first: kubectl apply --server-side -f crds/ (or: keyward crd | kubectl apply \
                   --server-side -f -)";
    if let Err(e) = managed.list_metadata(&list).await
        && not_found(&e)
    {
        return Err(FirstRunError(format!(
            "the ManagedSecret CRD (managedsecrets.keyward.dev) is not installed in this cluster: {install}"
        )));
    }
    if let Some(selector) = &args.shard_selector
        && let Err(kube::Error::Api(status)) = managed.list_metadata(&list.clone().labels(selector)).await
        && status.code == 400
    {
        return Err(FirstRunError(format!(
            "--shard-selector {selector:?} is not a label selector the API server accepts ({}): write it as \
             kubectl's -l takes it, e.g. sharding.fluxcd.io/key=shard-1 or !sharding.fluxcd.io/key",
            status.message
        )));
    }
    if args.watch_access_policies
        && let Err(e) = Api::<AccessPolicy>::all(client.clone()).list_metadata(&list).await
        && not_found(&e)
    {
        return Err(FirstRunError(format!(
            "the AccessPolicy CRD (accesspolicies.keyward.dev) is not installed in this cluster: {install}"
        )));
    }
    // keyward writes into its own namespace only for the hash key it keeps there (without --hash-key-file) and
    // the Lease (with --leader-election, unless --lease-namespace names another).
    let mut uses = Vec::new();
    if args.hash_key_file.is_none() {
        uses.push((args.namespace.as_str(), "--namespace"));
    }
    if args.leader_election {
        uses.push((
            args.lease_namespace.as_deref().unwrap_or(&args.namespace),
            "--lease-namespace",
        ));
    }
    for (namespace, flag) in uses {
        if let Err(e) = Api::<Namespace>::all(client.clone()).get(namespace).await
            && not_found(&e)
        {
            return Err(missing_namespace(namespace, flag));
        }
    }
    Ok(())
}

/// A namespace keyward writes into (its hash key's, `--namespace`/`POD_NAMESPACE`; its Lease's,
/// `--lease-namespace`) does not exist.
pub fn missing_namespace(namespace: &str, flag: &str) -> FirstRunError {
    FirstRunError(format!(
        "namespace {namespace} (keyward's own, for its hash key and lease) does not exist: create it (kubectl create \
         namespace {namespace}) or pass {flag} with an existing one"
    ))
}

/// Whether an API error is "namespace `namespace` not found" (a write into a namespace that does not exist).
pub fn is_missing_namespace(e: &kube::Error, namespace: &str) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404
        && s.details.as_ref().is_some_and(|d| d.kind == "namespaces" && d.name == namespace))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_esc_url_without_a_path_names_the_right_one() {
        assert!(esc_url("https://api.pulumi.com/api/esc").is_ok());
        assert!(esc_url("http://127.0.0.1:8080/api/esc/").is_ok());
        assert!(esc_url("https://proxy.example/esc").is_ok());
        assert_eq!(
            esc_url("https://api.pulumi.com/").unwrap_err().to_string(),
            "--esc-url https://api.pulumi.com/ has no path, but ESC's API is under /api/esc: use --esc-url \
             https://api.pulumi.com/api/esc"
        );
        assert!(
            esc_url("api.pulumi.com")
                .unwrap_err()
                .to_string()
                .contains("is not a URL")
        );
        assert!(esc_url("ftp://x/api/esc").unwrap_err().to_string().contains("scheme"));
    }
}
