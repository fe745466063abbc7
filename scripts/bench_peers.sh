#!/usr/bin/env bash
# Inference speed and memory of efficientnet-burn against PyTorch eager and ONNX Runtime,
# in one run on this machine, with the same threads, batch and resolution. Prints a
# Markdown table of medians, images/s, peak RSS and our ratio to each peer.
#
#   scripts/bench_peers.sh [variant=b0] [batch=1] [resolution=224]
#
# Needs the reference venv (scripts/setup_reference_env.sh; requirements include onnxruntime).
set -euo pipefail
cd "$(dirname "$0")/.."
variant=${1:-b0}
batch=${2:-1}
resolution=${3:-224}
threads=$(nproc)
export RAYON_NUM_THREADS=$threads

cargo build --quiet --release --example bench_infer
args=(--variant "$variant" --batch "$batch" --resolution "$resolution")
ours=$(target/release/examples/bench_infer "${args[@]}")
unfused=$(target/release/examples/bench_infer --unfused "${args[@]}")
torch=$(.venv/bin/python scripts/bench_peer.py --peer torch --threads "$threads" "${args[@]}")
ort=$(.venv/bin/python scripts/bench_peer.py --peer onnxruntime --threads "$threads" "${args[@]}")

.venv/bin/python - "$ours" "$unfused" "$torch" "$ort" "$threads" <<'PY'
import json, sys, datetime, platform
ours, unfused, torch, ort = (json.loads(a) for a in sys.argv[1:5])
threads = sys.argv[5]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
print(f"{ours['variant'].upper()}, batch {ours['batch']}, {ours['resolution']}x{ours['resolution']}, f32, "
      f"{threads} threads, {cpu}, {datetime.date.today()}\n")
print("| runtime | median ms | images/s | peak RSS MiB | ours / peer (time) | ours / peer (RSS) |")
print("|---|---|---|---|---|---|")
for r in (ours, unfused, torch, ort):
    t = ours["median_ms"] / r["median_ms"]
    m = (ours["peak_rss_mib"] or float("nan")) / r["peak_rss_mib"]
    print(f"| {r['peer']} | {r['median_ms']:.1f} | {r['images_per_s']:.1f} | {r['peak_rss_mib']:.0f} | {t:.2f}x | {m:.2f}x |")
PY
