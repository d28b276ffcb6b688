//! Where the pinned control-plane binaries live: `$KEYWARD_TOOLS_DIR`, else the directory `tools/build.sh
//! --path` names (a cache keyed by the pinned versions).

use std::path::PathBuf;

use crate::error::DevError;

/// The directory holding etcd, kube-apiserver, kubectl, kwok and the rest.
pub fn tools_dir() -> Result<PathBuf, DevError> {
    if let Some(dir) = std::env::var_os("KEYWARD_TOOLS_DIR").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tools/build.sh");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .arg("--path")
        .output()
        .map_err(|e| DevError::io("run tools/build.sh --path", e))?;
    if !out.status.success() {
        return Err(DevError::ToolMissing {
            name: "tools directory".into(),
            path: script.display().to_string(),
        });
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// The path of one tool, checked to exist.
pub fn tool(name: &str) -> Result<PathBuf, DevError> {
    let path = tools_dir()?.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(DevError::ToolMissing {
            name: name.into(),
            path: path.display().to_string(),
        })
    }
}
