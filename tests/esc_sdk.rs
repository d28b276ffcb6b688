//! The local ESC server against the official Python client: `pulumi-esc-sdk` (pinned below) in a cached
//! venv outside the repository drives a `keyward-dev esc-server` process through `tests/esc_sdk.py`.
//!
//! The venv is made once, beside the tools cache: `${KEYWARD_TOOLS_DIR:-$(tools/build.sh --path)}/..`. When
//! pip cannot install the client (PyPI unreachable), the test fails and says so: it never skips.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SDK: &str = "pulumi-esc-sdk";
const SDK_VERSION: &str = "0.14.0";
const TOKEN: &str = "sdk-test-token";

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Where cached tools live, as the Makefile computes it.
fn tools_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("KEYWARD_TOOLS_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let out = Command::new(manifest_dir().join("tools/build.sh"))
        .arg("--path")
        .output()
        .expect("run tools/build.sh --path");
    assert!(out.status.success(), "tools/build.sh --path failed: {out:?}");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

fn venv_ready(venv: &Path) -> bool {
    let python = venv.join("bin/python");
    python.exists()
        && Command::new(&python)
            .args([
                "-c",
                &format!(
                    "import importlib.metadata as m, pulumi_esc_sdk; assert m.version('{SDK}') == '{SDK_VERSION}'"
                ),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}).\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The venv with the pinned client, made (in a scratch directory, then renamed into place, so that a
/// concurrent or interrupted run never leaves a half-made one) only when missing.
fn sdk_venv() -> PathBuf {
    let cache = tools_dir()
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(std::env::temp_dir);
    let venv = cache.join(format!("python-venv-{SDK}-{SDK_VERSION}"));
    if venv_ready(&venv) {
        return venv;
    }
    std::fs::create_dir_all(&cache).unwrap();
    let scratch = cache.join(format!(".python-venv-{SDK}-{SDK_VERSION}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    run(
        Command::new("python3").args(["-m", "venv"]).arg(&scratch),
        "creating a Python venv",
    );
    run(
        Command::new(scratch.join("bin/python")).args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            &format!("{SDK}=={SDK_VERSION}"),
        ]),
        &format!("pip install {SDK}=={SDK_VERSION} (is PyPI reachable?)"),
    );
    let _ = std::fs::remove_dir_all(&venv);
    if std::fs::rename(&scratch, &venv).is_err() {
        // Another run put one in place first.
        let _ = std::fs::remove_dir_all(&scratch);
    }
    assert!(
        venv_ready(&venv),
        "the venv at {} does not have {SDK} {SDK_VERSION}",
        venv.display()
    );
    venv
}

/// A `keyward-dev esc-server` child; it stops when its stdin closes (on drop, or if this process dies).
struct ServerProcess {
    child: Child,
    root_url: String,
    _dir: tempfile::TempDir,
}

impl ServerProcess {
    fn start() -> ServerProcess {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(support::dev_bin())
            .args(["esc-server", "--listen", "127.0.0.1:0", "--data"])
            .arg(dir.path().join("esc.json"))
            .args(["--token", TOKEN, "--stop-on-stdin-eof"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start keyward-dev esc-server");
        let stdout = child.stdout.take().unwrap();
        let mut ready = None;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(url) = line.strip_prefix("# keyward-dev: esc server ready at ") {
                ready = Some(url.trim().to_owned());
                break;
            }
        }
        let base = ready.unwrap_or_else(|| panic!("esc-server did not start: {:?}", child.wait()));
        let root_url = base
            .strip_suffix("/api/esc")
            .expect("base URL ends in /api/esc")
            .to_owned();
        assert!(root_url.starts_with("http://127.0.0.1:"), "{root_url}");
        ServerProcess {
            child,
            root_url,
            _dir: dir,
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn official_python_client_drives_the_server() {
    let venv = sdk_venv();
    let server = ServerProcess::start();
    let out = Command::new(venv.join("bin/python"))
        .arg(manifest_dir().join("tests/esc_sdk.py"))
        .arg(&server.root_url)
        .arg(TOKEN)
        // The client must reach the loopback server directly, whatever proxy the environment names.
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
        .output()
        .expect("run tests/esc_sdk.py");
    let (status, stdout, stderr) = (
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        status.success(),
        "tests/esc_sdk.py failed ({status}).\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("checks passed"), "{stdout}");
    eprintln!("{}", stdout.trim());
}
