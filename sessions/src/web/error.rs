//! [`SessionError`]: what the extractors and the layer answer when the session cannot be used or
//! saved, as an HTTP response; and [`LastError`], the store failure a request absorbed instead.

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use session_core::{Access, Error};

/// A session failure in a web request. Handlers can return it (it implements
/// [`IntoResponse`]), and `?` converts [`session_core::Error`] into it.
///
/// | error | status |
/// |---|---|
/// | the lock was lost, or a lock-free write found the session gone: nothing was saved | 409 Conflict |
/// | too many requests wait for this session, the lock wait timed out, the store is unreachable or timed out | 503 Service Unavailable |
/// | the session would exceed the maximum session size ([`Error::SessionTooLarge`]) | 413 Payload Too Large |
/// | anything else (bad item, corrupt data, misuse) | 500 Internal Server Error |
///
/// The body is a short fixed text that names no internals; the error itself is logged with
/// `tracing` when it becomes a response: at `warn` for what a client can cause (409, 503, 413, and
/// an invalid item name or an item that does not decode), at `error` for the rest.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The session manager or the store failed.
    #[error(transparent)]
    Session(#[from] Error),
    /// A session extractor ran on a route without [`SessionLayer`](super::SessionLayer).
    #[error("no SessionLayer on this route: add it with Router::layer")]
    MissingLayer,
    /// The session was used after the layer ended it, or released it unsaved because the request
    /// panicked or was dropped (from a task that outlived its request).
    #[error("the request's session has already been ended")]
    Ended,
    /// The session was still in use (a [`SessionGuard`](super::SessionGuard) or
    /// [`ReadOnlyGuard`](super::ReadOnlyGuard) held, or a handle's method running, in a task the
    /// handler spawned or in the response body) when the layer's wait after the handler ran out ([`SessionLayer::with_end_wait`](super::SessionLayer::with_end_wait)):
    /// nothing was saved, and the session is released as soon as that use ends.
    #[error(
        "the request's session was still in use {waited:?} after the handler returned; \
         released unsaved"
    )]
    StillInUse {
        /// How long the layer waited.
        waited: std::time::Duration,
    },
    /// Two extractors of one request asked for incompatible access modes (an `Exclusive` session
    /// after a `ReadOnly` or `Concurrent` one: its lock was not taken).
    #[error("the session was opened {opened:?} in this request and cannot be used {wanted:?}")]
    AccessConflict {
        /// How the session was opened.
        opened: Access,
        /// What the later extractor asked for.
        wanted: Access,
    },
}

impl SessionError {
    /// The response status for this error (see the table above).
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Session(Error::LockLost { .. } | Error::SessionGone { .. }) => {
                StatusCode::CONFLICT
            }
            Self::Session(
                Error::TooManyWaiters { .. }
                | Error::WaitTimeout { .. }
                | Error::Unavailable { .. }
                | Error::Timeout { .. },
            ) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Session(Error::SessionTooLarge { .. }) => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Whether a client can cause this error with its input (logged at `warn`, not `error`).
    fn client_caused(&self) -> bool {
        matches!(
            self,
            Self::Session(
                Error::SessionTooLarge { .. } | Error::InvalidName { .. } | Error::Decode { .. }
            )
        )
    }
}

impl IntoResponse for SessionError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = match status {
            StatusCode::CONFLICT => {
                tracing::warn!(error = %self, "session changes rejected");
                "the session was taken over by another request; this request's changes were not saved"
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                tracing::warn!(error = %self, "session not available");
                "the session is busy or its store is unavailable; try again"
            }
            StatusCode::PAYLOAD_TOO_LARGE => {
                tracing::warn!(error = %self, "session change rejected");
                "the session would be too large"
            }
            _ if self.client_caused() => {
                tracing::warn!(error = %self, "session error");
                "session error"
            }
            _ => {
                tracing::error!(error = %self, "session error");
                "session error"
            }
        };
        (status, body).into_response()
    }
}

/// The store failure a request's session absorbed with `throwOnError = false` (ASP.NET's
/// per-request `LastException`): [`SessionLayer`](super::SessionLayer) puts it into the
/// response's extensions when the session the handler opened was degraded, or when saving it
/// failed ([`EndOutcome::NotSaved`](session_core::EndOutcome::NotSaved)), so that a layer outside
/// it (logging, metrics) can see it: `response.extensions().get::<LastError>()`. The response
/// itself is the handler's. It is this request's own error, never another's. Handlers see the
/// error of a degraded session through the extractors' `last_error`.
#[derive(Debug, Clone)]
pub struct LastError(Arc<Error>);

impl LastError {
    pub(super) fn new(error: Arc<Error>) -> Self {
        Self(error)
    }

    /// The error.
    pub fn error(&self) -> &Arc<Error> {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use session_core::Operation;

    use super::*;

    #[test]
    fn statuses_follow_the_table() {
        let lost = SessionError::from(Error::LockLost {
            operation: Operation::Commit,
        });
        assert_eq!(lost.into_response().status(), StatusCode::CONFLICT);
        let busy = SessionError::from(Error::WaitTimeout {
            waited: Duration::from_secs(1),
        });
        assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);
        let full = SessionError::from(Error::TooManyWaiters { limit: 1 });
        assert_eq!(full.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            SessionError::MissingLayer.status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        let large = SessionError::from(Error::SessionTooLarge { size: 2, limit: 1 });
        assert!(large.client_caused());
        assert_eq!(
            large.into_response().status(),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        let name = SessionError::from(Error::InvalidName {
            kind: "item name",
            reason: "empty",
        });
        assert!(name.client_caused());
        assert_eq!(name.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!SessionError::MissingLayer.client_caused());
        assert_eq!(
            SessionError::from(Error::NotWritable("read-only")).status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }

    /// The body is one of four fixed texts whatever the error holds: no driver message, host,
    /// password, application or id prefix reaches the client (docs/security.md §2.4).
    #[tokio::test]
    async fn bodies_are_fixed_and_name_no_internals() {
        use http_body_util::BodyExt;

        const SECRET: &str = "host=db.internal password=hunter2 app=shop id=0123456789abcdef";
        let fixed = [
            "the session was taken over by another request; this request's changes were not saved",
            "the session is busy or its store is unavailable; try again",
            "the session would be too large",
            "session error",
        ];
        let errors = [
            Error::Unavailable {
                backend: "postgres",
                operation: Operation::Acquire,
                source: SECRET.into(),
            },
            Error::Backend {
                backend: "redis",
                operation: Operation::Commit,
                source: SECRET.into(),
            },
            Error::Corrupt {
                backend: "mysql",
                app: SECRET.to_owned(),
                id_prefix: "012345".to_owned(),
                source: SECRET.into(),
            },
            Error::LockLost {
                operation: Operation::Commit,
            },
            Error::SessionTooLarge { size: 2, limit: 1 },
        ];
        for error in errors {
            let shown = error.to_string();
            let response = SessionError::from(error).into_response();
            let bytes = response
                .into_body()
                .collect()
                .await
                .expect("a fixed body")
                .to_bytes();
            let body = std::str::from_utf8(&bytes).expect("UTF-8");
            assert!(fixed.contains(&body), "{shown}: unexpected body {body:?}");
            for secret in [
                "hunter2",
                "db.internal",
                "shop",
                "012345",
                "postgres",
                "redis",
            ] {
                assert!(!body.contains(secret), "{shown}: the body names {secret:?}");
            }
        }
    }
}
