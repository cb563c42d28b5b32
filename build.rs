//! Build identity: the git commit the binary was built from, for `--version`, `callbox
//! status` and `/healthz` (a field report names the exact build). Packagers building from a
//! tarball set CALLBOX_GIT_COMMIT; without either it is "unknown".

fn main() {
    println!("cargo:rerun-if-env-changed=GIT_COMMIT");
    let commit = std::env::var("GIT_COMMIT").ok().filter(|c| !c.is_empty()).or_else(|| {
        let out = std::process::Command::new("git").args(["rev-parse", "--short=12", "HEAD"]).output().ok()?;
        if !out.status.success() {
            return None;
        }
        let dirty = std::process::Command::new("git")
            .args(["status", "--porcelain", "--untracked-files=no"])
            .output()
            .map(|o| !o.stdout.is_empty())
            .unwrap_or(false);
        let c = String::from_utf8(out.stdout).ok()?.trim().to_string();
        Some(if dirty { format!("{c}-dirty") } else { c })
    });
    // Rebuild when HEAD moves (a commit, a checkout), not on every file change.
    if let Ok(out) = std::process::Command::new("git").args(["rev-parse", "--git-dir"]).output()
        && out.status.success()
    {
        let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
        println!("cargo:rerun-if-changed={dir}/HEAD");
        println!("cargo:rerun-if-changed={dir}/index");
    }
    println!("cargo:rustc-env=BUILD_COMMIT_ID={}", commit.unwrap_or_else(|| "unknown".into()));
}
