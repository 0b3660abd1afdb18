//! The errors of `node`'s library boundary (the `Ledger`): a command
//! declined with a typed reason (nothing written), a damaged store, a
//! storage failure, or anything else. The binaries turn them into words
//! (`anyhow` lives only there); the desks match on `Declined`.

use crate::ledger::Declined;

/// What went wrong in a ledger operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Refused with a typed reason; nothing was written.
    #[error(transparent)]
    Declined(#[from] Declined),
    /// The store is damaged (`verify --repair` says what can be done).
    #[error("the store is damaged: {0}")]
    Corrupt(String),
    /// A material file's stored bytes do not match its hash (altered or
    /// damaged on disk): not served; it can be fetched again from a peer.
    #[error("{0}")]
    DamagedFile(String),
    /// SQLite failed (the disk, a lock held too long, …).
    #[error("storage failed: {0}")]
    Storage(#[source] rusqlite::Error),
    /// A sync session with a peer failed or was refused (what to do next
    /// depends on its kind).
    #[error(transparent)]
    Peer(#[from] PeerError),
    /// Anything else, with its context.
    #[error("{0:#}")]
    Other(anyhow::Error),
}

/// A sync session that did not complete. What it had stored stays stored;
/// the next session resumes from there.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct PeerError {
    pub kind: PeerErrorKind,
    /// In words for the staff at the laptop, with what to do next.
    pub message: String,
}

/// Why a sync session did not complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerErrorKind {
    /// No answer at the address, or it could not be resolved.
    Unreachable,
    /// The peer refused this node (revoked, or not a sync edge the county
    /// drew), or this node refused the peer for the same reasons.
    NotAdmitted,
    /// The peer is serving as many connections as it can: try again shortly.
    Busy,
    /// One side was too slow (opening, saying Hello, or the whole session).
    TooSlow,
    /// The connection was lost in the middle (network down, peer stopped).
    Lost,
    /// The peer broke the protocol (a malformed or oversized frame, a
    /// format version not agreed on), or ended its session with a failure.
    Protocol,
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<anyhow::Error> for Error {
    fn from(e: anyhow::Error) -> Error {
        if crate::integrity::is_corruption(&e) {
            return Error::Corrupt(format!("{e:#}"));
        }
        let e = match e.downcast::<Declined>() {
            Ok(d) => return Error::Declined(d),
            Err(e) => e,
        };
        let e = match e.downcast::<Error>() {
            Ok(inner) => return inner,
            Err(e) => e,
        };
        if let Some(kind) = e.downcast_ref::<PeerError>().map(|p| p.kind) {
            // The whole chain, which says which peer and what to do next.
            return Error::Peer(PeerError { kind, message: format!("{e:#}") });
        }
        match e.downcast::<rusqlite::Error>() {
            Ok(s) => Error::Storage(s),
            Err(e) => Error::Other(e),
        }
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Error {
        Error::from(anyhow::Error::from(e))
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Error {
        Error::Other(e.into())
    }
}

impl From<proto::sync::SyncError> for Error {
    fn from(e: proto::sync::SyncError) -> Error {
        Error::Other(e.into())
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Error {
        Error::Other(e.into())
    }
}

impl Error {
    /// The typed reason, when the command was declined.
    pub fn declined(&self) -> Option<&Declined> {
        match self {
            Error::Declined(d) => Some(d),
            _ => None,
        }
    }
}

/// The declined reason inside an `anyhow` error from a ledger call, if
/// that is what it is (for callers that hold errors as `anyhow`).
pub fn declined_of(e: &anyhow::Error) -> Option<&Declined> {
    e.downcast_ref::<Declined>().or_else(|| e.downcast_ref::<Error>().and_then(Error::declined))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_declined_command_stays_typed_through_anyhow() {
        let e: Error = anyhow::Error::from(Declined::Recovering).into();
        assert!(matches!(e, Error::Declined(Declined::Recovering)));
        let wrapped = anyhow::Error::from(Error::Declined(Declined::Invalid("x".into())));
        assert!(matches!(declined_of(&wrapped), Some(Declined::Invalid(_))));
        let sql: Error = rusqlite::Error::InvalidQuery.into();
        assert!(matches!(sql, Error::Storage(_)));
    }
}
