#!/usr/bin/env python3
"""One peer's inference timing for scripts/bench_peers.sh, as one JSON line.

    .venv/bin/python scripts/bench_peer.py --peer torch --variant b0 --batch 1 --threads 2

Peers: `torch` (torchvision's model, eager, no_grad) and `onnxruntime` (the same model
exported to ONNX). Random weights: they do not change the cost. Each peer runs in its own
process so peak RSS is its own.
"""

import argparse
import json
import os
import resource
import statistics
import tempfile
import time

import torch
import torchvision


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--peer", choices=["torch", "onnxruntime"], required=True)
    parser.add_argument("--variant", default="b0")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    # Our names (b0, v2-s) to torchvision's constructors (efficientnet_b0, efficientnet_v2_s).
    model = getattr(torchvision.models, f"efficientnet_{args.variant.replace('-', '_')}")().eval()
    x = torch.randn(args.batch, 3, args.resolution, args.resolution)

    if args.peer == "torch":
        def run():
            with torch.no_grad():
                model(x)
        name = f"PyTorch {torch.__version__} eager"
    else:
        import onnxruntime as ort
        path = os.path.join(tempfile.mkdtemp(), "model.onnx")
        torch.onnx.export(model, x, path, dynamo=False)
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: x.numpy()}
        del model
        def run():
            session.run(None, feed)
        name = f"ONNX Runtime {ort.__version__}"

    for _ in range(args.warmup):
        run()
    times = []
    for _ in range(args.runs):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1e3)
    median = statistics.median(times)
    print(json.dumps({
        "peer": name, "variant": args.variant, "batch": args.batch,
        "resolution": args.resolution, "median_ms": median,
        "images_per_s": args.batch * 1e3 / median,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))


if __name__ == "__main__":
    main()
