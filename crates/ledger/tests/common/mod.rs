//! The one helper behind the ledger's data-driven tests: a simulated engine (state + a map
//! model of the store, with prefetch and recovery) and a small line-based script language.
//!
//! A script is a list of lines; `#` starts a comment.
//!
//! ```text
//! account a USD                      # limit 0, tenant 1
//! account b USD limit=100 tenant=2 ref=IBAN1
//! account w USD unlimited
//! move 1 w a 500 => ok               # one request, one batch
//! move 2 a b 10 EUR hold=60 linked as=2 => currency_mismatch
//! post 3 2 [AMOUNT] => ok            # post hold 2 (all, or AMOUNT)
//! void 4 2 => pending_already_posted
//! [                                  # one Transfers request with several transfers
//!   move 5 w a 1 linked => ok
//!   move 6 a b 9 => ok
//! ]
//! {                                  # several requests in one execute
//!   confirm P => succeeded
//!   move 7 w a 1 => ok
//! }
//! pay P a b 100 [manual] [expires=60] [as=2] => requires_confirmation
//! pay P - b 100 => requires_confirmation   # no payer: scan to pay
//! confirm P => succeeded | failed(insufficient_funds) | err:unexpected_state(succeeded)
//! scan P a => succeeded | err:rejected(insufficient_funds) | err:payer_required
//! capture P [AMOUNT] => succeeded
//! cancel P => cancelled
//! refund P R [AMOUNT] => succeeded | failed(insufficient_funds) | err:amount_too_large(40)
//! wait 60                            # advance the clock 60 s and run an empty batch
//! skip 60                            # advance the clock 60 s, nothing else
//! = a:500 b:-100/20/0                # posted [/pending debits/pending credits]; rest 0
//! payment P succeeded captured=100 refunded=40
//! hold 2 posted
//! restart                            # State::recover from the store model
//! update a status=frozen max=500 daily=1000 velocity=3/60 actor=key_1 => ok
//! update a daily=none => ok           # `none` removes a limit; absent keeps it
//! ```
//!
//! After every batch: the changes go to the store model, `check_invariants` must hold and no
//! limited account may have a negative available balance. At the end the script is replayed on
//! a fresh state (same outcomes) and the state is recovered from the store (same balances).

#![allow(dead_code)]

use paycore_ledger::*;
use std::collections::{BTreeMap, HashMap};

pub const SECOND: u64 = 1_000_000_000;
pub const START: u64 = 1_700_000_000 * SECOND;

pub fn usd() -> Currency {
    Currency::from_code("USD").unwrap()
}

pub fn eur() -> Currency {
    Currency::from_code("EUR").unwrap()
}

/// An unlinked move of `amount` minor units of `currency` from `debit` to `credit`, held when
/// `hold` is given.
pub fn move_of(
    id: u128,
    debit: u128,
    credit: u128,
    amount: u64,
    currency: Currency,
    hold: Option<Hold>,
) -> NewTransfer {
    NewTransfer {
        id: TransferId(id),
        linked: false,
        op: TransferOp::Move {
            debit_account: AccountId(debit),
            credit_account: AccountId(credit),
            amount,
            currency,
            hold,
        },
    }
}

/// What the store would hold after applying every `ChangeSet`, as plain maps.
#[derive(Clone, Default, Debug)]
pub struct Store {
    pub accounts: BTreeMap<AccountId, Account>,
    pub transfers: BTreeMap<TransferId, Transfer>,
    pub holds: BTreeMap<TransferId, HoldRecord>,
    pub payments: BTreeMap<PaymentId, Payment>,
    pub refunds: Vec<Refund>,
    pub last_timestamp: u64,
    /// Every account's balances rebuilt from the transfers alone (`Transfer::replay`), as a
    /// store that writes balances less often than transfers rebuilds them.
    pub replayed: HashMap<AccountId, Balances>,
}

impl Store {
    pub fn apply(&mut self, changes: &ChangeSet) {
        for t in &changes.transfers {
            let held = t.pending_id.map_or(0, |p| {
                let hold = self.transfers.get(&p).or_else(|| changes.transfers.iter().find(|h| h.id == p));
                hold.unwrap_or_else(|| panic!("{} resolves unknown hold {p}", t.id)).amount
            });
            let mut debit = self.replayed.get(&t.debit_account).copied().unwrap_or_default();
            let mut credit = self.replayed.get(&t.credit_account).copied().unwrap_or_default();
            t.replay(held, &mut debit, &mut credit).unwrap_or_else(|| panic!("{} cannot be replayed", t.id));
            self.replayed.insert(t.debit_account, debit);
            self.replayed.insert(t.credit_account, credit);
        }
        for (id, balances) in &changes.balances {
            assert_eq!(self.replayed.get(id).copied().unwrap_or_default(), *balances, "replayed balances of {id}");
        }
        for account in &changes.new_accounts {
            assert!(
                self.accounts.insert(account.id, account.clone()).is_none(),
                "account {} written twice",
                account.id
            );
        }
        for (id, balances) in &changes.balances {
            self.accounts.get_mut(id).unwrap_or_else(|| panic!("balances of unknown account {id}")).balances =
                *balances;
        }
        for t in &changes.transfers {
            assert!(t.timestamp > self.last_timestamp, "timestamps must increase across batches");
            assert!(
                self.transfers.insert(t.id, t.clone()).is_none(),
                "transfer {} written twice (transfers are immutable)",
                t.id
            );
        }
        for w in changes.transfers.windows(2) {
            assert!(w[0].timestamp < w[1].timestamp, "timestamps must increase within a batch");
        }
        for h in &changes.holds {
            self.holds.insert(h.transfer.id, h.clone());
        }
        for p in &changes.payments {
            self.payments.insert(p.id, p.clone());
        }
        for a in &changes.updated_accounts {
            let stored = self.accounts.get_mut(&a.id).unwrap_or_else(|| panic!("update of unknown account {}", a.id));
            stored.status = a.status;
            stored.limits = a.limits;
        }
        assert_eq!(changes.updated_accounts.len(), changes.audit.len(), "one audit row per update");
        self.refunds.extend(changes.refunds.iter().cloned());
        assert!(changes.last_timestamp >= self.last_timestamp);
        self.last_timestamp = changes.last_timestamp;
    }

    pub fn recover(&self) -> State {
        let mut state = State::recover(
            self.accounts.values().cloned(),
            self.holds.values().filter(|h| h.status == HoldStatus::Pending).cloned(),
            self.payments.values().filter(|p| p.status.is_open()).cloned(),
            self.last_timestamp,
        );
        let wanted = state.history_wanted();
        state.insert_debit_history(self.debits(&wanted));
        state.rebuild_limit_history();
        state
    }

    /// The stored transfers a prefetch's `debits_of` asks for.
    pub fn debits(&self, wanted: &Prefetch) -> Vec<Transfer> {
        self.transfers
            .values()
            .filter(|t| wanted.debits_of.contains(&t.debit_account) && t.timestamp >= wanted.debits_since)
            .cloned()
            .collect()
    }
}

/// A simulated engine: the state, the store model, the clock.
pub struct Sim {
    pub state: State,
    pub store: Store,
    pub now: u64,
    /// Every change set, in order.
    pub history: Vec<ChangeSet>,
    /// Load from the store what `prefetch` asks for (as the engine does).
    pub prefetch: bool,
}

impl Default for Sim {
    fn default() -> Sim {
        Sim { state: State::default(), store: Store::default(), now: START, history: Vec::new(), prefetch: true }
    }
}

impl Sim {
    /// One engine batch: prefetch, execute, take the changes, commit them to the store model,
    /// check the invariants.
    pub fn run(&mut self, requests: &[Request]) -> Vec<Outcome> {
        if self.prefetch {
            let wanted = self.state.prefetch(requests);
            let store = &self.store;
            self.state.insert_prefetched(
                wanted.transfers.iter().filter_map(|id| store.transfers.get(id)).cloned().collect::<Vec<_>>(),
                wanted.holds.iter().filter_map(|id| store.holds.get(id)).cloned().collect::<Vec<_>>(),
                wanted.payments.iter().filter_map(|id| store.payments.get(id)).cloned().collect::<Vec<_>>(),
            );
            self.state.insert_debit_history(store.debits(&wanted));
        }
        let outcomes = self.state.execute(requests, self.now);
        assert_eq!(outcomes.len(), requests.len());
        let changes = self.state.take_changes();
        self.store.apply(&changes);
        self.history.push(changes);
        self.check();
        outcomes
    }

    pub fn check(&self) {
        if let Err(e) = self.state.check_invariants() {
            panic!("invariant broken: {e}");
        }
        for a in self.state.accounts() {
            if let Some(available) = a.balances.available(a.overdraft) {
                assert!(available >= 0, "{} is past its overdraft limit: available {available}", a.id);
            }
            assert_eq!(self.store.accounts.get(&a.id), Some(a), "store and memory disagree on {}", a.id);
        }
        assert_eq!(self.store.accounts.len(), self.state.accounts().count());
    }

    /// Advances the clock and runs an empty batch (expiries).
    pub fn wait(&mut self, seconds: u64) {
        self.now += seconds * SECOND;
        self.run(&[]);
    }

    pub fn restart(&mut self) {
        self.state = self.store.recover();
    }

    pub fn balances(&self, id: AccountId) -> Balances {
        self.state.account(id).unwrap_or_else(|| panic!("no account {id}")).balances
    }
}

/// Outcomes as short text, the way scripts write them.
pub fn render(outcome: &Outcome) -> Vec<String> {
    match outcome {
        Outcome::Transfers(codes) => codes.iter().map(|c| c.as_str().to_owned()).collect(),
        Outcome::Transfer { code, .. } => vec![code.as_str().to_owned()],
        Outcome::Account(r) => vec![match r {
            Ok(_) => "ok".to_owned(),
            Err(e) => render_error(e),
        }],
        Outcome::Payment(r) => vec![match r {
            Ok(p) => with_code(p.status.as_str(), p.failure_code),
            Err(e) => render_error(e),
        }],
        Outcome::Refund(r) => vec![match r {
            Ok((refund, _)) => with_code(refund.status.as_str(), refund.failure_code),
            Err(e) => render_error(e),
        }],
        Outcome::BatchEnded => vec!["batch_ended".to_owned()],
        Outcome::AccountUpdated(r) => vec![match r {
            Ok(_) => "ok".to_owned(),
            Err(e) => render_error(e),
        }],
        Outcome::ClearingWindow(r) => vec![match r {
            Ok(w) => format!("closed({})", w.sequence),
            Err(e) => render_error(e),
        }],
    }
}

fn with_code(status: &str, code: Option<ResultCode>) -> String {
    match code {
        Some(c) => format!("{status}({})", c.as_str()),
        None => status.to_owned(),
    }
}

pub fn render_error(e: &CommandError) -> String {
    match e {
        CommandError::AccountNotFound { param } => format!("err:account_not_found({param})"),
        CommandError::CurrencyMismatch { param } => format!("err:currency_mismatch({param})"),
        CommandError::SameAccount => "err:same_account".to_owned(),
        CommandError::ReferenceTaken => "err:reference_taken".to_owned(),
        CommandError::AlreadyExists => "err:already_exists".to_owned(),
        CommandError::PaymentNotFound => "err:payment_not_found".to_owned(),
        CommandError::UnexpectedState { status } => format!("err:unexpected_state({})", status.as_str()),
        CommandError::AmountTooLarge { max } => format!("err:amount_too_large({max})"),
        CommandError::InvalidField { param, .. } => format!("err:invalid_field({param})"),
        CommandError::Rejected(code) => format!("err:rejected({})", code.as_str()),
        CommandError::QuoteNotFound => "err:quote_not_found".to_owned(),
        CommandError::QuoteExpired => "err:quote_expired".to_owned(),
        CommandError::LimitExceeded(b) => {
            format!("err:limit_exceeded({},{},{},{})", b.limit.as_str(), b.value, b.requested, b.remaining)
        }
        CommandError::AccountNotEmpty => "err:account_not_empty".to_owned(),
        CommandError::WindowEmpty => "err:window_empty".to_owned(),
        CommandError::PayerRequired => "err:payer_required".to_owned(),
        CommandError::PayerMismatch => "err:payer_mismatch".to_owned(),
    }
}

/// Names in scripts, mapped to ids.
#[derive(Default)]
struct Names {
    accounts: HashMap<String, AccountId>,
    currencies: HashMap<AccountId, Currency>,
    payments: HashMap<String, PaymentId>,
    refunds: HashMap<String, RefundId>,
}

impl Names {
    fn account(&mut self, name: &str) -> AccountId {
        let next = 0xacc0_0000 + self.accounts.len() as u128;
        *self.accounts.entry(name.to_owned()).or_insert(AccountId(next))
    }
    fn payment(&mut self, name: &str) -> PaymentId {
        let next = 0xbabe_0000 + self.payments.len() as u128;
        *self.payments.entry(name.to_owned()).or_insert(PaymentId(next))
    }
    fn refund(&mut self, name: &str) -> RefundId {
        let next = 0xdead_0000 + self.refunds.len() as u128;
        *self.refunds.entry(name.to_owned()).or_insert(RefundId(next))
    }
}

fn tenant(n: u128) -> TenantId {
    TenantId(n)
}

fn number(word: &str, line: &str) -> u64 {
    word.parse().unwrap_or_else(|_| panic!("not a number: {word:?} in {line:?}"))
}

/// One line that makes a request, with what it expects.
struct Item {
    request: Request,
    expected: Vec<String>,
    line: String,
}

enum Step {
    Batch(Vec<Item>),
    Wait(u64),
    Advance(u64),
    Balances(Vec<(AccountId, String, Balances)>, String),
    Payment(PaymentId, String, Vec<(String, u64)>, String),
    Hold(TransferId, String, String),
    Restart,
}

struct Parser {
    names: Names,
    steps: Vec<Step>,
}

impl Parser {
    fn parse(script: &str) -> Vec<Step> {
        let mut p = Parser { names: Names::default(), steps: Vec::new() };
        let mut batch: Option<Vec<Item>> = None;
        let mut group: Option<(TenantId, Vec<NewTransfer>, Vec<String>, String)> = None;
        for raw in script.lines() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let (body, expected) = match line.split_once("=>") {
                Some((b, e)) => (b.trim(), Some(e.trim().to_owned())),
                None => (line, None),
            };
            let words: Vec<&str> = body.split_whitespace().collect();
            let push = |p: &mut Parser, batch: &mut Option<Vec<Item>>, item: Item| match batch {
                Some(items) => items.push(item),
                None => p.steps.push(Step::Batch(vec![item])),
            };
            match words[0] {
                "{" => batch = Some(Vec::new()),
                "}" => p.steps.push(Step::Batch(batch.take().expect("} without {"))),
                "[" => group = Some((tenant(1), Vec::new(), Vec::new(), line.to_owned())),
                "]" => {
                    let (t, transfers, expected, l) = group.take().expect("] without [");
                    let item = Item {
                        request: Request { tenant: t, command: Command::Transfers(transfers) },
                        expected,
                        line: l,
                    };
                    push(&mut p, &mut batch, item);
                }
                "move" | "post" | "void" => {
                    let (t, transfer) = p.transfer(&words, line);
                    let expected = expected.unwrap_or_else(|| panic!("no expected result: {line}"));
                    match &mut group {
                        Some((gt, transfers, exp, _)) => {
                            *gt = t;
                            transfers.push(transfer);
                            exp.push(expected);
                        }
                        None => {
                            let request = Request { tenant: t, command: Command::Transfers(vec![transfer]) };
                            push(&mut p, &mut batch, Item { request, expected: vec![expected], line: line.to_owned() });
                        }
                    }
                }
                "account" | "pay" | "confirm" | "scan" | "capture" | "cancel" | "refund" | "update" => {
                    let request = p.command(&words, line);
                    let expected = expected.unwrap_or_else(|| match words[0] {
                        "account" => "ok".to_owned(),
                        _ => panic!("no expected result: {line}"),
                    });
                    push(&mut p, &mut batch, Item { request, expected: vec![expected], line: line.to_owned() });
                }
                "wait" => p.steps.push(Step::Wait(number(words[1], line))),
                "skip" => p.steps.push(Step::Advance(number(words[1], line))),
                "restart" => p.steps.push(Step::Restart),
                "=" => {
                    let mut checks = Vec::new();
                    for w in &words[1..] {
                        let (name, values) = w.split_once(':').unwrap_or_else(|| panic!("want name:posted in {line}"));
                        let v: Vec<i64> =
                            values.split('/').map(|x| x.parse().unwrap_or_else(|_| panic!("{x} in {line}"))).collect();
                        let posted = v[0];
                        let (dp, cp) = (v.get(1).copied().unwrap_or(0), v.get(2).copied().unwrap_or(0));
                        // Only the difference is checked for posted; the pending counters exactly.
                        let b = Balances {
                            debits_posted: if posted < 0 { posted.unsigned_abs() } else { 0 },
                            credits_posted: if posted > 0 { posted.unsigned_abs() } else { 0 },
                            debits_pending: dp.unsigned_abs(),
                            credits_pending: cp.unsigned_abs(),
                        };
                        checks.push((p.names.account(name), name.to_owned(), b));
                    }
                    p.steps.push(Step::Balances(checks, line.to_owned()));
                }
                "payment" => {
                    let id = p.names.payment(words[1]);
                    let fields = words[3..]
                        .iter()
                        .map(|w| {
                            let (k, v) = w.split_once('=').unwrap_or_else(|| panic!("{w} in {line}"));
                            (k.to_owned(), number(v, line))
                        })
                        .collect();
                    p.steps.push(Step::Payment(id, words[2].to_owned(), fields, line.to_owned()));
                }
                "hold" => {
                    let id = TransferId(u128::from(number(words[1], line)));
                    p.steps.push(Step::Hold(id, words[2].to_owned(), line.to_owned()));
                }
                other => panic!("unknown line kind {other:?}: {line}"),
            }
        }
        assert!(batch.is_none() && group.is_none(), "unclosed {{ or [");
        p.steps
    }

    /// Options after the positional words: `hold`, `hold=S`, `linked`, `as=T`, a currency.
    fn transfer(&mut self, words: &[&str], line: &str) -> (TenantId, NewTransfer) {
        let id = TransferId(u128::from(number(words[1], line)));
        let mut t = tenant(1);
        let mut linked = false;
        let mut hold = None;
        let mut currency = None;
        let mut positional = Vec::new();
        for w in &words[2..] {
            match *w {
                "linked" => linked = true,
                "hold" => hold = Some(Hold { timeout_seconds: None }),
                _ if w.starts_with("hold=") => hold = Some(Hold { timeout_seconds: Some(number(&w[5..], line)) }),
                _ if w.starts_with("as=") => t = tenant(u128::from(number(&w[3..], line))),
                _ if w.len() == 3 && w.chars().all(|c| c.is_ascii_uppercase()) => {
                    currency = Some(Currency::from_code(w).unwrap_or_else(|| panic!("currency {w}")))
                }
                _ => positional.push(*w),
            }
        }
        let op = match words[0] {
            "move" => {
                let debit = self.names.account(positional[0]);
                let credit = self.names.account(positional[1]);
                let currency = currency.or_else(|| self.names.currencies.get(&debit).copied()).unwrap_or_else(usd);
                TransferOp::Move {
                    debit_account: debit,
                    credit_account: credit,
                    amount: number(positional[2], line),
                    currency,
                    hold,
                }
            }
            "post" => TransferOp::Post {
                pending_id: TransferId(u128::from(number(positional[0], line))),
                amount: positional.get(1).map(|a| number(a, line)),
            },
            _ => TransferOp::Void { pending_id: TransferId(u128::from(number(positional[0], line))) },
        };
        (t, NewTransfer { id, linked, op })
    }

    fn command(&mut self, words: &[&str], line: &str) -> Request {
        let mut t = tenant(1);
        let mut options: HashMap<&str, &str> = HashMap::new();
        let mut flags = Vec::new();
        let mut positional = Vec::new();
        for w in &words[1..] {
            match w.split_once('=') {
                Some(("as", v)) => t = tenant(u128::from(number(v, line))),
                Some((k, v)) => {
                    options.insert(k, v);
                }
                None if *w == "manual" || *w == "unlimited" => flags.push(*w),
                None => positional.push(*w),
            }
        }
        let command = match words[0] {
            "account" => {
                let id = self.names.account(positional[0]);
                let currency = Currency::from_code(positional[1]).unwrap_or_else(|| panic!("currency in {line}"));
                self.names.currencies.insert(id, currency);
                if let Some(v) = options.get("tenant") {
                    t = tenant(u128::from(number(v, line)));
                }
                let overdraft = if flags.contains(&"unlimited") {
                    Overdraft::Unlimited
                } else {
                    Overdraft::Limit(options.get("limit").map_or(0, |v| number(v, line)))
                };
                Command::CreateAccount(NewAccount {
                    id,
                    currency,
                    overdraft,
                    reference: options.get("ref").map(|r| (*r).to_owned()),
                    metadata: None,
                })
            }
            "pay" => {
                // `-` for the payer: none (scan to pay).
                let payer = (positional[1] != "-").then(|| self.names.account(positional[1]));
                let payee = self.names.account(positional[2]);
                let currency = positional
                    .get(4)
                    .map(|c| Currency::from_code(c).unwrap_or_else(|| panic!("currency in {line}")))
                    .or_else(|| self.names.currencies.get(&payer.unwrap_or(payee)).copied())
                    .unwrap_or_else(usd);
                Command::CreatePayment(NewPayment {
                    id: self.names.payment(positional[0]),
                    payer,
                    payee,
                    amount: number(positional[3], line),
                    currency,
                    capture_method: if flags.contains(&"manual") {
                        CaptureMethod::Manual
                    } else {
                        CaptureMethod::Automatic
                    },
                    expires_in_seconds: options.get("expires").map_or(3600, |v| number(v, line)),
                    description: None,
                    fx_quote: None,
                    merchant: None,
                })
            }
            "confirm" => Command::ConfirmPayment(self.names.payment(positional[0])),
            "scan" => Command::ScanPayment {
                payment: self.names.payment(positional[0]),
                payer: self.names.account(positional[1]),
            },
            "cancel" => Command::CancelPayment(self.names.payment(positional[0])),
            "capture" => Command::CapturePayment {
                payment: self.names.payment(positional[0]),
                amount: positional.get(1).map(|a| number(a, line)),
            },
            "refund" => Command::RefundPayment {
                payment: self.names.payment(positional[0]),
                refund: self.names.refund(positional[1]),
                amount: positional.get(2).map(|a| number(a, line)),
                reason: None,
            },
            "update" => {
                let change = |key: &str| match options.get(key) {
                    None => Change::Keep,
                    Some(&"none") => Change::Remove,
                    Some(v) => Change::Set(number(v, line)),
                };
                Command::UpdateAccount {
                    account: self.names.account(positional[0]),
                    update: AccountUpdate {
                        status: options
                            .get("status")
                            .map(|s| AccountStatus::parse(s).unwrap_or_else(|| panic!("status in {line}"))),
                        max_payment: change("max"),
                        daily_outflow: change("daily"),
                        velocity: match options.get("velocity") {
                            None => Change::Keep,
                            Some(&"none") => Change::Remove,
                            Some(v) => {
                                let (count, window) = v.split_once('/').unwrap_or_else(|| panic!("velocity in {line}"));
                                Change::Set(Velocity {
                                    count: u32::try_from(number(count, line)).unwrap_or(u32::MAX),
                                    window_seconds: number(window, line),
                                })
                            }
                        },
                    },
                    actor: options.get("actor").map_or("key_test", |a| a).to_owned(),
                }
            }
            other => panic!("unknown command {other}"),
        };
        Request { tenant: t, command }
    }
}

fn same_posted(actual: &Balances, expected: &Balances) -> bool {
    actual.posted() == expected.posted()
        && actual.debits_pending == expected.debits_pending
        && actual.credits_pending == expected.credits_pending
}

/// Runs a script on `sim`; returns every outcome rendered, in order, for the replay check.
fn run_steps(sim: &mut Sim, steps: &[Step], check: bool) -> Vec<Vec<String>> {
    let mut all = Vec::new();
    for step in steps {
        match step {
            Step::Batch(items) => {
                let requests: Vec<Request> = items.iter().map(|i| i.request.clone()).collect();
                let outcomes = sim.run(&requests);
                for (item, outcome) in items.iter().zip(&outcomes) {
                    let got = render(outcome);
                    if check {
                        assert_eq!(got, item.expected, "\n  line: {}", item.line);
                    }
                    all.push(got);
                }
            }
            Step::Wait(seconds) => sim.wait(*seconds),
            Step::Advance(seconds) => sim.now += seconds * SECOND,
            Step::Restart => sim.restart(),
            Step::Balances(checks, line) => {
                if !check {
                    continue;
                }
                for (id, name, expected) in checks {
                    let got = sim.balances(*id);
                    assert!(
                        same_posted(&got, expected),
                        "\n  line: {line}\n  {name}: got posted {} pending {}/{}, want {} pending {}/{}",
                        got.posted(),
                        got.debits_pending,
                        got.credits_pending,
                        expected.posted(),
                        expected.debits_pending,
                        expected.credits_pending
                    );
                }
            }
            Step::Payment(id, status, fields, line) => {
                if !check {
                    continue;
                }
                let p = sim
                    .state
                    .payment(*id)
                    .or_else(|| sim.store.payments.get(id))
                    .unwrap_or_else(|| panic!("no payment: {line}"));
                assert_eq!(p.status.as_str(), status, "\n  line: {line}");
                for (k, v) in fields {
                    let got = match k.as_str() {
                        "captured" => p.amount_captured,
                        "refunded" => p.amount_refunded,
                        "amount" => p.amount,
                        other => panic!("unknown payment field {other}"),
                    };
                    assert_eq!(got, *v, "\n  line: {line} ({k})");
                }
            }
            Step::Hold(id, status, line) => {
                if !check {
                    continue;
                }
                let h = sim.store.holds.get(id).unwrap_or_else(|| panic!("no hold: {line}"));
                assert_eq!(h.status.as_str(), status, "\n  line: {line}");
                if let Some(in_memory) = sim.state.hold(*id) {
                    assert_eq!(in_memory, h, "\n  line: {line}: memory and store disagree");
                }
            }
        }
    }
    all
}

/// Runs a script, checking every expected result; then replays it on a fresh state (the same
/// outcomes: determinism) and recovers a state from the store (the same balances).
pub fn check(script: &str) -> Sim {
    let steps = Parser::parse(script);
    let mut sim = Sim::default();
    let first = run_steps(&mut sim, &steps, true);
    let mut replay = Sim::default();
    let second = run_steps(&mut replay, &steps, false);
    assert_eq!(first, second, "a replay gave other outcomes");
    assert_same_state(&sim.state, &replay.state);
    assert_same_state(&sim.state, &sim.store.recover());
    sim
}

/// Same accounts with the same balances, same open holds, same next deadline.
pub fn assert_same_state(a: &State, b: &State) {
    let mut left: Vec<&Account> = a.accounts().collect();
    let mut right: Vec<&Account> = b.accounts().collect();
    left.sort_by_key(|x| x.id);
    right.sort_by_key(|x| x.id);
    assert_eq!(left, right);
    for account in &left {
        let at = a.last_timestamp();
        assert_eq!(a.outflow_on(account.id, at), b.outflow_on(account.id, at), "outflow of {}", account.id);
    }
    assert_eq!(a.next_deadline(), b.next_deadline());
    assert_eq!(a.last_timestamp(), b.last_timestamp());
    b.check_invariants().unwrap();
}
