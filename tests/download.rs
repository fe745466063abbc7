//! Downloading and caching against a small HTTP server on 127.0.0.1 started by the test:
//! first download, cache hit, checksum mismatch, 404, connection cut mid-file, offline mode,
//! a server that stalls, a body that never ends, an announced size over the cap, two threads
//! fetching one file, a cached file altered afterwards, stale temporaries.

#![cfg(feature = "pretrained")]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use efficientnet_burn::Error;
use efficientnet_burn::WeightsCache as Cache;

/// The body every route serves (or claims to).
const BODY: &[u8] = b"pretend these are 64 bytes of EfficientNet weights............!";
/// SHA-256 of `BODY`, first 8 hex digits (checked in `body_hash_prefix_is_right`).
const PREFIX: &str = "1c072dec";

/// Serves: `/fixture/<file>` (a test fixture), `/ok/w.pth` (BODY), `/missing` (404),
/// `/cut/w.pth` (claims 64 bytes, sends 20 and closes), `/stall/w.pth` (headers, then
/// nothing for 10 s), `/endless/w.pth` (no length, BODY over and over until the client
/// leaves), `/huge/w.pth` (announces 10^12 bytes). Counts requests; serves each connection
/// on its own thread. Runs until the test process ends.
fn serve() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            counter.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || respond(stream));
        }
    });
    (base, hits)
}

/// Answers one request (see [`serve`]).
fn respond(mut stream: std::net::TcpStream) {
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
        format!("HTTP/1.1 {status}\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n")
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
    } else if path.starts_with("/stall/") {
        let sent = stream.write_all(head("200 OK", BODY.len()).as_bytes());
        std::thread::sleep(std::time::Duration::from_secs(10));
        sent
    } else if path.starts_with("/endless/") {
        let sent = stream.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
        // Until the client hangs up (bounded: 64 MiB at most).
        (0..(1 << 20))
            .try_for_each(|_| stream.write_all(BODY))
            .and(sent)
    } else if path.starts_with("/huge/") {
        stream.write_all(head("200 OK", 1_000_000_000_000).as_bytes())
    } else {
        stream.write_all(head("404 Not Found", 0).as_bytes())
    };
}

fn empty_cache(name: &str) -> Cache {
    let dir: PathBuf = std::env::temp_dir().join(format!(
        "efficientnet-burn-cache-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    Cache::new(dir)
}

/// The cache's files, sorted, without the lock files (which stay, empty, by design: removing
/// a lock file races with a process about to take it).
fn files_in(cache: &Cache) -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(&cache.dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| !name.ends_with(".lock"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
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
    // The file and the record of its full SHA-256.
    assert_eq!(
        files_in(&cache),
        [format!("w-{PREFIX}.pth"), format!("w-{PREFIX}.pth.sha256")]
    );
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

#[test]
fn a_stalled_server_times_out() {
    let (base, _) = serve();
    let cache = Cache {
        timeout: std::time::Duration::from_millis(300),
        ..empty_cache("stall")
    };
    let started = std::time::Instant::now();
    let err = cache
        .fetch(&format!("{base}/stall/w.pth"), None)
        .unwrap_err();
    assert!(matches!(err, Error::Download { .. }), "{err:?}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "{err}"
    );
    println!("{err}");
    assert!(files_in(&cache).is_empty(), "{:?}", files_in(&cache));
}

#[test]
fn an_endless_body_stops_at_the_cap() {
    let (base, _) = serve();
    let cache = empty_cache("endless");
    let err = cache
        .fetch_limited(&format!("{base}/endless/w.pth"), None, 1 << 20)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("the body goes on past 1048576 bytes"),
        "{err}"
    );
    assert!(files_in(&cache).is_empty(), "{:?}", files_in(&cache));
    let err = cache
        .fetch_limited(&format!("{base}/huge/w.pth"), None, 1 << 20)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("the server announces 1000000000000 bytes"),
        "{err}"
    );
}

#[test]
fn two_threads_fetching_one_file_download_it_once() {
    let (base, hits) = serve();
    let cache = empty_cache("threads");
    let url = format!("{base}/ok/w-{PREFIX}.pth");
    let paths: Vec<PathBuf> = std::thread::scope(|scope| {
        let fetches: Vec<_> = (0..2)
            .map(|_| scope.spawn(|| cache.fetch(&url, Some(PREFIX)).unwrap()))
            .collect();
        fetches.into_iter().map(|f| f.join().unwrap()).collect()
    });
    assert_eq!(paths[0], paths[1]);
    assert_eq!(std::fs::read(&paths[0]).unwrap(), BODY);
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[test]
fn a_cached_file_altered_later_is_downloaded_again() {
    let (base, hits) = serve();
    let cache = empty_cache("altered");
    let url = format!("{base}/ok/w-{PREFIX}.pth");
    let path = cache.fetch(&url, Some(PREFIX)).unwrap();
    std::fs::write(&path, &BODY[..10]).unwrap(); // truncated, say by a full disk
    let offline = Cache {
        offline: true,
        ..cache.clone()
    };
    let err = offline.fetch(&url, Some(PREFIX)).unwrap_err();
    assert!(
        err.to_string()
            .contains("does not match its recorded SHA-256"),
        "{err}"
    );
    assert_eq!(cache.fetch(&url, Some(PREFIX)).unwrap(), path);
    assert_eq!(std::fs::read(&path).unwrap(), BODY);
    assert_eq!(hits.load(Ordering::SeqCst), 2);
}

#[test]
fn stale_temporaries_are_removed_and_fresh_ones_kept() {
    let (base, _) = serve();
    let cache = empty_cache("stale");
    std::fs::create_dir_all(&cache.dir).unwrap();
    let stale = cache.dir.join(".w.pth.partial-1-2-3");
    let fresh = cache.dir.join(".w.pth.partial-4-5-6");
    for file in [&stale, &fresh] {
        std::fs::write(file, b"half a download").unwrap();
    }
    let two_days_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(2 * 86_400);
    std::fs::File::options()
        .write(true)
        .open(&stale)
        .unwrap()
        .set_modified(two_days_ago)
        .unwrap();
    cache.fetch(&format!("{base}/ok/w.pth"), None).unwrap();
    assert!(!stale.exists());
    assert!(fresh.exists());
}
