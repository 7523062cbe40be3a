//! `brine-minion --version`: the version and the commit it was built from, so a host's agent
//! can be matched to its code.

use std::process::Command;

/// The commit the binary was built from, as its build script found it: the build's
/// `BRINE_GIT_COMMIT` when it set one, else this checkout's `HEAD` (a commit or checkout since
/// makes Cargo run the build script again), else "unknown".
fn built_commit() -> String {
    if let Some(commit) = option_env!("BRINE_GIT_COMMIT")
        .map(str::trim)
        .filter(|c| !c.is_empty())
    {
        return commit.to_owned();
    }
    Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned())
}

#[test]
fn version_flag_prints_the_version_and_the_commit() {
    let wanted = format!(
        "brine-minion {} (commit {})",
        env!("CARGO_PKG_VERSION"),
        built_commit()
    );
    for flag in ["--version", "-V"] {
        let output = Command::new(env!("CARGO_BIN_EXE_brine-minion"))
            .arg(flag)
            .output()
            .expect("run brine-minion");
        assert!(output.status.success(), "{flag}: {output:?}");
        assert_eq!(
            String::from_utf8_lossy(&output.stdout).trim(),
            wanted,
            "{flag}"
        );
    }
}
