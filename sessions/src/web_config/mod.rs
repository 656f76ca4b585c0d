//! An ASP.NET application's `web.config`, read as it is: [`WebConfig`] turns its
//! `<system.web><sessionState>` section (with the provider it names, `<httpRuntime
//! executionTimeout>`, `<appSettings>` and `<connectionStrings>`) into a [`Config`] and the
//! session cookie's settings; [`open_web_config`] opens the store it names.

mod session_state;
mod xml;

use std::fmt;
use std::path::Path;

use session_core::{Config, ConfigBuilder, Result, SessionManager};

use crate::open::{StoreOptions, open_with};

/// How ASP.NET's `<sessionState mode>` stores sessions: the two modes that have a store here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionStateMode {
    /// `InProc`: in this process (the memory store, `memory://`).
    InProc,
    /// `Custom`: the provider `customProvider` names, whose attributes give the store.
    Custom,
}

/// The session settings of an ASP.NET `web.config`, read as ASP.NET reads them.
///
/// ```no_run
/// # async fn demo() -> sessions::Result<()> {
/// use sessions::WebConfig;
///
/// let web_config = WebConfig::from_path("web.config")?;
/// // Adjusted in code where needed, then opened as any configuration:
/// let config = web_config.config_builder().near_cache(true).build()?;
/// let manager = sessions::open(&config).await?;
/// # let _ = (manager, web_config.cookie_name()); Ok(()) }
/// ```
///
/// With the `axum` feature, `WebConfig::cookie_options` gives the web layer the cookie name:
/// `SessionLayer::new(manager).with_cookie(web_config.cookie_options())`.
///
/// # What is read
///
/// `<configuration><system.web><sessionState>`, also inside `<location path=".">` (or without a
/// path); a `<location>` for another path applies to part of the site and is skipped. A section
/// may come from the file its `configSource` names (relative, in the `web.config`'s directory or
/// below), and `<appSettings file="...">` merges that file's settings over the section's (a
/// missing file is ignored, as in ASP.NET). Encrypted sections (`configProtectionProvider`) are
/// refused. The file is UTF-8 or UTF-16 (with a byte order mark); element and attribute names are
/// case-sensitive, as in ASP.NET; a DTD is refused.
///
/// | `<sessionState>` attribute | here | ASP.NET's default |
/// |---|---|---|
/// | `mode` | `InProc`: the memory store (`memory://`). `Custom`: the provider `customProvider` names. `SQLServer`, `StateServer`: an error naming what to use instead (a Postgres, MySQL/MariaDB or SQLite URL in a provider's `connectionString`, or Redis). `Off`: an error, "session state is off". Missing: an error; nothing falls back to the memory store silently | `InProc` |
/// | `customProvider` | the `<providers><add name=...>` to use (after `<remove name=...>` and `<clear/>`, in document order; names case-insensitive; an `<add>` of a name already there is an error, as in ASP.NET); other providers are ignored | |
/// | `timeout` | idle timeout of sessions, in minutes (1 to 525600; not `Infinite`) | 20 |
/// | `cookieName` | the session cookie's name ([`WebConfig::cookie_name`]) | `ASP.NET_SessionId` |
/// | `cookieless` | `UseCookies` or `false` only; ids in URLs (`UseUri`, `AutoDetect`, `UseDeviceProfile`, `true`) are an error, on purpose: they leak through links, logs and `Referer` | `UseCookies` |
/// | `regenerateExpiredSessionId` | read ([`WebConfig::regenerate_expired_session_id`]); `false` is not followed (a warning): an id the store does not know is never adopted, a new one is issued (session fixation). ASP.NET applies it to cookieless sessions only | `true` |
/// | `cookieSameSite` | `Lax` (the cookie is always `SameSite=Lax`); `Unspecified` gives a warning; `None` and `Strict` are errors | `Lax` |
/// | `partitionResolverType`, `sessionIDManagerType` | an error when set: .NET types cannot be loaded | |
/// | `sqlConnectionString`, `sqlCommandTimeout`, `sqlConnectionRetryInterval`, `allowCustomSqlDatabase`, `stateConnectionString`, `stateNetworkTimeout`, `compressionEnabled`, `useHostingIdentity` | ignored: they serve the SQLServer and StateServer modes only, as in ASP.NET | |
/// | `configSource`, `lockAttributes`, `lockAllAttributesExcept`, `lockElements`, `lockAllElementsExcept`, `lockItem` | the configuration system's own (`configSource` as above; the locks ignored) | |
/// | any other | an error naming it (with the right spelling when only its case is wrong) | |
///
/// `<system.web><httpRuntime executionTimeout>` (seconds, default 110) is the lock TTL, as the
/// Redis provider reads it; its other attributes are not about sessions and are ignored.
///
/// The chosen provider's `<add>` attributes are the seed provider's, read by
/// [`ConfigBuilder::attribute`] with their ASP.NET meanings and defaults (see
/// [`Config::from_attributes`]; an empty attribute means its default; an unknown one is an error
/// naming it), after the Redis provider's lookups: a string attribute (`host`, `accessKey`,
/// `applicationName`, ...) that names an `<appSettings>` key is that setting's value;
/// `connectionString` is looked up in `<appSettings>`, then in `<connectionStrings>`, then taken
/// as written (where a bare name is also an environment variable's, see
/// [`Config::from_attributes`]); a number or boolean is looked up in `<appSettings>` only when it
/// does not parse.
/// A provider whose `type` is ASP.NET's SQL Server or Cosmos DB provider is an error naming what
/// to use instead; other types are left to the attributes. A provider that names no store (no
/// `connectionString` and no `host`) is an error, never the memory store, except ASP.NET's Redis
/// provider (`type="Microsoft.Web.Redis.RedisSessionStateProvider"`), which, as in ASP.NET,
/// connects to 127.0.0.1 (with a warning in [`WebConfig::warnings`]). The provider may not
/// set `timeout` or `executionTimeout` (or their millisecond forms) when `<sessionState>` or
/// `<httpRuntime>` does.
///
/// Errors are [`Error::InvalidConfig`](crate::Error::InvalidConfig) naming the element and
/// attribute (`<add name="MySessionStateStore"> port`) and the file and line; they never echo a
/// value that may be a secret.
#[derive(Clone)]
pub struct WebConfig {
    config: Config,
    builder: ConfigBuilder,
    mode: SessionStateMode,
    provider: Option<String>,
    cookie_name: String,
    regenerate_expired_session_id: bool,
    warnings: Vec<String>,
}

impl WebConfig {
    /// Reads the `web.config` file `path` (and the files its `configSource` and `file` attributes
    /// name, relative to its directory).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`](crate::Error::InvalidConfig) naming the file when it cannot be
    /// read or is not well-formed XML, and naming the element and attribute for a setting that
    /// is missing, unknown, refused or bad (see the table above).
    pub fn from_path(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let source = xml::Source::file(path);
        let root = xml::parse(&xml::read_file(path)?, &source)?;
        session_state::read(&xml::sections(&root, &source)?)
    }

    /// Reads a `web.config` given as text (messages call it `web.config`). A `configSource` or
    /// `<appSettings file>` is an error here: their paths are relative to the file, which
    /// [`WebConfig::from_path`] knows.
    ///
    /// # Errors
    /// As [`WebConfig::from_path`].
    pub fn parse(text: &str) -> Result<Self> {
        let source = xml::Source::text();
        let root = xml::parse(text, &source)?;
        session_state::read(&xml::sections(&root, &source)?)
    }

    /// The configuration: the store, the provider's settings, the session timeout and the lock
    /// TTL.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The configuration, by value.
    pub fn into_config(self) -> Config {
        self.config
    }

    /// A builder holding every setting read, to change some in code before
    /// [`ConfigBuilder::build`].
    pub fn config_builder(&self) -> ConfigBuilder {
        self.builder.clone()
    }

    /// `<sessionState mode>`.
    pub fn mode(&self) -> SessionStateMode {
        self.mode
    }

    /// The name of the provider used (`customProvider`, as its `<add name>` spells it); `None`
    /// for `InProc`.
    pub fn provider_name(&self) -> Option<&str> {
        self.provider.as_deref()
    }

    /// The session cookie's name: `cookieName`, default `ASP.NET_SessionId`.
    pub fn cookie_name(&self) -> &str {
        &self.cookie_name
    }

    /// `regenerateExpiredSessionId` as written (default `true`). Whatever it says, an id the
    /// store does not know is never adopted: the web layer issues a new one.
    pub fn regenerate_expired_session_id(&self) -> bool {
        self.regenerate_expired_session_id
    }

    /// What `<sessionState>` says that is read but not followed exactly, each also logged with
    /// `tracing::warn!` when read: `regenerateExpiredSessionId="false"`,
    /// `cookieSameSite="Unspecified"`, `mode="InProc"` with providers. (The provider attributes
    /// that are ignored, such as `loggingClassName`, are logged by [`ConfigBuilder::attribute`].)
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The session cookie's settings for [`SessionLayer::with_cookie`](crate::web::SessionLayer::with_cookie):
    /// the name from `cookieName`, the rest [`CookieOptions`](crate::web::CookieOptions)'
    /// defaults (`Path=/`, `Secure`, `HttpOnly`, `SameSite=Lax`), which code can change.
    #[cfg(feature = "axum")]
    #[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
    pub fn cookie_options(&self) -> crate::web::CookieOptions {
        // The name was checked by the same rule when the file was read.
        crate::web::CookieOptions::new()
            .with_name(&self.cookie_name)
            .unwrap_or_default()
    }
}

impl fmt::Debug for WebConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebConfig")
            .field("config", &self.config)
            .field("mode", &self.mode)
            .field("provider", &self.provider)
            .field("cookie_name", &self.cookie_name)
            .field(
                "regenerate_expired_session_id",
                &self.regenerate_expired_session_id,
            )
            .field("warnings", &self.warnings)
            .finish_non_exhaustive()
    }
}

/// Opens the store that the `web.config` file `path` names ([`WebConfig::from_path`]) and
/// returns a [`SessionManager`] on it, as [`open`](crate::open) does. The file is read with
/// blocking I/O, once, before the store connects. The cookie's name is in the [`WebConfig`]:
/// read it with [`WebConfig::from_path`] and call [`open`](crate::open) on its
/// [`config`](WebConfig::config) when the web layer needs it.
///
/// ```no_run
/// # async fn demo() -> sessions::Result<()> {
/// let manager = sessions::open_web_config("web.config").await?;
/// # let _ = manager; Ok(()) }
/// ```
///
/// # Errors
/// As [`WebConfig::from_path`], then as [`connect`](crate::connect).
pub async fn open_web_config(path: impl AsRef<Path> + Send) -> Result<SessionManager> {
    open_web_config_with(path, &StoreOptions::new()).await
}

/// [`open_web_config`] with backend options (a CA for Redis TLS, the SQL pool, ...).
///
/// # Errors
/// As [`open_web_config`].
pub async fn open_web_config_with(
    path: impl AsRef<Path> + Send, options: &StoreOptions,
) -> Result<SessionManager> {
    let web_config = WebConfig::from_path(path)?;
    open_with(web_config.config(), options).await
}
