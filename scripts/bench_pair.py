#!/usr/bin/env python3
"""Lock-step comparison of our CPU engine with ONNX Runtime and OpenVINO: each runtime runs in
a process of its own, kept alive, and they take turns of a few forwards each, round after
round, so that every turn of ours sits next to a turn of each peer, a fraction of a second
apart. On a shared machine whose speed moves in phases of seconds, the ratio of two adjacent
turns is measured under the same load; `scripts/bench_peers.sh`'s rounds (a fresh process
per runtime, seconds each) are not.

    .venv/bin/python scripts/bench_pair.py --variant b0 --batch 1 --resolution 224
    .venv/bin/python scripts/bench_pair.py --variant v2-s --resolution 384 --threads 1 \\
        --peers onnxruntime --rounds 20
    .venv/bin/python scripts/bench_pair.py --baseline /path/to/old/bench_infer --peers ''

Each turn runs `--turn` forwards and drops the first `--rewarm` of them, which pay for the
caches the other runtimes' turns took over. Turns are `--pause` seconds apart: ONNX
Runtime's threads spin for a while after a run, and a turn started at once shares the cores
with them (B0 at batch 1 then took 12-14 ms instead of 8). The table gives, for every
runtime, the median, 10th percentile and minimum of its kept forwards, and, for each peer,
the median over the rounds of (our turn's median / the peer's turn's median) with the
quartiles of that ratio.
The order of the runtimes is rotated every round. `--baseline` adds another build of our
`bench_infer` (say, main before a change; repeatable). Needs the reference venv
(scripts/setup_reference_env.sh) for the peers; builds our `bench_infer` first.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PEERS = {
    "onnxruntime": ["--peer", "onnxruntime"],
    "openvino-f32": ["--peer", "openvino", "--precision", "f32"],
    "openvino": ["--peer", "openvino", "--precision", "default"],
    "torch": ["--peer", "torch"],
}


class Runtime:
    """One runtime's `--serve` process."""

    def __init__(self, name, command):
        self.name = name
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL, text=True, bufsize=1)
        self.turns = []
        self.medians = []
        self.peak_rss_mib = None

    def turn(self, count):
        self.process.stdin.write(f"{count}\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            sys.exit(f"{self.name} ended before answering (run it alone to see why)")
        answer = json.loads(line)
        self.peak_rss_mib = answer.get("peak_rss_mib")
        return answer["times_ms"]

    def close(self):
        self.process.stdin.close()
        self.process.wait()


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", default="b0")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--turn", type=int, default=4, help="forwards a turn")
    parser.add_argument("--rewarm", type=int, default=1, help="forwards a turn leaves out")
    parser.add_argument("--pause", type=float, default=0.1,
                        help="seconds between turns, for the last runtime's threads to settle")
    parser.add_argument("--peers", default="onnxruntime,openvino-f32",
                        help=f"comma-separated, of {', '.join(PEERS)}; '' for none")
    parser.add_argument("--baseline", metavar="BENCH_INFER", action="append", default=[],
                        help="another build of ours (repeatable)")
    parser.add_argument("--bf16", action="store_true",
                        help="also ours with bf16 weights (--precision bf16-weights)")
    args = parser.parse_args()
    if args.turn <= args.rewarm:
        parser.error("--turn must be larger than --rewarm")
    peers = [p for p in args.peers.split(",") if p]
    for peer in peers:
        if peer not in PEERS:
            parser.error(f"unknown peer {peer!r}: one of {', '.join(PEERS)}")

    shape = ["--variant", args.variant, "--batch", str(args.batch),
             "--resolution", str(args.resolution)]
    # Our builds' threads (the peers take --threads).
    os.environ["RAYON_NUM_THREADS"] = str(args.threads)
    subprocess.run(["cargo", "build", "--quiet", "--release", "--example", "bench_infer"],
                   cwd=ROOT, check=True)
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    ours = [str(target / "release" / "examples" / "bench_infer"), *shape, "--serve"]
    runtimes = [Runtime("ours", ours)]
    if args.bf16:
        runtimes.append(Runtime("ours bf16 weights", [*ours, "--precision", "bf16-weights"]))
    for index, baseline in enumerate(args.baseline):
        name = "baseline" if len(args.baseline) == 1 else f"baseline {index + 1}"
        runtimes.append(Runtime(name, [baseline, *shape, "--serve"]))
    with tempfile.TemporaryDirectory() as work:
        if peers:
            onnx = str(Path(work) / "model.onnx")
            python = [sys.executable, str(ROOT / "scripts" / "bench_peer.py")]
            subprocess.run([*python, "--export", onnx, *shape], check=True,
                           stderr=subprocess.DEVNULL)
            for peer in peers:
                runtimes.append(Runtime(peer, [*python, *PEERS[peer], "--onnx", onnx,
                                               "--threads", str(args.threads), *shape,
                                               "--serve"]))
        for index in range(args.rounds):
            shift = index % len(runtimes)
            medians = {}
            for runtime in runtimes[shift:] + runtimes[:shift]:
                time.sleep(args.pause)
                kept = runtime.turn(args.turn)[args.rewarm:]
                runtime.turns.append(kept)
                runtime.medians.append(statistics.median(kept))
                medians[runtime.name] = runtime.medians[-1]
            print(f"round {index + 1}: " + ", ".join(f"{n} {m:.2f}" for n, m in medians.items()),
                  file=sys.stderr)
        for runtime in runtimes:
            runtime.close()

    print(f"\n{args.variant.upper()}, batch {args.batch}, {args.resolution}x{args.resolution}, "
          f"f32, {args.threads} thread(s), {args.rounds} rounds of {args.turn} forwards a "
          f"turn ({args.rewarm} left out)\n")
    print("| runtime | median ms | p10 | min | peak RSS MiB | ours / runtime: median of "
          "the rounds' ratios (quartiles) |")
    print("|---|---|---|---|---|---|")
    for runtime in runtimes:
        times = [t for turn in runtime.turns for t in turn]
        ratios = [o / p for o, p in zip(runtimes[0].medians, runtime.medians)]
        ratio = "" if runtime is runtimes[0] else (
            f"{statistics.median(ratios):.3f}x ({percentile(ratios, 0.25):.3f}-"
            f"{percentile(ratios, 0.75):.3f})")
        rss = f"{runtime.peak_rss_mib:.0f}" if runtime.peak_rss_mib else "?"
        print(f"| {runtime.name} | {statistics.median(times):.2f} | "
              f"{percentile(times, 0.1):.2f} | {min(times):.2f} | {rss} | {ratio} |")


if __name__ == "__main__":
    main()
