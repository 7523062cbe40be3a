//! Rollout hooks: the commands a role runs on the host around the replacement of its
//! containers, e.g. taking the host out of an external load balancer and putting it back.
//!
//! A hook runs without a shell, with a clean environment (PATH, LANG and TZ from the minion's,
//! and what the job tells it), killed at its timeout. Its output is logged and the end of it
//! quoted in the error a failure reports, so the operator sees why without logging in.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use brine_common::names::{ContainerName, RoleName};
use brine_common::outcome::JobId;
use brine_common::spec::RolloutHooks;
use tokio::io::AsyncReadExt;
use tokio::process::Command;

/// How much of a failed hook's output its error quotes.
const QUOTED_OUTPUT: usize = 1024;

/// The most output read from a hook; the rest is discarded, so a chatty hook cannot fill the
/// minion's memory.
const MAX_OUTPUT: u64 = 64 * 1024;

/// Which of a role's hooks runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookPoint {
    BeforeReplace,
    AfterHealthy,
}

impl HookPoint {
    pub fn as_str(self) -> &'static str {
        match self {
            HookPoint::BeforeReplace => "before_replace",
            HookPoint::AfterHealthy => "after_healthy",
        }
    }
}

/// The replacements of one role in a job, and its hooks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleRollout {
    pub hooks: RolloutHooks,
    /// Positions, in the job's actions, of the role's first and last replacement.
    pub first: usize,
    pub last: usize,
    pub containers: Vec<ContainerName>,
}

/// The roles with hooks whose containers the job replaces, from the job's actions in order:
/// `(position, role, container, hooks)` of each replacement.
pub fn rollouts<'a>(
    replacements: impl Iterator<
        Item = (
            usize,
            &'a RoleName,
            &'a ContainerName,
            Option<&'a RolloutHooks>,
        ),
    >,
) -> BTreeMap<RoleName, RoleRollout> {
    let mut rollouts: BTreeMap<RoleName, RoleRollout> = BTreeMap::new();
    for (at, role, container, hooks) in replacements {
        let Some(hooks) = hooks else { continue };
        rollouts
            .entry(role.clone())
            .and_modify(|r| {
                r.last = at;
                r.containers.push(container.clone());
            })
            .or_insert_with(|| RoleRollout {
                hooks: hooks.clone(),
                first: at,
                last: at,
                containers: vec![container.clone()],
            });
    }
    rollouts
}

/// Runs the role's hook at `point`, if it has one. `Err` says why it failed, for the job's
/// result.
pub async fn run(
    point: HookPoint,
    role: &RoleName,
    rollout: &RoleRollout,
    job_id: &JobId,
) -> Result<(), String> {
    let command = match point {
        HookPoint::BeforeReplace => &rollout.hooks.before_replace,
        HookPoint::AfterHealthy => &rollout.hooks.after_healthy,
    };
    let Some((program, args)) = command.split_first() else {
        return Ok(());
    };
    let containers = rollout
        .containers
        .iter()
        .map(ContainerName::as_str)
        .collect::<Vec<_>>()
        .join(" ");
    let mut child = Command::new(program);
    child
        .args(args)
        .env_clear()
        .envs(
            ["PATH", "LANG", "TZ"]
                .into_iter()
                .filter_map(|key| Some((key, std::env::var_os(key)?))),
        )
        .env("BRINE_HOOK", point.as_str())
        .env("BRINE_ROLE", role.as_str())
        .env("BRINE_JOB_ID", job_id.as_str())
        .env("BRINE_CONTAINERS", &containers)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let failed = |why: String| format!("the {} hook {program:?} {why}", point.as_str());
    let mut child = child
        .spawn()
        .map_err(|err| failed(format!("cannot start: {err}")))?;
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let timeout = Duration::from_millis(rollout.hooks.timeout_ms.into());
    let outcome = tokio::time::timeout(timeout, async {
        let (status, out, err) =
            tokio::join!(child.wait(), read_bounded(stdout), read_bounded(stderr));
        (status, out, err)
    })
    .await;
    let Ok((status, stdout, stderr)) = outcome else {
        // Dropping the child kills it.
        return Err(failed(format!(
            "did not finish within {} and was killed",
            humantime::format_duration(timeout)
        )));
    };
    let status = status.map_err(|err| failed(format!("cannot be waited for: {err}")))?;
    for line in stdout.lines().chain(stderr.lines()) {
        tracing::info!(hook = point.as_str(), %role, "{line}");
    }
    if status.success() {
        return Ok(());
    }
    let output = if stderr.trim().is_empty() {
        stdout
    } else {
        stderr
    };
    let output = output.trim();
    let quoted = match output.char_indices().rev().nth(QUOTED_OUTPUT) {
        Some((cut, _)) => format!("...{}", &output[cut..]),
        None => output.to_owned(),
    };
    Err(failed(if quoted.is_empty() {
        format!("failed ({status})")
    } else {
        format!("failed ({status}): {quoted}")
    }))
}

async fn read_bounded(pipe: Option<impl tokio::io::AsyncRead + Unpin>) -> String {
    let Some(pipe) = pipe else {
        return String::new();
    };
    let mut bytes = vec![];
    // A read error ends what is quoted; the exit status still decides.
    let _ = pipe.take(MAX_OUTPUT).read_to_end(&mut bytes).await;
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rollout(before: &[&str], timeout_ms: u32) -> RoleRollout {
        RoleRollout {
            hooks: RolloutHooks {
                before_replace: before.iter().map(|s| (*s).to_owned()).collect(),
                after_healthy: vec![],
                timeout_ms,
            },
            first: 0,
            last: 0,
            containers: vec![ContainerName::new("web").unwrap()],
        }
    }

    fn role() -> RoleName {
        RoleName::new("web").unwrap()
    }

    fn job() -> JobId {
        JobId::new("job-1").unwrap()
    }

    #[tokio::test]
    async fn a_hook_sees_the_job_and_not_the_minions_environment() {
        // HOME is in the environment of whoever runs the tests, as in the minion's.
        assert!(std::env::var_os("HOME").is_some());
        let script = r#"test "$BRINE_HOOK $BRINE_ROLE $BRINE_JOB_ID $BRINE_CONTAINERS" = "before_replace web job-1 web" && test -z "$HOME""#;
        let outcome = run(
            HookPoint::BeforeReplace,
            &role(),
            &rollout(&["/bin/sh", "-c", script], 5_000),
            &job(),
        )
        .await;
        assert_eq!(outcome, Ok(()));
    }

    #[tokio::test]
    async fn a_failing_hook_quotes_its_output() {
        let outcome = run(
            HookPoint::BeforeReplace,
            &role(),
            &rollout(
                &["/bin/sh", "-c", "echo target group busy >&2; exit 3"],
                5_000,
            ),
            &job(),
        )
        .await
        .unwrap_err();
        assert!(outcome.contains("before_replace"), "{outcome}");
        assert!(outcome.contains("exit status: 3"), "{outcome}");
        assert!(outcome.contains("target group busy"), "{outcome}");
    }

    #[tokio::test]
    async fn a_hook_past_its_timeout_is_killed() {
        let started = std::time::Instant::now();
        let outcome = run(
            HookPoint::BeforeReplace,
            &role(),
            &rollout(&["/bin/sleep", "30"], 200),
            &job(),
        )
        .await
        .unwrap_err();
        assert!(outcome.contains("did not finish within 200ms"), "{outcome}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[tokio::test]
    async fn a_missing_program_says_so() {
        let outcome = run(
            HookPoint::BeforeReplace,
            &role(),
            &rollout(&["/nonexistent/deregister"], 1_000),
            &job(),
        )
        .await
        .unwrap_err();
        assert!(outcome.contains("cannot start"), "{outcome}");
    }

    #[test]
    fn a_roles_replacements_make_one_rollout() {
        let hooks = rollout(&["true"], 1_000).hooks;
        let web = role();
        let db = RoleName::new("db").unwrap();
        let a = ContainerName::new("a").unwrap();
        let b = ContainerName::new("b").unwrap();
        let c = ContainerName::new("c").unwrap();
        let found = rollouts(
            [
                (1, &web, &a, Some(&hooks)),
                (2, &db, &c, None),
                (4, &web, &b, Some(&hooks)),
            ]
            .into_iter(),
        );
        assert_eq!(found.len(), 1);
        assert_eq!((found[&web].first, found[&web].last), (1, 4));
        assert_eq!(found[&web].containers, vec![a, b]);
    }
}
