//! Python tools the tests drive (the official SDKs, moto's S3 server), each
//! from a virtual environment under `target/` made by `python/venv.sh` with
//! pinned requirements. Outside CI a venv that cannot be made skips its
//! tests with a visible message; under `CI=true` it fails them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// The `bin` directory of the venv `name` (in `target/`, or `$env_var` when
/// set) holding `requirements`, made first if needed (once per process);
/// `None` to skip.
pub fn venv_bin(name: &str, env_var: &str, requirements: &Path) -> Option<PathBuf> {
    static MADE: Mutex<Option<HashMap<String, Result<PathBuf, String>>>> = Mutex::new(None);
    let mut made = MADE.lock().unwrap_or_else(|e| e.into_inner());
    let result = made
        .get_or_insert_with(HashMap::new)
        .entry(name.to_string())
        .or_insert_with(|| {
            let venv = std::env::var_os(env_var)
                .map(PathBuf::from)
                .unwrap_or_else(|| workspace().join("target").join(name));
            let script = workspace().join("crates/testkit/python/venv.sh");
            let out = Command::new(&script)
                .arg(&venv)
                .arg(requirements)
                .output()
                .map_err(|e| format!("{} did not run: {e}", script.display()))?;
            if !out.status.success() {
                return Err(format!(
                    "{} failed: {}",
                    script.display(),
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            Ok(venv.join("bin"))
        });
    match result {
        Ok(bin) => Some(bin.clone()),
        Err(e) => {
            assert!(
                std::env::var("CI").is_err(),
                "the {name} venv is required under CI: {e}"
            );
            eprintln!("SKIPPED: no {name} venv ({e})");
            None
        }
    }
}

/// The repository's root.
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}
