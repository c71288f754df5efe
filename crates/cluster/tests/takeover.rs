//! A new leader gets at once what the leader before it took from the stream and did not
//! acknowledge (it was killed between its pull and its ack), not after the consumer's 10 s ack
//! wait: `consume` makes the partition's consumers anew. Needs NATS with JetStream on
//! 127.0.0.1:4222; skips loudly when it is absent, except under `CI=true`, where that fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{account_creation, delete_stream, nats_is_up, queue_config};
use paycore_cluster::{consume, NatsSubmitter};
use paycore_engine::{Envelope, Priority, Queue, Submitter};
use std::time::{Duration, Instant};

/// What `queue` holds within `wait`, taken on a blocking thread (the engine's side).
async fn take(mut queue: impl Queue + 'static, wait: Duration) -> (impl Queue, Vec<Envelope>) {
    tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + wait;
        let mut out = Vec::new();
        while out.is_empty() && Instant::now() < deadline {
            queue.recv_batch(16, Some(deadline.saturating_duration_since(Instant::now())), &mut out);
        }
        (queue, out)
    })
    .await
    .unwrap()
}

#[test]
fn a_new_leader_gets_what_the_dead_one_took_without_waiting_for_the_ack_wait() {
    if !nats_is_up("the takeover test") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let config = queue_config("takeover");

        // The first leader pulls the command and dies before answering it (nothing acked).
        let (first, pulling) = consume(&config, 0, 64).await.unwrap();
        let submitter = NatsSubmitter::connect(config.clone(), 64).await.unwrap();
        let (answers, answered) = std::sync::mpsc::channel();
        let envelope =
            Envelope { submission: account_creation(9), reply: Box::new(move |result| answers.send(result).unwrap()) };
        submitter.try_submit(envelope, Priority::RealTime).unwrap();
        let (first, taken) = take(first, Duration::from_secs(5)).await;
        assert_eq!(taken.len(), 1, "the first leader pulled the command");
        drop((taken, pulling, first));

        // The next leader: the command comes again well within the 10 s ack wait.
        let (next, _pulling) = consume(&config, 0, 64).await.unwrap();
        let (_next, again) = take(next, Duration::from_secs(4)).await;
        assert_eq!(again.len(), 1, "the command the dead leader took came to the next one before the ack wait");
        assert_eq!(again[0].submission, account_creation(9));

        // Its answer reaches the API node's request, which waited through the takeover.
        let envelope = again.into_iter().next().unwrap();
        (envelope.reply)(Err(paycore_engine::EngineError::Unavailable("answered by the test".into())));
        let reply = tokio::task::spawn_blocking(move || answered.recv_timeout(Duration::from_secs(5))).await.unwrap();
        assert_eq!(reply.unwrap(), Err(paycore_engine::EngineError::Unavailable("answered by the test".into())));

        delete_stream(&config).await;
    });
}
