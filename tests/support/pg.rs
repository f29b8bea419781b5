//! A throwaway PostgreSQL cluster for integration tests.
//!
//! [`TestPostgres::start`] runs `initdb` into a fresh temporary directory and starts a server on
//! a free 127.0.0.1 port with logical replication enabled (`wal_level=logical`) and `fsync` off;
//! dropping the value stops the server (`pg_ctl stop -m immediate`) and removes the directory.
//! Authentication is `trust` for the `postgres` superuser, so URLs carry no password.
//!
//! Server binaries come from `SYNCLINE_PG_BIN`, else the highest
//! `/usr/lib/postgresql/<major>/bin`, else `pg_config --bindir`. `initdb` and `postgres` refuse
//! to run as root, so as root they run as the `postgres` user (`runuser -u postgres --`).
#![allow(dead_code)]

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A running throwaway cluster; stopped and deleted on drop.
pub struct TestPostgres {
    /// URL of the `postgres` database as the `postgres` superuser.
    pub url: String,
    pub port: u16,
    dir: tempfile::TempDir,
    bin: PathBuf,
    run_as_postgres: bool,
}

impl TestPostgres {
    /// Initializes and starts a cluster.
    ///
    /// # Panics
    ///
    /// When the PostgreSQL server binaries cannot be found, or the cluster does not start
    /// (the server log is included in the message).
    pub fn start() -> TestPostgres {
        TestPostgres::start_with_wal_level("logical")
    }

    /// Like [`TestPostgres::start`] with another `wal_level` (`replica` to test what a source
    /// without logical replication does).
    pub fn start_with_wal_level(wal_level: &str) -> TestPostgres {
        TestPostgres::start_with(wal_level, None)
    }

    /// Like [`TestPostgres::start`] with `ssl = on`, serving the given PEM certificate and key
    /// (for TCP clients; `trust` still authenticates, so only the TLS layer is under test).
    pub fn start_with_ssl(cert: &Path, key: &Path) -> TestPostgres {
        TestPostgres::start_with("logical", Some((cert, key)))
    }

    fn start_with(wal_level: &str, ssl: Option<(&Path, &Path)>) -> TestPostgres {
        let bin = find_bin_dir();
        // SAFETY: geteuid has no preconditions and cannot fail.
        let run_as_postgres = unsafe { libc::geteuid() } == 0;

        let dir = tempfile::Builder::new()
            .prefix("syncline-pg-")
            .tempdir_in("/tmp")
            .expect("create a temporary directory for PostgreSQL");
        // The server runs as another user when we are root: it must reach the directory.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("make the PostgreSQL directory traversable");
        if run_as_postgres {
            let status = Command::new("chown")
                .arg("postgres:")
                .arg(dir.path())
                .status()
                .expect("run chown");
            assert!(
                status.success(),
                "chown of {} to postgres failed",
                dir.path().display()
            );
        }

        let data = dir.path().join("data");
        let initdb = pg_command(run_as_postgres, &bin.join("initdb"))
            .args([
                "-A",
                "trust",
                "--no-sync",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                "-D",
            ])
            .arg(&data)
            .current_dir(dir.path())
            .output()
            .expect("run initdb");
        check(&initdb, "initdb");

        let mut ssl_options = String::new();
        if let Some((cert, key)) = ssl {
            // The server reads them as its own user, and refuses a key others may read.
            for (from, name) in [(cert, "server.crt"), (key, "server.key")] {
                let to = dir.path().join(name);
                std::fs::copy(from, &to).expect("copy the server certificate");
                std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600))
                    .expect("restrict the server key");
                if run_as_postgres {
                    let status = Command::new("chown")
                        .arg("postgres:")
                        .arg(&to)
                        .status()
                        .expect("run chown");
                    assert!(status.success(), "chown of {}", to.display());
                }
            }
            ssl_options = format!(
                " -c ssl=on -c ssl_cert_file={dir}/server.crt -c ssl_key_file={dir}/server.key",
                dir = dir.path().display()
            );
        }
        let mut failures = Vec::new();
        for _ in 0..3 {
            let port = free_port();
            let options = format!(
                "-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={} \
                 -c wal_level={wal_level} -c max_replication_slots=10 -c max_wal_senders=10 \
                 -c fsync=off{ssl_options}",
                dir.path().display()
            );
            let started = pg_command(run_as_postgres, &bin.join("pg_ctl"))
                .arg("-D")
                .arg(&data)
                .args(["-w", "-t", "60", "-l"])
                .arg(dir.path().join("log"))
                .args(["-o", options.as_str(), "start"])
                .current_dir(dir.path())
                .output()
                .expect("run pg_ctl start");
            if started.status.success() {
                return TestPostgres {
                    url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
                    port,
                    dir,
                    bin,
                    run_as_postgres,
                };
            }
            failures.push(format!("port {port}: {}", describe(&started)));
        }
        panic!(
            "PostgreSQL did not start after 3 attempts:\n{}\nserver log:\n{}",
            failures.join("\n"),
            std::fs::read_to_string(dir.path().join("log")).unwrap_or_default()
        );
    }

    /// Creates a fresh database and returns its URL. `name` must be lowercase letters, digits
    /// and `_`, so it needs no quoting or URL encoding.
    pub fn create_database(&self, name: &str) -> String {
        assert!(
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "test database name {name:?} must be lowercase letters, digits and _"
        );
        let admin_url = self.url.clone();
        let statement = format!("CREATE DATABASE {name}");
        // A thread with its own runtime works whether or not the caller is inside a runtime.
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("build a runtime");
            runtime.block_on(async move {
                let (client, connection) =
                    tokio_postgres::connect(&admin_url, tokio_postgres::NoTls)
                        .await
                        .expect("connect to the test cluster");
                let connection = tokio::spawn(connection);
                client
                    .batch_execute(&statement)
                    .await
                    .expect("create the test database");
                drop(client);
                let _ = connection.await;
            });
        })
        .join()
        .expect("create_database thread panicked");
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// The server log so far (useful in assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// Directory holding the server binaries this cluster runs (e.g. for `pg_recvlogical`).
    pub fn bin_dir(&self) -> &Path {
        &self.bin
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        let _ = pg_command(self.run_as_postgres, &self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .current_dir(self.dir.path())
            .output();
    }
}

/// `program`, run as the `postgres` user when `as_postgres`.
fn pg_command(as_postgres: bool, program: &Path) -> Command {
    if as_postgres {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn find_bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SYNCLINE_PG_BIN") {
        let dir = PathBuf::from(dir);
        assert!(
            dir.join("initdb").is_file() && dir.join("pg_ctl").is_file(),
            "SYNCLINE_PG_BIN={} does not contain initdb and pg_ctl",
            dir.display()
        );
        return dir;
    }
    let newest = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            let major: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((major, bin))
        })
        .max_by_key(|(major, _)| *major);
    if let Some((_, bin)) = newest {
        return bin;
    }
    if let Ok(output) = Command::new("pg_config").arg("--bindir").output() {
        if output.status.success() {
            let bin = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
            if bin.join("initdb").is_file() {
                return bin;
            }
        }
    }
    panic!(
        "PostgreSQL server binaries (initdb, pg_ctl) not found: install them (Debian: \
         apt-get install postgresql-15) or set SYNCLINE_PG_BIN to the directory holding them"
    );
}

/// A TCP port on 127.0.0.1 that nothing listens on now.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

fn check(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed: {}",
        describe(output)
    );
}

fn describe(output: &Output) -> String {
    format!(
        "{}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout).trim(),
        String::from_utf8_lossy(&output.stderr).trim()
    )
}
