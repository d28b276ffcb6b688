//! Real database servers for the rotation tests (issue 17): PostgreSQL 15, MariaDB 10.11 and Redis 7.0 from
//! Debian's packages, which `tools/databases.sh` fetches into a versioned cache (`KEYWARD_DATABASES_DIR`, set
//! by the Makefile). Each server runs on a free loopback port in a temporary directory of its own, with an
//! administrator that logs in with a password over TCP, and is stopped — its directory removed — when its
//! handle is dropped. Queries go through the server's own client (psql, mariadb, redis-cli).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Which server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Postgres,
    MariaDb,
    Redis,
}

/// A running server. The administrator (`admin`/`admin-pw` on every kind; PostgreSQL's is `postgres`) may
/// create users and change their passwords.
pub struct Database {
    pub kind: Kind,
    pub port: u16,
    pub admin: String,
    pub admin_password: String,
    cache: PathBuf,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

/// The cache `tools/databases.sh` filled: from the environment (the Makefile), or asked of the script.
fn cache() -> PathBuf {
    if let Some(dir) = std::env::var_os("KEYWARD_DATABASES_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(root.join("tools/databases.sh"))
        .arg("--path")
        .output()
        .expect("tools/databases.sh --path");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

fn free_port() -> u16 {
    super::free_port().port()
}

impl Database {
    pub fn postgres() -> Database {
        let cache = cache();
        let bin = cache.join("usr/lib/postgresql/15/bin");
        let dir = tempdir("postgres");
        let port = free_port();
        std::fs::write(dir.path().join("pwfile"), "admin-pw\n").unwrap();
        // postgres refuses to run as root: as root, it runs in a user namespace where it is uid 65534 (its
        // files, and this process's, stay root's).
        let run = |program: &Path| {
            let mut c = if is_root() {
                let mut c = Command::new("unshare");
                c.args(["--user", "--map-user=65534", "--map-group=65534"]).arg(program);
                c
            } else {
                Command::new(program)
            };
            c.env("LD_LIBRARY_PATH", libs(&cache));
            c
        };
        let data = dir.path().join("data");
        let init = run(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "-A",
                "scram-sha-256",
                "--no-locale",
                "-E",
                "UTF8",
                "--no-sync",
            ])
            .arg(format!("--pwfile={}", dir.path().join("pwfile").display()))
            .output()
            .expect("initdb");
        assert!(
            init.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&init.stderr)
        );
        let log = std::fs::File::create(dir.path().join("postgres.log")).unwrap();
        let child = run(&bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories="])
            .args(["-c", "fsync=off", "-c", "jit=off"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start postgres");
        Database::ready(Kind::Postgres, port, "postgres", cache, dir, child)
    }

    pub fn mariadb() -> Database {
        let cache = cache();
        let dir = tempdir("mariadb");
        let port = free_port();
        let root = is_root().then_some("--user=root");
        let data = dir.path().join("data");
        let basedir = format!("--basedir={}", cache.join("usr").display());
        let install = Command::new(cache.join("usr/bin/mariadb-install-db"))
            .arg("--no-defaults")
            .arg(&basedir)
            .arg(format!("--datadir={}", data.display()))
            .args(root)
            .args([
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--skip-name-resolve",
            ])
            .env("LD_LIBRARY_PATH", libs(&cache))
            .output()
            .expect("mariadb-install-db");
        assert!(
            install.status.success(),
            "mariadb-install-db: {}{}",
            String::from_utf8_lossy(&install.stdout),
            String::from_utf8_lossy(&install.stderr)
        );
        let socket = dir.path().join("mariadbd.sock");
        let child = Command::new(cache.join("usr/sbin/mariadbd"))
            .arg("--no-defaults")
            .args(root)
            .arg(&basedir)
            .arg(format!("--lc-messages-dir={}", cache.join("usr/share/mysql").display()))
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--tmpdir={}", dir.path().display()))
            .arg(format!("--socket={}", socket.display()))
            .arg(format!("--pid-file={}", dir.path().join("mariadbd.pid").display()))
            .arg(format!("--port={port}"))
            .args(["--bind-address=127.0.0.1", "--skip-name-resolve", "--skip-log-bin"])
            .arg("--innodb-buffer-pool-size=32M")
            .arg(format!("--log-error={}", dir.path().join("mariadbd.err").display()))
            .env("LD_LIBRARY_PATH", libs(&cache))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mariadbd");
        // root has no password over the socket until this: the administrator that tests use logs in over TCP.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let setup = Command::new(cache.join("usr/bin/mariadb"))
                .args(["--no-defaults", "--protocol=socket", "-uroot"])
                .arg(format!("--socket={}", socket.display()))
                .arg("-e")
                .arg(
                    "CREATE USER IF NOT EXISTS admin@'127.0.0.1' IDENTIFIED BY 'admin-pw'; \
                     GRANT ALL PRIVILEGES ON *.* TO admin@'127.0.0.1' WITH GRANT OPTION;",
                )
                .env("LD_LIBRARY_PATH", libs(&cache))
                .output()
                .expect("mariadb");
            if setup.status.success() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "mariadbd did not start: {}",
                std::fs::read_to_string(dir.path().join("mariadbd.err")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Database::ready(Kind::MariaDb, port, "admin", cache, dir, child)
    }

    pub fn redis() -> Database {
        let cache = cache();
        let dir = tempdir("redis");
        let port = free_port();
        let d = dir.path().display();
        std::fs::write(
            dir.path().join("redis.conf"),
            format!(
                "bind 127.0.0.1\nport {port}\nprotected-mode yes\ndaemonize no\ndir {d}\nlogfile {d}/redis.log\n\
                 save \"\"\nappendonly no\naclfile {d}/users.acl\n"
            ),
        )
        .unwrap();
        // The default user can do nothing: every client names its user (Redis ACLs, redis.io/docs/.../acl).
        std::fs::write(
            dir.path().join("users.acl"),
            "user default off resetpass nocommands\nuser admin on >admin-pw ~* &* +@all\n",
        )
        .unwrap();
        let child = Command::new(cache.join("usr/bin/redis-server"))
            .arg(dir.path().join("redis.conf"))
            .env("LD_LIBRARY_PATH", libs(&cache))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        Database::ready(Kind::Redis, port, "admin", cache, dir, child)
    }

    /// Waits (30 s at most) until the administrator can log in.
    fn ready(kind: Kind, port: u16, admin: &str, cache: PathBuf, dir: tempfile::TempDir, child: Child) -> Database {
        let mut db = Database {
            kind,
            port,
            admin: admin.to_string(),
            admin_password: "admin-pw".to_string(),
            cache,
            dir,
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let probe = match kind {
            Kind::Redis => "PING",
            _ => "SELECT 1",
        };
        while db.query(&db.admin, &db.admin_password, probe).is_err() {
            if let Some(status) = db.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("{kind:?} exited ({status}) before it was ready:\n{}", db.logs());
            }
            assert!(
                Instant::now() < deadline,
                "{kind:?} not ready within 30 s:\n{}",
                db.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        db
    }

    /// Runs `statement` (SQL; for Redis a command line, split on spaces) as `user` with `password` through the
    /// server's own client. Ok: what it printed (rows one per line, fields tab- or `|`-separated); Err: the
    /// error it printed (a refused login among them).
    pub fn query(&self, user: &str, password: &str, statement: &str) -> Result<String, String> {
        let port = self.port.to_string();
        let out = match self.kind {
            Kind::Postgres => Command::new(self.cache.join("usr/lib/postgresql/15/bin/psql"))
                .arg(format!(
                    "host=127.0.0.1 port={port} user={user} dbname=postgres connect_timeout=5"
                ))
                .args(["-X", "-v", "ON_ERROR_STOP=1", "-Atc", statement])
                .env("PGPASSWORD", password)
                .env("LD_LIBRARY_PATH", libs(&self.cache))
                .output(),
            Kind::MariaDb => Command::new(self.cache.join("usr/bin/mariadb"))
                .args([
                    "--no-defaults",
                    "--protocol=tcp",
                    "-h127.0.0.1",
                    "--connect-timeout=5",
                    "-N",
                    "-B",
                ])
                .arg(format!("-P{port}"))
                .arg(format!("-u{user}"))
                .arg(format!("-p{password}"))
                .args(["-e", statement])
                .env("LD_LIBRARY_PATH", libs(&self.cache))
                .output(),
            Kind::Redis => Command::new(self.cache.join("usr/bin/redis-cli"))
                .args(["-h", "127.0.0.1", "-p", &port, "--user", user])
                .args(statement.split(' '))
                .env("REDISCLI_AUTH", password)
                .env("LD_LIBRARY_PATH", libs(&self.cache))
                .output(),
        }
        .expect("the database client");
        let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        // redis-cli exits 0 on an error reply: what it prints tells.
        let redis_error = self.kind == Kind::Redis
            && [
                "ERR",
                "WRONGPASS",
                "NOAUTH",
                "NOPERM",
                "AUTH failed",
                "Could not connect",
            ]
            .iter()
            .any(|e| stdout.starts_with(e) || stderr.starts_with(e));
        if out.status.success() && !redis_error {
            Ok(stdout)
        } else {
            Err(if stderr.is_empty() { stdout } else { stderr })
        }
    }

    /// The server's log so far (for a failing test).
    pub fn logs(&self) -> String {
        let name = match self.kind {
            Kind::Postgres => "postgres.log",
            Kind::MariaDb => "mariadbd.err",
            Kind::Redis => "redis.log",
        };
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }
}

/// Whether this process runs as root (/proc/self belongs to the process's effective user).
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn libs(cache: &Path) -> PathBuf {
    cache.join("usr/lib/x86_64-linux-gnu")
}

fn tempdir(kind: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("keyward-{kind}-"))
        .tempdir()
        .unwrap()
}

impl Drop for Database {
    /// Stops the server the way it asks to be stopped for a fast, clean shutdown (PostgreSQL: SIGINT; the
    /// others: SIGTERM), waits for it (SIGKILL after 10 s), and removes its directory.
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- {:?} log ----\n{}", self.kind, self.logs());
        }
        let Some(mut child) = self.child.take() else { return };
        let signal = match self.kind {
            Kind::Postgres => nix::sys::signal::Signal::SIGINT,
            _ => nix::sys::signal::Signal::SIGTERM,
        };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, signal);
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
