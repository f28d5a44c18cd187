//! automerge-repo from npm, driven by `js/bench.mjs`: installed with `npm ci` from the
//! committed package-lock.json (exact versions), then run once per scenario.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{bail, Context as _, Result};
use serde_json::Value;

/// The installed Node script.
pub struct Repo {
    dir: PathBuf,
}

impl Repo {
    /// `npm ci` in `bench/js` unless its `node_modules` is at least as new as the lock file.
    pub fn install() -> Result<Repo> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("js");
        let node = Command::new("node").arg("--version").output();
        let Ok(node) = node else {
            bail!("automerge-repo needs Node.js (`node` and `npm`); run with --no-repo to leave it out");
        };
        let modified = |p: PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        let lock = modified(dir.join("package-lock.json"));
        let installed = modified(dir.join("node_modules/.package-lock.json"));
        if installed.is_none() || installed < lock {
            // `npm install` with the committed lock (not `npm ci`: npm 11's `ci` refuses this
            // lock for the other platforms' optional packages of cbor-extract).
            eprintln!("npm install in {}", dir.display());
            let status = Command::new("npm")
                .args(["install", "--no-audit", "--no-fund", "--ignore-scripts"])
                .current_dir(&dir)
                .stdout(Stdio::null())
                .status()
                .context("run npm ci")?;
            if !status.success() {
                bail!("npm ci failed in {}", dir.display());
            }
        }
        eprintln!(
            "automerge-repo side: Node {}",
            String::from_utf8_lossy(&node.stdout).trim()
        );
        Ok(Repo { dir })
    }

    /// Run one scenario of the script; its `RESULT` line.
    pub fn run(&self, scenario: &str, args: &Value) -> Result<Value> {
        let output = Command::new("node")
            .arg(self.dir.join("bench.mjs"))
            .arg(scenario)
            .arg(args.to_string())
            .current_dir(&self.dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .output()
            .context("run node")?;
        if !output.status.success() {
            bail!("automerge-repo {scenario} failed");
        }
        let stdout = String::from_utf8_lossy(&output.stdout);
        let line = stdout
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("RESULT "))
            .with_context(|| format!("automerge-repo {scenario} printed no result"))?;
        Ok(serde_json::from_str(line)?)
    }
}
