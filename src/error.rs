//! Errors: a rich internal [`Error`] (thiserror, with context) that the engine and its
//! neighbours use, mapped at the FFI edge to the one public [`TetherError`], whose
//! [`ErrorKind`] is all a host app needs to decide what to do.

use std::sync::Arc;

/// What kind of failure a [`TetherError`] is; foreign code switches on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, uniffi::Enum)]
pub enum ErrorKind {
    /// The `ClientConfig` breaks a rule (bad URL, app or device name, limits).
    InvalidConfig,
    /// A message or room name the SDK refuses to send (bad type, bad JSON, too large).
    InvalidMessage,
    /// The outbound queue holds its maximum count or bytes; retry after acks drain it.
    QueueFull,
    /// The on-disk database failed (disk full, locked by another client, corrupt).
    Storage,
    /// The gateway refused the token, the token provider failed, or the user was kicked.
    Auth,
    /// The connection could not be made or was lost.
    Network,
    /// The gateway sent something the SDK did not expect, or refused a request.
    Protocol,
    /// The client was shut down.
    Shutdown,
}

/// The one error type of the public API: a kind to switch on and a message for humans.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, uniffi::Object)]
#[error("{kind:?}: {message}")]
#[uniffi::export(Debug, Display, Eq)]
pub struct TetherError {
    kind: ErrorKind,
    message: String,
}

#[uniffi::export]
impl TetherError {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// What happened and, where it helps, what to do about it.
    pub fn message(&self) -> String {
        self.message.clone()
    }
}

impl TetherError {
    /// An error of this kind.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        TetherError {
            kind,
            message: message.into(),
        }
    }
}

/// Result of the public API: errors travel as `Arc` because uniffi passes error objects by
/// reference.
pub type TetherResult<T> = Result<T, Arc<TetherError>>;

/// The SDK's internal error, with enough context for logs; see [`Error::kind`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A config field breaks its rule.
    #[error("invalid config: {0}")]
    Config(String),
    /// A message the SDK will not send.
    #[error("invalid message: {0}")]
    Message(String),
    /// The outbound queue is full.
    #[error(transparent)]
    QueueFull(#[from] crate::queue::QueueFull),
    /// The store failed.
    #[error(transparent)]
    Storage(#[from] crate::queue::StorageError),
    /// A token problem.
    #[error("authentication: {0}")]
    Auth(String),
    /// A connection problem.
    #[error("network: {0}")]
    Network(String),
    /// The gateway said or did something unexpected.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The client is shut down.
    #[error("the client was shut down")]
    Shutdown,
}

impl Error {
    /// The public kind this error maps to.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Config(_) => ErrorKind::InvalidConfig,
            Error::Message(_) => ErrorKind::InvalidMessage,
            Error::QueueFull(_) => ErrorKind::QueueFull,
            Error::Storage(_) => ErrorKind::Storage,
            Error::Auth(_) => ErrorKind::Auth,
            Error::Network(_) => ErrorKind::Network,
            Error::Protocol(_) => ErrorKind::Protocol,
            Error::Shutdown => ErrorKind::Shutdown,
        }
    }
}

impl From<Error> for TetherError {
    fn from(e: Error) -> Self {
        TetherError::new(e.kind(), e.to_string())
    }
}

impl From<Error> for Arc<TetherError> {
    fn from(e: Error) -> Self {
        Arc::new(e.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_map_to_the_public_kind_and_keep_their_text() {
        let public: TetherError = Error::Message("type \"Bad\" is not allowed".into()).into();
        assert_eq!(public.kind(), ErrorKind::InvalidMessage);
        assert!(public.message().contains("type \"Bad\""));
        let public: TetherError = Error::Shutdown.into();
        assert_eq!(public.kind(), ErrorKind::Shutdown);
    }
}
