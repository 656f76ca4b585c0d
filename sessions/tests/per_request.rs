//! What each request does on its own through [`SessionLayer`], against every store (memory always,
//! Redis and Postgres from the environment, docs/style.md H10): the keep-alive of a session whose
//! cookie arrives on a route that does not use it, and the store failure a request absorbs with
//! `throwOnError = false`, which is its own and never another request's (docs/contract.md §3).
//! The app is called in process (`tower::ServiceExt::oneshot`), so the responses' extensions are
//! visible. Each trial uses its own application name.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Path;
use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::{Method, Request, StatusCode};
use axum::routing::{get, post};
use axum::{Extension, Router};
use libtest_mimic::Trial;
use session_core::conformance::{Faults, FaultyStore};
use sessions::web::{ExclusiveSession, LastError, ReadOnlySession, SessionError, SessionLayer};
use sessions::{
    AppName, Config, ConfigBuilder, Operation, RefreshWindow, SessionId, SessionManager,
    SessionStore,
};
use test_support::{
    Failed, TestResult, Unconfigured, UrlBehaviour, ensure, fail, url_behaviours, url_trials,
};
use tokio::sync::Barrier;
use tower::ServiceExt;

/// The session cookie's name (the layer's default).
const COOKIE_NAME: &str = "session_id";

// ---------------------------------------------------------------------------------------------
// The application under test.

async fn set_n(session: ExclusiveSession, Path(n): Path<u64>) -> Result<String, SessionError> {
    session.insert("n", &n).await?;
    Ok(n.to_string())
}

async fn read_n(session: ReadOnlySession) -> Result<String, SessionError> {
    Ok(session.get::<u64>("n").await?.unwrap_or(0).to_string())
}

async fn no_session() -> &'static str {
    "no session"
}

/// Opens the session, waits until a second request has opened its own (at most 5 s), then
/// answers what this request's session says about store failures: `error: <cause>` for a
/// degraded session with its cause, `none` for a sound one without, `inconsistent` otherwise.
async fn own_error(
    session: ExclusiveSession, Extension(both_open): Extension<Arc<Barrier>>,
) -> Result<String, SessionError> {
    let wait = both_open.wait();
    if tokio::time::timeout(Duration::from_secs(5), wait)
        .await
        .is_err()
    {
        return Ok("the other request never opened its session".to_owned());
    }
    // Looked at only now, after the other request's open failed or succeeded.
    let degraded = session.is_degraded().await?;
    Ok(match (degraded, session.last_error().await?) {
        (true, Some(err)) => format!("error: {err}"),
        (false, None) => "none".to_owned(),
        (degraded, err) => format!("inconsistent: degraded {degraded}, {err:?}"),
    })
}

fn routes(layer: SessionLayer) -> Router {
    Router::new()
        .route("/set/{n}", post(set_n))
        .route("/n", get(read_n))
        .route("/none", get(no_session))
        .route("/own-error", post(own_error))
        .layer(Extension(Arc::new(Barrier::new(2))))
        .layer(layer)
}

struct App {
    router: Router,
    /// The store under the manager: counts the operations and injects faults.
    faulty: Arc<FaultyStore>,
    manager: SessionManager,
}

#[derive(Debug)]
struct Reply {
    status: StatusCode,
    set_cookies: Vec<String>,
    body: String,
    last_error: Option<LastError>,
}

/// The app on `url`'s store with the trial's own application name; `settings` adjusts the
/// configuration. The store is wrapped in a [`FaultyStore`], which injects nothing unless asked.
async fn app(
    url: &str, trial: &str, settings: impl FnOnce(ConfigBuilder) -> ConfigBuilder,
) -> Result<App, Failed> {
    let app_name = AppName::new(&format!(
        "/per-request-tests/{trial}/{}",
        SessionId::generate()?.expose()
    ))?;
    let config = settings(Config::builder().url(url).application_name(app_name)).build()?;
    let faulty = Arc::new(Faults::wrap(sessions::connect(&config).await?));
    let manager = SessionManager::new(Arc::clone(&faulty) as Arc<dyn SessionStore>, &config);
    Ok(App {
        router: routes(SessionLayer::new(manager.clone())),
        faulty,
        manager,
    })
}

impl App {
    /// Sends one request, with `id` as the session cookie's value if given.
    async fn send(&self, method: Method, path: &str, id: Option<&str>) -> Result<Reply, Failed> {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(id) = id {
            request = request.header(COOKIE, format!("other=1; {COOKIE_NAME}={id}"));
        }
        let response = match self
            .router
            .clone()
            .oneshot(request.body(Body::empty())?)
            .await
        {
            Ok(response) => response,
            Err(never) => match never {},
        };
        let status = response.status();
        let set_cookies = response
            .headers()
            .get_all(SET_COOKIE)
            .iter()
            .map(|v| v.to_str().map(str::to_owned))
            .collect::<Result<Vec<_>, _>>()?;
        let last_error = response.extensions().get::<LastError>().cloned();
        let body = axum::body::to_bytes(response.into_body(), 1 << 16).await?;
        Ok(Reply {
            status,
            set_cookies,
            body: String::from_utf8(body.to_vec())?,
            last_error,
        })
    }

    /// `path` must answer 200 with `body` and set no cookie.
    async fn expect(&self, method: Method, path: &str, id: Option<&str>, body: &str) -> TestResult {
        let reply = self.send(method.clone(), path, id).await?;
        ensure!(
            reply.status == StatusCode::OK && reply.body == body && reply.set_cookies.is_empty(),
            "{method} {path}: expected 200 {body:?} without Set-Cookie, got {reply:?}"
        );
        Ok(())
    }

    /// A new stored session with `n`; returns its id.
    async fn session_with(&self, n: u64) -> Result<String, Failed> {
        let reply = self.send(Method::POST, &format!("/set/{n}"), None).await?;
        let prefix = format!("{COOKIE_NAME}=");
        reply
            .set_cookies
            .iter()
            .find_map(|c| Some(c.strip_prefix(&prefix)?.split(';').next()?.to_owned()))
            .filter(|id| !id.is_empty())
            .ok_or_else(|| fail(format!("a new stored session issues a cookie: {reply:?}")))
    }

    /// How many store operations `body` performed (this app's store sees no one else's).
    async fn operations<F: Future<Output = TestResult>>(&self, body: F) -> Result<u32, Failed> {
        let before = self.faulty.calls();
        body.await?;
        Ok(self.faulty.calls() - before)
    }
}

// ---------------------------------------------------------------------------------------------
// Keep-alive.

/// A route without a session extractor, called with the cookie of a stored session, costs exactly
/// one store operation (the `touch`) and sets no cookie. A route that uses the session costs its
/// open only (its read slid the expiry), also when that open fails. No cookie, a malformed one:
/// no store operation. An id with no live session: one `touch`, which creates nothing.
async fn unused_session_is_touched_once(url: String) -> TestResult {
    let app = app(&url, "touched_once", |b| b).await?;
    let id = app.session_with(7).await?;
    let unused = app.expect(Method::GET, "/none", Some(&id), "no session");
    let n = app.operations(unused).await?;
    ensure!(
        n == 1,
        "an unused session is kept alive by one touch: {n} operations"
    );
    let used = app.expect(Method::GET, "/n", Some(&id), "7");
    let n = app.operations(used).await?;
    ensure!(
        n == 1,
        "a route that reads its session does not touch it as well: {n}"
    );
    for cookie in [None, Some("not-an-id"), Some("")] {
        let n = app
            .operations(app.expect(Method::GET, "/none", cookie, "no session"))
            .await?;
        ensure!(
            n == 0,
            "no well-formed id ({cookie:?}), no store operation: {n}"
        );
    }
    let unknown = SessionId::generate()?;
    let n = app
        .operations(app.expect(Method::GET, "/none", Some(unknown.expose()), "no session"))
        .await?;
    ensure!(n == 1, "an unknown id is touched once: {n}");
    ensure!(
        !app.manager.keep_alive(unknown.expose()).await?,
        "touching an unknown id creates nothing"
    );
    // A route whose open fails (here: the store) used the session: no touch after it.
    app.faulty.fail_before(1);
    let failed = async {
        let reply = app.send(Method::GET, "/n", Some(&id)).await?;
        ensure!(
            reply.status == StatusCode::SERVICE_UNAVAILABLE,
            "the failed open answers 503: {reply:?}"
        );
        Ok(())
    };
    let n = app.operations(failed).await?;
    ensure!(n == 1, "the failed open is not followed by a touch: {n}");
    Ok(())
}

/// `skipKeepAliveWhenUnused = true`: a route without a session extractor never reaches the store.
async fn skip_keep_alive_when_unused_touches_nothing(url: String) -> TestResult {
    let app = app(&url, "skip_keep_alive", |b| {
        b.skip_keep_alive_when_unused(true)
    })
    .await?;
    let id = app.session_with(7).await?;
    let unused = app.expect(Method::GET, "/none", Some(&id), "no session");
    let n = app.operations(unused).await?;
    ensure!(n == 0, "keep-alive is off: {n} operations");
    Ok(())
}

/// With a 1.2 s session timeout (exact sliding, so that every touch writes), a user who only
/// visits session-less pages every 0.4 s for 2 s keeps the session; with
/// `skipKeepAliveWhenUnused` the same visits let it expire.
async fn keep_alive_slides_the_expiry(url: String) -> TestResult {
    for keep_alive in [true, false] {
        let app = app(&url, "slides_the_expiry", |b| {
            b.session_timeout(Duration::from_millis(1200))
                .refresh_window(RefreshWindow::EXACT)
                .skip_keep_alive_when_unused(!keep_alive)
        })
        .await?;
        let id = app.session_with(7).await?;
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(400)).await;
            app.expect(Method::GET, "/none", Some(&id), "no session")
                .await?;
        }
        let (want, what) = if keep_alive {
            ("7", "the session-less visits kept the session alive")
        } else {
            ("0", "without keep-alive the session expired")
        };
        let reply = app.send(Method::GET, "/n", Some(&id)).await?;
        ensure!(
            reply.body == want,
            "{what}: expected n = {want}, got {reply:?}"
        );
    }
    Ok(())
}

/// A keep-alive whose store fails never changes the handler's response, whether the manager
/// returns the failure (`throwOnError = true`) or absorbs it (`false`, kept as the manager's
/// latest error).
async fn failed_keep_alive_leaves_the_response_alone(url: String) -> TestResult {
    for throw_on_error in [true, false] {
        let app = app(&url, "failed_keep_alive", |b| {
            b.throw_on_error(throw_on_error)
        })
        .await?;
        let id = app.session_with(7).await?;
        app.faulty.fail_before_on(Operation::Touch, 1);
        let reply = app.send(Method::GET, "/none", Some(&id)).await?;
        ensure!(
            reply.status == StatusCode::OK && reply.body == "no session",
            "throwOnError = {throw_on_error}: the handler's response stands: {reply:?}"
        );
        ensure!(
            reply.set_cookies.is_empty() && reply.last_error.is_none(),
            "throwOnError = {throw_on_error}: no cookie, no request error: {reply:?}"
        );
        ensure!(
            app.manager.last_error().is_some() != throw_on_error,
            "throwOnError = {throw_on_error}: only an absorbed failure is the manager's latest"
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The request's own error.

/// Two concurrent requests of two sessions with `throwOnError = false`, the first `acquire`
/// failing: both open their session before either looks, and each sees only its own error (the
/// degraded one its cause, the other none), in the handler and in the response's [`LastError`].
/// The manager's `last_error` is the latest of any request.
async fn concurrent_requests_see_only_their_own_error(url: String) -> TestResult {
    let app = app(&url, "own_error", |b| b.throw_on_error(false)).await?;
    let (a, b) = (app.session_with(1).await?, app.session_with(2).await?);
    app.faulty.fail_before_on(Operation::Acquire, 1);
    let (first, second) = tokio::join!(
        app.send(Method::POST, "/own-error", Some(&a)),
        app.send(Method::POST, "/own-error", Some(&b)),
    );
    let mut replies = [first?, second?];
    replies.sort_by(|x, y| x.body.cmp(&y.body));
    let [failed, sound] = replies;
    ensure!(
        failed.status == StatusCode::OK && failed.body.starts_with("error: "),
        "the request whose acquire failed sees its cause: {failed:?}"
    );
    ensure!(
        sound.status == StatusCode::OK && sound.body == "none",
        "the other request sees no error, although it looked after the failure: {sound:?}"
    );
    let cause = failed.last_error.as_ref().map(|e| e.error().operation());
    ensure!(
        cause == Some(Some(Operation::Acquire)),
        "the degraded request's response carries its cause: {failed:?}"
    );
    ensure!(
        sound.last_error.is_none(),
        "the sound request's response carries none: {sound:?}"
    );
    ensure!(
        app.manager.last_error().is_some(),
        "the manager keeps the latest error of any request"
    );
    Ok(())
}

/// A save that fails after the handler, with `throwOnError = false`: the response stays the
/// handler's 200 and carries the cause as [`LastError`]; nothing was saved.
async fn failed_save_reaches_the_response_as_last_error(url: String) -> TestResult {
    let app = app(&url, "failed_save", |b| b.throw_on_error(false)).await?;
    let id = app.session_with(7).await?;
    app.faulty.fail_before_on(Operation::Commit, 1);
    let reply = app.send(Method::POST, "/set/8", Some(&id)).await?;
    ensure!(
        reply.status == StatusCode::OK && reply.body == "8",
        "the handler's response stands: {reply:?}"
    );
    let cause = reply.last_error.as_ref().map(|e| e.error().operation());
    ensure!(
        cause == Some(Some(Operation::Commit)),
        "the response carries the failed commit: {reply:?}"
    );
    app.expect(Method::GET, "/n", Some(&id), "7").await?;
    let reply = app.send(Method::POST, "/set/9", Some(&id)).await?;
    ensure!(
        reply.last_error.is_none(),
        "a later request of the same session has no error: {reply:?}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Runner.

fn behaviours() -> Vec<(&'static str, UrlBehaviour)> {
    url_behaviours![
        unused_session_is_touched_once,
        skip_keep_alive_when_unused_touches_nothing,
        keep_alive_slides_the_expiry,
        failed_keep_alive_leaves_the_response_alone,
        concurrent_requests_see_only_their_own_error,
        failed_save_reaches_the_response_as_last_error,
    ]
}

/// The trials of one store, `<prefix>::<behaviour>`: every behaviour on `url`, or, without its
/// server, as test-support's require-or-ignore rule says.
fn store(prefix: &str, url: Result<String, Unconfigured>) -> Vec<Trial> {
    url_trials(prefix, url, behaviours(), Duration::from_secs(60))
}

fn main() -> std::process::ExitCode {
    let args = libtest_mimic::Arguments::from_args();
    let mut trials = store("memory", Ok("memory://".to_owned()));
    let redis = test_support::redis().map(|s| s.url().to_owned());
    trials.extend(store("redis", redis));
    let postgres = test_support::postgres().map(|s| s.url().to_owned());
    trials.extend(store("postgres", postgres));
    libtest_mimic::run(&args, trials).exit_code()
}
