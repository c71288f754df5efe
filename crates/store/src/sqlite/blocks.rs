//! A batch's items in blocks (SQLite, migration `0023_batch_item_blocks.sql`): one
//! `batch_item_blocks` row per chunk of up to [`BLOCK_ITEMS`] items, found by a unique index on
//! the batch and the index of the chunk's first item, its items encoded one after the other in
//! `data` (a rowid table: see the migration for why not `WITHOUT ROWID`).
//! Validation's writer hands the store chunks of 4 096 items, 16 blocks: a million items are
//! ~3 900 row inserts, where one row per item cost ~10k instructions each in SQLite (binding
//! ~17 values, building the record, the B-tree insert), whatever the row's width
//! (`crates/bench/NOTES.md`).
//!
//! Each block row also holds its last index (blocks of a batch never overlap) and how many of
//! its items are invalid, so that the listing of invalid items reads only the blocks that have
//! some. A reader decodes only the blocks that cover the indexes it wants, and of those only
//! the items it wants: each item is prefixed with its length, so the ones before a window's
//! start are stepped over without being decoded.
//!
//! An item, after its length (a LEB128 varint, as every integer here): its index less the
//! block's first, its stored status (a byte: its position in [`ItemStatus::ALL`]), a 16-bit
//! little-endian set of [flags](REFERENCE) saying which fields follow, its line, then the
//! fields present, in the flags' order: texts as a varint length and UTF-8 bytes, accounts as
//! 16 big-endian bytes, the amount as a varint, the currency as its code. Three fields are
//! stored as a flag alone when they say what is known anyway: a payer text that is the batch's
//! payer, as the batch names it (most files name the payer once); a payee text that is the payee
//! account's own id as the id writes itself (files that name payees by id); a location that is
//! `line N` of the item's own line. Every other value is stored as given, so an item reads back
//! exactly as it was written (as PostgreSQL, which keeps a row per item, reads it).

use super::codec::{id_blob, int};
use crate::batches::{BatchItemRow, ItemView};
use crate::{Result, StoreError};
use paycore_ledger::{AccountId, BatchId, Currency, ItemStatus};
use rusqlite::{params, Connection, OptionalExtension};

/// The most items in one block; a larger insert (validation's chunk is 4 096) is cut into
/// blocks of this size. A block is read whole (SQLite assembles a blob from its overflow pages
/// into one allocation) whenever one of its items is wanted: 256 keeps a block of pain.001
/// items (~270 bytes each) near 70 KiB, under the C allocator's `mmap` threshold (128 KiB),
/// and what a window of a listing reads past its ends small. 1M items are ~3 900 inserts.
pub(super) const BLOCK_ITEMS: usize = 256;

/// The item has a `reference`.
const REFERENCE: u16 = 1;
const INSTRUCTION_ID: u16 = 1 << 1;
const PAYMENT_INFORMATION_ID: u16 = 1 << 2;
/// A payer text, stored.
const PAYER_TEXT: u16 = 1 << 3;
/// The payer text is the batch's payer text (nothing stored).
const PAYER_TEXT_OF_BATCH: u16 = 1 << 4;
/// A payee text, stored.
const PAYEE_TEXT: u16 = 1 << 5;
/// The payee text is the payee's id as `Display` writes it (nothing stored).
const PAYEE_TEXT_OF_PAYEE: u16 = 1 << 6;
const PAYER: u16 = 1 << 7;
const PAYEE: u16 = 1 << 8;
const AMOUNT: u16 = 1 << 9;
const CURRENCY: u16 = 1 << 10;
const FAILURE_CODE: u16 = 1 << 11;
const MESSAGE: u16 = 1 << 12;
const REMITTANCE: u16 = 1 << 13;
/// A location other than `line N` of the item's line, stored.
const LOCATION: u16 = 1 << 14;

// The casts keep the low 7 bits, which is the point.
#[allow(clippy::cast_possible_truncation)]
fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Whether `location` is `line N` for this `line`, exactly as `format!("line {line}")` writes it.
pub(super) fn is_line_location(location: &str, line: u64) -> bool {
    location.strip_prefix("line ").and_then(|n| n.parse::<u64>().ok()) == Some(line)
        && !location[5..].starts_with(['0', '+'])
}

fn status_byte(status: ItemStatus) -> u8 {
    let position = ItemStatus::ALL.iter().position(|s| *s == status).unwrap_or(0);
    u8::try_from(position).unwrap_or(0)
}

/// Appends one item (its length first) to `out`; `body` is scratch space.
fn encode_item(out: &mut Vec<u8>, body: &mut Vec<u8>, first: u64, batch_payer: Option<&str>, i: &BatchItemRow) {
    body.clear();
    let mut flags = 0u16;
    let location = !is_line_location(&i.location, i.line);
    let texts = [
        (REFERENCE, &i.reference),
        (INSTRUCTION_ID, &i.instruction_id),
        (PAYMENT_INFORMATION_ID, &i.payment_information_id),
    ];
    for (flag, text) in texts {
        if text.is_some() {
            flags |= flag;
        }
    }
    let payer_text = match (&i.payer_text, batch_payer) {
        (Some(text), Some(payer)) if text == payer => {
            flags |= PAYER_TEXT_OF_BATCH;
            None
        }
        (Some(text), _) => {
            flags |= PAYER_TEXT;
            Some(text)
        }
        (None, _) => None,
    };
    let payee_text = match (&i.payee_text, i.payee) {
        (Some(text), Some(payee)) if payee.is_written_as(text) => {
            flags |= PAYEE_TEXT_OF_PAYEE;
            None
        }
        (Some(text), _) => {
            flags |= PAYEE_TEXT;
            Some(text)
        }
        (None, _) => None,
    };
    let mut flag_if = |present: bool, flag: u16| {
        if present {
            flags |= flag;
        }
    };
    flag_if(i.payer.is_some(), PAYER);
    flag_if(i.payee.is_some(), PAYEE);
    flag_if(i.amount.is_some(), AMOUNT);
    flag_if(i.currency.is_some(), CURRENCY);
    flag_if(i.failure_code.is_some(), FAILURE_CODE);
    flag_if(i.message.is_some(), MESSAGE);
    flag_if(i.remittance.is_some(), REMITTANCE);
    flag_if(location, LOCATION);
    put_varint(body, i.index - first);
    body.push(status_byte(i.status));
    body.extend_from_slice(&flags.to_le_bytes());
    put_varint(body, i.line);
    if location {
        put_bytes(body, i.location.as_bytes());
    }
    for text in [&i.reference, &i.instruction_id, &i.payment_information_id].into_iter().flatten() {
        put_bytes(body, text.as_bytes());
    }
    if let Some(text) = payer_text {
        put_bytes(body, text.as_bytes());
    }
    if let Some(text) = payee_text {
        put_bytes(body, text.as_bytes());
    }
    for account in [i.payer, i.payee].into_iter().flatten() {
        body.extend_from_slice(&id_blob(account.0));
    }
    if let Some(amount) = i.amount {
        put_varint(body, amount);
    }
    if let Some(currency) = i.currency {
        put_bytes(body, currency.code().as_bytes());
    }
    for text in [&i.failure_code, &i.message, &i.remittance].into_iter().flatten() {
        put_bytes(body, text.as_bytes());
    }
    put_varint(out, body.len() as u64);
    out.extend_from_slice(body);
}

/// Appends `items` to a batch's blocks, inside the caller's transaction: blocks of up to
/// [`BLOCK_ITEMS`] items in index order. An index already stored (in a block of this insert or
/// an earlier one) is a [`StoreError::Conflict`], as a row's key was.
pub(super) fn insert(
    conn: &Connection,
    batch: BatchId,
    batch_payer: Option<&str>,
    items: &[BatchItemRow],
) -> Result<()> {
    if items.is_empty() {
        return Ok(());
    }
    let mut sorted: Vec<&BatchItemRow> = items.iter().collect();
    if !items.windows(2).all(|w| w[0].index < w[1].index) {
        sorted.sort_by_key(|i| i.index);
        if let Some(w) = sorted.windows(2).find(|w| w[0].index == w[1].index) {
            return Err(already_stored(batch, w[0].index));
        }
    }
    let blob = id_blob(batch.0);
    let mut overlap = conn.prepare_cached(
        "SELECT last FROM batch_item_blocks WHERE batch = ?1 AND first <= ?2 ORDER BY first DESC LIMIT 1",
    )?;
    let mut write = conn.prepare_cached(
        "INSERT INTO batch_item_blocks (batch, first, last, invalid, data) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    let (mut data, mut body) = (Vec::new(), Vec::new());
    for block in sorted.chunks(BLOCK_ITEMS) {
        let (first, last) = (block[0].index, block[block.len() - 1].index);
        let before: Option<i64> = overlap.query_row(params![blob, int(last)], |r| r.get(0)).optional()?;
        if before.is_some_and(|end| end >= int(first)) {
            return Err(already_stored(batch, first));
        }
        data.clear();
        for item in block {
            encode_item(&mut data, &mut body, first, batch_payer, item);
        }
        let invalid = block.iter().filter(|i| i.status == ItemStatus::Invalid).count();
        write.execute(params![blob, int(first), int(last), invalid as i64, data])?;
    }
    Ok(())
}

fn already_stored(batch: BatchId, index: u64) -> StoreError {
    StoreError::Conflict(format!("items of batch {batch} from index {index} overlap items already stored"))
}

fn corrupt(first: u64, what: &str) -> StoreError {
    StoreError::Corrupt(format!("batch item block from index {first}: {what}"))
}

/// Reads a block's bytes.
struct Cursor<'a> {
    data: &'a [u8],
    first: u64,
}

impl<'a> Cursor<'a> {
    fn varint(&mut self) -> Result<u64> {
        let mut value = 0u64;
        for (k, byte) in self.data.iter().enumerate().take(10) {
            value |= u64::from(byte & 0x7f) << (7 * k);
            if byte & 0x80 == 0 {
                self.data = &self.data[k + 1..];
                return Ok(value);
            }
        }
        Err(corrupt(self.first, "a number runs past its end"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.data.len() < n {
            return Err(corrupt(self.first, "an item runs past the block's end"));
        }
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        Ok(head)
    }

    fn bytes(&mut self) -> Result<&'a [u8]> {
        let n = self.varint()?;
        self.take(usize::try_from(n).unwrap_or(usize::MAX))
    }

    fn id(&mut self) -> Result<u128> {
        let bytes: [u8; 16] = self.take(16)?.try_into().map_err(|_| corrupt(self.first, "an account id"))?;
        Ok(u128::from_be_bytes(bytes))
    }
}

/// The items of one block, in index order, each read only as far as its index and status.
pub(super) struct Block<'a> {
    cursor: Cursor<'a>,
}

impl<'a> Block<'a> {
    pub(super) fn new(first: u64, data: &'a [u8]) -> Block<'a> {
        Block { cursor: Cursor { data, first } }
    }

    /// The bytes not read yet.
    pub(super) fn remaining(&self) -> usize {
        self.cursor.data.len()
    }

    fn entry(&mut self) -> Result<Entry<'a>> {
        let body = self.cursor.bytes()?;
        let first = self.cursor.first;
        let mut body = Cursor { data: body, first };
        let index = first.checked_add(body.varint()?).ok_or_else(|| corrupt(first, "an index past 2^64"))?;
        let status = *ItemStatus::ALL
            .get(usize::from(body.take(1)?[0]))
            .ok_or_else(|| corrupt(first, "an unknown item status"))?;
        let flags = body.take(2)?;
        let flags = u16::from_le_bytes([flags[0], flags[1]]);
        Ok(Entry { index, status, flags, rest: body })
    }
}

impl<'a> Iterator for Block<'a> {
    type Item = Result<Entry<'a>>;

    fn next(&mut self) -> Option<Result<Entry<'a>>> {
        if self.cursor.data.is_empty() {
            return None;
        }
        let entry = self.entry();
        if entry.is_err() {
            // Nothing after a bad item can be trusted.
            self.cursor.data = &[];
        }
        Some(entry)
    }
}

/// One item of a block: its index and stored status, the rest not decoded yet.
pub(super) struct Entry<'a> {
    pub(super) index: u64,
    pub(super) status: ItemStatus,
    flags: u16,
    rest: Cursor<'a>,
}

/// An item's fields as stored, not copied.
pub(super) struct Fields<'a> {
    pub(super) line: u64,
    location: Option<&'a [u8]>,
    pub(super) reference: Option<&'a [u8]>,
    instruction_id: Option<&'a [u8]>,
    payment_information_id: Option<&'a [u8]>,
    payer_text: Option<&'a [u8]>,
    payee_text: Option<&'a [u8]>,
    pub(super) payer: Option<AccountId>,
    pub(super) payee: Option<AccountId>,
    pub(super) amount: Option<u64>,
    currency: Option<&'a [u8]>,
    failure_code: Option<&'a [u8]>,
    message: Option<&'a [u8]>,
    pub(super) remittance: Option<&'a [u8]>,
}

impl<'a> Entry<'a> {
    pub(super) fn fields(&self) -> Result<Fields<'a>> {
        let mut c = Cursor { data: self.rest.data, first: self.rest.first };
        let flags = self.flags;
        let has = |flag: u16| flags & flag != 0;
        let text = |flag: u16, c: &mut Cursor<'a>| -> Result<Option<&'a [u8]>> {
            if has(flag) {
                c.bytes().map(Some)
            } else {
                Ok(None)
            }
        };
        let line = c.varint()?;
        let location = text(LOCATION, &mut c)?;
        let reference = text(REFERENCE, &mut c)?;
        let instruction_id = text(INSTRUCTION_ID, &mut c)?;
        let payment_information_id = text(PAYMENT_INFORMATION_ID, &mut c)?;
        let payer_text = text(PAYER_TEXT, &mut c)?;
        let payee_text = text(PAYEE_TEXT, &mut c)?;
        let payer = if has(PAYER) { Some(AccountId(c.id()?)) } else { None };
        let payee = if has(PAYEE) { Some(AccountId(c.id()?)) } else { None };
        let amount = if has(AMOUNT) { Some(c.varint()?) } else { None };
        let currency = text(CURRENCY, &mut c)?;
        let failure_code = text(FAILURE_CODE, &mut c)?;
        let message = text(MESSAGE, &mut c)?;
        let remittance = text(REMITTANCE, &mut c)?;
        Ok(Fields {
            line,
            location,
            reference,
            instruction_id,
            payment_information_id,
            payer_text,
            payee_text,
            payer,
            payee,
            amount,
            currency,
            failure_code,
            message,
            remittance,
        })
    }

    /// The currency, if the item has one.
    pub(super) fn currency(&self, fields: &Fields<'_>) -> Result<Option<Currency>> {
        fields
            .currency
            .map(|code| {
                std::str::from_utf8(code)
                    .ok()
                    .and_then(Currency::from_code)
                    .ok_or_else(|| corrupt(self.rest.first, "an unknown currency"))
            })
            .transpose()
    }

    /// The item as a report reads it ([`ItemView`]), its texts borrowed from the block, not
    /// copied; `batch_payer` is the batch's payer text. `derived` is the status and code its
    /// results give it, for an item that is not invalid (an invalid item keeps its own).
    /// A payee text that is the payee's own id is written into `scratch`.
    pub(super) fn view<'s>(
        &'s self,
        batch_payer: Option<&'s str>,
        derived: (ItemStatus, Option<&'s str>),
        scratch: &'s mut Vec<u8>,
    ) -> Result<ItemView<'s>> {
        let f = self.fields()?;
        let first = self.rest.first;
        let text = |bytes: Option<&'s [u8]>| -> Result<Option<&'s str>> {
            bytes.map(|b| std::str::from_utf8(b).map_err(|_| corrupt(first, "a text not in UTF-8"))).transpose()
        };
        let payer_text = match self.flags & PAYER_TEXT_OF_BATCH {
            0 => text(f.payer_text)?,
            _ => Some(batch_payer.ok_or_else(|| corrupt(first, "a payer text of a batch without a payer"))?),
        };
        let payee_text = match (self.flags & PAYEE_TEXT_OF_PAYEE, f.payee) {
            (0, _) => text(f.payee_text)?,
            (_, Some(payee)) => {
                scratch.clear();
                payee.push_text(scratch);
                Some(std::str::from_utf8(scratch).map_err(|_| corrupt(first, "an account id's text"))?)
            }
            (_, None) => return Err(corrupt(first, "a payee text of an item without a payee")),
        };
        let (status, failure_code) = match self.status {
            ItemStatus::Invalid => (ItemStatus::Invalid, text(f.failure_code)?),
            _ => derived,
        };
        Ok(ItemView {
            index: self.index,
            line: f.line,
            reference: text(f.reference)?,
            instruction_id: text(f.instruction_id)?,
            payment_information_id: text(f.payment_information_id)?,
            payer_text,
            payee_text,
            payer: f.payer,
            payee: f.payee,
            amount: f.amount,
            currency: self.currency(&f)?,
            status,
            failure_code,
        })
    }

    /// The whole item, as it was written; `batch_payer` is the batch's payer text.
    pub(super) fn row(&self, batch_payer: Option<&str>) -> Result<BatchItemRow> {
        let f = self.fields()?;
        let first = self.rest.first;
        let text = |bytes: Option<&[u8]>| -> Result<Option<String>> {
            bytes
                .map(|b| std::str::from_utf8(b).map(str::to_owned).map_err(|_| corrupt(first, "a text not in UTF-8")))
                .transpose()
        };
        let location = match text(f.location)? {
            Some(location) => location,
            None => line_location(f.line),
        };
        let payer_text = match self.flags & PAYER_TEXT_OF_BATCH {
            0 => text(f.payer_text)?,
            _ => Some(batch_payer.ok_or_else(|| corrupt(first, "a payer text of a batch without a payer"))?.to_owned()),
        };
        let payee_text = match (self.flags & PAYEE_TEXT_OF_PAYEE, f.payee) {
            (0, _) => text(f.payee_text)?,
            (_, Some(payee)) => {
                // What `Display` writes, without a formatter: a third of the cost of `to_string`.
                let mut text = Vec::with_capacity(32);
                payee.push_text(&mut text);
                Some(String::from_utf8(text).map_err(|_| corrupt(first, "an account id's text"))?)
            }
            (_, None) => return Err(corrupt(first, "a payee text of an item without a payee")),
        };
        Ok(BatchItemRow {
            index: self.index,
            line: f.line,
            location,
            reference: text(f.reference)?,
            instruction_id: text(f.instruction_id)?,
            payment_information_id: text(f.payment_information_id)?,
            payer_text,
            payee_text,
            payer: f.payer,
            payee: f.payee,
            amount: f.amount,
            currency: self.currency(&f)?,
            status: self.status,
            failure_code: text(f.failure_code)?,
            message: text(f.message)?,
            remittance: text(f.remittance)?,
        })
    }
}

/// A block read into memory, and the item a reader stopped at, so that reads of indexes after
/// it (the stretches of a status listing, a statement's next transfer) start there rather
/// than at the block's start.
pub(super) struct Loaded {
    pub(super) batch: BatchId,
    pub(super) first: u64,
    pub(super) last: u64,
    data: Vec<u8>,
    /// The index and byte offset of the item visited last.
    mark: (u64, usize),
}

impl Loaded {
    pub(super) fn new(batch: BatchId, first: u64, last: u64, data: Vec<u8>) -> Loaded {
        Loaded { batch, first, last, data, mark: (first, 0) }
    }

    /// Whether the block's indexes include `index`.
    pub(super) fn covers(&self, index: u64) -> bool {
        (self.first..=self.last).contains(&index)
    }

    /// Calls `visit` with each item from index `from` on, in order, until it answers false.
    pub(super) fn visit(&mut self, from: u64, mut visit: impl FnMut(&Entry<'_>) -> Result<bool>) -> Result<()> {
        let offset = if self.mark.0 <= from { self.mark.1 } else { 0 };
        let mut block = Block::new(self.first, self.data.get(offset..).unwrap_or_default());
        let mut position = offset;
        loop {
            let (start, before) = (position, block.remaining());
            let Some(entry) = block.next() else { return Ok(()) };
            let entry = entry?;
            position += before - block.remaining();
            if entry.index < from {
                continue;
            }
            self.mark = (entry.index, start);
            if !visit(&entry)? {
                return Ok(());
            }
        }
    }
}

/// `line N`, as `format!("line {line}")` writes it, without a formatter.
#[allow(clippy::cast_possible_truncation)] // a digit, below 10
fn line_location(line: u64) -> String {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut n = line;
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let mut location = String::with_capacity(5 + digits.len() - at);
    location.push_str("line ");
    location.extend(digits[at..].iter().map(|d| char::from(*d)));
    location
}

/// A text field as a `&str`.
pub(super) fn text_of(bytes: Option<&[u8]>) -> Result<Option<&str>> {
    bytes
        .map(|b| std::str::from_utf8(b).map_err(|_| StoreError::Corrupt("a batch item's text is not UTF-8".into())))
        .transpose()
}

/// The blob in column `i` of a row, not copied.
pub(super) fn blob_at<'r>(row: &'r rusqlite::Row<'_>, i: usize) -> Result<&'r [u8]> {
    row.get_ref(i)?.as_blob().map_err(|e| {
        StoreError::from(rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Blob, Box::new(e)))
    })
}

/// The last index of a batch's items; `None` if it has none.
pub(super) fn last_index(conn: &Connection, blob: &[u8; 16]) -> Result<Option<u64>> {
    let last: Option<i64> = conn
        .prepare_cached("SELECT last FROM batch_item_blocks WHERE batch = ?1 ORDER BY first DESC LIMIT 1")?
        .query_row([blob], |r| r.get(0))
        .optional()?;
    Ok(last.and_then(|l| u64::try_from(l).ok()))
}

/// The first block of a batch (`?1`) that holds an index in `?2..=?3`: the one that starts at
/// or before `?2` if it reaches it, else the first that starts within the range. Both bounds
/// are on the key's index: no block before the range is read.
pub(super) const BLOCKS_SQL: &str = "SELECT first, last, data FROM batch_item_blocks
     WHERE batch = ?1 AND first <= ?3 AND last >= ?2
       AND first >= coalesce(
           (SELECT first FROM batch_item_blocks WHERE batch = ?1 AND first <= ?2 ORDER BY first DESC LIMIT 1), ?2)
     ORDER BY first LIMIT 1";

/// Every block of a batch (`?1`) that holds an index in `?2..=?3`, in index order: as
/// [`BLOCKS_SQL`], not only the first.
pub(super) const WALK_SQL: &str = "SELECT first, data FROM batch_item_blocks
     WHERE batch = ?1 AND first <= ?3 AND last >= ?2
       AND first >= coalesce(
           (SELECT first FROM batch_item_blocks WHERE batch = ?1 AND first <= ?2 ORDER BY first DESC LIMIT 1), ?2)
     ORDER BY first";

/// The blocks of a batch (`?1`) with an invalid item after `?2`, in index order.
pub(super) const INVALID_BLOCKS_SQL: &str = "SELECT first, data FROM batch_item_blocks
     WHERE batch = ?1 AND invalid > 0 AND last > ?2
       AND first >= coalesce(
           (SELECT first FROM batch_item_blocks WHERE batch = ?1 AND first <= ?2 ORDER BY first DESC LIMIT 1), 0)
     ORDER BY first";

/// Moves the rows of the table `batch_items` (one per item, migrations 0002 to 0022) into
/// blocks, then drops it: run by migration 0023, in its transaction. A row was stored narrower
/// than it read (a valid item's payer text NULL when it was the batch's payer, its payee text
/// empty when it was the payee's own id, its location empty when it was `line N`); each is
/// read back whole, as the listing then read it, and written as a block item.
pub(super) fn convert(conn: &Connection) -> Result<()> {
    let batches: Vec<([u8; 16], Option<String>)> = conn
        .prepare(
            "SELECT i.batch, (SELECT payer FROM batches WHERE id = i.batch)
             FROM (SELECT DISTINCT batch FROM batch_items) i",
        )?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut rows = conn.prepare(
        "SELECT idx, line, location, reference, instruction_id, payment_information_id, payer_text,
             payee_text, payer, payee, amount, currency, status, failure_code, message, remittance
         FROM batch_items WHERE batch = ?1 ORDER BY idx",
    )?;
    for (blob, payer) in &batches {
        let batch = BatchId(u128::from_be_bytes(*blob));
        let mut chunk = Vec::with_capacity(BLOCK_ITEMS);
        let mut found = rows.query([blob])?;
        while let Some(row) = found.next()? {
            chunk.push(legacy_row(row, payer.as_deref())?);
            if chunk.len() == BLOCK_ITEMS {
                insert(conn, batch, payer.as_deref(), &chunk)?;
                chunk.clear();
            }
        }
        insert(conn, batch, payer.as_deref(), &chunk)?;
    }
    drop(rows);
    conn.execute_batch("DROP TABLE batch_items")?;
    Ok(())
}

/// A `batch_items` row read back whole, as the listing read it before migration 0023.
fn legacy_row(row: &rusqlite::Row, batch_payer: Option<&str>) -> Result<BatchItemRow> {
    use super::codec::{currency_at, id_at, uint_at};
    let status: String = row.get(12)?;
    let status = ItemStatus::parse(&status).ok_or_else(|| StoreError::Corrupt(format!("item status {status:?}")))?;
    let amount: Option<i64> = row.get(10)?;
    let mut item = BatchItemRow {
        index: uint_at(row, 0)?,
        line: uint_at(row, 1)?,
        location: row.get(2)?,
        reference: row.get(3)?,
        instruction_id: row.get(4)?,
        payment_information_id: row.get(5)?,
        payer_text: row.get(6)?,
        payee_text: row.get(7)?,
        payer: id_at(row, 8)?.map(AccountId),
        payee: id_at(row, 9)?.map(AccountId),
        amount: amount.and_then(|a| u64::try_from(a).ok()),
        currency: currency_at(row, 11)?,
        status,
        failure_code: row.get(13)?,
        message: row.get(14)?,
        remittance: row.get(15)?,
    };
    if item.location.is_empty() {
        item.location = format!("line {}", item.line);
    }
    if item.status != ItemStatus::Invalid {
        if item.payer_text.is_none() {
            item.payer_text = batch_payer.map(str::to_owned);
        }
        if let (Some(""), Some(payee)) = (item.payee_text.as_deref(), item.payee) {
            item.payee_text = Some(payee.to_string());
        }
    }
    Ok(item)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn item(index: u64) -> BatchItemRow {
        BatchItemRow {
            index,
            line: index + 2,
            location: format!("line {}", index + 2),
            reference: Some(format!("inv-{index}")),
            instruction_id: None,
            payment_information_id: None,
            payer_text: Some("acc-payer".into()),
            payee_text: Some(AccountId(7).to_string()),
            payer: Some(AccountId(2)),
            payee: Some(AccountId(7)),
            amount: Some(12_345),
            currency: Currency::from_code("EUR"),
            status: ItemStatus::Pending,
            failure_code: None,
            message: None,
            remittance: None,
        }
    }

    fn encode(first: u64, payer: Option<&str>, items: &[BatchItemRow]) -> Vec<u8> {
        let (mut data, mut body) = (Vec::new(), Vec::new());
        for i in items {
            encode_item(&mut data, &mut body, first, payer, i);
        }
        data
    }

    fn decode(first: u64, payer: Option<&str>, data: &[u8]) -> Vec<BatchItemRow> {
        Block::new(first, data).map(|e| e.unwrap().row(payer).unwrap()).collect()
    }

    #[test]
    fn every_field_reads_back_as_written() {
        let mut odd = item(1_000_000);
        odd.location = "line 01".into(); // not as `line N` writes it: stored
        odd.instruction_id = Some("instr é".into());
        odd.payment_information_id = Some(String::new());
        odd.payer_text = Some("someone else".into());
        odd.payee_text = Some(AccountId(7).to_string().to_uppercase()); // an alias spelling
        odd.status = ItemStatus::Invalid;
        odd.failure_code = Some("same_account".into());
        odd.message = Some("payer and payee: one account".into());
        odd.remittance = Some("Invoice 0 & <co>".into());
        odd.amount = Some(u64::MAX);
        let mut bare = item(1_000_001);
        bare.location = String::new();
        bare.reference = None;
        bare.payer_text = None;
        bare.payee_text = None;
        bare.payer = None;
        bare.payee = None;
        bare.amount = None;
        bare.currency = None;
        // A valid item with no payer text stays without one, even in a batch with a payer.
        let items = vec![item(999_999), odd, bare];
        let data = encode(999_999, Some("acc-payer"), &items);
        assert_eq!(decode(999_999, Some("acc-payer"), &data), items);
        // Texts the batch or the payee already say take no bytes: the first item is its length,
        // index, status, flags and line (10 bytes), its reference (11), accounts (32), amount
        // (2) and currency (4).
        let one = encode(0, Some("acc-payer"), &items[..1]);
        assert_eq!(one.len(), 59);
        let has = |needle: &[u8]| one.windows(needle.len()).any(|w| w == needle);
        assert!(!has(b"acc-payer") && !has(AccountId(7).to_string().as_bytes()) && !has(b"line"));
        assert!(data.windows(7).any(|w| w == b"line 01") && data.windows(12).any(|w| w == b"someone else"));
    }

    #[test]
    fn a_line_location_is_written_as_format_writes_it() {
        for line in [0, 1, 9, 10, 99, 100, 12_345, u64::MAX] {
            assert_eq!(line_location(line), format!("line {line}"));
            // `line 0` is stored as given (a leading zero is refused, so `line 01` is too).
            assert_eq!(is_line_location(&line_location(line), line), line > 0);
        }
    }

    #[test]
    fn statuses_survive_and_a_cut_block_is_corrupt_not_a_panic() {
        let items: Vec<BatchItemRow> = ItemStatus::ALL
            .iter()
            .enumerate()
            .map(|(k, s)| BatchItemRow { status: *s, ..item(k as u64 * 3) })
            .collect();
        let data = encode(0, None, &items);
        assert_eq!(decode(0, None, &data), items);
        for cut in 0..data.len() {
            let read: Vec<Result<BatchItemRow>> =
                Block::new(0, &data[..cut]).map(|e| e.and_then(|e| e.row(None))).collect();
            let complete = read.iter().filter(|r| r.is_ok()).count();
            assert!(complete <= items.len());
            // Whatever was cut short says so; nothing reads past the end.
            if let Some(Err(e)) = read.last() {
                assert!(matches!(e, StoreError::Corrupt(_)), "{e:?}");
            }
        }
    }
}
