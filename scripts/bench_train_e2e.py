#!/usr/bin/env python3
"""PyTorch eager's side of scripts/bench_train_e2e.sh: train torchvision's efficientnet_b0 from
scratch on DATA/<class>/<image> folders as examples/train.rs does (random-resized 224 crops and
flips, AdamW, batch 16, a validation pass per epoch at 256/224), with torchvision's ImageFolder
and DataLoader(num_workers=2), on the CPU with 2 threads. Prints the wall time and images/s.

    .venv/bin/python scripts/bench_train_e2e.py --data DIR --valid DIR [--epochs 2]
"""

import argparse
import time

import torch
import torchvision
from torchvision import transforms


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--valid", required=True)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    start = time.perf_counter()
    torch.set_num_threads(args.threads)
    torch.manual_seed(42)
    normalize = transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    train_set = torchvision.datasets.ImageFolder(args.data, transforms.Compose([
        transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(),
        transforms.ToTensor(), normalize]))
    valid_set = torchvision.datasets.ImageFolder(args.valid, transforms.Compose([
        transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(), normalize]))
    train = torch.utils.data.DataLoader(train_set, batch_size=args.batch, shuffle=True,
                                        num_workers=args.workers)
    valid = torch.utils.data.DataLoader(valid_set, batch_size=args.batch,
                                        num_workers=args.workers)
    model = torchvision.models.efficientnet_b0(num_classes=len(train_set.classes))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    loss_fn = torch.nn.CrossEntropyLoss()
    for _ in range(args.epochs):
        model.train()
        for images, targets in train:
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model(images), targets).backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            for images, targets in valid:
                model(images)
    elapsed = time.perf_counter() - start
    seen = args.epochs * len(train_set)
    print(f"pytorch {torch.__version__}: {args.epochs} epochs of {len(train_set)} images, "
          f"batch {args.batch}, {args.threads} threads: {elapsed:.1f} s, {seen / elapsed:.2f} img/s")


if __name__ == "__main__":
    main()
