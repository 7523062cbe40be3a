//! Checks over the gRPC API's protobuf descriptors, compiled from every `*.proto` of
//! `proto/brine/v1/`: naming and documentation rules in the manner of `buf lint`'s defaults
//! (`lint`).

// The crate root's modules would be looked up beside it, in `tests/`, where cargo takes every
// file for a test binary of its own.
#[path = "api_rules/lint.rs"]
mod lint;

use std::path::{Path, PathBuf};

use prost_types::FileDescriptorSet;

/// The API's files, relative to `proto_root()`; also their package's directory.
const API_DIR: &str = "brine/v1";

/// The include root of the proto files: imports and file names are relative to it.
fn proto_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("proto")
}

/// Every `*.proto` file of `dir`, sorted so that compiling them gives the same set every time.
fn proto_files_in(dir: &Path) -> Vec<PathBuf> {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|err| panic!("{}: {err}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("a readable proto directory").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "proto"))
        .collect();
    files.sort();
    files
}

/// Compiles `files`, which lie under the include root `root`. Source info carries the comments
/// and line numbers the naming rules need.
fn compile(root: &Path, files: &[PathBuf], with_source_info: bool) -> FileDescriptorSet {
    let mut compiler = protox::Compiler::new([root])
        .unwrap_or_else(|err| panic!("include root {}: {err}", root.display()));
    compiler.include_source_info(with_source_info);
    compiler
        .open_files(files)
        .unwrap_or_else(|err| panic!("compiling {files:?}: {err:?}"));
    compiler.file_descriptor_set()
}

/// The current API, compiled from the proto files in the source tree.
fn compile_the_api(with_source_info: bool) -> FileDescriptorSet {
    let root = proto_root();
    compile(
        &root,
        &proto_files_in(&root.join(API_DIR)),
        with_source_info,
    )
}

#[test]
fn the_api_follows_the_naming_rules() {
    let violations = lint::lint(&compile_the_api(true));
    let listing: Vec<String> = violations.iter().map(ToString::to_string).collect();
    assert!(
        violations.is_empty(),
        "{} violations of the API's naming and documentation rules:\n{}",
        violations.len(),
        listing.join("\n")
    );
}
