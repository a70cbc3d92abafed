// SPDX-License-Identifier: Apache-2.0
//! The request-level error every layer returns: its own module so that the object graph, the
//! agent state and the HTTP front end share it without depending on each other.

/// A request-level error; the variant decides the HTTP status, the text is the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// Malformed body, unknown field or type, missing parent (400).
    #[error("{0}")]
    BadRequest(String),
    /// Missing or wrong token (401).
    #[error("authentication required")]
    Unauthorized,
    /// Unknown id, name, type or path (404).
    #[error("{0}")]
    NotFound(String),
    /// Duplicate name or uuid, delete with children or back-references left (409).
    #[error("{0}")]
    Conflict(String),
    /// The request body stalled (408); the connection is closed after the answer.
    #[error("{0}")]
    Timeout(String),
    /// The store failed; nothing was acknowledged (503, which the Python client retries).
    #[error("{0}")]
    Unavailable(String),
}

impl ApiError {
    /// HTTP status code for this error.
    pub fn status(&self) -> u16 {
        match self {
            ApiError::BadRequest(_) => 400,
            ApiError::Unauthorized => 401,
            ApiError::NotFound(_) => 404,
            ApiError::Timeout(_) => 408,
            ApiError::Conflict(_) => 409,
            ApiError::Unavailable(_) => 503,
        }
    }
}

/// A 400 with `msg`.
pub(crate) fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::BadRequest(msg.into())
}
