//! Downloading and caching registry weights (feature `pretrained`).
//!
//! The cache directory is `$EFFICIENTNET_CACHE`, else the platform cache directory
//! (`~/.cache/efficientnet-burn` on Linux). A download goes to a temporary file in that
//! directory, is hashed as it arrives, and is renamed into place only once it is complete and
//! its SHA-256 matches; on any failure nothing is left behind. With `EFFICIENTNET_OFFLINE=1`
//! nothing is downloaded: a cached file is used or the call fails.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

use crate::error::Error;

/// Where downloaded weights are kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cache {
    /// The directory.
    pub dir: PathBuf,
    /// Never download; use only what is cached.
    pub offline: bool,
}

impl Cache {
    /// The cache the environment describes: `$EFFICIENTNET_CACHE` (else the platform cache
    /// directory) and `$EFFICIENTNET_OFFLINE` (`1` or `true`).
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
        Ok(Self { dir, offline })
    }

    /// A cache in `dir`, online.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            offline: false,
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

    /// The cached file for `url`, downloading it first if needed. `sha256_prefix` (the
    /// leading hex digits of the file's SHA-256, as far as the publisher gives them) is
    /// checked on download.
    pub fn fetch(&self, url: &str, sha256_prefix: Option<&str>) -> Result<PathBuf, Error> {
        let target = self.path_for(url);
        if target.is_file() {
            return Ok(target);
        }
        if self.offline {
            return Err(Error::Download {
                url: url.to_string(),
                reason: format!(
                    "offline (EFFICIENTNET_OFFLINE) and not in the cache at {}",
                    target.display()
                ),
            });
        }
        std::fs::create_dir_all(&self.dir).map_err(Error::write(&self.dir))?;
        let partial = self.dir.join(format!(
            ".{}.partial-{}",
            target
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("weights"),
            std::process::id()
        ));
        let result = download(url, &partial, sha256_prefix)
            .and_then(|()| std::fs::rename(&partial, &target).map_err(Error::write(&target)));
        if result.is_err() {
            let _ = std::fs::remove_file(&partial);
        }
        result.map(|()| target)
    }
}

/// Streams `url` into `path`, hashing as it goes, and checks the hash prefix.
fn download(url: &str, path: &Path, sha256_prefix: Option<&str>) -> Result<(), Error> {
    let failed = |reason: String| Error::Download {
        url: url.to_string(),
        reason,
    };
    let response = ureq::get(url).call().map_err(|e| failed(e.to_string()))?;
    let body = response.into_body();
    let length = body.content_length();
    let mut reader = body.into_reader();
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
        hasher.update(&buffer[..n]);
        writer.write_all(&buffer[..n]).map_err(Error::write(path))?;
        received += n as u64;
        progress.set_position(received);
    }
    writer.flush().map_err(Error::write(path))?;
    progress.finish_and_clear();
    if let Some(expected) = length
        && expected != received
    {
        return Err(failed(format!("got {received} of {expected} bytes")));
    }
    let actual: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if let Some(prefix) = sha256_prefix
        && !actual.starts_with(&prefix.to_ascii_lowercase())
    {
        return Err(Error::ChecksumMismatch {
            url: url.to_string(),
            expected: prefix.to_string(),
            actual,
        });
    }
    Ok(())
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
