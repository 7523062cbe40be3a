use std::os::unix::fs::PermissionsExt;

use super::*;

fn name(s: &str) -> SecretName {
    SecretName::new(s).unwrap()
}

fn value(s: &str) -> SecretValue {
    SecretValue::new(s.into()).unwrap()
}

fn vault() -> (Vault, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    (
        Vault::open_or_create(&dir.path().join("secrets.key")).unwrap(),
        dir,
    )
}

#[test]
fn a_sealed_value_opens_under_its_name_only_and_shows_nothing_of_itself() {
    let (vault, _dir) = vault();
    let record = vault
        .seal(&name("db"), &value("hunter2"), "admin".into(), 7)
        .unwrap();
    assert_eq!(
        vault.open(&name("db"), &record).unwrap().expose(),
        "hunter2"
    );
    let stored = serde_json::to_string(&record).unwrap();
    assert!(!stored.contains("hunter2"), "{stored}");
    assert!(!stored.contains(&hex::encode("hunter2")), "{stored}");
    // Moved under another name, or changed by a byte, it does not open.
    assert!(matches!(
        vault.open(&name("other"), &record),
        Err(SecretError::Damaged(_))
    ));
    let mut tampered = record.clone();
    let last = tampered.sealed.pop().unwrap();
    tampered.sealed.push(if last == '0' { '1' } else { '0' });
    assert!(matches!(
        vault.open(&name("db"), &tampered),
        Err(SecretError::Damaged(_))
    ));
    // Two seals of one value differ (a fresh nonce each), and so do their fingerprints never.
    let again = vault
        .seal(&name("db"), &value("hunter2"), "admin".into(), 8)
        .unwrap();
    assert_ne!(again.sealed, record.sealed);
    assert_eq!(again.fingerprint, record.fingerprint);
}

#[test]
fn a_fingerprint_changes_with_the_value_and_the_name_and_depends_on_the_key() {
    let (vault, _dir) = vault();
    let db = vault.fingerprint(&name("db"), &value("a"));
    assert_eq!(db.len(), FINGERPRINT_BYTES * 2);
    assert_ne!(db, vault.fingerprint(&name("db"), &value("b")));
    assert_ne!(db, vault.fingerprint(&name("cache"), &value("a")));
    let (other, _other_dir) = self::vault();
    assert_ne!(db, other.fingerprint(&name("db"), &value("a")));
}

#[test]
fn the_key_file_is_made_private_once_and_read_back_as_the_same_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secrets.key");
    let first = Vault::open_or_create(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let record = first
        .seal(&name("db"), &value("v"), "admin".into(), 1)
        .unwrap();
    let again = Vault::open_or_create(&path).unwrap();
    assert_eq!(again.key_id(), first.key_id());
    assert_eq!(again.open(&name("db"), &record).unwrap().expose(), "v");
}

#[test]
fn a_master_with_another_key_says_which_keys_differ() {
    let (vault, _dir) = vault();
    let (other, _other_dir) = self::vault();
    let record = vault
        .seal(&name("db"), &value("v"), "admin".into(), 1)
        .unwrap();
    let err = other.open(&name("db"), &record).unwrap_err();
    assert!(matches!(err, SecretError::OtherKey { .. }));
    let message = err.to_string();
    assert!(message.contains(vault.key_id()), "{message}");
    assert!(message.contains("copy secrets.key"), "{message}");
}

#[test]
fn a_damaged_key_file_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secrets.key");
    std::fs::write(&path, "not hex\n").unwrap();
    let err = Vault::open_or_create(&path).err().unwrap().to_string();
    assert!(err.contains("secrets.key"), "{err}");
    assert!(err.contains("64 hex digits"), "{err}");
}
