//! Issue 13: an ASP.NET application's `web.config`, read as it is ([`WebConfig`],
//! [`sessions::open_web_config`]). The files are under `tests/web_config/`: the seed document's
//! sample (the Azure documentation's, pointed at a local Redis), `InProc`, `Custom` with every
//! attribute, `connectionString` as a URL, as a StackExchange.Redis string and by name, sections
//! in files of their own, and the errors, whose messages must name what is wrong. The files that
//! name a Redis server open a store on `SESSION_TEST_REDIS_URL` (they say `127.0.0.1:6379`, the
//! sample's own address); a Postgres `connectionString` opens on `SESSION_TEST_POSTGRES_URL`.
//! Without those variables the server trials are ignored, unless `SESSION_TEST_REQUIRE` names
//! them (docs/style.md H10).

use std::path::PathBuf;
use std::time::Duration;

use libtest_mimic::Trial;
use sessions::{Access, Error, SessionManager, SessionStateMode, WebConfig};
use test_support::{TestResult, ensure, fail};

fn file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/web_config")
        .join(name)
}

fn read(name: &str) -> WebConfig {
    WebConfig::from_path(file(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn text(name: &str) -> String {
    std::fs::read_to_string(file(name)).unwrap()
}

/// The setting and the whole message of the configuration error `result` must be.
fn refused(result: sessions::Result<WebConfig>) -> (String, String) {
    match result {
        Err(e @ Error::InvalidConfig { .. }) => {
            let message = e.to_string();
            let Error::InvalidConfig { setting, .. } = e else {
                unreachable!()
            };
            (setting, message)
        }
        Err(other) => panic!("expected InvalidConfig, got {other:?}"),
        Ok(read) => panic!("expected an error, read {read:?}"),
    }
}

/// The error of `xml`, given as text, must name `setting` and say each of `says`.
fn refuses(xml: &str, setting: &str, says: &[&str]) {
    let (got, message) = refused(WebConfig::parse(xml));
    assert_eq!(got, setting, "{message}");
    for part in says {
        assert!(message.contains(part), "{part:?} not in {message:?}");
    }
}

/// A `web.config` whose `<sessionState>` has `attributes` and, for `Custom`, one provider `Redis`
/// with `provider` attributes.
fn web_config(attributes: &str, provider: &str) -> String {
    format!(
        r#"<configuration><system.web>
             <sessionState {attributes}>
               <providers><add name="Redis" type="Microsoft.Web.Redis.RedisSessionStateProvider" {provider}/></providers>
             </sessionState>
           </system.web></configuration>"#
    )
}

// ---------------------------------------------------------------------------------------------
// Reading.

fn seed_sample_reads_as_the_azure_provider() {
    let web = read("seed-sample.config");
    assert_eq!(web.mode(), SessionStateMode::Custom);
    assert_eq!(web.provider_name(), Some("MySessionStateStore"));
    let c = web.config();
    assert_eq!(c.host(), Some("127.0.0.1"));
    assert_eq!((c.port(), c.access_key(), c.ssl()), (0, None, false));
    assert_eq!(c.url(), None);
    assert_eq!(c.session_timeout(), Duration::from_secs(20 * 60));
    assert_eq!(c.lock_ttl(), Duration::from_secs(110));
    assert_eq!(c.application_name().as_str(), "/");
    assert_eq!(web.cookie_name(), "ASP.NET_SessionId");
    assert!(web.regenerate_expired_session_id());
    assert!(web.warnings().is_empty(), "{:?}", web.warnings());

    let all = read("seed-sample-attributes.config");
    let c = all.config();
    assert_eq!((c.host(), c.port(), c.ssl()), (Some("127.0.0.1"), 0, false));
    assert!(c.throw_on_error());
    assert_eq!(c.retry_timeout(), Duration::from_secs(5));
    assert_eq!(c.database_id(), 0);
    assert_eq!(c.application_name().as_str(), "/");
    assert_eq!(c.connection_timeout(), Duration::from_secs(5));
    assert_eq!(c.operation_timeout(), Some(Duration::from_secs(1)));
}

/// The sample exactly as the documentation prints it has `host=""` (a placeholder for the cache's
/// name) and `ssl="true"`. Its provider `type` names ASP.NET's Redis provider, whose code then
/// connects to 127.0.0.1: so does this reader, saying so in a warning. A provider without that
/// type and without a store names none, and the message says what to give.
fn the_sample_with_its_placeholders_reads_as_the_provider() {
    let xml = text("seed-sample.config")
        .replace(r#"host="127.0.0.1""#, r#"host="""#)
        .replace(r#"ssl="false" />"#, r#"ssl="true" />"#);
    let web = WebConfig::parse(&xml).expect("the sample as printed");
    let c = web.config();
    assert_eq!((c.host(), c.port(), c.ssl()), (Some("127.0.0.1"), 0, true));
    assert!(
        web.warnings().iter().any(|w| w.contains("127.0.0.1")),
        "{:?}",
        web.warnings()
    );
    let untyped = xml.replace(
        r#"type="Microsoft.Web.Redis.RedisSessionStateProvider""#,
        "",
    );
    refuses(
        &untyped,
        r#"<add name="MySessionStateStore">"#,
        &["names no store", "connectionString", "host", "line 34"],
    );
    // An error names the line of the attribute, not of the <add> it is in.
    let xml = text("seed-sample.config").replace(r#"accessKey="""#, r#"accessKey="" port="sixty""#);
    refuses(
        &xml,
        r#"<add name="MySessionStateStore"> port"#,
        &["port number", "line 36"],
    );
}

fn in_proc_is_the_memory_store() {
    let web = read("in-proc.config");
    assert_eq!(web.mode(), SessionStateMode::InProc);
    assert_eq!(web.provider_name(), None);
    let c = web.config();
    assert_eq!(c.url(), Some("memory://"));
    assert_eq!(c.session_timeout(), Duration::from_secs(30 * 60));
    assert_eq!(c.lock_ttl(), Duration::from_secs(90));
    assert_eq!(web.cookie_name(), "MyApp.Session");
    #[cfg(feature = "axum")]
    assert_eq!(web.cookie_options().name(), "MyApp.Session");
    #[cfg(feature = "axum")]
    {
        // Only the name comes from the file: `<httpCookies>` cannot weaken the cookie
        // (docs/security.md §2.3).
        let web = WebConfig::parse(
            r#"<configuration><system.web>
                 <httpCookies domain="evil.example" requireSSL="false" httpOnlyCookies="false"/>
                 <sessionState mode="InProc" cookieName="MyApp.Session"/>
               </system.web></configuration>"#,
        )
        .unwrap();
        let options = web.cookie_options();
        assert_eq!(options.name(), "MyApp.Session");
        assert_eq!(options.path(), "/");
        assert_eq!(options.domain(), None);
        assert!(options.secure());
    }
}

fn custom_with_every_attribute() {
    let web = read("custom-every-attribute.config");
    assert_eq!(web.provider_name(), Some("RedisSessions"));
    assert_eq!(web.cookie_name(), "Shop.Session");
    assert!(web.warnings().is_empty(), "{:?}", web.warnings());
    let c = web.config();
    assert_eq!(c.host(), Some("cache.internal"), "host from <appSettings>");
    assert_eq!(c.port(), 6380);
    assert_eq!(c.access_key(), Some("s3cret"));
    assert_eq!(c.user(), Some("shop"));
    assert!(c.ssl());
    assert!(!c.throw_on_error());
    assert_eq!(c.retry_timeout(), Duration::from_secs(5));
    assert_eq!(c.database_id(), 3);
    assert_eq!(c.application_name().as_str(), "/shop");
    assert_eq!(c.connection_timeout(), Duration::from_millis(1500));
    assert_eq!(c.operation_timeout(), Some(Duration::from_secs(1)));
    assert_eq!(c.refresh_window().percent(), 25);
    assert!(c.near_cache());
    assert!(!c.keep_alive_when_unused());
    assert_eq!(c.poll_interval(), Duration::from_millis(100));
    assert_eq!(c.max_waiters_per_session(), 7);
    assert_eq!(c.lock_wait_timeout(), Duration::from_secs(2));
    assert_eq!(c.max_session_size(), 65536);
    assert_eq!(c.session_timeout(), Duration::from_secs(45 * 60));
    assert_eq!(c.lock_ttl(), Duration::from_secs(90));
    let debug = format!("{web:?}");
    assert!(!debug.contains("s3cret"), "{debug}");
}

fn connection_string_in_each_form() {
    let url = read("connection-string-url.config");
    assert_eq!(url.config().url(), Some("redis://127.0.0.1:6379/2"));
    let se = read("connection-string-stackexchange.config");
    assert_eq!(se.config().url(), None);
    assert_eq!(
        se.config().redis_configuration(),
        Some("127.0.0.1:6379,ssl=False,abortConnect=False,connectTimeout=2000")
    );
    let named = read("connection-string-by-name.config");
    assert_eq!(
        named.config().redis_configuration(),
        Some("127.0.0.1:6379,abortConnect=False"),
        "from <connectionStrings>"
    );
    assert_eq!(named.config().application_name().as_str(), "/by-name");
    assert_eq!(
        named.config().session_timeout(),
        Duration::from_secs(25 * 60),
        "from <location path=\".\">"
    );
    // <appSettings> first, then <connectionStrings>, then the value as written.
    let both = text("connection-string-by-name.config").replace(
        r#"connectionString="SessionCache""#,
        r#"connectionString="Both""#,
    );
    let both = WebConfig::parse(&both).unwrap();
    assert_eq!(both.config().url(), Some("redis://127.0.0.1:6379/4"));
    let literal = text("connection-string-by-name.config").replace(
        r#"connectionString="SessionCache""#,
        r#"connectionString="redis://127.0.0.1:6379/7""#,
    );
    let literal = WebConfig::parse(&literal).unwrap();
    assert_eq!(literal.config().url(), Some("redis://127.0.0.1:6379/7"));
}

/// Every provider attribute is looked up as the Redis provider does: strings in `<appSettings>`
/// first; numbers and booleans only when they do not parse; the value as written otherwise.
fn provider_attributes_are_looked_up_in_app_settings() {
    let with = |settings: &str, provider: &str| {
        WebConfig::parse(
            &web_config(r#"mode="Custom" customProvider="Redis""#, provider).replacen(
                "<configuration>",
                &format!("<configuration><appSettings>{settings}</appSettings>"),
                1,
            ),
        )
    };
    let settings = r#"<add key="Cache" value="cache.internal"/><add key="CacheKey" value="k3y"/>
        <add key="CachePort" value="6380"/><add key="6379" value="1"/>
        <add key="UseTls" value="True"/><add key="Empty" value=""/>"#;
    let web = with(
        settings,
        r#"host="Cache" accessKey="cachekey" port="CachePort" ssl="UseTls""#,
    )
    .unwrap();
    let c = web.config();
    assert_eq!(c.host(), Some("cache.internal"));
    assert_eq!(
        c.access_key(),
        Some("k3y"),
        "keys compare case-insensitively"
    );
    assert_eq!((c.port(), c.ssl()), (6380, true));
    // A number that parses is not looked up; a setting with an empty value is not used.
    let web = with(settings, r#"host="Empty" port="6379""#).unwrap();
    assert_eq!(
        (web.config().host(), web.config().port()),
        (Some("Empty"), 6379)
    );
    // <remove> and <clear/> in document order; a later <add> of a key replaces the earlier one.
    let web = with(
        r#"<add key="Cache" value="x"/><add key="App" value="/a"/><clear/><remove key="None"/>
           <add key="App" value="/b"/><add key="app" value="/from settings"/>"#,
        r#"host="Cache" applicationName="App""#,
    )
    .unwrap();
    assert_eq!(web.config().host(), Some("Cache"), "cleared");
    assert_eq!(web.config().application_name().as_str(), "/from settings");
    // A value found in <appSettings> that the provider refuses names the key.
    let (setting, message) = refused(with(settings, r#"host="h" databaseId="Cache""#));
    assert_eq!(setting, r#"<add name="Redis"> databaseId"#);
    assert!(
        message.contains(r#"<appSettings> key "Cache""#),
        "{message}"
    );
}

fn sections_in_files_of_their_own() {
    let web = read("config-source.config");
    let c = web.config();
    assert_eq!(
        c.url(),
        Some("redis://127.0.0.1:6379/5"),
        "connectionStrings configSource"
    );
    assert_eq!(c.host(), Some("127.0.0.1"), "appSettings file wins");
    assert_eq!(c.session_timeout(), Duration::from_secs(15 * 60));
    // Written on Windows, with `\` between the directory and the file.
    let windows = read("config-source-windows.config");
    assert_eq!(
        windows.config().session_timeout(),
        Duration::from_secs(15 * 60)
    );
    // Given as text, there is no directory to find them in.
    refuses(
        &text("config-source.config"),
        "<connectionStrings> configSource",
        &["WebConfig::from_path"],
    );
    refuses(
        r#"<configuration><appSettings file="secrets.config"/><system.web><sessionState mode="InProc"/></system.web></configuration>"#,
        "<appSettings> file",
        &["WebConfig::from_path"],
    );
    refuses(
        r#"<configuration><system.web><sessionState configSource="../outside.config"/></system.web></configuration>"#,
        "<sessionState> configSource",
        &["relative path in the web.config's directory or below"],
    );
    for absolute in [
        "/etc/session.config",
        r"C:\inetpub\session.config",
        "C:session.config",
        r"\\server\share\s.config",
        r"..\outside.config",
        r"sub\..\..\outside.config",
    ] {
        refuses(
            &format!(
                r#"<configuration><system.web><sessionState configSource="{absolute}"/></system.web></configuration>"#
            ),
            "<sessionState> configSource",
            &["relative path in the web.config's directory or below"],
        );
    }
    refuses(
        r#"<configuration><connectionStrings configProtectionProvider="RsaProtectedConfigurationProvider"><EncryptedData/></connectionStrings></configuration>"#,
        "<connectionStrings>",
        &["encrypted", "aspnet_regiis"],
    );
}

fn providers_follow_add_remove_and_clear() {
    let xml = |providers: &str| {
        format!(
            r#"<configuration><system.web><sessionState mode="Custom" customProvider="b">
                 <providers>{providers}</providers>
               </sessionState></system.web></configuration>"#
        )
    };
    let web = WebConfig::parse(&xml(
        r#"<add name="a" host="a"/><add name="B" host="b1"/><remove name="b"/><add name="b" host="b2"/><add name="c" bogus="ignored: not the chosen one"/>"#,
    ))
    .unwrap();
    assert_eq!(web.config().host(), Some("b2"));
    assert_eq!(web.provider_name(), Some("b"));
    refuses(
        &xml(r#"<add name="b" host="b"/><clear/><add name="a" host="a"/>"#),
        "<sessionState> customProvider",
        &[r#"names "b""#, "after their <remove> and <clear/>: a)"],
    );
    refuses(
        &xml(r#"<add name="b" host="b"/><add name="B" host="c"/>"#),
        r#"<add name="B"> in <providers>"#,
        &["added twice", "line 2"],
    );
    refuses(
        &xml(r#"<add name="b" host="b"/><provider name="x"/>"#),
        "<provider> in <providers>",
        &["only <add>, <remove> and <clear/>"],
    );
}

fn warnings_for_what_is_read_but_not_followed() {
    let web = WebConfig::parse(&web_config(
        r#"mode="Custom" customProvider="Redis" regenerateExpiredSessionId="false" cookieSameSite="Unspecified""#,
        r#"host="127.0.0.1""#,
    ))
    .unwrap();
    assert!(!web.regenerate_expired_session_id());
    assert_eq!(web.warnings().len(), 2, "{:?}", web.warnings());
    assert!(web.warnings()[0].contains("SameSite=Lax"));
    assert!(web.warnings()[1].contains("never adopted"));
    let web = WebConfig::parse(&web_config(
        r#"mode="InProc" customProvider="Redis""#,
        r#"host="127.0.0.1""#,
    ))
    .unwrap();
    assert_eq!(web.config().url(), Some("memory://"));
    assert!(
        web.warnings()[0].contains("not used"),
        "{:?}",
        web.warnings()
    );
}

fn the_builder_adjusts_what_was_read() {
    let web = read("seed-sample.config");
    let config = web
        .config_builder()
        .session_timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    assert_eq!(config.session_timeout(), Duration::from_secs(60));
    assert_eq!(config.host(), Some("127.0.0.1"));
    assert_eq!(
        web.into_config().session_timeout(),
        Duration::from_secs(1200)
    );
}

// ---------------------------------------------------------------------------------------------
// Errors.

fn errors_from_the_files() {
    let (setting, message) = refused(WebConfig::from_path(file("error-unknown-attribute.config")));
    assert_eq!(
        setting, r#"<add name="MySessionStateStore"> prot"#,
        "{message}"
    );
    assert!(message.contains("unknown setting"), "{message}");
    assert!(
        message.contains("error-unknown-attribute.config line 8"),
        "{message}"
    );

    let (setting, message) = refused(WebConfig::from_path(file("error-sql-server.config")));
    assert_eq!(setting, "<sessionState> mode");
    for part in [
        "SQLServer",
        "not supported",
        "postgres://",
        "mysql://",
        "sqlite:",
        "Redis",
    ] {
        assert!(message.contains(part), "{part:?} not in {message}");
    }

    let (setting, message) = refused(WebConfig::from_path(file("error-cookieless.config")));
    assert_eq!(setting, "<sessionState> cookieless");
    assert!(
        message.contains("\"UseUri\"") && message.contains("URLs"),
        "{message}"
    );
    assert!(message.contains("on purpose"), "{message}");

    let (setting, message) = refused(WebConfig::from_path(file("error-no-store.config")));
    assert_eq!(setting, r#"<add name="MySessionStateStore">"#);
    assert!(message.contains("names no store"), "{message}");
    assert!(!message.contains("s3cret"), "{message}");

    let (setting, message) = refused(WebConfig::from_path(file(
        "error-settings-class-name.config",
    )));
    assert_eq!(
        setting, r#"<add name="MySessionStateStore"> settingsClassName"#,
        "{message}"
    );
    assert!(message.contains("connectionString"), "{message}");
}

fn errors_of_the_session_state_section() {
    let custom = r#"mode="Custom" customProvider="Redis""#;
    let host = r#"host="127.0.0.1""#;
    refuses(
        &web_config(r#"mode="Off""#, host),
        "<sessionState> mode",
        &["session state is off"],
    );
    refuses(
        &web_config(
            r#"mode="StateServer" stateConnectionString="tcpip=127.0.0.1:42424""#,
            host,
        ),
        "<sessionState> mode",
        &["StateServer", "not supported", "Redis"],
    );
    refuses(
        &web_config(r#"mode="Memory""#, host),
        "<sessionState> mode",
        &[r#""Memory" is not a mode"#],
    );
    refuses(
        &web_config(r#"timeout="20""#, host),
        "<sessionState> mode",
        &["is missing", "InProc", "never chosen silently"],
    );
    refuses(
        "<configuration><system.web/></configuration>",
        "<sessionState>",
        &["is missing", "mode=\"InProc\""],
    );
    refuses(
        &web_config(r#"mode="Custom""#, host),
        "<sessionState> customProvider",
        &["is missing"],
    );
    for cookieless in ["true", "AutoDetect", "UseDeviceProfile"] {
        refuses(
            &web_config(&format!(r#"{custom} cookieless="{cookieless}""#), host),
            "<sessionState> cookieless",
            &["URLs", "on purpose"],
        );
    }
    for cookieless in ["false", "UseCookies", ""] {
        WebConfig::parse(&web_config(
            &format!(r#"{custom} cookieless="{cookieless}""#),
            host,
        ))
        .unwrap();
    }
    refuses(
        &web_config(&format!(r#"{custom} Timeout="20""#), host),
        "<sessionState> Timeout",
        &["did you mean timeout?", "case-sensitive"],
    );
    refuses(
        &web_config(&format!(r#"{custom} cookieDomain="example.com""#), host),
        "<sessionState> cookieDomain",
        &[
            "is not an attribute of <sessionState>",
            "regenerateExpiredSessionId",
        ],
    );
    refuses(
        &web_config(&format!(r#"{custom} timeout="Infinite""#), host),
        "<sessionState> timeout",
        &["525600 minutes"],
    );
    refuses(
        &web_config(&format!(r#"{custom} timeout="0""#), host),
        "<sessionState> timeout",
        &["one year"],
    );
    refuses(
        &web_config(&format!(r#"{custom} cookieSameSite="None""#), host),
        "<sessionState> cookieSameSite",
        &["SameSite=Lax"],
    );
    refuses(
        &web_config(
            &format!(r#"{custom} partitionResolverType="Shop.Partitions, Shop""#),
            host,
        ),
        "<sessionState> partitionResolverType",
        &[".NET type"],
    );
    refuses(
        &web_config(
            &format!(r#"{custom} sessionIDManagerType="Shop.Ids, Shop""#),
            host,
        ),
        "<sessionState> sessionIDManagerType",
        &[".NET type", "on purpose"],
    );
    refuses(
        &web_config(
            &format!(r#"{custom} regenerateExpiredSessionId="yes""#),
            host,
        ),
        "<sessionState> regenerateExpiredSessionId",
        &["true or false"],
    );
    #[cfg(feature = "axum")]
    refuses(
        &web_config(&format!(r#"{custom} cookieName="my session""#), host),
        "<sessionState> cookieName",
        &["separators"],
    );
    refuses(
        &web_config(
            &format!(r#"{custom} timeout="20""#),
            r#"host="h" timeout="30""#,
        ),
        r#"<add name="Redis"> timeout"#,
        &["<sessionState> timeout too"],
    );
    refuses(
        &web_config(
            custom,
            r#"type="System.Web.Providers.DefaultSessionStateProvider, System.Web.Providers" connectionStringName="DefaultConnection""#,
        )
        .replace(r#"type="Microsoft.Web.Redis.RedisSessionStateProvider" "#, ""),
        r#"<add name="Redis"> type"#,
        &["SQL Server", "postgres://"],
    );
}

fn errors_of_the_file() {
    let (setting, message) = refused(WebConfig::from_path(file("missing.config")));
    assert!(setting.ends_with("missing.config"), "{setting}");
    assert!(message.contains("cannot be read"), "{message}");
    refuses("<configuration>", "web.config", &["not well-formed XML"]);
    refuses(
        "<sessionState mode=\"InProc\"/>",
        "<sessionState>",
        &["root element", "<configuration>"],
    );
    refuses(
        r#"<configuration><system.web><SessionState mode="InProc"/></system.web></configuration>"#,
        "<SessionState>",
        &["case-sensitive"],
    );
    refuses(
        r#"<configuration>
             <system.web><sessionState mode="InProc"/></system.web>
             <location path="."><system.web><sessionState mode="InProc"/></system.web></location>
           </configuration>"#,
        "<sessionState>",
        &["appears twice", "line 2", "line 3"],
    );
    // A <location> for part of the site is not the application's.
    refuses(
        r#"<configuration><location path="admin"><system.web><sessionState mode="InProc"/></system.web></location></configuration>"#,
        "<sessionState>",
        &["is missing"],
    );
    refuses(
        r#"<configuration><system.web><sessionState mode="InProc"><provider/></sessionState></system.web></configuration>"#,
        "<provider> in <sessionState>",
        &["only <providers>"],
    );
}

/// An error never echoes a value that may be a secret: a connection string that is neither a URL
/// nor a StackExchange string, an access key given where a number belongs.
fn errors_do_not_echo_secrets() {
    for provider in [
        r#"connectionString="pass word s3cret" host="h""#,
        r#"host="h" port="s3cret""#,
    ] {
        let (_, message) = refused(WebConfig::parse(&web_config(
            r#"mode="Custom" customProvider="Redis""#,
            provider,
        )));
        assert!(!message.contains("s3cret"), "{message}");
    }
}

// ---------------------------------------------------------------------------------------------
// Opening stores.

/// A round trip on `manager`: a new session with an item, read back by its id.
async fn round_trip(manager: &SessionManager, what: &str) -> TestResult {
    let mut session = manager
        .open(None, Access::Exclusive)
        .await
        .map_err(|e| fail(format!("{what}: open: {e}")))?;
    session
        .insert("n", &42u32)
        .map_err(|e| fail(format!("{what}: {e}")))?;
    let id = session.id().expose().to_owned();
    session
        .end()
        .await
        .map_err(|e| fail(format!("{what}: end: {e}")))?;
    let session = manager
        .open(Some(&id), Access::ReadOnly)
        .await
        .map_err(|e| fail(format!("{what}: reopen: {e}")))?;
    let n = session
        .get::<u32>("n")
        .map_err(|e| fail(format!("{what}: {e}")))?;
    ensure!(n == Some(42), "{what}: read back {n:?}");
    Ok(())
}

async fn in_proc_opens_memory() -> TestResult {
    let manager = sessions::open_web_config(file("in-proc.config"))
        .await
        .map_err(|e| fail(e.to_string()))?;
    ensure!(
        manager.store().backend() == "memory",
        "{}",
        manager.store().backend()
    );
    round_trip(&manager, "in-proc.config").await
}

/// The files that name a Redis server say `127.0.0.1:6379`, the sample's own address.
async fn redis_files_open(redis: test_support::Redis) -> TestResult {
    let here = redis.url().trim_end_matches('/');
    ensure!(
        here == "redis://127.0.0.1:6379",
        "the web.config files point at 127.0.0.1:6379 (the seed sample's own address), but \
         SESSION_TEST_REDIS_URL is {here}"
    );
    for name in [
        "seed-sample.config",
        "seed-sample-attributes.config",
        "connection-string-url.config",
        "connection-string-stackexchange.config",
        "connection-string-by-name.config",
        "config-source.config",
    ] {
        let manager = sessions::open_web_config(file(name))
            .await
            .map_err(|e| fail(format!("{name}: {e}")))?;
        ensure!(
            manager.store().backend() == "redis",
            "{name}: {}",
            manager.store().backend()
        );
        round_trip(&manager, name).await?;
    }
    Ok(())
}

/// Characters that XML attributes must escape.
fn xml_escape(value: &str) -> String {
    value
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A Postgres store through a `<connectionStrings>` entry, as a SQL Server application would
/// have named its database.
async fn postgres_by_connection_string_name(postgres: test_support::SqlServer) -> TestResult {
    let xml = format!(
        r#"<configuration>
             <connectionStrings><add name="Sessions" connectionString="{}" providerName="Npgsql"/></connectionStrings>
             <system.web>
               <sessionState mode="Custom" customProvider="Db" timeout="10">
                 <providers><add name="Db" type="Shop.PostgresSessions, Shop" connectionString="Sessions" applicationName="/web config"/></providers>
               </sessionState>
             </system.web>
           </configuration>"#,
        xml_escape(postgres.url())
    );
    let web = WebConfig::parse(&xml).map_err(|e| fail(e.to_string()))?;
    ensure!(
        web.config().url() == Some(postgres.url()),
        "the URL from <connectionStrings>"
    );
    let manager = sessions::open(web.config())
        .await
        .map_err(|e| fail(e.to_string()))?;
    ensure!(
        manager.store().backend() == "postgres",
        "{}",
        manager.store().backend()
    );
    round_trip(&manager, "postgres").await
}

fn main() -> std::process::ExitCode {
    let args = libtest_mimic::Arguments::from_args();
    let plain: [(&str, fn()); 14] = [
        (
            "read::seed_sample_reads_as_the_azure_provider",
            seed_sample_reads_as_the_azure_provider,
        ),
        (
            "read::the_sample_with_its_placeholders_reads_as_the_provider",
            the_sample_with_its_placeholders_reads_as_the_provider,
        ),
        (
            "read::in_proc_is_the_memory_store",
            in_proc_is_the_memory_store,
        ),
        (
            "read::custom_with_every_attribute",
            custom_with_every_attribute,
        ),
        (
            "read::connection_string_in_each_form",
            connection_string_in_each_form,
        ),
        (
            "read::provider_attributes_are_looked_up_in_app_settings",
            provider_attributes_are_looked_up_in_app_settings,
        ),
        (
            "read::sections_in_files_of_their_own",
            sections_in_files_of_their_own,
        ),
        (
            "read::providers_follow_add_remove_and_clear",
            providers_follow_add_remove_and_clear,
        ),
        (
            "read::warnings_for_what_is_read_but_not_followed",
            warnings_for_what_is_read_but_not_followed,
        ),
        (
            "read::the_builder_adjusts_what_was_read",
            the_builder_adjusts_what_was_read,
        ),
        ("errors::from_the_files", errors_from_the_files),
        (
            "errors::of_the_session_state_section",
            errors_of_the_session_state_section,
        ),
        ("errors::of_the_file", errors_of_the_file),
        ("errors::do_not_echo_secrets", errors_do_not_echo_secrets),
    ];
    let mut trials: Vec<Trial> = plain
        .into_iter()
        .map(|(name, test)| {
            Trial::test(name, move || {
                test();
                Ok(())
            })
        })
        .collect();
    trials.push(Trial::test("open::in_proc_opens_memory", || {
        test_support::block_on(in_proc_opens_memory())
    }));
    trials.push(test_support::trial(
        "open::redis::the_files_open_their_store",
        test_support::redis(),
        redis_files_open,
    ));
    trials.push(test_support::trial(
        "open::postgres::by_connection_string_name",
        test_support::postgres(),
        postgres_by_connection_string_name,
    ));
    libtest_mimic::run(&args, trials).exit_code()
}
