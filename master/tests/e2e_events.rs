//! End to end: the fleet's events and hooks, through the real binaries. A master with hooks in
//! its master.toml (a command, an HTTP endpoint run by this test, and three that fail: a closed
//! port, a command that exits 1, a command that hangs past its timeout) runs a highstate on a
//! real minion; `brine-master events` lists what happened, `events --follow --output json`
//! sees it live, the working hooks get the events' JSON, and the failing ones are retried, then
//! recorded where an operator finds them, while the job itself finished as usual.
//!
//! Needs Docker, Debian's `docker-registry` and `busybox-static`, and the binaries.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::Duration;

use serde_json::Value;
use support::{Images, Master, Minion, Registry, docker, free_port, quoted, unique_id, wait_for};

/// One POST the test's HTTP endpoint received.
#[derive(Debug, Clone)]
struct Post {
    path: String,
    /// Header lines, lower-cased names.
    headers: Vec<(String, String)>,
    body: String,
}

/// A tiny HTTP endpoint on 127.0.0.1:0 that answers every request with 204 and records it.
struct Endpoint {
    address: String,
    posts: Arc<Mutex<Vec<Post>>>,
}

impl Endpoint {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the hook endpoint");
        let address = listener.local_addr().expect("its address").to_string();
        let posts = Arc::new(Mutex::new(vec![]));
        let recorded = posts.clone();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().expect("clone the stream"));
                let mut request_line = String::new();
                if reader.read_line(&mut request_line).is_err() {
                    continue;
                }
                let path = request_line
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or_default()
                    .to_owned();
                let mut headers = vec![];
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                        break;
                    }
                    if let Some((name, value)) = line.split_once(':') {
                        headers.push((name.trim().to_lowercase(), value.trim().to_owned()));
                    }
                }
                let length = headers
                    .iter()
                    .find(|(name, _)| name == "content-length")
                    .and_then(|(_, value)| value.parse::<usize>().ok())
                    .unwrap_or(0);
                let mut body = vec![0; length];
                if reader.read_exact(&mut body).is_err() {
                    continue;
                }
                recorded.lock().expect("the posts").push(Post {
                    path,
                    headers,
                    body: String::from_utf8_lossy(&body).into_owned(),
                });
                let _ = stream.write_all(
                    b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            }
        });
        Self { address, posts }
    }

    fn posts_to(&self, path: &str) -> Vec<Post> {
        self.posts
            .lock()
            .expect("the posts")
            .iter()
            .filter(|post| post.path == path)
            .cloned()
            .collect()
    }
}

/// `brine-master events --follow --output json` in the background, its lines read as they
/// come.
struct Follower {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<Value>,
}

impl Follower {
    fn start(master: &Master) -> Self {
        let mut child = master
            .cli(&["events", "--follow", "--output", "json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start brine-master events --follow");
        let stdout = child.stdout.take().expect("its stdout");
        let (sender, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines,
            seen: vec![],
        }
    }

    /// Waits until an event of `kind` for `job_id` has come (30 s at most).
    fn wait_for(&mut self, kind: &str, job_id: &str) -> Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(event) = self
                .seen
                .iter()
                .find(|e| e["kind"] == kind && e["job_id"] == job_id)
            {
                return event.clone();
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(
                    serde_json::from_str(&line)
                        .unwrap_or_else(|err| panic!("not a JSON line ({err}): {line}")),
                ),
                Err(_) => panic!(
                    "`events --follow` sent no {kind} of {job_id} in 30 s; it sent {:#?}",
                    self.seen
                ),
            }
        }
    }
}

impl Follower {
    /// Its exit code, once it has exited (15 s at most).
    fn exit_code(&mut self) -> Option<i32> {
        wait_for(
            "`events --follow` to exit",
            Duration::from_secs(15),
            || match self.child.try_wait() {
                Ok(Some(status)) => Ok(status.code()),
                _ => Err("still running".to_owned()),
            },
        )
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The JSON lines `brine-master ARGS` printed.
fn json_lines(master: &Master, args: &[&str]) -> Vec<Value> {
    let output = master.cli(args).output().expect("run brine-master");
    assert!(
        output.status.success(),
        "brine-master {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|err| panic!("not JSON ({err}): {line}"))
        })
        .collect()
}

#[test]
fn events_are_listed_followed_and_delivered_to_hooks_and_failed_hooks_are_recorded() {
    let uniq = unique_id();
    let registry = Registry::start();
    let mut images = Images::new(&registry, &uniq);
    let app = images.push_variant("app", 1);
    let mut master = Master::start();

    let endpoint = Endpoint::start();
    let work = tempfile::tempdir().expect("a temp dir");
    let stdin_file = work.path().join("command-stdin.jsonl");
    let env_file = work.path().join("command-env.jsonl");
    let closed_port = free_port();
    let metrics = format!("127.0.0.1:{}", free_port());
    let hooks = format!(
        "\nmetrics_listen = {metrics}\n\n\
         [[hooks]]\n\
         name = \"recorder\"\n\
         on = [\"job_started\", \"host_reported\", \"job_finished\"]\n\
         command = [\"/bin/sh\", \"-c\", \"cat >> \\\"$1\\\" && echo >> \\\"$1\\\" && printf '%s\\\\n' \\\"$BRINE_EVENT\\\" >> \\\"$2\\\"\", \"recorder\", {stdin}, {env}]\n\n\
         [[hooks]]\n\
         name = \"chat\"\n\
         on = [\"job_finished\"]\n\
         status = [\"succeeded\"]\n\
         url = \"http://{endpoint}/hook\"\n\n\
         [[hooks]]\n\
         name = \"chat-failures\"\n\
         on = [\"job_finished\"]\n\
         status = [\"failed\", \"partial\"]\n\
         url = \"http://{endpoint}/failed-only\"\n\n\
         [[hooks]]\n\
         name = \"closed-port\"\n\
         on = [\"job_finished\"]\n\
         url = \"http://127.0.0.1:{closed_port}/hook?token=SECRET-IN-QUERY\"\n\
         retries = 2\n\n\
         [[hooks]]\n\
         name = \"exits-1\"\n\
         on = [\"job_finished\"]\n\
         command = [\"/bin/false\"]\n\
         retries = 1\n\n\
         [[hooks]]\n\
         name = \"hangs\"\n\
         on = [\"job_finished\"]\n\
         command = [\"/bin/sleep\", \"60\"]\n\
         timeout = \"1s\"\n\
         retries = 1\n",
        metrics = quoted(&metrics),
        stdin = quoted(&stdin_file.display().to_string()),
        env = quoted(&env_file.display().to_string()),
        endpoint = endpoint.address,
    );
    let config = master.data_dir().join("master.toml");
    let mut text = std::fs::read_to_string(&config).expect("read master.toml");
    text.push_str(&hooks);
    std::fs::write(&config, text).expect("write master.toml");
    master.start_again();

    let mut follower = Follower::start(&master);
    let id = format!("e2e-{uniq}-a");
    let mut minion = Minion::start(&master, &id);
    minion.wait_connected(&master);
    master.write_roles(&format!(
        "[roles.web]\nimage = {}\n[[roles.web.containers]]\nname = \"web\"\n\
         command = [\"/bin/busybox\", \"httpd\", \"-f\", \"-p\", \"8080\"]\n\n\
         [assign]\n{} = [\"web\"]\n",
        quoted(&app.reference),
        quoted(&id)
    ));

    // The job ends as it would without hooks, whatever the hooks do meanwhile (one of them
    // sleeps for a minute at each try).
    let run = master.highstate_run(None);
    assert_eq!(run.code, 0, "{}", run.describe());
    assert!(
        run.elapsed < Duration::from_secs(45),
        "the job took {:?}",
        run.elapsed
    );
    let job_id = run.json["job_id"]
        .as_str()
        .unwrap_or_else(|| panic!("a job id: {}", run.json))
        .to_owned();

    // Live, as they happened.
    let started = follower.wait_for("job_started", &job_id);
    assert_eq!(started["targets"], serde_json::json!([id]), "{started}");
    let reported = follower.wait_for("host_reported", &job_id);
    assert_eq!(reported["minion_id"], id.as_str(), "{reported}");
    assert_eq!(reported["status"], "changed", "{reported}");
    let finished = follower.wait_for("job_finished", &job_id);
    assert_eq!(finished["outcome"], "succeeded", "{finished}");
    assert_eq!(finished["counts"]["changed"], 1, "{finished}");
    assert_eq!(finished["hosts"][0]["minion_id"], id.as_str(), "{finished}");
    let sequences: Vec<u64> = [&started, &reported, &finished]
        .iter()
        .map(|e| e["sequence"].as_u64().expect("a sequence"))
        .collect();
    assert!(sequences.is_sorted(), "{sequences:?}");

    // Drift the minion repairs on its own reaches the events as it is reported.
    docker(&["rm", "-f", &format!("{id}.web")]);

    // After the fact: the recent events, as JSON lines and as text.
    let events = json_lines(&master, &["events", "--output", "json"]);
    let kinds_of = |events: &[Value]| -> Vec<String> {
        events
            .iter()
            .filter(|e| e["minion_id"] == id.as_str() || e["job_id"] == job_id.as_str())
            // The repair below may be reported by now.
            .filter(|e| e["kind"] != "host_event")
            .map(|e| e["kind"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    assert_eq!(
        kinds_of(&events),
        [
            "host_linked",
            "job_started",
            "host_reported",
            "job_finished"
        ],
        "{events:#?}"
    );
    let text = master
        .cli(&["events"])
        .output()
        .expect("run brine-master events");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.lines().any(|line| line.contains("job_finished")
            && line.contains(&job_id)
            && line.contains("succeeded: 1 changed")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|line| line.contains("host_linked") && line.contains(&id)),
        "{text}"
    );

    // The command hook got each event's JSON on its standard input and in BRINE_EVENT.
    let recorded = wait_for(
        "the command hook to take three events",
        Duration::from_secs(30),
        || {
            let text = std::fs::read_to_string(&stdin_file).unwrap_or_default();
            if text.lines().count() >= 3 {
                Ok(text)
            } else {
                Err(text)
            }
        },
    );
    let kinds: Vec<Value> = recorded
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).expect("JSON on stdin")["kind"].clone())
        .collect();
    assert_eq!(
        kinds,
        ["job_started", "host_reported", "job_finished"],
        "{recorded}"
    );
    let from_env = std::fs::read_to_string(&env_file).expect("the command hook's BRINE_EVENT");
    assert_eq!(
        from_env, recorded,
        "BRINE_EVENT holds the same JSON as stdin"
    );

    // The HTTP hook got the POST; the hook for failed jobs got nothing.
    let posts = wait_for("the POST to the hook", Duration::from_secs(30), || {
        let posts = endpoint.posts_to("/hook");
        if posts.is_empty() {
            Err("no POST yet".to_owned())
        } else {
            Ok(posts)
        }
    });
    let body: Value = serde_json::from_str(&posts[0].body).expect("a JSON body");
    assert_eq!(body["kind"], "job_finished", "{body}");
    assert_eq!(body["job_id"], job_id.as_str(), "{body}");
    let header = |name: &str| {
        posts[0]
            .headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(header("content-type").as_deref(), Some("application/json"));
    assert_eq!(header("x-brine-event").as_deref(), Some("job_finished"));

    // The failing hooks: tried again, then recorded for the operator, as failures and as
    // events.
    let failures = wait_for("three failed deliveries", Duration::from_secs(30), || {
        let failures = json_lines(&master, &["hooks", "failures", "--output", "json"]);
        if failures.len() >= 3 {
            Ok(failures)
        } else {
            Err(format!("{failures:?}"))
        }
    });
    for (hook, attempts, error) in [
        ("closed-port", 3, "connect"),
        ("exits-1", 2, "exit status: 1"),
        ("hangs", 2, "no answer within 1s"),
    ] {
        let failure = failures
            .iter()
            .find(|f| f["hook"] == hook)
            .unwrap_or_else(|| panic!("no failure of {hook}: {failures:#?}"));
        assert_eq!(failure["attempts"], attempts, "{failure}");
        assert_eq!(failure["event_kind"], "job_finished", "{failure}");
        assert_eq!(failure["event_sequence"], finished["sequence"], "{failure}");
        assert!(
            failure["error"]
                .as_str()
                .is_some_and(|e| e.to_lowercase().contains(error)),
            "{hook}: {failure}"
        );
    }
    let failed_events = json_lines(
        &master,
        &["events", "--kind", "hook_failed", "--output", "json"],
    );
    assert_eq!(failed_events.len(), 3, "{failed_events:#?}");
    let text = master
        .cli(&["hooks", "failures"])
        .output()
        .expect("run brine-master hooks failures");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.lines()
            .any(|line| line.contains("hangs") && line.contains("after 2 tries")),
        "{text}"
    );
    assert!(endpoint.posts_to("/failed-only").is_empty());

    // Counted for Prometheus, by hook; the URL's secret is in no log.
    let scraped = ureq::get(format!("http://{metrics}/metrics"))
        .call()
        .expect("scrape the master")
        .body_mut()
        .read_to_string()
        .expect("a text answer");
    for line in [
        r#"brine_hook_deliveries_total{hook="chat",status="delivered"} 1"#,
        r#"brine_hook_deliveries_total{hook="closed-port",status="failed"} 1"#,
        r#"brine_hook_deliveries_total{hook="hangs",status="failed"} 1"#,
    ] {
        assert!(scraped.contains(line), "{line} in:\n{scraped}");
    }
    let log = std::fs::read_to_string(master.log_path()).expect("the master's log");
    assert!(log.contains("hook delivery failed"), "{log}");
    assert!(!log.contains("SECRET-IN-QUERY"), "{log}");

    let repaired = wait_for("the repair's event", Duration::from_secs(30), || {
        let events = json_lines(
            &master,
            &["events", "--kind", "host_event", "--output", "json"],
        );
        events
            .into_iter()
            .find(|e| e["minion_id"] == id.as_str() && e["event"]["kind"] == "repaired")
            .ok_or_else(|| "no repair yet".to_owned())
    });
    assert!(
        repaired["event"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("web")),
        "{repaired}"
    );

    // The record outlives the master; a follower is told the master went away ("retry later").
    master.start_again();
    assert_eq!(follower.exit_code(), Some(3));
    let kept = json_lines(&master, &["hooks", "failures", "--output", "json"]);
    assert_eq!(kept.len(), 3, "{kept:#?}");
}
