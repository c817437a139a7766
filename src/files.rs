//! Files that hold secrets (a `generate:` key, a SQLite database): created
//! exclusively for their owner, and checked before an existing one is trusted,
//! by the rules of OpenSSH's `StrictModes`.
//!
//! On Unix a file is trusted only if it is not a symbolic link, belongs to the
//! process's effective user and sits in a directory other users cannot write
//! (unless its sticky bit stops them from removing or renaming our files, as
//! `/tmp`'s does). Elsewhere nothing is checked (no owner, no mode bits).

use std::fs;
use std::io;
use std::path::Path;

/// Opens `path` for writing, creating it exclusively with mode 0600 and never
/// through a symbolic link: an existing name, a link included, is
/// `AlreadyExists` (the link's target is not touched).
pub(crate) fn create_private(path: &Path) -> io::Result<fs::File> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // create_new is O_EXCL, which already refuses a link; O_NOFOLLOW says
        // so again, for a platform whose O_EXCL might not.
        options.mode(0o600).custom_flags(no_follow());
    }
    options.open(path)
}

/// Opens `path` for reading without following a symbolic link in its last
/// component (`ELOOP` then, which [`is_symlink_error`] tells), and without
/// waiting on a FIFO planted in its place.
pub(crate) fn open_no_follow(path: &Path) -> io::Result<fs::File> {
    let mut options = fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // O_NONBLOCK changes nothing for a regular file; a FIFO would otherwise
        // block the open until someone writes to it.
        let non_block = rustix::fs::OFlags::NONBLOCK.bits() as i32;
        options.custom_flags(no_follow() | non_block);
    }
    options.open(path)
}

#[cfg(unix)]
fn no_follow() -> i32 {
    rustix::fs::OFlags::NOFOLLOW.bits() as i32
}

/// Whether `err`, from [`open_no_follow`], means the path is a symbolic link.
pub(crate) fn is_symlink_error(err: &io::Error) -> bool {
    #[cfg(unix)]
    {
        err.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error())
    }
    #[cfg(not(unix))]
    {
        let _ = err;
        false
    }
}

/// The directory `path` is in (`.` for a bare file name).
pub(crate) fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Why the file `meta` describes (the opened file's, never a second look at the
/// path) is not to be trusted as this process's: not a regular file, or
/// another user's. `None` when it is fine.
pub(crate) fn foreign(meta: &fs::Metadata) -> Option<String> {
    if !meta.is_file() {
        return Some("it is not a regular file".to_owned());
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let me = rustix::process::geteuid().as_raw();
        if meta.uid() != me {
            return Some(format!(
                "it belongs to uid {}, not to this process's user (uid {me}), so another \
                 user may have planted it; remove it, or if it is yours, chown it",
                meta.uid()
            ));
        }
    }
    None
}

/// The permission bits of `meta` (`0` where there are none to read).
pub(crate) fn mode(meta: &fs::Metadata) -> u32 {
    #[cfg(unix)]
    {
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        0
    }
}

/// Why the directory `dir` lets other users replace the files in it: it is
/// writable by others and not sticky. `None` when it does not; an error when it
/// cannot be looked at (`NotFound` for a missing one).
pub(crate) fn open_directory(dir: &Path) -> io::Result<Option<String>> {
    let mode = mode(&fs::metadata(dir)?);
    Ok((mode & 0o002 != 0 && mode & 0o1000 == 0).then(|| {
        format!(
            "its directory {} is writable by others (mode {mode:04o}) without the sticky \
             bit, so another user can replace the file; chmod o-w (or +t) the directory",
            dir.display()
        )
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_file_name_is_in_the_current_directory() {
        assert_eq!(parent(Path::new("k")), Path::new("."));
        assert_eq!(parent(Path::new("/var/lib/k")), Path::new("/var/lib"));
    }

    #[cfg(unix)]
    #[test]
    fn create_private_never_writes_through_a_link() {
        let dir = std::env::temp_dir().join(format!("tss-files-{:016x}", rand::random::<u64>()));
        fs::create_dir_all(&dir).unwrap();
        let target = dir.join("target");
        let link = dir.join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = create_private(&link).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert!(!target.exists(), "the dangling link was not followed");
        let err = open_no_follow(&link).unwrap_err();
        assert!(is_symlink_error(&err), "{err}");
        drop(create_private(&target).unwrap());
        assert_eq!(mode(&fs::metadata(&target).unwrap()) & 0o777, 0o600);
        fs::remove_dir_all(dir).unwrap();
    }
}
