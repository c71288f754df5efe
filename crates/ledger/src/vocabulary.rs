//! The closed sets of names that batches and webhooks are described with. Each is an enum
//! with one spelling per value, written once, here: `as_str` gives it, `parse` (and
//! `FromStr`) reads it, `ALL` lists every value. Stores and the API speak these, never strings.

/// Defines an enum whose values each have one name.
macro_rules! vocabulary {
    ($(#[$meta:meta])* $name:ident { $($(#[$variant_meta:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$variant_meta])* $variant,)+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The value's one name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            /// The value with this name, if any.
            pub fn parse(text: &str) -> Option<$name> {
                match text {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl std::str::FromStr for $name {
            type Err = UnknownName;

            fn from_str(text: &str) -> Result<$name, UnknownName> {
                $name::parse(text).ok_or(UnknownName)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

pub(crate) use vocabulary;

/// A name that is none of a vocabulary's values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownName;

vocabulary! {
    /// Where a batch stands.
    BatchStatus {
        /// Taken in; its file is being validated. No money has moved.
        Validating = "validating",
        /// Refused as a whole (control totals, an invalid item under `reject_file`, …).
        Rejected = "rejected",
        /// Valid; its items are being paid.
        Processing = "processing",
        /// Every item was sent to the ledger (or an atomic batch was voided as a whole).
        Completed = "completed",
        /// Stopped on request; the items not yet sent never will be.
        Cancelled = "cancelled",
    }
}

impl BatchStatus {
    /// Whether the batch will change no more.
    pub fn is_final(self) -> bool {
        matches!(self, BatchStatus::Rejected | BatchStatus::Completed | BatchStatus::Cancelled)
    }
}

vocabulary! {
    /// How a batch's items are paid.
    BatchMode {
        /// Each item on its own: some may fail while the rest are paid.
        BestEffort = "best_effort",
        /// All or nothing: every item is held, then all are posted or all voided.
        Atomic = "atomic",
    }
}

vocabulary! {
    /// What a batch does with its invalid items.
    OnInvalid {
        /// One invalid item rejects the whole file.
        RejectFile = "reject_file",
        /// Invalid items are reported and skipped; the valid ones are paid.
        SkipInvalid = "skip_invalid",
    }
}

vocabulary! {
    /// The format of a batch file.
    BatchFormat {
        /// Comma-separated values with a header row.
        Csv = "csv",
        /// One JSON object per line.
        Jsonl = "jsonl",
        /// ISO 20022 customer credit transfer initiation (pain.001.001.03, .09, .03.ch.02).
        Pain001 = "pain.001",
        /// A NACHA ACH file (PPD and CCD entries).
        Nacha = "nacha",
        /// An interest run (`POST /v1/interest/runs`): no file, items made by the run.
        Interest = "interest",
        /// Refunds of earlier payments, one per CSV row (`payment,amount,reason`).
        Refunds = "refunds",
    }
}

vocabulary! {
    /// Where one item of a batch stands. Item rows store `invalid` or `pending`; the rest is
    /// derived from the results the engine committed.
    ItemStatus {
        /// Refused at validation; never sent to the ledger.
        Invalid = "invalid",
        /// Valid, not paid yet.
        Pending = "pending",
        /// Atomic batches: its amount is held, waiting for the rest.
        Held = "held",
        Succeeded = "succeeded",
        Failed = "failed",
        /// Atomic batches: held, then released because another item failed.
        Voided = "voided",
        /// Its batch was cancelled before it was sent.
        Cancelled = "cancelled",
        /// Succeeded, then returned by the receiving bank (a NACHA return, Addenda 99): the
        /// return's reversal moved the money back. Its code is the return's R-code.
        Returned = "returned",
    }
}

vocabulary! {
    /// What a webhook event says happened.
    EventKind {
        PaymentSucceeded = "payment.succeeded",
        PaymentFailed = "payment.failed",
        PaymentRequiresCapture = "payment.requires_capture",
        PaymentRefunded = "payment.refunded",
        PaymentExpired = "payment.expired",
        BatchCompleted = "batch.completed",
        BatchRejected = "batch.rejected",
        BatchCancelled = "batch.cancelled",
        /// A NACHA return reversed a succeeded batch item; the event's object is the
        /// reversal's transfer (see `paycore_store::ReturnStore::return_link`).
        BatchItemReturned = "batch_item.returned",
    }
}

impl EventKind {
    /// Whether the event's object is a payment (else a batch).
    pub fn is_payment(self) -> bool {
        matches!(
            self,
            EventKind::PaymentSucceeded
                | EventKind::PaymentFailed
                | EventKind::PaymentRequiresCapture
                | EventKind::PaymentRefunded
                | EventKind::PaymentExpired
        )
    }

    /// The event a payment's new status gives, if any.
    pub fn of_payment(status: crate::PaymentStatus) -> Option<EventKind> {
        match status {
            crate::PaymentStatus::Succeeded => Some(EventKind::PaymentSucceeded),
            crate::PaymentStatus::Failed => Some(EventKind::PaymentFailed),
            crate::PaymentStatus::RequiresCapture => Some(EventKind::PaymentRequiresCapture),
            crate::PaymentStatus::Expired => Some(EventKind::PaymentExpired),
            _ => None,
        }
    }

    /// The event a batch's new status gives, if any.
    pub fn of_batch(status: BatchStatus) -> Option<EventKind> {
        match status {
            BatchStatus::Completed => Some(EventKind::BatchCompleted),
            BatchStatus::Rejected => Some(EventKind::BatchRejected),
            BatchStatus::Cancelled => Some(EventKind::BatchCancelled),
            BatchStatus::Validating | BatchStatus::Processing => None,
        }
    }
}

impl From<crate::BatchItemState> for ItemStatus {
    fn from(state: crate::BatchItemState) -> ItemStatus {
        match state {
            crate::BatchItemState::Succeeded => ItemStatus::Succeeded,
            crate::BatchItemState::Failed => ItemStatus::Failed,
            crate::BatchItemState::Held => ItemStatus::Held,
            crate::BatchItemState::Voided => ItemStatus::Voided,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_reads_back_as_its_value_and_names_are_unique() {
        fn check<T: Copy + PartialEq + std::fmt::Debug>(
            all: &[T],
            as_str: fn(T) -> &'static str,
            parse: fn(&str) -> Option<T>,
        ) {
            let mut names: Vec<&str> = all.iter().map(|v| as_str(*v)).collect();
            for value in all {
                assert_eq!(parse(as_str(*value)), Some(*value));
            }
            names.sort_unstable();
            names.dedup();
            assert_eq!(names.len(), all.len());
            assert_eq!(parse("no such name"), None);
        }
        check(BatchStatus::ALL, BatchStatus::as_str, BatchStatus::parse);
        check(BatchMode::ALL, BatchMode::as_str, BatchMode::parse);
        check(OnInvalid::ALL, OnInvalid::as_str, OnInvalid::parse);
        check(BatchFormat::ALL, BatchFormat::as_str, BatchFormat::parse);
        check(ItemStatus::ALL, ItemStatus::as_str, ItemStatus::parse);
        check(EventKind::ALL, EventKind::as_str, EventKind::parse);
        assert_eq!("pain.001".parse::<BatchFormat>(), Ok(BatchFormat::Pain001));
        assert_eq!("PAIN.001".parse::<BatchFormat>(), Err(UnknownName));
    }

    #[test]
    fn events_name_their_object_and_every_final_batch_status_has_one() {
        for kind in EventKind::ALL {
            let prefix = match kind {
                kind if kind.is_payment() => "payment.",
                // Its object is an item of a batch (see `EventKind::BatchItemReturned`).
                EventKind::BatchItemReturned => "batch_item.",
                _ => "batch.",
            };
            assert!(kind.as_str().starts_with(prefix), "{kind}");
        }
        for status in BatchStatus::ALL {
            assert_eq!(EventKind::of_batch(*status).is_some(), status.is_final(), "{status}");
        }
    }

    #[test]
    fn only_rejected_completed_and_cancelled_are_final() {
        let finals: Vec<&str> = BatchStatus::ALL.iter().filter(|s| s.is_final()).map(|s| s.as_str()).collect();
        assert_eq!(finals, ["rejected", "completed", "cancelled"]);
    }
}
