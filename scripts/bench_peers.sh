#!/usr/bin/env bash
# Inference speed and memory of efficientnet-burn against PyTorch eager, ONNX Runtime,
# OpenVINO and tract, in one run on this machine, with the same threads, batch and resolution. Prints a
# Markdown table per configuration: medians, images/s, peak RSS, and our ratio to each peer.
#
#   scripts/bench_peers.sh              # B0@224 and B3@300 at batch 1 and 8, V2-S@384 at batch 1
#   scripts/bench_peers.sh [variant] [batch] [resolution] [rounds=3]   # one configuration
#
# The runtimes take turns, `rounds` times (each turn: 3 warm-up and 20 timed forwards, 10
# at batch 8, in a fresh process), and the table gives the median of each runtime's
# per-turn medians, so a burst of load from other work on a shared machine hits every
# runtime alike. Ours runs three ways: `for_inference()` (what classify and
# PretrainedModel use: the CPU engine), folded only (`fold_batch_norms()`, Burn's ops) and
# unfolded.
# ONNX Runtime, OpenVINO and tract run the same ONNX file, exported from torchvision's model
# once per configuration; the Python runtimes load it without PyTorch, so each RSS is the
# runtime's own. OpenVINO runs twice: with INFERENCE_PRECISION_HINT=f32, and with its
# default precision (bf16 on CPUs with AVX512_BF16 or AMX, f32 elsewhere; its row says which).
#
# BASELINE=path/to/bench_infer adds another build of ours (say, main before a change, built
# with `cargo build --release --example bench_infer` in a worktree) to every round, as
# "baseline": before/after figures from one interleaved run.
#
# Needs the reference venv (scripts/setup_reference_env.sh; requirements include
# onnxruntime and openvino). tract is built from tools/bench-tract (a separate crate, not part of the
# library's build; its first build takes several minutes; TRACT_TARGET_DIR picks where).
set -euo pipefail
cd "$(dirname "$0")/.."
threads=$(nproc)
export RAYON_NUM_THREADS=$threads
target=${CARGO_TARGET_DIR:-target}

tract_target=${TRACT_TARGET_DIR:-$PWD/tools/bench-tract/target}
cargo build --quiet --release --example bench_infer
(cd tools/bench-tract && CARGO_TARGET_DIR="$tract_target" cargo build --quiet --release)
tract="$tract_target/release/bench-tract"
ours="$target/release/examples/bench_infer"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# One configuration: variant batch resolution rounds.
bench() {
    local variant=$1 batch=$2 resolution=$3 rounds=$4
    local runs=20
    ((batch >= 8)) && runs=10
    local args=(--variant "$variant" --batch "$batch" --resolution "$resolution" --runs "$runs")
    local onnx="$work/$variant-$batch-$resolution.onnx" results="$work/results.jsonl"
    : >"$results"
    .venv/bin/python scripts/bench_peer.py --export "$onnx" "${args[@]}" 2>/dev/null
    for _ in $(seq "$rounds"); do
        "$ours" "${args[@]}" >>"$results"
        if [[ -n "${BASELINE:-}" ]]; then
            "$BASELINE" "${args[@]}" | sed 's/"peer": *"/"peer":"baseline /' >>"$results"
        fi
        "$ours" --unplanned "${args[@]}" >>"$results"
        "$ours" --unfused "${args[@]}" >>"$results"
        .venv/bin/python scripts/bench_peer.py --peer torch --threads "$threads" "${args[@]}" >>"$results"
        .venv/bin/python scripts/bench_peer.py --peer onnxruntime --onnx "$onnx" \
            --threads "$threads" "${args[@]}" 2>/dev/null >>"$results"
        for precision in f32 default; do
            .venv/bin/python scripts/bench_peer.py --peer openvino --precision "$precision" \
                --onnx "$onnx" --threads "$threads" "${args[@]}" >>"$results"
        done
        "$tract" "$onnx" --threads "$threads" "${args[@]}" >>"$results"
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
print()
PY
}

if (($# >= 1)); then
    bench "$1" "${2:-1}" "${3:-224}" "${4:-3}"
else
    for config in "b0 1 224" "b0 8 224" "b3 1 300" "b3 8 300" "v2-s 1 384"; do
        # shellcheck disable=SC2086
        bench $config 3
    done
fi
