//! The `web.config` file as the reader needs it: the file decoded (UTF-8 or UTF-16, a byte order mark
//! skipped), an owned tree of its elements with their lines, and the sections the session module
//! reads, found where ASP.NET looks for them (`<configuration>` and `<location path=".">`, one of
//! each per file, `configSource`), with the `<add>`/`<remove>`/`<clear>` rules of its collections.

use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use session_core::{Error, Result};

/// Where an element was read: the file as named to the reader, and the line.
#[derive(Debug, Clone)]
pub(super) struct Origin {
    file: Arc<str>,
    line: u32,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} line {}", self.file, self.line)
    }
}

/// The error for `setting` (as the message names it), with the place it was read.
pub(super) fn error(setting: impl Into<String>, reason: impl fmt::Display, at: &Origin) -> Error {
    Error::config(setting, format!("{reason} ({at})"))
}

/// An element: its local name (a `web.config` written with the old `.NetConfiguration/v2.0`
/// default namespace reads as one without), its attributes in document order (those in a
/// namespace, such as `xdt:Transform`, are left out: they belong to transform tools), its child
/// elements, and where it was read.
#[derive(Debug, Clone)]
pub(super) struct Element {
    pub(super) name: String,
    pub(super) attributes: Vec<Attribute>,
    pub(super) children: Vec<Element>,
    pub(super) origin: Origin,
}

/// An attribute and the line it starts on (an `<add>` often spans many).
#[derive(Debug, Clone)]
pub(super) struct Attribute {
    pub(super) name: String,
    pub(super) value: String,
    line: u32,
}

impl Element {
    /// The attribute `name` (exact: attribute names are case-sensitive in `web.config`).
    pub(super) fn attr(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|a| a.name == name)
            .map(|a| a.value.as_str())
    }

    /// Where the attribute `name` is (the element's place when it has none).
    pub(super) fn at(&self, name: &str) -> Origin {
        let line = self
            .attributes
            .iter()
            .find(|a| a.name == name)
            .map_or(self.origin.line, |a| a.line);
        Origin {
            file: Arc::clone(&self.origin.file),
            line,
        }
    }

    /// The attribute `name` unless it is missing or empty (ASP.NET's "use the default").
    pub(super) fn non_empty(&self, name: &str) -> Option<&str> {
        self.attr(name).filter(|v| !v.trim().is_empty())
    }

    /// The only child `name`, if any.
    ///
    /// # Errors
    /// When it appears more than once.
    pub(super) fn only_child(&self, name: &str) -> Result<Option<&Element>> {
        let mut found = self.children.iter().filter(|c| c.name == name);
        let first = found.next();
        if let (Some(first), Some(second)) = (first, found.next()) {
            return Err(error(
                format!("<{}>", self.name),
                format_args!(
                    "has two <{name}> elements (the other one: {})",
                    first.origin
                ),
                &second.origin,
            ));
        }
        Ok(first)
    }
}

/// A file being read: how messages name it, and the directory that `configSource` and `file`
/// paths are relative to (none for text given to [`WebConfig::parse`](super::WebConfig::parse)).
#[derive(Debug, Clone)]
pub(super) struct Source {
    name: Arc<str>,
    dir: Option<PathBuf>,
}

impl Source {
    /// Text without a file.
    pub(super) fn text() -> Self {
        Self {
            name: Arc::from("web.config"),
            dir: None,
        }
    }

    /// The file `path`.
    pub(super) fn file(path: &Path) -> Self {
        Self {
            name: Arc::from(path.display().to_string()),
            dir: Some(
                path.parent()
                    .map_or_else(|| PathBuf::from("."), Path::to_path_buf),
            ),
        }
    }

    /// The path of the file `relative` to this one's directory.
    fn sibling(&self, relative: &str, setting: &str, at: &Origin) -> Result<PathBuf> {
        let Some(dir) = &self.dir else {
            return Err(error(
                setting,
                format_args!(
                    "names the file {relative:?}, which is relative to the web.config's directory: \
                     read the file with WebConfig::from_path or sessions::open_web_config"
                ),
                at,
            ));
        };
        Ok(dir.join(relative))
    }
}

/// Reads the file `path`: UTF-8 (with or without a byte order mark) or UTF-16 with a byte order
/// mark, the encodings Visual Studio writes.
pub(super) fn read_file(path: &Path) -> Result<String> {
    let setting = path.display().to_string();
    let bytes =
        std::fs::read(path).map_err(|e| Error::config(&setting, format!("cannot be read: {e}")))?;
    decode(&bytes).ok_or_else(|| {
        Error::config(
            setting,
            "is neither UTF-8 nor UTF-16 with a byte order mark",
        )
    })
}

/// The text of a file's bytes, or `None` when they are not text in a supported encoding.
fn decode(bytes: &[u8]) -> Option<String> {
    let utf16 = |big_endian: bool, body: &[u8]| {
        if !body.len().is_multiple_of(2) {
            return None;
        }
        let units = body.chunks_exact(2).map(|pair| {
            let pair = [pair[0], pair[1]];
            if big_endian {
                u16::from_be_bytes(pair)
            } else {
                u16::from_le_bytes(pair)
            }
        });
        char::decode_utf16(units)
            .collect::<Result<String, _>>()
            .ok()
    };
    match bytes {
        [0xEF, 0xBB, 0xBF, rest @ ..] => String::from_utf8(rest.to_vec()).ok(),
        [0xFF, 0xFE, rest @ ..] => utf16(false, rest),
        [0xFE, 0xFF, rest @ ..] => utf16(true, rest),
        _ => String::from_utf8(bytes.to_vec()).ok(),
    }
}

/// Parses `text` (from `source`) and returns its root element. DTDs are refused (roxmltree's
/// default): a `web.config` has none, and refusing them rules out entity expansion attacks.
pub(super) fn parse(text: &str, source: &Source) -> Result<Element> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let document = roxmltree::Document::parse(text).map_err(|e| {
        let message = match e {
            // The one error that quotes text from a value (an attribute may hold a secret): the
            // position only.
            roxmltree::Error::UnknownEntityReference(_, pos) => format!(
                "is not well-formed XML: an unknown entity reference at {pos} (write &amp; for a \
                 literal &)"
            ),
            other => format!("is not well-formed XML: {other}"),
        };
        Error::config(&*source.name, message)
    })?;
    let root = document.root_element();
    // The element path to each element in document order (amortized O(1) per element).
    let mut path: Vec<roxmltree::Node<'_, '_>> = Vec::new();
    for node in root.descendants().filter(roxmltree::Node::is_element) {
        while path
            .last()
            .is_some_and(|top| Some(*top) != node.parent_element())
        {
            path.pop();
        }
        path.push(node);
        if path.len() > MAX_DEPTH {
            return Err(Error::config(
                &*source.name,
                format!(
                    "nests elements more than {MAX_DEPTH} deep (line {}): not a web.config",
                    document.text_pos_at(node.range().start).row
                ),
            ));
        }
    }
    Ok(owned(&document, root, &source.name))
}

/// The deepest element nesting read. A web.config's sections are a handful of levels deep; the
/// copy below is recursive, so a bound keeps a hostile file from exhausting the stack.
const MAX_DEPTH: usize = 64;

fn owned(
    document: &roxmltree::Document<'_>, node: roxmltree::Node<'_, '_>, file: &Arc<str>,
) -> Element {
    Element {
        name: node.tag_name().name().to_owned(),
        attributes: node
            .attributes()
            .filter(|a| a.namespace().is_none())
            .map(|a| Attribute {
                name: a.name().to_owned(),
                value: a.value().to_owned(),
                line: document.text_pos_at(a.range().start).row,
            })
            .collect(),
        children: node
            .children()
            .filter(roxmltree::Node::is_element)
            .map(|child| owned(document, child, file))
            .collect(),
        origin: Origin {
            file: Arc::clone(file),
            line: document.text_pos_at(node.range().start).row,
        },
    }
}

/// The sections the session module reads, each at most once, `configSource` resolved.
#[derive(Debug, Default)]
pub(super) struct Sections {
    /// `<system.web><sessionState>`.
    pub(super) session_state: Option<Element>,
    /// `<system.web><httpRuntime>`.
    pub(super) http_runtime: Option<Element>,
    /// `<appSettings>`, `file` merged in.
    pub(super) app_settings: Named,
    /// `<connectionStrings>`.
    pub(super) connection_strings: Named,
}

/// The elements of one section as found, before `configSource` is resolved.
#[derive(Default)]
struct Found {
    session_state: Option<Element>,
    http_runtime: Option<Element>,
    app_settings: Option<Element>,
    connection_strings: Option<Element>,
}

/// Keeps `element` as the section `slot`, which a file may hold once (ASP.NET: "Sections must
/// only appear once per config file").
fn place(slot: &mut Option<Element>, element: &Element) -> Result<()> {
    if let Some(first) = slot {
        return Err(error(
            format!("<{}>", element.name),
            format_args!(
                "appears twice (the other one: {}); a section may appear once per file, as in \
                 ASP.NET",
                first.origin
            ),
            &element.origin,
        ));
    }
    *slot = Some(element.clone());
    Ok(())
}

/// Finds the sections under `<configuration>` (the root of a file read by `source`).
pub(super) fn sections(root: &Element, source: &Source) -> Result<Sections> {
    if root.name != "configuration" {
        return Err(error(
            format!("<{}>", root.name),
            "is the root element: a web.config's root is <configuration>",
            &root.origin,
        ));
    }
    let mut found = Found::default();
    collect(root, &mut found, true)?;
    let resolve = |element: Option<Element>| -> Result<Option<Element>> {
        element.map(|e| config_source(e, source)).transpose()
    };
    let app_settings = resolve(found.app_settings)?;
    let connection_strings = resolve(found.connection_strings)?;
    Ok(Sections {
        session_state: resolve(found.session_state)?,
        http_runtime: resolve(found.http_runtime)?,
        app_settings: match app_settings {
            Some(section) => app_settings_of(&section, source)?,
            None => Named::default(),
        },
        connection_strings: match connection_strings {
            Some(section) => Named::collection(&section, "name", "connectionString", true)?,
            None => Named::default(),
        },
    })
}

/// Collects the sections of `parent` (`<configuration>`, or a `<location>` that applies to the
/// application itself). A `<location>` with another path applies to a part of the site only: the
/// session settings cannot differ there (`<sessionState>` is an application-level section), and
/// its `<appSettings>` are not the application's, so it is skipped.
fn collect(parent: &Element, found: &mut Found, top: bool) -> Result<()> {
    for child in &parent.children {
        match child.name.as_str() {
            "system.web" => {
                for section in &child.children {
                    match section.name.as_str() {
                        "sessionState" => place(&mut found.session_state, section)?,
                        "httpRuntime" => place(&mut found.http_runtime, section)?,
                        other if other.eq_ignore_ascii_case("sessionState") => {
                            return Err(error(
                                format!("<{other}>"),
                                "is not <sessionState>: element names are case-sensitive, as in \
                                 ASP.NET",
                                &section.origin,
                            ));
                        }
                        _ => {}
                    }
                }
            }
            "appSettings" => place(&mut found.app_settings, child)?,
            "connectionStrings" => place(&mut found.connection_strings, child)?,
            "location" if top => {
                let path = child.attr("path").map_or("", str::trim);
                if path.is_empty() || path == "." {
                    collect(child, found, false)?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// The section itself, or the file its `configSource` names (relative to the `web.config`, in
/// its directory or below, as ASP.NET requires), whose root must be the section's element.
/// Encrypted sections (`configProtectionProvider`) are refused: their values are ciphertext.
fn config_source(section: Element, source: &Source) -> Result<Element> {
    let setting = format!("<{}>", section.name);
    if section.non_empty("configProtectionProvider").is_some() {
        return Err(error(
            setting,
            "is encrypted (configProtectionProvider), which this reader cannot decrypt: decrypt \
             it (aspnet_regiis -pdf), or give the secret values through environment variables",
            &section.origin,
        ));
    }
    let Some(relative) = section.non_empty("configSource") else {
        return Ok(section);
    };
    let setting = format!("{setting} configSource");
    // A web.config written on Windows separates with `\`: read it as `/`, so that `..\x` and
    // `\\server\x` are seen for what they are. A drive letter (`C:`) is never relative.
    let relative = relative.trim().replace('\\', "/");
    let path = Path::new(&relative);
    if relative.contains(':')
        || !path
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(error(
            setting,
            "must be a relative path in the web.config's directory or below (as in ASP.NET)",
            &section.origin,
        ));
    }
    let file = source.sibling(&relative, &setting, &section.origin)?;
    let root = parse(&read_file(&file)?, &Source::file(&file))?;
    if root.name != section.name {
        return Err(error(
            setting,
            format_args!(
                "names a file whose root element is <{}>, not <{}>",
                root.name, section.name
            ),
            &root.origin,
        ));
    }
    Ok(root)
}

/// `<appSettings>` and the file its `file` attribute names, whose settings win. A `file` that
/// does not exist is ignored, as ASP.NET ignores it.
fn app_settings_of(section: &Element, source: &Source) -> Result<Named> {
    let mut settings = Named::collection(section, "key", "value", false)?;
    if let Some(relative) = section.non_empty("file") {
        let setting = "<appSettings> file";
        let file = source.sibling(relative.trim(), setting, &section.origin)?;
        if file.exists() {
            let root = parse(&read_file(&file)?, &Source::file(&file))?;
            if root.name != "appSettings" {
                return Err(error(
                    setting,
                    format_args!(
                        "names a file whose root element is <{}>, not <appSettings>",
                        root.name
                    ),
                    &root.origin,
                ));
            }
            for (key, value) in Named::collection(&root, "key", "value", false)?.0 {
                settings.insert(key, value);
            }
        }
    }
    Ok(settings)
}

/// Name/value pairs whose names compare case-insensitively, as ASP.NET's `AppSettings` and
/// `ConnectionStrings` collections do.
#[derive(Debug, Default, Clone)]
pub(super) struct Named(Vec<(String, String)>);

impl Named {
    /// The value of `name`.
    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn insert(&mut self, name: String, value: String) {
        self.0.retain(|(n, _)| !n.eq_ignore_ascii_case(&name));
        self.0.push((name, value));
    }

    /// The collection `<add key_attr=... value_attr=.../>` of `section`; see [`collection`].
    fn collection(
        section: &Element, key_attr: &str, value_attr: &str, unique: bool,
    ) -> Result<Self> {
        let entries = collection(section, key_attr, unique)?
            .into_iter()
            .map(|(key, add)| (key, add.attr(value_attr).unwrap_or_default().to_owned()))
            .collect();
        Ok(Self(entries))
    }
}

/// The `<add>` elements of a collection element (`<providers>`, `<appSettings>`,
/// `<connectionStrings>`) by their key attribute, after its `<remove>` and `<clear/>` (applied in
/// document order; a `<remove>` of a name not added is no error). An `<add>` of a name already
/// there is an error where ASP.NET makes it one (`unique`: providers, connection strings) and
/// replaces the earlier one elsewhere (app settings).
pub(super) fn collection<'a>(
    section: &'a Element, key_attr: &str, unique: bool,
) -> Result<Vec<(String, &'a Element)>> {
    let mut entries: Vec<(String, &Element)> = Vec::new();
    for child in &section.children {
        let key = || {
            child.non_empty(key_attr).map(str::trim).ok_or_else(|| {
                error(
                    format!("<{}> in <{}>", child.name, section.name),
                    format_args!("has no {key_attr} attribute"),
                    &child.origin,
                )
            })
        };
        match child.name.as_str() {
            "add" => {
                let key = key()?;
                if let Some((_, first)) = entries.iter().find(|(k, _)| k.eq_ignore_ascii_case(key))
                {
                    if unique {
                        return Err(error(
                            format!("<add {key_attr}=\"{key}\"> in <{}>", section.name),
                            format_args!(
                                "is added twice (the other one: {}); remove it first \
                                 (<remove {key_attr}=\"{key}\"/>) as ASP.NET requires",
                                first.origin
                            ),
                            &child.origin,
                        ));
                    }
                    entries.retain(|(k, _)| !k.eq_ignore_ascii_case(key));
                }
                entries.push((key.to_owned(), child));
            }
            "remove" => {
                let key = key()?;
                entries.retain(|(k, _)| !k.eq_ignore_ascii_case(key));
            }
            "clear" => entries.clear(),
            other => {
                return Err(error(
                    format!("<{other}> in <{}>", section.name),
                    "is not an element of this collection (only <add>, <remove> and <clear/>)",
                    &child.origin,
                ));
            }
        }
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let depth = 100_000;
        let xml = format!(
            "<configuration>{}{}</configuration>",
            "<a>".repeat(depth),
            "</a>".repeat(depth)
        );
        let source = super::Source::text();
        let err = super::parse(&xml, &source).expect_err("100,000 levels");
        assert!(err.to_string().contains("deep"), "{err}");
    }

    #[test]
    fn an_unknown_entity_in_a_value_is_not_echoed() {
        let xml = r#"<configuration><x accessKey="Pa&ssw0rdSecret;x"/></configuration>"#;
        let source = super::Source::text();
        let err = super::parse(xml, &source).expect_err("bad entity");
        assert!(!err.to_string().contains("ssw0rd"), "{err}");
    }

    use super::*;

    fn root(xml: &str) -> Element {
        parse(xml, &Source::text()).unwrap()
    }

    #[test]
    fn utf8_and_utf16_with_byte_order_marks_decode() {
        let text = "<configuration/>";
        assert_eq!(decode(text.as_bytes()).as_deref(), Some(text));
        let bom8 = [&[0xEF, 0xBB, 0xBF][..], text.as_bytes()].concat();
        assert_eq!(decode(&bom8).as_deref(), Some(text));
        let le: Vec<u8> = [0xFF, 0xFE]
            .into_iter()
            .chain(text.encode_utf16().flat_map(u16::to_le_bytes))
            .collect();
        assert_eq!(decode(&le).as_deref(), Some(text));
        let be: Vec<u8> = [0xFE, 0xFF]
            .into_iter()
            .chain(text.encode_utf16().flat_map(u16::to_be_bytes))
            .collect();
        assert_eq!(decode(&be).as_deref(), Some(text));
        assert_eq!(decode(&[0xC3, 0x28]), None);
        assert_eq!(decode(&[0xFF, 0xFE, 0x41]), None);
    }

    #[test]
    fn collections_follow_add_remove_clear_in_order() {
        let section = root(
            r#"<providers>
                 <add name="a" x="1"/><add name="b"/><remove name="A"/><remove name="none"/>
                 <add name="c"/><clear/><add name="d"/><add name="e"/>
               </providers>"#,
        );
        let names: Vec<String> = collection(&section, "name", true)
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(names, ["d", "e"]);
    }

    #[test]
    fn a_duplicate_is_an_error_or_the_later_one_wins() {
        let section = root(r#"<x><add name="a" v="1"/><add name="A" v="2"/></x>"#);
        let err = collection(&section, "name", true).unwrap_err().to_string();
        assert!(
            err.contains("added twice") && err.contains("line 1"),
            "{err}"
        );
        let settings = Named::collection(&section, "name", "v", false).unwrap();
        assert_eq!(settings.get("a"), Some("2"));
    }

    #[test]
    fn unknown_collection_elements_and_missing_keys_are_named() {
        let err = collection(&root(r#"<x><ad name="a"/></x>"#), "name", true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("<ad> in <x>"), "{err}");
        let err = collection(&root(r#"<x><add value="1"/></x>"#), "key", false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("has no key attribute"), "{err}");
    }

    #[test]
    fn namespaced_attributes_and_the_default_namespace_are_left_out() {
        let e = root(
            r#"<configuration xmlns="http://schemas.microsoft.com/.NetConfiguration/v2.0"
                 xmlns:xdt="http://schemas.microsoft.com/XML-Document-Transform">
                 <appSettings xdt:Transform="Replace"><add key="k" value="v"/></appSettings>
               </configuration>"#,
        );
        assert_eq!(e.name, "configuration");
        assert!(e.attributes.is_empty());
        let sections = sections(&e, &Source::text()).unwrap();
        assert_eq!(sections.app_settings.get("K"), Some("v"));
    }

    #[test]
    fn a_dtd_is_refused() {
        let err = parse(
            r#"<!DOCTYPE x [<!ENTITY a "aaaa">]><configuration>&a;</configuration>"#,
            &Source::text(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("not well-formed XML"), "{err}");
    }
}
