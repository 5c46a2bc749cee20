//! Credentials of `remdb serve`: users with a password and bearer tokens, each bound to
//! exactly one tenant.
//!
//! They live in `credentials.json` in the database directory (mode 0600), written
//! atomically (temporary file, fsync, rename), so that `remdb token ...` and `remdb user
//! ...` work while a server holds the database open; the server re-reads the file when it
//! changes. Nothing secret is stored: passwords as Argon2id PHC strings, tokens as
//! SHA-256 digests (a token is 256 random bits, so a fast digest is enough).

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use parking_lot::{Mutex, RwLock};
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

const FILE_NAME: &str = "credentials.json";
/// Held (an exclusive file lock) by whoever changes the file, across processes.
const LOCK_NAME: &str = "credentials.lock";

type FileVersion = (SystemTime, u64, u64);
/// Prefix of every token remdb issues, so that a leaked one is recognizable.
const TOKEN_PREFIX: &str = "rdb_";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct CredentialFile {
    version: u32,
    users: Vec<User>,
    tokens: Vec<TokenEntry>,
}

/// A user who signs in with a password (Flight SQL basic auth).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct User {
    pub name: String,
    pub tenant: String,
    /// Argon2id, PHC string format.
    #[serde(rename = "password_hash")]
    hash: String,
    pub created: String,
}

/// A long-lived bearer token, as listed (the token itself is shown once, at creation).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenEntry {
    /// Short public id (also a prefix of the token), used to revoke it.
    pub id: String,
    pub tenant: String,
    pub label: String,
    /// SHA-256 of the whole token, hex.
    #[serde(rename = "sha256")]
    hash: String,
    pub created: String,
}

/// The credential store of one database directory.
pub struct Credentials {
    path: PathBuf,
    /// The file as last read, with what identifies that version of it.
    cache: RwLock<(Option<FileVersion>, CredentialFile)>,
    /// Serializes read-modify-write changes within this process.
    write: Mutex<()>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("path", &self.path)
            .finish()
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn sha256_hex(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    OsRng.fill_bytes(&mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares two strings in time independent of where they differ.
fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn validate_user_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 128
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c))
    {
        return Err(Error::invalid(format!(
            "user name '{name}' must be 1-128 characters of letters, digits, '.', '_', '-', '@'"
        )));
    }
    Ok(())
}

impl Credentials {
    /// The credentials of the database in directory `dir` (the file need not exist yet).
    pub fn open(dir: impl AsRef<Path>) -> Credentials {
        Credentials {
            path: dir.as_ref().join(FILE_NAME),
            cache: RwLock::new((None, CredentialFile::default())),
            write: Mutex::new(()),
        }
    }

    /// Modification time, length and inode: a replaced file (rename) has a new inode even
    /// when its time stamp is as coarse as the file system's.
    fn modified(&self) -> Option<FileVersion> {
        let m = std::fs::metadata(&self.path).ok()?;
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(&m);
        #[cfg(not(unix))]
        let inode = 0;
        Some((m.modified().ok()?, m.len(), inode))
    }

    /// The file's current content (re-read when its modification time changed).
    fn current(&self) -> Result<CredentialFile> {
        let modified = self.modified();
        {
            let cache = self.cache.read();
            if cache.0 == modified && modified.is_some() {
                return Ok(cache.1.clone());
            }
        }
        let file = match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice::<CredentialFile>(&bytes).map_err(|e| {
                Error::Corruption(format!("{} is not readable: {e}", self.path.display()))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => CredentialFile::default(),
            Err(e) => {
                return Err(Error::Storage(format!(
                    "cannot read {}: {e}",
                    self.path.display()
                )));
            }
        };
        *self.cache.write() = (modified, file.clone());
        Ok(file)
    }

    /// Applies `change` to the file and writes it back atomically.
    fn update<T>(&self, change: impl FnOnce(&mut CredentialFile) -> Result<T>) -> Result<T> {
        let _guard = self.write.lock();
        // Another process (a `remdb token` command beside the server) may change it too.
        let lock_path = self.path.with_file_name(LOCK_NAME);
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)?;
        lock.lock()?;
        let mut file = self.current()?;
        let out = change(&mut file)?;
        file.version = 1;
        let json = serde_json::to_vec_pretty(&file)
            .map_err(|e| Error::Storage(format!("cannot encode credentials: {e}")))?;
        let tmp = self
            .path
            .with_extension(format!("json.tmp.{}", std::process::id()));
        {
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut f = options.open(&tmp)?;
            f.write_all(&json)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        *self.cache.write() = (self.modified(), file);
        Ok(out)
    }

    /// Adds a user who signs in with `password` to `tenant`.
    pub fn add_user(&self, name: &str, tenant: &str, password: &str) -> Result<()> {
        validate_user_name(name)?;
        let hash = hash_password(password)?;
        self.update(|file| {
            if file.users.iter().any(|u| u.name == name) {
                return Err(Error::AlreadyExists(format!("user '{name}'")));
            }
            file.users.push(User {
                name: name.to_string(),
                tenant: tenant.to_string(),
                hash,
                created: now(),
            });
            Ok(())
        })
    }

    /// Replaces a user's password.
    pub fn set_password(&self, name: &str, password: &str) -> Result<()> {
        let hash = hash_password(password)?;
        self.update(|file| {
            let user = file
                .users
                .iter_mut()
                .find(|u| u.name == name)
                .ok_or_else(|| Error::NotFound(format!("user '{name}'")))?;
            user.hash = hash;
            Ok(())
        })
    }

    pub fn remove_user(&self, name: &str) -> Result<()> {
        self.update(|file| {
            let before = file.users.len();
            file.users.retain(|u| u.name != name);
            if file.users.len() == before {
                return Err(Error::NotFound(format!("user '{name}'")));
            }
            Ok(())
        })
    }

    pub fn users(&self) -> Result<Vec<User>> {
        Ok(self.current()?.users)
    }

    /// Creates a bearer token for `tenant`; the token is returned once and stored hashed.
    pub fn create_token(&self, tenant: &str, label: &str) -> Result<(TokenEntry, String)> {
        self.update(|file| {
            let mut id = random_hex(4);
            while file.tokens.iter().any(|t| t.id == id) {
                id = random_hex(4);
            }
            let token = format!("{TOKEN_PREFIX}{id}_{}", random_hex(32));
            let entry = TokenEntry {
                id,
                tenant: tenant.to_string(),
                label: label.to_string(),
                hash: sha256_hex(&token),
                created: now(),
            };
            file.tokens.push(entry.clone());
            Ok((entry, token))
        })
    }

    pub fn revoke_token(&self, id: &str) -> Result<()> {
        self.update(|file| {
            let before = file.tokens.len();
            file.tokens.retain(|t| t.id != id);
            if file.tokens.len() == before {
                return Err(Error::NotFound(format!("token '{id}'")));
            }
            Ok(())
        })
    }

    pub fn tokens(&self) -> Result<Vec<TokenEntry>> {
        Ok(self.current()?.tokens)
    }

    /// Removes every credential of a tenant (when the tenant is dropped).
    pub fn remove_tenant(&self, tenant: &str) -> Result<()> {
        if !self.path.exists() {
            return Ok(());
        }
        self.update(|file| {
            file.users.retain(|u| u.tenant != tenant);
            file.tokens.retain(|t| t.tenant != tenant);
            Ok(())
        })
    }

    /// The tenant of a user whose password matches.
    pub fn check_password(&self, name: &str, password: &str) -> Result<(String, Origin)> {
        let file = self.current()?;
        let user = file.users.iter().find(|u| u.name == name);
        // An unknown user costs the same hash as a wrong password.
        let hash = match user {
            Some(u) => u.hash.clone(),
            None => dummy_hash()?,
        };
        let parsed = PasswordHash::new(&hash)
            .map_err(|e| Error::Corruption(format!("stored password hash of '{name}': {e}")))?;
        let ok = Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        match user {
            Some(u) if ok => Ok((
                u.tenant.clone(),
                Origin::User {
                    name: u.name.clone(),
                    hash: u.hash.clone(),
                },
            )),
            _ => Err(Error::invalid("wrong user name or password")),
        }
    }

    /// The tenant of a stored bearer token, and the token's id.
    pub fn check_token(&self, token: &str) -> Result<(String, Origin)> {
        let digest = sha256_hex(token);
        let file = self.current()?;
        file.tokens
            .iter()
            .find(|t| constant_time_eq(&t.hash, &digest))
            .map(|t| (t.tenant.clone(), Origin::Token(t.id.clone())))
            .ok_or_else(|| Error::invalid("unknown or revoked token"))
    }

    /// Whether the credential a session was opened with still exists for its tenant (a
    /// removed user, a changed password or a revoked token ends its sessions).
    pub fn still_valid(&self, origin: &Origin, tenant: &str) -> bool {
        let Ok(file) = self.current() else {
            return false;
        };
        match origin {
            Origin::User { name, hash } => file
                .users
                .iter()
                .any(|u| &u.name == name && u.tenant == tenant && &u.hash == hash),
            Origin::Token(id) => file
                .tokens
                .iter()
                .any(|t| &t.id == id && t.tenant == tenant),
        }
    }
}

/// The hash of a random password, verified against for unknown users.
fn dummy_hash() -> Result<String> {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    if let Some(hash) = HASH.get() {
        return Ok(hash.clone());
    }
    let hash = hash_password(&random_hex(16))?;
    Ok(HASH.get_or_init(|| hash).clone())
}

fn hash_password(password: &str) -> Result<String> {
    if password.is_empty() {
        return Err(Error::invalid("the password is empty"));
    }
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::invalid(format!("cannot hash the password: {e}")))
}

/// The credential a sign-in used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A user, with the password hash of the moment (a new password ends the session).
    User { name: String, hash: String },
    /// A stored token, by id.
    Token(String),
}

/// Short-lived tokens handed out by the Flight SQL handshake, in memory only.
#[derive(Debug, Default)]
pub struct Sessions {
    by_token: Mutex<HashMap<String, (String, Origin, Instant)>>,
}

impl Sessions {
    /// How long a handshake token stays valid.
    pub const LIFETIME: Duration = Duration::from_secs(12 * 3600);

    /// A new session token for `tenant`, signed in with `origin`.
    pub fn issue(&self, tenant: &str, origin: Origin) -> String {
        let token = format!("{TOKEN_PREFIX}s_{}", random_hex(32));
        let mut map = self.by_token.lock();
        let now = Instant::now();
        map.retain(|_, (_, _, issued)| now.duration_since(*issued) < Self::LIFETIME);
        map.insert(token.clone(), (tenant.to_string(), origin, now));
        token
    }

    /// The tenant and origin of a live session token.
    pub fn get(&self, token: &str) -> Option<(String, Origin)> {
        let map = self.by_token.lock();
        map.get(token)
            .filter(|(_, _, issued)| issued.elapsed() < Self::LIFETIME)
            .map(|(tenant, origin, _)| (tenant.clone(), origin.clone()))
    }

    pub fn revoke(&self, token: &str) {
        self.by_token.lock().remove(token);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_and_tokens_map_to_their_tenant_and_are_stored_hashed() {
        let dir = tempfile::tempdir().unwrap();
        let creds = Credentials::open(dir.path());
        creds.add_user("ada", "acme", "s3cret").unwrap();
        let (tenant, ada) = creds.check_password("ada", "s3cret").unwrap();
        assert_eq!(tenant, "acme");
        assert!(creds.still_valid(&ada, "acme") && !creds.still_valid(&ada, "globex"));
        assert!(creds.check_password("ada", "wrong").is_err());
        assert!(creds.check_password("bob", "s3cret").is_err());
        assert!(matches!(
            creds.add_user("ada", "other", "x"),
            Err(Error::AlreadyExists(_))
        ));

        let (entry, token) = creds.create_token("globex", "ci").unwrap();
        assert!(token.starts_with(&format!("rdb_{}_", entry.id)));
        let (tenant, origin) = creds.check_token(&token).unwrap();
        assert_eq!(
            (tenant.as_str(), &origin),
            ("globex", &Origin::Token(entry.id.clone()))
        );
        assert!(creds.check_token("rdb_nope").is_err());

        // Neither the password nor the token is in the file.
        let text = std::fs::read_to_string(dir.path().join(FILE_NAME)).unwrap();
        assert!(!text.contains("s3cret") && !text.contains(&token), "{text}");

        // Another process's change is seen (a fresh handle reads the file).
        let other = Credentials::open(dir.path());
        other.revoke_token(&entry.id).unwrap();
        assert!(creds.check_token(&token).is_err());
        assert!(!creds.still_valid(&origin, "globex"));
        // A new password ends the sessions of the old one.
        creds.set_password("ada", "n3w").unwrap();
        assert!(!creds.still_valid(&ada, "acme"));
        other.remove_tenant("acme").unwrap();
        assert!(creds.check_password("ada", "s3cret").is_err());
    }

    #[test]
    fn bad_user_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let creds = Credentials::open(dir.path());
        assert!(creds.add_user("", "t", "p").is_err());
        assert!(creds.add_user("a b", "t", "p").is_err());
        assert!(creds.add_user("ok", "t", "").is_err());
    }
}
