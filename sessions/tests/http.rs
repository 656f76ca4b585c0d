//! End to end over real HTTP: an axum app with [`SessionLayer`] on `127.0.0.1:0`, driven by a hyper
//! client, against every store: memory always, Redis and Postgres on the servers `test-support`
//! reads from the environment. A store whose server is not configured is ignored with the reason,
//! unless it is required, in which case it fails (docs/style.md H10).
//! Each trial uses its own application name, so runs cannot see each other's sessions.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::Router;
use axum::extract::Path;
use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::{HeaderValue, Method, Request, StatusCode};
use axum::routing::{get, post};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use libtest_mimic::Trial;
use session_core::conformance::{Faults, FaultyStore};
use sessions::web::{
    ConcurrentSession, CookieOptions, ExclusiveSession, ReadOnlySession, SessionError, SessionLayer,
};
use sessions::{Access, AppName, Config, ConfigBuilder, SessionId, SessionManager, SessionStore};
use test_support::{
    Failed, TestResult, Unconfigured, UrlBehaviour, ensure, fail, url_behaviours, url_trials,
};
use tokio::sync::oneshot;
use tower_http::catch_panic::CatchPanicLayer;

// ---------------------------------------------------------------------------------------------
// The application under test.

async fn reset(session: ExclusiveSession) -> Result<&'static str, SessionError> {
    session.insert("n", &0u64).await?;
    Ok("0")
}

async fn set_n(session: ExclusiveSession, Path(n): Path<u64>) -> Result<String, SessionError> {
    session.insert("n", &n).await?;
    Ok(n.to_string())
}

/// Read, pause, write: without the exclusive lock, concurrent requests would lose updates.
async fn increment(session: ExclusiveSession) -> Result<String, SessionError> {
    let n = session.get::<u64>("n").await?.unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(1)).await;
    session.insert("n", &(n + 1)).await?;
    Ok((n + 1).to_string())
}

async fn read_n(session: ReadOnlySession) -> Result<String, SessionError> {
    Ok(session.get::<u64>("n").await?.unwrap_or(0).to_string())
}

/// Writes one change in two items, with a pause between them.
async fn write_pair(
    session: ExclusiveSession, Path(k): Path<u64>,
) -> Result<&'static str, SessionError> {
    session.insert("a", &k).await?;
    tokio::time::sleep(Duration::from_millis(2)).await;
    session.insert("b", &k).await?;
    Ok("ok")
}

async fn read_pair(session: ReadOnlySession) -> Result<String, SessionError> {
    let a = session.get::<u64>("a").await?.unwrap_or(0);
    let b = session.get::<u64>("b").await?.unwrap_or(0);
    Ok(format!("{a},{b}"))
}

/// The message of the expected panic, which the runner keeps out of the test output.
const PANIC: &str = "the handler failed half way";

async fn panics(session: ExclusiveSession) -> Result<&'static str, SessionError> {
    session.insert("n", &999u64).await?;
    panic!("{PANIC}");
}

/// Hands a clone of its session to a task that keeps it for a minute (uses it after 2 s, and
/// reports what that use answered), then panics.
async fn spawns_then_panics(
    session: ExclusiveSession, Extension(late_use): Extension<LateUse>,
) -> Result<&'static str, SessionError> {
    session.insert("n", &999u64).await?;
    let held = session.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let answer = held.insert("n", &1000u64).await;
        if let Some(tx) = late_use.lock().await.take() {
            let _ = tx.send(answer);
        }
        tokio::time::sleep(Duration::from_secs(60)).await;
        drop(held);
    });
    panic!("{PANIC}");
}

/// Changes the session, then hands a clone to a task that locks it (a `SessionGuard`) and keeps
/// the guard for 3 s, past the layer's end wait.
async fn guard_kept_in_task(session: ExclusiveSession) -> Result<&'static str, SessionError> {
    session.insert("n", &999u64).await?;
    let (locked_tx, locked_rx) = oneshot::channel();
    let held = session.clone();
    tokio::spawn(async move {
        if let Ok(guard) = held.lock().await {
            let _ = locked_tx.send(());
            tokio::time::sleep(Duration::from_secs(3)).await;
            drop(guard);
        }
    });
    let _ = locked_rx.await;
    Ok("ok")
}

/// Where the task of [`spawns_then_panics`] reports its late use of the session.
type LateUse = Arc<tokio::sync::Mutex<Option<oneshot::Sender<Result<(), SessionError>>>>>;

async fn fails(session: ExclusiveSession) -> Result<(StatusCode, &'static str), SessionError> {
    session.insert("n", &42u64).await?;
    Ok((StatusCode::INTERNAL_SERVER_ERROR, "failed"))
}

async fn slow_set(
    session: ExclusiveSession, Path((ms, value)): Path<(u64, String)>,
) -> Result<&'static str, SessionError> {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    session.insert("x", &value).await?;
    Ok("ok")
}

async fn read_x(session: ReadOnlySession) -> Result<String, SessionError> {
    Ok(session.get::<String>("x").await?.unwrap_or_default())
}

async fn login(
    session: ExclusiveSession, Path(user): Path<String>,
) -> Result<&'static str, SessionError> {
    session.insert("user", &user).await?;
    session.renew_id().await?;
    Ok("ok")
}

async fn logout(session: ExclusiveSession) -> Result<&'static str, SessionError> {
    session.abandon().await?;
    Ok("ok")
}

async fn read_user(session: ReadOnlySession) -> Result<String, SessionError> {
    Ok(session.get::<String>("user").await?.unwrap_or_default())
}

/// Lock-free: sets its own item after `ms`; concurrent requests neither wait nor overwrite each
/// other's items.
async fn mark(
    session: ConcurrentSession, Path((i, ms)): Path<(u64, u64)>,
) -> Result<&'static str, SessionError> {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    session.insert(&format!("m{i}"), &i).await?;
    Ok("ok")
}

async fn count_marks(session: ReadOnlySession) -> Result<String, SessionError> {
    let guard = session.lock().await?;
    Ok(guard
        .names()
        .iter()
        .filter(|n| n.starts_with('m'))
        .count()
        .to_string())
}

async fn no_session() -> &'static str {
    "no session"
}

/// Logs in (renewing the id), then makes the next store operation, the end of the request's
/// commit, fail.
async fn login_then_store_fails(
    session: ExclusiveSession, Extension(faulty): Extension<Arc<FaultyStore>>,
    Path(user): Path<String>,
) -> Result<&'static str, SessionError> {
    session.insert("user", &user).await?;
    session.renew_id().await?;
    faulty.fail_before(1);
    Ok("ok")
}

/// The app; `faulty` is the store under the manager, for the routes that inject faults, and
/// `late_use` where `/spawn-then-panic` reports.
fn app(layer: SessionLayer, faulty: Arc<FaultyStore>, late_use: LateUse) -> Router {
    Router::new()
        .route("/login-then-fail/{user}", post(login_then_store_fails))
        .route("/reset", post(reset))
        .route("/set-n/{n}", post(set_n))
        .route("/incr", post(increment))
        .route("/n", get(read_n))
        .route("/pair/{k}", post(write_pair))
        .route("/pair", get(read_pair))
        .route("/panic", post(panics))
        .route("/spawn-then-panic", post(spawns_then_panics))
        .route("/guard-in-task", post(guard_kept_in_task))
        .route("/fail", post(fails))
        .route("/slow/{ms}/{value}", post(slow_set))
        .route("/x", get(read_x))
        .route("/login/{user}", post(login))
        .route("/logout", post(logout))
        .route("/user", get(read_user))
        .route("/mark/{i}/{ms}", post(mark))
        .route("/marks", get(count_marks))
        .route("/none", get(no_session))
        .layer(Extension(faulty))
        .layer(Extension(late_use))
        .layer(layer)
        .layer(CatchPanicLayer::new())
}

// ---------------------------------------------------------------------------------------------
// Server and client.

struct Server {
    addr: SocketAddr,
    client: Client<HttpConnector, String>,
    cookie: String,
    manager: SessionManager,
    late_use: LateUse,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Debug)]
struct Reply {
    status: StatusCode,
    set_cookies: Vec<String>,
    body: String,
}

/// Starts the app on `url`'s store with the trial's own application name; `settings` adjusts the
/// configuration. The store is wrapped in a [`FaultyStore`], which injects nothing unless a trial
/// asks it to. The layer waits at most 1 s after the handler for the session (`with_end_wait`).
async fn serve(
    url: &str, trial: &str, settings: impl FnOnce(ConfigBuilder) -> ConfigBuilder,
    cookie: CookieOptions,
) -> Result<Server, Failed> {
    let app_name = AppName::new(&format!(
        "/http-tests/{trial}/{}",
        SessionId::generate()?.expose()
    ))?;
    let builder = Config::builder()
        .url(url)
        .application_name(app_name)
        .max_waiters_per_session(300);
    let config = settings(builder).build()?;
    let faulty = Arc::new(Faults::wrap(sessions::connect(&config).await?));
    let manager = SessionManager::new(Arc::clone(&faulty) as Arc<dyn SessionStore>, &config);
    let cookie_name = cookie.name().to_owned();
    let layer = SessionLayer::new(manager.clone())
        .with_cookie(cookie)
        .with_end_wait(Duration::from_secs(1));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let fault_routes = Arc::clone(&faulty);
    let late_use = LateUse::default();
    let app_late_use = Arc::clone(&late_use);
    let task = tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app(layer, fault_routes, app_late_use)).await {
            eprintln!("test server stopped: {err}");
        }
    });
    let client = Client::builder(TokioExecutor::new()).build_http();
    Ok(Server {
        addr,
        client,
        cookie: cookie_name,
        manager,
        late_use,
        task,
    })
}

async fn serve_default(url: &str, trial: &str) -> Result<Server, Failed> {
    serve(url, trial, |b| b, CookieOptions::new()).await
}

impl Server {
    /// Sends one request, with `cookie` as the raw value of the session cookie if given.
    async fn send(
        &self, method: Method, path: &str, cookie: Option<&str>,
    ) -> Result<Reply, Failed> {
        let lines = match cookie {
            Some(value) => vec![format!("other=1; {}={value}", self.cookie).into_bytes()],
            None => Vec::new(),
        };
        self.send_raw(method, path, &lines).await
    }

    /// Sends one request with `cookie_lines` as its `Cookie` header lines, byte for byte.
    async fn send_raw(
        &self, method: Method, path: &str, cookie_lines: &[Vec<u8>],
    ) -> Result<Reply, Failed> {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr));
        for line in cookie_lines {
            request = request.header(COOKIE, HeaderValue::from_bytes(line)?);
        }
        let response = self.client.request(request.body(String::new())?).await?;
        let status = response.status();
        let set_cookies = response
            .headers()
            .get_all(SET_COOKIE)
            .iter()
            .map(|v| v.to_str().map(str::to_owned))
            .collect::<Result<Vec<_>, _>>()?;
        let body = response.into_body().collect().await?.to_bytes();
        Ok(Reply {
            status,
            set_cookies,
            body: String::from_utf8(body.to_vec())?,
        })
    }

    async fn post(&self, path: &str, cookie: Option<&str>) -> Result<Reply, Failed> {
        self.send(Method::POST, path, cookie).await
    }

    async fn get(&self, path: &str, cookie: Option<&str>) -> Result<Reply, Failed> {
        self.send(Method::GET, path, cookie).await
    }

    /// `path` must answer 200 with `body`.
    async fn expect(
        &self, method: Method, path: &str, cookie: Option<&str>, body: &str,
    ) -> TestResult {
        let reply = self.send(method.clone(), path, cookie).await?;
        ensure!(
            reply.status == StatusCode::OK && reply.body == body,
            "{method} {path}: expected 200 {body:?}, got {reply:?}"
        );
        Ok(())
    }

    /// The session id a reply's `Set-Cookie` issues (not a clearing cookie).
    fn issued(&self, reply: &Reply) -> Option<String> {
        let prefix = format!("{}=", self.cookie);
        reply.set_cookies.iter().find_map(|c| {
            let value = c.strip_prefix(&prefix)?.split(';').next()?;
            (!value.is_empty()).then(|| value.to_owned())
        })
    }

    /// A fresh session with `n = 0`; returns its id.
    async fn fresh_session(&self) -> Result<String, Failed> {
        let reply = self.post("/reset", None).await?;
        ensure!(reply.status == StatusCode::OK, "/reset: {reply:?}");
        self.issued(&reply)
            .ok_or_else(|| fail(format!("a new stored session issues a cookie: {reply:?}")))
    }
}

// ---------------------------------------------------------------------------------------------
// Behaviours.

/// 200 concurrent `Exclusive` increments of one session end at exactly 200, each seeing a
/// different count: the lock serializes them (without it, the read-pause-write handler loses
/// updates).
async fn exclusive_counter_loses_no_update(url: String) -> TestResult {
    let server = serve_default(&url, "exclusive_counter").await?;
    let id = server.fresh_session().await?;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..200 {
        let (client, addr, cookie, id) = (
            server.client.clone(),
            server.addr,
            server.cookie.clone(),
            id.clone(),
        );
        tasks.spawn(async move {
            let request = Request::post(format!("http://{addr}/incr"))
                .header(COOKIE, format!("{cookie}={id}"))
                .body(String::new())?;
            let response = client.request(request).await?;
            let status = response.status();
            let fresh_cookie = response.headers().contains_key(SET_COOKIE);
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<_, Failed>((status, fresh_cookie, String::from_utf8(body.to_vec())?))
        });
    }
    let mut seen = Vec::new();
    while let Some(done) = tasks.join_next().await {
        let (status, fresh_cookie, body) = done??;
        ensure!(
            status == StatusCode::OK,
            "an increment failed: {status} {body}"
        );
        ensure!(!fresh_cookie, "the session's id must not change");
        seen.push(body.parse::<u64>()?);
    }
    seen.sort_unstable();
    ensure!(
        seen == (1..=200).collect::<Vec<_>>(),
        "every increment must see a distinct count 0..200 (lost updates?): {seen:?}"
    );
    server.expect(Method::GET, "/n", Some(&id), "200").await
}

/// Read-only requests running beside exclusive writers see each write whole: a write sets `a`
/// and `b` to the same value, and no reader ever sees them differ.
async fn read_only_never_sees_half_a_change(url: String) -> TestResult {
    let server = serve_default(&url, "read_only_beside_writer").await?;
    let id = server.fresh_session().await?;
    server
        .expect(Method::POST, "/pair/0", Some(&id), "ok")
        .await?;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..90u64 {
        let (client, addr, cookie, id) = (
            server.client.clone(),
            server.addr,
            server.cookie.clone(),
            id.clone(),
        );
        // Two readers per writer, interleaved.
        let (method, path) = if i % 3 == 0 {
            (Method::POST, format!("/pair/{}", i / 3 + 1))
        } else {
            (Method::GET, "/pair".to_owned())
        };
        tasks.spawn(async move {
            let request = Request::builder()
                .method(method.clone())
                .uri(format!("http://{addr}{path}"))
                .header(COOKIE, format!("{cookie}={id}"))
                .body(String::new())?;
            let response = client.request(request).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<_, Failed>((method, status, String::from_utf8(body.to_vec())?))
        });
    }
    let mut reads = 0;
    while let Some(done) = tasks.join_next().await {
        let (method, status, body) = done??;
        ensure!(status == StatusCode::OK, "{method}: {status} {body}");
        if method == Method::GET {
            reads += 1;
            let (a, b) = body
                .split_once(',')
                .ok_or_else(|| fail(format!("bad reply {body:?}")))?;
            ensure!(a == b, "a reader saw half a change: a = {a}, b = {b}");
            ensure!(a.parse::<u64>()? <= 30, "a value no writer wrote: {a}");
        }
    }
    ensure!(reads == 60, "{reads} reads");
    let last = server.get("/pair", Some(&id)).await?;
    let (a, b) = last.body.split_once(',').unwrap_or_default();
    ensure!(a == b && a != "0", "after the writers: {last:?}");
    Ok(())
}

/// An unknown id, and any malformed or hostile cookie value, is never adopted: the request gets a
/// fresh session whose new id the response issues, and the client's id still finds nothing.
async fn unknown_session_id_is_replaced(url: String) -> TestResult {
    let server = serve_default(&url, "unknown_id").await?;
    let unknown = SessionId::generate()?.expose().to_owned();
    let long = "a".repeat(8 * 1024);
    let hostile = [
        unknown.as_str(),
        "../../etc/passwd",
        "{app}_id",
        "%00%7B%7D",
        // No `;`: the value must reach the layer whole, not be cut at a cookie separator.
        "'OR'1'='1'--DROP_TABLE_sessions",
        "ABCDEF0123456789ABCDEF0123456789",
        long.as_str(),
    ];
    for sent in hostile {
        let reply = server.post("/incr", Some(sent)).await?;
        ensure!(
            reply.status == StatusCode::OK && reply.body == "1",
            "cookie {:.40?}: a fresh session counts from 1: {reply:?}",
            sent
        );
        let issued = server
            .issued(&reply)
            .ok_or_else(|| fail(format!("a fresh stored session issues a cookie: {reply:?}")))?;
        ensure!(issued != sent, "the client's id was adopted");
        SessionId::parse(&issued)?;
        // The new id finds the session; the client's id does not.
        server
            .expect(Method::POST, "/incr", Some(&issued), "2")
            .await?;
    }
    let probe = server
        .manager
        .open(Some(&unknown), Access::ReadOnly)
        .await?;
    ensure!(probe.is_new(), "the unknown id must not exist in the store");
    // A request that stores nothing issues nothing, even for an unknown id.
    let reply = server.get("/n", Some(&unknown)).await?;
    ensure!(
        reply.body == "0" && reply.set_cookies.is_empty(),
        "a read-only look at an unknown id: {reply:?}"
    );
    Ok(())
}

/// Another cookie with non-ASCII (`José` in UTF-8) or non-UTF-8 (Latin-1) bytes, in the same
/// `Cookie` line or in a line of its own, does not hide the session cookie: the request finds its
/// session (the count goes on, and no new id is issued).
async fn non_ascii_cookie_keeps_the_session(url: String) -> TestResult {
    let server = serve_default(&url, "non_ascii_cookie").await?;
    let id = server.fresh_session().await?;
    let sid = format!("{}={id}", server.cookie);
    let cases = [
        vec![format!("name=José; {sid}").into_bytes()],
        vec![[b"name=Jos\xe9; ".as_slice(), sid.as_bytes()].concat()],
        vec![[sid.as_bytes(), b"; x=\xff"].concat()],
        vec![b"name=Jos\xe9".to_vec(), sid.clone().into_bytes()],
    ];
    for (n, lines) in (1u64..).zip(cases) {
        let reply = server.send_raw(Method::POST, "/incr", &lines).await?;
        ensure!(
            reply.status == StatusCode::OK
                && reply.body == n.to_string()
                && reply.set_cookies.is_empty(),
            "cookie lines {:?}: the session must be found (count {n}, no new id): {reply:?}",
            lines
                .iter()
                .map(|l| String::from_utf8_lossy(l))
                .collect::<Vec<_>>()
        );
    }
    Ok(())
}

/// The cookie carries the configured name, `Path` and `Domain`, `HttpOnly`, `SameSite=Lax`, and
/// `Secure` when configured; logout clears it with the same attributes; routes without a session
/// and sessions that store nothing set no cookie.
async fn cookie_attributes_are_as_configured(url: String) -> TestResult {
    let cookie = CookieOptions::new()
        .with_name("sid_test")?
        .with_path("/app")?
        .with_domain(Some("example.test"))?;
    let server = serve(&url, "cookie_attributes", |b| b, cookie).await?;
    let reply = server.post("/reset", None).await?;
    let id = server
        .issued(&reply)
        .ok_or_else(|| fail(format!("no cookie: {reply:?}")))?;
    ensure!(
        reply.set_cookies
            == [format!(
                "sid_test={id}; HttpOnly; SameSite=Lax; Secure; Path=/app; Domain=example.test"
            )],
        "{:?}",
        reply.set_cookies
    );
    let reply = server.post("/logout", Some(&id)).await?;
    ensure!(
        reply.set_cookies
            == [
                "sid_test=; HttpOnly; SameSite=Lax; Secure; Path=/app; Domain=example.test; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT"
            ],
        "logout clears the cookie: {:?}",
        reply.set_cookies
    );
    for path in ["/none", "/n", "/user"] {
        let reply = server.get(path, None).await?;
        ensure!(
            reply.status == StatusCode::OK && reply.set_cookies.is_empty(),
            "{path} stores nothing and sets no cookie: {reply:?}"
        );
    }
    // Defaults, with Secure off (a plain-HTTP development host).
    let plain = serve(
        &url,
        "cookie_attributes_plain",
        |b| b,
        CookieOptions::new().with_secure(false),
    )
    .await?;
    let reply = plain.post("/reset", None).await?;
    let id = plain
        .issued(&reply)
        .ok_or_else(|| fail(format!("no cookie: {reply:?}")))?;
    ensure!(
        reply.set_cookies == [format!("session_id={id}; HttpOnly; SameSite=Lax; Path=/")],
        "{:?}",
        reply.set_cookies
    );
    Ok(())
}

/// A server on which a lock left held would outlast the test (60 s lock TTL, 5 s lock wait: the
/// next exclusive request would answer 503), and a stored session whose `n` is 5.
async fn session_at_five(url: &str, trial: &str) -> Result<(Server, String), Failed> {
    let server = serve(
        url,
        trial,
        |b| {
            b.lock_ttl(Duration::from_secs(60))
                .lock_wait_timeout(Duration::from_secs(5))
        },
        CookieOptions::new(),
    )
    .await?;
    let id = server.fresh_session().await?;
    server
        .expect(Method::POST, "/set-n/5", Some(&id), "5")
        .await?;
    Ok((server, id))
}

/// A handler that panics after changing its session answers 500 (CatchPanicLayer), and the
/// session is left unlocked and unchanged: with a 60 s lock TTL and a 5 s lock wait, the next
/// exclusive request would fail with 503 if the lock were still held.
async fn panicking_handler_leaves_session_unlocked_and_unchanged(url: String) -> TestResult {
    let (server, id) = session_at_five(&url, "panicking_handler").await?;
    let reply = server.post("/panic", Some(&id)).await?;
    ensure!(
        reply.status == StatusCode::INTERNAL_SERVER_ERROR && reply.set_cookies.is_empty(),
        "a panicking handler answers 500: {reply:?}"
    );
    // Unlocked: this exclusive request gets the lock; unchanged: 5, not 999, before it.
    server.expect(Method::POST, "/incr", Some(&id), "6").await?;
    Ok(())
}

/// A handler that panics while a task it spawned still holds a handle to the session: the layer
/// releases the session unsaved anyway, so the next exclusive request gets the lock at once (with a
/// 60 s lock TTL, a 1-minute task and a 5 s lock wait, it would fail with 503 if the handle kept
/// the lock) and sees none of the panicking request's changes; the task's late use of its handle
/// answers `Ended` and changes nothing.
async fn spawned_task_handle_does_not_keep_the_lock(url: String) -> TestResult {
    let (server, id) = session_at_five(&url, "spawned_task_handle").await?;
    let (tx, rx) = oneshot::channel();
    *server.late_use.lock().await = Some(tx);
    let reply = server.post("/spawn-then-panic", Some(&id)).await?;
    ensure!(
        reply.status == StatusCode::INTERNAL_SERVER_ERROR && reply.set_cookies.is_empty(),
        "a panicking handler answers 500: {reply:?}"
    );
    server.expect(Method::POST, "/incr", Some(&id), "6").await?;
    let late = rx.await?;
    ensure!(
        matches!(late, Err(SessionError::Ended)),
        "a handle used after the request was dropped must answer Ended: {late:?}"
    );
    server.expect(Method::GET, "/n", Some(&id), "6").await
}

/// A `SessionGuard` kept in a spawned task past the layer's end wait (1 s) does not hang the
/// request: it answers 500 without saving, and the session is released once the guard is dropped
/// (3 s), so the next exclusive request (5 s lock wait, 60 s lock TTL) gets it, unchanged.
async fn guard_kept_past_the_end_wait_answers_500(url: String) -> TestResult {
    let (server, id) = session_at_five(&url, "guard_past_end_wait").await?;
    let reply = server.post("/guard-in-task", Some(&id)).await?;
    ensure!(
        reply.status == StatusCode::INTERNAL_SERVER_ERROR && reply.set_cookies.is_empty(),
        "a session still in use after the end wait answers 500: {reply:?}"
    );
    server.expect(Method::POST, "/incr", Some(&id), "6").await
}

/// A handler that returns an error response still saves its changes (as ASP.NET does for a
/// request that completes); only a panic or a dropped request discards them.
async fn error_response_still_saves(url: String) -> TestResult {
    let server = serve_default(&url, "error_response").await?;
    let id = server.fresh_session().await?;
    let reply = server.post("/fail", Some(&id)).await?;
    ensure!(
        reply.status == StatusCode::INTERNAL_SERVER_ERROR && reply.body == "failed",
        "{reply:?}"
    );
    server.expect(Method::GET, "/n", Some(&id), "42").await
}

/// Login renews the id (session fixation): the response issues a new id that keeps the data,
/// and the old id finds nothing. Logout abandons: the cookie is cleared and the session gone.
async fn login_renews_id_and_logout_abandons(url: String) -> TestResult {
    let server = serve_default(&url, "login_logout").await?;
    let before = server.fresh_session().await?;
    server
        .expect(Method::POST, "/incr", Some(&before), "1")
        .await?;
    let reply = server.post("/login/alice", Some(&before)).await?;
    ensure!(reply.status == StatusCode::OK, "{reply:?}");
    let after = server
        .issued(&reply)
        .ok_or_else(|| fail(format!("login issues the renewed id: {reply:?}")))?;
    ensure!(after != before, "login must renew the id");
    server
        .expect(Method::GET, "/user", Some(&after), "alice")
        .await?;
    server.expect(Method::GET, "/n", Some(&after), "1").await?;
    server
        .expect(Method::GET, "/user", Some(&before), "")
        .await?;
    server.expect(Method::GET, "/n", Some(&before), "0").await?;

    let reply = server.post("/logout", Some(&after)).await?;
    ensure!(
        reply.status == StatusCode::OK
            && reply.set_cookies.len() == 1
            && reply.set_cookies[0].starts_with("session_id=; ")
            && reply.set_cookies[0].contains("Max-Age=0"),
        "logout clears the cookie: {reply:?}"
    );
    server
        .expect(Method::GET, "/user", Some(&after), "")
        .await?;
    server.expect(Method::GET, "/n", Some(&after), "0").await?;
    Ok(())
}

/// A login whose end-of-request save fails after `renew_id` moved the session to a new id still
/// hands the client the new id, with `throwOnError` on (the response becomes the 503 of the store
/// failure) and off (the response stays 200, nothing saved): the old id finds nothing any more, so
/// without the cookie the client would have lost its session. The new id finds the session as it
/// was before the login, unlocked.
async fn renewed_id_is_issued_when_the_save_fails(url: String) -> TestResult {
    for throw_on_error in [true, false] {
        let server = serve(
            &url,
            "renew_then_fail",
            |b| {
                b.throw_on_error(throw_on_error)
                    .lock_ttl(Duration::from_secs(60))
                    .lock_wait_timeout(Duration::from_secs(5))
            },
            CookieOptions::new(),
        )
        .await?;
        let before = server.fresh_session().await?;
        server
            .expect(Method::POST, "/incr", Some(&before), "1")
            .await?;
        let reply = server.post("/login-then-fail/alice", Some(&before)).await?;
        let status = if throw_on_error {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::OK
        };
        ensure!(
            reply.status == status,
            "throwOnError = {throw_on_error}: expected {status}: {reply:?}"
        );
        let after = server.issued(&reply).ok_or_else(|| {
            fail(format!(
                "throwOnError = {throw_on_error}: the renewed id must be issued: {reply:?}"
            ))
        })?;
        ensure!(after != before, "the id must have been renewed");
        // Not saved: no user; the session (n = 1) lives on under the new id, unlocked.
        server
            .expect(Method::GET, "/user", Some(&after), "")
            .await?;
        server
            .expect(Method::POST, "/incr", Some(&after), "2")
            .await?;
        server.expect(Method::GET, "/n", Some(&before), "0").await?;
    }
    Ok(())
}

/// A request that outlives the lock TTL loses its lock to the next request; its commit is
/// rejected (`LockLost`) and the layer answers 409 instead of the handler's 200. The newer write
/// stands.
async fn lock_lost_commit_becomes_409(url: String) -> TestResult {
    let server = serve(
        &url,
        "lock_lost",
        |b| {
            b.lock_ttl(Duration::from_millis(400))
                .lock_wait_timeout(Duration::from_secs(10))
                .poll_interval(Duration::from_millis(50))
        },
        CookieOptions::new(),
    )
    .await?;
    let id = server.fresh_session().await?;
    let slow = {
        let (client, addr, cookie, id) = (
            server.client.clone(),
            server.addr,
            server.cookie.clone(),
            id.clone(),
        );
        tokio::spawn(async move {
            let request = Request::post(format!("http://{addr}/slow/2500/slow"))
                .header(COOKIE, format!("{cookie}={id}"))
                .body(String::new())?;
            let response = client.request(request).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<_, Failed>((status, String::from_utf8(body.to_vec())?))
        })
    };
    // Well past the lock TTL, while the slow request still holds the lock.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    server
        .expect(Method::POST, "/slow/0/fast", Some(&id), "ok")
        .await?;
    let (status, body) = slow.await??;
    ensure!(
        status == StatusCode::CONFLICT,
        "the slow request's commit must be rejected with 409: {status} {body}"
    );
    server.expect(Method::GET, "/x", Some(&id), "fast").await
}

/// `Concurrent` routes take no lock: a fast request finishes while a slow one of the same session
/// is still running (an exclusive route would wait for it), and their writes merge per item, so
/// none of 20 concurrent requests' items is lost.
async fn concurrent_routes_neither_wait_nor_lose_items(url: String) -> TestResult {
    let server = serve_default(&url, "concurrent_routes").await?;
    let id = server.fresh_session().await?;
    let slow = {
        let (client, addr, cookie, id) = (
            server.client.clone(),
            server.addr,
            server.cookie.clone(),
            id.clone(),
        );
        tokio::spawn(async move {
            let request = Request::post(format!("http://{addr}/mark/0/1500"))
                .header(COOKIE, format!("{cookie}={id}"))
                .body(String::new())?;
            Ok::<_, Failed>(client.request(request).await?.status())
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    server
        .expect(Method::POST, "/mark/1/0", Some(&id), "ok")
        .await?;
    ensure!(
        !slow.is_finished(),
        "a concurrent request must not wait for another concurrent request of its session"
    );
    let mut tasks = tokio::task::JoinSet::new();
    for i in 2..=20u64 {
        let (client, addr, cookie, id) = (
            server.client.clone(),
            server.addr,
            server.cookie.clone(),
            id.clone(),
        );
        tasks.spawn(async move {
            let request = Request::post(format!("http://{addr}/mark/{i}/{}", i % 3))
                .header(COOKIE, format!("{cookie}={id}"))
                .body(String::new())?;
            Ok::<_, Failed>(client.request(request).await?.status())
        });
    }
    while let Some(done) = tasks.join_next().await {
        let status = done??;
        ensure!(
            status == StatusCode::OK,
            "a concurrent mark failed: {status}"
        );
    }
    let status = slow.await??;
    ensure!(status == StatusCode::OK, "the slow mark failed: {status}");
    server.expect(Method::GET, "/marks", Some(&id), "21").await
}

// ---------------------------------------------------------------------------------------------
// Runner.

fn behaviours() -> Vec<(&'static str, UrlBehaviour)> {
    url_behaviours![
        exclusive_counter_loses_no_update,
        read_only_never_sees_half_a_change,
        unknown_session_id_is_replaced,
        non_ascii_cookie_keeps_the_session,
        cookie_attributes_are_as_configured,
        panicking_handler_leaves_session_unlocked_and_unchanged,
        spawned_task_handle_does_not_keep_the_lock,
        guard_kept_past_the_end_wait_answers_500,
        error_response_still_saves,
        login_renews_id_and_logout_abandons,
        renewed_id_is_issued_when_the_save_fails,
        lock_lost_commit_becomes_409,
        concurrent_routes_neither_wait_nor_lose_items,
    ]
}

/// The trials of one store, `<prefix>::<behaviour>`: every behaviour on `url`, or, without its
/// server, as test-support's require-or-ignore rule says.
fn store(prefix: &str, url: Result<String, Unconfigured>) -> Vec<Trial> {
    url_trials(prefix, url, behaviours(), Duration::from_secs(180))
}

fn main() -> std::process::ExitCode {
    let mut args = libtest_mimic::Arguments::from_args();
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if info.payload().downcast_ref::<String>().map(String::as_str) != Some(PANIC) {
            default_hook(info);
        }
    }));
    // Each trial runs its own server and 200 clients; two at a time suit a 2-core machine.
    if args.test_threads.is_none() {
        args.test_threads = Some(2);
    }
    let mut trials = store("memory", Ok("memory://".to_owned()));
    let redis = test_support::redis().map(|s| s.url().to_owned());
    trials.extend(store("redis", redis));
    let postgres = test_support::postgres().map(|s| s.url().to_owned());
    trials.extend(store("postgres", postgres));
    libtest_mimic::run(&args, trials).exit_code()
}
