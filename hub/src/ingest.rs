//! placeholder (gateway owner)
/// Queue into the batch writer.
#[derive(Clone)]
pub struct IngestHandle {}
