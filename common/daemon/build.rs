//! Records the git commit being built as `BRINE_GIT_COMMIT`, for `--version`: two builds of
//! the same version number can differ, and the commit tells which code a host runs.
//!
//! `BRINE_GIT_COMMIT` in the build's environment wins (a build from a source tarball has no
//! `.git`, so its packager says which commit it is); otherwise `git rev-parse`; otherwise
//! "unknown".

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=BRINE_GIT_COMMIT");
    let commit = match std::env::var("BRINE_GIT_COMMIT") {
        Ok(commit) if !commit.trim().is_empty() => commit.trim().to_owned(),
        _ => commit_from_git().unwrap_or_else(|| "unknown".to_owned()),
    };
    println!("cargo:rustc-env=BRINE_GIT_COMMIT={commit}");
}

/// The short hash of `HEAD`, asking Cargo to run this script again when `HEAD` moves.
fn commit_from_git() -> Option<String> {
    let commit = git(&["rev-parse", "--short=12", "HEAD"])?;
    // A worktree has its own HEAD (in its git dir) but shares refs with the main checkout (in
    // the common dir); `.git` may be a file naming them, so ask git where they are.
    let git_dir = PathBuf::from(git(&["rev-parse", "--absolute-git-dir"])?);
    let common_dir = PathBuf::from(git(&[
        "rev-parse",
        "--path-format=absolute",
        "--git-common-dir",
    ])?);
    // A checkout rewrites HEAD; a commit rewrites the branch's ref, loose or packed.
    let mut watched = vec![git_dir.join("HEAD"), common_dir.join("packed-refs")];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.push(common_dir.join(branch));
    }
    for path in watched {
        // Cargo runs a build script on every build when a watched path does not exist.
        if path.exists() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    Some(commit)
}

/// `git ARGS` in this crate's directory: its trimmed output, or `None` when git is missing or
/// this is not a checkout.
fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git")
        .args(args)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")))
        .output()
        .ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    let text = text.trim();
    (output.status.success() && !text.is_empty()).then(|| text.to_owned())
}
