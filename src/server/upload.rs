//! Front end: reading a DoPut upload within the server's limits, each message measured
//! from its IPC header (decoded size, rows) before it is decoded.

use std::time::Duration;

use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use arrow_flight::sql::server::PeekableFlightDataStream;
use datafusion::arrow::array::RecordBatch;
use futures::TryStreamExt;
use tonic::Status;

use super::replies::flight_status;
use super::timed_out;
use crate::error::Result;

/// What an upload may hold: its bytes once decoded (all of its messages), and, for
/// parameters, its rows.
#[derive(Clone, Copy)]
pub(super) struct UploadLimit {
    pub(super) bytes: usize,
    pub(super) rows: Option<usize>,
}

/// Reads the batches of a DoPut within `timeout`. Each message is measured from its IPC
/// header before it is decoded (see [`decoded_size`]): an upload whose decoded bytes, or
/// whose rows, pass the limit is refused before it takes the memory.
pub(super) async fn read_batches(
    stream: PeekableFlightDataStream,
    limit: UploadLimit,
    timeout: Duration,
) -> Result<Vec<RecordBatch>, Status> {
    let (mut bytes, mut rows) = (0usize, 0usize);
    // An update sends a single message without data; the decoder refuses empty headers.
    let data = stream
        .try_filter(|fd| futures::future::ready(!fd.data_header.is_empty()))
        .and_then(move |fd| {
            let checked = decoded_size(&fd).and_then(|(b, r)| {
                bytes = bytes.saturating_add(b);
                rows = rows.saturating_add(r);
                if let Some(max) = limit.rows
                    && rows > max
                {
                    return Err(Status::resource_exhausted(format!(
                        "the upload binds more than the server's limit of {max} rows of \
                         parameters (--max-param-rows)"
                    )));
                }
                if bytes > limit.bytes {
                    return Err(Status::resource_exhausted(format!(
                        "the upload is larger than the server's limit of {:.2} MiB once \
                         decoded (--max-upload-mib)",
                        limit.bytes as f64 / f64::from(1 << 20)
                    )));
                }
                Ok(fd)
            });
            futures::future::ready(checked)
        })
        .map_err(FlightError::from);
    tokio::time::timeout(
        timeout,
        FlightRecordBatchStream::new_from_flight_data(data).try_collect(),
    )
    .await
    .map_err(|_| timed_out(timeout))?
    .map_err(flight_status)
}

/// The bytes a Flight message holds once decoded, and its rows, read from its IPC
/// header and the length prefixes of its body, without decoding it. A compressed buffer
/// counts at the length its prefix declares (what decompressing it allocates), not at
/// its size on the wire; a null column costs no buffer, so rows are counted apart.
pub(super) fn decoded_size(fd: &arrow_flight::FlightData) -> Result<(usize, usize), Status> {
    use datafusion::arrow::ipc::{MessageHeader, root_as_message};
    let message = root_as_message(&fd.data_header)
        .map_err(|e| Status::invalid_argument(format!("malformed IPC message header: {e}")))?;
    let batch = match message.header_type() {
        MessageHeader::RecordBatch => message.header_as_record_batch(),
        MessageHeader::DictionaryBatch => message
            .header_as_dictionary_batch()
            .and_then(|dictionary| dictionary.data()),
        _ => None,
    };
    let header = fd.data_header.len();
    let Some(batch) = batch else {
        return Ok((header.saturating_add(fd.data_body.len()), 0));
    };
    let rows = usize::try_from(batch.length()).unwrap_or(usize::MAX);
    let compressed = batch.compression().is_some();
    let mut bytes = header;
    for buffer in batch.buffers().into_iter().flatten() {
        let length = usize::try_from(buffer.length()).unwrap_or(usize::MAX);
        let decoded = if compressed && length >= 8 {
            // Each compressed buffer starts with its decompressed length as an i64 (-1:
            // stored uncompressed after the prefix).
            let prefix = usize::try_from(buffer.offset())
                .ok()
                .and_then(|start| fd.data_body.get(start..start.checked_add(8)?))
                .and_then(|p| <[u8; 8]>::try_from(p).ok())
                .map(i64::from_le_bytes);
            match prefix {
                Some(n) if n >= 0 => usize::try_from(n).unwrap_or(usize::MAX),
                _ => length,
            }
        } else {
            length
        };
        bytes = bytes.saturating_add(decoded);
    }
    // A column of nulls has no buffer, yet converting it (to the table's types, to
    // parameters) takes a value per row: a row counts at least 8 bytes a column.
    let columns = batch.nodes().map_or(0, |nodes| nodes.len());
    let per_row = rows.saturating_mul(columns).saturating_mul(8);
    Ok((bytes.max(per_row), rows))
}
