#!/usr/bin/env bash
# Inference speed and memory of efficientnet-burn against PyTorch eager and ONNX Runtime,
# in one run on this machine, with the same threads, batch and resolution. Prints a
# Markdown table of medians, images/s, peak RSS and our ratio to each peer.
#
#   scripts/bench_peers.sh [variant=b0] [batch=1] [resolution=224] [rounds=3]
#
# The runtimes take turns, `rounds` times (each turn: 3 warm-up and 20 timed forwards in a
# fresh process), and the table gives the median of each runtime's per-turn medians, so a
# burst of load from other work on a shared machine hits every runtime alike.
#
# Needs the reference venv (scripts/setup_reference_env.sh; requirements include onnxruntime).
set -euo pipefail
cd "$(dirname "$0")/.."
variant=${1:-b0}
batch=${2:-1}
resolution=${3:-224}
rounds=${4:-3}
threads=$(nproc)
export RAYON_NUM_THREADS=$threads

cargo build --quiet --release --example bench_infer
args=(--variant "$variant" --batch "$batch" --resolution "$resolution")
results=$(mktemp)
trap 'rm -f "$results"' EXIT
for _ in $(seq "$rounds"); do
    target/release/examples/bench_infer "${args[@]}" >>"$results"
    target/release/examples/bench_infer --unfused "${args[@]}" >>"$results"
    .venv/bin/python scripts/bench_peer.py --peer torch --threads "$threads" "${args[@]}" >>"$results"
    .venv/bin/python scripts/bench_peer.py --peer onnxruntime --threads "$threads" "${args[@]}" \
        2>/dev/null >>"$results"
done

.venv/bin/python - "$results" "$threads" "$rounds" <<'PY'
import json, sys, datetime, platform, statistics
rows = [json.loads(line) for line in open(sys.argv[1]) if line.startswith("{")]
threads, rounds = sys.argv[2], sys.argv[3]
peers = list(dict.fromkeys(r["peer"] for r in rows))
summary = {}
for peer in peers:
    mine = [r for r in rows if r["peer"] == peer]
    summary[peer] = {
        "median_ms": statistics.median(r["median_ms"] for r in mine),
        "spread": (min(r["median_ms"] for r in mine), max(r["median_ms"] for r in mine)),
        "rss": max(r["peak_rss_mib"] or float("nan") for r in mine),
        "batch": mine[0]["batch"],
    }
ours = summary[peers[0]]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
first = rows[0]
print(f"{first['variant'].upper()}, batch {first['batch']}, {first['resolution']}x{first['resolution']}, f32, "
      f"{threads} threads, {cpu}, {datetime.date.today()}, median of {rounds} interleaved rounds\n")
print("| runtime | median ms (round medians) | images/s | peak RSS MiB | ours / peer (time) | ours / peer (RSS) |")
print("|---|---|---|---|---|---|")
for peer, s in summary.items():
    lo, hi = s["spread"]
    print(f"| {peer} | {s['median_ms']:.1f} ({lo:.1f}-{hi:.1f}) | {s['batch'] * 1e3 / s['median_ms']:.1f} "
          f"| {s['rss']:.0f} | {ours['median_ms'] / s['median_ms']:.2f}x | {ours['rss'] / s['rss']:.2f}x |")
PY
