//! Every process of a new cluster makes sure of the work-queue stream as it starts, so several
//! create it at the same moment. Each must get the stream, whichever of them made it: in a CI
//! run an engine was refused with "subjects overlap with an existing stream" (10065) for the
//! stream another engine had just created, and gave its partition's lead up. On a NATS server
//! just started (as a new cluster's is) the old code was refused in 3 runs of 3 (of 20 rounds
//! each). Starts `nats-server` itself ([`NatsServer`]); skips loudly without it, except under
//! `CI=true`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::queue_config;
use paycore_cluster::testing::NatsServer;
use paycore_cluster::{consume, NatsSubmitter};

#[test]
fn processes_starting_together_all_get_the_one_stream() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        for round in 0..20 {
            // A server just started, as a new cluster's is.
            let Some(nats) = tokio::task::block_in_place(|| NatsServer::start("the stream race test")) else { return };
            let mut config = queue_config(&format!("race{round}"));
            config.url = nats.url();
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
