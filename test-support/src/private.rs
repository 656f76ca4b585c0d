//! Servers that a test starts, crashes and restarts itself, each on a free port of its own, so that
//! the shared servers of the other tests (`scripts/*/start.sh`) are never disturbed: a private
//! Postgres cluster, MariaDB instance, standalone Redis and six-node Redis Cluster.
//!
//! Every one of them keeps what it acknowledged across a crash of its process (`kill -9`, or
//! Postgres's `pg_ctl stop -m immediate`), which is what the fault tests check:
//!
//! - Postgres: `synchronous_commit = on` (explicit), so a commit returns only after its WAL record
//!   was written; `fsync` is off, which loses nothing when only the server process dies (the
//!   operating system keeps the written pages), only when the machine does.
//! - MariaDB: `innodb_flush_log_at_trx_commit = 1` (explicit), the redo log written at each commit.
//! - Redis: `appendonly yes` with `appendfsync always`: every write is in the append-only file
//!   before its reply is sent, so an acknowledged write survives `kill -9`.
//! - The Redis Cluster replicates asynchronously (Redis's design): a write a master acknowledged
//!   just before it was killed may be missing on the replica promoted in its place.
//!
//! They are started with the binaries `scripts/sql/start.sh` and `scripts/redis/start.sh` install
//! (`initdb`/`pg_ctl` from the directory given, `mariadbd`, `mariadb-install-db`, `redis-server`
//! and `redis-cli` on the `PATH`). As root (CI), Postgres and MariaDB run as the `postgres` and
//! `mysql` users, as the scripts run them. Every method blocks (it runs commands and waits for the
//! server): call it from blocking code or `tokio::task::spawn_blocking`. Setup failures panic with
//! the command and its output: these are test fixtures. Each server is stopped, and its directory
//! removed, on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use backend_redis::redis;

/// A server that a test starts, crashes, freezes and thaws.
pub trait Private: Send {
    /// Its URL, for a superuser, on its test database.
    fn url(&self) -> String;
    /// Starts it (again, on the same port and data) and waits until it accepts logins.
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

/// `program args…`, as `user` when running as root (the SQL servers refuse to run as root).
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
    let out = cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| {
        panic!("{cmd:?}: {e} (scripts/sql/start.sh and scripts/redis/start.sh install the servers)")
    });
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A temporary directory that `user` owns (when running as root).
fn private_dir(user: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temporary directory");
    if is_root() {
        let mut chown = Command::new("chown");
        chown.arg(user).arg(dir.path());
        run(chown);
    }
    dir
}

/// A TCP port nothing listens on now (the OS's choice of a free one).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address").port()
}

fn signal(pid: u32, sig: &str) {
    let mut kill = Command::new("kill");
    kill.args([sig, &pid.to_string()]);
    run(kill);
}

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 temporary path")
}

/// Runs `fut` to completion on a runtime of its own, on a thread of its own (so that it can be
/// called from blocking setup code inside another runtime).
fn block_on<F: std::future::Future + Send + 'static>(fut: F) -> F::Output
where
    F::Output: Send + 'static,
{
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
            .block_on(fut)
    })
    .join()
    .expect("the setup thread")
}

/// A private Postgres cluster: `initdb` in a temporary directory, trust authentication,
/// `synchronous_commit = on` (see the module docs on durability).
#[derive(Debug)]
pub struct PrivatePostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
}

impl PrivatePostgres {
    /// Creates the cluster with `initdb` from `bin` (the directory of `pg_ctl`,
    /// `SESSION_TEST_POSTGRES_BIN`) and starts it.
    pub fn new(bin: &Path) -> Self {
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
        let pid = std::fs::read_to_string(self.dir.path().join("data/postmaster.pid"))
            .expect("postmaster.pid");
        pid.lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .expect("a pid in postmaster.pid")
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
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
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c synchronous_commit=on -c fsync=off \
             -c full_page_writes=off",
            self.port,
            path(self.dir.path())
        );
        run(self.pg_ctl(&["-l", path(&log), "-w", "-o", &opts, "start"]));
    }

    /// `pg_ctl stop -m immediate`: every server process quits at once, without a checkpoint.
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
/// password on 127.0.0.1, a `sessdb` database; crashed with `kill -9`.
#[derive(Debug)]
pub struct PrivateMariadb {
    dir: tempfile::TempDir,
    port: u16,
    server: Option<Child>,
}

impl PrivateMariadb {
    /// Installs the system tables, starts the server and creates the `sessdb` database.
    pub fn new() -> Self {
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
            use backend_sql::sqlx::{self, Connection};
            let mut conn = sqlx::MySqlConnection::connect(&url)
                .await
                .expect("a connection to the private MariaDB");
            sqlx::raw_sql("CREATE DATABASE sessdb")
                .execute(&mut conn)
                .await
                .expect("CREATE DATABASE sessdb");
        });
        my
    }

    fn pid(&self) -> u32 {
        self.server.as_ref().expect("running").id()
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Default for PrivateMariadb {
    fn default() -> Self {
        Self::new()
    }
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
        let log = std::fs::File::create(d.join("log")).expect("the log file");
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
                "--innodb-flush-log-at-trx-commit=1",
            ]);
        if is_root() {
            cmd.arg("--user=mysql");
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("the log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("mariadbd: {e} (scripts/sql/start.sh installs it)"));
        self.server = Some(child);
        let url = format!(
            "mysql://root@127.0.0.1:{}/mysql?ssl-mode=disabled",
            self.port
        );
        let ready = block_on(async move {
            use backend_sql::sqlx::{self, Connection};
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

/// Waits until `redis-server` on `port` answers `PING` (up to 10 s).
fn wait_redis(port: u16) -> bool {
    block_on(async move {
        for _ in 0..500 {
            if let Ok(client) = redis::Client::open(format!("redis://127.0.0.1:{port}"))
                && let Ok(mut c) = client.get_multiplexed_async_connection().await
                && redis::cmd("PING")
                    .query_async::<String>(&mut c)
                    .await
                    .is_ok()
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    })
}

/// Spawns `redis-server` with `args`, its output to `log`.
fn spawn_redis(args: &[String], log: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("the log file");
    Command::new("redis-server")
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("the log file"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("redis-server: {e} (scripts/redis/start.sh installs it)"))
}

fn kill_child(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = Command::new("kill")
            .args(["-CONT", &c.id().to_string()])
            .status();
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// A private standalone Redis: `redis-server` on a free port with `appendonly yes` and
/// `appendfsync always` (every acknowledged write survives `kill -9`), no snapshots, expiry
/// notifications on (`Egx`, as `scripts/redis/start.sh` sets them); crashed with `kill -9` and
/// restarted on the same port and append-only file.
#[derive(Debug)]
pub struct PrivateRedis {
    dir: tempfile::TempDir,
    port: u16,
    server: Option<Child>,
}

impl PrivateRedis {
    /// Starts it.
    pub fn new() -> Self {
        let mut redis = Self {
            dir: tempfile::tempdir().expect("a temporary directory"),
            port: free_port(),
            server: None,
        };
        redis.start();
        redis
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Default for PrivateRedis {
    fn default() -> Self {
        Self::new()
    }
}

impl Private for PrivateRedis {
    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn start(&mut self) {
        let args: Vec<String> = [
            "--port",
            &self.port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--notify-keyspace-events",
            "Egx",
            "--hz",
            "100",
            "--dir",
            path(self.dir.path()),
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        self.server = Some(spawn_redis(&args, &self.dir.path().join("log")));
        assert!(
            wait_redis(self.port),
            "the private redis-server did not start"
        );
    }

    /// `kill -9`.
    fn stop(&mut self) {
        kill_child(&mut self.server);
    }

    fn freeze(&self) {
        if let Some(c) = &self.server {
            signal(c.id(), "-STOP");
        }
    }

    fn thaw(&self) {
        if let Some(c) = &self.server {
            signal(c.id(), "-CONT");
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A private Redis Cluster: six `redis-server` nodes on free ports, three masters and three
/// replicas (`redis-cli --cluster create --cluster-replicas 1`), `cluster-node-timeout` 500 ms, so
/// that a killed master's replica is promoted within about two seconds. Replication is
/// asynchronous (see the module docs). A killed node restarts from its `nodes.conf` and rejoins
/// as a replica of the node promoted in its place.
#[derive(Debug)]
pub struct PrivateRedisCluster {
    dir: tempfile::TempDir,
    ports: Vec<u16>,
    nodes: Vec<Option<Child>>,
}

/// `cluster-node-timeout` of [`PrivateRedisCluster`].
pub const CLUSTER_NODE_TIMEOUT: Duration = Duration::from_millis(500);

impl PrivateRedisCluster {
    /// Starts the six nodes, creates the cluster, and waits until every node reports
    /// `cluster_state:ok` and every replica is in sync.
    pub fn new() -> Self {
        let mut ports: Vec<u16> = Vec::new();
        while ports.len() < 6 {
            let p = free_port();
            // The cluster bus listens on port + 10000: both must be usable.
            if p < 55_000 && !ports.contains(&p) {
                ports.push(p);
            }
        }
        let mut cluster = Self {
            dir: tempfile::tempdir().expect("a temporary directory"),
            nodes: ports.iter().map(|_| None).collect(),
            ports,
        };
        for i in 0..6 {
            cluster.restart(cluster.ports[i]);
        }
        let mut create = Command::new("redis-cli");
        create.args(["--cluster", "create"]);
        for p in &cluster.ports {
            create.arg(format!("127.0.0.1:{p}"));
        }
        create
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdout(Stdio::null());
        run(create);
        assert!(
            cluster.wait_ok(Duration::from_secs(30)),
            "the private cluster did not reach cluster_state:ok"
        );
        cluster
    }

    /// The seed nodes, as `redis://127.0.0.1:port`.
    pub fn seeds(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect()
    }

    /// The cluster as the one URL the Redis store reads (`redis+cluster://h:p,...`).
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!("redis+cluster://{}", hosts.join(","))
    }

    /// The port of the master that serves `key`'s slot now (`CLUSTER KEYSLOT`, `CLUSTER SLOTS`,
    /// asked of a live node).
    ///
    /// # Panics
    /// When no live node answers or no master serves the slot.
    pub fn master_of(&self, key: &str) -> u16 {
        let live: Vec<u16> = self
            .ports
            .iter()
            .zip(&self.nodes)
            .filter(|(_, n)| n.is_some())
            .map(|(p, _)| *p)
            .collect();
        let key = key.to_owned();
        block_on(async move {
            for port in live {
                let Ok(client) = redis::Client::open(format!("redis://127.0.0.1:{port}")) else {
                    continue;
                };
                let Ok(mut c) = client.get_multiplexed_async_connection().await else {
                    continue;
                };
                let Ok(slot) = redis::cmd("CLUSTER")
                    .arg("KEYSLOT")
                    .arg(&key)
                    .query_async::<i64>(&mut c)
                    .await
                else {
                    continue;
                };
                let Ok(redis::Value::Array(ranges)) = redis::cmd("CLUSTER")
                    .arg("SLOTS")
                    .query_async::<redis::Value>(&mut c)
                    .await
                else {
                    continue;
                };
                for range in ranges {
                    let redis::Value::Array(parts) = range else {
                        continue;
                    };
                    if let (
                        Some(redis::Value::Int(lo)),
                        Some(redis::Value::Int(hi)),
                        Some(redis::Value::Array(master)),
                    ) = (parts.first(), parts.get(1), parts.get(2))
                        && (*lo..=*hi).contains(&slot)
                        && let Some(redis::Value::Int(p)) = master.get(1)
                        && let Ok(p) = u16::try_from(*p)
                    {
                        return p;
                    }
                }
            }
            panic!("no master serves the slot of {key:?}")
        })
    }

    fn index(&self, port: u16) -> usize {
        self.ports
            .iter()
            .position(|p| *p == port)
            .unwrap_or_else(|| panic!("{port} is not a node of this cluster"))
    }

    /// `kill -9` of the node on `port`.
    pub fn kill(&mut self, port: u16) {
        let i = self.index(port);
        kill_child(&mut self.nodes[i]);
    }

    /// Starts the node on `port` (again, from its `nodes.conf`) and waits until it answers.
    pub fn restart(&mut self, port: u16) {
        let i = self.index(port);
        kill_child(&mut self.nodes[i]);
        let dir = self.dir.path().join(port.to_string());
        std::fs::create_dir_all(&dir).expect("the node's directory");
        let timeout = CLUSTER_NODE_TIMEOUT.as_millis().to_string();
        let args: Vec<String> = [
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            path(&dir.join("nodes.conf")),
            "--cluster-node-timeout",
            &timeout,
            // A replica may always be promoted, however long ago it last heard from its master.
            "--cluster-replica-validity-factor",
            "0",
            "--notify-keyspace-events",
            "Egx",
            "--hz",
            "100",
            "--save",
            "",
            "--appendonly",
            "no",
            "--repl-diskless-sync-delay",
            "0",
            "--dir",
            path(&dir),
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        self.nodes[i] = Some(spawn_redis(&args, &dir.join("log")));
        assert!(wait_redis(port), "cluster node {port} did not start");
    }

    /// Whether every live node reports `cluster_state:ok` and every live node but three (the
    /// masters) is a replica whose link to its master is up, waiting up to `limit`.
    pub fn wait_ok(&self, limit: Duration) -> bool {
        let live: Vec<u16> = self
            .ports
            .iter()
            .zip(&self.nodes)
            .filter(|(_, n)| n.is_some())
            .map(|(p, _)| *p)
            .collect();
        block_on(async move {
            let deadline = tokio::time::Instant::now() + limit;
            while tokio::time::Instant::now() < deadline {
                let mut ok = true;
                let mut synced = 0;
                for port in &live {
                    let info = async {
                        let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
                        let mut c = client.get_multiplexed_async_connection().await?;
                        let cluster: String = redis::cmd("CLUSTER")
                            .arg("INFO")
                            .query_async(&mut c)
                            .await?;
                        let replication: String = redis::cmd("INFO")
                            .arg("replication")
                            .query_async(&mut c)
                            .await?;
                        Ok::<_, redis::RedisError>((cluster, replication))
                    }
                    .await;
                    match info {
                        Ok((cluster, replication)) => {
                            ok &= cluster.contains("cluster_state:ok");
                            if replication.contains("role:slave")
                                && replication.contains("master_link_status:up")
                            {
                                synced += 1;
                            }
                        }
                        Err(_) => ok = false,
                    }
                }
                // Three masters; every other live node a replica in sync.
                if ok && synced + 3 == live.len() {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            false
        })
    }
}

impl Default for PrivateRedisCluster {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for PrivateRedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            kill_child(node);
        }
    }
}
