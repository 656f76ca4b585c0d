//! Fast failure during an outage (issue 14), against servers these tests start and stop themselves:
//! a private Postgres cluster (`initdb` in a temporary directory, `pg_ctl -m immediate stop`) and a
//! private MariaDB instance (`mariadb-install-db`, `kill -9`), each on a free port. The shared
//! servers of the other tests are never stopped.
//!
//! While the server is down, every store operation fails with [`Error::Unavailable`] within the
//! connection timeout plus a margin (a bound on a timeout, not a speed claim), whether the pool
//! held (dead) connections or none; a server that accepts connections but never answers fails
//! them within the connection timeout too. Once the server is back, the next attempt succeeds:
//! a store without retries needs no second try, and one under the retry layer recovers within one
//! retry interval of the restart.
//!
//! Run when the Postgres (`SESSION_TEST_POSTGRES_BIN`, for `initdb`/`pg_ctl`) or MySQL
//! (`SESSION_TEST_MYSQL_URL`, then `mariadbd`/`mariadb-install-db` on the `PATH`) variant is
//! configured, as the other SQL tests are (test-support's require-or-ignore rule). As root (CI),
//! the servers run as the `postgres` and `mysql` users, as scripts/sql/start.sh runs them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use backend_sql::{SqlOptions, SqlStore};
use session_core::{
    AcquireOutcome, AppName, Config, CreateOutcome, Error, ItemValue, Items, Layered, LockToken,
    ReadOutcome, RetryLayer, RetryPolicy, SessionId, SessionKey, SessionStore,
};

/// `connectionTimeoutInMilliseconds` of the stores under test: far below the pool's acquire
/// timeout (10 s by default), so that a wait for the latter shows.
const CONNECT: Duration = Duration::from_secs(2);

/// The bound every failing operation must meet: the connection timeout plus a generous margin
/// for a loaded 2-core machine.
const BOUND: Duration = Duration::from_secs(3);

/// A server that a test starts, stops, freezes and thaws.
trait Private: Send {
    /// Its URL, for a superuser, on its test database.
    fn url(&self) -> String;
    /// Starts it and waits until it accepts logins.
    fn start(&mut self);
    /// Stops it abruptly (a crash, not a shutdown).
    fn stop(&mut self);
    /// Freezes the process that accepts connections (`SIGSTOP`): the port still completes TCP
    /// handshakes, but nothing answers.
    fn freeze(&self);
    /// Undoes [`Private::freeze`].
    fn thaw(&self);
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// `program args…`, as `user` when running as root (servers refuse to run as root).
fn command_as(user: &str, program: impl AsRef<Path>, args: &[&str]) -> Command {
    let program = program.as_ref();
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", user, "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    cmd.args(args);
    cmd
}

fn run(mut cmd: Command) {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (scripts/sql/start.sh installs the servers)"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A temporary directory that `user` owns (when running as root).
fn private_dir(user: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    if is_root() {
        let mut chown = Command::new("chown");
        chown.arg(user).arg(dir.path());
        run(chown);
    }
    dir
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn signal(pid: u32, sig: &str) {
    let mut kill = Command::new("kill");
    kill.args([sig, &pid.to_string()]);
    run(kill);
}

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 temporary path")
}

/// A private Postgres cluster: `initdb` in a temporary directory, trust authentication, no fsync.
struct PrivatePostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
}

impl PrivatePostgres {
    fn new(bin: &Path) -> Self {
        let dir = private_dir("postgres");
        let data = dir.path().join("data");
        run(command_as(
            "postgres",
            bin.join("initdb"),
            &[
                "-D",
                path(&data),
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        ));
        let mut pg = Self {
            dir,
            bin: bin.to_owned(),
            port: free_port(),
        };
        pg.start();
        pg
    }

    fn pg_ctl(&self, args: &[&str]) -> Command {
        let mut cmd = command_as("postgres", self.bin.join("pg_ctl"), &["-D"]);
        cmd.arg(self.dir.path().join("data")).args(args);
        cmd
    }

    /// The postmaster's process id (the first line of `postmaster.pid`).
    fn postmaster(&self) -> u32 {
        let pid = std::fs::read_to_string(self.dir.path().join("data/postmaster.pid")).unwrap();
        pid.lines().next().unwrap().trim().parse().unwrap()
    }
}

impl Private for PrivatePostgres {
    fn url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres?sslmode=disable",
            self.port
        )
    }

    fn start(&mut self) {
        let log = self.dir.path().join("log");
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off",
            self.port,
            path(self.dir.path())
        );
        run(self.pg_ctl(&["-l", path(&log), "-w", "-o", &opts, "start"]));
    }

    fn stop(&mut self) {
        run(self.pg_ctl(&["-m", "immediate", "-w", "stop"]));
    }

    /// The postmaster only: it accepts connections; backends already forked keep serving theirs.
    fn freeze(&self) {
        signal(self.postmaster(), "-STOP");
    }

    fn thaw(&self) {
        signal(self.postmaster(), "-CONT");
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        if self.dir.path().join("data/postmaster.pid").exists() {
            let _ = Command::new("kill")
                .args(["-CONT", &self.postmaster().to_string()])
                .status();
            let _ = self
                .pg_ctl(&["-m", "immediate", "-w", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// A private MariaDB instance: `mariadb-install-db` in a temporary directory, `root` without a
/// password on 127.0.0.1, a `sessdb` database.
struct PrivateMariadb {
    dir: tempfile::TempDir,
    port: u16,
    server: Option<Child>,
}

impl PrivateMariadb {
    fn new() -> Self {
        let dir = private_dir("mysql");
        let data = dir.path().join("data");
        let datadir = format!("--datadir={}", path(&data));
        let mut install = Command::new("mariadb-install-db");
        install.args([
            "--no-defaults",
            &datadir,
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
        ]);
        if is_root() {
            install.arg("--user=mysql");
        }
        install.stdout(Stdio::null());
        run(install);
        let mut my = Self {
            dir,
            port: free_port(),
            server: None,
        };
        my.start();
        let url = format!("mysql://root@127.0.0.1:{}/mysql?ssl-mode=disabled", my.port);
        block_on(async move {
            use sqlx::Connection;
            let mut conn = sqlx::MySqlConnection::connect(&url).await.unwrap();
            sqlx::raw_sql("CREATE DATABASE sessdb")
                .execute(&mut conn)
                .await
                .unwrap();
        });
        my
    }

    fn pid(&self) -> u32 {
        self.server.as_ref().expect("running").id()
    }
}

/// Runs `fut` to completion on a runtime of its own (from blocking test setup).
fn block_on<F: std::future::Future + Send + 'static>(fut: F) -> F::Output
where
    F::Output: Send + 'static,
{
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(fut)
    })
    .join()
    .unwrap()
}

impl Private for PrivateMariadb {
    fn url(&self) -> String {
        format!(
            "mysql://root@127.0.0.1:{}/sessdb?ssl-mode=disabled",
            self.port
        )
    }

    fn start(&mut self) {
        let d = self.dir.path();
        let log = std::fs::File::create(d.join("log")).unwrap();
        let mut cmd = Command::new("mariadbd");
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", path(&d.join("data"))))
            .arg(format!("--socket={}", path(&d.join("sock"))))
            .arg(format!("--pid-file={}", path(&d.join("pid"))))
            .arg(format!("--port={}", self.port))
            .args([
                "--bind-address=127.0.0.1",
                "--skip-log-bin",
                "--innodb-buffer-pool-size=16M",
            ]);
        if is_root() {
            cmd.arg("--user=mysql");
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("mariadbd: {e} (scripts/sql/start.sh installs it)"));
        self.server = Some(child);
        let url = format!(
            "mysql://root@127.0.0.1:{}/mysql?ssl-mode=disabled",
            self.port
        );
        let ready = block_on(async move {
            use sqlx::Connection;
            for _ in 0..600 {
                if let Ok(conn) = sqlx::MySqlConnection::connect(&url).await {
                    let _ = conn.close().await;
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            false
        });
        assert!(
            ready,
            "mariadbd did not start: {}",
            std::fs::read_to_string(d.join("log")).unwrap_or_default()
        );
    }

    /// `kill -9`.
    fn stop(&mut self) {
        if let Some(mut child) = self.server.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The whole server (one process): open connections stop answering too.
    fn freeze(&self) {
        signal(self.pid(), "-STOP");
    }

    fn thaw(&self) {
        signal(self.pid(), "-CONT");
    }
}

impl Drop for PrivateMariadb {
    fn drop(&mut self) {
        if let Some(child) = &self.server {
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
        }
        self.stop();
    }
}

fn key() -> SessionKey {
    SessionKey::new(
        AppName::new("/outage").unwrap(),
        SessionId::generate().unwrap(),
    )
}

fn items() -> Items {
    let mut items = Items::new();
    items.insert("n".to_owned(), ItemValue::from_bytes(b"1".to_vec()));
    items
}

async fn connect(url: &str, migrate: bool) -> SqlStore {
    let config = Config::builder()
        .url(url)
        .connection_timeout(Some(CONNECT))
        .build()
        .unwrap();
    // The pool acquire timeout stays at its default (10 s): the bound is the connection timeout.
    let options = SqlOptions::new().with_sweeper(None).with_migrate(migrate);
    SqlStore::connect_with(&config, options).await.unwrap()
}

/// Runs `op` and checks that it failed with `Unavailable` within [`BOUND`]; answers how long it
/// took.
async fn fails_fast<T: std::fmt::Debug>(
    what: &str, op: impl std::future::Future<Output = session_core::Result<T>>,
) -> Duration {
    let started = Instant::now();
    let result = op.await;
    let elapsed = started.elapsed();
    assert!(
        matches!(result, Err(Error::Unavailable { .. })),
        "{what}: expected Unavailable, got {result:?} after {elapsed:?}"
    );
    assert!(
        elapsed < BOUND,
        "{what}: failed after {elapsed:?}, not within {BOUND:?}"
    );
    elapsed
}

/// Every kind of operation on `store` fails fast, one after another and eight at once.
async fn all_fail_fast(label: &str, store: &SqlStore, existing: &SessionKey) -> Duration {
    let mut worst = Duration::ZERO;
    for round in 0..3 {
        let what = |op: &str| format!("{label} {op} #{round}");
        worst = worst.max(fails_fast(&what("read"), store.read(existing)).await);
        let (fresh, items) = (key(), items());
        let create = store.create(&fresh, &items, Duration::from_secs(600), true);
        worst = worst.max(fails_fast(&what("create"), create).await);
        let token = LockToken::generate().unwrap();
        let acquire = store.acquire(existing, token, Duration::from_secs(60));
        worst = worst.max(fails_fast(&what("acquire"), acquire).await);
        worst = worst.max(fails_fast(&what("touch"), store.touch(existing)).await);
    }
    let at_once = (0..8).map(|i| {
        let store = store.clone();
        let existing = existing.clone();
        let what = format!("{label} concurrent read {i}");
        tokio::spawn(async move { fails_fast(&what, store.read(&existing)).await })
    });
    for task in at_once.collect::<Vec<_>>() {
        worst = worst.max(task.await.unwrap());
    }
    worst
}

async fn found(store: &SqlStore, k: &SessionKey) {
    match store.read(k).await {
        Ok(ReadOutcome::Found(snap)) => assert_eq!(snap.items.len(), 1),
        other => panic!("expected the session back, got {other:?}"),
    }
}

/// The whole scenario on one server.
async fn outage(name: &str, server: &mut dyn Private) {
    let url = server.url();
    // `warm`: a pool with several idle connections when the server goes down (they die with it).
    // `cold`: an empty pool (no migrations: the connect check's connection is closed), so that
    // every operation has to connect, as the first one after the pool's idle timeout does.
    let warm = connect(&url, true).await;
    let cold = connect(&url, false).await;
    let k = key();
    let created = warm
        .create(&k, &items(), Duration::from_secs(600), true)
        .await;
    assert_eq!(created.unwrap(), CreateOutcome::Created);
    let reads: Vec<_> = (0..4)
        .map(|_| {
            let (warm, k) = (warm.clone(), k.clone());
            tokio::spawn(async move { warm.read(&k).await })
        })
        .collect();
    for r in reads {
        let r = r.await.unwrap();
        assert!(matches!(r, Ok(ReadOutcome::Found(_))), "{r:?}");
    }

    // ---- down: every operation fails fast, typed and transient.
    server.stop();
    let worst_warm = all_fail_fast(&format!("{name} warm"), &warm, &k).await;
    let worst_cold = all_fail_fast(&format!("{name} cold"), &cold, &k).await;
    eprintln!("{name}: server down: worst failure warm {worst_warm:?}, cold {worst_cold:?}");

    // ---- with retries: an operation begun during the outage succeeds once the server is back,
    // within one retry interval of the restart.
    let resilient = Layered::new(
        warm.clone(),
        RetryLayer::new(RetryPolicy::new(Duration::from_secs(20)), None),
    );
    let k2 = k.clone();
    let retried = tokio::spawn(async move {
        let r = resilient.read(&k2).await;
        (r, Instant::now())
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!retried.is_finished(), "the retried read gave up early");
    server.start();
    let back = Instant::now();
    let (r, done) = retried.await.unwrap();
    assert!(matches!(r, Ok(ReadOutcome::Found(_))), "{r:?}");
    let recovery = done.saturating_duration_since(back);
    eprintln!("{name}: retried read answered {recovery:?} after the restart");
    assert!(
        recovery < RetryPolicy::INTERVAL + Duration::from_millis(500),
        "{recovery:?}"
    );

    // ---- back: the next attempt succeeds, without a retry, on both pools.
    found(&cold, &k).await;
    found(&warm, &k).await;
    let created = cold
        .create(&key(), &items(), Duration::from_secs(600), true)
        .await;
    assert_eq!(created.unwrap(), CreateOutcome::Created);
    let token = LockToken::generate().unwrap();
    let acquired = warm.acquire(&k, token, Duration::from_secs(60)).await;
    assert!(
        matches!(acquired, Ok(AcquireOutcome::Acquired(_))),
        "{acquired:?}"
    );
    warm.release(&k, token).await.unwrap();

    // ---- frozen: the server accepts connections but never answers. A store that has to
    // connect fails within the connection timeout, not the pool's acquire timeout.
    let fresh = connect(&url, false).await;
    server.freeze();
    let mut worst_frozen = Duration::ZERO;
    for round in 0..2 {
        let what = format!("{name} frozen read #{round}");
        worst_frozen = worst_frozen.max(fails_fast(&what, fresh.read(&k)).await);
    }
    eprintln!("{name}: server frozen: worst failure {worst_frozen:?}");
    assert!(
        worst_frozen >= CONNECT / 2,
        "{worst_frozen:?}: not the timeout?"
    );
    server.thaw();
    let started = Instant::now();
    found(&fresh, &k).await;
    eprintln!("{name}: thawed: answered in {:?}", started.elapsed());
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_fails_fast_and_recovers() {
    let Some(cluster) = test_support::configured(test_support::postgres_cluster()) else {
        return;
    };
    let bin = cluster.bin().to_owned();
    let mut pg = tokio::task::spawn_blocking(move || PrivatePostgres::new(&bin))
        .await
        .unwrap();
    outage("postgres", &mut pg).await;
}

#[cfg(feature = "mysql")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_outage_fails_fast_and_recovers() {
    if test_support::configured(test_support::mysql()).is_none() {
        return;
    }
    let mut my = tokio::task::spawn_blocking(PrivateMariadb::new)
        .await
        .unwrap();
    outage("mariadb", &mut my).await;
}
