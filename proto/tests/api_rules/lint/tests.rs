//! Each rule against a small proto file: one that keeps every rule, and variants of it that
//! break one rule each.

use super::{Violation, lint, upper_snake_case};
use crate::compile;

/// Keeps every rule, with the elements the rules skip: a map field (its entry message) and a
/// proto3 `optional` field (its synthetic oneof).
const GOOD: &str = r#"// A file that keeps every rule.
syntax = "proto3";

package brine.v1;

import "google/protobuf/duration.proto";
import "google/protobuf/timestamp.proto";

option csharp_namespace = "Brine.V1";
option go_package = "example.invalid/brine/v1;brinev1";
option java_multiple_files = true;
option java_package = "invalid.example.brine.v1";

// Runs jobs.
service JobService {
  // Starts a job.
  rpc StartJob(StartJobRequest) returns (StartJobResponse);
  // Follows a job.
  rpc WatchJob(WatchJobRequest) returns (stream WatchJobResponse);
}

// What to start.
message StartJobRequest {
  // The job's name.
  string name = 1;
  // How long the job may take.
  google.protobuf.Duration timeout = 2;
  // Labels of the job.
  map<string, string> labels = 3;
  // How often to retry, when set.
  optional uint32 retries = 4;
  // Where to run.
  oneof target {
    // One host.
    string minion_id = 5;
    // Every host with this label.
    string label = 6;
  }
  // A stage of the job.
  message Stage {
    // What the stage runs.
    string command = 1;
  }
  // The stages, in order.
  repeated Stage stages = 7;
}

// The started job.
message StartJobResponse {
  // When it started.
  google.protobuf.Timestamp started_at = 1;
  // Its first state.
  JobState state = 2;
}

// Which job to follow.
message WatchJobRequest {
  // The job's id.
  string job_id = 1;
}

// Progress of a job.
message WatchJobResponse {
  // Its state now.
  JobState current = 1;
  // How a stage ended.
  enum StageOutcome {
    // Not known yet.
    STAGE_OUTCOME_UNSPECIFIED = 0;
    // The stage succeeded.
    STAGE_OUTCOME_SUCCEEDED = 1;
  }
  // How the last stage ended.
  StageOutcome outcome = 2;
}

// Where a job is.
enum JobState {
  // Not known.
  JOB_STATE_UNSPECIFIED = 0;
  // Running.
  JOB_STATE_RUNNING = 1;
}
"#;

/// `GOOD` with each `(from, to)` applied; every `from` must occur, so that a test cannot pass
/// by changing nothing.
fn variant(edits: &[(&str, &str)]) -> String {
    let mut source = GOOD.to_owned();
    for (from, to) in edits {
        assert!(source.contains(from), "the good file has no `{from}`");
        source = source.replace(from, to);
    }
    source
}

/// Compiles `source` as `file` (a path under a temporary include root) and lints it.
fn lint_file(file: &str, source: &str) -> Vec<Violation> {
    let root = tempfile::tempdir().expect("a temporary directory");
    let path = root.path().join(file);
    let dir = path.parent().expect("the file is in a directory");
    std::fs::create_dir_all(dir).expect("creating the file's directory");
    std::fs::write(&path, source).expect("writing the proto file");
    lint(&compile(root.path(), &[path], true))
}

fn lint_source(source: &str) -> Vec<Violation> {
    lint_file("brine/v1/snippet.proto", source)
}

/// Asserts that one of `violations` is about `element` and says `words`; returns it.
fn assert_reported<'a>(violations: &'a [Violation], element: &str, words: &str) -> &'a Violation {
    violations
        .iter()
        .find(|violation| violation.element == element && violation.problem.contains(words))
        .unwrap_or_else(|| {
            panic!("no violation of {element} saying `{words}` among {violations:#?}")
        })
}

/// The 1-based number of the first line of `source` that contains `text`.
fn line_of(source: &str, text: &str) -> u32 {
    let index = source
        .lines()
        .position(|line| line.contains(text))
        .unwrap_or_else(|| panic!("no line with `{text}`"));
    u32::try_from(index + 1).expect("a short file")
}

#[test]
fn a_file_that_keeps_every_rule_has_no_violations() {
    assert_eq!(lint_source(GOOD), []);
}

#[test]
fn a_violation_names_the_file_and_the_line() {
    let source = variant(&[("service JobService", "service Jobs")]);
    let violations = lint_source(&source);
    let violation = assert_reported(&violations, "brine.v1.Jobs", "end in `Service`");
    assert_eq!(violation.file, "brine/v1/snippet.proto");
    assert_eq!(violation.line, line_of(&source, "service Jobs"));
    assert_eq!(
        violation.to_string(),
        format!(
            "brine/v1/snippet.proto:{}: brine.v1.Jobs: a service name must end in `Service`",
            violation.line
        )
    );
}

#[test]
fn the_package_and_the_directory_must_be_brine_v1() {
    let violations = lint_source(&variant(&[("package brine.v1;", "package brine.v2;")]));
    assert_reported(&violations, "brine.v2", "must be `brine.v1`");

    let violations = lint_file("brine/snippet.proto", GOOD);
    assert_reported(&violations, "brine.v1", "directory `brine/v1/`");
}

#[test]
fn every_file_sets_the_other_languages_package_options() {
    for (option_line, option) in [
        ("option go_package", "go_package"),
        ("option java_package", "java_package"),
        ("option csharp_namespace", "csharp_namespace"),
        ("option java_multiple_files", "java_multiple_files = true"),
    ] {
        let line = GOOD
            .lines()
            .find(|line| line.starts_with(option_line))
            .expect("the good file sets the option");
        let violations = lint_source(&variant(&[(line, "")]));
        assert_reported(&violations, "brine.v1", &format!("`{option}` is not set"));
    }
    let violations = lint_source(&variant(&[(
        "java_multiple_files = true",
        "java_multiple_files = false",
    )]));
    assert_reported(
        &violations,
        "brine.v1",
        "`java_multiple_files = true` is not set",
    );
}

#[test]
fn names_have_their_kinds_case() {
    let cases = [
        (
            "service JobService",
            "service Job_Service",
            "brine.v1.Job_Service",
            "PascalCase",
        ),
        (
            "rpc WatchJob(",
            "rpc watchJob(",
            "brine.v1.JobService.watchJob",
            "PascalCase",
        ),
        (
            "Stage ",
            "stage_kind ",
            "brine.v1.StartJobRequest.stage_kind",
            "PascalCase",
        ),
        (
            "JobState ",
            "Job_state ",
            "brine.v1.Job_state",
            "PascalCase",
        ),
        (
            "string name",
            "string jobName",
            "brine.v1.StartJobRequest.jobName",
            "lower_snake_case",
        ),
        (
            "oneof target",
            "oneof Target",
            "brine.v1.StartJobRequest.Target",
            "lower_snake_case",
        ),
        (
            "JOB_STATE_RUNNING",
            "JOB_STATE_running",
            "brine.v1.JobState.JOB_STATE_running",
            "UPPER_SNAKE_CASE",
        ),
    ];
    for (from, to, element, words) in cases {
        assert_reported(&lint_source(&variant(&[(from, to)])), element, words);
    }
}

#[test]
fn an_rpc_has_its_own_request_and_response_named_after_it() {
    let renamed = variant(&[("rpc StartJob(", "rpc BeginJob(")]);
    let violations = lint_source(&renamed);
    let rpc = "brine.v1.JobService.BeginJob";
    assert_reported(&violations, rpc, "must be brine.v1.BeginJobRequest");
    assert_reported(&violations, rpc, "must be brine.v1.BeginJobResponse");

    let shared = variant(&[("WatchJob(WatchJobRequest)", "WatchJob(StartJobRequest)")]);
    let violations = lint_source(&shared);
    assert_reported(
        &violations,
        "brine.v1.JobService.StartJob",
        "is also the request of brine.v1.JobService.WatchJob",
    );
    assert_reported(
        &violations,
        "brine.v1.JobService.WatchJob",
        "is also the request of brine.v1.JobService.StartJob",
    );

    let as_field = variant(&[(
        "  StageOutcome outcome = 2;",
        "  StageOutcome outcome = 2;\n  // The start.\n  StartJobResponse start = 3;",
    )]);
    assert_reported(
        &lint_source(&as_field),
        "brine.v1.WatchJobResponse.start",
        "is the response of brine.v1.JobService.StartJob",
    );
}

#[test]
fn an_rpc_type_comes_from_the_api_package() {
    let source = variant(&[
        (
            "import \"google/protobuf/duration.proto\";",
            "import \"google/protobuf/duration.proto\";\nimport \"google/protobuf/empty.proto\";",
        ),
        (
            "rpc StartJob(StartJobRequest)",
            "rpc StartJob(google.protobuf.Empty)",
        ),
    ]);
    assert_reported(
        &lint_source(&source),
        "brine.v1.JobService.StartJob",
        "request type is google.protobuf.Empty, it must be brine.v1.StartJobRequest",
    );
}

#[test]
fn enum_values_start_with_their_enums_name_and_zero_is_unspecified() {
    let violations = lint_source(&variant(&[("JOB_STATE_RUNNING", "RUNNING")]));
    assert_reported(&violations, "brine.v1.JobState.RUNNING", "`JOB_STATE_`");

    let violations = lint_source(&variant(&[("STAGE_OUTCOME_SUCCEEDED", "SUCCEEDED")]));
    let nested = "brine.v1.WatchJobResponse.StageOutcome.SUCCEEDED";
    assert_reported(&violations, nested, "`STAGE_OUTCOME_`");

    let violations = lint_source(&variant(&[("JOB_STATE_UNSPECIFIED", "JOB_STATE_UNKNOWN")]));
    let zero = "brine.v1.JobState.JOB_STATE_UNKNOWN";
    assert_reported(&violations, zero, "must be named `JOB_STATE_UNSPECIFIED`");
}

#[test]
fn a_field_is_not_named_id() {
    let violations = lint_source(&variant(&[("string job_id", "string id")]));
    assert_reported(
        &violations,
        "brine.v1.WatchJobRequest.id",
        "what it identifies",
    );
}

#[test]
fn times_and_durations_are_not_integers() {
    for ending in ["_ms", "_unix_ms", "_seconds", "_secs", "_at"] {
        for integer in ["int64", "uint32", "fixed64"] {
            let field = format!("{integer} stopped{ending} = 9;");
            let source = variant(&[(
                "  repeated Stage stages = 7;",
                &format!("  repeated Stage stages = 7;\n  // When it stopped.\n  {field}"),
            )]);
            let element = format!("brine.v1.StartJobRequest.stopped{ending}");
            assert_reported(&lint_source(&source), &element, ending);
        }
    }
}

#[test]
fn every_element_has_a_leading_comment() {
    let cases = [
        ("// Runs jobs.\n", "brine.v1.JobService"),
        ("  // Starts a job.\n", "brine.v1.JobService.StartJob"),
        ("// What to start.\n", "brine.v1.StartJobRequest"),
        ("  // The job's name.\n", "brine.v1.StartJobRequest.name"),
        ("  // Where to run.\n", "brine.v1.StartJobRequest.target"),
        ("    // One host.\n", "brine.v1.StartJobRequest.minion_id"),
        (
            "  // A stage of the job.\n",
            "brine.v1.StartJobRequest.Stage",
        ),
        (
            "    // What the stage runs.\n",
            "brine.v1.StartJobRequest.Stage.command",
        ),
        (
            "  // How a stage ended.\n",
            "brine.v1.WatchJobResponse.StageOutcome",
        ),
        (
            "    // The stage succeeded.\n",
            "brine.v1.WatchJobResponse.StageOutcome.STAGE_OUTCOME_SUCCEEDED",
        ),
        ("// Where a job is.\n", "brine.v1.JobState"),
        ("  // Running.\n", "brine.v1.JobState.JOB_STATE_RUNNING"),
    ];
    for (comment, element) in cases {
        let violations = lint_source(&variant(&[(comment, "")]));
        assert_reported(&violations, element, "no leading comment");
        assert_eq!(violations.len(), 1, "{violations:#?}");
    }
    // A comment after the element is not its documentation.
    let trailing = variant(&[
        ("  // The job's name.\n", ""),
        ("string name = 1;", "string name = 1; // The job's name."),
    ]);
    let violations = lint_source(&trailing);
    assert_reported(
        &violations,
        "brine.v1.StartJobRequest.name",
        "no leading comment",
    );
}

#[test]
fn enum_names_become_upper_snake_case_prefixes() {
    assert_eq!(upper_snake_case("HostEventKind"), "HOST_EVENT_KIND");
    assert_eq!(upper_snake_case("HTTPStatus"), "HTTP_STATUS");
    assert_eq!(upper_snake_case("Ipv4Kind"), "IPV4_KIND");
    assert_eq!(upper_snake_case("State"), "STATE");
}
