//! Files written so that a reader, a crash or another user never sees what it should not: with
//! their mode from the start (a key is never readable by others, not even for a moment),
//! flushed to disk, replaced atomically, and owned by whoever owns their directory.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;

/// Writes a file that must not exist yet.
pub fn write_new(path: &Path, contents: &str, mode: u32) -> anyhow::Result<()> {
    write(
        path,
        contents,
        mode,
        fs::OpenOptions::new().create_new(true),
    )
}

/// Writes a file, replacing any leftover in place (use [`replace`] where a reader may look).
pub fn write_synced(path: &Path, contents: &str, mode: u32) -> anyhow::Result<()> {
    write(
        path,
        contents,
        mode,
        fs::OpenOptions::new().create(true).truncate(true),
    )
}

fn write(
    path: &Path,
    contents: &str,
    mode: u32,
    options: &mut fs::OpenOptions,
) -> anyhow::Result<()> {
    let mut file = options
        .write(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("create {}", path.display()))?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("write {}", path.display()))?;
    adopt_directory_owner(path)
}

/// Replaces `path` atomically: the new contents are written and flushed beside it (as
/// [`next_path`]) with `mode`, then renamed over it, so a reader sees the old file or the new
/// one, never a mix.
pub fn replace(path: &Path, contents: &str, mode: u32) -> anyhow::Result<()> {
    let next = next_path(path);
    write_synced(&next, contents, mode)?;
    rename_synced(&next, path)
}

/// Where [`replace`] writes the new contents of `path` before moving them into place.
pub fn next_path(path: &Path) -> PathBuf {
    let mut next = path.as_os_str().to_owned();
    next.push(".next");
    PathBuf::from(next)
}

/// Renames `from` to `to` and flushes the directory, so the rename survives a power cut.
pub fn rename_synced(from: &Path, to: &Path) -> anyhow::Result<()> {
    fs::rename(from, to).with_context(|| format!("move {} to {}", from.display(), to.display()))?;
    if let Some(dir) = to.parent() {
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("sync {}", dir.display()))?;
    }
    Ok(())
}

/// Gives a file the owner and group of its directory. A daemon that runs as its own user owns
/// its data directory; an operator running a command there as root (renewing a certificate,
/// say) must not leave behind a file the daemon cannot read.
fn adopt_directory_owner(path: &Path) -> anyhow::Result<()> {
    let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return Ok(());
    };
    let dir_meta = fs::metadata(dir).with_context(|| format!("read {}", dir.display()))?;
    let file_meta = fs::metadata(path).with_context(|| format!("read {}", path.display()))?;
    if (file_meta.uid(), file_meta.gid()) == (dir_meta.uid(), dir_meta.gid()) {
        return Ok(());
    }
    std::os::unix::fs::chown(path, Some(dir_meta.uid()), Some(dir_meta.gid())).with_context(|| {
        format!(
            "give {} to the owner of {} (uid {}, gid {})",
            path.display(),
            dir.display(),
            dir_meta.uid(),
            dir_meta.gid()
        )
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_new_file_has_its_mode_and_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        write_new(&path, "secret", 0o600).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let err = write_new(&path, "other", 0o600).unwrap_err();
        assert!(err.to_string().contains("create"), "{err}");
        assert_eq!(fs::read_to_string(&path).unwrap(), "secret");
    }

    #[test]
    fn replace_leaves_no_next_file_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        replace(&path, "one", 0o644).unwrap();
        replace(&path, "two", 0o644).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "two");
        assert!(!next_path(&path).exists());
    }

    #[test]
    fn files_take_their_directory_owner() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        write_synced(&path, "x", 0o600).unwrap();
        let (file, dir_meta) = (
            fs::metadata(&path).unwrap(),
            fs::metadata(dir.path()).unwrap(),
        );
        assert_eq!((file.uid(), file.gid()), (dir_meta.uid(), dir_meta.gid()));
        if file.uid() == 0 {
            // As root (the way an operator runs the CLI on the master host), a file written
            // into a directory owned by the daemon's user goes to that user.
            let nobody = 65534;
            std::os::unix::fs::chown(dir.path(), Some(nobody), Some(nobody)).unwrap();
            let path = dir.path().join("g");
            write_new(&path, "y", 0o600).unwrap();
            let file = fs::metadata(&path).unwrap();
            assert_eq!((file.uid(), file.gid()), (nobody, nobody));
        }
    }
}
