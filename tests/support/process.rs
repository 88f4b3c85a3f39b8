//! The operator binary as users run it: a child process with its own flags and environment,
//! its stderr captured line by line, signalled and reaped by the test.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct OperatorProcess {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl OperatorProcess {
    /// Starts `oos-chat-operator` with `args`, the control plane's kubeconfig and `env`.
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Self {
        let cp = super::control_plane();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_oos-chat-operator"));
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("KUBECONFIG", cp.kubeconfig_path())
            .env("HOME", std::env::temp_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start the operator binary");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        Self { child, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything written to stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until stderr contains `needle`; panics with the log otherwise.
    pub async fn wait_for_log(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.log().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in the operator's stderr within {timeout:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The address the metrics endpoint listens on, from its start-up log line.
    pub async fn metrics_addr(&self) -> String {
        self.wait_for_log("serving /metrics", Duration::from_secs(20))
            .await;
        let log = self.log();
        let line = log
            .lines()
            .find(|l| l.contains("serving /metrics"))
            .unwrap();
        let addr = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("addr="))
            .expect("addr field");
        addr.trim_matches('"').to_string()
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, signal);
        }
    }

    /// `kill -9` and reap: no shutdown path runs, the lease is not released.
    pub fn kill9(&mut self) -> ExitStatus {
        let _ = self.child.kill();
        self.child.wait().expect("reap the operator")
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for the process to exit; `None` if it is still running after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET `http://{addr}{path}`: status and body.
/// The flags every test operator runs with: one namespace watched, which also holds its lease
/// and secret-hash key; metrics on a free port; the test region.
pub fn scoped_args(ns: &str) -> [&str; 8] {
    [
        "--namespace",
        ns,
        "--operator-namespace",
        ns,
        "--metrics-addr",
        "127.0.0.1:0",
        "--default-region",
        super::harness::REGION,
    ]
}

pub async fn http_get(addr: &str, path: &str) -> (u16, String) {
    let resp = reqwest::get(format!("http://{addr}{path}"))
        .await
        .expect("GET");
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}
