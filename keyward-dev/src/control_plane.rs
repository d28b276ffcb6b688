//! A real, local Kubernetes control plane: etcd and kube-apiserver on free loopback ports (and, for real
//! rollouts, kube-controller-manager, kube-scheduler and kwok with one fake Node), started the way
//! controller-runtime's envtest does it, from binaries built by `tools/build.sh`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Node};
use kube::api::PostParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use tokio::process::{Child, Command};

use crate::error::DevError;
use crate::{pki, tools};

/// How the control plane is started.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where certificates, data, logs and the kubeconfig go.
    pub dir: PathBuf,
    /// Also run kube-controller-manager, kube-scheduler and kwok with one fake Node.
    pub with_controllers: bool,
    /// Keep `dir` after stopping.
    pub keep: bool,
}

struct Process {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

/// A running control plane. Call [`ControlPlane::stop`] to end it; dropping it kills the processes too.
pub struct ControlPlane {
    dir: PathBuf,
    keep: bool,
    processes: Vec<Process>,
    kubeconfig: PathBuf,
    server: String,
    created_dir: bool,
}

/// The name of the fake Node kwok manages.
pub const FAKE_NODE: &str = "kwok-node-0";

const READY_TIMEOUT: Duration = Duration::from_secs(120);

fn free_port() -> Result<u16, DevError> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| DevError::io("pick a free port", e))?;
    Ok(l.local_addr().map_err(|e| DevError::io("pick a free port", e))?.port())
}

impl ControlPlane {
    /// Starts the control plane and waits until it answers and is ready.
    pub async fn start(opts: Options) -> Result<Self, DevError> {
        let created_dir = !opts.dir.exists();
        std::fs::create_dir_all(opts.dir.join("logs")).map_err(|e| DevError::io("create control plane dir", e))?;
        let dir = std::fs::canonicalize(&opts.dir).map_err(|e| DevError::io("resolve control plane dir", e))?;
        let mut cp = ControlPlane {
            kubeconfig: dir.join("kubeconfig"),
            dir,
            keep: opts.keep,
            processes: Vec::new(),
            server: String::new(),
            created_dir,
        };
        match cp.boot(opts.with_controllers).await {
            Ok(()) => Ok(cp),
            Err(e) => {
                // The directory goes away with stop(): show the logs first.
                eprintln!("{}", cp.logs_tail(30));
                cp.stop().await;
                Err(e)
            }
        }
    }

    async fn boot(&mut self, with_controllers: bool) -> Result<(), DevError> {
        let pki = pki::generate(&self.dir.join("pki"))?;

        let etcd_port = free_port()?;
        let etcd_peer = free_port()?;
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let etcd_data = self.dir.join("etcd");
        self.spawn(
            "etcd",
            &[
                format!("--data-dir={}", etcd_data.display()),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls=http://127.0.0.1:{etcd_peer}"),
                format!("--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}"),
                format!("--initial-cluster=default=http://127.0.0.1:{etcd_peer}"),
                "--unsafe-no-fsync=true".into(),
                "--log-level=warn".into(),
            ],
        )?;
        self.wait_http_ok("etcd", &format!("{etcd_url}/health")).await?;

        let api_port = free_port()?;
        self.server = format!("https://127.0.0.1:{api_port}");
        let sa_key = pki.service_account_key.display().to_string();
        self.spawn(
            "kube-apiserver",
            &[
                format!("--etcd-servers={etcd_url}"),
                format!("--cert-dir={}", self.dir.join("pki").display()),
                format!("--tls-cert-file={}", pki.serving_cert.display()),
                format!("--tls-private-key-file={}", pki.serving_key.display()),
                format!("--client-ca-file={}", pki.ca_cert.display()),
                format!("--secure-port={api_port}"),
                "--bind-address=127.0.0.1".into(),
                "--advertise-address=127.0.0.1".into(),
                "--service-cluster-ip-range=10.0.0.0/24".into(),
                "--allow-privileged=true".into(),
                // No ServiceAccount tokens for pods, and no not-ready taint on the fake Node (no node-lifecycle controller runs).
                "--disable-admission-plugins=ServiceAccount,TaintNodesByCondition".into(),
                "--authorization-mode=RBAC".into(),
                format!("--service-account-issuer={}/", self.server),
                format!("--service-account-key-file={}", pki.service_account_pub.display()),
                format!("--service-account-signing-key-file={sa_key}"),
                "--v=0".into(),
            ],
        )?;

        let kubeconfig = kubeconfig_yaml(&self.server, &pki);
        std::fs::write(&self.kubeconfig, &kubeconfig).map_err(|e| DevError::io("write kubeconfig", e))?;
        let client = self.client().await?;
        self.wait_apiserver_ready(&client).await?;

        if with_controllers {
            let kc = self.kubeconfig.display().to_string();
            self.spawn(
                "kube-controller-manager",
                &[
                    format!("--kubeconfig={kc}"),
                    format!("--authentication-kubeconfig={kc}"),
                    format!("--authorization-kubeconfig={kc}"),
                    "--controllers=deployment-controller,replicaset-controller,statefulset-controller,daemonset-controller,job-controller,cronjob-controller,garbage-collector-controller,namespace-controller,clusterrole-aggregation-controller".into(),
                    "--leader-elect=false".into(),
                    "--bind-address=127.0.0.1".into(),
                    format!("--secure-port={}", free_port()?),
                    format!("--service-account-private-key-file={sa_key}"),
                    format!("--root-ca-file={}", pki.ca_cert.display()),
                    "--use-service-account-credentials=false".into(),
                    "--concurrent-deployment-syncs=5".into(),
                ],
            )?;
            self.spawn(
                "kube-scheduler",
                &[
                    format!("--kubeconfig={kc}"),
                    format!("--authentication-kubeconfig={kc}"),
                    format!("--authorization-kubeconfig={kc}"),
                    "--leader-elect=false".into(),
                    "--bind-address=127.0.0.1".into(),
                    format!("--secure-port={}", free_port()?),
                ],
            )?;
            self.spawn(
                "kwok",
                &[
                    format!("--kubeconfig={kc}"),
                    "--manage-all-nodes=true".into(),
                    format!("--server-address=127.0.0.1:{}", free_port()?),
                ],
            )?;
            create_fake_node(&client).await?;
        }
        Ok(())
    }

    fn spawn(&mut self, name: &'static str, args: &[String]) -> Result<(), DevError> {
        let bin = tools::tool(name)?;
        let log = self.dir.join("logs").join(format!("{name}.log"));
        let out = std::fs::File::create(&log).map_err(|e| DevError::io("create log file", e))?;
        let err = out.try_clone().map_err(|e| DevError::io("create log file", e))?;
        let child = Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            // Own process group: a Ctrl-C meant for the parent does not race our orderly shutdown.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| DevError::io("start a control plane process", e))?;
        self.processes.push(Process { name, child, log });
        Ok(())
    }

    /// Fails fast, with the log's path, when a process we started has exited.
    fn check_alive(&mut self) -> Result<(), DevError> {
        for p in &mut self.processes {
            if let Ok(Some(status)) = p.child.try_wait() {
                return Err(DevError::Exited {
                    component: p.name.into(),
                    status: status.to_string(),
                    log: p.log.display().to_string(),
                });
            }
        }
        Ok(())
    }

    async fn wait_http_ok(&mut self, component: &str, url: &str) -> Result<(), DevError> {
        let start = Instant::now();
        let mut last = String::from("no answer yet");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| DevError::NotReady {
                component: component.into(),
                seconds: 0,
                last: e.to_string(),
            })?;
        while start.elapsed() < READY_TIMEOUT {
            self.check_alive()?;
            match http.get(url).send().await {
                Ok(r) if r.status().is_success() => return Ok(()),
                Ok(r) => last = format!("HTTP {}", r.status()),
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(DevError::NotReady {
            component: component.into(),
            seconds: READY_TIMEOUT.as_secs(),
            last,
        })
    }

    async fn wait_apiserver_ready(&mut self, client: &Client) -> Result<(), DevError> {
        let start = Instant::now();
        let mut last = String::from("no answer yet");
        let namespaces: Api<Namespace> = Api::all(client.clone());
        while start.elapsed() < READY_TIMEOUT {
            self.check_alive()?;
            let req = http::Request::get("/readyz")
                .body(Vec::new())
                .map_err(|e| DevError::Kubeconfig(e.to_string()))?;
            match client.request_text(req).await {
                Ok(body) if body.trim() == "ok" => match namespaces.get_opt("default").await {
                    Ok(Some(_)) => return Ok(()),
                    Ok(None) => last = "namespace default not created yet".into(),
                    Err(e) => last = e.to_string(),
                },
                Ok(body) => last = body,
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        Err(DevError::NotReady {
            component: "kube-apiserver".into(),
            seconds: READY_TIMEOUT.as_secs(),
            last,
        })
    }

    /// A client authenticated as the admin (system:masters).
    pub async fn client(&self) -> Result<Client, DevError> {
        client_from_kubeconfig(&self.kubeconfig).await
    }

    /// The kubeconfig file for the admin user.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// The API server's URL.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// Each running process's name (`etcd`, `kube-apiserver`, ...) and pid: for benchmarks that read their CPU
    /// time from `/proc`.
    pub fn pids(&self) -> Vec<(&'static str, u32)> {
        self.processes
            .iter()
            .filter_map(|p| Some((p.name, p.child.id()?)))
            .collect()
    }

    /// The control plane's working directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The last `lines` lines of every component's log, for showing when a test fails.
    pub fn logs_tail(&self, lines: usize) -> String {
        logs_tail(&self.dir.join("logs"), lines)
    }

    /// Stops every process, newest first (SIGTERM, then SIGKILL after a grace period), and removes the
    /// directory unless asked to keep it.
    pub async fn stop(mut self) {
        self.stop_processes().await;
        if !self.keep && self.created_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else if !self.keep {
            // The directory was the caller's: remove only what we wrote.
            for sub in ["pki", "etcd", "logs", "kubeconfig"] {
                let p = self.dir.join(sub);
                let _ = if p.is_dir() {
                    std::fs::remove_dir_all(&p)
                } else {
                    std::fs::remove_file(&p)
                };
            }
        }
    }

    async fn stop_processes(&mut self) {
        while let Some(mut p) = self.processes.pop() {
            if let Some(pid) = p.child.id().and_then(|id| i32::try_from(id).ok()) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
            }
            if tokio::time::timeout(Duration::from_secs(10), p.child.wait())
                .await
                .is_err()
            {
                let _ = p.child.kill().await;
            }
        }
    }
}

/// Reads a kubeconfig file into a client.
pub async fn client_from_kubeconfig(path: &Path) -> Result<Client, DevError> {
    let kc = Kubeconfig::read_from(path).map_err(|e| DevError::Kubeconfig(e.to_string()))?;
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|e| DevError::Kubeconfig(e.to_string()))?;
    Ok(Client::try_from(config)?)
}

/// The last `lines` lines of each `*.log` file in `dir`.
pub fn logs_tail(dir: &Path, lines: usize) -> String {
    let mut out = String::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    let mut paths: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    paths.sort();
    for path in paths {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        let tail = &all[all.len().saturating_sub(lines)..];
        out.push_str(&format!("==> {} <==\n{}\n", path.display(), tail.join("\n")));
    }
    out
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn kubeconfig_yaml(server: &str, pki: &pki::Pki) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: keyward-dev
  cluster:
    server: {server}
    certificate-authority-data: {ca}
users:
- name: admin
  user:
    client-certificate-data: {cert}
    client-key-data: {key}
contexts:
- name: keyward-dev
  context:
    cluster: keyward-dev
    user: admin
current-context: keyward-dev
",
        ca = b64(&pki.ca_pem),
        cert = b64(&pki.admin_cert_pem),
        key = b64(&pki.admin_key_pem),
    )
}

async fn create_fake_node(client: &Client) -> Result<(), DevError> {
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": FAKE_NODE,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {"type": "kwok", "kubernetes.io/hostname": FAKE_NODE, "kubernetes.io/os": "linux"}
        },
        "status": {
            "allocatable": {"cpu": "64", "memory": "256Gi", "pods": "500"},
            "capacity": {"cpu": "64", "memory": "256Gi", "pods": "500"}
        }
    }))
    .map_err(|e| DevError::Kubeconfig(e.to_string()))?;
    nodes.create(&PostParams::default(), &node).await?;
    Ok(())
}
