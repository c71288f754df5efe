//! The console's pages (maud: compile-time HTML, every value escaped). Each page renders the
//! JSON a `/v1` handler answered; money through [`money`](super::money).

use super::money;
use super::session::{Session, CSRF_FIELD};
use super::Action;
use axum::http::StatusCode;
use maud::{html, Markup, DOCTYPE};
use serde_json::Value;

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or("")
}

/// `minor` of the currency `code` as money.
fn amount(minor: i128, code: &str) -> String {
    money::format_code(minor, code)
}

fn json_amount(value: &Value, code: &str) -> String {
    match value.as_i64() {
        Some(minor) => amount(i128::from(minor), code),
        None => match value.as_u64() {
            Some(minor) => amount(i128::from(minor), code),
            None => "—".to_owned(),
        },
    }
}

/// The page around every console page.
fn layout(title: &str, session: Option<&Session>, main: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · paycore console" }
                link rel="stylesheet" href="/console/assets/console.css";
                @if let Some(session) = session {
                    meta name="csrf-token" content=(session.csrf);
                }
                script src="/console/assets/console.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header {
                    span.brand { "paycore console" }
                    @if let Some(session) = session {
                        nav aria-label="Console" {
                            a href="/console/accounts" { "Accounts" }
                            a href="/console/payments" { "Payments" }
                            a href="/console/batches" { "Batches" }
                            a href="/console/health" { "Health" }
                        }
                        div.who {
                            span { "Key " code { (session.key_id) } }
                            @if !session.can_write { " " span.badge id="read-only" { "read only" } }
                            form method="post" action="/console/sign-out" {
                                input type="hidden" name=(CSRF_FIELD) value=(session.csrf);
                                button type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main id="main" { (main) }
            }
        }
    }
}

pub fn sign_in(token: &str, error: Option<&str>) -> Markup {
    layout(
        "Sign in",
        None,
        html! {
            h1 { "Sign in" }
            p { "Sign in with an API key. The key stays on the server: the browser keeps only a session cookie." }
            @if let Some(error) = error { p.error role="alert" id="error" { (error) } }
            form.card method="post" action="/console/sign-in" {
                input type="hidden" name="sign_in" value=(token);
                label for="key" { "API key" }
                input id="key" name="key" type="password" autocomplete="off" required autofocus;
                button type="submit" id="sign-in" { "Sign in" }
            }
        },
    )
}

pub fn problem(session: Option<&Session>, status: StatusCode, code: &str, message: &str) -> Markup {
    layout(
        &status.as_u16().to_string(),
        session,
        html! {
            h1 { (status.as_u16()) " · " (status.canonical_reason().unwrap_or("Error")) }
            p.error role="alert" { code id="error-code" { (code) } ": " (message) }
            p { a href="/console/accounts" { "Back to the console" } }
        },
    )
}

pub fn accounts(session: &Session, missing: Option<&str>) -> Markup {
    layout(
        "Accounts",
        Some(session),
        html! {
            h1 { "Accounts" }
            form.card.inline method="get" action="/console/accounts" role="search" {
                label for="q" { "Account id or reference" }
                input id="q" name="q" type="search" required autofocus placeholder="acct_… or an IBAN";
                button type="submit" { "Find" }
            }
            @if let Some(missing) = missing {
                p.error role="alert" { "No account with the id or reference " code { (missing) } "." }
            }
        },
    )
}

/// The posted balance after each transfer of the page, oldest first, walking back from the
/// account's posted balance now (posts and single transfers move it; holds do not).
fn balance_points(account_id: &str, posted: i128, transfers: &[Value]) -> Vec<(String, i128)> {
    let mut points = Vec::new();
    let mut balance = posted;
    for t in transfers {
        points.push((text(&t["created_at"]).to_owned(), balance));
        let moved = i128::from(t["amount"].as_u64().unwrap_or(0));
        let effect = match text(&t["kind"]) {
            "single" | "post_pending" if text(&t["credit_account"]) == account_id => moved,
            "single" | "post_pending" if text(&t["debit_account"]) == account_id => -moved,
            _ => 0,
        };
        balance -= effect;
    }
    points.push(("before".to_owned(), balance));
    points.reverse();
    points
}

/// A line chart of `points` as inline SVG (integer arithmetic), with its extremes labelled.
fn chart(label: &str, points: &[(String, i128)], code: &str) -> Markup {
    const WIDTH: i128 = 600;
    const HEIGHT: i128 = 120;
    let low = points.iter().map(|p| p.1).min().unwrap_or(0);
    let high = points.iter().map(|p| p.1).max().unwrap_or(0);
    let span = (high - low).max(1);
    let steps = i128::try_from(points.len().saturating_sub(1)).unwrap_or(1).max(1);
    let line: Vec<String> = points
        .iter()
        .enumerate()
        .map(|(i, (_, b))| {
            let x = i128::try_from(i).unwrap_or(0) * WIDTH / steps;
            let y = HEIGHT - (b - low) * HEIGHT / span;
            format!("{x},{}", y + 5)
        })
        .collect();
    html! {
        figure.chart {
            svg viewBox="0 0 600 130" role="img" aria-label=(label) preserveAspectRatio="none" {
                polyline points=(line.join(" ")) fill="none" stroke="currentColor" stroke-width="2" {}
            }
            figcaption { (label) ": from " (amount(points.first().map_or(0, |p| p.1), code)) " to " (amount(points.last().map_or(0, |p| p.1), code)) " (low " (amount(low, code)) ", high " (amount(high, code)) ")" }
        }
    }
}

pub fn account(session: &Session, account: &Value, transfers: &Value, paged: bool) -> Markup {
    let id = text(&account["id"]);
    let code = text(&account["currency"]);
    let balance = &account["balance"];
    let rows = transfers["data"].as_array().cloned().unwrap_or_default();
    let posted = i128::from(balance["posted"].as_i64().unwrap_or(0));
    layout(
        id,
        Some(session),
        html! {
            h1 { "Account " code { (id) } }
            p.meta {
                (code) " · " span id="account-status" { (text(&account["status"])) }
                @if let Some(reference) = account["reference"].as_str() { " · reference " code { (reference) } }
            }
            section aria-labelledby="balances" {
                h2 id="balances" { "Balances" }
                table.figures {
                    tr { th scope="row" { "Posted" } td id="balance-posted" { (json_amount(&balance["posted"], code)) } }
                    tr { th scope="row" { "Held" } td id="balance-held" { (json_amount(&balance["pending_debits"], code)) } }
                    tr { th scope="row" { "Incoming holds" } td id="balance-pending-credits" { (json_amount(&balance["pending_credits"], code)) } }
                    tr { th scope="row" { "Available" } td id="balance-available" {
                        @if balance["available"].is_null() { "unlimited" } @else { (json_amount(&balance["available"], code)) }
                    } }
                }
            }
            @if !paged && !rows.is_empty() {
                section aria-labelledby="over-time" {
                    h2 id="over-time" { "Posted balance over the last " (rows.len()) " transfers" }
                    (chart("Posted balance", &balance_points(id, posted, &rows), code))
                }
            }
            section aria-labelledby="history" {
                h2 id="history" { "Transfers" }
                @if rows.is_empty() { p { "No transfers." } } @else {
                    table.list id="transfers" {
                        thead { tr { th { "When" } th { "Kind" } th { "Counterparty" } th.num { "Amount" } th { "Transfer" } } }
                        tbody {
                            @for t in &rows {
                                @let credit = text(&t["credit_account"]) == id;
                                @let other = if credit { text(&t["debit_account"]) } else { text(&t["credit_account"]) };
                                @let minor = i128::from(t["amount"].as_u64().unwrap_or(0));
                                tr {
                                    td { (text(&t["created_at"])) }
                                    td { (text(&t["kind"])) }
                                    td { a href={ "/console/accounts/" (other) } { code { (other) } } }
                                    td.num { (amount(if credit { minor } else { -minor }, code)) }
                                    td { code { (text(&t["id"])) } }
                                }
                            }
                        }
                    }
                }
                nav.pager aria-label="Transfer pages" {
                    @if paged { a href={ "/console/accounts/" (id) } { "Newest" } }
                    @if let (true, Some(cursor)) = (transfers["has_more"].as_bool().unwrap_or(false), transfers["next_cursor"].as_str()) {
                        a id="older" href={ "/console/accounts/" (id) "?starting_after=" (cursor) } { "Older transfers" }
                    }
                }
            }
        },
    )
}

const PAYMENT_STATUSES: [&str; 6] =
    ["requires_confirmation", "requires_capture", "succeeded", "failed", "cancelled", "expired"];

pub fn payments(session: &Session, list: &Value, status: Option<&str>, paged: bool) -> Markup {
    let rows = list["data"].as_array().cloned().unwrap_or_default();
    layout(
        "Payments",
        Some(session),
        html! {
            h1 { "Payments" }
            div.row {
                form.card.inline method="get" action="/console/payments" role="search" {
                    label for="id" { "Payment id" }
                    input id="id" name="id" type="search" placeholder="pay_…";
                    button type="submit" { "Open" }
                }
                form.card.inline method="get" action="/console/payments" {
                    label for="status" { "Status" }
                    select id="status" name="status" {
                        option value="" { "all" }
                        @for s in PAYMENT_STATUSES {
                            option value=(s) selected[status == Some(s)] { (s) }
                        }
                    }
                    button type="submit" id="filter" { "Filter" }
                }
            }
            div id="payment-list" data-live=(if paged { "no" } else { "yes" }) {
                @if rows.is_empty() { p { "No payments." } } @else {
                    table.list {
                        thead { tr { th { "Created" } th { "Payment" } th { "Status" } th.num { "Amount" } th { "Payer" } th { "Payee" } } }
                        tbody {
                            @for p in &rows {
                                tr {
                                    td { (text(&p["created_at"])) }
                                    td { a href={ "/console/payments/" (text(&p["id"])) } { code { (text(&p["id"])) } } }
                                    td { span.badge { (text(&p["status"])) } }
                                    td.num { (json_amount(&p["amount"], text(&p["currency"]))) }
                                    td { code { (p["payer_account"].as_str().unwrap_or("—")) } }
                                    td { code { (text(&p["payee_account"])) } }
                                }
                            }
                        }
                    }
                }
                nav.pager aria-label="Payment pages" {
                    @if paged { a href={ "/console/payments?status=" (status.unwrap_or("")) } { "Newest" } }
                    @if let (true, Some(cursor)) = (list["has_more"].as_bool().unwrap_or(false), list["next_cursor"].as_str()) {
                        a id="older" href={ "/console/payments?status=" (status.unwrap_or("")) "&starting_after=" (cursor) } { "Older payments" }
                    }
                }
            }
        },
    )
}

fn done_message(done: &str) -> &'static str {
    match done {
        "capture" => "Captured.",
        "cancel" => "Cancelled.",
        "refund" => "Refunded.",
        _ => "Done.",
    }
}

pub fn payment(
    session: &Session,
    payment: &Value,
    refunds: &Value,
    transfer: Option<&Value>,
    done: Option<&str>,
) -> Markup {
    let id = text(&payment["id"]);
    let code = text(&payment["currency"]);
    let status = text(&payment["status"]);
    let manual = text(&payment["capture_method"]) == "manual";
    let refunds = refunds["data"].as_array().cloned().unwrap_or_default();
    let actions = Action::allowed(payment);
    layout(
        id,
        Some(session),
        html! {
            h1 { "Payment " code { (id) } }
            @if let Some(done) = done { p.notice role="status" id="done" { (done_message(done)) } }
            table.figures {
                tr { th scope="row" { "Status" } td { span.badge id="payment-status" { (status) } } }
                tr { th scope="row" { "Amount" } td id="payment-amount" { (json_amount(&payment["amount"], code)) } }
                tr { th scope="row" { "Captured" } td id="payment-captured" { (json_amount(&payment["amount_captured"], code)) } }
                tr { th scope="row" { "Refunded" } td id="payment-refunded" { (json_amount(&payment["amount_refunded"], code)) } }
                tr { th scope="row" { "Payer" } td { @if let Some(payer) = payment["payer_account"].as_str() { a href={ "/console/accounts/" (payer) } { code { (payer) } } } @else { "not yet named (scan to pay)" } } }
                tr { th scope="row" { "Payee" } td { a href={ "/console/accounts/" (text(&payment["payee_account"])) } { code { (text(&payment["payee_account"])) } } } }
                tr { th scope="row" { "Capture" } td { (text(&payment["capture_method"])) } }
                @if let Some(description) = payment["description"].as_str() { tr { th scope="row" { "Description" } td { (description) } } }
                tr { th scope="row" { "Expires" } td { (text(&payment["expires_at"])) } }
            }
            section aria-labelledby="timeline" {
                h2 id="timeline" { "Timeline" }
                ol.timeline {
                    li { time { (text(&payment["created_at"])) } " created" }
                    @if let Some(t) = transfer {
                        li { time { (text(&t["created_at"])) } @if manual { " confirmed: " (json_amount(&t["amount"], code)) " held" } @else { " confirmed: " (json_amount(&t["amount"], code)) " moved" } }
                    }
                    @if manual && payment["amount_captured"].as_u64().unwrap_or(0) > 0 {
                        li { time { @if refunds.is_empty() { (text(&payment["updated_at"])) } } " captured: " (json_amount(&payment["amount_captured"], code)) }
                    }
                    @for r in &refunds {
                        li { time { (text(&r["created_at"])) } " refund " (json_amount(&r["amount"], code)) ": " (text(&r["status"])) @if let Some(f) = r["failure_code"].as_str() { " (" (f) ")" } }
                    }
                    @match status {
                        "cancelled" => li { time { (text(&payment["updated_at"])) } " cancelled" },
                        "expired" => li { time { (text(&payment["updated_at"])) } " expired" },
                        "failed" => li { time { (text(&payment["updated_at"])) } " failed: " (text(&payment["failure_code"])) },
                        _ => {},
                    }
                }
            }
            @if let Some(t) = transfer {
                section aria-labelledby="transfers" {
                    h2 id="transfers" { "Transfers" }
                    table.list {
                        thead { tr { th { "Transfer" } th { "Kind" } th { "From" } th { "To" } th.num { "Amount" } } }
                        tbody { tr {
                            td { code { (text(&t["id"])) } }
                            td { (text(&t["kind"])) }
                            td { a href={ "/console/accounts/" (text(&t["debit_account"])) } { code { (text(&t["debit_account"])) } } }
                            td { a href={ "/console/accounts/" (text(&t["credit_account"])) } { code { (text(&t["credit_account"])) } } }
                            td.num { (json_amount(&t["amount"], code)) }
                        } }
                    }
                }
            }
            @if session.can_write && !actions.is_empty() {
                section aria-labelledby="actions" {
                    h2 id="actions" { "Actions" }
                    div.actions {
                        @for action in &actions {
                            a.button id={ "action-" (action.as_str()) } href={ "/console/payments/" (id) "/" (action.as_str()) } { (title_case(action.as_str())) "…" }
                        }
                    }
                }
            }
        },
    )
}

fn title_case(word: &str) -> String {
    let mut chars = word.chars();
    chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

pub fn confirm(session: &Session, payment: &Value, action: Action, key: &str) -> Markup {
    let id = text(&payment["id"]);
    let code = text(&payment["currency"]);
    let captured = payment["amount_captured"].as_u64().unwrap_or(0);
    let refunded = payment["amount_refunded"].as_u64().unwrap_or(0);
    let (what, most) = match action {
        Action::Capture => ("Capture", payment["amount"].as_u64().unwrap_or(0)),
        Action::Refund => ("Refund", captured.saturating_sub(refunded)),
        Action::Cancel => ("Cancel", 0),
    };
    layout(
        &format!("{what} {id}"),
        Some(session),
        html! {
            h1 { (what) " payment " code { (id) } "?" }
            p { "Payment of " (json_amount(&payment["amount"], code)) ", " (text(&payment["status"])) "." }
            form.card method="post" action={ "/console/payments/" (id) "/" (action.as_str()) } {
                input type="hidden" name=(CSRF_FIELD) value=(session.csrf);
                input type="hidden" name="idempotency_key" value=(key);
                @if action != Action::Cancel {
                    label for="amount" { "Amount (" (code) "), empty for all: " (amount(i128::from(most), code)) }
                    input id="amount" name="amount" type="text" inputmode="decimal" autocomplete="off";
                } @else {
                    p { "The held funds go back to the payer." }
                }
                div.actions {
                    button type="submit" id="confirm" { "Confirm " (action.as_str()) }
                    a href={ "/console/payments/" (id) } { "Back" }
                }
            }
        },
    )
}

const BATCH_STATUSES: [&str; 5] = ["validating", "processing", "completed", "rejected", "cancelled"];

pub fn batches(session: &Session, list: &Value, status: Option<&str>, paged: bool) -> Markup {
    let rows = list["data"].as_array().cloned().unwrap_or_default();
    layout(
        "Batches",
        Some(session),
        html! {
            h1 { "Batches" }
            form.card.inline method="get" action="/console/batches" id="open-batch" role="search" {
                label for="batch-id" { "Batch id" }
                input id="batch-id" name="id" type="search" placeholder="bat_…";
                button type="submit" { "Open" }
            }
            @if session.can_write {
                form.card id="upload" {
                    h2 { "Upload a payment file" }
                    div.drop id="drop" {
                        p { "Drop a CSV, JSON lines, pain.001 or NACHA file here, or choose one:" }
                        label for="file" { "File" }
                        input id="file" name="file" type="file" accept=".csv,.jsonl,.ndjson,.json,.xml,.ach,.txt" required;
                    }
                    label for="format" { "Format" }
                    select id="format" name="format" {
                        option value="" { "From the file name" }
                        option value="csv" { "CSV" }
                        option value="jsonl" { "JSON lines" }
                        option value="pain.001" { "pain.001 (XML)" }
                        option value="nacha" { "NACHA" }
                    }
                    label for="payer" { "Payer (account id or reference), when the file does not name one" }
                    input id="payer" name="payer" type="text" autocomplete="off";
                    label for="on_invalid" { "Invalid lines" }
                    select id="on_invalid" name="on_invalid" {
                        option value="reject_file" { "Reject the whole file (nothing is paid)" }
                        option value="skip_invalid" { "Pay the valid lines, skip the others" }
                    }
                    button type="submit" id="upload-button" { "Upload" }
                    p id="upload-status" role="status" aria-live="polite" {}
                }
            } @else {
                p.notice { "This key is read only: it cannot upload batches." }
            }
            h2 { "Recent batches" }
            form.card.inline method="get" action="/console/batches" {
                label for="status" { "Status" }
                select id="status" name="status" {
                    option value="" { "all" }
                    @for s in BATCH_STATUSES {
                        option value=(s) selected[status == Some(s)] { (s) }
                    }
                }
                button type="submit" id="filter" { "Filter" }
            }
            div id="batch-list" {
                @if rows.is_empty() { p { "No batches." } } @else {
                    table.list {
                        thead { tr { th { "Created" } th { "Batch" } th { "Format" } th { "Status" } th.num { "Items" } th.num { "Succeeded" } th.num { "Failed" } th.num { "Invalid" } } }
                        tbody {
                            @for b in &rows {
                                tr {
                                    td { (text(&b["created_at"])) }
                                    td { a href={ "/console/batches/" (text(&b["id"])) } { code { (text(&b["id"])) } } }
                                    td { (text(&b["format"])) }
                                    td { span.badge { (text(&b["status"])) } }
                                    td.num { (b["counts"]["total"].as_u64().unwrap_or(0)) }
                                    td.num { (b["counts"]["succeeded"].as_u64().unwrap_or(0)) }
                                    td.num { (b["counts"]["failed"].as_u64().unwrap_or(0)) }
                                    td.num { (b["counts"]["invalid"].as_u64().unwrap_or(0)) }
                                }
                            }
                        }
                    }
                }
                nav.pager aria-label="Batch pages" {
                    @if paged { a href={ "/console/batches?status=" (status.unwrap_or("")) } { "Newest" } }
                    @if let (true, Some(cursor)) = (list["has_more"].as_bool().unwrap_or(false), list["next_cursor"].as_str()) {
                        a id="older" href={ "/console/batches?status=" (status.unwrap_or("")) "&starting_after=" (cursor) } { "Older batches" }
                    }
                }
            }
        },
    )
}

pub fn batch(session: &Session, batch: &Value, invalid: &Value, failed: &Value) -> Markup {
    let id = text(&batch["id"]);
    let status = text(&batch["status"]);
    let counts = &batch["counts"];
    let total = counts["total"].as_u64().unwrap_or(0);
    let pending = counts["pending"].as_u64().unwrap_or(0);
    let finished = !matches!(status, "validating" | "processing");
    let count = |name: &str| counts[name].as_u64().unwrap_or(0);
    let invalid = invalid["data"].as_array().cloned().unwrap_or_default();
    let failed = failed["data"].as_array().cloned().unwrap_or_default();
    layout(
        id,
        Some(session),
        html! {
            div id="batch" data-batch=(id) data-status=(status) {
                h1 { "Batch " code { (id) } }
                p.meta { (text(&batch["format"])) " · " (text(&batch["mode"])) " · invalid lines: " (text(&batch["on_invalid"])) " · created " (text(&batch["created_at"])) }
                p { "Status: " span.badge id="batch-status" { (status) } }
                label for="progress" { "Progress: " span id="progress-text" { (total - pending) " of " (total) } }
                progress id="progress" max=(total.max(1)) value=(if finished { total.max(1) } else { total - pending }) {}
                table.figures id="counts" {
                    @for name in ["total", "succeeded", "failed", "invalid", "pending"] {
                        tr { th scope="row" { (title_case(name)) } td id={ "count-" (name) } { (count(name)) } }
                    }
                }
                @if let Some(rejection) = batch["rejection"].as_object() {
                    p.error role="alert" id="rejection" {
                        "Rejected: " code { (rejection.get("code").and_then(Value::as_str).unwrap_or("rejected")) } " — "
                        (rejection.get("message").and_then(Value::as_str).unwrap_or(""))
                    }
                }
                @if let Some(totals) = batch["control_totals"].as_array().filter(|t| !t.is_empty()) {
                    h2 { "Control totals" }
                    table.list id="totals" {
                        thead { tr { th { "Currency" } th.num { "Items" } th.num { "Sum" } } }
                        tbody { @for t in totals {
                            @let code = text(&t["currency"]);
                            tr {
                                td { (code) }
                                td.num { (t["count"].as_u64().unwrap_or(0)) }
                                td.num { (t["sum"].as_u64().map_or_else(|| text(&t["sum_decimal"]).to_owned(), |s| amount(i128::from(s), code))) }
                            }
                        } }
                    }
                }
                @if !invalid.is_empty() {
                    h2 { "Invalid lines" }
                    table.list id="invalid-lines" {
                        thead { tr { th.num { "Line" } th { "Where" } th { "Code" } th { "Why" } } }
                        tbody { @for item in &invalid { tr {
                            td.num { (item["line"].as_u64().unwrap_or(0)) }
                            td { (text(&item["location"])) }
                            td { code { (text(&item["failure_code"])) } }
                            td { (text(&item["message"])) }
                        } } }
                    }
                }
                @if !failed.is_empty() {
                    h2 { "Failed items" }
                    table.list id="failed-items" {
                        thead { tr { th.num { "Line" } th { "Payee" } th.num { "Amount" } th { "Code" } th { "Why" } } }
                        tbody { @for item in &failed { tr {
                            td.num { (item["line"].as_u64().unwrap_or(0)) }
                            td { (text(&item["payee"])) }
                            td.num { (json_amount(&item["amount"], text(&item["currency"]))) }
                            td { code { (text(&item["failure_code"])) } }
                            td { (text(&item["message"])) }
                        } } }
                    }
                }
                @if finished {
                    h2 { "Report" }
                    p.actions {
                        a.button id="report-csv" href={ "/console/batches/" (id) "/report?format=csv" } { "Download CSV" }
                        a.button id="report-pain002" href={ "/console/batches/" (id) "/report?format=pain.002" } { "Download pain.002" }
                    }
                }
            }
        },
    )
}

pub fn health(session: &Session, figures: &Value) -> Markup {
    let charts = [
        ("batch", "Engine batch size (events per batch)"),
        ("commit", "Commit latency (ms, mean per interval)"),
        ("queue", "Queue depth (requests waiting)"),
        ("throughput", "Throughput (ledger events per second)"),
    ];
    layout(
        "Health",
        Some(session),
        html! {
            h1 { "Health" }
            p { "From the figures of " a href="/metrics" { "/metrics" } ", read every two seconds." }
            div.charts id="health" {
                @for (name, label) in charts {
                    figure.chart {
                        figcaption { (label) ": " output id={ "now-" (name) } { "…" } }
                        svg id={ "chart-" (name) } viewBox="0 0 300 80" role="img" aria-label=(label) preserveAspectRatio="none" {
                            polyline points="" fill="none" stroke="currentColor" stroke-width="2" {}
                        }
                    }
                }
            }
            h2 { "Totals since the start" }
            table.figures id="figures" {
                @if let Some(figures) = figures.as_object() {
                    @for (name, value) in figures {
                        tr { th scope="row" { code { (name) } } td { (value) } }
                    }
                }
            }
        },
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_balance_walks_back_through_posts_and_single_transfers_only() {
        let transfers = [
            json!({"kind": "single", "credit_account": "a", "debit_account": "b", "amount": 300, "created_at": "t3"}),
            json!({"kind": "pending", "credit_account": "c", "debit_account": "a", "amount": 50, "created_at": "t2"}),
            json!({"kind": "single", "credit_account": "c", "debit_account": "a", "amount": 100, "created_at": "t1"}),
        ];
        let points = balance_points("a", 1_000, &transfers);
        let balances: Vec<i128> = points.iter().map(|p| p.1).collect();
        assert_eq!(balances, [800, 700, 700, 1_000]);
    }
}
