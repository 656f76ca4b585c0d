//! Fuzzing on stable Rust (issue 14): hostile `Cookie` headers through the whole web layer
//! (`SessionLayer` on the memory store, the axum service called in process). The parser alone is
//! fuzzed in `src/web/cookie/fuzz.rs`; here the property is what a client gets: any header is
//! answered (never a panic, never a 500), an id the store does not know is never adopted (the
//! client gets a fresh session, under an id it did not send), and the session cookie of a live
//! session, among hostile neighbours, still reaches that session.
//!
//! CI runs the case counts below; set `PROPTEST_CASES` to run more locally
//! (`PROPTEST_CASES=20000 cargo test -p sessions --features axum --test fuzz_cookie --release`).

use std::future::poll_fn;

use axum::Router;
use axum::body::Body;
use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::{HeaderValue, Request, StatusCode};
use axum::routing::post;
use http_body_util::BodyExt;
use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};
use sessions::web::{ExclusiveSession, SessionError, SessionLayer};
use tower::Service;

/// `default` cases, unless `PROPTEST_CASES` says otherwise (`ProptestConfig::default` reads it).
fn cases(default: u32) -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = default;
    }
    config
}

async fn increment(session: ExclusiveSession) -> Result<String, SessionError> {
    let n = session.get::<u64>("n").await?.unwrap_or(0);
    session.insert("n", &(n + 1)).await?;
    Ok((n + 1).to_string())
}

struct Answer {
    status: StatusCode,
    body: String,
    /// The id of the session cookie the response sets, if any.
    issued: Option<String>,
}

async fn call(app: &Router, lines: &[Vec<u8>]) -> Answer {
    let mut app = app.clone();
    let mut request = Request::post("/incr")
        .body(Body::empty())
        .expect("a request");
    for line in lines {
        request
            .headers_mut()
            .append(COOKIE, HeaderValue::from_bytes(line).expect("valid bytes"));
    }
    poll_fn(|cx| <Router as Service<Request<Body>>>::poll_ready(&mut app, cx))
        .await
        .expect("ready");
    let response = app.call(request).await.expect("infallible");
    let status = response.status();
    let issued = response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix("session_id="))
        .map(|v| v.split(';').next().unwrap_or_default().to_owned());
    let body = response
        .into_body()
        .collect()
        .await
        .expect("a body")
        .to_bytes();
    Answer {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
        issued,
    }
}

/// Header bytes that `HeaderValue` accepts: cookie punctuation, the cookie's name, hex digits,
/// visible ASCII and obs-text (not UTF-8 alone).
fn header_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            4 => prop::sample::select(b"; =\"\t,session_id0af".to_vec()),
            2 => 0x20u8..0x7f,
            1 => 0x80u8..=0xff,
        ],
        0..100,
    )
}

/// Hostile cookie lines: any bytes, or the session cookie holding well-formed ids that no
/// session has (a client trying to choose its id, session fixation), upper-case ids, or ids of
/// the wrong length.
fn hostile_lines() -> impl Strategy<Value = Vec<Vec<u8>>> {
    let line = prop_oneof![
        header_bytes(),
        "[0-9a-f]{32}".prop_map(|id| format!("session_id={id}").into_bytes()),
        "[0-9a-fA-F]{30,34}".prop_map(|id| format!("a=1; session_id=\"{id}\"; b=2").into_bytes()),
    ];
    prop::collection::vec(line, 0..3)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

fn app(runtime: &tokio::runtime::Runtime) -> Router {
    let manager = runtime
        .block_on(sessions::open_url("memory://"))
        .expect("the memory store");
    Router::new()
        .route("/incr", post(increment))
        .layer(SessionLayer::new(manager))
}

/// Any cookie header (500 cases): 200 with a fresh session (its count starts at 1) under a new
/// id that the request did not carry.
#[test]
fn hostile_cookies_get_fresh_sessions() {
    let runtime = runtime();
    let app = app(&runtime);
    let mut config = cases(500);
    config.source_file = Some(file!());
    let mut runner = TestRunner::new(config);
    runner
        .run(&hostile_lines(), |lines| {
            let answer = runtime.block_on(call(&app, &lines));
            prop_assert_eq!(answer.status, StatusCode::OK, "{:?}", lines);
            prop_assert_eq!(answer.body.as_str(), "1", "{:?}", lines);
            let issued = answer
                .issued
                .ok_or_else(|| TestCaseError::fail(format!("no cookie for {lines:?}")))?;
            prop_assert!(sessions::SessionId::parse(&issued).is_ok(), "{issued:?}");
            prop_assert!(
                !lines
                    .iter()
                    .any(|l| l.windows(32).any(|w| w == issued.as_bytes())),
                "adopted {issued:?} from {lines:?}"
            );
            Ok(())
        })
        .expect("hostile cookies get fresh sessions");
}

/// A live session's cookie among hostile neighbours (300 cases, one session): every request
/// reaches it (the count goes up by one each time) and no new cookie is issued.
#[test]
fn a_live_session_is_found_among_hostile_neighbours() {
    let runtime = runtime();
    let app = app(&runtime);
    let first = runtime.block_on(call(&app, &[]));
    let id = first.issued.expect("a first cookie");
    let count = std::cell::Cell::new(1u64);
    // Neighbours: any bytes without `;` (a whole pair each), or the cookie's name with a
    // malformed id (skipped by the reader).
    let neighbour = prop_oneof![
        prop::collection::vec(
            prop_oneof![0x20u8..0x3b, 0x3cu8..0x7f, 0x80u8..=0xff],
            0..30
        )
        .prop_filter("not the session cookie", |b| {
            !String::from_utf8_lossy(b)
                .trim_start()
                .starts_with("session_id")
        }),
        "[0-9a-f]{31}|[0-9a-f]{33}|[0-9A-F]{32}"
            .prop_map(|v| format!("session_id={v}").into_bytes()),
    ];
    let strategy = (
        prop::collection::vec(neighbour.clone(), 0..5),
        prop::collection::vec(neighbour, 0..5),
    );
    let mut config = cases(300);
    config.source_file = Some(file!());
    let mut runner = TestRunner::new(config);
    runner
        .run(&strategy, |(before, after)| {
            let pair = format!("session_id={id}").into_bytes();
            let line = before
                .into_iter()
                .chain([pair])
                .chain(after)
                .collect::<Vec<_>>()
                .join(&b"; "[..]);
            let answer = runtime.block_on(call(&app, std::slice::from_ref(&line)));
            prop_assert_eq!(answer.status, StatusCode::OK);
            let n: u64 = answer
                .body
                .parse()
                .map_err(|_| TestCaseError::fail(format!("body {:?}", answer.body)))?;
            prop_assert_eq!(n, count.get() + 1, "{:?}", String::from_utf8_lossy(&line));
            count.set(n);
            prop_assert_eq!(answer.issued, None);
            Ok(())
        })
        .expect("the session is found");
}
