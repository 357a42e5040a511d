//! ZIP and tar parts of a batch (CONTRACT §2): each is opened by compute's
//! `FileService.Extract` on the heavy lane, and every entry becomes one item of the batch, in
//! order of appearance. Entries that are not images (text, an archive inside the archive) and
//! an archive that does not open fail their own item; an archive above compute's limits, or
//! more items than the batch's file limit, fail the request (413), as a limit does.

use bytes::Bytes;

use super::intake::{BudgetHold, FilePart, Limits};
use super::problem::Problem;
use crate::dispatch::{DispatchError, Dispatcher};
use crate::proto::ExtractRequest;
use crate::vocab::errors::{reason, reason_of};
use crate::vocab::media::{sniff_readable, ArchiveKind};

/// One item of a batch.
#[derive(Debug)]
pub enum Item {
    /// Bytes for compute (an image, or a file compute will judge and fail on its own).
    Image {
        /// The bytes as uploaded or extracted.
        data: Bytes,
        /// Its name inside the archive; `None` for a file uploaded as it is.
        name: Option<String>,
    },
    /// Failed at the edge: its `progress` event carries `error`.
    Failed {
        /// Why, for the client.
        error: String,
        /// Its name inside the archive, if it came from one.
        name: Option<String>,
    },
}

impl Item {
    /// The entry's name inside its archive, if it came from one.
    pub fn name(&self) -> Option<&str> {
        match self {
            Item::Image { name, .. } | Item::Failed { name, .. } => name.as_deref(),
        }
    }
}

/// Whether a part is an archive to open rather than an image.
fn is_archive(part: &FilePart) -> bool {
    part.format.is_none() && ArchiveKind::sniff(&part.data).is_some()
}

/// The batch's items: each file part as it is, each archive part replaced by its entries.
/// The unpacked entries stay in memory until the batch ends, so they are held in the BFF's body
/// budget (`hold`) beside the upload itself: past `bff.max_buffered_bytes`, 503 as for uploads.
pub async fn expand(
    dispatcher: &Dispatcher,
    parts: &[FilePart],
    limits: &Limits,
    mut hold: Option<&mut BudgetHold>,
) -> Result<Vec<Item>, Problem> {
    let max_items = limits.max_files;
    let mut items = Vec::with_capacity(parts.len());
    for (number, part) in parts.iter().enumerate() {
        if !is_archive(part) {
            items.push(Item::Image {
                data: part.data.clone(),
                name: None,
            });
            continue;
        }
        let request = ExtractRequest {
            archive: part.data.clone(),
        };
        match dispatcher.extract(request).await {
            Ok(response) => {
                let unpacked: usize = response.entries.iter().map(|e| e.data.len()).sum();
                if let Some(hold) = hold.as_deref_mut() {
                    hold.grow(unpacked, limits)?;
                }
                for entry in response.entries {
                    items.push(entry_item(entry.name, entry.data));
                }
            }
            Err(DispatchError::Status(status))
                if reason_of(&status).as_deref() == Some(reason::UNDECODABLE_ARCHIVE) =>
            {
                items.push(Item::Failed {
                    error: format!(
                        "file {} looks like an archive but does not open: {}",
                        number + 1,
                        status.message()
                    ),
                    name: None,
                });
            }
            Err(e) => return Err(e.into()),
        }
        if items.len() > max_items {
            return Err(too_many(max_items));
        }
    }
    if items.len() > max_items {
        return Err(too_many(max_items));
    }
    Ok(items)
}

fn too_many(max_items: usize) -> Problem {
    Problem::too_large(format!(
        "the batch has more than {max_items} items (each image inside an archive counts as one)"
    ))
}

/// An archive entry as a batch item: an image goes to compute, anything else fails here.
fn entry_item(name: String, data: Bytes) -> Item {
    if sniff_readable(&data).is_some() {
        return Item::Image {
            data,
            name: Some(name),
        };
    }
    let error = if ArchiveKind::sniff(&data).is_some() {
        format!(
            "entry `{name}` is an archive inside the archive: archives are opened one level deep"
        )
    } else {
        format!("entry `{name}` is not a supported image type (JPEG, PNG, WebP or GIF, judged by its bytes)")
    };
    Item::Failed {
        error,
        name: Some(name),
    }
}
