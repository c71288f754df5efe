//! Refunds files (`format=refunds`): each row refunds an earlier payment of the tenant.
//!
//! Validation checks each row against the payment as stored, with the rules of
//! `POST /v1/payments/{id}/refunds`: the payment exists in this tenant (another tenant's is
//! `payment_not_found` too), it is `succeeded` and not cross-currency
//! (`payment_not_refundable`), the amount is a decimal of its currency (`invalid_amount`,
//! `too_many_decimals`, `amount_not_positive`, naming `amount` and the line) and at most what
//! is left to refund (`amount_exceeds_refundable`). An empty amount is all that is left.
//!
//! **Several rows for one payment** are allowed (a merchant refunds two items of one order on
//! two rows): each row is checked against what is left after the file's earlier *valid* rows
//! for that payment, so the rows that fit are valid and the first row that would refund more
//! than the payment has left, and every later one that does too, is `amount_exceeds_refundable`
//! (under `on_invalid=reject_file` the file is rejected; under `skip_invalid` the others are
//! refunded). An empty amount after earlier rows is what those rows left.
//!
//! A valid row is stored as an item whose payer is the payment's payee (the account the refund
//! debits) and whose payee is the payment's payer, with the payment id as its `reference` and
//! the reason as its remittance text. The runner sends it as a [`paycore_ledger::BatchItem`]
//! with an [`ItemRefund`]: the engine runs the ledger's refund for it, which checks the same
//! rules again at that moment (a refund made through the API in between is counted).
//!
//! Memory: one entry per distinct payment the file names (what is left to refund), so about
//! 100 bytes a payment: 100 MB for a million distinct payments.

use super::{diagnostic_row, ReadItems, StoredFile, INSERT_CHUNK};
use paycore_formats::{parse_refunds, Diagnostic, RefundLine};
use paycore_ledger::{
    format_amount, AccountId, BatchItem, Currency, ItemRefund, ItemStatus, PaymentId, PaymentStatus, TenantId,
};
use paycore_store::{BatchItemRow, BatchRecord, BatchStore, StoreError};
use std::collections::HashMap;
use std::io::BufReader;
use std::sync::atomic::{AtomicBool, Ordering};

/// A payment that can be refunded, and what the file's earlier valid rows left of it.
struct Refundable {
    /// The payment's payee: the account a refund debits.
    merchant: AccountId,
    /// The payment's payer: the account a refund credits.
    customer: AccountId,
    currency: Currency,
    /// What is left to refund after the earlier valid rows for this payment.
    left: u64,
    /// What those rows refund.
    claimed: u64,
}

/// Why a row is invalid: its code and message (the message names the field).
type Refusal = (&'static str, String);

struct Checker<'a> {
    store: &'a dyn BatchStore,
    tenant: TenantId,
    /// The batch's `currency` parameter: every payment must be in it.
    currency: Option<Currency>,
    payments: HashMap<PaymentId, Result<Refundable, Refusal>, foldhash::fast::RandomState>,
    error: Option<StoreError>,
}

impl Checker<'_> {
    /// The payment as the file's earlier rows left it, read from the store the first time.
    fn payment(&mut self, id: PaymentId) -> &mut Result<Refundable, Refusal> {
        let (store, tenant) = (self.store, self.tenant);
        let error = &mut self.error;
        self.payments.entry(id).or_insert_with(|| {
            let stored = store.batch_payment(tenant, id).unwrap_or_else(|e| {
                *error = Some(e);
                None
            });
            let Some(payment) = stored else {
                return Err(("payment_not_found", format!("payment: no payment {id}")));
            };
            if payment.status != PaymentStatus::Succeeded {
                let status = payment.status.as_str();
                let message = format!("payment: {id} is {status}; only a succeeded payment can be refunded");
                return Err(("payment_not_refundable", message));
            }
            if payment.fx.is_some() {
                let message = format!("payment: {id} is cross-currency; its refunds are not supported yet");
                return Err(("payment_not_refundable", message));
            }
            let Some(customer) = payment.payer else {
                return Err(("payment_not_refundable", format!("payment: {id} has no payer")));
            };
            Ok(Refundable {
                merchant: payment.payee,
                customer,
                currency: payment.currency,
                left: payment.amount_captured.saturating_sub(payment.amount_refunded),
                claimed: 0,
            })
        })
    }

    /// The row's item, or why it is invalid.
    fn row(&mut self, record: Result<RefundLine, Diagnostic>) -> BatchItemRow {
        let line = match record {
            Ok(line) => line,
            Err(d) => return diagnostic_row(&d),
        };
        let mut row = BatchItemRow {
            index: line.index,
            reference: Some(line.payment.to_string()),
            remittance: line.reason.clone(),
            ..super::blank_row(line.line, line.location.clone(), ItemStatus::Pending)
        };
        if let Err((code, message)) = self.check(&line, &mut row) {
            row.status = ItemStatus::Invalid;
            row.failure_code = Some(code.to_owned());
            row.message = Some(message);
        }
        row
    }

    fn check(&mut self, line: &RefundLine, row: &mut BatchItemRow) -> Result<(), Refusal> {
        let wanted = self.currency;
        let refundable = self.payment(line.payment).as_mut().map_err(|refusal| refusal.clone())?;
        row.payer = Some(refundable.merchant);
        row.payee = Some(refundable.customer);
        row.payer_text = Some(refundable.merchant.to_string());
        row.payee_text = Some(refundable.customer.to_string());
        row.currency = Some(refundable.currency);
        let currency = refundable.currency;
        if let Some(wanted) = wanted.filter(|c| *c != currency) {
            let message = format!("payment: {} is in {currency}, the batch in {wanted}", line.payment);
            return Err(("currency_mismatch", message));
        }
        let amount = line.amount(currency).map_err(|d| (d.code, format!("amount: {}", d.message)))?;
        let earlier = if refundable.claimed > 0 {
            format!(" after the {} the file's earlier rows for it refund", format_amount(refundable.claimed, currency))
        } else {
            String::new()
        };
        let (asked, left) = (amount.map(|a| a.get()), refundable.left);
        row.amount = asked;
        if left == 0 {
            let message = format!("payment: {} has nothing left to refund{earlier}", line.payment);
            return Err(("amount_exceeds_refundable", message));
        }
        let amount = asked.unwrap_or(left);
        row.amount = Some(amount);
        if amount > left {
            let message = format!(
                "amount: {} is more than the {} left to refund on {}{earlier}",
                format_amount(amount, currency),
                format_amount(left, currency),
                line.payment
            );
            return Err(("amount_exceeds_refundable", message));
        }
        refundable.left -= amount;
        refundable.claimed += amount;
        Ok(())
    }
}

/// [`super::read_items`] for a refunds file: parses it once, streaming, checks each row
/// against its payment, and stores the rows in chunks.
pub(super) fn read_refunds(
    store: &dyn BatchStore,
    batch: &BatchRecord,
    input: &mut BufReader<StoredFile>,
    currency: Option<Currency>,
    stopping: &AtomicBool,
    max_lines: u64,
) -> paycore_store::Result<ReadItems> {
    let mut checker = Checker { store, tenant: batch.tenant, currency, payments: HashMap::default(), error: None };
    let mut read = ReadItems::empty();
    let mut rows = Vec::with_capacity(INSERT_CHUNK);
    let mut failed = None;
    let summary = parse_refunds(input, &mut |record| {
        if read.too_many || failed.is_some() || checker.error.is_some() || stopping.load(Ordering::Relaxed) {
            return;
        }
        if read.total >= max_lines {
            read.too_many = true;
            return;
        }
        let mut row = checker.row(record);
        row.index = read.total;
        read.count(&row);
        rows.push(row);
        if rows.len() == INSERT_CHUNK {
            failed = store.insert_batch_items(batch.id, &std::mem::take(&mut rows)).err();
        }
    });
    if let Some(e) = failed.or(checker.error) {
        return Err(e);
    }
    if !rows.is_empty() {
        store.insert_batch_items(batch.id, &rows)?;
    }
    read.summary = summary.map(|mut summary| {
        // Amounts have a currency only once their payment is found: the totals are the rows'.
        summary.totals = read.totals.iter().map(|(&currency, &(_, sum))| (currency, sum)).collect();
        summary
    });
    Ok(read)
}

/// The refunds batch's items in `status` after `after`, as the engine takes them: each with
/// its payment and reason (read from the item's `reference` and remittance text, so whole
/// rows are read, where [`BatchStore::batch_work`] reads only the accounts and amount).
pub(super) fn refund_work(
    store: &dyn BatchStore,
    batch: paycore_ledger::BatchId,
    status: ItemStatus,
    after: Option<u64>,
    limit: usize,
) -> paycore_store::Result<Vec<BatchItem>> {
    let rows = store.batch_items(batch, &[status], after, limit)?;
    rows.into_iter()
        .map(|row| {
            let corrupt = || StoreError::Corrupt(format!("refund item {} of batch {batch} is incomplete", row.index));
            let payment = row.reference.as_deref().and_then(|r| r.parse::<PaymentId>().ok()).ok_or_else(corrupt)?;
            let (Some(payer), Some(payee), Some(amount), Some(currency)) =
                (row.payer, row.payee, row.amount, row.currency)
            else {
                return Err(corrupt());
            };
            let refund = Some(ItemRefund { payment, reason: row.remittance });
            Ok(BatchItem { index: row.index, payer, payee, amount, currency, fx: None, refund })
        })
        .collect()
}
