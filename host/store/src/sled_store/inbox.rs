//! The inbox: signals left as files while another process holds the
//! store, for that process to collect.

use super::*;

/// The folder of `store` where signals wait while another process holds it.
pub fn inbox_dir(store: &Path) -> PathBuf {
    store.join("inbox")
}

/// Leaves `signal` in the inbox of the store at `store`, for the process
/// that holds it to collect. Written to a temporary name and renamed, so
/// the collector never reads half a file.
///
/// # Errors
/// When the inbox cannot be written.
pub fn post_signal(store: &Path, signal: &Signal) -> std::io::Result<PathBuf> {
    let inbox = inbox_dir(store);
    std::fs::create_dir_all(&inbox)?;
    let name = uuid::Uuid::now_v7().to_string();
    let partial = inbox.join(format!(".{name}.partial"));
    let path = inbox.join(format!("{name}.json"));
    std::fs::write(&partial, encode(signal))?;
    std::fs::rename(&partial, &path)?;
    Ok(path)
}
