//! Build script: records the git commit the binary is built from, for `warden --version`
//! ("unknown" outside a git checkout, e.g. from a source archive).

use std::path::Path;
use std::process::Command;

fn main() {
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=WARDEN_GIT_COMMIT={commit}");
    // Run again when HEAD moves: a checkout changes `.git/HEAD`, a commit the branch's ref.
    println!("cargo:rerun-if-changed=build.rs");
    let git = Path::new("../.git");
    let head = git.join("HEAD");
    if head.is_file() {
        println!("cargo:rerun-if-changed={}", head.display());
        if let Some(r) =
            std::fs::read_to_string(&head).ok().and_then(|h| h.strip_prefix("ref: ").map(|r| r.trim().to_string()))
        {
            for path in [git.join(&r), git.join("packed-refs")] {
                if path.exists() {
                    println!("cargo:rerun-if-changed={}", path.display());
                }
            }
        }
    }
}
