#!/usr/bin/env bash
# Fuzzes the checkpoint loader, the image decoder + preprocessing, and a saved model's
# config.json / preprocess.json parsing and checks (fuzz/fuzz_targets/).
#
#   scripts/fuzz.sh [seconds per target = 600]
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`). The toolchain here is stable, so
# RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its -Z flags, and `-s none` leaves out
# AddressSanitizer (the crate has no unsafe code outside the CPU engine, src/cpu/, whose
# unsafe blocks each state the bound they rely on). Seeds: the small checkpoint fixtures (prefixed with the reader-selector
# byte) and tiny images in every decoded format, made by the reference venv's Pillow.
# Results go to TESTING.md by hand: duration, executions, crashes.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-600}

mkdir -p fuzz/corpus/checkpoint fuzz/corpus/image fuzz/corpus/saved_model
{ printf '\x00'; cat tests/fixtures/timm_small.pth; } >fuzz/corpus/checkpoint/timm_small.pth
{ printf '\x01'; cat tests/fixtures/timm_small.safetensors; } >fuzz/corpus/checkpoint/timm_small.safetensors
.venv/bin/python - <<'PY'
import json
from PIL import Image
# The saved_model target's transform seed, as the train example writes preprocess.json.
with open("fuzz/corpus/saved_model/preprocess.json", "wb") as f:
    f.write(b"\x01" + json.dumps({"resize": 256, "crop": 224, "interpolation": "Bicubic",
                                  "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}).encode())
image = Image.new("RGB", (9, 7), (200, 30, 30))
image.putpixel((3, 3), (0, 255, 0))
for fmt in ["PNG", "JPEG", "GIF", "BMP", "WEBP"]:
    image.save(f"fuzz/corpus/image/seed.{fmt.lower()}", fmt)
image.convert("L").save("fuzz/corpus/image/gray.png")
image.convert("RGBA").save("fuzz/corpus/image/rgba.png")
PY

# B0's and V2-S's config.json as the crate writes them (fuzz/seeds/, EfficientNetConfig::to_string).
for seed in fuzz/seeds/*_config.json; do
    { printf '\x00'; cat "$seed"; } >"fuzz/corpus/saved_model/$(basename "$seed")"
done

for target in checkpoint image saved_model; do
    echo "=== $target, $seconds s"
    RUSTC_BOOTSTRAP=1 cargo fuzz run -s none -O "$target" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=4096 -max_len=1048576 2>&1 | tail -n 12
done
