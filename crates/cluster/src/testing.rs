//! A NATS server of a test's own, for the tests here and in the crates above that must start,
//! kill or restart one (a new cluster's NATS, a NATS restart under load).

#![allow(clippy::panic, clippy::expect_used)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `nats-server -js` on a free port of 127.0.0.1, its store in a temporary folder that outlives
/// [`NatsServer::kill`] and [`NatsServer::spawn`] again; killed when dropped.
pub struct NatsServer {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl NatsServer {
    /// The `nats-server` binary (Debian's `nats-server` package), if there is one.
    pub fn binary() -> Option<&'static str> {
        ["nats-server", "/usr/sbin/nats-server", "/usr/bin/nats-server", "/usr/local/bin/nats-server"]
            .into_iter()
            .find(|candidate| Command::new(candidate).arg("--version").output().is_ok_and(|o| o.status.success()))
    }

    /// A server started and listening; `None` (after a loud line naming `test`) when there is
    /// no `nats-server`, except under `CI=true`, where that panics.
    pub fn start(test: &str) -> Option<NatsServer> {
        if NatsServer::binary().is_none() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true: nats-server is required (Debian's nats-server package)"
            );
            eprintln!("\n*** SKIPPED: no nats-server binary; {test} did not run ***\n");
            return None;
        }
        let port =
            std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("its address").port();
        let mut nats = NatsServer { port, dir: tempfile::tempdir().expect("a temporary folder"), child: None };
        nats.spawn();
        Some(nats)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again, on the same port and store) and waits until it listens.
    pub fn spawn(&mut self) {
        let binary = NatsServer::binary().expect("nats-server");
        let child = Command::new(binary)
            .args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string(), "-sd"])
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        // Kept before the wait, so that a server that never listens is still killed.
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not listen on {} within 10 s", self.port);
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}
