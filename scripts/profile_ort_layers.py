"""ONNX Runtime's time per torchvision block: where a CPU engine stands layer by layer.

Runs an ONNX export (from `scripts/bench_peer.py --export`) with ONNX Runtime's profiler on,
and prints, per block of torchvision's EfficientNet (the stem `features.0`, each MBConv
`features.i.j`, the head; plus the pooling and classifier), the 10th percentile of its nodes' kernel times
over the runs, summed. ONNX Runtime runs its convolutions in its blocked NCHWc layout; the
reorders in and out of it carry no block name and are printed as one line.

    .venv/bin/python scripts/bench_peer.py --export /tmp/b0.onnx --variant b0 --batch 1
    .venv/bin/python scripts/profile_ort_layers.py /tmp/b0.onnx --threads 1

`--nodes` prints every node instead (operator, output shape, time).

Our side, in the same names and layout (the 10th percentile of each step's wall time):

    RAYON_NUM_THREADS=1 cargo run --release --example bench_infer -- --steps --runs 200
"""

import argparse
import collections
import json
import os
import re
import tempfile

import numpy as np
import onnxruntime as ort


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("onnx", help="the model, exported by scripts/bench_peer.py --export")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--nodes", action="store_true", help="print every node")
    args = parser.parse_args()

    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    options.enable_profiling = True
    work = tempfile.mkdtemp()
    options.profile_file_prefix = os.path.join(work, "profile")
    session = ort.InferenceSession(args.onnx, options, providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in feed.shape]
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    for _ in range(args.runs):
        session.run(None, {feed.name: x})
    with open(session.end_profiling()) as f:
        events = json.load(f)

    times = collections.defaultdict(list)
    ops = {}
    for event in events:
        if event.get("cat") != "Node" or not event["name"].endswith("_kernel_time"):
            continue
        node = event["name"][: -len("_kernel_time")]
        times[node].append(event["dur"])
        ops[node] = (event["args"].get("op_name"), event["args"].get("output_type_shape"))

    def p10(values):
        values = sorted(values)
        return values[len(values) // 10]

    blocks = collections.OrderedDict()
    for node, durations in times.items():
        if args.nodes:
            print(f"{p10(durations):7d} us  {ops[node][0]:18s} {node[:60]:60s} {ops[node][1]}")
        found = re.search(r"features\.(\d+)(?:/features\.\d+\.(\d+))?", node)
        if found:
            # MBConv blocks are `features.i.j`; the stem and head (`features.0`, the last)
            # are one convolution each, whose `features.i.j` are its conv, norm, activation.
            inner = found[2] if found[2] and "/block" in node else None
            block = f"features.{found[1]}" + (f".{inner}" if inner else "")
        elif re.search(r"avgpool|classifier|Flatten", node):
            block = "pooling + classifier"
        else:
            block = "layout reorders"
        blocks[block] = blocks.get(block, 0) + p10(durations)
    print(f"ONNX Runtime {ort.__version__}, {args.threads} thread(s), 10th percentile of {args.runs} runs, us")
    for block, total in blocks.items():
        print(f"{block:24s} {total:7d}")
    print(f"{'total':24s} {sum(blocks.values()):7d}")


if __name__ == "__main__":
    main()
