//! The operator image as a release publishes it: `make image-push` (tools/image.sh push) copies the OCI archive
//! `make image` wrote to a registry on loopback (Debian's docker-registry, started here), and the image comes
//! back by the digest the push printed, runs, and is the operator (`--version`). The in-cluster run of the
//! image is in tests/chart.rs, beside the chart it runs as.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::{Child, Command, Output, Stdio};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn podman(args: &[&str]) -> Output {
    Command::new("podman")
        .args(["--runtime", "runc", "--cgroup-manager", "cgroupfs"])
        .args(args)
        .output()
        .expect("run podman (tools/system-deps.sh)")
}

/// A docker-registry on a free loopback port, storing in a temporary directory; stopped when dropped.
struct Registry {
    child: Child,
    addr: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

impl Registry {
    fn start() -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let addr = support::free_port();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog: {{level: warn}}\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete: \
                 {{enabled: true}}\nhttp:\n  addr: {addr}\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start docker-registry (apt-get install docker-registry; tools/system-deps.sh)");
        let registry = Registry { child, addr, _dir: dir };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "docker-registry did not listen on {addr}"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        registry
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_image_is_pushed_to_a_registry_and_pulled_back_by_digest() {
    let version = env!("CARGO_PKG_VERSION");
    let archive = support::repo().join(format!("build/image/keyward-{version}.oci.tar"));
    assert!(
        archive.is_file(),
        "{} is missing: build it with `tools/image.sh build amd64` (make integration does)",
        archive.display()
    );
    let registry = Registry::start();
    let target = format!("{}/platform", registry.addr);
    let out = Command::new(support::repo().join("tools/image.sh"))
        .args(["push", &target])
        .env("SKOPEO_DEST_FLAGS", "--dest-tls-verify=false")
        .output()
        .unwrap();
    let said = ok(out, "tools/image.sh push");
    // "image: pushed HOST/platform/keyward:VERSION@sha256:..."
    let pushed = said
        .lines()
        .find_map(|l| l.strip_prefix("image: pushed "))
        .unwrap_or_else(|| panic!("no pushed reference in: {said}"));
    let (tagged, digest) = pushed.split_once('@').unwrap();
    assert_eq!(tagged, format!("{target}/keyward:{version}"));
    assert!(digest.starts_with("sha256:") && digest.len() == 71, "{digest}");

    // The registry serves that digest, as an image index naming every architecture pushed.
    let by_digest = format!("{target}/keyward@{digest}");
    let raw = ok(
        Command::new("skopeo")
            .args([
                "inspect",
                "--raw",
                "--tls-verify=false",
                &format!("docker://{by_digest}"),
            ])
            .output()
            .unwrap(),
        "skopeo inspect --raw",
    );
    let index: serde_json::Value = serde_json::from_str(&raw).unwrap();
    let platforms: Vec<String> = index["manifests"]
        .as_array()
        .expect("an image index")
        .iter()
        .map(|m| {
            format!(
                "{}/{}",
                m["platform"]["os"].as_str().unwrap(),
                m["platform"]["architecture"].as_str().unwrap()
            )
        })
        .collect();
    assert!(platforms.contains(&"linux/amd64".to_string()), "{platforms:?}");

    // Pulled back by digest into local storage and run: it is keyward, the version the push named.
    ok(
        podman(&["pull", "--quiet", "--tls-verify=false", &by_digest]),
        "podman pull by digest",
    );
    let out = podman(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--read-only",
        "--cap-drop",
        "ALL",
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
        &by_digest,
        "--version",
    ]);
    assert_eq!(ok(out, "podman run --version").trim(), format!("keyward {version}"));
    let _ = podman(&["rmi", "--force", &by_digest]);
}
