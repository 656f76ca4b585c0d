//! A counter with login and logout on axum, against any session store by URL.
//!
//! ```sh
//! cargo run -p sessions --features axum --example axum_app -- memory://
//! cargo run -p sessions --features axum,redis --example axum_app -- redis://127.0.0.1:6379
//! cargo run -p sessions --features axum,postgres --example axum_app -- postgres://sess:sesspw@127.0.0.1:5433/sessdb
//! ```
//!
//! The store URL is the first argument, else `SESSION_STORE_URL`, else `memory://`; the address
//! is `LISTEN` (default `127.0.0.1:3000`). Then, with curl keeping the cookie:
//!
//! ```sh
//! curl -c jar -b jar -X POST localhost:3000/increment     # 1, 2, 3 ...
//! curl -c jar -b jar -X POST localhost:3000/login/alice   # new session id (session fixation)
//! curl -c jar -b jar localhost:3000/                      # user alice, count 3
//! curl -c jar -b jar -X POST localhost:3000/logout        # session deleted, cookie cleared
//! ```

use axum::Router;
use axum::extract::Path;
use axum::routing::{get, post};
use sessions::web::{CookieOptions, ExclusiveSession, ReadOnlySession, SessionError, SessionLayer};
use tower_http::catch_panic::CatchPanicLayer;

/// Shows the session: read-only, so it never waits for or blocks the other pages of the session
/// beyond a running writer.
async fn show(session: ReadOnlySession) -> Result<String, SessionError> {
    let count = session.get::<u64>("count").await?.unwrap_or(0);
    let user = session.get::<String>("user").await?;
    Ok(match user {
        Some(user) => format!("user {user}, count {count}\n"),
        None => format!("anonymous, count {count}\n"),
    })
}

/// Increments the counter: exclusive (the default), so concurrent clicks never lose one.
async fn increment(session: ExclusiveSession) -> Result<String, SessionError> {
    let count = session.get::<u64>("count").await?.unwrap_or(0) + 1;
    session.insert("count", &count).await?;
    Ok(format!("{count}\n"))
}

/// Logs in: a real application checks a password first. The id is renewed, so an id planted
/// before login (session fixation) is worth nothing after it.
async fn login(
    session: ExclusiveSession, Path(user): Path<String>,
) -> Result<String, SessionError> {
    session.insert("user", &user).await?;
    session.renew_id().await?;
    Ok(format!("logged in as {user}\n"))
}

/// Logs out: the session is deleted and the cookie cleared.
async fn logout(session: ExclusiveSession) -> Result<&'static str, SessionError> {
    session.abandon().await?;
    Ok("logged out\n")
}

fn app(layer: SessionLayer) -> Router {
    Router::new()
        .route("/", get(show))
        .route("/increment", post(increment))
        .route("/login/{user}", post(login))
        .route("/logout", post(logout))
        .layer(layer)
        // Outside the session layer: a panicking handler answers 500 and its session is released
        // unsaved.
        .layer(CatchPanicLayer::new())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("SESSION_STORE_URL").ok())
        .unwrap_or_else(|| "memory://".to_owned());
    let listen = std::env::var("LISTEN").unwrap_or_else(|_| "127.0.0.1:3000".to_owned());

    let manager = sessions::open_url(&url).await?;
    // `Secure` stays on: browsers and curl send it over plain HTTP to localhost only.
    let layer = SessionLayer::new(manager).with_cookie(CookieOptions::new().with_name("counter")?);

    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!(
        "listening on http://{} (sessions in {})",
        listener.local_addr()?,
        sessions::redact_url(&url)
    );
    axum::serve(listener, app(layer)).await?;
    Ok(())
}
