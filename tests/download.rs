//! Downloading and caching against a small HTTP server on 127.0.0.1 started by the test:
//! first download, cache hit, checksum mismatch, 404, connection cut mid-file, offline mode.

#![cfg(feature = "pretrained")]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use efficientnet_burn::Error;
use efficientnet_burn::pretrained::download::Cache;

/// The body every route serves (or claims to).
const BODY: &[u8] = b"pretend these are 64 bytes of EfficientNet weights............!";
/// SHA-256 of `BODY`, first 8 hex digits (checked in `body_hash_prefix_is_right`).
const PREFIX: &str = "1c072dec";

/// Serves: `/fixture/<file>` (a test fixture), `/ok/w.pth` (BODY), `/missing` (404), `/cut/w.pth` (claims 64 bytes, sends 20 and
/// closes). Counts requests. Runs until the test process ends.
fn serve() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            counter.fetch_add(1, Ordering::SeqCst);
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            let _ = reader.read_line(&mut request_line);
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let path = request_line
                .split_whitespace()
                .nth(1)
                .unwrap_or("/")
                .to_string();
            let head = |status: &str, length: usize| {
                format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n"
                )
            };
            let _ = if let Some(name) = path.strip_prefix("/fixture/") {
                let bytes = std::fs::read(
                    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                        .join("tests/fixtures")
                        .join(name),
                )
                .unwrap_or_default();
                stream
                    .write_all(head("200 OK", bytes.len()).as_bytes())
                    .and_then(|()| stream.write_all(&bytes))
            } else if path.starts_with("/ok/") || path.starts_with("/bad/") {
                stream
                    .write_all(head("200 OK", BODY.len()).as_bytes())
                    .and_then(|()| stream.write_all(BODY))
            } else if path.starts_with("/cut/") {
                stream
                    .write_all(head("200 OK", BODY.len()).as_bytes())
                    .and_then(|()| stream.write_all(&BODY[..20]))
            } else {
                stream.write_all(head("404 Not Found", 0).as_bytes())
            };
        }
    });
    (base, hits)
}

fn empty_cache(name: &str) -> Cache {
    let dir: PathBuf = std::env::temp_dir().join(format!(
        "efficientnet-burn-cache-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    Cache::new(dir)
}

fn files_in(cache: &Cache) -> Vec<String> {
    std::fs::read_dir(&cache.dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn first_download_then_cache_hit() {
    let (base, hits) = serve();
    let cache = empty_cache("hit");
    let url = format!("{base}/ok/w-{PREFIX}.pth");
    let path = cache.fetch(&url, Some(PREFIX)).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), BODY);
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    // Second time: from the cache, no request.
    assert_eq!(cache.fetch(&url, Some(PREFIX)).unwrap(), path);
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    assert_eq!(files_in(&cache), [format!("w-{PREFIX}.pth")]);
    // Offline with the file cached works.
    let offline = Cache {
        offline: true,
        ..cache
    };
    assert_eq!(offline.fetch(&url, Some(PREFIX)).unwrap(), path);
}

#[test]
fn checksum_mismatch_is_an_error_and_caches_nothing() {
    let (base, _) = serve();
    let cache = empty_cache("checksum");
    let err = cache
        .fetch(&format!("{base}/bad/w-deadbeef.pth"), Some("deadbeef"))
        .unwrap_err();
    assert!(matches!(err, Error::ChecksumMismatch { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("expected SHA-256 starting deadbeef"),
        "{err}"
    );
    assert!(files_in(&cache).is_empty(), "{:?}", files_in(&cache));
}

#[test]
fn not_found_is_an_error() {
    let (base, _) = serve();
    let cache = empty_cache("404");
    let err = cache
        .fetch(&format!("{base}/missing/w.pth"), None)
        .unwrap_err();
    assert!(matches!(err, Error::Download { .. }), "{err:?}");
    assert!(err.to_string().contains("404"), "{err}");
    assert!(files_in(&cache).is_empty());
}

#[test]
fn connection_cut_mid_file_is_an_error_and_caches_nothing() {
    let (base, _) = serve();
    let cache = empty_cache("cut");
    let err = cache.fetch(&format!("{base}/cut/w.pth"), None).unwrap_err();
    assert!(matches!(err, Error::Download { .. }), "{err:?}");
    println!("{err}");
    assert!(files_in(&cache).is_empty(), "{:?}", files_in(&cache));
}

#[test]
fn offline_without_a_cached_file_fails_clearly() {
    let (base, hits) = serve();
    let cache = Cache {
        offline: true,
        ..empty_cache("offline")
    };
    let err = cache.fetch(&format!("{base}/ok/w.pth"), None).unwrap_err();
    assert!(
        err.to_string()
            .contains("offline (EFFICIENTNET_OFFLINE) and not in the cache"),
        "{err}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 0);
}

#[test]
fn body_hash_prefix_is_right() {
    use sha2::Digest;
    let hash: String = sha2::Sha256::digest(BODY)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(hash.starts_with(PREFIX), "{hash}");
}

#[test]
fn a_downloaded_checkpoint_loads_with_parity() {
    use burn::tensor::{Device, Tensor, TensorData};
    use efficientnet_burn::{EfficientNet, EfficientNetConfig, WeightSource};

    let (base, _) = serve();
    let cache = empty_cache("load");
    let path = cache
        .fetch(&format!("{base}/fixture/timm_small.pth"), None)
        .unwrap();
    let config = EfficientNetConfig::new()
        .with_width(0.25)
        .with_depth(0.34)
        .with_num_classes(10);
    let device = Device::default();
    let model =
        EfficientNet::from_pytorch(path, config.clone(), WeightSource::Timm, &device).unwrap();
    let local = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/timm_small.pth");
    let original = EfficientNet::from_pytorch(local, config, WeightSource::Timm, &device).unwrap();
    let input = Tensor::<4>::from_data(
        TensorData::new(vec![0.5f32; 3 * 32 * 32], [1, 3, 32, 32]),
        &device,
    );
    model
        .forward(input.clone())
        .into_data()
        .assert_eq(&original.forward(input).into_data(), true);
}
