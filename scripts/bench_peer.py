#!/usr/bin/env python3
"""One peer's inference timing for scripts/bench_peers.sh, as one JSON line; or the ONNX
export the ONNX peers run.

    .venv/bin/python scripts/bench_peer.py --export /tmp/b0.onnx --variant b0 --batch 1
    .venv/bin/python scripts/bench_peer.py --peer torch --variant b0 --batch 1 --threads 2
    .venv/bin/python scripts/bench_peer.py --peer onnxruntime --onnx /tmp/b0.onnx --batch 1
    .venv/bin/python scripts/bench_peer.py --peer openvino --precision f32 --onnx /tmp/b0.onnx

With `--serve` a peer takes turns with others instead (scripts/bench_pair.py): after the
warm-up it reads a count from each line of standard input, runs that many forwards and
answers with one JSON line of their times, until standard input ends.

Peers: `torch` (torchvision's model, eager, no_grad); `onnxruntime` and `openvino` (the
same model exported to ONNX by `--export`, loaded without importing PyTorch, so each peak
RSS is the runtime's own; tract runs the same file, tools/bench-tract). OpenVINO runs on
its CPU plugin either with `INFERENCE_PRECISION_HINT=f32` (`--precision f32`) or with its
default precision (`--precision default`), which is bf16 on CPUs with AVX512_BF16 or AMX
and f32 elsewhere; the name it reports carries the precision the compiled model uses.
Random weights: they do not change the cost. Each peer runs in its own process so peak RSS
is its own.
"""

import argparse
import json
import os
import resource
import statistics
import sys
import time


def torchvision_model(variant):
    import torchvision

    # Our names (b0, v2-s) to torchvision's constructors (efficientnet_b0, efficientnet_v2_s).
    return getattr(torchvision.models, f"efficientnet_{variant.replace('-', '_')}")().eval()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--peer", choices=["torch", "onnxruntime", "openvino"])
    parser.add_argument("--precision", choices=["f32", "default"], default="default",
                        help="OpenVINO's inference precision: f32, or its own default")
    parser.add_argument("--export", metavar="PATH", help="write the ONNX file and exit")
    parser.add_argument("--onnx", metavar="PATH", help="the ONNX file onnxruntime and openvino run")
    parser.add_argument("--variant", default="b0")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--serve", action="store_true",
                        help="take turns: a count a line on stdin, the times as JSON on stdout")
    args = parser.parse_args()
    shape = (args.batch, 3, args.resolution, args.resolution)

    if args.export:
        import torch

        x = torch.randn(*shape)
        torch.onnx.export(torchvision_model(args.variant), x, args.export, dynamo=False)
        return
    if args.peer == "torch":
        import torch

        torch.set_num_threads(args.threads)
        model = torchvision_model(args.variant)
        x = torch.randn(*shape)

        def run():
            with torch.no_grad():
                model(x)

        name = f"PyTorch {torch.__version__} eager"
    elif args.peer == "onnxruntime":
        import numpy as np
        import onnxruntime as ort

        if not args.onnx:
            parser.error("--peer onnxruntime needs --onnx (written by --export)")
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(args.onnx, options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: np.random.randn(*shape).astype(np.float32)}

        def run():
            session.run(None, feed)

        name = f"ONNX Runtime {ort.__version__}"
    elif args.peer == "openvino":
        import numpy as np
        import openvino as ov

        if not args.onnx:
            parser.error("--peer openvino needs --onnx (written by --export)")
        core = ov.Core()
        config = {"INFERENCE_NUM_THREADS": args.threads}
        if args.precision == "f32":
            config["INFERENCE_PRECISION_HINT"] = "f32"
        compiled = core.compile_model(core.read_model(args.onnx), "CPU", config)
        request = compiled.create_infer_request()
        x = np.random.randn(*shape).astype(np.float32)

        def run():
            request.infer({0: x})

        used = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        label = "f32" if args.precision == "f32" else f"default precision, {used} here"
        name = f"OpenVINO {ov.get_version().split('-')[0]} ({label})"
    else:
        parser.error("give --peer or --export")

    def time_one():
        start = time.perf_counter()
        run()
        return (time.perf_counter() - start) * 1e3

    def peak_rss_mib():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    for _ in range(args.warmup):
        run()
    if args.serve:
        for line in sys.stdin:
            try:
                count = int(line)
            except ValueError:
                break
            times = [time_one() for _ in range(count)]
            print(json.dumps({"times_ms": times, "peak_rss_mib": peak_rss_mib()}), flush=True)
        return
    times = [time_one() for _ in range(args.runs)]
    median = statistics.median(times)
    print(json.dumps({
        "peer": name, "variant": args.variant, "batch": args.batch,
        "resolution": args.resolution, "median_ms": median,
        "images_per_s": args.batch * 1e3 / median,
        "peak_rss_mib": peak_rss_mib(),
    }))


if __name__ == "__main__":
    main()
