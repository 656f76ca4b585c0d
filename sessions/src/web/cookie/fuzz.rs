//! Fuzzing on stable Rust (docs/security.md): property tests of [`CookieOptions::read`], the parser of the
//! client's `Cookie` headers. CI runs the case counts below; `PROPTEST_CASES` runs more
//! (`PROPTEST_CASES=100000 cargo test -p sessions --features axum --lib cookie::fuzz`).

use axum::http::header::COOKIE;
use axum::http::{HeaderMap, HeaderValue};
use proptest::prelude::*;
use session_core::SessionId;

use super::CookieOptions;

/// `default` cases, unless `PROPTEST_CASES` says otherwise (`ProptestConfig::default` reads it).
fn cases(default: u32) -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = default;
    }
    config
}

/// The header lines that `HeaderValue::from_bytes` accepts (tab, visible ASCII, space and the
/// obs-text bytes 0x80..=0xFF, which are not UTF-8 on their own); others never reach the layer.
fn header_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            4 => prop::sample::select(b"; =\"\t,session_id0af".to_vec()),
            2 => 0x20u8..0x7f,
            1 => 0x80u8..=0xff,
        ],
        0..120,
    )
}

fn headers(lines: &[Vec<u8>]) -> Option<HeaderMap> {
    let mut map = HeaderMap::new();
    for line in lines {
        map.append(COOKIE, HeaderValue::from_bytes(line).ok()?);
    }
    Some(map)
}

/// A value that is never a well-formed id, even after trimming and unquoting: an id with one
/// character made invalid, or one character short or long.
fn malformed_id() -> impl Strategy<Value = String> {
    prop_oneof![
        (
            "[0-9a-f]{32}",
            0usize..32,
            prop::sample::select(vec!['G', 'A', '%', 'é', '"'])
        )
            .prop_map(|(id, at, c)| {
                let mut chars: Vec<char> = id.chars().collect();
                chars[at] = c;
                chars.into_iter().collect()
            }),
        "[0-9a-f]{31}",
        "[0-9a-f]{33}",
        "\"?[0-9a-f]{0,31}\"?",
    ]
}

/// A pair that is not the session cookie holding a well-formed id: another name with any
/// value (no `;`), or the session cookie's name with a malformed value.
fn other_pair() -> impl Strategy<Value = Vec<u8>> {
    let value = prop::collection::vec(
        prop_oneof![0x20u8..0x3b, 0x3cu8..0x7f, 0x80u8..=0xff, Just(b'\t')],
        0..24,
    );
    prop_oneof![
        ("[a-zA-Z_.-]{1,12}", value)
            .prop_filter("another name", |(name, _)| name != "session_id")
            .prop_map(|(name, value)| [name.as_bytes(), b"=", &value].concat()),
        malformed_id().prop_map(|v| format!("session_id={v}").into_bytes()),
        prop::collection::vec(prop_oneof![Just(b' '), Just(b'='), Just(b'\t')], 0..4),
    ]
}

proptest! {
    #![proptest_config(cases(2000))]

    /// Any `Cookie` lines (2000 cases): reading never panics, and an id it finds is one the
    /// lines hold whole (it is never made up from pieces).
    #[test]
    fn any_cookie_lines_read_without_panicking(
        lines in prop::collection::vec(header_bytes(), 0..4)
    ) {
        let Some(map) = headers(&lines) else {
            return Ok(());
        };
        if let Some(id) = CookieOptions::new().read(&map) {
            let needle = id.expose().as_bytes();
            prop_assert!(
                lines.iter().any(|l| l.windows(32).any(|w| w == needle)),
                "{id:?} not in {lines:?}"
            );
        }
    }

    /// The session cookie among hostile neighbours (2000 cases): other cookies with any bytes
    /// (non-UTF-8 included), malformed values under the session cookie's own name, stray `=`
    /// and whitespace, spread over several lines: the well-formed id is found, whatever comes
    /// before or after it.
    #[test]
    fn the_id_is_found_among_hostile_neighbours(
        before in prop::collection::vec(other_pair(), 0..6),
        after in prop::collection::vec(other_pair(), 0..6),
        spacing in prop::sample::select(vec![";", "; ", " ;\t", ";;"]),
        quoted in any::<bool>(),
        split_at in any::<prop::sample::Index>(),
    ) {
        let id = SessionId::generate().expect("an id");
        let value = if quoted { format!("\"{}\"", id.expose()) } else { id.expose().to_owned() };
        let pair = format!("session_id={value}").into_bytes();
        let pairs: Vec<Vec<u8>> = before.into_iter().chain([pair]).chain(after).collect();
        // All pairs on one line, or split over two lines at any pair.
        let cut = split_at.index(pairs.len() + 1);
        let lines: Vec<Vec<u8>> = [&pairs[..cut], &pairs[cut..]]
            .into_iter()
            .filter(|part| !part.is_empty())
            .map(|part| part.join(spacing.as_bytes()))
            .collect();
        let Some(map) = headers(&lines) else {
            return Ok(());
        };
        prop_assert_eq!(CookieOptions::new().read(&map), Some(id), "{:?}", lines);
    }
}
