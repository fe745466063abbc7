#!/usr/bin/env python3
"""PyTorch eager's side of benches/train_step.rs: one training step of torchvision's
efficientnet_b0 at 224x224, batch 16 (forward in train mode, cross-entropy, backward, AdamW),
on the CPU with the same thread count. Prints the median and range of the step times.

    .venv/bin/python scripts/bench_train_peer.py [--threads 2] [--steps 10]
"""

import argparse
import statistics
import time

import torch
import torchvision


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(1)
    model = torchvision.models.efficientnet_b0().train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    images = torch.rand(args.batch, 3, 224, 224)
    targets = torch.tensor([i * 61 % 1000 for i in range(args.batch)])
    loss_fn = torch.nn.CrossEntropyLoss()
    times = []
    for step in range(args.steps + 2):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(images), targets)
        loss.backward()
        optimizer.step()
        if step >= 2:  # warm-up steps
            times.append(time.perf_counter() - start)
    print(f"pytorch {torch.__version__} b0 224 batch {args.batch} train step, {args.threads} threads: "
          f"median {statistics.median(times):.3f} s (min {min(times):.3f}, max {max(times):.3f}, {len(times)} steps)")


if __name__ == "__main__":
    main()
