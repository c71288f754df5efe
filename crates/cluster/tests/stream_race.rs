//! Every process of a new cluster makes sure of the work-queue stream as it starts, so several
//! create it at the same moment. Each must get the stream, whichever of them made it: in a CI
//! run an engine was refused with "subjects overlap with an existing stream" (10065) for the
//! stream another engine had just created, and gave its partition's lead up. On a NATS server
//! just started (as a new cluster's is) the old code was refused in 3 runs of 3 (of 20 rounds
//! each). Starts `nats-server` itself; skips loudly without it, except under `CI=true`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::queue_config;
use paycore_cluster::{consume, NatsSubmitter};

/// A NATS server of the test's own, just started, as a new cluster's would be.
struct FreshNats {
    child: std::process::Child,
    /// Its store, removed with it.
    _dir: tempfile::TempDir,
    port: u16,
}

impl FreshNats {
    fn binary() -> Option<&'static str> {
        ["nats-server", "/usr/sbin/nats-server", "/usr/bin/nats-server"]
            .into_iter()
            .find(|b| std::process::Command::new(b).arg("--version").output().is_ok_and(|o| o.status.success()))
    }

    fn start(binary: &str) -> FreshNats {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = tempfile::tempdir().unwrap();
        let child = std::process::Command::new(binary)
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Made first, so that a server that never listens is still killed.
        let nats = FreshNats { child, _dir: dir, port };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "nats-server did not listen on {port} within 10 s");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        nats
    }
}

impl Drop for FreshNats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn processes_starting_together_all_get_the_one_stream() {
    let Some(binary) = FreshNats::binary() else {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "CI=true: nats-server is required");
        eprintln!("\n*** SKIPPED: no nats-server binary; the stream race test did not run ***\n");
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        for round in 0..20 {
            let nats = tokio::task::block_in_place(|| FreshNats::start(binary));
            let mut config = queue_config(&format!("race{round}"));
            config.url = format!("nats://127.0.0.1:{}", nats.port);
            // Four API nodes and two engines, all at once, on a stream nobody made yet.
            let apis = (0..4).map(|_| {
                let config = config.clone();
                tokio::spawn(async move { NatsSubmitter::connect(config, 64).await.map(|_| ()) })
            });
            let engines = (0..2).map(|_| {
                let config = config.clone();
                tokio::spawn(async move { consume(&config, 0, 64).await.map(|_| ()) })
            });
            for (i, started) in futures_util::future::join_all(apis.chain(engines)).await.into_iter().enumerate() {
                if let Err(error) = started.unwrap() {
                    panic!("round {round}: process {i} could not start on the new stream: {error}");
                }
            }
        }
    });
}
