#!/usr/bin/env bash
# Training end to end, this crate against PyTorch eager, interleaved on one machine: B0 from
# scratch at 224, batch 16, AdamW, 2 threads, 2 epochs over 3 x 64 generated 256-px images with
# a 3 x 16-image validation folder, data loading included. Prints each run and the ratio of the
# medians (ours / PyTorch, images per second).
#   scripts/bench_train_e2e.sh [rounds (default 2)]
# Needs .venv with torch and torchvision (scripts/setup_reference_env.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-2}"
data="${TMPDIR:-/tmp}/efficientnet-burn-e2e"
if [ ! -d "$data/train" ]; then
    scripts/make_shapes_dataset.sh "$data" --per-class 64 --size 256 --seed 1 >/dev/null
fi
cargo build --release --features train --example train >/dev/null 2>&1
ours=()
theirs=()
for round in $(seq "$rounds"); do
    start=$(date +%s.%N)
    RAYON_NUM_THREADS=2 "${CARGO_TARGET_DIR:-target}/release/examples/train" \
        --data "$data/train" --valid "$data/valid" --variant b0 --epochs 2 --batch-size 16 \
        --workers 2 --out "$data/run" >"$data/ours.log" 2>&1 || { cat "$data/ours.log"; exit 1; }
    seconds=$(echo "$(date +%s.%N) - $start" | bc)
    rate=$(echo "scale=2; 2 * 192 / $seconds" | bc)
    echo "round $round: efficientnet-burn: $seconds s, $rate img/s"
    ours+=("$rate")
    line=$(.venv/bin/python scripts/bench_train_e2e.py --data "$data/train" --valid "$data/valid")
    echo "round $round: $line"
    theirs+=("$(echo "$line" | sed -E 's/.* ([0-9.]+) img\/s/\1/')")
    rm -rf "$data/run"
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
echo "throughput ours / PyTorch: $(echo "scale=2; $(median "${ours[@]}") / $(median "${theirs[@]}")" | bc)x"
