//! [`Secret`]: a master secret, and its loaders (`env:`, `file:`, `generate:`,
//! `base64:`).

use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD};
use rand::RngCore;
use zeroize::Zeroizing;

use crate::error::KeyError;
use crate::files;

/// A master secret: at least [`Secret::MIN_LEN`] bytes that look random. Its bytes
/// are wiped from memory when it is dropped, and `Debug` shows only its length.
///
/// Load it from where production keeps secrets: an environment variable, a file
/// (a mounted Kubernetes secret), or a file created once on a persistent volume;
/// [`from_reference`](Secret::from_reference) takes the configuration file's
/// spelling of each.
///
/// ```
/// use tower_sealed_sessions::{KeyError, Secret};
///
/// let secret = Secret::from_base64("c2Vzc2lvbiBzZWNyZXQgb2YgbW9yZSB0aGFuIDMyIGJ5dGVz").unwrap();
/// assert_eq!(format!("{secret:?}"), "Secret(36 bytes)");
///
/// let dir = std::env::temp_dir().join(format!("tss-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let path = dir.join("session.key");
/// let created = Secret::from_reference(&format!("generate:{}", path.display())).unwrap();
/// let again = Secret::find_or_create(&path).unwrap();
/// assert_eq!(created.as_bytes(), again.as_bytes(), "created once, then reused");
/// # std::fs::remove_dir_all(&dir).unwrap();
///
/// assert!(matches!(Secret::from_bytes(*b"too short"), Err(KeyError::TooShort { len: 9, .. })));
/// ```
#[derive(Clone)]
pub struct Secret(Zeroizing<Vec<u8>>);

/// Standard or URL-safe alphabet, padded or not: whatever an operator pastes.
const LENIENT: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
const STANDARD_LENIENT: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::STANDARD, LENIENT);
const URL_SAFE_LENIENT: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::URL_SAFE, LENIENT);
/// Key files larger than this are not key files.
const MAX_FILE_LEN: u64 = 64 * 1024;

impl Secret {
    /// The shortest secret accepted, in bytes (256 bits).
    pub const MIN_LEN: usize = 32;

    /// A secret from its bytes.
    ///
    /// # Errors
    ///
    /// [`KeyError::TooShort`] under 32 bytes; [`KeyError::LowEntropy`] when the bytes
    /// are obviously not random: fewer than 8 distinct byte values, or a pattern of
    /// up to 16 bytes repeated.
    pub fn from_bytes(bytes: impl Into<Vec<u8>>) -> Result<Self, KeyError> {
        let bytes = Zeroizing::new(bytes.into());
        if bytes.len() < Self::MIN_LEN {
            return Err(KeyError::TooShort {
                len: bytes.len(),
                min: Self::MIN_LEN,
            });
        }
        if looks_low_entropy(&bytes) {
            return Err(KeyError::LowEntropy);
        }
        Ok(Secret(bytes))
    }

    /// 64 fresh random bytes.
    pub fn generate() -> Self {
        let mut bytes = Zeroizing::new(vec![0u8; 64]);
        rand::rng().fill_bytes(&mut bytes);
        Secret(bytes)
    }

    /// A secret from base64, standard or URL-safe, with or without padding;
    /// surrounding white space is ignored.
    ///
    /// # Errors
    ///
    /// [`KeyError::NotBase64`], or as [`Secret::from_bytes`] for what it decodes to.
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        Self::from_bytes(base64_bytes(text)?.to_vec())
    }

    /// The bytes of the environment variable `name`, as they are.
    ///
    /// # Errors
    ///
    /// [`KeyError::EnvNotSet`], or as [`Secret::from_bytes`].
    pub fn from_env(name: &str) -> Result<Self, KeyError> {
        Self::from_bytes(env_bytes(name)?.to_vec())
            .map_err(|e| e.context(format!("environment variable {name}")))
    }

    /// The bytes of the file at `path`, less one trailing newline: the form of a
    /// mounted Kubernetes secret or of a key file written by
    /// [`find_or_create`](Secret::find_or_create).
    ///
    /// Symbolic links are followed and the file's owner and mode are not checked:
    /// a Kubernetes secret is a link into `..data`, root's, mode 0644 by default.
    /// A file that other users can write (mode `o+w`, after following links) is
    /// still used, with a warning (target `tower_sealed_sessions`, once per path
    /// and process): whoever can replace it can forge every session.
    ///
    /// # Errors
    ///
    /// [`KeyError::Io`] when the file cannot be read, or as [`Secret::from_bytes`].
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, KeyError> {
        let path = path.as_ref();
        Self::from_bytes(file_bytes(path)?.to_vec())
            .map_err(|e| e.context(format!("file {}", path.display())))
    }

    /// The secret in the file at `path`; when there is none, a new random secret is
    /// written there first (mode 0600), so every later start reuses it.
    ///
    /// Safe when several processes start at once: the secret is written to a
    /// temporary file and then hard-linked into place, which fails if the name is
    /// taken, so a half-written key file is never seen and exactly one secret wins;
    /// the others read it.
    ///
    /// An existing file is trusted as OpenSSH's `StrictModes` trusts a key (on
    /// Unix; elsewhere it is read as it is): a key another local user planted
    /// would become the master secret, and with it they could forge and read
    /// every session. So it must be
    ///
    /// - a regular file, not a symbolic link (even to a good key: the link, or
    ///   the directory it points into, may be another user's);
    /// - owned by the process's effective user;
    /// - readable and writable by its owner alone (no group or other bit: mode
    ///   0600 or 0400);
    /// - in a directory other users cannot write, unless the directory is sticky
    ///   (`/tmp`), which stops them from removing or renaming our file. No new
    ///   key is created in such a directory either.
    ///
    /// These are checked on the opened file (`O_NOFOLLOW`, then `fstat`), not
    /// on its name, so the file cannot be swapped between the check and the
    /// read. A file that fails is refused with [`KeyError::Untrusted`], naming
    /// the path, the reason and the remedy; it is never replaced.
    ///
    /// # Errors
    ///
    /// [`KeyError::Untrusted`] as above; [`KeyError::Io`] when the directory does
    /// not exist or is not writable, or the file cannot be read; as
    /// [`Secret::from_bytes`] for an existing file.
    pub fn find_or_create(path: impl AsRef<Path>) -> Result<Self, KeyError> {
        let path = path.as_ref();
        match read_generated(path) {
            Err(KeyError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {}
            found => return found,
        }
        let generated = Secret::generate();
        let mut text = Zeroizing::new(URL_SAFE_NO_PAD.encode(generated.as_bytes()));
        text.push('\n');
        match publish(path, text.as_bytes()) {
            Ok(()) => {
                tracing::info!(
                    target: "tower_sealed_sessions",
                    path = %path.display(),
                    "generated a new session secret"
                );
                Self::from_bytes(trim_newline(text.as_bytes()).to_vec())
            }
            // Another process created it first: use theirs.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => read_generated(path),
            Err(source) => Err(KeyError::Io {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// A secret from a configuration reference:
    ///
    /// | reference | meaning |
    /// | --- | --- |
    /// | `env:NAME` | [`Secret::from_env`] |
    /// | `file:/path` | [`Secret::from_file`] |
    /// | `generate:/path` | [`Secret::find_or_create`] |
    /// | `base64:...` | [`Secret::from_base64`] |
    /// | anything else | the text itself, with a warning: for tests only |
    ///
    /// A value that starts like another reference (a word and a colon, for example
    /// `File:/path`) is refused rather than taken as the secret itself.
    ///
    /// # Errors
    ///
    /// Those of the loader the reference names; [`KeyError::UnknownReference`].
    pub fn from_reference(reference: &str) -> Result<Self, KeyError> {
        if let Some(name) = reference.strip_prefix("env:") {
            Self::from_env(name)
        } else if let Some(path) = reference.strip_prefix("file:") {
            Self::from_file(path)
        } else if let Some(path) = reference.strip_prefix("generate:") {
            Self::find_or_create(path)
        } else if let Some(text) = reference.strip_prefix("base64:") {
            Self::from_base64(text).map_err(|e| e.context("a base64: value".to_owned()))
        } else if let Some(scheme) = scheme_like(reference) {
            // `File:/path` or `ENV:NAME` must not silently become the secret itself.
            Err(KeyError::UnknownReference(scheme.to_owned()))
        } else {
            const WARNING: &str = "the session secret is written into the configuration: for \
                 testing only; use env:NAME, file:/path or generate:/path in production";
            tracing::warn!(target: "tower_sealed_sessions", "{WARNING}");
            // Also where it is seen without a tracing subscriber, once a process.
            static TOLD: std::sync::Once = std::sync::Once::new();
            TOLD.call_once(|| eprintln!("warning: {WARNING}"));
            Self::from_bytes(reference.as_bytes())
                .map_err(|e| e.context("an inline value".to_owned()))
        }
    }

    /// The secret's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

/// A credential that is not a key (a password): the bytes a reference names,
/// `env:NAME`, `file:/path` (less one trailing newline) or `base64:VALUE`; any other
/// text is the credential itself. Unlike [`Secret::from_reference`], no length or
/// randomness is asked of it, and an unknown `word:` is taken as it is, since
/// passwords may hold colons.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) fn credential(reference: &str) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    if let Some(name) = reference.strip_prefix("env:") {
        env_bytes(name)
    } else if let Some(path) = reference.strip_prefix("file:") {
        file_bytes(Path::new(path))
    } else if let Some(text) = reference.strip_prefix("base64:") {
        base64_bytes(text)
    } else {
        Ok(Zeroizing::new(reference.as_bytes().to_vec()))
    }
}

/// The bytes of the environment variable `name`.
fn env_bytes(name: &str) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let value = std::env::var_os(name).ok_or_else(|| KeyError::EnvNotSet(name.to_owned()))?;
    Ok(Zeroizing::new(value.into_encoded_bytes()))
}

/// The bytes of the file at `path` (a `file:` reference: links followed), less
/// one trailing newline; a warning, once, when other users can write it.
fn file_bytes(path: &Path) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let file = fs::File::open(path).map_err(|source| KeyError::Io {
        path: path.to_owned(),
        source,
    })?;
    if let Ok(meta) = file.metadata() {
        warn_if_others_can_write(path, files::mode(&meta));
    }
    read_key_file(path, file)
}

/// Warns, once per path and process, that the `file:` reference at `path`
/// (whose mode, after following links, is `mode`) can be rewritten by anyone.
fn warn_if_others_can_write(path: &Path, mode: u32) {
    if mode & 0o002 == 0 {
        return;
    }
    static WARNED: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
    let mut warned = WARNED.lock().unwrap_or_else(|e| e.into_inner());
    if warned.iter().any(|p| p == path) {
        return;
    }
    warned.push(path.to_owned());
    tracing::warn!(
        target: "tower_sealed_sessions",
        path = %path.display(),
        "file:{} is writable by others (mode {mode:04o}): any user of this host can replace \
         the secret it holds; chmod o-w it",
        path.display()
    );
}

/// The secret of the `generate:` key file at `path`, if it can be trusted (see
/// [`Secret::find_or_create`]).
fn read_generated(path: &Path) -> Result<Secret, KeyError> {
    let untrusted = |reason: String| KeyError::Untrusted {
        path: path.to_owned(),
        reason,
    };
    let io_err = |source| KeyError::Io {
        path: path.to_owned(),
        source,
    };
    // A missing directory is NotFound, as a missing file is: both are created.
    if let Some(reason) = files::open_directory(files::parent(path)).map_err(io_err)? {
        return Err(untrusted(reason));
    }
    let file = files::open_no_follow(path).map_err(|e| {
        if files::is_symlink_error(&e) {
            untrusted(
                "it is a symbolic link; a generated key is used only from a regular file \
                 (point generate: at the file itself, or use file: for a mounted secret)"
                    .to_owned(),
            )
        } else {
            io_err(e)
        }
    })?;
    // The opened file's metadata (fstat), not the path's: no swap in between.
    let meta = file.metadata().map_err(io_err)?;
    if let Some(reason) = files::foreign(&meta) {
        return Err(untrusted(reason));
    }
    let mode = files::mode(&meta);
    if mode & 0o077 != 0 {
        return Err(untrusted(format!(
            "the file is readable or writable by group or others (mode {mode:04o}); \
             chmod 600 it"
        )));
    }
    Secret::from_bytes(read_key_file(path, file)?.to_vec())
        .map_err(|e| e.context(format!("file {}", path.display())))
}

/// The bytes of the key file `file` (at `path`), less one trailing newline.
fn read_key_file(path: &Path, file: fs::File) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let io_err = |source| KeyError::Io {
        path: path.to_owned(),
        source,
    };
    let mut bytes = Zeroizing::new(Vec::new());
    file.take(MAX_FILE_LEN + 1)
        .read_to_end(&mut bytes)
        .map_err(io_err)?;
    if bytes.len() as u64 > MAX_FILE_LEN {
        return Err(io_err(io::Error::other(format!(
            "larger than {MAX_FILE_LEN} bytes, so not a key file"
        ))));
    }
    let len = trim_newline(&bytes).len();
    bytes.truncate(len);
    Ok(bytes)
}

/// Base64, standard or URL-safe, with or without padding; surrounding white space
/// is ignored.
fn base64_bytes(text: &str) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let text = text.trim();
    let engine = if text.contains(['-', '_']) {
        &URL_SAFE_LENIENT
    } else {
        &STANDARD_LENIENT
    };
    Ok(Zeroizing::new(
        engine.decode(text).map_err(KeyError::NotBase64)?,
    ))
}

/// The `word` of a value that starts with `word:`, as a mistyped reference would.
fn scheme_like(value: &str) -> Option<&str> {
    let (word, _) = value.split_once(':')?;
    let looks_like_scheme = !word.is_empty()
        && word.len() <= 16
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    looks_like_scheme.then_some(word)
}

fn trim_newline(bytes: &[u8]) -> &[u8] {
    let bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    bytes.strip_suffix(b"\r").unwrap_or(bytes)
}

fn looks_low_entropy(bytes: &[u8]) -> bool {
    let mut seen = [false; 256];
    for &b in bytes {
        seen[usize::from(b)] = true;
    }
    let distinct = seen.iter().filter(|&&s| s).count();
    // Callers refuse secrets under 32 bytes first, so every period up to 16 fits
    // twice.
    debug_assert!(bytes.len() >= Secret::MIN_LEN);
    let repeats = |period: usize| bytes[period..].iter().zip(bytes).all(|(a, b)| a == b);
    distinct < 8 || (1..=16).any(repeats)
}

/// Creates `path` holding `contents`, all or nothing: the file appears complete or
/// not at all, and an existing file is never replaced (`AlreadyExists`).
fn publish(path: &Path, contents: &[u8]) -> io::Result<()> {
    let (dir, tmp) = temp_beside(path)?;
    if !dir.exists() {
        // Missing directories are created, for the key's owner only.
        let mut dirs = fs::DirBuilder::new();
        dirs.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut dirs, 0o700);
        dirs.create(dir).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot create the directory {}: {e}", dir.display()),
            )
        })?;
    }
    let written = write_private(&tmp, contents).and_then(|()| fs::hard_link(&tmp, path));
    let _ = fs::remove_file(&tmp);
    written?;
    // Make the new name durable too (best effort: not every platform can open a
    // directory).
    if let Ok(dir) = fs::File::open(dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// The directory of the key at `path`, and a fresh temporary name in it: on the
/// same file system as the key, so that the hard link publishing it cannot fail
/// for crossing one, and no other directory (such as `$TMPDIR`) sees the secret.
fn temp_beside(path: &Path) -> io::Result<(&Path, PathBuf)> {
    let dir = files::parent(path);
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the key path names no file"))?;
    let tmp = dir.join(format!(
        ".{}.{}-{:016x}.tmp",
        name.to_string_lossy(),
        std::process::id(),
        rand::random::<u64>()
    ));
    Ok((dir, tmp))
}

fn write_private(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut file = files::create_private(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

#[cfg(test)]
mod tests;
