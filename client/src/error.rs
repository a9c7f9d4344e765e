use crate::proto::{ErrorCode, ProtoError};
use std::path::PathBuf;

/// A call that could not be carried out (a denied verify is not an error: see
/// [`crate::Denied`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The socket could not be reached.
    #[error("cannot reach authenta-keyd at {}: {source} (is `authenta-keyd serve` running? set --socket or AUTHENTA_SOCKET)", path.display())]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The connection broke mid-call; the next call reconnects.
    #[error("connection to authenta-keyd failed: {0}")]
    Io(#[from] std::io::Error),
    /// The daemon speaks another protocol version.
    #[error("authenta-keyd speaks protocol version {supported}, this client {ours}: {message}")]
    VersionMismatch {
        supported: u16,
        ours: u16,
        message: String,
    },
    /// A message did not encode or decode.
    #[error("protocol error: {0}")]
    Protocol(#[from] ProtoError),
    /// The daemon answered something this call does not expect.
    #[error("unexpected answer from authenta-keyd: {0}")]
    Unexpected(String),
    /// The daemon refused or failed the request, and says why.
    #[error("{message}")]
    Refused { code: ErrorCode, message: String },
}

impl Error {
    /// Whether the connection is unusable after this error, so the next call must reconnect.
    pub(crate) fn breaks_connection(&self) -> bool {
        !matches!(self, Error::Refused { .. })
    }
}
