//! The wire format: every message round-trips, no bytes make decoding panic, and the largest
//! messages fit NATS's default payload limit.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use paycore_cluster::wire::{
    decode_reply, decode_submission, encode_reply, encode_submission, frames, Frames, MessageKind, WireError,
    FRAMES_MAX_BYTES, PAYLOAD_MAX_BYTES, WIRE_VERSION,
};
use paycore_engine::{EngineError, Reply, Submission};
use paycore_ledger::{
    Account, AccountId, Amount, Balances, BatchId, Command, CommandError, Currency, NewAccount, Outcome, Overdraft,
    Request, ResultCode, TenantId, AMOUNT_MAX, BATCH_EVENTS_MAX,
};
use proptest::prelude::*;
use proptest::strategy::ValueTree;

fn round_trip_submission(submission: &Submission) -> Submission {
    let bytes = encode_submission(submission);
    assert_eq!(bytes[0], WIRE_VERSION);
    decode_submission(&bytes).unwrap()
}

fn round_trip_reply(reply: &Result<Reply, EngineError>) -> Result<Reply, EngineError> {
    decode_reply(&encode_reply(reply)).unwrap()
}

/// Every prefix of a message is refused, whatever it cuts.
fn assert_truncations_refused(bytes: &[u8], decode: impl Fn(&[u8]) -> bool) {
    for end in 0..bytes.len() {
        assert!(!decode(&bytes[..end]), "a message cut to {end} of {} bytes decoded", bytes.len());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn submissions_round_trip(submission in submission()) {
        prop_assert_eq!(round_trip_submission(&submission), submission);
    }

    #[test]
    fn replies_round_trip(reply in reply()) {
        prop_assert_eq!(round_trip_reply(&reply), reply);
    }

    #[test]
    fn cut_submissions_and_replies_are_refused(submission in submission(), reply in reply()) {
        assert_truncations_refused(&encode_submission(&submission), |b| decode_submission(b).is_ok());
        assert_truncations_refused(&encode_reply(&reply), |b| decode_reply(b).is_ok());
    }

    #[test]
    fn any_bytes_decode_or_fail_without_panic(body in proptest::collection::vec(any::<u8>(), 0..600)) {
        let mut bytes = vec![WIRE_VERSION];
        bytes.extend_from_slice(&body);
        let _ = decode_submission(&bytes);
        let _ = decode_reply(&bytes);
        let _ = decode_submission(&body);
        let _ = decode_reply(&body);
    }

    #[test]
    fn changed_bytes_of_a_message_decode_or_fail_without_panic(
        submission in submission(),
        reply in reply(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        for mut bytes in [encode_submission(&submission), encode_reply(&reply)] {
            let index = at.index(bytes.len());
            bytes[index] = byte;
            let _ = decode_submission(&bytes);
            let _ = decode_reply(&bytes);
        }
    }
    #[test]
    fn framed_messages_come_back_in_order_with_their_sequence_numbers(
        replies in proptest::collection::vec((any::<u64>(), reply()), 0..8),
        submissions in proptest::collection::vec((any::<u64>(), submission()), 0..8),
    ) {
        let mut message = Frames::default();
        for (seq, reply) in &replies {
            message.push(*seq, &encode_reply(reply));
        }
        prop_assert_eq!(message.len(), replies.len());
        let bytes = message.into_bytes();
        let read: Vec<(u64, Result<Reply, EngineError>)> = frames(MessageKind::Reply, &bytes)
            .map(|frame| frame.map(|(seq, b)| (seq, decode_reply(b).unwrap())))
            .collect::<Result<_, _>>()
            .unwrap();
        prop_assert_eq!(read, replies);
        assert_cut_frames_refused(MessageKind::Reply, &bytes);

        let mut message = Frames::default();
        for (seq, submission) in &submissions {
            message.push(*seq, &encode_submission(submission));
        }
        let bytes = message.into_bytes();
        let read: Vec<(u64, Submission)> = frames(MessageKind::Submission, &bytes)
            .map(|frame| frame.map(|(seq, b)| (seq, decode_submission(b).unwrap())))
            .collect::<Result<_, _>>()
            .unwrap();
        prop_assert_eq!(read, submissions);
        assert_cut_frames_refused(MessageKind::Submission, &bytes);
    }

    #[test]
    fn any_bytes_read_as_frames_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        // After the right version byte too, so that the walk over the frames is what is tried.
        let versioned = [&[WIRE_VERSION][..], &bytes].concat();
        for (_, message) in frames(MessageKind::Submission, &bytes).chain(frames(MessageKind::Submission, &versioned)).flatten() {
            let _ = decode_submission(message);
            let _ = decode_reply(message);
        }
    }
}

/// A cut message gives the whole frames before the cut, then one error naming the message's
/// kind, never a panic.
fn assert_cut_frames_refused(kind: MessageKind, bytes: &[u8]) {
    for end in 0..bytes.len() {
        let read: Vec<_> = frames(kind, &bytes[..end]).collect();
        let whole = read.iter().take_while(|frame| frame.is_ok()).count();
        assert!(read.len() - whole <= 1, "{} frames after an error", read.len() - whole - 1);
        for frame in read.into_iter().skip(whole) {
            let refused = match frame {
                Err(WireError::TrailingBytes { kind: k, .. }) => k == kind,
                // Cut before its version byte.
                Err(WireError::Empty { kind: k }) => k == kind && end == 0,
                _ => false,
            };
            assert!(refused, "a cut frame read as {frame:?}");
        }
    }
}

/// A new message is started before a frame that would take one past NATS's payload limit; an
/// empty message takes any frame.
#[test]
fn frames_keep_under_the_payload_limit() {
    let big = vec![7u8; PAYLOAD_MAX_BYTES / 3];
    let mut message = Frames::default();
    assert!(message.fits(PAYLOAD_MAX_BYTES * 2));
    message.push(1, &big);
    message.push(2, &big);
    let room = FRAMES_MAX_BYTES - 1 - 2 * (12 + big.len()) - 12;
    assert!(message.fits(room));
    assert!(!message.fits(room + 1));
    let bytes = message.into_bytes();
    assert_eq!(bytes.len(), 1 + 2 * (12 + big.len()));
    assert_eq!(&bytes[..13], &[WIRE_VERSION, 1, 0, 0, 0, 0, 0, 0, 0, 0x55, 0x55, 0x05, 0]);
    let seqs: Vec<u64> = frames(MessageKind::Reply, &bytes).map(|frame| frame.unwrap().0).collect();
    assert_eq!(seqs, [1, 2]);
}

/// A message of frames from a node of another version, or an empty one, is refused as such:
/// one error, no frame read.
#[test]
fn frames_of_another_version_are_refused_by_name() {
    let mut message = Frames::default();
    message.push(9, &encode_reply(&Err(EngineError::StorageFull)));
    let mut bytes = message.into_bytes();
    bytes[0] = WIRE_VERSION - 1;
    let read: Vec<_> = frames(MessageKind::Reply, &bytes).collect();
    assert!(
        matches!(read.as_slice(), [Err(WireError::Version { found, expected: WIRE_VERSION })] if *found == WIRE_VERSION - 1),
        "{read:?}"
    );
    let read: Vec<_> = frames(MessageKind::Submission, &[]).collect();
    assert!(matches!(read.as_slice(), [Err(WireError::Empty { kind: MessageKind::Submission })]), "{read:?}");
    // An empty message of this version has no frames and no error.
    assert_eq!(frames(MessageKind::Reply, &Frames::default().into_bytes()).count(), 0);
}

/// One value of each variant: adding a variant breaks the exhaustive matches below until it
/// has an example here too.
fn command_variant(command: &Command) -> usize {
    match command {
        Command::CreateAccount(_) => 0,
        Command::Transfer(_) => 1,
        Command::Transfers(_) => 2,
        Command::CreatePayment(_) => 3,
        Command::ConfirmPayment(_) => 4,
        Command::CapturePayment { .. } => 5,
        Command::CancelPayment(_) => 6,
        Command::RefundPayment { .. } => 7,
        Command::BatchItems { .. } => 8,
        Command::EndBatch { .. } => 9,
        Command::UpdateAccount { .. } => 10,
        Command::CloseClearingWindow { .. } => 11,
        Command::ScanPayment { .. } => 12,
    }
}

fn outcome_variant(outcome: &Outcome) -> usize {
    match outcome {
        Outcome::Account(_) => 0,
        Outcome::Transfer { .. } => 1,
        Outcome::Transfers(_) => 2,
        Outcome::Payment(_) => 3,
        Outcome::Refund(_) => 4,
        Outcome::BatchEnded => 5,
        Outcome::AccountUpdated(_) => 6,
        Outcome::ClearingWindow(_) => 7,
    }
}

fn error_variant(error: &CommandError) -> usize {
    match error {
        CommandError::AccountNotFound { .. } => 0,
        CommandError::CurrencyMismatch { .. } => 1,
        CommandError::SameAccount => 2,
        CommandError::ReferenceTaken => 3,
        CommandError::AlreadyExists => 4,
        CommandError::PaymentNotFound => 5,
        CommandError::UnexpectedState { .. } => 6,
        CommandError::AmountTooLarge { .. } => 7,
        CommandError::InvalidField { .. } => 8,
        CommandError::Rejected(_) => 9,
        CommandError::QuoteNotFound => 10,
        CommandError::QuoteExpired => 11,
        CommandError::LimitExceeded(_) => 12,
        CommandError::AccountNotEmpty => 13,
        CommandError::WindowEmpty => 14,
        CommandError::PayerRequired => 15,
        CommandError::PayerMismatch => 16,
    }
}

/// Draws from a strategy until every variant has been seen (and round-tripped), or fails.
fn every_variant<T: std::fmt::Debug>(
    strategy: impl Strategy<Value = T>,
    variants: usize,
    variant: impl Fn(&T) -> usize,
    check: impl Fn(&T),
) {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let mut seen = vec![false; variants];
    for _ in 0..10_000 {
        let value = strategy.new_tree(&mut runner).unwrap().current();
        check(&value);
        seen[variant(&value)] = true;
        if seen.iter().all(|s| *s) {
            return;
        }
    }
    panic!("variants never drawn: {seen:?}");
}

#[test]
fn every_command_outcome_and_error_variant_round_trips() {
    every_variant(
        submission(),
        13,
        |s| command_variant(&s.request.command),
        |s| {
            assert_eq!(&round_trip_submission(s), s);
        },
    );
    every_variant(outcome(), 8, outcome_variant, |o| {
        let reply = Ok(Reply::Done(o.clone()));
        assert_eq!(round_trip_reply(&reply), reply);
    });
    every_variant(command_error(), 17, error_variant, |e| {
        let reply = Ok(Reply::Done(Outcome::Payment(Err(e.clone()))));
        assert_eq!(round_trip_reply(&reply), reply);
    });
    for reply in [
        Ok(Reply::Replay { status: 201, body: br#"{"object":"transfer"}"#.to_vec() }),
        Ok(Reply::KeyReused),
        Err(EngineError::Overloaded),
        Err(EngineError::Unavailable("the engine stopped".into())),
        Err(EngineError::StorageFull),
    ] {
        assert_eq!(round_trip_reply(&reply), reply);
    }
}

#[test]
fn every_currency_round_trips_as_its_code() {
    for currency in Currency::all() {
        let submission = Submission {
            request: Request {
                tenant: TenantId(1),
                command: Command::CreateAccount(NewAccount {
                    id: AccountId(2),
                    currency,
                    overdraft: Overdraft::Limit(0),
                    reference: None,
                    metadata: None,
                }),
            },
            idempotency: None,
        };
        let bytes = encode_submission(&submission);
        assert!(bytes.windows(3).any(|w| w == currency.code().as_bytes()), "{currency}");
        assert_eq!(round_trip_submission(&submission), submission);
    }
}

fn account_creation(code: &str) -> Submission {
    Submission {
        request: Request {
            tenant: TenantId(7),
            command: Command::CreateAccount(NewAccount {
                id: AccountId(9),
                currency: Currency::from_code(code).unwrap(),
                overdraft: Overdraft::Unlimited,
                reference: Some("DE89370400440532013000".into()),
                metadata: None,
            }),
        },
        idempotency: None,
    }
}

/// `bytes` with the first occurrence of `from` replaced by `to` (same length).
fn replaced(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let at = bytes.windows(from.len()).position(|w| w == from).unwrap();
    let mut out = bytes.to_vec();
    out[at..at + to.len()].copy_from_slice(to);
    out
}

#[test]
fn an_unknown_currency_is_a_decode_error() {
    let bytes = encode_submission(&account_creation("EUR"));
    for unknown in [&b"XXX"[..], b"eur", b"\xff\xfe\xfd"] {
        let error = decode_submission(&replaced(&bytes, b"EUR", unknown)).unwrap_err();
        let WireError::Malformed { kind: MessageKind::Submission, path, cause } = &error else {
            panic!("{error:?}");
        };
        assert_eq!(*cause, postcard::Error::SerdeDeCustom);
        // The request (field 0), its command (field 1), `CreateAccount` (variant 0), its currency.
        assert_eq!(path, "[0][1].0[1]");
        assert!(error.to_string().contains("unknown currency"), "{error}");
    }
}

#[test]
fn an_error_text_the_ledger_does_not_make_is_a_decode_error() {
    let reply = Ok(Reply::Done(Outcome::Payment(Err(CommandError::InvalidField {
        param: "amount",
        message: "amount must be greater than zero",
    }))));
    let bytes = encode_reply(&reply);
    // A param in the message's place, a message no one writes, a param no one names.
    for (from, to) in [
        (&b"amount must"[..], &b"amount_must"[..]),
        (b"greater than zero", b"greater than one!"),
        (b"\x06amount", b"\x06amounx"),
    ] {
        let error = decode_reply(&replaced(&bytes, from, to)).unwrap_err();
        assert!(matches!(error, WireError::Malformed { kind: MessageKind::Reply, .. }), "{error:?}");
    }
    assert_eq!(decode_reply(&bytes).unwrap(), reply);
}

#[test]
fn amounts_and_balance_counters_keep_their_bounds() {
    let decode_amount = |minor: u64| postcard::from_bytes::<Amount>(&postcard::to_allocvec(&minor).unwrap());
    assert_eq!(decode_amount(1).unwrap().get(), 1);
    assert_eq!(decode_amount(AMOUNT_MAX).unwrap().get(), AMOUNT_MAX);
    assert_eq!(decode_amount(0).unwrap_err(), postcard::Error::SerdeDeCustom);
    assert_eq!(decode_amount(AMOUNT_MAX + 1).unwrap_err(), postcard::Error::SerdeDeCustom);
    assert_eq!(postcard::to_allocvec(&Amount::new(300).unwrap()).unwrap(), postcard::to_allocvec(&300u64).unwrap());

    let decode_balances =
        |counters: [u64; 4]| postcard::from_bytes::<Balances>(&postcard::to_allocvec(&counters).unwrap());
    let top = decode_balances([AMOUNT_MAX; 4]).unwrap();
    assert_eq!((top.debits_posted, top.credits_pending), (AMOUNT_MAX, AMOUNT_MAX));
    for at in 0..4 {
        let mut counters = [5; 4];
        counters[at] = AMOUNT_MAX + 1;
        assert_eq!(decode_balances(counters).unwrap_err(), postcard::Error::SerdeDeCustom, "counter {at}");
    }

    // Inside a whole reply.
    let account = |debits_posted| Account {
        id: AccountId(1),
        tenant: TenantId(2),
        currency: Currency::from_code("JPY").unwrap(),
        overdraft: Overdraft::Limit(10),
        reference: None,
        metadata: None,
        balances: Balances { debits_posted, credits_posted: 0, debits_pending: 0, credits_pending: 0 },
        created_at: 3,
        status: paycore_ledger::AccountStatus::Active,
        limits: paycore_ledger::Limits::default(),
    };
    let bytes = encode_reply(&Ok(Reply::Done(Outcome::Account(Ok(account(AMOUNT_MAX))))));
    // i64::MAX is the varint ff ff ff ff ff ff ff ff 7f; ff … ff 01 would be 2^64 - 1 in ten bytes.
    let at = bytes.windows(9).position(|w| w == [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]).unwrap();
    let mut over = bytes[..at].to_vec();
    over.extend_from_slice(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01]); // 2^63
    over.extend_from_slice(&bytes[at + 9..]);
    let error = decode_reply(&over).unwrap_err();
    assert!(matches!(&error, WireError::Malformed { cause: postcard::Error::SerdeDeCustom, .. }), "{error:?}");
}

#[test]
fn another_version_is_refused_with_a_way_out() {
    let mut bytes = encode_submission(&account_creation("USD"));
    for version in [0, 1, 2, 3, 4, 255] {
        bytes[0] = version;
        let error = decode_submission(&bytes).unwrap_err();
        assert!(matches!(error, WireError::Version { found, expected: WIRE_VERSION } if found == version), "{error:?}");
        assert!(error.to_string().contains("run the same paycore version on every node"), "{error}");
        let error = decode_reply(&bytes).unwrap_err();
        assert!(matches!(error, WireError::Version { found, expected: WIRE_VERSION } if found == version), "{error:?}");
    }
}

#[test]
fn empty_truncated_and_overlong_messages_are_refused() {
    assert!(matches!(decode_submission(&[]), Err(WireError::Empty { kind: MessageKind::Submission })));
    assert!(matches!(decode_reply(&[]), Err(WireError::Empty { kind: MessageKind::Reply })));
    let bytes = encode_submission(&account_creation("USD"));
    let error = decode_submission(&bytes[..bytes.len() - 1]).unwrap_err();
    assert!(
        matches!(&error, WireError::Malformed { cause: postcard::Error::DeserializeUnexpectedEnd, .. }),
        "{error:?}"
    );
    let mut longer = bytes.clone();
    longer.extend_from_slice(&[0, 0]);
    assert!(matches!(
        decode_submission(&longer),
        Err(WireError::TrailingBytes { kind: MessageKind::Submission, extra: 2 })
    ));
    // A reply is not a submission.
    let reply = encode_reply(&Ok(Reply::KeyReused));
    assert!(decode_submission(&reply).is_err());
}

#[test]
fn the_exact_bytes_of_a_small_message() {
    let reply = Ok(Reply::Done(Outcome::Transfers(vec![ResultCode::Ok, ResultCode::InsufficientFunds])));
    // Version, Ok, Reply::Done, Outcome::Transfers, two codes (indexes in declaration order).
    assert_eq!(encode_reply(&reply), [WIRE_VERSION, 0, 0, 2, 2, 0, 16]);
    let end = Submission {
        request: Request {
            tenant: TenantId(1),
            command: Command::EndBatch { batch: BatchId(0x0102), end: paycore_ledger::BatchEnd::Cancelled },
        },
        idempotency: None,
    };
    // An id is a byte string: its length, 16, then its bytes.
    let mut expected = vec![WIRE_VERSION, 16];
    expected.extend_from_slice(&1u128.to_be_bytes());
    expected.extend_from_slice(&[9, 16]); // Command::EndBatch
    expected.extend_from_slice(&0x0102u128.to_be_bytes());
    expected.extend_from_slice(&[1, 0]); // BatchEnd::Cancelled, no idempotency key
    assert_eq!(encode_submission(&end), expected);
}

// Sizes measured when written (the messages are deterministic); a change of the format that
// grows them fails here first. The widest is exact: 78 bytes a transfer, 39 % of a NATS payload
// left free.
const BULK_TRANSFERS_BYTES_MAX: usize = 491_365;
const WIDEST_BULK_TRANSFERS_BYTES: usize = 639_131;
const BULK_ITEMS_BYTES_MAX: usize = 368_332;

#[test]
fn the_largest_submissions_fit_a_nats_payload_with_margin() {
    let realistic = encode_submission(&bulk_transfers());
    let widest = encode_submission(&widest_bulk_transfers());
    let items = encode_submission(&bulk_items());
    println!(
        "bulk transfers {} bytes ({:.1} per transfer), widest {} bytes, batch items {} bytes ({:.1} per item)",
        realistic.len(),
        realistic.len() as f64 / BATCH_EVENTS_MAX as f64,
        widest.len(),
        items.len(),
        items.len() as f64 / BATCH_EVENTS_MAX as f64,
    );
    assert!(realistic.len() <= BULK_TRANSFERS_BYTES_MAX, "{}", realistic.len());
    assert_eq!(widest.len(), WIDEST_BULK_TRANSFERS_BYTES);
    assert!(items.len() <= BULK_ITEMS_BYTES_MAX, "{}", items.len());
    // The widest possible bulk submission leaves more than a third of the payload free.
    assert!(widest.len() * 3 < PAYLOAD_MAX_BYTES * 2, "{}", widest.len());
    assert!(realistic.len() * 2 < PAYLOAD_MAX_BYTES);
    assert!(items.len() * 2 < PAYLOAD_MAX_BYTES);
    assert_eq!(decode_submission(&realistic).unwrap(), bulk_transfers());
    assert_eq!(decode_submission(&items).unwrap(), bulk_items());
    // A full chunk of cross-currency items, every FX field at its widest, leaves a third free.
    let mut fx_items = bulk_items();
    if let Command::BatchItems { items, .. } = &mut fx_items.request.command {
        for item in items {
            item.fx = Some(paycore_ledger::ItemFx {
                quote: paycore_ledger::QuoteId(u128::MAX),
                source_amount: u64::MAX,
                fee: u64::MAX,
            });
        }
    }
    let widest_fx = encode_submission(&fx_items);
    assert!(widest_fx.len() * 3 < PAYLOAD_MAX_BYTES * 2, "{}", widest_fx.len());
    assert_eq!(decode_submission(&widest_fx).unwrap(), fx_items);
    // A refunds batch's chunk (shorter: each item carries its reason), every field at its
    // widest and every reason 140 four-byte characters, leaves a third free.
    let mut refund_items = bulk_items();
    if let Command::BatchItems { items, .. } = &mut refund_items.request.command {
        items.truncate(paycore_engine::batches::REFUND_CHUNK_ITEMS);
        for item in items {
            (item.index, item.amount) = (u64::MAX, u64::MAX);
            (item.payer, item.payee) = (paycore_ledger::AccountId(u128::MAX), paycore_ledger::AccountId(u128::MAX));
            item.refund = Some(paycore_ledger::ItemRefund {
                payment: paycore_ledger::PaymentId(u128::MAX),
                reason: Some("\u{1d11e}".repeat(paycore_ledger::REFUND_REASON_CHARS_MAX)),
            });
        }
    }
    let widest_refunds = encode_submission(&refund_items);
    assert!(widest_refunds.len() * 3 < PAYLOAD_MAX_BYTES * 2, "{}", widest_refunds.len());
    assert_eq!(decode_submission(&widest_refunds).unwrap(), refund_items);
}

/// The reply to a replayed bulk request carries the saved JSON body: the server's
/// `transfer_results` for `BATCH_EVENTS_MAX` failures with the longest code.
#[test]
fn the_largest_replay_fits_a_nats_payload() {
    let mut body = String::from(r#"{"object":"list","data":["#);
    for index in 0..BATCH_EVENTS_MAX {
        if index > 0 {
            body.push(',');
        }
        body.push_str(&format!(r#"{{"index":{index},"result":"exists_with_different_fields"}}"#));
    }
    body.push_str("]}");
    let replay = Ok(Reply::Replay { status: 200, body: body.into_bytes() });
    let bytes = encode_reply(&replay);
    println!("replay of a bulk answer: {} bytes", bytes.len());
    assert!(bytes.len() * 3 < PAYLOAD_MAX_BYTES * 2, "{}", bytes.len());
    assert_eq!(decode_reply(&bytes).unwrap(), replay);

    let codes = Ok(Reply::Done(Outcome::Transfers(vec![ResultCode::ExistsWithDifferentFields; BATCH_EVENTS_MAX])));
    assert_eq!(encode_reply(&codes).len(), 1 + 1 + 1 + 1 + 2 + BATCH_EVENTS_MAX);
}

/// Encodes and decodes the bulk submission `WIRE_TIMING_ROUNDS` times (20 by default). The
/// wire code is generic, so it is compiled in this crate: measure it optimized with
/// `cargo test --config 'profile.dev.package.paycore-cluster.opt-level=3'
/// --config 'profile.dev.package.paycore-ledger.opt-level=3' -p paycore-cluster --test wire
/// -- --ignored --nocapture timing`. Measured on 2 cores shared with four builds: encode 0.3
/// to 1.0 ms, decode 0.7 to 0.9 ms for 8 190 transfers, 140 to 200 ns a transfer both ways
/// (unoptimized: 12 and 24 ms).
#[test]
#[ignore = "a measurement, not a check"]
fn timing_of_the_bulk_submission() {
    let submission = bulk_transfers();
    let rounds = std::env::var("WIRE_TIMING_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(20);
    let start = std::time::Instant::now();
    let mut bytes = Vec::new();
    for _ in 0..rounds {
        bytes = encode_submission(&submission);
    }
    let encoded = start.elapsed() / rounds;
    let start = std::time::Instant::now();
    for _ in 0..rounds {
        assert_eq!(decode_submission(&bytes).unwrap().request.tenant, submission.request.tenant);
    }
    let decoded = start.elapsed() / rounds;
    println!(
        "{} transfers, {} bytes: encode {encoded:?}, decode {decoded:?} ({:.0} ns per transfer both ways)",
        BATCH_EVENTS_MAX,
        bytes.len(),
        (encoded + decoded).as_nanos() as f64 / BATCH_EVENTS_MAX as f64
    );
}

/// A clearing window's figures decode only within the ledger's range: counters (debits,
/// credits, gross volume) at most `AMOUNT_MAX`, signed balances and nets never `i64::MIN`
/// (they are at most ±`AMOUNT_MAX`).
#[test]
fn clearing_figures_out_of_range_are_refused() {
    use paycore_ledger::{ClearingPosition, ClearingWindow, ClearingWindowId};
    let window = |opening: i64, debits: u64| {
        Ok(Reply::Done(Outcome::ClearingWindow(Ok(ClearingWindow {
            id: ClearingWindowId(1),
            tenant: TenantId(2),
            currency: Currency::from_code("EUR").unwrap(),
            sequence: 1,
            opened_at: 0,
            closed_at: 5,
            gross_volume: debits,
            positions: vec![ClearingPosition {
                account: AccountId(3),
                opening,
                debits,
                credits: 0,
                net: -i64::try_from(debits.min(AMOUNT_MAX)).unwrap(),
                closing: 0,
            }],
        }))))
    };
    let fine = window(-i64::MAX, AMOUNT_MAX);
    assert_eq!(round_trip_reply(&fine), fine);
    for bad in [window(i64::MIN, 7), window(0, AMOUNT_MAX + 1)] {
        let error = decode_reply(&encode_reply(&bad)).unwrap_err();
        assert!(matches!(&error, WireError::Malformed { cause: postcard::Error::SerdeDeCustom, .. }), "{error:?}");
    }
}
