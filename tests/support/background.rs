//! `syncline run` as a child process the test can watch, stop and continue: for lease tests
//! that need a run to hold its stream while something else happens.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::Harness;

/// `syncline run` in the background, its stderr in a file.
pub struct Background {
    pub child: Child,
    pub stderr: std::path::PathBuf,
}

impl Background {
    pub fn spawn(h: &Harness, env: &[(&str, &str)]) -> Background {
        let mut all: Vec<(&str, String)> = h.env().into_iter().collect();
        all.extend(env.iter().map(|(k, v)| (*k, v.to_string())));
        Background::spawn_with(&h.config_path, h.dir.path(), &[], &all)
    }

    /// `syncline run --config CONFIG ARGS` with exactly `env` added; stderr goes to a file
    /// in `dir`.
    pub fn spawn_with(
        config: &std::path::Path,
        dir: &std::path::Path,
        args: &[&str],
        env: &[(&str, String)],
    ) -> Background {
        let stderr = dir.join(format!("stderr-{}.txt", uuid::Uuid::new_v4()));
        let mut command = Command::new(env!("CARGO_BIN_EXE_syncline"));
        command
            .arg("run")
            .arg("--config")
            .arg(config)
            .args(args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap());
        for (k, v) in env {
            command.env(k, v);
        }
        Background {
            child: command.spawn().expect("spawn syncline"),
            stderr,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Whether the process stopped itself (SIGSTOP at `SYNCLINE_STOP_AT`).
    pub fn is_stopped(&self) -> bool {
        std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))
            .ok()
            .and_then(|stat| {
                let after = stat.rsplit_once(") ")?.1.to_string();
                after.chars().next()
            })
            == Some('T')
    }

    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().expect("wait")
    }

    pub fn cont(&self) {
        // SAFETY: sending SIGCONT to our own child.
        unsafe {
            libc::kill(self.pid(), libc::SIGCONT);
        }
    }

    pub fn wait(mut self) -> (std::process::ExitStatus, String) {
        let status = self.child.wait().expect("wait");
        (status, std::fs::read_to_string(&self.stderr).unwrap())
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap()
    }
}

/// Waits until `run` stopped itself; panics with its stderr if it exits instead.
pub async fn until_stopped(run: &mut Background) {
    while !run.is_stopped() {
        if let Some(status) = run.exited() {
            panic!(
                "the run exited ({status:?}) instead of stopping: {}",
                run.stderr()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Drop for Background {
    /// A test that fails while its run is stopped must not leave the run behind.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
