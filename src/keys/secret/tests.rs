//! Unit tests of secrets: references and their schemes, key files (generated, reused, refused), credentials.

use super::*;
use crate::keys::Keys;
use std::path::PathBuf;
use std::sync::Arc;

/// 32 distinct bytes: passes the entropy check.
fn secret(seed: u8) -> Vec<u8> {
    (0..32u8)
        .map(|i| i.wrapping_mul(7).wrapping_add(seed))
        .collect()
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tss-{tag}-{:016x}", rand::random::<u64>()));
    fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn short_secret_is_refused_with_a_clear_error() {
    let err = Keys::from_secret(&secret(1)[..31]).unwrap_err();
    assert!(matches!(err, KeyError::TooShort { len: 31, min: 32 }));
    assert!(err.to_string().contains("at least 32 random bytes"));
    assert!(err.to_string().contains("cargo run --example keygen"));
    assert!(Keys::from_secret(&secret(1)).is_ok());
}

#[test]
fn obviously_low_entropy_secrets_are_refused() {
    let repeated = b"passwordpasswordpasswordpassword".to_vec();
    let pattern = b"0123456789abcdef0123456789abcdef".to_vec();
    let few = b"aabbccddaabbccddabcdabcdddccbbaaab".to_vec();
    for bad in [vec![0u8; 64], vec![7u8; 32], repeated, pattern, few] {
        let err = Secret::from_bytes(bad.clone()).unwrap_err();
        assert!(matches!(err, KeyError::LowEntropy), "{bad:?}");
        assert!(err.to_string().contains("not random"));
    }
    for _ in 0..1000 {
        assert!(Secret::from_bytes(rand::random::<[u8; 32]>().to_vec()).is_ok());
    }
    let typed = b"N6Bo031RtSYWKdOhOlSFDD2IuzS4XKxouUaXuOCqOdNJfzyE5alOolj6wTjMn3RH";
    assert!(
        Secret::from_bytes(typed.to_vec()).is_ok(),
        "an alphanumeric key is fine"
    );
}

#[test]
fn base64_in_both_alphabets_with_or_without_padding() {
    let bytes: Vec<u8> = (0..48u8)
        .map(|i| i.wrapping_mul(37).wrapping_add(250))
        .collect();
    let std_padded = base64::engine::general_purpose::STANDARD.encode(&bytes);
    let url_bare = URL_SAFE_NO_PAD.encode(&bytes);
    assert!(std_padded.contains(['+', '/']) && url_bare.contains(['-', '_']));
    for text in [std_padded.clone(), url_bare, format!("  {std_padded}\n")] {
        assert_eq!(
            Secret::from_base64(&text).unwrap().as_bytes(),
            &bytes[..],
            "{text}"
        );
    }
    let err = Secret::from_base64("not base64 at all!").unwrap_err();
    assert!(matches!(err, KeyError::NotBase64(_)));
    assert!(
        std::error::Error::source(&err).is_some(),
        "the decoder's error is kept"
    );
    let short = Secret::from_base64("c2hvcnQ=").unwrap_err();
    assert!(matches!(short, KeyError::TooShort { len: 5, .. }));
}

#[test]
fn file_is_read_with_one_trailing_newline_trimmed() {
    let dir = temp_dir("file");
    let path = dir.join("key");
    let body: Vec<u8> = secret(9);
    for suffix in [&b""[..], b"\n", b"\r\n"] {
        fs::write(&path, [&body[..], suffix].concat()).unwrap();
        assert_eq!(Secret::from_file(&path).unwrap().as_bytes(), &body[..]);
    }
    fs::write(&path, b"short\n").unwrap();
    let err = Secret::from_file(&path).unwrap_err().to_string();
    assert!(
        err.contains("5 bytes long") && err.contains(&path.display().to_string()),
        "{err}"
    );
    let missing = Secret::from_file(dir.join("nope")).unwrap_err();
    assert!(
        matches!(&missing, KeyError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    );
    fs::write(&path, vec![b'x'; 70_000]).unwrap();
    assert!(
        Secret::from_file(&path)
            .unwrap_err()
            .to_string()
            .contains("not a key file")
    );
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn find_or_create_writes_once_with_mode_0600_and_reuses_it() {
    let dir = temp_dir("generate");
    let path = dir.join("session.key");
    let first = Secret::find_or_create(&path).unwrap();
    let written = fs::read(&path).unwrap();
    assert!(written.ends_with(b"\n"));
    assert_eq!(&written[..written.len() - 1], first.as_bytes());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let again = Secret::find_or_create(&path).unwrap();
    assert_eq!(
        again.as_bytes(),
        first.as_bytes(),
        "reused, not regenerated"
    );
    assert_eq!(
        fs::read_dir(&dir).unwrap().count(),
        1,
        "no temporary file left behind"
    );

    // A missing directory is created (mode 0700) with the key.
    let nested = Secret::find_or_create(dir.join("no-such-dir/key")).unwrap();
    assert_eq!(nested.as_bytes().len(), first.as_bytes().len());
    fs::remove_dir_all(dir.join("no-such-dir")).unwrap();
    // A key file that cannot be written says why: here its temporary file's
    // name is too long (not "not found", which a second read would say).
    let err = Secret::find_or_create(dir.join("k".repeat(240))).unwrap_err();
    assert!(
        matches!(&err, KeyError::Io { source, .. } if source.kind() != io::ErrorKind::NotFound),
        "{err}"
    );
    fs::write(dir.join("bad.key"), b"").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dir.join("bad.key"), fs::Permissions::from_mode(0o600)).unwrap();
    }
    let err = Secret::find_or_create(dir.join("bad.key")).unwrap_err();
    assert!(
        err.to_string().contains("0 bytes long"),
        "an existing bad file is not replaced"
    );
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn find_or_create_racing_threads_agree_on_one_secret() {
    let dir = temp_dir("race");
    let path = dir.join("session.key");
    let barrier = Arc::new(std::sync::Barrier::new(8));
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let (path, barrier) = (path.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                Secret::find_or_create(&path).unwrap().as_bytes().to_vec()
            })
        })
        .collect();
    let secrets: Vec<Vec<u8>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(
        secrets.windows(2).all(|w| w[0] == w[1]),
        "every starter uses the same secret"
    );
    assert_eq!(
        fs::read_dir(&dir).unwrap().count(),
        1,
        "one key file, no leftovers"
    );
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn references_pick_their_loader() {
    let dir = temp_dir("refs");
    let path = dir.join("k");
    fs::write(&path, secret(3)).unwrap();
    let from_file = Secret::from_reference(&format!("file:{}", path.display())).unwrap();
    assert_eq!(from_file.as_bytes(), &secret(3)[..]);
    let generated = dir.join("g");
    let made = Secret::from_reference(&format!("generate:{}", generated.display())).unwrap();
    assert!(generated.exists() && made.as_bytes().len() == 86);
    let b64 = format!("base64:{}", URL_SAFE_NO_PAD.encode(secret(4)));
    assert_eq!(
        Secret::from_reference(&b64).unwrap().as_bytes(),
        &secret(4)[..]
    );
    let err = Secret::from_reference("base64:!!!").unwrap_err();
    assert!(matches!(err, KeyError::Context { .. }) && err.to_string().contains("base64"));
    for typo in [
        "File:/run/secrets/key",
        "ENV:SESSION_SECRET_PRODUCTION_1",
        "secret:abc",
    ] {
        let err = Secret::from_reference(typo).unwrap_err();
        assert!(
            matches!(err, KeyError::UnknownReference(_)),
            "{typo}: {err}"
        );
        assert!(
            err.to_string().contains("is not a secret reference"),
            "{err}"
        );
    }
    let inline = "an inline secret, for tests only, 0123456789";
    assert_eq!(
        Secret::from_reference(inline).unwrap().as_bytes(),
        inline.as_bytes()
    );
    let unset = Secret::from_reference("env:TSS_TEST_NEVER_SET").unwrap_err();
    assert!(matches!(unset, KeyError::EnvNotSet(name) if name == "TSS_TEST_NEVER_SET"));
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_scheme_with_dashes_or_underscores_is_refused_not_taken_as_the_secret() {
    for (typo, word) in [
        ("my_env:SESSION_SECRET_PRODUCTION_01", "my_env"),
        ("my-file:/run/secrets/session-key-0123", "my-file"),
        ("a_b-c9:0123456789abcdefghijklmnopqrstuv", "a_b-c9"),
        (
            "abcdefghijklmnop:0123456789abcdefghijklmnopqrstuv",
            "abcdefghijklmnop",
        ),
    ] {
        match Secret::from_reference(typo) {
            Err(KeyError::UnknownReference(scheme)) => assert_eq!(scheme, word),
            other => panic!("{typo}: {other:?}"),
        }
    }
    // Not a scheme: a word of 17 characters, an empty word, other characters.
    for inline in [
        "abcdefghijklmnopq:0123456789abcdefghijklmnop",
        ":0123456789abcdefghijklmnopqrstuvwxyz",
        "p@ss:0123456789abcdefghijklmnopqrstuvwxyz",
        "no colon 0123456789abcdefghijklmnopqrstuvwxyz",
    ] {
        let secret = Secret::from_reference(inline).unwrap();
        assert_eq!(secret.as_bytes(), inline.as_bytes(), "{inline}");
    }
}

#[test]
fn the_entropy_rule_at_its_boundaries() {
    // Eight distinct byte values pass; seven do not.
    let eight = b"abcdefghhgfedcbaacegbdfhhfdbgeca";
    let seven = b"abcdefgaagfedcbaacegbdfaafdbgeca";
    assert!(Secret::from_bytes(eight.to_vec()).is_ok());
    assert!(matches!(
        Secret::from_bytes(seven.to_vec()),
        Err(KeyError::LowEntropy)
    ));
    // A 16-byte pattern twice is refused, at exactly 32 bytes and beyond; a
    // 17-byte pattern is not looked for.
    let block: Vec<u8> = (0..17u8)
        .map(|i| i.wrapping_mul(29).wrapping_add(3))
        .collect();
    let twice = |len: usize| -> Vec<u8> { block.iter().cycle().take(len).copied().collect() };
    let period_16: Vec<u8> = block[..16].iter().cycle().take(32).copied().collect();
    assert!(matches!(
        Secret::from_bytes(period_16),
        Err(KeyError::LowEntropy)
    ));
    let period_16_plus: Vec<u8> = block[..16].iter().cycle().take(40).copied().collect();
    assert!(matches!(
        Secret::from_bytes(period_16_plus),
        Err(KeyError::LowEntropy)
    ));
    assert!(Secret::from_bytes(twice(34)).is_ok());
    // Length: 32 bytes pass, 31 do not.
    assert!(Secret::from_bytes(secret(1)).is_ok());
    assert!(matches!(
        Secret::from_bytes(secret(1)[..31].to_vec()),
        Err(KeyError::TooShort { len: 31, min: 32 })
    ));
}

#[test]
fn a_key_file_may_hold_64_kib_and_no_more() {
    let dir = temp_dir("size");
    let path = dir.join("key");
    let mut body: Vec<u8> = (0..MAX_FILE_LEN).map(|i| (i * 131 % 251) as u8).collect();
    fs::write(&path, &body).unwrap();
    assert_eq!(
        Secret::from_file(&path).unwrap().as_bytes().len(),
        body.len()
    );
    body.push(1);
    fs::write(&path, &body).unwrap();
    let err = Secret::from_file(&path).unwrap_err().to_string();
    assert!(err.contains("larger than 65536 bytes"), "{err}");
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn the_temporary_key_file_is_made_beside_the_key() {
    let (dir, tmp) = temp_beside(Path::new("/var/lib/app/session.key")).unwrap();
    assert_eq!(dir, Path::new("/var/lib/app"));
    assert_eq!(tmp.parent(), Some(dir));
    let name = tmp.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with(".session.key.") && name.ends_with(".tmp"),
        "{name}"
    );
    let (dir, tmp) = temp_beside(Path::new("session.key")).unwrap();
    assert_eq!(dir, Path::new("."));
    assert_eq!(tmp.parent(), Some(Path::new(".")));
    assert_ne!(
        temp_beside(Path::new("k")).unwrap().1,
        temp_beside(Path::new("k")).unwrap().1
    );
    assert!(temp_beside(Path::new("/")).is_err(), "no file name");
}

#[test]
fn a_credential_is_a_reference_or_the_text_itself() {
    let dir = temp_dir("credential");
    let path = dir.join("password");
    fs::write(&path, "s3cret:with:colons\n").unwrap();
    let from_file = credential(&format!("file:{}", path.display())).unwrap();
    assert_eq!(&from_file[..], b"s3cret:with:colons");
    assert_eq!(&credential("base64:aHVudGVyMg==").unwrap()[..], b"hunter2");
    assert_eq!(
        &credential("p@ss:word").unwrap()[..],
        b"p@ss:word",
        "colons are allowed"
    );
    assert!(matches!(
        credential("env:TSS_TEST_NEVER_SET_EITHER"),
        Err(KeyError::EnvNotSet(_))
    ));
    fs::remove_dir_all(dir).unwrap();
}

/// A `generate:` key file as `find_or_create` writes one, planted at `path`
/// with `mode`.
#[cfg(unix)]
fn plant(path: &Path, mode: u32) -> Vec<u8> {
    use std::os::unix::fs::PermissionsExt;
    let key = URL_SAFE_NO_PAD.encode(secret(5));
    fs::write(path, format!("{key}\n")).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    key.into_bytes()
}

#[cfg(unix)]
#[test]
fn a_generated_key_file_that_is_a_symlink_is_refused() {
    let dir = temp_dir("symlink");
    let planted = dir.join("planted.key");
    plant(&planted, 0o600);
    let path = dir.join("session.key");
    std::os::unix::fs::symlink(&planted, &path).unwrap();
    let err = Secret::find_or_create(&path)
        .expect_err("a symlinked generate: key file is refused")
        .to_string();
    assert!(
        err.contains(&format!("generate:{}", path.display())) && err.contains("symbolic link"),
        "{err}"
    );
    // A dangling link is refused too, not followed to create the key elsewhere.
    fs::remove_file(&planted).unwrap();
    let err = Secret::find_or_create(&path).expect_err("a dangling symlink is refused");
    assert!(err.to_string().contains("symbolic link"), "{err}");
    assert!(!planted.exists(), "nothing was written through the link");
    fs::remove_dir_all(dir).unwrap();
}

#[cfg(unix)]
#[test]
fn a_generated_key_file_readable_or_writable_by_group_or_others_is_refused() {
    let dir = temp_dir("mode");
    let path = dir.join("session.key");
    for mode in [0o644, 0o640, 0o604, 0o620, 0o602, 0o666] {
        plant(&path, mode);
        let err = Secret::find_or_create(&path)
            .expect_err("a key file others can read or write is refused")
            .to_string();
        assert!(
            err.contains(&format!("generate:{}", path.display()))
                && err.contains(&format!("(mode {mode:04o})"))
                && err.contains("chmod 600"),
            "{mode:o}: {err}"
        );
    }
    let key = plant(&path, 0o600);
    assert_eq!(Secret::find_or_create(&path).unwrap().as_bytes(), &key[..]);
    plant(&path, 0o400);
    assert!(Secret::find_or_create(&path).is_ok(), "read-only is fine");
    fs::remove_dir_all(dir).unwrap();
}

#[cfg(unix)]
#[test]
fn a_generated_key_file_of_another_user_is_refused() {
    if !crate::testing::can_chown("a_generated_key_file_of_another_user_is_refused") {
        return;
    }
    let dir = temp_dir("owner");
    let path = dir.join("session.key");
    plant(&path, 0o600);
    std::os::unix::fs::chown(&path, Some(65534), None).unwrap();
    let err = Secret::find_or_create(&path)
        .expect_err("another user's key file is refused")
        .to_string();
    assert!(
        err.contains(&format!("generate:{}", path.display()))
            && err.contains("uid 65534")
            && err.contains("remove it"),
        "{err}"
    );
    fs::remove_dir_all(dir).unwrap();
}

#[cfg(unix)]
#[test]
fn a_generated_key_file_that_is_not_a_regular_file_is_refused() {
    let dir = temp_dir("not-regular");
    let path = dir.join("session.key");
    fs::create_dir(&path).unwrap();
    let err = Secret::find_or_create(&path)
        .expect_err("a directory is not a key file")
        .to_string();
    assert!(err.contains("not a regular file"), "{err}");
    fs::remove_dir_all(dir).unwrap();
}

#[cfg(unix)]
#[test]
fn a_generated_key_in_a_directory_writable_by_others_is_refused_unless_sticky() {
    use std::os::unix::fs::PermissionsExt;
    let dir = temp_dir("open-dir");
    let path = dir.join("session.key");
    let key = plant(&path, 0o600);
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
    let err = Secret::find_or_create(&path)
        .expect_err("a key another user could replace is refused")
        .to_string();
    assert!(
        err.contains(&format!("generate:{}", path.display()))
            && err.contains(&format!("{} is writable by others", dir.display()))
            && err.contains("sticky"),
        "{err}"
    );
    // Nor is a new key created there.
    let fresh = dir.join("fresh.key");
    assert!(Secret::find_or_create(&fresh).is_err());
    assert!(!fresh.exists());
    // Sticky (as /tmp is): others cannot remove or rename our file.
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o1777)).unwrap();
    assert_eq!(Secret::find_or_create(&path).unwrap().as_bytes(), &key[..]);
    fs::remove_dir_all(dir).unwrap();
}

#[cfg(unix)]
#[test]
fn a_file_reference_follows_symlinks_and_warns_once_when_others_can_write_it() {
    use std::os::unix::fs::PermissionsExt;
    let dir = temp_dir("file-ref");
    // The layout of a mounted Kubernetes secret: a symlink into `..data`,
    // root's file, mode 0644.
    fs::create_dir(dir.join("..data")).unwrap();
    let target = dir.join("..data/key");
    fs::write(&target, secret(6)).unwrap();
    fs::set_permissions(&target, fs::Permissions::from_mode(0o644)).unwrap();
    let link = dir.join("key");
    std::os::unix::fs::symlink("..data/key", &link).unwrap();
    let reference = format!("file:{}", link.display());
    let logs = crate::testing::logs_of(|| {
        assert_eq!(
            Secret::from_reference(&reference).unwrap().as_bytes(),
            &secret(6)[..]
        );
    });
    assert!(!logs.contains("WARN"), "a private mount is quiet: {logs}");
    fs::set_permissions(&target, fs::Permissions::from_mode(0o666)).unwrap();
    let logs = crate::testing::logs_of(|| {
        for _ in 0..3 {
            assert!(Secret::from_reference(&reference).is_ok(), "still used");
        }
    });
    assert_eq!(logs.matches("WARN").count(), 1, "warned once: {logs}");
    assert!(
        logs.contains(&link.display().to_string())
            && logs.contains("writable by others")
            && logs.contains("chmod o-w"),
        "{logs}"
    );
    fs::remove_dir_all(dir).unwrap();
}
