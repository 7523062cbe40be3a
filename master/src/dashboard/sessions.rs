//! Who may see the dashboard: one-time sign-in tokens and the sessions they start, in the
//! master's memory (a restart signs every browser out).
//!
//! A sign-in token and a session's cookie are 32 random bytes each, handed out once and kept
//! here only as their SHA-256 digest, so nothing this holds lets anyone sign in. A token lasts
//! [`LOGIN_VALIDITY`] and is taken out at its first use, good or late. Each session has a CSRF
//! token of its own (random, compared in constant time) for the forms that act. Everything is
//! bounded: at most [`MAX_LOGINS`] tokens waiting and [`MAX_SESSIONS`] sessions, expired ones
//! dropped first. Times are the caller's (milliseconds since the Unix epoch), so the rules are
//! tested without a clock.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// How long a sign-in link works.
pub const LOGIN_VALIDITY: Duration = Duration::from_secs(5 * 60);
/// How many sign-in links may wait at once.
pub const MAX_LOGINS: usize = 1000;
/// How many sessions the master holds at once; the one expiring first makes room.
pub const MAX_SESSIONS: usize = 1000;
/// The shortest and longest sessions a link may start.
pub const MIN_SESSION_TTL: Duration = Duration::from_secs(60);
pub const MAX_SESSION_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

type Sha = [u8; 32];

fn digest(secret: &str) -> Sha {
    Sha256::digest(secret.as_bytes()).into()
}

/// 32 random bytes, hex.
fn secret() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

fn ms(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// A sign-in link not yet used.
#[derive(Debug, Clone)]
struct PendingLogin {
    expires_at_unix_ms: i64,
    session_ttl: Duration,
    admin: bool,
    created_by: String,
}

/// A signed-in browser, as operators and pages see it (no secret but its CSRF token, which is
/// rendered into its own pages' forms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub id: String,
    pub created_at_unix_ms: i64,
    pub expires_at_unix_ms: i64,
    pub last_seen_unix_ms: i64,
    pub admin: bool,
    /// The admin certificate that made its sign-in link.
    pub created_by: String,
    /// Goes into the session's forms; a form sent back without it is refused.
    pub csrf: String,
}

impl Session {
    /// Whether `presented` is this session's CSRF token, compared in constant time.
    pub fn csrf_matches(&self, presented: &str) -> bool {
        self.csrf.as_bytes().ct_eq(presented.as_bytes()).into()
    }
}

/// A session just started: its cookie's value goes to the browser once, and nowhere else.
#[derive(Debug)]
pub struct Started {
    pub cookie: String,
    pub session: Session,
}

/// Why no sign-in link was made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginRefused {
    #[error("{MAX_LOGINS} sign-in links are waiting already; use or let some expire first")]
    TooMany,
}

#[derive(Default)]
struct Inner {
    logins: HashMap<Sha, PendingLogin>,
    /// By the digest of the session's cookie.
    sessions: HashMap<Sha, Session>,
}

/// The sign-in links and sessions of one master.
#[derive(Default)]
pub struct Sessions {
    // A std mutex, never held across an await.
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").finish_non_exhaustive()
    }
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new sign-in link's token, valid for [`LOGIN_VALIDITY`] from `now`, for a session of
    /// `ttl` (clamped to [`MIN_SESSION_TTL`]..=[`MAX_SESSION_TTL`]). Returns the token and
    /// when it expires.
    pub fn create_login(
        &self,
        ttl: Duration,
        admin: bool,
        created_by: String,
        now: i64,
    ) -> Result<(String, i64), LoginRefused> {
        let mut inner = self.lock();
        inner
            .logins
            .retain(|_, login| login.expires_at_unix_ms > now);
        if inner.logins.len() >= MAX_LOGINS {
            return Err(LoginRefused::TooMany);
        }
        let token = secret();
        let expires_at_unix_ms = now.saturating_add(ms(LOGIN_VALIDITY));
        inner.logins.insert(
            digest(&token),
            PendingLogin {
                expires_at_unix_ms,
                session_ttl: ttl.clamp(MIN_SESSION_TTL, MAX_SESSION_TTL),
                admin,
                created_by,
            },
        );
        Ok((token, expires_at_unix_ms))
    }

    /// Uses sign-in token `token`: a session if it is known and not expired. The token is
    /// gone either way.
    pub fn redeem(&self, token: &str, now: i64) -> Option<Started> {
        let mut inner = self.lock();
        let login = inner.logins.remove(&digest(token))?;
        if login.expires_at_unix_ms <= now {
            return None;
        }
        inner.sessions.retain(|_, s| s.expires_at_unix_ms > now);
        if inner.sessions.len() >= MAX_SESSIONS {
            let first_to_expire = inner
                .sessions
                .iter()
                .min_by_key(|(_, s)| s.expires_at_unix_ms)
                .map(|(key, _)| *key);
            if let Some(key) = first_to_expire {
                inner.sessions.remove(&key);
            }
        }
        let cookie = secret();
        let session = Session {
            id: hex::encode(rand::random::<[u8; 8]>()),
            created_at_unix_ms: now,
            expires_at_unix_ms: now.saturating_add(ms(login.session_ttl)),
            last_seen_unix_ms: now,
            admin: login.admin,
            created_by: login.created_by,
            csrf: secret(),
        };
        inner.sessions.insert(digest(&cookie), session.clone());
        Some(Started { cookie, session })
    }

    /// The session whose cookie is `cookie`, if it holds at `now`; it was seen now.
    pub fn session(&self, cookie: &str, now: i64) -> Option<Session> {
        let mut inner = self.lock();
        let key = digest(cookie);
        let session = inner.sessions.get_mut(&key)?;
        if session.expires_at_unix_ms <= now {
            inner.sessions.remove(&key);
            return None;
        }
        session.last_seen_unix_ms = now;
        Some(session.clone())
    }

    /// Whether session `id` still holds at `now` (for streams that outlive their request).
    pub fn holds(&self, id: &str, now: i64) -> bool {
        self.lock()
            .sessions
            .values()
            .any(|s| s.id == id && s.expires_at_unix_ms > now)
    }

    /// The sessions that hold at `now`, oldest first.
    pub fn list(&self, now: i64) -> Vec<Session> {
        let mut sessions: Vec<Session> = self
            .lock()
            .sessions
            .values()
            .filter(|s| s.expires_at_unix_ms > now)
            .cloned()
            .collect();
        sessions.sort_by(|a, b| (a.created_at_unix_ms, &a.id).cmp(&(b.created_at_unix_ms, &b.id)));
        sessions
    }

    /// Ends session `id`; false if there was none.
    pub fn revoke(&self, id: &str) -> bool {
        let mut inner = self.lock();
        let before = inner.sessions.len();
        inner.sessions.retain(|_, s| s.id != id);
        inner.sessions.len() != before
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);
    const NOW: i64 = 1_800_000_000_000;

    fn login(sessions: &Sessions, admin: bool) -> String {
        sessions
            .create_login(HOUR, admin, "alice".into(), NOW)
            .expect("room for a login")
            .0
    }

    #[test]
    fn a_token_starts_one_session_and_only_once() {
        let sessions = Sessions::default();
        let token = login(&sessions, false);
        let started = sessions.redeem(&token, NOW + 1000).expect("a session");
        assert!(!started.session.admin);
        assert_eq!(started.session.created_by, "alice");
        assert_eq!(started.session.expires_at_unix_ms, NOW + 1000 + ms(HOUR));
        assert!(sessions.redeem(&token, NOW + 2000).is_none(), "used once");
        let seen = sessions
            .session(&started.cookie, NOW + 5000)
            .expect("the cookie works");
        assert_eq!(seen.last_seen_unix_ms, NOW + 5000);
        assert_eq!(seen.id, started.session.id);
    }

    #[test]
    fn a_token_expires_after_five_minutes_and_is_gone_after_a_late_try() {
        let sessions = Sessions::default();
        let token = login(&sessions, true);
        let late = NOW + ms(LOGIN_VALIDITY);
        assert!(sessions.redeem(&token, late).is_none());
        assert!(sessions.redeem(&token, NOW).is_none(), "a late try used it");
        let token = login(&sessions, true);
        assert!(
            sessions
                .redeem(&token, late - 1)
                .is_some_and(|s| s.session.admin)
        );
    }

    #[test]
    fn unknown_tokens_and_cookies_start_nothing() {
        let sessions = Sessions::default();
        let token = login(&sessions, false);
        assert!(sessions.redeem("", NOW).is_none());
        assert!(sessions.redeem(&token.to_uppercase(), NOW).is_none());
        assert!(
            sessions.session(&token, NOW).is_none(),
            "a token is no cookie"
        );
        assert!(
            sessions.redeem(&token, NOW).is_some(),
            "the real token is still there"
        );
    }

    #[test]
    fn only_digests_are_kept() {
        let sessions = Sessions::default();
        let token = login(&sessions, false);
        let started = sessions
            .redeem(&login(&sessions, false), NOW)
            .expect("a session");
        let inner = sessions.lock();
        assert!(inner.logins.contains_key(&digest(&token)));
        let kept = format!(
            "{:?}{:?}",
            inner.logins.keys().map(hex::encode).collect::<Vec<_>>(),
            inner.sessions
        );
        assert!(!kept.contains(&token));
        assert!(!kept.contains(&started.cookie));
        assert!(inner.sessions.contains_key(&digest(&started.cookie)));
        assert_eq!(token.len(), 64, "32 bytes, hex");
        assert_eq!(started.cookie.len(), 64);
    }

    #[test]
    fn sessions_expire_and_can_be_revoked() {
        let sessions = Sessions::default();
        let a = sessions.redeem(&login(&sessions, false), NOW).expect("a");
        let b = sessions
            .redeem(&login(&sessions, true), NOW + 1)
            .expect("b");
        assert_eq!(
            sessions
                .list(NOW + 2)
                .iter()
                .map(|s| &s.id)
                .collect::<Vec<_>>(),
            [&a.session.id, &b.session.id]
        );
        assert!(sessions.revoke(&a.session.id));
        assert!(!sessions.revoke(&a.session.id));
        assert!(sessions.session(&a.cookie, NOW + 3).is_none());
        assert!(sessions.holds(&b.session.id, NOW + 3));
        let after = b.session.expires_at_unix_ms;
        assert!(sessions.session(&b.cookie, after).is_none(), "expired");
        assert!(!sessions.holds(&b.session.id, after));
    }

    #[test]
    fn the_session_ttl_is_clamped() {
        let sessions = Sessions::default();
        let (token, _) = sessions
            .create_login(Duration::from_secs(1), false, "a".into(), NOW)
            .expect("a login");
        let s = sessions.redeem(&token, NOW).expect("a session").session;
        assert_eq!(s.expires_at_unix_ms, NOW + ms(MIN_SESSION_TTL));
    }

    #[test]
    fn waiting_logins_and_sessions_are_bounded() {
        let sessions = Sessions::default();
        for _ in 0..MAX_LOGINS {
            login(&sessions, false);
        }
        assert_eq!(
            sessions.create_login(HOUR, false, "a".into(), NOW),
            Err(LoginRefused::TooMany)
        );
        // Expired ones make room.
        let later = NOW + ms(LOGIN_VALIDITY);
        let (token, _) = sessions
            .create_login(HOUR, false, "a".into(), later)
            .expect("room again");
        assert_eq!(sessions.lock().logins.len(), 1);
        let first = sessions.redeem(&token, later).expect("a session");
        for n in 0..MAX_SESSIONS {
            let now = later + 1 + n as i64;
            let (token, _) = sessions
                .create_login(HOUR, false, "a".into(), now)
                .expect("a login");
            sessions.redeem(&token, now).expect("a session");
        }
        assert_eq!(sessions.lock().sessions.len(), MAX_SESSIONS);
        assert!(
            sessions.session(&first.cookie, later + 1).is_none(),
            "the session expiring first made room"
        );
    }

    #[test]
    fn csrf_tokens_are_per_session_and_compared_whole() {
        let sessions = Sessions::default();
        let a = sessions
            .redeem(&login(&sessions, true), NOW)
            .expect("a")
            .session;
        let b = sessions
            .redeem(&login(&sessions, true), NOW)
            .expect("b")
            .session;
        assert_ne!(a.csrf, b.csrf);
        assert!(a.csrf_matches(&a.csrf.clone()));
        assert!(!a.csrf_matches(&b.csrf));
        assert!(!a.csrf_matches(""));
        assert!(!a.csrf_matches(&a.csrf[..63]));
        assert!(!a.csrf_matches(&format!("{}0", a.csrf)));
    }
}
