//! A counter with login and logout on axum, against any session store by URL or by an ASP.NET
//! application's `web.config`.
//!
//! ```sh
//! cargo run -p sessions --features axum --example axum_app -- memory://
//! cargo run -p sessions --features axum,redis --example axum_app -- redis://127.0.0.1:6379
//! cargo run -p sessions --features axum,postgres --example axum_app -- postgres://sess:sesspw@127.0.0.1:5433/sessdb
//! cargo run -p sessions --features axum,redis --example axum_app -- --web-config sessions/tests/web_config/seed-sample.config
//! ```
//!
//! The store is, in this order: `--web-config FILE` (its `<sessionState>`: the store, the timeouts
//! and the cookie's name, `ASP.NET_SessionId` unless `cookieName` says otherwise), a URL as the
//! first argument, the `web.config` file `SESSION_WEB_CONFIG` names, the URL `SESSION_STORE_URL`,
//! else `memory://` (with a URL the cookie is `counter`). The address is `LISTEN` (default
//! `127.0.0.1:3000`). Then, with curl keeping the cookie:
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

/// Where the sessions are: a `web.config` file or a store URL.
enum Sessions {
    WebConfig(String),
    Url(String),
}

/// The command line (`--web-config FILE`, `--web-config=FILE` or a URL), then the environment.
fn sessions_from_args() -> Result<Sessions, String> {
    let mut args = std::env::args().skip(1);
    match args.next() {
        Some(flag) if flag == "--web-config" => args
            .next()
            .map(Sessions::WebConfig)
            .ok_or_else(|| "--web-config needs a file".to_owned()),
        Some(flag) if flag.starts_with("--web-config=") => Ok(Sessions::WebConfig(
            flag["--web-config=".len()..].to_owned(),
        )),
        Some(flag) if flag.starts_with("--") => Err(format!(
            "unknown option {flag}: give a store URL or --web-config FILE"
        )),
        Some(url) => Ok(Sessions::Url(url)),
        None => Ok(match std::env::var("SESSION_WEB_CONFIG") {
            Ok(file) if !file.is_empty() => Sessions::WebConfig(file),
            _ => Sessions::Url(std::env::var("SESSION_STORE_URL").unwrap_or_else(|_| {
                // The demo's choice, said aloud: a library call never picks memory by itself.
                eprintln!(
                    "no store given (a URL, --web-config FILE, SESSION_WEB_CONFIG or \
                     SESSION_STORE_URL): this demo uses memory://, lost on restart"
                );
                "memory://".to_owned()
            })),
        }),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listen = std::env::var("LISTEN").unwrap_or_else(|_| "127.0.0.1:3000".to_owned());

    // `Secure` stays on: browsers and curl send it over plain HTTP to localhost only.
    let (layer, store) = match sessions_from_args()? {
        Sessions::WebConfig(file) => {
            let web_config = sessions::WebConfig::from_path(&file)?;
            let manager = sessions::open(web_config.config()).await?;
            let store = format!(
                "the {} store of {file} (mode {:?}{})",
                manager.store().backend(),
                web_config.mode(),
                web_config
                    .provider_name()
                    .map(|p| format!(", provider {p}"))
                    .unwrap_or_default()
            );
            let layer = SessionLayer::new(manager).with_cookie(web_config.cookie_options());
            (layer, store)
        }
        Sessions::Url(url) => {
            let manager = sessions::open_url(&url).await?;
            let layer =
                SessionLayer::new(manager).with_cookie(CookieOptions::new().with_name("counter")?);
            (layer, sessions::redact_url(&url))
        }
    };

    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!(
        "listening on http://{} (sessions in {store})",
        listener.local_addr()?
    );
    axum::serve(listener, app(layer)).await?;
    Ok(())
}
