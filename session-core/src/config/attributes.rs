//! Reading the seed provider's attributes (`web.config` `<add .../>` pairs) into a [`Config`]:
//! the attribute table, "empty means the default", the `connectionString` forms, and the ASP.NET
//! provider's attributes that are ignored or refused here (docs/contract.md §4).

use std::time::Duration;

use super::{
    Config, ConfigBuilder, DEFAULT_CONNECTION_TIMEOUT, at_least_1, at_least_1ms, non_zero,
    session_timeout,
};
use crate::conn_string::{Connection, classify};
use crate::error::{Error, Result};
use crate::names::AppName;
use crate::refresh::RefreshWindow;

impl Config {
    /// Every attribute name [`Config::from_attributes`] reads, as ASP.NET spells them in a
    /// `web.config` provider's `<add>` (the reader itself ignores case).
    pub const ATTRIBUTES: &'static [&'static str] = &[
        "name",
        "type",
        "description",
        "loggingClassName",
        "loggingMethodName",
        "redisSerializerType",
        "settingsClassName",
        "settingsMethodName",
        "connectionString",
        "url",
        "host",
        "port",
        "user",
        "accessKey",
        "ssl",
        "throwOnError",
        "retryTimeoutInMilliseconds",
        "databaseId",
        "applicationName",
        "connectionTimeoutInMilliseconds",
        "operationTimeoutInMilliseconds",
        "timeout",
        "sessionTimeoutInMilliseconds",
        "executionTimeout",
        "lockTtlInMilliseconds",
        "pollIntervalInMilliseconds",
        "refreshWindowPercent",
        "nearCache",
        "skipKeepAliveWhenUnused",
        "maxWaitersPerSession",
        "requestQueueLimitPerSession",
        "lockWaitTimeoutInMilliseconds",
        "maxSessionSizeInBytes",
    ];
    /// Reads the seed's provider attributes as key/value pairs (names case-insensitive), as copied
    /// from a `web.config` `<add .../>` element.
    ///
    /// An empty or all-whitespace value means the attribute's default, as in ASP.NET (the seed
    /// sample's `port=""`, `accessKey=""`): for `connectionString`, `url`, `host`, `accessKey`
    /// and `user` that is "not set". Other values are trimmed, except `accessKey` and `user`,
    /// which are kept as written.
    ///
    /// | attribute | meaning | default |
    /// |---|---|---|
    /// | `connectionString` or `url` | the store: a URL (its scheme selects the store), a StackExchange.Redis configuration (Redis), or the name of an environment variable holding either (below) | not set |
    /// | `host`, `port` | the Redis server when there is no `connectionString` (port 0: 6379, or 6380 with `ssl`) | not set, 0 |
    /// | `accessKey`, `user` | password, ACL user name (with `host`) | not set |
    /// | `ssl` | TLS (`true`/`false`) | `false` |
    /// | `databaseId` | Redis database number | 0 |
    /// | `applicationName` | namespace of the sessions ([`AppName`]: spaces allowed, no `{` `}`) | `/` |
    /// | `throwOnError` | `false`: degrade instead of failing | `true` |
    /// | `retryTimeoutInMilliseconds` | retry budget for transient failures, 0 = none | 0 |
    /// | `connectionTimeoutInMilliseconds` | connect timeout of networked stores, 0 = default | 5 s |
    /// | `operationTimeoutInMilliseconds` | limit per attempt of a store operation, 0 = none | 0 |
    /// | `timeout` (minutes) or `sessionTimeoutInMilliseconds` | idle lifetime of a session | 20 min |
    /// | `executionTimeout` (seconds) or `lockTtlInMilliseconds` | age at which a lock is stale | 110 s |
    /// | `refreshWindowPercent` | refresh window `w` in % of each session's timeout, 0 = exact sliding ([`RefreshWindow`]) | 10 |
    /// | `nearCache` | Redis only: answer reads of recently read, unchanged sessions from process memory, kept current by the server (`true`/`false`; docs/contract.md §2 near cache) | `false` |
    /// | `skipKeepAliveWhenUnused` | `true`: a request that carries a session cookie but does not use the session does not slide its expiry (ASP.NET slides it, one `touch`) | `false` |
    /// | `pollIntervalInMilliseconds` | longest wait between looks at a lock where the store has no release signal (from 2 ms, doubling) | 500 |
    /// | `maxWaitersPerSession` or `requestQueueLimitPerSession` | waiters on one session | 50 |
    /// | `lockWaitTimeoutInMilliseconds` | how long a request waits for a lock | 120000 |
    /// | `maxSessionSizeInBytes` | largest session (names + encoded values) | 16 MiB |
    ///
    /// **`connectionString`** (and `url`) is read in this order:
    /// 1. A bare name (letters, digits, `_`, `.`, `-` only) is first looked up as an environment
    ///    variable (ASP.NET looks it up in `<appSettings>` and `<connectionStrings>`): when set and
    ///    not empty, its value is read as below (as a URL or a StackExchange string; it is not
    ///    looked up again). When unset, the name is a StackExchange host if it is a valid host
    ///    name (`localhost`, `redis`, `cache.example.com`, `10.0.0.1`); otherwise (`MY_REDIS`:
    ///    host names have no `_`) it is an error naming the variable.
    /// 2. `<scheme>://...` is a URL ([`Config::url`]).
    /// 3. Comma-separated endpoints (`host[:port]`, `[v6]:port`) and `key=value` options, with at
    ///    least one endpoint, are a StackExchange.Redis configuration
    ///    ([`Config::redis_configuration`]): `contoso.redis.cache.windows.net:6380,password=...,ssl=True,abortConnect=False`,
    ///    `localhost:6379`, `redis:6379` (a Redis URL always has `//`).
    /// 4. Any other `<scheme>:...` without a `,` is a URL (`sqlite:sessions.db`, `sqlite::memory:`).
    /// 5. Anything else is an error. Errors never echo the value.
    ///
    /// Ignored: `name`, `type` and `description` (the provider element's own), and, with a
    /// `tracing` warning, `loggingClassName`, `loggingMethodName` (this crate logs through
    /// `tracing`) and `redisSerializerType` (items are stored in this crate's own encoding, never
    /// shared with .NET processes). Refused: `settingsClassName` and `settingsMethodName` (a .NET
    /// method found by reflection; give the string in `connectionString` or an environment
    /// variable instead). Any other name is an error naming it, so that a typo cannot pass.
    ///
    /// Which store a configuration opens is the `sessions` facade's decision: a URL's scheme, or
    /// Redis for a StackExchange configuration or a `host`; with none of them it is an error
    /// (`memory://` names the in-process store), never a silent fallback.
    ///
    /// ```
    /// use session_core::Config;
    ///
    /// // The seed's sample: empty attributes are the defaults.
    /// let c = Config::from_attributes([
    ///     ("host", "contoso.redis.cache.windows.net"),
    ///     ("port", ""),
    ///     ("accessKey", ""),
    ///     ("ssl", "true"),
    ///     ("applicationName", ""),
    /// ])?;
    /// assert_eq!((c.port(), c.access_key(), c.application_name().as_str()), (0, None, "/"));
    ///
    /// let c = Config::from_attributes([(
    ///     "connectionString",
    ///     "contoso.redis.cache.windows.net:6380,password=k3y,ssl=True,abortConnect=False",
    /// )])?;
    /// assert!(c.url().is_none());
    /// assert!(c.redis_configuration().unwrap().starts_with("contoso.redis.cache.windows.net:6380,"));
    /// assert!(!format!("{c:?}").contains("k3y"));
    ///
    /// let c = Config::from_attributes([("connectionString", "postgres://app@db/sessions")])?;
    /// assert_eq!(c.url(), Some("postgres://app@db/sessions"));
    /// # Ok::<(), session_core::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the attribute for an unknown name, an unparsable value or a
    /// value out of range.
    pub fn from_attributes<'a, I>(attributes: I) -> Result<Self>
    where
        I: IntoIterator<Item = (&'a str, &'a str)>,
    {
        Self::from_attributes_with(attributes, env_lookup)
    }

    /// [`Config::from_attributes`] with `lookup` resolving a `connectionString` (or `url`) given
    /// by name instead of the environment: a `web.config` reader answers from the file's
    /// `<appSettings>` and `<connectionStrings>` (and may fall back to the environment itself).
    /// `lookup` gets the name as written and returns the value, or `None` when it has none.
    ///
    /// ```
    /// use session_core::Config;
    ///
    /// let file = |name: &str| (name == "SessionCache").then(|| "cache:6380,ssl=True".to_owned());
    /// let c = Config::from_attributes_with([("connectionString", "SessionCache")], file)?;
    /// assert_eq!(c.redis_configuration(), Some("cache:6380,ssl=True"));
    /// # Ok::<(), session_core::Error>(())
    /// ```
    ///
    /// # Errors
    /// As [`Config::from_attributes`].
    pub fn from_attributes_with<'a, I, F>(attributes: I, lookup: F) -> Result<Self>
    where
        I: IntoIterator<Item = (&'a str, &'a str)>,
        F: Fn(&str) -> Option<String>,
    {
        let mut b = Self::builder();
        let mut redis_provider = false;
        for (name, value) in attributes {
            if name.trim().eq_ignore_ascii_case("type") {
                redis_provider = is_redis_provider(value);
            }
            b = b.attribute_with(name, value, &lookup)?;
        }
        let c = &b.config;
        if redis_provider && c.url.is_none() && c.redis_configuration.is_none() && c.host.is_none()
        {
            // The element names ASP.NET's Redis provider, whose default host is 127.0.0.1: a
            // choice the settings made, not a fallback to memory.
            tracing::warn!(
                "the Redis provider's element gives no host or connectionString: its default host, \
                 127.0.0.1, is used"
            );
            b = b.attribute_with("host", "127.0.0.1", &lookup)?;
        }
        b.build()
    }
}

/// Whether a provider element's `type` is ASP.NET's Redis provider
/// (`Microsoft.Web.Redis.RedisSessionStateProvider`, with or without its assembly name).
pub(crate) fn is_redis_provider(type_name: &str) -> bool {
    type_name
        .split(',')
        .next()
        .unwrap_or_default()
        .trim()
        .eq_ignore_ascii_case("Microsoft.Web.Redis.RedisSessionStateProvider")
}

/// Every attribute name [`ConfigBuilder::attribute`] knows, lowercase: the settings, the provider
/// element's own (`name`, `type`, `description`), and the ASP.NET provider's that are ignored or
/// refused here. An empty value leaves any of them at its default; another name is an error.
const ATTRIBUTES: &[&str] = &[
    "name",
    "type",
    "description",
    "loggingclassname",
    "loggingmethodname",
    "redisserializertype",
    "settingsclassname",
    "settingsmethodname",
    "connectionstring",
    "url",
    "host",
    "port",
    "user",
    "accesskey",
    "ssl",
    "throwonerror",
    "retrytimeoutinmilliseconds",
    "databaseid",
    "applicationname",
    "connectiontimeoutinmilliseconds",
    "operationtimeoutinmilliseconds",
    "timeout",
    "sessiontimeoutinmilliseconds",
    "executiontimeout",
    "lockttlinmilliseconds",
    "pollintervalinmilliseconds",
    "refreshwindowpercent",
    "nearcache",
    "skipkeepalivewhenunused",
    "maxwaiterspersession",
    "requestqueuelimitpersession",
    "lockwaittimeoutinmilliseconds",
    "maxsessionsizeinbytes",
];

/// `value` trimmed, or `None` when nothing is left (the attribute's default).
fn present(value: &str) -> Option<&str> {
    Some(value.trim()).filter(|v| !v.is_empty())
}

/// The environment variable `name`, if set and valid Unicode: how a `connectionString` given by
/// name is resolved (ASP.NET looks it up in `<appSettings>` and `<connectionStrings>`).
fn env_lookup(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn parse_bool(setting: &str, value: &str) -> Result<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(Error::config(setting, "expected true or false")),
    }
}

fn parse_u64(setting: &str, value: &str) -> Result<u64> {
    value
        .trim()
        .parse::<u64>()
        .map_err(|_| Error::config(setting, "expected a non-negative whole number"))
}

fn parse_millis(setting: &str, value: &str) -> Result<Duration> {
    parse_u64(setting, value).map(Duration::from_millis)
}

impl ConfigBuilder {
    /// Applies one attribute by its seed name (case-insensitive); see [`Config::from_attributes`].
    /// A `connectionString` (or `url`) that is a bare name is looked up in the environment.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the attribute.
    pub fn attribute(self, name: &str, value: &str) -> Result<Self> {
        self.attribute_with(name, value, &env_lookup)
    }

    /// [`ConfigBuilder::attribute`] with `lookup` resolving a `connectionString` (or `url`) given
    /// by name, instead of the environment (see [`Config::from_attributes_with`]).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the attribute.
    pub fn attribute_with(
        mut self, name: &str, value: &str, lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self> {
        let c = &mut self.config;
        let key = name.trim().to_ascii_lowercase();
        let written = value;
        // An empty (or all-whitespace) value is the attribute's default, as in ASP.NET (the seed
        // sample has `port=""`): the setting is left as it is. Unknown names are refused anyway.
        let Some(value) = present(value) else {
            return match key.as_str() {
                k if ATTRIBUTES.contains(&k) => Ok(self),
                _ => Err(Error::config(name, "unknown setting")),
            };
        };
        match key.as_str() {
            "name" | "type" | "description" => {}
            "loggingclassname" | "loggingmethodname" | "redisserializertype" => {
                tracing::warn!(
                    attribute = name,
                    "ignored: a .NET type or method loaded by reflection (this provider logs \
                     through `tracing` and stores items in its own encoding)"
                );
            }
            "settingsclassname" | "settingsmethodname" => {
                return Err(Error::config(
                    name,
                    "names a .NET method that yields the connection string, which cannot be \
                     loaded here (no reflection): give the string in connectionString, or the \
                     name of an environment variable that holds it",
                ));
            }
            "connectionstring" | "url" => match classify(name, value, lookup)? {
                Some(Connection::Url(url)) => {
                    c.url = Some(url);
                    c.redis_configuration = None;
                }
                Some(Connection::Redis(configuration)) => {
                    c.redis_configuration = Some(configuration);
                    c.url = None;
                }
                None => {}
            },
            "host" => c.host = Some(value.to_owned()),
            "port" => {
                c.port = value
                    .parse::<u16>()
                    .map_err(|_| Error::config(name, "expected a port number 0..=65535"))?;
            }
            // Secrets and user names are kept as written (only an all-whitespace one is unset).
            "user" => c.user = Some(written.to_owned()),
            "accesskey" => c.access_key = Some(written.to_owned()),
            "ssl" => c.ssl = parse_bool(name, value)?,
            "throwonerror" => c.throw_on_error = parse_bool(name, value)?,
            "retrytimeoutinmilliseconds" => c.retry_timeout = parse_millis(name, value)?,
            "databaseid" => {
                c.database_id = value
                    .parse::<u32>()
                    .map_err(|_| Error::config(name, "expected a non-negative database number"))?;
            }
            "applicationname" => {
                c.application_name =
                    AppName::new(value).map_err(|e| Error::config(name, e.to_string()))?;
            }
            "connectiontimeoutinmilliseconds" => {
                c.connection_timeout =
                    non_zero(parse_millis(name, value)?).unwrap_or(DEFAULT_CONNECTION_TIMEOUT);
            }
            "operationtimeoutinmilliseconds" => {
                c.operation_timeout = non_zero(parse_millis(name, value)?);
            }
            "timeout" => {
                let minutes = parse_u64(name, value)?;
                c.session_timeout =
                    session_timeout(name, Duration::from_secs(minutes.saturating_mul(60)))?;
            }
            "sessiontimeoutinmilliseconds" => {
                c.session_timeout = session_timeout(name, parse_millis(name, value)?)?;
            }
            "executiontimeout" => {
                c.lock_ttl = at_least_1ms(name, Duration::from_secs(parse_u64(name, value)?))?;
            }
            "lockttlinmilliseconds" => c.lock_ttl = at_least_1ms(name, parse_millis(name, value)?)?,
            "pollintervalinmilliseconds" => {
                c.poll_interval = at_least_1ms(name, parse_millis(name, value)?)?;
            }
            "refreshwindowpercent" => {
                let percent = value.parse::<u8>().map_err(|_| {
                    Error::config(name, "expected a whole percentage of the timeout, 0..=100")
                })?;
                c.refresh_window = RefreshWindow::from_percent(percent)
                    .map_err(|_| Error::config(name, "at most 100 % of the timeout"))?;
            }
            "nearcache" => c.near_cache = parse_bool(name, value)?,
            "skipkeepalivewhenunused" => c.keep_alive_when_unused = !parse_bool(name, value)?,
            "maxwaiterspersession" | "requestqueuelimitpersession" => {
                c.max_waiters_per_session = at_least_1(name, parse_u64(name, value)?)?;
            }
            "lockwaittimeoutinmilliseconds" => {
                c.lock_wait_timeout = at_least_1ms(name, parse_millis(name, value)?)?;
            }
            "maxsessionsizeinbytes" => {
                c.max_session_size = at_least_1(name, parse_u64(name, value)?)?;
            }
            _ => return Err(Error::config(name, "unknown setting")),
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_redis_provider_type_means_its_default_host() {
        let redis = "Microsoft.Web.Redis.RedisSessionStateProvider, Microsoft.Web.RedisSessionStateProvider";
        let typed = Config::from_attributes([
            ("type", redis),
            ("port", ""),
            ("accessKey", "k"),
            ("ssl", "true"),
        ])
        .unwrap();
        assert_eq!(typed.host(), Some("127.0.0.1"));
        let untyped =
            Config::from_attributes([("port", ""), ("accessKey", "k"), ("ssl", "true")]).unwrap();
        assert_eq!(untyped.host(), None, "no provider type: no store named");
        let given = Config::from_attributes([("type", redis), ("host", "cache.example")]).unwrap();
        assert_eq!(given.host(), Some("cache.example"));
    }

    fn attrs(pairs: &[(&'static str, &'static str)]) -> Result<Config> {
        Config::from_attributes(pairs.iter().copied())
    }

    fn bad_setting(r: Result<Config>) -> String {
        match r {
            Err(Error::InvalidConfig { setting, .. }) => setting,
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }

    #[test]
    fn refresh_window_is_a_percentage_of_the_timeout() {
        let c = attrs(&[("RefreshWindowPercent", "0")]).unwrap();
        assert!(c.refresh_window().is_exact());
        let c = attrs(&[("refreshWindowPercent", " 25 ")]).unwrap();
        assert_eq!(c.refresh_window().percent(), 25);
        for bad in ["101", "-1", "ten", "2.5"] {
            assert_eq!(
                bad_setting(attrs(&[("refreshWindowPercent", bad)])),
                "refreshWindowPercent",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn every_seed_attribute_is_read_case_insensitively() {
        let c = attrs(&[
            ("name", "MySessionStateStore"),
            ("type", "Microsoft.Web.Redis.RedisSessionStateProvider"),
            ("HOST", "cache.example"),
            ("Port", "6380"),
            ("accessKey", "s3cret"),
            ("ssl", "True"),
            ("throwOnError", "FALSE"),
            ("retryTimeoutInMilliseconds", "5000"),
            ("databaseId", "3"),
            ("applicationName", "/shop"),
            ("connectionTimeoutInMilliseconds", "1500"),
            ("operationTimeoutInMilliseconds", "250"),
            ("timeout", "30"),
            ("executionTimeout", "90"),
            ("pollIntervalInMilliseconds", "100"),
            ("requestQueueLimitPerSession", "7"),
            ("lockWaitTimeoutInMilliseconds", "2000"),
            ("maxSessionSizeInBytes", "65536"),
            ("user", "app"),
        ])
        .unwrap();
        assert_eq!(c.host(), Some("cache.example"));
        assert_eq!(c.port(), 6380);
        assert_eq!(c.access_key(), Some("s3cret"));
        assert!(c.ssl());
        assert!(!c.throw_on_error());
        assert_eq!(c.retry_timeout(), Duration::from_secs(5));
        assert_eq!(c.database_id(), 3);
        assert_eq!(c.application_name().as_str(), "/shop");
        assert_eq!(c.connection_timeout(), Duration::from_millis(1500));
        assert_eq!(c.operation_timeout(), Some(Duration::from_millis(250)));
        assert_eq!(c.session_timeout(), Duration::from_secs(1800));
        assert_eq!(c.lock_ttl(), Duration::from_secs(90));
        assert_eq!(c.poll_interval(), Duration::from_millis(100));
        assert_eq!(c.max_waiters_per_session(), 7);
        assert_eq!(c.lock_wait_timeout(), Duration::from_secs(2));
        assert_eq!(c.max_session_size(), 65536);
        assert_eq!(c.user(), Some("app"));
        let debug = format!("{c:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
    }

    /// `0` means the one default of each timeout, whether it comes as an attribute or through the
    /// builder: the connect timeout's 5 s, and no limit per operation attempt.
    #[test]
    fn zero_timeouts_mean_the_one_default() {
        let c = attrs(&[
            ("connectionTimeoutInMilliseconds", "0"),
            ("operationTimeoutInMilliseconds", "0"),
        ])
        .unwrap();
        assert_eq!(c.connection_timeout(), DEFAULT_CONNECTION_TIMEOUT);
        assert_eq!(c.operation_timeout(), None);
        let c = Config::builder()
            .connection_timeout(Some(Duration::ZERO))
            .operation_timeout(Some(Duration::ZERO))
            .build()
            .unwrap();
        assert_eq!(c.connection_timeout(), DEFAULT_CONNECTION_TIMEOUT);
        assert_eq!(c.operation_timeout(), None);
        let c = Config::builder()
            .connection_timeout(None)
            .operation_timeout(Some(Duration::from_millis(250)))
            .build()
            .unwrap();
        assert_eq!(c.connection_timeout(), DEFAULT_CONNECTION_TIMEOUT);
        assert_eq!(c.operation_timeout(), Some(Duration::from_millis(250)));
    }

    #[test]
    fn bad_values_name_the_setting() {
        assert_eq!(bad_setting(attrs(&[("port", "70000")])), "port");
        assert_eq!(bad_setting(attrs(&[("port", "-1")])), "port");
        assert_eq!(bad_setting(attrs(&[("ssl", "yes")])), "ssl");
        assert_eq!(bad_setting(attrs(&[("throwOnError", "1")])), "throwOnError");
        assert_eq!(
            bad_setting(attrs(&[("retryTimeoutInMilliseconds", "soon")])),
            "retryTimeoutInMilliseconds"
        );
        assert_eq!(bad_setting(attrs(&[("databaseId", "-3")])), "databaseId");
        assert_eq!(
            bad_setting(attrs(&[("applicationName", "{tag}")])),
            "applicationName"
        );
        assert_eq!(
            bad_setting(attrs(&[("applicationName", "a\tb")])),
            "applicationName"
        );
        assert_eq!(bad_setting(attrs(&[("timeout", "0")])), "timeout");
        assert_eq!(bad_setting(attrs(&[("hots", "x")])), "hots");
        assert_eq!(
            bad_setting(attrs(&[("connectionString", "no such thing")])),
            "connectionString"
        );
        assert_eq!(bad_setting(attrs(&[("url", "password=x")])), "url");
        assert_eq!(
            bad_setting(attrs(&[("settingsClassName", "Contoso.Settings")])),
            "settingsClassName"
        );
        assert_eq!(
            bad_setting(attrs(&[("SettingsMethodName", "GetConnection")])),
            "SettingsMethodName"
        );
        assert_eq!(
            bad_setting(attrs(&[("executionTimeout", "0")])),
            "executionTimeout"
        );
        assert_eq!(
            bad_setting(attrs(&[("lockWaitTimeoutInMilliseconds", "0")])),
            "lockWaitTimeoutInMilliseconds"
        );
        assert_eq!(
            bad_setting(attrs(&[("maxSessionSizeInBytes", "0")])),
            "maxSessionSizeInBytes"
        );
        assert_eq!(
            bad_setting(attrs(&[("pollIntervalInMilliseconds", "0")])),
            "pollIntervalInMilliseconds"
        );
        assert_eq!(
            bad_setting(attrs(&[("maxWaitersPerSession", "0")])),
            "maxWaitersPerSession"
        );
        assert_eq!(bad_setting(attrs(&[("timeout", "525601")])), "timeout");
    }

    /// Issue 13: ASP.NET reads an empty attribute as "the default" (the seed sample has
    /// `port=""`, `accessKey=""`, `applicationName=""`). Every attribute, empty or blank, leaves
    /// the configuration exactly as the defaults; also after a value was set by an earlier one.
    #[test]
    fn an_empty_attribute_is_the_default() {
        let lowercase: Vec<String> = Config::ATTRIBUTES
            .iter()
            .map(|a| a.to_ascii_lowercase())
            .collect();
        assert_eq!(lowercase, ATTRIBUTES, "the test lists every attribute");
        let default = format!("{:?}", Config::default());
        for name in Config::ATTRIBUTES {
            for blank in ["", "  ", "\t\n"] {
                let c = attrs(&[(name, blank)]).unwrap_or_else(|e| panic!("{name}={blank:?}: {e}"));
                assert_eq!(format!("{c:?}"), default, "{name}={blank:?}");
            }
        }
        // The seed sample as it is.
        let c = attrs(&[
            ("name", "MySessionStateStore"),
            ("type", "Microsoft.Web.Redis.RedisSessionStateProvider"),
            ("host", "127.0.0.1"),
            ("accessKey", ""),
            ("port", ""),
            ("ssl", "false"),
            ("applicationName", ""),
            ("connectionString", ""),
            ("databaseId", ""),
            ("throwOnError", ""),
            ("retryTimeoutInMilliseconds", ""),
        ])
        .unwrap();
        assert_eq!(c.host(), Some("127.0.0.1"));
        assert_eq!((c.port(), c.access_key(), c.url()), (0, None, None));
        assert_eq!(c.application_name().as_str(), "/");
        assert!(c.throw_on_error());
        // An empty value after a real one keeps the real one (it is "not given", not "reset").
        let c = attrs(&[("port", "6380"), ("port", "")]).unwrap();
        assert_eq!(c.port(), 6380);
        // Unknown names are refused whatever their value.
        assert_eq!(bad_setting(attrs(&[("hots", "")])), "hots");
    }

    #[test]
    fn application_names_may_hold_spaces() {
        let c = attrs(&[("applicationName", "  /my app  ")]).unwrap();
        assert_eq!(c.application_name().as_str(), "/my app");
        let c = attrs(&[("applicationName", "Contoso Web (staging)")]).unwrap();
        assert_eq!(c.application_name().as_str(), "Contoso Web (staging)");
        assert_eq!(
            bad_setting(attrs(&[("applicationName", "/my {app}")])),
            "applicationName"
        );
    }

    /// `connectionString` (and `url`) in each form: a URL, a StackExchange.Redis configuration,
    /// a bare host; the last one given wins, and `Debug` hides the password.
    #[test]
    fn connection_strings_in_each_form() {
        let azure =
            "contoso.redis.cache.windows.net:6380,password=topsecret=,ssl=True,abortConnect=False";
        for name in ["connectionString", "URL"] {
            let c = attrs(&[(name, azure)]).unwrap();
            assert_eq!(c.redis_configuration(), Some(azure));
            assert_eq!(c.url(), None);
            let debug = format!("{c:?}");
            assert!(!debug.contains("topsecret"), "{debug}");
            assert!(
                debug.contains("contoso.redis.cache.windows.net:6380"),
                "{debug}"
            );
        }
        let c = attrs(&[("connectionString", " 127.0.0.1:6379 ")]).unwrap();
        assert_eq!(c.redis_configuration(), Some("127.0.0.1:6379"));
        let c = attrs(&[("connectionString", "localhost")]).unwrap();
        assert_eq!(c.redis_configuration(), Some("localhost"));
        let c = attrs(&[("connectionString", "sqlite::memory:")]).unwrap();
        assert_eq!(c.url(), Some("sqlite::memory:"));
        let c = attrs(&[("connectionString", azure), ("url", "memory://")]).unwrap();
        assert_eq!(
            (c.url(), c.redis_configuration()),
            (Some("memory://"), None)
        );
        let c = attrs(&[("url", "memory://"), ("connectionString", "cache:6379")]).unwrap();
        assert_eq!(
            (c.url(), c.redis_configuration()),
            (None, Some("cache:6379"))
        );
        let c = Config::builder()
            .url("memory://")
            .redis_configuration("cache:6379,password=topsecret")
            .build()
            .unwrap();
        assert_eq!(c.url(), None);
        assert!(!format!("{c:?}").contains("topsecret"));
    }

    /// The decision on `connectionString="NAME"`: the variable's value when set, else the name
    /// as a host when it is one, else an error naming the variable.
    #[test]
    fn a_connection_string_given_by_name() {
        let lookup = |name: &str| {
            (name == "SESSION_STORE").then(|| "redis-primary:6380,password=topsecret".to_owned())
        };
        let read =
            |value: &str| Config::from_attributes_with([("connectionString", value)], lookup);
        let c = read("SESSION_STORE").unwrap();
        assert_eq!(
            c.redis_configuration(),
            Some("redis-primary:6380,password=topsecret")
        );
        let c = read("redis").unwrap();
        assert_eq!(c.redis_configuration(), Some("redis"));
        let Err(Error::InvalidConfig { setting, reason }) = read("MY_REDIS") else {
            panic!("an unset variable that is no host name was accepted");
        };
        assert_eq!(setting, "connectionString");
        assert!(
            reason.contains("MY_REDIS") && reason.contains("not set"),
            "{reason}"
        );
        // `from_attributes` asks the environment: PATH is set in every test environment, and its
        // value (a list of directories) is no connection string, so the error names it.
        let reason = match Config::from_attributes([("connectionString", "PATH")]) {
            Err(Error::InvalidConfig { reason, .. }) => reason,
            other => panic!("{other:?}"),
        };
        assert!(reason.contains("environment variable PATH"), "{reason}");
    }

    /// The ASP.NET provider's attributes that have no meaning here: logging and the serializer
    /// are ignored (with a warning), a settings method is refused with what to use instead.
    #[test]
    fn the_providers_other_attributes() {
        let c = attrs(&[
            ("loggingClassName", "Contoso.Log"),
            ("loggingMethodName", "GetWriter"),
            ("redisSerializerType", "Contoso.Serializer, Contoso"),
        ])
        .unwrap();
        assert_eq!(format!("{c:?}"), format!("{:?}", Config::default()));
        let Err(Error::InvalidConfig { reason, .. }) =
            attrs(&[("settingsClassName", "Contoso.Settings")])
        else {
            panic!("settingsClassName accepted");
        };
        assert!(reason.contains("environment variable"), "{reason}");
    }
}
