//! The API side's lanes: requests waiting together go in few messages (a message is cut before
//! it would pass the payload limit), and each answer of an engine's reply message reaches its
//! own request; a request whose answer does not come is told `NoReply` (the API then answers
//! from the store) after the reply timeout, not before. That a lane holds what comes while its
//! message is unacknowledged is timing (an acknowledgement's round trip against the requests'
//! pace) and is measured by the cluster bench instead (`crates/bench/NOTES.md`).
//! Needs NATS with JetStream on 127.0.0.1:4222; skips loudly when it is absent, except under
//! `CI=true`, where that fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{account_creation, delete_stream, nats_is_up};
use paycore_cluster::testing::NatsServer;
use paycore_cluster::{consume, NatsSubmitter, QueueConfig};
use paycore_engine::{EngineError, Envelope, Priority, Queue, Reply, Submission, Submitter};
use paycore_ledger::Command;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

fn config(test: &str, reply_timeout: Duration) -> QueueConfig {
    let mut config = common::queue_config(test);
    config.reply_timeout = reply_timeout;
    config
}

/// Submits `submission`; the receiver gets its answer.
fn submit(submitter: &NatsSubmitter, submission: Submission) -> oneshot::Receiver<Result<Reply, EngineError>> {
    let (tx, rx) = oneshot::channel();
    let envelope = Envelope {
        submission,
        reply: Box::new(move |result| {
            let _ = tx.send(result);
        }),
    };
    submitter.try_submit(envelope, Priority::RealTime).unwrap();
    rx
}

/// An engine that answers every account creation with a saved response naming the account:
/// what each request gets back says whose answer it is. Answers in batches, as the engine does
/// (one reply message per batch).
fn fake_engine(mut queue: impl Queue + 'static, expected: usize) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        let (mut answered, mut batches) = (0, 0);
        while answered < expected && Instant::now() < deadline {
            let mut batch = Vec::new();
            queue.recv_batch(1024, Some(Duration::from_millis(100)), &mut batch);
            if batch.is_empty() {
                continue;
            }
            batches += 1;
            for envelope in batch {
                let body = match &envelope.submission.request.command {
                    Command::CreateAccount(account) => format!("account {}", account.id.0).into_bytes(),
                    Command::Transfers(transfers) => format!("{} transfers", transfers.len()).into_bytes(),
                    _ => panic!("only account creations and bulk transfers were sent"),
                };
                (envelope.reply)(Ok(Reply::Replay { status: 201, body }));
                answered += 1;
            }
        }
        batches
    })
}

#[test]
fn a_burst_of_requests_goes_in_few_messages_and_each_gets_its_own_answer() {
    if !nats_is_up("the frames tests") {
        return;
    }
    // One thread: every request is submitted before the lane's task first runs.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let config = config("frames", Duration::from_secs(10));
        const REQUESTS: u32 = 300;
        let (queue, _pulling) = consume(&config, 0, 4096).await.unwrap();
        let engine = fake_engine(queue, usize::try_from(REQUESTS).unwrap());
        let submitter = NatsSubmitter::connect(config.clone(), 4096).await.unwrap();

        // All submitted before the lane's task runs; three of them bulk (491 kB each: no
        // three fit one message).
        let mut waiting = Vec::new();
        for id in 1..=REQUESTS {
            let (submission, expected) = if id % 100 == 50 {
                (common::bulk_transfers(), format!("{} transfers", paycore_ledger::BATCH_EVENTS_MAX))
            } else {
                (account_creation(u128::from(id)), format!("account {id}"))
            };
            waiting.push((id, expected, submit(&submitter, submission)));
        }
        for (id, expected, answer) in waiting {
            let answer = tokio::time::timeout(Duration::from_secs(20), answer).await.unwrap().unwrap();
            assert_eq!(
                answer,
                Ok(Reply::Replay { status: 201, body: expected.into_bytes() }),
                "request {id} got another's answer"
            );
        }
        let (messages, submissions) = submitter.published();
        let batches = tokio::task::spawn_blocking(move || engine.join().unwrap()).await.unwrap();
        eprintln!("{submissions} submissions in {messages} messages; the engine answered in {batches} batches");
        assert_eq!(submissions, u64::from(REQUESTS));
        // Two bulk ones and the 297 small ones fit one message, the third bulk one starts another.
        assert_eq!(messages, 2, "{submissions} submissions took {messages} messages");
        delete_stream(&config).await;
    });
}

#[test]
fn a_request_whose_answer_does_not_come_is_told_no_reply_after_the_timeout() {
    if !nats_is_up("the frames tests") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    rt.block_on(async {
        let timeout = Duration::from_millis(600);
        let config = config("noreply", timeout);
        // No engine pulls: the stream keeps the commands, nobody answers them.
        let submitter = NatsSubmitter::connect(config.clone(), 64).await.unwrap();
        let sent = Instant::now();
        let first = submit(&submitter, account_creation(1));
        tokio::time::sleep(Duration::from_millis(200)).await;
        let second = submit(&submitter, account_creation(2));
        assert_eq!(
            tokio::time::timeout(Duration::from_secs(10), first).await.unwrap().unwrap(),
            Err(EngineError::NoReply)
        );
        let first_at = sent.elapsed();
        assert_eq!(
            tokio::time::timeout(Duration::from_secs(10), second).await.unwrap().unwrap(),
            Err(EngineError::NoReply)
        );
        let second_at = sent.elapsed();
        assert!(first_at >= timeout, "told NoReply after {first_at:?}, before the {timeout:?} timeout");
        assert!(second_at >= timeout + Duration::from_millis(200), "the second told NoReply after {second_at:?}");
        assert!(first_at < Duration::from_secs(5) && second_at < Duration::from_secs(5), "{first_at:?}, {second_at:?}");
        assert_eq!(submitter.depth(), 0, "nobody waits any more");

        // The commands are in the stream all the same: an engine that comes later executes
        // them (its answers find nobody waiting and are dropped).
        let (queue, _pulling) = consume(&config, 0, 64).await.unwrap();
        let engine = fake_engine(queue, 2);
        let batches = tokio::task::spawn_blocking(move || engine.join().unwrap()).await.unwrap();
        assert!(batches >= 1, "the engine got the commands");
        delete_stream(&config).await;
    });
}

/// A message whose publish acknowledgement does not come (the NATS server went away) may still
/// be stored: the client sends what it buffered once it has reconnected. Its requests are told
/// `NoReply` (the API then answers from the store, and at worst `ledger_timeout`: "may still be
/// applied"), never `Unavailable` (`ledger_unavailable`: "nothing was applied"). Here the
/// request so told runs once NATS is back.
#[test]
fn a_request_whose_publish_is_not_acknowledged_is_told_no_reply_and_may_still_run() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    rt.block_on(async {
        let Some(mut nats) = NatsServer::start("the unacknowledged publish test") else { return };
        // A reply timeout far past the acknowledgement's (5 s): the answer can only come from
        // the missing acknowledgement.
        let mut config = config("unacked", Duration::from_secs(60));
        config.url = nats.url();
        let submitter = NatsSubmitter::connect(config.clone(), 64).await.unwrap();
        tokio::task::block_in_place(|| nats.kill());
        let sent = Instant::now();
        let answer = submit(&submitter, account_creation(7));
        assert_eq!(
            tokio::time::timeout(Duration::from_secs(30), answer).await.unwrap().unwrap(),
            Err(EngineError::NoReply)
        );
        assert!(sent.elapsed() < Duration::from_secs(30), "answered after {:?}", sent.elapsed());
        assert_eq!(submitter.depth(), 0, "nobody waits any more");

        tokio::task::block_in_place(|| nats.spawn());
        let (queue, _pulling) = consume(&config, 0, 64).await.unwrap();
        let engine = fake_engine(queue, 1);
        let batches = tokio::task::spawn_blocking(move || engine.join().unwrap()).await.unwrap();
        assert_eq!(batches, 1, "the request told NoReply was not executed once NATS was back");
    });
}
