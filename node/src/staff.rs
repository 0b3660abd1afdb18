//! Staff accounts of a node's desk, and the log of who opened whose
//! personal data. Both are this node's own: never synced, never part of the
//! ledger. Passwords are kept only as Argon2id hashes.

use anyhow::{Context, Result};
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

/// What a staff member may do at the desk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// 窗口人员: takes cases and pre-reviews them.
    Clerk,
    /// 审核人员: also accepts and decides, where the tier may.
    Reviewer,
    /// 管理员: everything, plus staff, quarantine and nodes.
    Admin,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Clerk => "clerk",
            Role::Reviewer => "reviewer",
            Role::Admin => "admin",
        }
    }
    pub fn parse(s: &str) -> Option<Role> {
        [Role::Clerk, Role::Reviewer, Role::Admin].into_iter().find(|r| r.name() == s)
    }
    /// May accept, decide, issue and close cases.
    pub fn decides(self) -> bool {
        self >= Role::Reviewer
    }
}

/// One staff account, without its password hash.
#[derive(Debug, Clone, Serialize)]
pub struct Member {
    pub login: String,
    pub name: String,
    pub role: Role,
    pub disabled: bool,
    /// Until when (ms since the epoch) logins are refused after repeated
    /// wrong passwords; 0 when not locked.
    pub locked_until: u64,
}

impl Member {
    /// How events written by this member name their actor.
    pub fn actor(&self) -> String {
        format!("{}({})", self.name, self.login)
    }
}

/// Why a login was refused. The desk says the same words for an unknown
/// login and a wrong password, so it does not tell which logins exist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginRefused {
    #[error("wrong login or password")]
    WrongPassword,
    #[error("the account is locked after repeated wrong passwords until {until_ms}")]
    Locked { until_ms: u64 },
    #[error("the account is disabled")]
    Disabled,
}

/// A staff command was refused; nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StaffError {
    #[error("login {0:?} must be 2–32 letters, digits, '.', '_' or '-'")]
    BadLogin(String),
    #[error("the name may not be empty or longer than 64 characters")]
    BadName,
    #[error("a password must have at least {MIN_PASSWORD} characters")]
    ShortPassword,
    #[error("login {0} already exists")]
    Exists(String),
    #[error("no staff member has login {0}")]
    Unknown(String),
}

/// Wrong passwords in a row after which an account is locked.
pub const MAX_FAILURES: u32 = 5;
/// How long a locked account stays locked.
pub const LOCK_MS: u64 = 15 * 60 * 1000;
/// Shortest password accepted.
pub const MIN_PASSWORD: usize = 8;

const M_COST_KIB: u32 = 19 * 1024;
const T_COST: u32 = 2;

fn hash_password(password: &str, salt: &[u8; 16], m: u32, t: u32) -> Result<[u8; 32]> {
    let params = argon2::Params::new(m, t, 1, Some(32)).map_err(|e| anyhow::anyhow!("argon2 parameters: {e}"))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = [0u8; 32];
    argon.hash_password_into(password.as_bytes(), salt, &mut out).map_err(|e| anyhow::anyhow!("argon2: {e}"))?;
    Ok(out)
}

/// `argon2id$m$t$salt$hash`, hex.
fn new_password_record(password: &str) -> Result<String> {
    let salt: [u8; 16] = rand::random();
    let hash = hash_password(password, &salt, M_COST_KIB, T_COST)?;
    Ok(format!("argon2id${M_COST_KIB}${T_COST}${}${}", hex::encode(salt), hex::encode(hash)))
}

fn password_matches(record: &str, password: &str) -> Result<bool> {
    let parts: Vec<&str> = record.split('$').collect();
    let [kind, m, t, salt, hash] = parts[..] else { anyhow::bail!("a stored password record is damaged") };
    anyhow::ensure!(kind == "argon2id", "unknown password record kind {kind}");
    let salt: [u8; 16] = hex::decode(salt).ok().and_then(|s| s.try_into().ok()).context("damaged salt")?;
    let want = hex::decode(hash).context("damaged hash")?;
    let got = hash_password(password, &salt, m.parse()?, t.parse()?)?;
    // Constant time: every byte is compared.
    Ok(want.len() == got.len() && want.iter().zip(got.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0)
}

fn valid_login(login: &str) -> bool {
    (2..=32).contains(&login.len()) && login.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn member(r: &rusqlite::Row<'_>) -> rusqlite::Result<Member> {
    let role: String = r.get(2)?;
    Ok(Member {
        login: r.get(0)?,
        name: r.get(1)?,
        role: Role::parse(&role).unwrap_or(Role::Clerk),
        disabled: r.get(3)?,
        locked_until: r.get(4)?,
    })
}

const MEMBER_COLUMNS: &str = "login, name, role, disabled, locked_until";

/// Adds a staff member.
pub fn add(conn: &Connection, login: &str, name: &str, role: Role, password: &str, now_ms: u64) -> Result<Member> {
    if !valid_login(login) {
        return Err(StaffError::BadLogin(login.into()).into());
    }
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 64 {
        return Err(StaffError::BadName.into());
    }
    if password.chars().count() < MIN_PASSWORD {
        return Err(StaffError::ShortPassword.into());
    }
    if get(conn, login)?.is_some() {
        return Err(StaffError::Exists(login.into()).into());
    }
    let record = new_password_record(password)?;
    conn.execute(
        "INSERT INTO staff (login, name, role, password, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![login, name, role.name(), record, now_ms],
    )?;
    Ok(get(conn, login)?.expect("just inserted"))
}

pub fn get(conn: &Connection, login: &str) -> Result<Option<Member>> {
    Ok(conn.query_row(&format!("SELECT {MEMBER_COLUMNS} FROM staff WHERE login = ?1"), [login], member).optional()?)
}

pub fn list(conn: &Connection) -> Result<Vec<Member>> {
    let mut stmt = conn.prepare(&format!("SELECT {MEMBER_COLUMNS} FROM staff ORDER BY login"))?;
    let rows = stmt.query_map([], member)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Sets a new password (and lifts a lock): an administrator's reset, or a
/// member's own change once the desk has checked the old one.
pub fn set_password(conn: &Connection, login: &str, password: &str) -> Result<()> {
    if password.chars().count() < MIN_PASSWORD {
        return Err(StaffError::ShortPassword.into());
    }
    let record = new_password_record(password)?;
    if conn.execute(
        "UPDATE staff SET password = ?2, failures = 0, locked_until = 0 WHERE login = ?1",
        params![login, record],
    )? == 0
    {
        return Err(StaffError::Unknown(login.into()).into());
    }
    Ok(())
}

/// Disables (or enables again) an account; its sessions end at their next
/// request.
pub fn set_disabled(conn: &Connection, login: &str, disabled: bool) -> Result<()> {
    if conn.execute("UPDATE staff SET disabled = ?2 WHERE login = ?1", params![login, disabled])? == 0 {
        return Err(StaffError::Unknown(login.into()).into());
    }
    Ok(())
}

/// A login being checked: what was read of the account. The password is
/// hashed between [`begin_login`] and [`finish_login`] without holding the
/// store, so a flood of guesses does not hold up the desk's other pages.
#[derive(Debug, Clone)]
pub struct Attempt {
    login: String,
    record: Option<String>,
    failures: u32,
    member: Option<Member>,
}

impl Attempt {
    /// The account exists.
    pub fn known(&self) -> bool {
        self.member.is_some()
    }
    /// Until when the account is locked, if it is at `now`.
    pub fn locked_until(&self, now_ms: u64) -> Option<u64> {
        self.member.as_ref().map(|m| m.locked_until).filter(|until| *until > now_ms)
    }
}

/// Reads the account a login names.
pub fn begin_login(conn: &Connection, login: &str) -> Result<Attempt> {
    let row: Option<(String, u32)> = conn
        .query_row("SELECT password, failures FROM staff WHERE login = ?1", [login], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let member = get(conn, login)?;
    Ok(Attempt {
        login: login.to_string(),
        failures: row.as_ref().map_or(0, |r| r.1),
        record: row.map(|r| r.0),
        member,
    })
}

/// Hashes the password against the account's record (an unknown login
/// costs the same time). Slow by design; needs no store.
pub fn password_fits(attempt: &Attempt, password: &str) -> Result<bool> {
    match &attempt.record {
        Some(record) => password_matches(record, password),
        None => {
            let _ = hash_password(password, &[0; 16], M_COST_KIB, T_COST)?;
            Ok(false)
        }
    }
}

/// Records the outcome: every wrong password counts; after
/// [`MAX_FAILURES`] in a row the account is locked for [`LOCK_MS`].
pub fn finish_login(
    conn: &Connection,
    attempt: &Attempt,
    fits: bool,
    now_ms: u64,
) -> Result<Result<Member, LoginRefused>> {
    let Some(m) = attempt.member.clone() else { return Ok(Err(LoginRefused::WrongPassword)) };
    // Read again: another attempt may have locked it meanwhile.
    let locked_until: u64 =
        conn.query_row("SELECT locked_until FROM staff WHERE login = ?1", [&attempt.login], |r| r.get(0))?;
    if locked_until > now_ms {
        return Ok(Err(LoginRefused::Locked { until_ms: locked_until }));
    }
    if !fits {
        let failures: u32 =
            conn.query_row("SELECT failures FROM staff WHERE login = ?1", [&attempt.login], |r| r.get(0))?;
        let failures = failures.max(attempt.failures) + 1;
        let locked_until = if failures >= MAX_FAILURES { now_ms + LOCK_MS } else { 0 };
        conn.execute(
            "UPDATE staff SET failures = ?2, locked_until = ?3 WHERE login = ?1",
            params![attempt.login, if locked_until > 0 { 0 } else { failures }, locked_until],
        )?;
        return Ok(Err(if locked_until > 0 {
            LoginRefused::Locked { until_ms: locked_until }
        } else {
            LoginRefused::WrongPassword
        }));
    }
    if m.disabled {
        return Ok(Err(LoginRefused::Disabled));
    }
    conn.execute("UPDATE staff SET failures = 0, locked_until = 0 WHERE login = ?1", [&attempt.login])?;
    Ok(Ok(Member { locked_until: 0, ..m }))
}

/// Checks a login in one go ([`begin_login`], [`password_fits`],
/// [`finish_login`]).
pub fn log_in(conn: &Connection, login: &str, password: &str, now_ms: u64) -> Result<Result<Member, LoginRefused>> {
    let attempt = begin_login(conn, login)?;
    if let Some(until_ms) = attempt.locked_until(now_ms) {
        return Ok(Err(LoginRefused::Locked { until_ms }));
    }
    let fits = password_fits(&attempt, password)?;
    finish_login(conn, &attempt, fits, now_ms)
}

/// One line of the access log.
#[derive(Debug, Clone, Serialize)]
pub struct Access {
    pub at_ms: u64,
    pub login: String,
    pub case_id: String,
    pub what: String,
}

/// Records that `login` saw `what` of a case's personal data.
pub fn log_access(conn: &Connection, login: &str, case_id: &str, what: &str, now_ms: u64) -> Result<()> {
    conn.execute(
        "INSERT INTO access_log (at_ms, login, case_id, what) VALUES (?1, ?2, ?3, ?4)",
        params![now_ms, login, case_id, what],
    )?;
    Ok(())
}

/// The latest `limit` lines of the access log, newest first.
pub fn access_log(conn: &Connection, limit: usize) -> Result<Vec<Access>> {
    let mut stmt = conn.prepare("SELECT at_ms, login, case_id, what FROM access_log ORDER BY id DESC LIMIT ?1")?;
    let rows = stmt.query_map([limit as i64], |r| {
        Ok(Access { at_ms: r.get(0)?, login: r.get(1)?, case_id: r.get(2)?, what: r.get(3)? })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Connection {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(
            "CREATE TABLE staff (login TEXT PRIMARY KEY, name TEXT NOT NULL, role TEXT NOT NULL, password TEXT NOT NULL,
              disabled INTEGER NOT NULL DEFAULT 0, failures INTEGER NOT NULL DEFAULT 0,
              locked_until INTEGER NOT NULL DEFAULT 0, created_ms INTEGER NOT NULL);",
        )
        .unwrap();
        c
    }

    #[test]
    fn a_password_is_checked_and_never_stored_in_clear() {
        let c = db();
        add(&c, "wangfang", "王芳", Role::Clerk, "correct horse", 0).unwrap();
        let stored: String = c.query_row("SELECT password FROM staff", [], |r| r.get(0)).unwrap();
        assert!(!stored.contains("correct horse") && stored.starts_with("argon2id$"));
        assert!(log_in(&c, "wangfang", "correct horse", 1).unwrap().is_ok());
        assert_eq!(log_in(&c, "wangfang", "wrong horse", 1).unwrap().unwrap_err(), LoginRefused::WrongPassword);
        assert_eq!(log_in(&c, "nobody", "correct horse", 1).unwrap().unwrap_err(), LoginRefused::WrongPassword);
    }

    #[test]
    fn repeated_wrong_passwords_lock_the_account_for_a_while() {
        let c = db();
        add(&c, "lina", "李娜", Role::Reviewer, "correct horse", 0).unwrap();
        for _ in 1..MAX_FAILURES {
            assert_eq!(log_in(&c, "lina", "nope nope", 10).unwrap().unwrap_err(), LoginRefused::WrongPassword);
        }
        let locked = log_in(&c, "lina", "nope nope", 10).unwrap().unwrap_err();
        assert_eq!(locked, LoginRefused::Locked { until_ms: 10 + LOCK_MS });
        // Even the right password waits for the lock to end.
        assert!(matches!(log_in(&c, "lina", "correct horse", 20).unwrap(), Err(LoginRefused::Locked { .. })));
        assert!(log_in(&c, "lina", "correct horse", 11 + LOCK_MS).unwrap().is_ok());
    }

    #[test]
    fn bad_accounts_are_refused_with_nothing_written() {
        let c = db();
        assert!(add(&c, "a b", "王芳", Role::Clerk, "correct horse", 0).is_err());
        assert!(add(&c, "wf", " ", Role::Clerk, "correct horse", 0).is_err());
        assert!(add(&c, "wf", "王芳", Role::Clerk, "short", 0).is_err());
        assert!(list(&c).unwrap().is_empty());
        add(&c, "wf", "王芳", Role::Clerk, "correct horse", 0).unwrap();
        assert!(add(&c, "wf", "王芳", Role::Clerk, "correct horse", 0).is_err());
        set_disabled(&c, "wf", true).unwrap();
        assert_eq!(log_in(&c, "wf", "correct horse", 1).unwrap().unwrap_err(), LoginRefused::Disabled);
        set_disabled(&c, "wf", false).unwrap();
        assert!(set_password(&c, "wf", "short").is_err(), "too short: refused");
        set_password(&c, "wf", "a new passphrase").unwrap();
        assert_eq!(log_in(&c, "wf", "correct horse", 1).unwrap().unwrap_err(), LoginRefused::WrongPassword);
        assert!(log_in(&c, "wf", "a new passphrase", 1).unwrap().is_ok());
        assert!(set_password(&c, "nobody", "a new passphrase").is_err());
    }
}
