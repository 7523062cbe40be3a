//! Checks over the gRPC API's protobuf descriptors, compiled from every `*.proto` of
//! `proto/brine/v1/`:
//! - naming and documentation rules in the manner of `buf lint`'s defaults (`lint`);
//! - wire compatibility with the released API (`compat`), whose descriptor set is committed as
//!   `released/brine.v1.binpb`. `scripts/release-api.sh` writes that file, through
//!   `write_the_released_api_when_asked`, when a version of the API is released.

// The crate root's modules would be looked up beside it, in `tests/`, where cargo takes every
// file for a test binary of its own.
#[path = "api_rules/compat.rs"]
mod compat;
#[path = "api_rules/lint.rs"]
mod lint;

use std::path::{Path, PathBuf};

use prost::Message;
use prost_types::FileDescriptorSet;

/// The API's files, relative to `proto_root()`; also their package's directory.
const API_DIR: &str = "brine/v1";
/// The released API's descriptor set, relative to the crate.
const RELEASED_API: &str = "released/brine.v1.binpb";
/// Set to `1` (by `scripts/release-api.sh`) to have `write_the_released_api_when_asked` write
/// `RELEASED_API`.
const WRITE_RELEASED_API: &str = "BRINE_WRITE_RELEASED_API";

/// The include root of the proto files: imports and file names are relative to it.
fn proto_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("proto")
}

fn released_api_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(RELEASED_API)
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
/// and line numbers the naming rules need; the released API is kept without it, so that the
/// committed file changes only when the API does.
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

#[test]
fn the_api_is_wire_compatible_with_the_released_one() {
    let path = released_api_path();
    let encoded = std::fs::read(&path).unwrap_or_else(|err| {
        panic!(
            "cannot read the released API {} ({err}): create it with scripts/release-api.sh \
             (run it when a version of the API is released) and commit it",
            path.display()
        )
    });
    let released = FileDescriptorSet::decode(encoded.as_slice())
        .unwrap_or_else(|err| panic!("{}: not a FileDescriptorSet: {err}", path.display()));
    let changes = compat::breaking_changes(&released, &compile_the_api(false));
    assert!(
        changes.is_empty(),
        "{} changes break wire compatibility with the released API ({}):\n{}",
        changes.len(),
        path.display(),
        changes.join("\n")
    );
}

/// Writes the released API's descriptor set when `BRINE_WRITE_RELEASED_API=1`
/// (`scripts/release-api.sh`); does nothing otherwise, so that running the suite never changes
/// the committed file.
#[test]
fn write_the_released_api_when_asked() {
    if std::env::var_os(WRITE_RELEASED_API).is_none_or(|value| value != "1") {
        return;
    }
    let path = released_api_path();
    let dir = path
        .parent()
        .expect("the released API's path has a directory");
    std::fs::create_dir_all(dir).unwrap_or_else(|err| panic!("{}: {err}", dir.display()));
    let encoded = compile_the_api(false).encode_to_vec();
    std::fs::write(&path, encoded).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    println!("wrote the released API to {}", path.display());
}
