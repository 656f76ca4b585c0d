//! `<sessionState>` read as ASP.NET's session module reads it: the mode, the module's own
//! attributes (and `<httpRuntime executionTimeout>`), and for `mode="Custom"` the chosen
//! provider's `<add>` attributes, looked up in `<appSettings>` and `<connectionStrings>` as the
//! Redis provider does, then handed to [`ConfigBuilder::attribute`].

use session_core::{Config, ConfigBuilder, Error, Result};

use super::xml::{Attribute, Element, Named, Origin, Sections, collection, error};
use super::{SessionStateMode, WebConfig};

/// ASP.NET's session cookie name.
pub(super) const DEFAULT_COOKIE_NAME: &str = "ASP.NET_SessionId";

/// The `<sessionState>` attributes read here.
const READ: &[&str] = &[
    "mode",
    "timeout",
    "cookieName",
    "cookieless",
    "regenerateExpiredSessionId",
    "customProvider",
    "cookieSameSite",
    "partitionResolverType",
    "sessionIDManagerType",
];

/// The `<sessionState>` attributes ASP.NET has that are ignored here, as ASP.NET ignores them in
/// the modes read here: the SQLServer and StateServer modes' settings (those modes are refused),
/// and the configuration system's locking attributes.
const IGNORED: &[&str] = &[
    "sqlConnectionString",
    "sqlCommandTimeout",
    "sqlConnectionRetryInterval",
    "allowCustomSqlDatabase",
    "stateConnectionString",
    "stateNetworkTimeout",
    "compressionEnabled",
    "useHostingIdentity",
    "configSource",
    "lockAttributes",
    "lockAllAttributesExcept",
    "lockElements",
    "lockAllElementsExcept",
    "lockItem",
];

/// What to use instead of ASP.NET's SQL Server session state, for messages.
const INSTEAD_OF_SQL_SERVER: &str = "SQL Server is not supported (this project has no SQL Server \
    engine to prove a backend against): keep mode=\"Custom\" with a provider whose \
    connectionString is a postgres://, mysql:// (MariaDB too) or sqlite: URL, or a Redis server \
    (host, or a redis:// or StackExchange.Redis connectionString)";

/// One attribute on its way to [`ConfigBuilder::attribute`], with what messages need.
struct Setting {
    name: String,
    value: String,
    /// The element as messages name it: `<sessionState>`, `<add name="MySessionStateStore">`.
    element: String,
    origin: Origin,
    /// Where the value was found, when the attribute named it: `<appSettings> key "RedisHost"`.
    from: Option<String>,
}

impl Setting {
    /// `error` (from the builder) told about this attribute: the element, the place, and where
    /// the value came from. Messages never echo values (they may be secrets).
    fn explain(&self, error: Error) -> Error {
        match error {
            Error::InvalidConfig {
                setting,
                mut reason,
            } => {
                if let Some(from) = &self.from {
                    reason = format!("{reason}; the value is that of {from}");
                }
                super::xml::error(format!("{} {setting}", self.element), reason, &self.origin)
            }
            other => other,
        }
    }
}

/// Applies `settings` in order. A value found in the file is final; one written in the attribute
/// goes through [`ConfigBuilder::attribute`], which also reads a `connectionString` that names an
/// environment variable.
fn apply(mut builder: ConfigBuilder, settings: &[Setting]) -> Result<ConfigBuilder> {
    for s in settings {
        builder = match s.from {
            Some(_) => builder.attribute_with(&s.name, &s.value, &|_| None),
            None => builder.attribute(&s.name, &s.value),
        }
        .map_err(|e| s.explain(e))?;
    }
    Ok(builder)
}

/// Reads the session settings of `sections`.
pub(super) fn read(sections: &Sections) -> Result<WebConfig> {
    let Some(state) = &sections.session_state else {
        return Err(Error::config(
            "<sessionState>",
            "is missing from <system.web>. ASP.NET's default would be mode=\"InProc\", sessions \
             in this process only (lost on restart, not shared between servers), which is never \
             chosen silently here: write <sessionState mode=\"InProc\"/> for that, or \
             mode=\"Custom\" with a provider",
        ));
    };
    check_shape(state)?;
    let mut warnings = Vec::new();
    let mode = mode(state)?;
    cookieless(state)?;
    same_site(state, &mut warnings)?;
    let regenerate_expired_session_id = regenerate(state, &mut warnings)?;
    for (attribute, why) in [
        (
            "partitionResolverType",
            "partitions the SQLServer and StateServer modes' sessions, which are not supported",
        ),
        (
            "sessionIDManagerType",
            "replaces ASP.NET's session ids; here ids are always made by this framework \
             (docs/contract.md §1), on purpose",
        ),
    ] {
        if state.non_empty(attribute).is_some() {
            return Err(error(
                format!("<sessionState> {attribute}"),
                format_args!("names a .NET type, which cannot be loaded here: it {why}"),
                &state.origin,
            ));
        }
    }
    let module = module_settings(state, sections.http_runtime.as_ref())?;
    let (builder, provider) = match mode {
        SessionStateMode::InProc => {
            let providers = state.only_child("providers")?;
            if state.non_empty("customProvider").is_some()
                || providers.is_some_and(|p| !p.children.is_empty())
            {
                warnings.push(
                    "<sessionState mode=\"InProc\">: customProvider and <providers> are not used \
                     (as in ASP.NET); sessions live in this process only"
                        .to_owned(),
                );
            }
            (apply(Config::builder().url("memory://"), &module)?, None)
        }
        SessionStateMode::Custom => {
            let (name, add) = provider(state)?;
            let element = format!("<add name=\"{name}\">");
            let settings = provider_settings(add, &element, sections, &module)?;
            // The provider's attributes first, the module's after: a provider attribute left
            // empty ("the default") cannot undo `<sessionState timeout>`.
            let builder = apply(apply(Config::builder(), &settings)?, &module)?;
            let redis = provider_type_is_redis(add);
            (builder, Some((name, element, add.origin.clone(), redis)))
        }
    };
    let mut builder = builder;
    let names_no_store = |config: &Config| {
        config.url().is_none() && config.redis_configuration().is_none() && config.host().is_none()
    };
    let build = |builder: &ConfigBuilder| {
        builder.clone().build().map_err(|e| match &provider {
            Some((_, element, origin, _)) => explain_build(e, element, origin),
            None => explain_build(e, "<sessionState>", &state.origin),
        })
    };
    let mut config = build(&builder)?;
    if let Some((_, element, origin, redis)) = &provider
        && names_no_store(&config)
    {
        if *redis {
            // The provider's type names the store: ASP.NET's Redis provider then connects to its
            // default host, 127.0.0.1 (README, "Coming from ASP.NET"). That is a choice the file
            // made, not a fallback to memory: said once as a warning.
            builder = builder
                .attribute("host", "127.0.0.1")
                .map_err(|e| explain_build(e, element, origin))?;
            config = build(&builder)?;
            warnings.push(format!(
                "{element} gives no host or connectionString: the Redis provider's default, \
                 127.0.0.1, is used"
            ));
        } else {
            return Err(error(
                element.clone(),
                "names no store: give it connectionString (a redis://, rediss://, postgres://, \
                 mysql:// or sqlite: URL, a StackExchange.Redis connection string, or the name of \
                 one in <appSettings> or <connectionStrings>) or host (a Redis server)",
                origin,
            ));
        }
    }
    for warning in &warnings {
        tracing::warn!("web.config: {warning}");
    }
    Ok(WebConfig {
        config,
        builder,
        mode,
        provider: provider.map(|(name, _, _, _)| name),
        cookie_name: cookie_name(state)?,
        regenerate_expired_session_id,
        warnings,
    })
}

fn explain_build(error: Error, element: &str, origin: &Origin) -> Error {
    match error {
        Error::InvalidConfig { setting, reason } => {
            super::xml::error(format!("{element} {setting}"), reason, origin)
        }
        other => other,
    }
}

/// Every attribute of `<sessionState>` is known (read or ignored), and its only child is
/// `<providers>`.
fn check_shape(state: &Element) -> Result<()> {
    for Attribute { name, .. } in &state.attributes {
        if READ.contains(&name.as_str()) || IGNORED.contains(&name.as_str()) {
            continue;
        }
        let known = READ.iter().chain(IGNORED).copied();
        let hint = match known.clone().find(|k| k.eq_ignore_ascii_case(name)) {
            Some(spelled) => {
                format!("did you mean {spelled}? Attribute names are case-sensitive, as in ASP.NET")
            }
            None => format!("ASP.NET's are {}", known.collect::<Vec<_>>().join(", ")),
        };
        return Err(error(
            format!("<sessionState> {name}"),
            format_args!("is not an attribute of <sessionState> ({hint})"),
            &state.at(name),
        ));
    }
    if let Some(other) = state.children.iter().find(|c| c.name != "providers") {
        return Err(error(
            format!("<{}> in <sessionState>", other.name),
            "is not an element of <sessionState> (only <providers>)",
            &other.origin,
        ));
    }
    Ok(())
}

fn mode(state: &Element) -> Result<SessionStateMode> {
    let setting = "<sessionState> mode";
    let Some(mode) = state.non_empty("mode").map(str::trim) else {
        return Err(error(
            setting,
            "is missing. ASP.NET's default is InProc, sessions in this process only (lost on \
             restart, not shared between servers), which is never chosen silently here: write \
             mode=\"InProc\" for that, or mode=\"Custom\" with a provider",
            &state.origin,
        ));
    };
    let at = state.at("mode");
    let refused = |reason: &str| Err(error(setting, reason, &at));
    match mode.to_ascii_lowercase().as_str() {
        "inproc" => Ok(SessionStateMode::InProc),
        "custom" => Ok(SessionStateMode::Custom),
        "off" => refused(
            "session state is off (mode=\"Off\"): this application has no sessions to store; drop \
             the session layer, or set mode=\"InProc\" or mode=\"Custom\"",
        ),
        "sqlserver" => refused(&format!("mode=\"SQLServer\": {INSTEAD_OF_SQL_SERVER}")),
        "stateserver" => refused(
            "mode=\"StateServer\" (the ASP.NET state service) is not supported: use \
             mode=\"Custom\" with a provider whose host or connectionString names a Redis server \
             (or a postgres://, mysql:// or sqlite: connectionString URL)",
        ),
        _ => Err(error(
            setting,
            format_args!(
                "{mode:?} is not a mode (ASP.NET's: Off, InProc, StateServer, SQLServer, Custom)"
            ),
            &state.origin,
        )),
    }
}

/// `cookieless`: cookies only. Session ids in URLs are left out on purpose.
fn cookieless(state: &Element) -> Result<()> {
    let Some(value) = state.non_empty("cookieless").map(str::trim) else {
        return Ok(());
    };
    let reason = match value.to_ascii_lowercase().as_str() {
        "usecookies" | "false" => return Ok(()),
        "useuri" | "true" | "autodetect" | "usedeviceprofile" => format!(
            "{value:?} puts session ids in URLs, which is not supported, on purpose: an id in a \
             URL leaks through links, bookmarks, logs and Referer headers. Sessions use a \
             cookie (cookieless=\"UseCookies\", the default)"
        ),
        _ => format!(
            "{value:?} is not a value of cookieless (ASP.NET's: UseCookies, UseUri, AutoDetect, \
             UseDeviceProfile, true, false; only UseCookies and false are supported)"
        ),
    };
    Err(error(
        "<sessionState> cookieless",
        reason,
        &state.at("cookieless"),
    ))
}

/// `cookieSameSite`: the session cookie is always `SameSite=Lax` here.
fn same_site(state: &Element, warnings: &mut Vec<String>) -> Result<()> {
    let Some(value) = state.non_empty("cookieSameSite").map(str::trim) else {
        return Ok(());
    };
    let setting = "<sessionState> cookieSameSite";
    match value.to_ascii_lowercase().as_str() {
        "lax" => Ok(()),
        "unspecified" => {
            warnings.push(format!(
                "{setting}=\"Unspecified\": the session cookie is sent with SameSite=Lax (the \
                 browsers' default for a cookie without SameSite)"
            ));
            Ok(())
        }
        "none" | "strict" => Err(error(
            setting,
            format_args!(
                "{value:?} is not supported: the session cookie is always SameSite=Lax \
                 (sessions::web::CookieOptions)"
            ),
            &state.origin,
        )),
        _ => Err(error(
            setting,
            format_args!(
                "{value:?} is not a value of cookieSameSite (ASP.NET's: None, Lax, Strict, Unspecified)"
            ),
            &state.origin,
        )),
    }
}

/// `regenerateExpiredSessionId` (default true). `false` is read but not followed: an unknown id
/// is never adopted.
fn regenerate(state: &Element, warnings: &mut Vec<String>) -> Result<bool> {
    let Some(value) = state.non_empty("regenerateExpiredSessionId").map(str::trim) else {
        return Ok(true);
    };
    if value.eq_ignore_ascii_case("true") {
        return Ok(true);
    }
    if value.eq_ignore_ascii_case("false") {
        warnings.push(
            "<sessionState regenerateExpiredSessionId=\"false\"> is not followed: an id the store \
             does not know (expired, or never issued) is never adopted, a new one is issued \
             (session fixation). ASP.NET applies the attribute to cookieless sessions only, \
             which are not supported"
                .to_owned(),
        );
        return Ok(false);
    }
    Err(error(
        "<sessionState> regenerateExpiredSessionId",
        "expected true or false",
        &state.origin,
    ))
}

/// `cookieName` (default `ASP.NET_SessionId`); the web layer checks it when the `axum` feature is
/// on.
fn cookie_name(state: &Element) -> Result<String> {
    let name = state
        .non_empty("cookieName")
        .map_or(DEFAULT_COOKIE_NAME, str::trim);
    #[cfg(feature = "axum")]
    crate::web::CookieOptions::new()
        .with_name(name)
        .map_err(|e| match e {
            Error::InvalidConfig { reason, .. } => {
                error("<sessionState> cookieName", reason, &state.origin)
            }
            other => other,
        })?;
    Ok(name.to_owned())
}

/// `<sessionState timeout>` (minutes) and `<httpRuntime executionTimeout>` (seconds: the lock
/// TTL), when given.
fn module_settings(state: &Element, http_runtime: Option<&Element>) -> Result<Vec<Setting>> {
    let mut settings = Vec::new();
    if let Some(timeout) = state.non_empty("timeout") {
        if timeout.trim().eq_ignore_ascii_case("infinite") {
            return Err(error(
                "<sessionState> timeout",
                "Infinite is not supported: at most 525600 minutes (one year)",
                &state.origin,
            ));
        }
        settings.push(Setting {
            name: "timeout".to_owned(),
            value: timeout.to_owned(),
            element: "<sessionState>".to_owned(),
            origin: state.origin.clone(),
            from: None,
        });
    }
    if let Some(runtime) = http_runtime
        && let Some(seconds) = runtime.non_empty("executionTimeout")
    {
        settings.push(Setting {
            name: "executionTimeout".to_owned(),
            value: seconds.to_owned(),
            element: "<httpRuntime>".to_owned(),
            origin: runtime.origin.clone(),
            from: None,
        });
    }
    Ok(settings)
}

/// The provider `customProvider` names, among `<providers>` after their `<remove>`s and
/// `<clear/>`s (names compare case-insensitively, as in ASP.NET).
fn provider(state: &Element) -> Result<(String, &Element)> {
    let Some(wanted) = state.non_empty("customProvider").map(str::trim) else {
        return Err(error(
            "<sessionState> customProvider",
            "is missing: mode=\"Custom\" uses the provider it names in <providers>",
            &state.origin,
        ));
    };
    let providers = match state.only_child("providers")? {
        Some(list) => collection(list, "name", true)?,
        None => Vec::new(),
    };
    let Some((name, add)) = providers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(wanted))
    else {
        let defined: Vec<&str> = providers.iter().map(|(n, _)| n.as_str()).collect();
        return Err(error(
            "<sessionState> customProvider",
            format_args!(
                "names {wanted:?}, which is not among the <providers> (after their <remove> and \
                 <clear/>: {})",
                if defined.is_empty() {
                    "none".to_owned()
                } else {
                    defined.join(", ")
                }
            ),
            &state.origin,
        ));
    };
    refuse_provider_type(name, add)?;
    Ok((name.clone(), add))
}

/// Whether the provider's `type` is ASP.NET's Redis provider
/// (`Microsoft.Web.Redis.RedisSessionStateProvider`, with or without its assembly name).
fn provider_type_is_redis(add: &Element) -> bool {
    add.non_empty("type").is_some_and(|t| {
        t.split(',')
            .next()
            .unwrap_or_default()
            .trim()
            .eq_ignore_ascii_case("Microsoft.Web.Redis.RedisSessionStateProvider")
    })
}

/// ASP.NET's providers for stores that have no backend here, refused by their `type` with what
/// to use instead; any other type is left to the attributes.
fn refuse_provider_type(name: &str, add: &Element) -> Result<()> {
    let Some(type_name) = add.non_empty("type") else {
        return Ok(());
    };
    let class = type_name.split(',').next().unwrap_or_default().trim();
    let is = |known: &str| class.eq_ignore_ascii_case(known);
    let reason = if is("System.Web.Providers.DefaultSessionStateProvider")
        || is("Microsoft.AspNet.SessionState.SqlSessionStateProviderAsync")
    {
        format!("{class} is a SQL Server provider. {INSTEAD_OF_SQL_SERVER}")
    } else if is("Microsoft.AspNet.SessionState.CosmosDBSessionStateProviderAsync") {
        format!(
            "{class} stores sessions in Cosmos DB, which is not supported: give connectionString \
             a Redis, postgres://, mysql:// or sqlite: store"
        )
    } else {
        return Ok(());
    };
    Err(error(
        format!("<add name=\"{name}\"> type"),
        reason,
        &add.at("type"),
    ))
}

/// How the Redis provider reads an attribute (README, "Coming from ASP.NET"): strings are first
/// looked up as an `<appSettings>` key; `connectionString` then as a `<connectionStrings>` name;
/// numbers and booleans are looked up only when they do not parse.
enum Lookup {
    /// The provider element's own attributes, read by the configuration system: as written.
    None,
    /// A string: `<appSettings>`[value], else the value.
    Text,
    /// `connectionString`: `<appSettings>`[value], else `<connectionStrings>`[value], else the
    /// value.
    Connection,
    /// A number or boolean: the value if it parses, else `<appSettings>`[value], else the value
    /// (which the builder then refuses).
    Value,
}

fn lookup(attribute: &str) -> Lookup {
    match attribute.to_ascii_lowercase().as_str() {
        "name" | "type" | "description" => Lookup::None,
        "connectionstring" | "url" => Lookup::Connection,
        "host"
        | "accesskey"
        | "user"
        | "applicationname"
        | "settingsclassname"
        | "settingsmethodname"
        | "loggingclassname"
        | "loggingmethodname"
        | "redisserializertype" => Lookup::Text,
        _ => Lookup::Value,
    }
}

/// .NET's `int.Parse` or `bool.Parse` accepts it.
fn parses(value: &str) -> bool {
    let value = value.trim();
    value.parse::<i64>().is_ok()
        || value.eq_ignore_ascii_case("true")
        || value.eq_ignore_ascii_case("false")
}

/// The provider's attributes, each resolved as [`lookup`] says. One that the module sets too
/// (`timeout`, `executionTimeout` and their millisecond forms) is an error rather than a silent
/// choice.
fn provider_settings(
    add: &Element, element: &str, sections: &Sections, module: &[Setting],
) -> Result<Vec<Setting>> {
    let groups: [&[&str]; 2] = [
        &["timeout", "sessionTimeoutInMilliseconds"],
        &["executionTimeout", "lockTtlInMilliseconds"],
    ];
    let app = &sections.app_settings;
    let in_app = |key: &str| non_empty(app, key).map(|v| (v, format!("<appSettings> key {key:?}")));
    let mut settings = Vec::new();
    for Attribute {
        name,
        value: literal,
        ..
    } in &add.attributes
    {
        let found = if literal.is_empty() {
            None
        } else {
            match lookup(name) {
                Lookup::None => None,
                Lookup::Text => in_app(literal),
                Lookup::Connection => in_app(literal).or_else(|| {
                    non_empty(&sections.connection_strings, literal)
                        .map(|v| (v, format!("<connectionStrings> name {literal:?}")))
                }),
                Lookup::Value if parses(literal) => None,
                Lookup::Value => in_app(literal),
            }
        };
        if !literal.trim().is_empty()
            && let Some(group) = groups
                .iter()
                .find(|g| g.iter().any(|n| n.eq_ignore_ascii_case(name)))
            && let Some(other) = module
                .iter()
                .find(|m| group.iter().any(|n| n.eq_ignore_ascii_case(&m.name)))
        {
            return Err(error(
                format!("{element} {name}"),
                format_args!(
                    "is set in {} {} too: keep one ({} is where ASP.NET reads it)",
                    other.element, other.name, other.element
                ),
                &add.at(name),
            ));
        }
        let (value, from) = match found {
            Some((value, from)) => (value.to_owned(), Some(from)),
            None => (literal.clone(), None),
        };
        settings.push(Setting {
            name: name.clone(),
            value,
            element: element.to_owned(),
            origin: add.at(name),
            from,
        });
    }
    Ok(settings)
}

/// The value of `key` unless it is missing or blank (the provider skips empty settings).
fn non_empty<'a>(named: &'a Named, key: &str) -> Option<&'a str> {
    named.get(key).filter(|v| !v.trim().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_and_ignored_attributes_do_not_overlap() {
        for name in READ {
            assert!(!IGNORED.contains(name), "{name}");
        }
    }

    #[test]
    fn numbers_and_booleans_parse_as_dotnet_reads_them() {
        for yes in [" 42 ", "-1", "True", "FALSE"] {
            assert!(parses(yes), "{yes}");
        }
        for no in ["", "RedisPort", "1.5", "yes"] {
            assert!(!parses(no), "{no}");
        }
    }
}
