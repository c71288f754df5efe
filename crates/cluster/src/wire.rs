//! STUB (replaced by the wire helper's module at merge).
use paycore_engine::{EngineError, Reply, Submission};

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("stub")]
    Stub,
}

pub fn encode_submission(_: &Submission) -> Vec<u8> {
    Vec::new()
}
pub fn decode_submission(_: &[u8]) -> Result<Submission, WireError> {
    Err(WireError::Stub)
}
pub fn encode_reply(_: &Result<Reply, EngineError>) -> Vec<u8> {
    Vec::new()
}
pub fn decode_reply(_: &[u8]) -> Result<Result<Reply, EngineError>, WireError> {
    Err(WireError::Stub)
}
