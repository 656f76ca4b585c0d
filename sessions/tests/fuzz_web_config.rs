//! Fuzzing on stable Rust (issue 14): property tests of [`WebConfig`], the reader of hand-written
//! (or hostile) `web.config` files. The seeds are the sample files under `tests/web_config/`; each
//! case mutates one: bytes cut, repeated or inserted (XML punctuation, entities, a DTD, CDATA,
//! names of elements and attributes), attribute values replaced by any text, the whole file
//! re-encoded as UTF-16 or given a stray byte order mark. Whatever the text, reading it gives a
//! `WebConfig` or `Error::InvalidConfig`: never a panic, never another error.
//!
//! CI runs the case counts below; set `PROPTEST_CASES` to run more locally
//! (`PROPTEST_CASES=50000 cargo test -p sessions --test fuzz_web_config --release`). A failure is
//! saved under `proptest-regressions/` (committed, so it runs first from then on).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use proptest::prelude::*;
use sessions::{Error, WebConfig};

/// `default` cases, unless `PROPTEST_CASES` says otherwise (`ProptestConfig::default` reads it).
fn cases(default: u32) -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = default;
    }
    config
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/web_config")
}

/// Every sample `web.config` (and the section files of `config-source/`), as text.
fn seeds() -> Vec<String> {
    let mut files = Vec::new();
    for sub in [dir(), dir().join("config-source")] {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&sub)
            .expect("the samples")
            .map(|e| e.expect("an entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "config"))
            .collect();
        paths.sort();
        files.extend(
            paths
                .into_iter()
                .map(|p| std::fs::read_to_string(p).expect("UTF-8")),
        );
    }
    assert!(files.len() >= 10, "the samples are there");
    files
}

/// Pieces of XML and of `web.config`s that mutations insert.
const TOKENS: &[&str] = &[
    "<",
    ">",
    "/>",
    "</",
    "\"",
    "'",
    "=",
    "&",
    "&amp;",
    "&#0;",
    "&#x10FFFF;",
    "&bogus;",
    "<![CDATA[",
    "]]>",
    "<!--",
    "-->",
    "<?xml version=\"1.0\"?>",
    "<!DOCTYPE configuration [<!ENTITY a \"aaaa\">]>",
    "&a;",
    "\u{feff}",
    "\0",
    "é",
    "<location path=\".\">",
    "</location>",
    "<system.web>",
    "<sessionState mode=\"Custom\" customProvider=\"R\">",
    "<providers><add name=\"R\" host=\"h\"/></providers>",
    "<clear/>",
    "<remove name=\"R\"/>",
    "<add name=\"R\" connectionString=\"x\"/>",
    "<appSettings>",
    "<add key=\"k\" value=\"v\"/>",
    "<connectionStrings>",
    " configSource=\"../x.config\"",
    " file=\"missing.config\"",
    " configProtectionProvider=\"RsaProtectedConfigurationProvider\"",
    " mode=\"InProc\"",
    " mode=\"Off\"",
    " timeout=\"99999999999999999999\"",
    " timeout=\"Infinite\"",
    " cookieless=\"UseUri\"",
    " xmlns=\"urn:x\"",
    " x:a=\"1\"",
];

/// One edit of a seed.
#[derive(Debug, Clone)]
enum Edit {
    /// Removes `len` bytes at `at`.
    Cut { at: prop::sample::Index, len: usize },
    /// Inserts a token at `at`.
    Insert {
        at: prop::sample::Index,
        token: &'static str,
    },
    /// Inserts any text at `at`.
    Text {
        at: prop::sample::Index,
        text: String,
    },
    /// Repeats the `len` bytes at `at` right after them.
    Repeat { at: prop::sample::Index, len: usize },
    /// Replaces the value of the `nth` attribute (`="..."`) with `value`, escaped for XML
    /// (`&`, `<`, `"`, and without the control characters XML forbids) when `escape`, so that
    /// the file stays well-formed.
    Value {
        nth: prop::sample::Index,
        value: String,
        escape: bool,
    },
    /// Keeps only the first `at` bytes.
    Truncate { at: prop::sample::Index },
}

fn edit() -> impl Strategy<Value = Edit> {
    let value = prop_oneof![
        any::<String>(),
        "[0-9]{0,25}",
        "-?[0-9]{1,4}",
        "(true|false|True|Custom|InProc|SQLServer|StateServer|Off|UseCookies|Lax|None)",
        "[a-z]{1,8}://[^\"<&]{0,20}",
        "[a-zA-Z0-9.:,=_-]{0,30}",
    ];
    prop_oneof![
        1 => (any::<prop::sample::Index>(), 1usize..40)
            .prop_map(|(at, len)| Edit::Cut { at, len }),
        1 => (any::<prop::sample::Index>(), prop::sample::select(TOKENS))
            .prop_map(|(at, token)| Edit::Insert { at, token }),
        1 => (any::<prop::sample::Index>(), any::<String>())
            .prop_map(|(at, text)| Edit::Text { at, text }),
        1 => (any::<prop::sample::Index>(), 1usize..200)
            .prop_map(|(at, len)| Edit::Repeat { at, len }),
        12 => (any::<prop::sample::Index>(), value, prop::bool::weighted(0.9))
            .prop_map(|(nth, value, escape)| Edit::Value { nth, value, escape }),
        1 => any::<prop::sample::Index>().prop_map(|at| Edit::Truncate { at }),
    ]
}

/// `at` moved back to a character boundary of `text`.
fn boundary(text: &str, at: prop::sample::Index) -> usize {
    let mut i = at.index(text.len() + 1);
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn apply(mut text: String, edit: &Edit) -> String {
    match edit {
        Edit::Cut { at, len } => {
            let start = boundary(&text, *at);
            let mut end = (start + len).min(text.len());
            while !text.is_char_boundary(end) {
                end += 1;
            }
            text.replace_range(start..end, "");
        }
        Edit::Insert { at, token } => text.insert_str(boundary(&text, *at), token),
        Edit::Text { at, text: t } => text.insert_str(boundary(&text, *at), t),
        Edit::Repeat { at, len } => {
            let start = boundary(&text, *at);
            let mut end = (start + len).min(text.len());
            while !text.is_char_boundary(end) {
                end += 1;
            }
            let piece = text[start..end].to_owned();
            text.insert_str(end, &piece);
        }
        Edit::Value { nth, value, escape } => {
            let starts: Vec<usize> = text.match_indices("=\"").map(|(i, _)| i + 2).collect();
            if !starts.is_empty() {
                let start = starts[nth.index(starts.len())];
                let end = text[start..].find('"').map_or(text.len(), |n| start + n);
                let value = if *escape {
                    value
                        .chars()
                        .filter(|c| !c.is_control() || *c == '\t')
                        .collect::<String>()
                        .replace('&', "&amp;")
                        .replace('<', "&lt;")
                        .replace('"', "&quot;")
                } else {
                    value.clone()
                };
                text.replace_range(start..end, &value);
            }
        }
        Edit::Truncate { at } => {
            let end = boundary(&text, *at);
            text.truncate(end);
        }
    }
    text
}

/// A seed with one to three edits.
fn mutated() -> impl Strategy<Value = String> {
    let seeds = seeds();
    (
        prop::sample::select(seeds),
        prop::collection::vec(edit(), 1..4),
    )
        .prop_map(|(seed, edits)| edits.iter().fold(seed, apply))
}

/// What reading any text may give.
fn check(result: sessions::Result<WebConfig>) -> Result<(), TestCaseError> {
    match result {
        Ok(web_config) => {
            let _ = format!("{web_config:?}");
            prop_assert!(!web_config.cookie_name().is_empty());
        }
        Err(Error::InvalidConfig { .. }) => {}
        Err(other) => prop_assert!(false, "not InvalidConfig: {other:?}"),
    }
    Ok(())
}

/// A fresh file name under the temporary directory (removed by the caller).
fn temp_file() -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    std::env::temp_dir().join(format!(
        "fuzz-web-config-{}-{}.config",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

/// How the bytes of a file are written.
#[derive(Debug, Clone, Copy)]
enum Encoding {
    Utf8,
    Utf8Bom,
    Utf16Le,
    Utf16Be,
    /// A UTF-16 mark in front of UTF-8 (or of an odd number of bytes).
    WrongBom,
}

fn encode(text: &str, encoding: Encoding, cut: usize) -> Vec<u8> {
    let utf16 = |big: bool| -> Vec<u8> {
        text.encode_utf16()
            .flat_map(|u| {
                if big {
                    u.to_be_bytes()
                } else {
                    u.to_le_bytes()
                }
            })
            .collect()
    };
    let mut bytes = match encoding {
        Encoding::Utf8 => text.as_bytes().to_vec(),
        Encoding::Utf8Bom => [&[0xEF, 0xBB, 0xBF][..], text.as_bytes()].concat(),
        Encoding::Utf16Le => [vec![0xFF, 0xFE], utf16(false)].concat(),
        Encoding::Utf16Be => [vec![0xFE, 0xFF], utf16(true)].concat(),
        Encoding::WrongBom => [&[0xFE, 0xFF][..], text.as_bytes()].concat(),
    };
    // Cut bytes off the end: half a UTF-16 unit, half a surrogate pair, half a UTF-8 sequence.
    bytes.truncate(bytes.len().saturating_sub(cut));
    bytes
}

proptest! {
    #![proptest_config(cases(1000))]

    /// Mutated `web.config` text (1000 cases): a `WebConfig` or `InvalidConfig`, never a panic.
    #[test]
    fn mutated_web_configs_read_or_fail_typed(text in mutated()) {
        check(WebConfig::parse(&text))?;
    }

    /// Arbitrary text (1000 cases), and a valid frame around arbitrary `<sessionState>`
    /// attributes and provider attributes.
    #[test]
    fn arbitrary_text_reads_or_fails_typed(
        text in any::<String>(),
        session_state in "[ a-zA-Z=\"0-9]{0,80}",
        provider in "[ a-zA-Z=\"0-9:/.,_-]{0,120}",
    ) {
        check(WebConfig::parse(&text))?;
        let framed = format!(
            "<configuration><system.web><sessionState {session_state}><providers>\
             <add name=\"R\" {provider}/></providers></sessionState></system.web></configuration>"
        );
        check(WebConfig::parse(&framed))?;
    }
}

proptest! {
    #![proptest_config(cases(300))]

    /// Files (300 cases: each writes one): mutated samples in UTF-8 (with or without a byte
    /// order mark) or UTF-16 (either byte order), with a few bytes cut off the end or a byte order
    /// mark that does not match, read with `WebConfig::from_path`: a `WebConfig` or
    /// `InvalidConfig`, never a panic.
    #[test]
    fn files_in_any_encoding_read_or_fail_typed(
        text in mutated(),
        encoding in prop::sample::select(vec![
            Encoding::Utf8, Encoding::Utf8Bom, Encoding::Utf16Le, Encoding::Utf16Be,
            Encoding::WrongBom,
        ]),
        cut in prop_oneof![3 => Just(0usize), 1 => 1usize..4],
    ) {
        let path = temp_file();
        std::fs::write(&path, encode(&text, encoding, cut)).expect("a temporary file");
        let result = WebConfig::from_path(&path);
        let _ = std::fs::remove_file(&path);
        check(result)?;
    }
}
