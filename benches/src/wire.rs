//! Wire bytes: what a Redis server itself counts as received (`INFO stats`,
//! `total_net_input_bytes`) per operation, so "bytes sent to the store" includes keys, script SHAs,
//! tokens and RESP framing, not only the item arguments the counting decorator sees.
//!
//! The counter is server-wide: other clients of the same server add to it. Each measurement is
//! taken three times and the smallest is kept (other traffic can only add bytes), and the meter's
//! own `INFO` request is measured the same way and subtracted. Take it on a quiet server.

use std::future::Future;
use std::time::Duration;

use sessions::{BoxError, redact_url};

use crate::error::BenchError;

/// Measures bytes received by one Redis server.
#[derive(Clone)]
pub struct WireMeter {
    backend: &'static str,
    conn: redis::aio::MultiplexedConnection,
}

impl std::fmt::Debug for WireMeter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WireMeter")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

/// `total_net_input_bytes` out of an `INFO stats` reply.
fn parse_input_bytes(info: &str) -> Option<u64> {
    info.lines()
        .find_map(|l| l.strip_prefix("total_net_input_bytes:"))
        .and_then(|v| v.trim().parse().ok())
}

impl WireMeter {
    /// Connects to the Redis server at `url` (reported as `backend`).
    ///
    /// # Errors
    /// [`BenchError::Connect`].
    pub async fn connect(backend: &'static str, url: &str) -> Result<Self, BenchError> {
        let fail = |source: BoxError| BenchError::Connect {
            backend,
            url: redact_url(url),
            source,
        };
        let client = redis::Client::open(url).map_err(|e| fail(e.into()))?;
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(Duration::from_secs(5)));
        let conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| fail(e.into()))?;
        Ok(Self { backend, conn })
    }

    async fn input_bytes(&self) -> Result<u64, BenchError> {
        let mut conn = self.conn.clone();
        let info: String = redis::cmd("INFO")
            .arg("stats")
            .query_async(&mut conn)
            .await
            .map_err(|e| BenchError::Floor {
                backend: self.backend,
                source: e.into(),
            })?;
        parse_input_bytes(&info).ok_or_else(|| BenchError::Floor {
            backend: self.backend,
            source: "INFO stats has no total_net_input_bytes".into(),
        })
    }

    /// Bytes the server received per call of `op`: `op(i)` for `i` in `0..n`, one at a time.
    ///
    /// # Errors
    /// The operation's error; [`BenchError::Floor`] if `INFO` fails.
    pub async fn per_op<F, Fut>(&self, n: u64, mut op: F) -> Result<f64, BenchError>
    where
        F: FnMut(u64) -> Fut,
        Fut: Future<Output = Result<Duration, BenchError>>,
    {
        let mut idle = u64::MAX;
        let mut busy = u64::MAX;
        for round in 0..3 {
            let a = self.input_bytes().await?;
            let b = self.input_bytes().await?;
            idle = idle.min(b.saturating_sub(a));
            for i in 0..n {
                op(round * n + i).await?;
            }
            let c = self.input_bytes().await?;
            busy = busy.min(c.saturating_sub(b));
        }
        Ok(busy.saturating_sub(idle) as f64 / n.max(1) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_bytes_parse() {
        let info = "# Stats\r\ntotal_connections_received:3\r\ntotal_net_input_bytes:12345\r\n\
                    total_net_output_bytes:9\r\n";
        assert_eq!(parse_input_bytes(info), Some(12345));
        assert_eq!(parse_input_bytes("# Stats\r\n"), None);
    }
}
