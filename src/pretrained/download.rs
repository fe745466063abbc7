//! Downloading and caching registry weights (feature `pretrained`).
//!
//! The cache directory is `$EFFICIENTNET_CACHE`, else the platform cache directory
//! (`~/.cache/efficientnet-burn` on Linux). With `EFFICIENTNET_OFFLINE=1` nothing is
//! downloaded: a cached file is used or the call fails.
//!
//! A download
//! - gives up on a server that does not connect, answer or send for
//!   `EFFICIENTNET_DOWNLOAD_TIMEOUT` seconds (default 30; per read, so a slow but steady
//!   large download is fine) and on a body larger than the entry can be (its parameter count
//!   in f32 and some slack, or 4 GiB when unknown);
//! - goes to a temporary file of its own (process, thread and a counter in the name), is
//!   hashed as it arrives and is renamed into place only once complete and matching the
//!   published SHA-256 prefix; on any failure nothing is left behind, and temporaries older
//!   than a day (from killed processes) are removed;
//! - holds a lock file beside its target, so processes and threads fetching the same file
//!   download it once;
//! - records the file's full SHA-256 beside it (`<file>.sha256`). A cached file is checked
//!   against that record on every use: a file altered or truncated since is downloaded again
//!   (an error when offline).

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

use crate::error::Error;

/// The largest download [`Cache::fetch`] accepts when the caller knows no size: 4 GiB.
pub const DEFAULT_MAX_DOWNLOAD_BYTES: u64 = 4 << 30;

/// The connect, response and per-read timeout when `EFFICIENTNET_DOWNLOAD_TIMEOUT` is not set.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Temporaries older than this are left over from killed processes and are removed.
const STALE_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

/// Where downloaded weights are kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cache {
    /// The directory.
    pub dir: PathBuf,
    /// Never download; use only what is cached.
    pub offline: bool,
    /// How long to wait for a connection, a response, or each read of the body.
    pub timeout: Duration,
}

impl Cache {
    /// The cache the environment describes: `$EFFICIENTNET_CACHE` (else the platform cache
    /// directory), `$EFFICIENTNET_OFFLINE` (`1` or `true`) and
    /// `$EFFICIENTNET_DOWNLOAD_TIMEOUT` (seconds).
    pub fn from_env() -> Result<Self, Error> {
        let dir = match std::env::var_os("EFFICIENTNET_CACHE") {
            Some(dir) => PathBuf::from(dir),
            None => dirs::cache_dir()
                .ok_or_else(|| {
                    Error::Cache("no cache directory: set EFFICIENTNET_CACHE".to_string())
                })?
                .join("efficientnet-burn"),
        };
        let offline = std::env::var("EFFICIENTNET_OFFLINE")
            .is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
        let timeout = match std::env::var("EFFICIENTNET_DOWNLOAD_TIMEOUT") {
            Ok(v) => v
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|s| *s > 0.0)
                .map_or_else(
                    || {
                        Err(Error::Cache(format!(
                            "EFFICIENTNET_DOWNLOAD_TIMEOUT must be a positive number of seconds, \
                         got {v:?}"
                        )))
                    },
                    |s| Ok(Duration::from_secs_f64(s)),
                )?,
            Err(_) => DEFAULT_TIMEOUT,
        };
        Ok(Self {
            dir,
            offline,
            timeout,
        })
    }

    /// A cache in `dir`, online, with the default timeout.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            offline: false,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Where `url` is cached: its file name, prefixed with the repository for Hugging Face
    /// addresses (whose file names are all `model.safetensors`).
    pub fn path_for(&self, url: &str) -> PathBuf {
        let path = url.split("://").nth(1).unwrap_or(url);
        let segments: Vec<&str> = path.split('/').collect();
        let base = segments.last().copied().unwrap_or("weights");
        let name = match segments.first() {
            Some(&"huggingface.co") if segments.len() > 3 => {
                format!("{}--{}--{base}", segments[1], segments[2])
            }
            _ => base.to_string(),
        };
        self.dir.join(name)
    }

    /// [`fetch_limited`](Self::fetch_limited) with a limit of 4 GiB.
    pub fn fetch(&self, url: &str, sha256_prefix: Option<&str>) -> Result<PathBuf, Error> {
        self.fetch_limited(url, sha256_prefix, DEFAULT_MAX_DOWNLOAD_BYTES)
    }

    /// The cached file for `url`, verified, downloading it first if it is missing or no
    /// longer matches its recorded hash. `sha256_prefix` (the leading hex digits of the
    /// file's SHA-256, as far as the publisher gives them) is checked on download; a body
    /// over `max_bytes` is refused.
    pub fn fetch_limited(
        &self,
        url: &str,
        sha256_prefix: Option<&str>,
        max_bytes: u64,
    ) -> Result<PathBuf, Error> {
        let target = self.path_for(url);
        let failed = |reason: String| Error::Download {
            url: url.to_string(),
            reason,
        };
        if self.offline {
            return match verify_cached(&target, sha256_prefix)? {
                Some(true) => Ok(target),
                Some(false) => Err(failed(format!(
                    "offline (EFFICIENTNET_OFFLINE) and the cached {} does not match its \
                     recorded SHA-256",
                    target.display()
                ))),
                None => Err(failed(format!(
                    "offline (EFFICIENTNET_OFFLINE) and not in the cache at {}",
                    target.display()
                ))),
            };
        }
        std::fs::create_dir_all(&self.dir).map_err(Error::write(&self.dir))?;
        remove_stale_temporaries(&self.dir);
        // One fetch of a file at a time, across threads and processes.
        let lock_path = sidecar(&target, "lock");
        let lock = File::create(&lock_path).map_err(Error::write(&lock_path))?;
        lock.lock().map_err(Error::write(&lock_path))?;
        if verify_cached(&target, sha256_prefix)? == Some(true) {
            return Ok(target);
        }
        let _ = std::fs::remove_file(&target);
        let partial = temporary_for(&target);
        let result = download(self, url, &partial, sha256_prefix, max_bytes).and_then(|hash| {
            std::fs::rename(&partial, &target).map_err(Error::write(&target))?;
            let record = sidecar(&target, "sha256");
            std::fs::write(&record, hash + "\n").map_err(Error::write(&record))
        });
        if result.is_err() {
            let _ = std::fs::remove_file(&partial);
        }
        result.map(|()| target)
    }
}

/// `target` with `.ext` appended to its file name.
fn sidecar(target: &Path, ext: &str) -> PathBuf {
    let mut name = target.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{ext}"));
    target.with_file_name(name)
}

/// A temporary name for a download of `target` that no other download shares: process id,
/// thread id and a process-wide counter.
fn temporary_for(target: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = target
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("weights");
    let thread = format!("{:?}", std::thread::current().id());
    let thread: String = thread.chars().filter(char::is_ascii_digit).collect();
    target.with_file_name(format!(
        ".{name}.partial-{}-{thread}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Removes `.*.partial-*` files in `dir` last modified more than a day ago.
fn remove_stale_temporaries(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let is_temporary = name
            .to_str()
            .is_some_and(|n| n.starts_with('.') && n.contains(".partial-"));
        let age = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok());
        if is_temporary && age.is_some_and(|age| age > STALE_AFTER) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// The SHA-256 of a file, in lower-case hex.
fn sha256_file(path: &Path) -> Result<String, Error> {
    let mut file = File::open(path).map_err(Error::io(path))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buffer).map_err(Error::io(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether the cached `target` is intact: `None` if there is none, else whether its SHA-256
/// equals the one recorded beside it. A file without a record (placed there by hand) is
/// accepted when it matches the published prefix (or none is published), and recorded.
fn verify_cached(target: &Path, sha256_prefix: Option<&str>) -> Result<Option<bool>, Error> {
    if !target.is_file() {
        return Ok(None);
    }
    let actual = sha256_file(target)?;
    let record = sidecar(target, "sha256");
    let intact = match std::fs::read_to_string(&record) {
        Ok(recorded) => recorded.trim() == actual,
        Err(_) => {
            let matches = sha256_prefix.is_none_or(|p| actual.starts_with(&p.to_ascii_lowercase()));
            if matches {
                std::fs::write(&record, actual + "\n").map_err(Error::write(&record))?;
            }
            matches
        }
    };
    Ok(Some(intact))
}

/// Streams `url` into `path`, hashing as it goes; checks the size cap and the hash prefix
/// and returns the full SHA-256.
fn download(
    cache: &Cache,
    url: &str,
    path: &Path,
    sha256_prefix: Option<&str>,
    max_bytes: u64,
) -> Result<String, Error> {
    let failed = |reason: String| Error::Download {
        url: url.to_string(),
        reason,
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(cache.timeout))
        .timeout_recv_response(Some(cache.timeout))
        .timeout_per_read(Some(cache.timeout))
        .build()
        .into();
    let response = agent.get(url).call().map_err(|e| failed(e.to_string()))?;
    let body = response.into_body();
    let length = body.content_length();
    if let Some(length) = length.filter(|&n| n > max_bytes) {
        return Err(failed(format!(
            "the server announces {length} bytes, more than these weights can be ({max_bytes})"
        )));
    }
    // ureq's own body limit is 10 MB by default: the cap here is ours.
    let mut reader = body.into_with_config().limit(u64::MAX).reader();
    let file = File::create(path).map_err(Error::write(path))?;
    let mut writer = BufWriter::new(file);
    let progress = match length {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::no_length(),
    };
    if let Ok(style) =
        ProgressStyle::with_template("{msg} {bar:40} {bytes}/{total_bytes} ({bytes_per_sec})")
    {
        progress.set_style(style);
    }
    progress.set_message(url.rsplit('/').next().unwrap_or(url).to_string());

    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 16];
    let mut received = 0u64;
    loop {
        let n = reader
            .read(&mut buffer)
            .map_err(|e| failed(format!("connection failed after {received} bytes: {e}")))?;
        if n == 0 {
            break;
        }
        received += n as u64;
        if received > max_bytes {
            return Err(failed(format!(
                "the body goes on past {max_bytes} bytes, more than these weights can be"
            )));
        }
        hasher.update(&buffer[..n]);
        writer.write_all(&buffer[..n]).map_err(Error::write(path))?;
        progress.set_position(received);
    }
    writer.flush().map_err(Error::write(path))?;
    progress.finish_and_clear();
    if let Some(expected) = length
        && expected != received
    {
        return Err(failed(format!("got {received} of {expected} bytes")));
    }
    let actual = hex(&hasher.finalize());
    if let Some(prefix) = sha256_prefix
        && !actual.starts_with(&prefix.to_ascii_lowercase())
    {
        return Err(Error::ChecksumMismatch {
            url: url.to_string(),
            expected: prefix.to_string(),
            actual,
        });
    }
    Ok(actual)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_names_keep_hugging_face_repositories_apart() {
        let cache = Cache::new("/c");
        assert_eq!(
            cache.path_for(
                "https://download.pytorch.org/models/efficientnet_b0_rwightman-7f5810bc.pth"
            ),
            PathBuf::from("/c/efficientnet_b0_rwightman-7f5810bc.pth")
        );
        assert_eq!(
            cache.path_for(
                "https://huggingface.co/timm/efficientnet_b0.ra_in1k/resolve/main/model.safetensors"
            ),
            PathBuf::from("/c/timm--efficientnet_b0.ra_in1k--model.safetensors")
        );
    }
}
