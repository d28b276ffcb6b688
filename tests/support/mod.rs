//! Test harness: one real control plane per test binary (a `keyward-dev control-plane` child that stops and
//! removes its directory when this process exits, however it exits), a fresh namespace per test, and the
//! server logs printed when a test fails.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use keyward::api::{AccessPolicy, ManagedSecret};
use kube::api::{DeleteParams, PostParams};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, CustomResourceExt};

pub mod argocd;
pub mod databases;

pub struct Cluster {
    pub kubeconfig: PathBuf,
    pub dir: PathBuf,
    pub with_controllers: bool,
    // Held until the process exits: its closing is what tells keyward-dev to stop.
    _stdin: Mutex<ChildStdin>,
    _child: Mutex<Child>,
}

static CLUSTER: OnceLock<Cluster> = OnceLock::new();

/// The shared control plane of this test binary (etcd + kube-apiserver).
pub fn cluster() -> &'static Cluster {
    CLUSTER.get_or_init(|| start(false))
}

/// The shared control plane with kube-controller-manager, kube-scheduler and kwok, for real rollouts.
pub fn cluster_with_controllers() -> &'static Cluster {
    let c = CLUSTER.get_or_init(|| start(true));
    assert!(
        c.with_controllers,
        "this test binary started its control plane without controllers"
    );
    c
}

/// A control plane of the caller's own (etcd + kube-apiserver, nothing installed), stopped when dropped: for a
/// test that needs a cluster as a new user's is, without the CRDs the shared one has.
pub fn fresh_cluster() -> Cluster {
    start(false)
}

fn start(with_controllers: bool) -> Cluster {
    keyward::install_crypto_provider();
    let dir = std::env::temp_dir().join(format!("keyward-test-{}-{}", std::process::id(), nanos()));
    let mut cmd = Command::new(dev_bin());
    cmd.arg("control-plane")
        .arg("--dir")
        .arg(&dir)
        .arg("--stop-on-stdin-eof");
    if with_controllers {
        cmd.arg("--with-controllers");
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start keyward-dev control-plane");
    let stdin = child.stdin.take().expect("stdin");
    let stdout = child.stdout.take().expect("stdout");
    let mut ready = false;
    let mut lines = BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        let Ok(line) = line else { break };
        if line.starts_with("# keyward-dev: control plane ready") {
            ready = true;
            break;
        }
    }
    // Keep draining, so keyward-dev never writes into a closed pipe.
    std::thread::spawn(move || lines.for_each(drop));
    if !ready {
        let status = child.wait().ok();
        panic!(
            "control plane did not start (keyward-dev exited with {status:?}); logs:\n{}",
            keyward_dev::control_plane::logs_tail(&dir.join("logs"), 40)
        );
    }
    Cluster {
        kubeconfig: dir.join("kubeconfig"),
        dir,
        with_controllers,
        _stdin: Mutex::new(stdin),
        _child: Mutex::new(child),
    }
}

fn nanos() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
}

impl Cluster {
    /// A client for the admin user. Make one per test: clients are tied to the test's runtime.
    pub async fn client(&self) -> Client {
        keyward_dev::control_plane::client_from_kubeconfig(&self.kubeconfig)
            .await
            .expect("client")
    }

    /// A client acting as `user` (the admin impersonating them): a tenant, with exactly the rights RBAC gives
    /// that user.
    pub async fn client_as(&self, user: &str) -> Client {
        let kc = kube::config::Kubeconfig::read_from(&self.kubeconfig).expect("kubeconfig");
        let mut config = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .expect("config");
        config.auth_info.impersonate = Some(user.to_string());
        Client::try_from(config).expect("client")
    }

    /// The tail of every component's log.
    pub fn logs(&self) -> String {
        keyward_dev::control_plane::logs_tail(&self.dir.join("logs"), 60)
    }

    /// Runs the pinned kubectl against this control plane.
    pub fn kubectl(&self, args: &[&str]) -> std::process::Output {
        Command::new(tool("kubectl"))
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output()
            .expect("run kubectl")
    }
}

/// The path of a pinned tool.
pub fn tool(name: &str) -> PathBuf {
    keyward_dev::tools::tool(name).expect("tool built by `make tools`")
}

/// The `keyward-dev` binary. It belongs to the workspace's other package, so Cargo names no
/// `CARGO_BIN_EXE_` for it here: it sits beside the `keyward` binary of the same build (`make test` builds it
/// first).
pub fn dev_bin() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_keyward")).with_file_name("keyward-dev");
    assert!(
        bin.is_file(),
        "{} is missing: build it with `cargo build -p keyward-dev` (make test does)",
        bin.display()
    );
    bin
}

/// A loopback address with a port that was free a moment ago.
pub fn free_port() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// The repository root.
pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A fresh namespace for one test. When the test panics, the control plane's logs are printed; the
/// namespace is deleted at the end either way.
pub struct TestNs {
    pub name: String,
    pub client: Client,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl TestNs {
    pub async fn new(prefix: &str) -> TestNs {
        let client = cluster().client().await;
        Self::with_client(prefix, client).await
    }

    pub async fn with_client(prefix: &str, client: Client) -> TestNs {
        let name = format!(
            "{prefix}-{}-{}",
            COUNTER.fetch_add(1, Ordering::SeqCst),
            nanos() % 100_000
        );
        let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .expect("create namespace");
        TestNs { name, client }
    }

    /// The Events about object `name` in this namespace, each as `Reason: note`.
    pub async fn events_for(&self, name: &str) -> Vec<String> {
        let api: Api<k8s_openapi::api::events::v1::Event> = self.api();
        let list = api.list(&kube::api::ListParams::default()).await.unwrap().items;
        list.into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .map(|e| format!("{}: {}", e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
            .collect()
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Some(c) = CLUSTER.get()
        {
            eprintln!(
                "---- control plane logs (test in namespace {} failed) ----\n{}",
                self.name,
                c.logs()
            );
        }
        // Delete on a thread of its own: Drop may run inside the test's runtime, which can't be blocked on.
        let name = self.name.clone();
        let Some(c) = CLUSTER.get() else { return };
        let kubeconfig = c.kubeconfig.clone();
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            rt.block_on(async {
                if let Ok(client) = keyward_dev::control_plane::client_from_kubeconfig(&kubeconfig).await {
                    let _ = Api::<Namespace>::all(client)
                        .delete(&name, &DeleteParams::background())
                        .await;
                }
            });
        })
        .join();
    }
}

/// Polls `f` every 200 ms until it returns Some, or panics after `secs` seconds with `what`.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if std::time::Instant::now() > deadline {
            panic!("timed out after {secs}s waiting for: {what}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// Installs the CRDs from crds/ (the checked-in files, as users apply them) and waits until they are
/// Established.
pub async fn install_crd(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for (file, name) in [
        ("crds/managedsecrets.keyward.dev.yaml", ManagedSecret::crd_name()),
        ("crds/accesspolicies.keyward.dev.yaml", AccessPolicy::crd_name()),
    ] {
        let text = std::fs::read_to_string(repo().join(file)).unwrap();
        let crd: CustomResourceDefinition = serde_saphyr::from_str(&text).unwrap();
        api.patch(name, &PatchParams::apply("keyward-test").force(), &Patch::Apply(&crd))
            .await
            .unwrap();
        eventually(60, "CRD Established", || async {
            let crd = api.get(name).await.ok()?;
            let established = crd
                .status?
                .conditions?
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            established.then_some(())
        })
        .await;
    }
}

/// A small Deployment of one container, used across tests.
pub fn sample_deployment(name: &str) -> Deployment {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "registry.invalid/app:1"}]}
            }
        }
    }))
    .unwrap()
}

/// A `keyward run` process against the shared control plane, watching one namespace, its logs in a file.
/// Killed when dropped.
pub struct Keyward {
    child: Option<Child>,
    pub log: PathBuf,
    /// Where /metrics, /healthz, /readyz and /health/secrets answer.
    pub http: std::net::SocketAddr,
    /// Where the ESC webhook receiver answers.
    pub webhook: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

impl Keyward {
    /// Starts `keyward run --watch-namespace NS` with extra arguments.
    pub fn start(namespace: &str, extra: &[&str]) -> Keyward {
        Keyward::start_with_env(namespace, extra, &[])
    }

    /// Like [`Keyward::start`], with extra environment variables.
    pub fn start_with_env(namespace: &str, extra: &[&str], env: &[(&str, &str)]) -> Keyward {
        // Tests grant every environment unless they bring their own policy.
        let allow_all = !extra.iter().any(|a| a.starts_with("--access-policy-file"));
        Self::spawn(Some(namespace), extra, env, allow_all)
    }

    /// Starts `keyward run` for the whole cluster with no grants but the cluster's AccessPolicies: tenancy
    /// tests, one such keyward per test binary (it acts on every namespace).
    pub fn start_cluster_wide(extra: &[&str]) -> Keyward {
        Self::spawn(None, extra, &[], false)
    }

    fn spawn(namespace: Option<&str>, extra: &[&str], env: &[(&str, &str)], allow_all: bool) -> Keyward {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("hash-key");
        std::fs::write(&key, b"test-hash-key").unwrap();
        let log = dir.path().join("keyward.log");
        let out = std::fs::File::create(&log).unwrap();
        let (http, webhook) = (free_port(), free_port());
        let child = Command::new(env!("CARGO_BIN_EXE_keyward"))
            .arg("run")
            .args(namespace.map(|n| format!("--watch-namespace={n}")))
            .arg("--hash-key-file")
            .arg(&key)
            .arg("--http-listen")
            .arg(http.to_string())
            .arg("--webhook-listen")
            .arg(webhook.to_string())
            .args(extra)
            .args(allow_all.then_some("--allow-all"))
            .env("KUBECONFIG", &cluster_any().kubeconfig)
            .env(
                "RUST_LOG",
                "debug,kube=info,hyper=info,tower=info,rustls=info,h2=info,reqwest=info",
            )
            .env_remove("KEYWARD_ESC_URL")
            .env_remove("KEYWARD_ESC_TOKEN_FILE")
            .env_remove("KEYWARD_TEST_ABORT_AFTER")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start keyward");
        Keyward {
            child: Some(child),
            log,
            http,
            webhook,
            _dir: dir,
        }
    }

    /// The /metrics text.
    pub async fn metrics(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.http))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Everything keyward has logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits up to `secs` for keyward to exit by itself; its exit status, if it did.
    pub fn wait_exit(&mut self, secs: u64) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.child.as_mut()?.try_wait().ok()? {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        None
    }

    /// The process id while it runs (for signals other than SIGKILL).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stops keyward (SIGKILL: the harshest stop, which keyward must survive) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Keyward {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let logs = self.logs();
            let tail: Vec<&str> = logs.lines().rev().take(40).collect();
            eprintln!("---- keyward log (last 40 lines) ----");
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
        self.kill();
    }
}

/// The control plane this binary started, whichever flavour.
pub fn cluster_any() -> &'static Cluster {
    CLUSTER.get().unwrap_or_else(|| cluster())
}

/// This test binary's own link to the keyward binary, made on first use. The target directory may be shared
/// with other builds that replace target/debug/keyward while tests run; they write a new file, so the link
/// keeps the binary this test was built with (a copy when linking is not possible). Links of test binaries
/// that have exited are removed. `KEYWARD_TEST_BIN` points the tests that use it at another build instead.
pub fn keyward_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let tmp = std::env::temp_dir();
        for entry in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if let Some(pid) = name.strip_prefix("keyward-bin-")
                && !Path::new("/proc").join(pid).exists()
            {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        let dir = tmp.join(format!("keyward-bin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let to = dir.join("keyward");
        let from = std::env::var("KEYWARD_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_keyward").into());
        if std::fs::hard_link(&from, &to).is_err() {
            std::fs::copy(&from, &to).unwrap();
        }
        to
    })
}

impl Keyward {
    /// Starts `keyward` with exactly `args` (no namespace or hash key of the harness's own) and `kubeconfig`,
    /// from [`keyward_bin`].
    pub fn launch(
        kubeconfig: &Path,
        args: &[String],
        env: &[(String, String)],
        http: std::net::SocketAddr,
        webhook: std::net::SocketAddr,
    ) -> Keyward {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("keyward.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(keyward_bin())
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .env(
                "RUST_LOG",
                "debug,kube=info,hyper=info,tower=info,rustls=info,h2=info,reqwest=info",
            )
            .env_remove("KEYWARD_ESC_URL")
            .env_remove("KEYWARD_ESC_TOKEN_FILE")
            .env_remove("KEYWARD_TEST_ABORT_AFTER")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start keyward");
        Keyward {
            child: Some(child),
            log,
            http,
            webhook,
            _dir: dir,
        }
    }
}

/// An in-process ESC server requiring `token`, keeping its data in `dir`, with the token in `dir/esc-token`.
pub async fn esc_server(token: &str, dir: &Path) -> keyward_dev::esc_server::EscServer {
    keyward::install_crypto_provider();
    let server = keyward_dev::esc_server::EscServer::start(keyward_dev::esc_server::EscServerOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        data: dir.join("esc.json"),
        token: Some(token.into()),
    })
    .await
    .unwrap();
    std::fs::write(dir.join("esc-token"), token).unwrap();
    server
}

/// Gives user `user` the RBAC `rules` in namespace `ns` (a Role and a RoleBinding, both named after the user):
/// a tenant, for tests that act as one through [`Cluster::client_as`].
pub async fn bind_user(admin: &Client, ns: &str, user: &str, rules: serde_json::Value) {
    use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
    let role: Role = serde_json::from_value(serde_json::json!({"metadata": {"name": user}, "rules": rules})).unwrap();
    Api::<Role>::namespaced(admin.clone(), ns)
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    let binding: RoleBinding = serde_json::from_value(serde_json::json!({
        "metadata": {"name": user},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": user},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]
    }))
    .unwrap();
    Api::<RoleBinding>::namespaced(admin.clone(), ns)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
}

/// What the ESC server at `base_url` holds at `path` of `env`, read the way keyward reads it.
pub async fn esc_value(base_url: &str, token: &str, env: &str, path: &str) -> String {
    let client = keyward::esc::EscClient::new(keyward::esc::EscConfig::new(
        base_url.to_string(),
        Some(token.to_string().into()),
    ))
    .unwrap();
    let v = keyward::source::esc::EscSource::new(client)
        .get(env, None, path, std::time::Instant::now())
        .await
        .unwrap();
    String::from_utf8(v.0.expose().to_vec()).unwrap()
}
