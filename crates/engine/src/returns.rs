//! NACHA returns and notifications of change at validation (see `paycore_store::returns`).
//!
//! The parser never pays an entry with an Addenda 99 or 98: it reports it with the addenda it
//! carries ([`Adjustment`]). Here each is matched, within the batch's tenant, to the original
//! item by the original entry's trace number, the newest indexed NACHA item with that trace
//! whose receiver is at the addenda's RDFI. A matched return becomes a `pending` item of its
//! own batch that pays the original back (payer and payee swapped, the original's amount), so
//! the runner sends it like any item, with an id derived from its batch and index. A matched
//! notification of change is recorded against the original and moves nothing: its own item is
//! `invalid` with code `notification_recorded`, a skipped record (like a prenote).
//!
//! Codes, in the order they are decided: `return_entry_not_matched` (no item with that trace
//! at that RDFI, or the item is not `succeeded`), `already_returned` (the item is `returned`,
//! or another return of it — in this file, or one not failed in another — holds it),
//! `return_amount_mismatch` (the return's amount is not the item's);
//! `change_entry_not_matched` for a notification without its item.

use paycore_formats::{Adjustment, Diagnostic};
use paycore_ledger::{BatchId, Currency, ItemStatus, TenantId};
use paycore_store::{BatchItemRow, BatchStore, ItemLink, LinkKind, StoreError};
use std::collections::HashSet;

/// The code of a notification of change's own item once recorded: not a payment, not a
/// refusal (counted as skipped, so it does not make a file invalid).
pub const NOTIFICATION_RECORDED: &str = "notification_recorded";

/// Whether an invalid item's code is a record that is not a payment and not a refusal: a
/// prenote, a zero-dollar entry, or a recorded notification of change.
pub fn is_not_refused(code: &str) -> bool {
    paycore_formats::is_skipped(code) || code == NOTIFICATION_RECORDED
}

/// The returns and notifications of one file being validated.
#[derive(Default)]
pub(crate) struct Returns {
    /// Originals a return of this file already takes.
    taken: HashSet<(BatchId, u64)>,
    /// The links to write when the batch goes on to `processing`, each with its item's index.
    pub(crate) links: Vec<ItemLink>,
    /// Returns of other batches whose reversal did not happen, released for this file's.
    pub(crate) released: Vec<(BatchId, u64)>,
    /// The last matched record's link, until its row has its index.
    pub(crate) last: Option<ItemLink>,
}

/// What matching found for one record.
type Refusal = (&'static str, String);

impl Returns {
    /// The item row of a return or notification of change of `batch` (its index is set by the
    /// caller); a store error stops validation.
    pub(crate) fn row(
        &mut self,
        store: &dyn BatchStore,
        tenant: TenantId,
        batch: BatchId,
        d: &Diagnostic,
        adjustment: &Adjustment,
        now: u64,
    ) -> Result<BatchItemRow, StoreError> {
        let mut row = crate::batches::blank_row(d.line, d.location.clone(), ItemStatus::Invalid);
        let (trace, outcome) = match adjustment {
            Adjustment::Return { amount, trace, .. } => {
                row.amount = Some(*amount);
                let outcome = self.match_return(store, tenant, batch, adjustment, *amount, &mut row, now)?;
                (trace, outcome)
            }
            Adjustment::Change { addenda, trace } => {
                let outcome = match original(store, tenant, adjustment)? {
                    None => Err((
                        "change_entry_not_matched",
                        format!(
                            "Addenda 98: the notification of change {} is about the entry with trace number {} sent to RDFI {}, and no NACHA item of this account holder's earlier files has that trace number at that RDFI",
                            addenda.change_code, addenda.original_trace, addenda.original_rdfi
                        ),
                    )),
                    Some((original_batch, o)) => {
                        let currency = o.currency.or_else(|| Currency::from_code("USD"));
                        self.last = currency.map(|currency| ItemLink {
                            batch,
                            index: 0,
                            tenant,
                            kind: LinkKind::Change,
                            original_batch,
                            original_index: o.index,
                            code: addenda.change_code.clone(),
                            detail: Some(addenda.corrected_data.clone()),
                            amount: 0,
                            currency,
                            active: false,
                            created_at: now,
                        });
                        Err((
                            NOTIFICATION_RECORDED,
                            format!(
                                "notification of change {} (corrected data {:?}) recorded on item {} of {original_batch}; it moves no money",
                                addenda.change_code, addenda.corrected_data, o.index
                            ),
                        ))
                    }
                };
                (trace, outcome)
            }
        };
        row.reference = Some(trace.clone());
        match outcome {
            Ok(()) => row.status = ItemStatus::Pending,
            Err((code, message)) => {
                row.failure_code = Some(code.to_owned());
                row.message = Some(message);
            }
        }
        Ok(row)
    }

    #[allow(clippy::too_many_arguments)]
    fn match_return(
        &mut self,
        store: &dyn BatchStore,
        tenant: TenantId,
        batch: BatchId,
        adjustment: &Adjustment,
        amount: u64,
        row: &mut BatchItemRow,
        now: u64,
    ) -> Result<Result<(), Refusal>, StoreError> {
        let Adjustment::Return { addenda, .. } = adjustment else { return Ok(Ok(())) };
        let (reason, trace, rdfi) = (&addenda.reason_code, &addenda.original_trace, &addenda.original_rdfi);
        let Some((original_batch, o)) = original(store, tenant, adjustment)? else {
            return Ok(Err((
                "return_entry_not_matched",
                format!(
                    "Addenda 99: the return ({reason}) is of the entry with trace number {trace} sent to RDFI {rdfi}, and no NACHA item of this account holder's earlier files has that trace number at that RDFI; a return is never paid as a new entry"
                ),
            )));
        };
        let at = format!("item {} of {original_batch}", o.index);
        let key = (original_batch, o.index);
        if o.status == ItemStatus::Returned || self.taken.contains(&key) {
            return Ok(Err((
                "already_returned",
                format!("Addenda 99: {at} (trace number {trace}) is already returned"),
            )));
        }
        if let Some(holder) = store.active_return(original_batch, o.index)?.filter(|l| l.batch != batch) {
            match item(store, holder.batch, holder.index)?.map(|i| i.status) {
                Some(ItemStatus::Succeeded | ItemStatus::Pending | ItemStatus::Held) => {
                    let message = format!(
                        "Addenda 99: {at} (trace number {trace}) is already returned by item {} of {}",
                        holder.index, holder.batch
                    );
                    return Ok(Err(("already_returned", message)));
                }
                // That return's reversal failed or never ran: this one takes its place.
                _ => self.released.push((holder.batch, holder.index)),
            }
        }
        if o.status != ItemStatus::Succeeded {
            return Ok(Err((
                "return_entry_not_matched",
                format!(
                    "Addenda 99: {at} (trace number {trace}) is {}, not paid: there is nothing to return",
                    o.status
                ),
            )));
        }
        let (Some(original_amount), Some(payer), Some(payee), Some(currency)) =
            (o.amount, o.payer, o.payee, o.currency)
        else {
            return Ok(Err((
                "return_entry_not_matched",
                format!("Addenda 99: {at} has no accounts to return between"),
            )));
        };
        if original_amount != amount {
            return Ok(Err((
                "return_amount_mismatch",
                format!(
                    "Amount: the return is of {amount} cents, but {at} (trace number {trace}) was of {original_amount} cents; a return is of the whole entry"
                ),
            )));
        }
        self.taken.insert(key);
        row.payer_text = o.payee_text.clone();
        row.payee_text = o.payer_text.clone();
        row.payer = Some(payee);
        row.payee = Some(payer);
        row.currency = Some(currency);
        row.message = Some(format!("return {reason} ({}) of {at}", return_reason_text(reason)));
        self.last = Some(ItemLink {
            batch,
            index: 0,
            tenant,
            kind: LinkKind::Return,
            original_batch,
            original_index: o.index,
            code: reason.clone(),
            detail: Some(addenda.information.clone()).filter(|i| !i.is_empty()),
            amount,
            currency,
            active: true,
            created_at: now,
        });
        Ok(Ok(()))
    }
}

/// The description of an R-code, as NACHA names it.
pub fn return_reason_text(code: &str) -> &'static str {
    paycore_formats::return_reason_description(code)
}

/// The item `index` of `batch`, with its derived status.
fn item(store: &dyn BatchStore, batch: BatchId, index: u64) -> Result<Option<BatchItemRow>, StoreError> {
    let rows = store.batch_items(batch, &[], index.checked_sub(1), 1)?;
    Ok(rows.into_iter().next().filter(|row| row.index == index))
}

/// The original item a return or notification is about: the newest indexed item of `tenant`
/// with its trace number whose receiver (the payee of a credit, the payer of a debit: `RDFI
/// routing number + account`) is at its RDFI.
fn original(
    store: &dyn BatchStore,
    tenant: TenantId,
    adjustment: &Adjustment,
) -> Result<Option<(BatchId, BatchItemRow)>, StoreError> {
    let rdfi = adjustment.original_rdfi();
    for (batch, index) in store.items_by_trace(tenant, adjustment.original_trace())? {
        let Some(row) = item(store, batch, index)? else { continue };
        let at_rdfi = |text: &Option<String>| text.as_deref().is_some_and(|t| !rdfi.is_empty() && t.starts_with(rdfi));
        if at_rdfi(&row.payee_text) || at_rdfi(&row.payer_text) {
            return Ok(Some((batch, row)));
        }
    }
    Ok(None)
}
