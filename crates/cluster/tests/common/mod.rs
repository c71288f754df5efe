//! Strategies for every value the wire carries, and realistic bulk messages; and what the tests
//! against a real NATS share (`nats_is_up`, a queue of their own, a command to send).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use paycore_engine::{EngineError, IdempotencyKey, Reply, Submission};
use paycore_ledger::fx::Rate;
use paycore_ledger::{
    time_ordered, Account, AccountId, Balances, BatchEnd, BatchId, BatchItem, BatchStep, CaptureMethod,
    ClearingPosition, ClearingWindow, ClearingWindowId, Command, CommandError, Currency, Hold, NewAccount, NewPayment,
    NewTransfer, Outcome, Overdraft, Payment, PaymentFx, PaymentId, PaymentStatus, QuoteId, Refund, RefundId,
    RefundStatus, Request, ResultCode, TenantId, Transfer, TransferId, TransferKind, TransferOp, AMOUNT_MAX,
    BATCH_EVENTS_MAX,
};
use paycore_ledger::{AccountStatus, AccountUpdate, Change, LimitBreach, LimitKind, Limits, Merchant, Velocity};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

pub fn currency() -> impl Strategy<Value = Currency> {
    let all: Vec<Currency> = Currency::all().collect();
    proptest::sample::select(all)
}

fn status() -> impl Strategy<Value = AccountStatus> {
    proptest::sample::select(AccountStatus::ALL.to_vec())
}

fn velocity() -> impl Strategy<Value = Velocity> {
    (any::<u32>(), any::<u64>()).prop_map(|(count, window_seconds)| Velocity { count, window_seconds })
}

fn limits() -> impl Strategy<Value = Limits> {
    (option::of(any::<u64>()), option::of(any::<u64>()), option::of(velocity()))
        .prop_map(|(max_payment, daily_outflow, velocity)| Limits { max_payment, daily_outflow, velocity })
}

fn change<T: std::fmt::Debug + Clone + 'static>(value: impl Strategy<Value = T> + 'static) -> BoxedStrategy<Change<T>> {
    prop_oneof![Just(Change::Keep), Just(Change::Remove), value.prop_map(Change::Set)].boxed()
}

fn limit_breach() -> impl Strategy<Value = LimitBreach> {
    let kind = prop_oneof![Just(LimitKind::MaxPayment), Just(LimitKind::DailyOutflow)];
    (account_id(), kind, counter(), counter(), counter()).prop_map(|(account, limit, value, requested, remaining)| {
        LimitBreach { account, limit, value, requested, remaining }
    })
}

fn text() -> impl Strategy<Value = String> {
    // Any characters, multi-byte ones included.
    ".{0,24}"
}

fn account_id() -> impl Strategy<Value = AccountId> {
    any::<u128>().prop_map(AccountId)
}

fn transfer_id() -> impl Strategy<Value = TransferId> {
    any::<u128>().prop_map(TransferId)
}

fn payment_id() -> impl Strategy<Value = PaymentId> {
    any::<u128>().prop_map(PaymentId)
}

fn counter() -> impl Strategy<Value = u64> {
    prop_oneof![Just(0), Just(AMOUNT_MAX), 0..=AMOUNT_MAX]
}

pub fn overdraft() -> impl Strategy<Value = Overdraft> {
    prop_oneof![any::<u64>().prop_map(Overdraft::Limit), Just(Overdraft::Unlimited)]
}

pub fn result_code() -> impl Strategy<Value = ResultCode> {
    proptest::sample::select(ResultCode::ALL.to_vec())
}

fn payment_status() -> impl Strategy<Value = PaymentStatus> {
    proptest::sample::select(PaymentStatus::ALL.to_vec())
}

fn capture_method() -> impl Strategy<Value = CaptureMethod> {
    prop_oneof![Just(CaptureMethod::Automatic), Just(CaptureMethod::Manual)]
}

pub fn new_transfer() -> BoxedStrategy<NewTransfer> {
    let hold = option::of(option::of(any::<u64>()).prop_map(|timeout_seconds| Hold { timeout_seconds }));
    let op = prop_oneof![
        (account_id(), account_id(), any::<u64>(), currency(), hold).prop_map(
            |(debit_account, credit_account, amount, currency, hold)| TransferOp::Move {
                debit_account,
                credit_account,
                amount,
                currency,
                hold
            }
        ),
        (transfer_id(), option::of(any::<u64>()))
            .prop_map(|(pending_id, amount)| TransferOp::Post { pending_id, amount }),
        transfer_id().prop_map(|pending_id| TransferOp::Void { pending_id }),
    ];
    (transfer_id(), any::<bool>(), op).prop_map(|(id, linked, op)| NewTransfer { id, linked, op }).boxed()
}

fn batch_item() -> impl Strategy<Value = BatchItem> {
    let fx =
        option::of((any::<u128>(), any::<u64>(), any::<u64>()).prop_map(|(quote, source_amount, fee)| {
            paycore_ledger::ItemFx { quote: QuoteId(quote), source_amount, fee }
        }));
    let refund = option::of(
        (payment_id(), option::of(".{0,40}"))
            .prop_map(|(payment, reason)| paycore_ledger::ItemRefund { payment, reason }),
    );
    (any::<u64>(), account_id(), account_id(), any::<u64>(), currency(), fx, refund).prop_map(
        |(index, payer, payee, amount, currency, fx, refund)| BatchItem {
            index,
            payer,
            payee,
            amount,
            currency,
            fx,
            refund,
        },
    )
}

fn batch_step() -> impl Strategy<Value = BatchStep> {
    prop_oneof![Just(BatchStep::Pay), Just(BatchStep::Hold), Just(BatchStep::Post), Just(BatchStep::Void)]
}

pub fn command() -> BoxedStrategy<Command> {
    let batch = any::<u128>().prop_map(BatchId);
    prop_oneof![
        (account_id(), currency(), overdraft(), option::of(text()), option::of(text())).prop_map(
            |(id, currency, overdraft, reference, metadata)| Command::CreateAccount(NewAccount {
                id,
                currency,
                overdraft,
                reference,
                metadata
            })
        ),
        new_transfer().prop_map(Command::Transfer),
        vec(new_transfer(), 0..8).prop_map(Command::Transfers),
        (
            payment_id(),
            option::of(account_id()),
            account_id(),
            any::<u64>(),
            currency(),
            capture_method(),
            any::<u64>()
        )
            .prop_flat_map(|(id, payer, payee, amount, currency, capture_method, expires_in_seconds)| {
                (option::of(text()), option::of(any::<u128>().prop_map(QuoteId)), option::of(merchant())).prop_map(
                    move |(description, fx_quote, merchant)| {
                        Command::CreatePayment(NewPayment {
                            id,
                            payer,
                            payee,
                            amount,
                            currency,
                            capture_method,
                            expires_in_seconds,
                            description,
                            fx_quote,
                            merchant,
                        })
                    },
                )
            }),
        payment_id().prop_map(Command::ConfirmPayment),
        (payment_id(), option::of(any::<u64>()))
            .prop_map(|(payment, amount)| Command::CapturePayment { payment, amount }),
        payment_id().prop_map(Command::CancelPayment),
        (payment_id(), any::<u128>(), option::of(any::<u64>()), option::of(".{0,40}")).prop_map(
            |(payment, refund, amount, reason)| Command::RefundPayment {
                payment,
                refund: RefundId(refund),
                amount,
                reason
            }
        ),
        (batch.clone(), batch_step(), vec(batch_item(), 0..8)).prop_map(|(batch, step, items)| Command::BatchItems {
            batch,
            step,
            items
        }),
        (batch, prop_oneof![Just(BatchEnd::Completed), Just(BatchEnd::Cancelled)])
            .prop_map(|(batch, end)| Command::EndBatch { batch, end }),
        (account_id(), option::of(status()), change(any::<u64>()), change(any::<u64>()), change(velocity()), text())
            .prop_map(|(account, status, max_payment, daily_outflow, velocity, actor)| Command::UpdateAccount {
                account,
                update: AccountUpdate { status, max_payment, daily_outflow, velocity },
                actor,
            }),
        (any::<u128>(), currency())
            .prop_map(|(window, currency)| Command::CloseClearingWindow { window: ClearingWindowId(window), currency }),
        (payment_id(), account_id()).prop_map(|(payment, payer)| Command::ScanPayment { payment, payer }),
    ]
    .boxed()
}

fn merchant() -> impl Strategy<Value = Merchant> {
    (text(), text(), text(), text()).prop_map(|(name, city, country, category_code)| Merchant {
        name,
        city,
        country,
        category_code,
    })
}

pub fn submission() -> BoxedStrategy<Submission> {
    let key = (text(), any::<[u8; 32]>()).prop_map(|(key, fingerprint)| IdempotencyKey { key, fingerprint });
    (any::<u128>(), command(), option::of(key))
        .prop_map(|(tenant, command, idempotency)| Submission {
            request: Request { tenant: TenantId(tenant), command },
            idempotency,
        })
        .boxed()
}

/// Field names and messages the ledger's errors carry (any other text does not decode).
pub const PARAMS: [&str; 12] = [
    "amount",
    "expires_in_seconds",
    "payer_account",
    "payee_account",
    "overdraft_limit",
    "payment",
    "currency",
    "id",
    "limits.max_payment",
    "limits.daily_outflow",
    "limits.velocity.count",
    "limits.velocity.window_seconds",
];
pub const MESSAGES: [&str; 10] = [
    "amount must equal the quote's source_amount",
    "a cross-currency payment is captured in full: leave amount out",
    "refunds of cross-currency payments are not supported yet",
    "a limit must be between 0 and 9223372036854775807",
    "limits.velocity.count must be between 1 and 10000",
    "limits.velocity.window_seconds must be between 1 and 86400",
    "amount must be between 1 and 9223372036854775807",
    "amount must be greater than zero",
    "expires_in_seconds must be between 1 and 31622400 (366 days)",
    "overdraft_limit must be at most 9223372036854775807",
];

pub fn command_error() -> BoxedStrategy<CommandError> {
    let param = proptest::sample::select(PARAMS.to_vec());
    let message = proptest::sample::select(MESSAGES.to_vec());
    prop_oneof![
        param.clone().prop_map(|param| CommandError::AccountNotFound { param }),
        param.clone().prop_map(|param| CommandError::CurrencyMismatch { param }),
        Just(CommandError::SameAccount),
        Just(CommandError::ReferenceTaken),
        Just(CommandError::AlreadyExists),
        Just(CommandError::PaymentNotFound),
        payment_status().prop_map(|status| CommandError::UnexpectedState { status }),
        any::<u64>().prop_map(|max| CommandError::AmountTooLarge { max }),
        (param, message).prop_map(|(param, message)| CommandError::InvalidField { param, message }),
        result_code().prop_map(CommandError::Rejected),
        Just(CommandError::QuoteNotFound),
        Just(CommandError::QuoteExpired),
        limit_breach().prop_map(CommandError::LimitExceeded),
        Just(CommandError::AccountNotEmpty),
        Just(CommandError::WindowEmpty),
        Just(CommandError::PayerRequired),
        Just(CommandError::PayerMismatch),
    ]
    .boxed()
}

fn account() -> BoxedStrategy<Account> {
    let balances = (counter(), counter(), counter(), counter()).prop_map(
        |(debits_posted, credits_posted, debits_pending, credits_pending)| Balances {
            debits_posted,
            credits_posted,
            debits_pending,
            credits_pending,
        },
    );
    (
        account_id(),
        any::<u128>(),
        currency(),
        overdraft(),
        option::of(text()),
        option::of(text()),
        balances,
        any::<u64>(),
        (status(), limits()),
    )
        .prop_map(|(id, tenant, currency, overdraft, reference, metadata, balances, created_at, (status, limits))| {
            Account {
                id,
                tenant: TenantId(tenant),
                currency,
                overdraft,
                reference,
                metadata,
                balances,
                created_at,
                status,
                limits,
            }
        })
        .boxed()
}

fn transfer() -> BoxedStrategy<Transfer> {
    let kind = prop_oneof![
        Just(TransferKind::Single),
        Just(TransferKind::Pending),
        Just(TransferKind::PostPending),
        Just(TransferKind::VoidPending),
        Just(TransferKind::ExpirePending),
    ];
    (
        transfer_id(),
        any::<u128>(),
        account_id(),
        account_id(),
        any::<u64>(),
        currency(),
        kind,
        option::of(transfer_id()),
        option::of(any::<u64>()),
        any::<u64>(),
    )
        .prop_map(
            |(id, tenant, debit_account, credit_account, amount, currency, kind, pending_id, expires_at, timestamp)| {
                Transfer {
                    id,
                    tenant: TenantId(tenant),
                    debit_account,
                    credit_account,
                    amount,
                    currency,
                    kind,
                    pending_id,
                    expires_at,
                    timestamp,
                }
            },
        )
        .boxed()
}

/// A rate as the ledger parses it: at most 12 significant digits and 12 decimals.
fn rate() -> impl Strategy<Value = Rate> {
    (1u64..1_000_000_000_000, 0usize..=12).prop_map(|(mantissa, scale)| {
        let digits = format!("{mantissa:0>13}");
        let (whole, fraction) = digits.split_at(13 - scale);
        Rate::parse(&format!("{whole}.{fraction}0")).unwrap()
    })
}

fn payment_fx() -> impl Strategy<Value = PaymentFx> {
    (any::<u128>(), rate(), currency(), 0..=AMOUNT_MAX, 0..=AMOUNT_MAX).prop_map(
        |(quote, rate, target_currency, target_amount, fee)| PaymentFx {
            quote: QuoteId(quote),
            rate,
            target_currency,
            target_amount,
            fee,
        },
    )
}

fn payment() -> BoxedStrategy<Payment> {
    let head = (
        payment_id(),
        any::<u128>(),
        option::of(account_id()),
        account_id(),
        any::<u64>(),
        currency(),
        capture_method(),
    );
    let tail = (
        payment_status(),
        option::of(text()),
        option::of(result_code()),
        any::<u64>(),
        any::<u64>(),
        (any::<u64>(), any::<u64>(), any::<u64>()),
        option::of(transfer_id()),
        option::of(payment_fx()),
        option::of(merchant()),
    );
    (head, tail)
        .prop_map(
            |(
                (id, tenant, payer, payee, amount, currency, capture_method),
                (status, description, failure_code, amount_captured, amount_refunded, times, transfer, fx, merchant),
            )| Payment {
                id,
                tenant: TenantId(tenant),
                payer,
                payee,
                amount,
                currency,
                capture_method,
                status,
                description,
                failure_code,
                amount_captured,
                amount_refunded,
                expires_at: times.0,
                created_at: times.1,
                updated_at: times.2,
                transfer,
                fx,
                merchant,
            },
        )
        .boxed()
}

fn refund() -> BoxedStrategy<Refund> {
    let status = prop_oneof![Just(RefundStatus::Succeeded), Just(RefundStatus::Failed)];
    (
        any::<u128>(),
        any::<u128>(),
        payment_id(),
        any::<u64>(),
        currency(),
        status,
        option::of(result_code()),
        transfer_id(),
        any::<u64>(),
        option::of(".{0,40}"),
    )
        .prop_map(|(id, tenant, payment, amount, currency, status, failure_code, transfer, created_at, reason)| {
            Refund {
                id: RefundId(id),
                tenant: TenantId(tenant),
                payment,
                amount,
                currency,
                status,
                failure_code,
                transfer,
                created_at,
                reason,
            }
        })
        .boxed()
}

fn signed() -> impl Strategy<Value = i64> {
    prop_oneof![Just(0), Just(i64::MAX), Just(-i64::MAX), -i64::MAX..=i64::MAX]
}

fn clearing_window() -> BoxedStrategy<ClearingWindow> {
    let position = (account_id(), signed(), counter(), counter(), signed(), signed()).prop_map(
        |(account, opening, debits, credits, net, closing)| ClearingPosition {
            account,
            opening,
            debits,
            credits,
            net,
            closing,
        },
    );
    (any::<u128>(), any::<u128>(), currency(), any::<u64>(), any::<u64>(), any::<u64>(), counter(), vec(position, 0..4))
        .prop_map(|(id, tenant, currency, sequence, opened_at, closed_at, gross_volume, positions)| ClearingWindow {
            id: ClearingWindowId(id),
            tenant: TenantId(tenant),
            currency,
            sequence,
            opened_at,
            closed_at,
            gross_volume,
            positions,
        })
        .boxed()
}

pub fn outcome() -> BoxedStrategy<Outcome> {
    prop_oneof![
        prop_oneof![account().prop_map(Ok), command_error().prop_map(Err)].prop_map(Outcome::Account),
        (result_code(), option::of(transfer()), option::of(limit_breach()))
            .prop_map(|(code, transfer, limit)| Outcome::Transfer { code, transfer, limit }),
        vec(result_code(), 0..16).prop_map(Outcome::Transfers),
        prop_oneof![payment().prop_map(Ok), command_error().prop_map(Err)].prop_map(Outcome::Payment),
        prop_oneof![(refund(), payment()).prop_map(Ok), command_error().prop_map(Err)].prop_map(Outcome::Refund),
        Just(Outcome::BatchEnded),
        prop_oneof![account().prop_map(Ok), command_error().prop_map(Err)].prop_map(Outcome::AccountUpdated),
        prop_oneof![clearing_window().prop_map(Ok), command_error().prop_map(Err)].prop_map(Outcome::ClearingWindow),
    ]
    .boxed()
}

pub fn reply() -> BoxedStrategy<Result<Reply, EngineError>> {
    prop_oneof![
        outcome().prop_map(|outcome| Ok(Reply::Done(outcome))),
        (any::<u16>(), vec(any::<u8>(), 0..64)).prop_map(|(status, body)| Ok(Reply::Replay { status, body })),
        Just(Ok(Reply::KeyReused)),
        Just(Err(EngineError::Overloaded)),
        text().prop_map(|reason| Err(EngineError::Unavailable(reason))),
        Just(Err(EngineError::StorageFull)),
    ]
    .boxed()
}

/// A small deterministic generator (xorshift), for realistic bulk messages without a seed
/// to carry around.
pub struct Numbers(u64);

impl Numbers {
    pub fn new(seed: u64) -> Numbers {
        Numbers(seed | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A server-made id: this millisecond, then 80 random bits.
    pub fn id(&mut self, unix_ms: u64) -> u128 {
        time_ordered(unix_ms, u128::from(self.next()) << 64 | u128::from(self.next()))
    }
}

/// 2026-12-01, in milliseconds since the epoch.
pub const NOW_MS: u64 = 1_796_083_200_000;

/// A bulk `POST /v1/transfers` as the server submits it: `BATCH_EVENTS_MAX` single-phase
/// transfers with server-made ids between accounts opened over the past year, amounts up to
/// 10 000.00, and an `Idempotency-Key`.
pub fn bulk_transfers() -> Submission {
    let mut numbers = Numbers::new(7);
    let eur = Currency::from_code("EUR");
    let transfers = (0..BATCH_EVENTS_MAX)
        .map(|_| {
            let opened = NOW_MS - numbers.next() % (365 * 86_400_000);
            NewTransfer {
                id: TransferId(numbers.id(NOW_MS)),
                linked: false,
                op: TransferOp::Move {
                    debit_account: AccountId(numbers.id(opened)),
                    credit_account: AccountId(numbers.id(opened)),
                    amount: 1 + numbers.next() % 1_000_000,
                    currency: eur.unwrap_or_else(|| unreachable!("EUR is in the table")),
                    hold: None,
                },
            }
        })
        .collect();
    Submission {
        request: Request { tenant: TenantId(numbers.id(NOW_MS - 86_400_000)), command: Command::Transfers(transfers) },
        idempotency: Some(IdempotencyKey {
            key: "6f1f1c3e-2a4b-4c8e-9d3f-8b1a2c3d4e5f".into(),
            fingerprint: [0xab; 32],
        }),
    }
}

/// The largest bulk submission: every field at its widest (a linked hold with a timeout, ids
/// and amounts of all ones, the longest key the API takes).
pub fn widest_bulk_transfers() -> Submission {
    let transfer = NewTransfer {
        id: TransferId(u128::MAX),
        linked: true,
        op: TransferOp::Move {
            debit_account: AccountId(u128::MAX),
            credit_account: AccountId(u128::MAX - 1),
            amount: u64::MAX,
            currency: Currency::all().last().unwrap_or_else(|| unreachable!("the table is not empty")),
            hold: Some(Hold { timeout_seconds: Some(u64::MAX) }),
        },
    };
    Submission {
        request: Request { tenant: TenantId(u128::MAX), command: Command::Transfers(vec![transfer; BATCH_EVENTS_MAX]) },
        idempotency: Some(IdempotencyKey { key: "k".repeat(255), fingerprint: [0xff; 32] }),
    }
}

/// A chunk of a batch's items as the runner submits it: `BATCH_EVENTS_MAX` items of one
/// payer to many payees, amounts up to 5 000.00.
pub fn bulk_items() -> Submission {
    let mut numbers = Numbers::new(11);
    let payer = AccountId(numbers.id(NOW_MS - 200 * 86_400_000));
    let usd = Currency::from_code("USD").unwrap_or_else(|| unreachable!("USD is in the table"));
    let items = (0..BATCH_EVENTS_MAX as u64)
        .map(|i| {
            let opened = NOW_MS - numbers.next() % (365 * 86_400_000);
            BatchItem {
                index: 1_000_000 + i,
                payer,
                payee: AccountId(numbers.id(opened)),
                amount: 1 + numbers.next() % 500_000,
                currency: usd,
                fx: None,
                refund: None,
            }
        })
        .collect();
    Submission {
        request: Request {
            tenant: TenantId(numbers.id(NOW_MS)),
            command: Command::BatchItems { batch: BatchId(numbers.id(NOW_MS)), step: BatchStep::Pay, items },
        },
        idempotency: None,
    }
}

/// The NATS server (with JetStream) the queue tests use.
pub const NATS: &str = "127.0.0.1:4222";

/// Whether NATS answers on [`NATS`]; if not, says loudly that `tests` did not run, and fails
/// under `CI=true`.
pub fn nats_is_up(tests: &str) -> bool {
    let up = std::net::TcpStream::connect_timeout(&NATS.parse().unwrap(), std::time::Duration::from_secs(2)).is_ok();
    if !up {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "CI=true: NATS with JetStream is required on {NATS}");
        eprintln!("\n*** SKIPPED: no NATS on {NATS}; {tests} did not run ***\n");
    }
    up
}

/// A queue of one partition on [`NATS`] whose stream no other test uses (`test`, the process
/// and the time in its name); remove it with [`delete_stream`].
pub fn queue_config(test: &str) -> paycore_cluster::QueueConfig {
    let unique = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let mut config = paycore_cluster::QueueConfig::new(format!("nats://{NATS}"), 1);
    config.name = format!("{test}{}{unique}", std::process::id());
    config
}

/// Removes the stream of `config`.
pub async fn delete_stream(config: &paycore_cluster::QueueConfig) {
    let client = async_nats::connect(NATS).await.unwrap();
    let _ = async_nats::jetstream::new(client).delete_stream(config.name.to_uppercase()).await;
}

/// A command to send: tenant 7 opens the EUR account `id`.
pub fn account_creation(id: u128) -> Submission {
    Submission {
        request: Request {
            tenant: TenantId(7),
            command: Command::CreateAccount(NewAccount {
                id: AccountId(id),
                currency: Currency::from_code("EUR").unwrap(),
                overdraft: Overdraft::Unlimited,
                reference: None,
                metadata: None,
            }),
        },
        idempotency: None,
    }
}
