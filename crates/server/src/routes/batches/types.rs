//! The request and response types of the batch routes.

use crate::json::Amount;
use crate::render::{format_total, rfc3339};
use paycore_ledger::{BatchId, BatchStatus, Currency, ItemStatus};
use paycore_store::{BatchItemRow, BatchRecord, BatchTotal, ItemLink, LinkKind};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// How the batch is taken in and run. Every field is optional.
#[derive(Deserialize, IntoParams, ToSchema, Default)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct BatchParams {
    /// `csv`, `jsonl`, `pain.001`, `nacha` or `refunds` (CSV `payment,amount,reason`: each row
    /// refunds an earlier payment; best effort only, no `payer`); default from `Content-Type`
    /// (`text/csv`, `application/x-ndjson`, `application/xml`; `application/json` is the
    /// `{items:[…]}` form).
    pub format: Option<String>,
    /// The paying account (id or reference) for items that name none (NACHA: the funding account).
    pub payer: Option<String>,
    /// The currency of items that name none (CSV without a currency column). A refunds file:
    /// the currency every refunded payment must be in.
    pub currency: Option<String>,
    /// `best_effort` (default): each item on its own. `atomic`: all items or none.
    pub mode: Option<String>,
    /// `reject_file` (default): one invalid item rejects the file. `skip_invalid`: pay the rest.
    pub on_invalid: Option<String>,
    /// CSV and JSON lines: the number of records the file must have.
    pub expected_count: Option<u64>,
    /// CSV and JSON lines: the decimal sum the valid items must have (`1234.50`).
    pub expected_total: Option<String>,
}

/// One item of the JSON form.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchItemParam {
    /// The account paid: `acct_…` or an account reference.
    pub payee: String,
    /// Minor units.
    #[schema(value_type = u64)]
    pub amount: Amount,
    /// ISO 4217; default the batch's `currency`.
    pub currency: Option<String>,
    pub reference: Option<String>,
    /// The account paying; default the batch's `payer`.
    pub payer: Option<String>,
}

/// The JSON form of a batch, for callers that prefer an API to a file.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchItemsBody {
    pub items: Vec<BatchItemParam>,
}

/// Counts of a batch's items.
#[derive(Serialize, ToSchema)]
pub struct CountsJson {
    /// Records in the file.
    pub total: u64,
    /// Records refused by validation.
    pub invalid: u64,
    pub succeeded: u64,
    /// Refused by the ledger (`insufficient_funds`, …), released because an atomic batch failed,
    /// or cancelled.
    pub failed: u64,
    /// Valid items not finished yet.
    pub pending: u64,
}

/// The control totals of the valid items in one currency.
#[derive(Serialize, ToSchema)]
pub struct TotalJson {
    pub currency: &'static str,
    pub count: u64,
    /// Minor units.
    #[schema(value_type = u64)]
    pub sum: u128,
    /// The same sum as a decimal in major units.
    pub sum_decimal: String,
}

/// A batch.
#[derive(Serialize, ToSchema)]
pub struct BatchJson {
    /// `bat_…`
    pub id: String,
    /// Always `batch`.
    pub object: &'static str,
    /// `validating`, `rejected`, `processing`, `completed` or `cancelled`.
    pub status: &'static str,
    pub format: &'static str,
    pub mode: &'static str,
    pub on_invalid: &'static str,
    pub payer: Option<String>,
    pub currency: Option<String>,
    pub expected_count: Option<u64>,
    pub expected_total: Option<String>,
    /// For pain.001: the version read (`pain.001.001.03`, `pain.001.001.09`, `pain.001.001.03.ch.02`).
    pub variant: Option<String>,
    /// pain.001 `GrpHdr/MsgId`.
    pub message_id: Option<String>,
    pub counts: CountsJson,
    pub control_totals: Vec<TotalJson>,
    /// Why the whole batch was rejected: `{code, message, errors:[{line, location, field, code, message}]}`.
    #[schema(value_type = Option<Object>)]
    pub rejection: Option<serde_json::Value>,
    pub created_at: String,
    pub validated_at: Option<String>,
    pub completed_at: Option<String>,
    /// The quotes locked at validation for the cross-currency items (payer's account in another
    /// currency than the item's, which is the payee's): one per currency pair, for the sum of
    /// its items. Present when the batch has such items.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fx_quotes: Vec<BatchQuoteJson>,
}

/// A batch's quote for one currency pair: its items' amounts (`target_amount`, in `to`) and
/// what their payers pay (`source_amount` and `fee`, in `from`), each the sum over the pair's
/// items, each item rounded up on its own.
#[derive(Serialize, ToSchema)]
pub struct BatchQuoteJson {
    /// `fxq_…`
    pub id: String,
    /// The payers' currency.
    pub from: &'static str,
    /// The items' (payees') currency.
    pub to: &'static str,
    /// Units of `to` per unit of `from`, as a decimal string.
    pub rate: String,
    pub source_amount: u64,
    pub target_amount: u64,
    pub fee: u64,
}

impl BatchJson {
    /// The batch with its FX quotes.
    pub fn with_quotes(mut self, quotes: &[paycore_ledger::fx::Quote]) -> BatchJson {
        self.fx_quotes = quotes
            .iter()
            .map(|q| BatchQuoteJson {
                id: q.id.to_string(),
                from: q.from.code(),
                to: q.to.code(),
                rate: q.rate.to_string(),
                source_amount: q.source_amount,
                target_amount: q.target_amount,
                fee: q.fee,
            })
            .collect();
        self
    }

    pub fn new(b: &BatchRecord, totals: &[BatchTotal]) -> BatchJson {
        let finished = b.succeeded + b.failed;
        let pending = match b.status {
            BatchStatus::Rejected => 0,
            _ => b.total.saturating_sub(b.invalid).saturating_sub(finished),
        };
        BatchJson {
            id: b.id.to_string(),
            object: "batch",
            status: b.status.as_str(),
            format: b.format.as_str(),
            mode: b.mode.as_str(),
            on_invalid: b.on_invalid.as_str(),
            payer: b.payer.clone(),
            currency: b.currency.clone(),
            expected_count: b.expected_count,
            expected_total: b.expected_total.clone(),
            variant: b.variant.clone(),
            message_id: b.message_id.clone(),
            counts: CountsJson {
                total: b.total,
                invalid: b.invalid,
                succeeded: b.succeeded,
                failed: b.failed,
                pending,
            },
            control_totals: totals
                .iter()
                .map(|t| TotalJson {
                    currency: t.currency.code(),
                    count: t.count,
                    sum: t.sum,
                    sum_decimal: format_total(t.sum, t.currency),
                })
                .collect(),
            rejection: b.rejection.as_deref().and_then(|r| serde_json::from_str(r).ok()),
            created_at: rfc3339(b.created_at),
            validated_at: b.validated_at.map(rfc3339),
            completed_at: b.completed_at.map(rfc3339),
            fx_quotes: Vec::new(),
        }
    }
}

impl BatchJson {
    /// The batch as its upload was answered (202): `record`'s creation fields, which never
    /// change, with nothing validated or counted yet. The upload and every replay of it render
    /// this, so a replay answers the first answer byte for byte, whatever the batch's state
    /// now. Rendered again rather than saved: the store keeps no response for an upload, and
    /// the answer is a function of fields the store already keeps.
    pub fn taken_in(record: &BatchRecord) -> BatchJson {
        let taken = BatchRecord {
            mode: record.mode,
            on_invalid: record.on_invalid,
            payer: record.payer.clone(),
            currency: record.currency.clone(),
            expected_count: record.expected_count,
            expected_total: record.expected_total.clone(),
            ..BatchRecord::new(record.id, record.tenant, record.format, record.created_at)
        };
        BatchJson::new(&taken, &[])
    }
}

/// One item of a batch.
#[derive(Serialize, ToSchema)]
pub struct BatchItemJson {
    /// Position among the file's records, from 0.
    pub index: u64,
    /// Line in the file where the record starts.
    pub line: u64,
    /// `line N`, or an XML element path.
    pub location: String,
    pub reference: Option<String>,
    /// The payer and payee as the file names them.
    pub payer: Option<String>,
    pub payee: Option<String>,
    /// The accounts they resolved to.
    pub payer_account: Option<String>,
    pub payee_account: Option<String>,
    pub amount: Option<u64>,
    pub currency: Option<&'static str>,
    /// `invalid`, `pending`, `held` (atomic batches), `succeeded`, `failed`, or `returned` (a
    /// NACHA item paid, then returned: `failure_code` is the R-code).
    pub status: &'static str,
    /// Why it failed: a validation code (`too_many_decimals`, `account_not_found`,
    /// `duplicate_reference`, …) or a ledger result (`insufficient_funds`, …), `batch_aborted`,
    /// `cancelled`.
    pub failure_code: Option<String>,
    pub message: Option<String>,
    /// A NACHA return or notification of change: the original item it is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original: Option<OriginalItemJson>,
    /// A `returned` item: the return that reversed it.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(rename = "return")]
    pub returned_by: Option<ReturnJson>,
    /// Notifications of change (Addenda 98) recorded against the item, oldest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notifications_of_change: Vec<ChangeJson>,
}

/// The original item a NACHA return or notification of change is about.
#[derive(Serialize, ToSchema)]
pub struct OriginalItemJson {
    /// `bat_…`
    pub batch: String,
    pub index: u64,
}

/// The return of a `returned` item.
#[derive(Serialize, ToSchema)]
pub struct ReturnJson {
    /// The R-code, such as `R01`.
    pub reason_code: String,
    /// Its title, such as `Insufficient Funds`.
    pub reason: &'static str,
    /// The return's own item: its batch (`bat_…`) and index.
    pub batch: String,
    pub index: u64,
}

/// A notification of change recorded against an item.
#[derive(Serialize, ToSchema)]
pub struct ChangeJson {
    /// The C-code, such as `C01` (incorrect account number).
    pub change_code: String,
    pub corrected_data: Option<String>,
    /// The notification's own item: its batch (`bat_…`) and index.
    pub batch: String,
    pub index: u64,
}

/// The API's name for an item status: an item voided or cancelled reads `failed` (its
/// `failure_code` says which).
fn item_status(status: ItemStatus) -> &'static str {
    match status {
        ItemStatus::Invalid | ItemStatus::Pending | ItemStatus::Held | ItemStatus::Succeeded | ItemStatus::Returned => {
            status.as_str()
        }
        ItemStatus::Failed | ItemStatus::Voided | ItemStatus::Cancelled => ItemStatus::Failed.as_str(),
    }
}

impl BatchItemJson {
    pub(super) fn new(i: &BatchItemRow) -> BatchItemJson {
        BatchItemJson {
            index: i.index,
            line: i.line,
            location: i.location.clone(),
            reference: i.reference.clone(),
            payer: i.payer_text.clone(),
            payee: i.payee_text.clone(),
            payer_account: i.payer.map(|a| a.to_string()),
            payee_account: i.payee.map(|a| a.to_string()),
            amount: i.amount,
            currency: i.currency.map(Currency::code),
            status: item_status(i.status),
            failure_code: i.failure_code.clone(),
            message: i.message.clone(),
            original: None,
            returned_by: None,
            notifications_of_change: Vec::new(),
        }
    }

    /// Adds what the NACHA returns and notifications of change of `links` say about this
    /// item of `batch`.
    pub(super) fn with_links(mut self, batch: BatchId, links: &[ItemLink]) -> BatchItemJson {
        for link in links {
            if link.batch == batch && link.index == self.index {
                let (batch, index) = (link.original_batch.to_string(), link.original_index);
                self.original = Some(OriginalItemJson { batch, index });
            } else if link.original_batch == batch && link.original_index == self.index {
                let (batch, index) = (link.batch.to_string(), link.index);
                match link.kind {
                    LinkKind::Return if self.status == ItemStatus::Returned.as_str() && link.active => {
                        let reason = paycore_formats::return_reason_description(&link.code);
                        self.returned_by = Some(ReturnJson { reason_code: link.code.clone(), reason, batch, index });
                    }
                    LinkKind::Return => {}
                    LinkKind::Change => self.notifications_of_change.push(ChangeJson {
                        change_code: link.code.clone(),
                        corrected_data: link.detail.clone(),
                        batch,
                        index,
                    }),
                }
            }
        }
        self
    }
}

/// A page of items, in file order.
#[derive(Serialize, ToSchema)]
pub struct BatchItemsJson {
    pub object: &'static str,
    pub data: Vec<BatchItemJson>,
    pub has_more: bool,
    /// Pass as `starting_after` for the next page.
    pub next_cursor: Option<u64>,
}

/// Which items to list.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ItemsQuery {
    /// `invalid`, `pending`, `held`, `succeeded`, `failed` or `returned`.
    pub status: Option<String>,
    /// 1 to 1000, default 100.
    pub limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    pub starting_after: Option<u64>,
}

/// Which report.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReportQuery {
    /// `csv` (default), `pain.002`, or `nacha` (a NACHA batch's return file: every entry not
    /// paid, as a return with its R-code).
    pub format: Option<String>,
    /// pain.002 only: `001.001.03`, `001.001.10` or `001.001.11`; default the version that
    /// answers the input (001.001.03 for a pain.001.001.03 or DK pain.001.003.03 file,
    /// 001.001.10 otherwise).
    pub version: Option<String>,
}
