"""airbench_cifar.py's job in plain PyTorch: the peer benchmarks/airbench_race.py
times ours against.

The same network and recipe, written for the benchmark from airbench94's
description (not its code): the whitening 2x2 convolution computed from the
first 5,000 training images, dirac-initialised 3x3 convolutions, batch norm
(PyTorch momentum 0.4, no scale) with its biases at 64x the learning rate,
Nesterov SGD with two parameter groups, the warm-up and linear decay, the
lookahead every 5 steps, alternating flips and reflected 2-pixel shifts,
batch 1024 with the last partial batch dropped. It does the same work as
our job: a single-view test evaluation after every epoch, then the 6-view
test-time evaluation. Its lookahead averages the parameters only, as ours
does (airbench's also averages batch norm's running statistics). Channels-last
tensors, and bfloat16 autocast where ours computes in bfloat16.

    python benchmarks/airbench_peer.py --epochs 10 [--bfloat16] [--data-dir D]

prints one JSON line: job_seconds (whitening, training, evaluations; data
loading apart), test_accuracy (with the views), test_accuracy_single_view.
"""

import argparse
import json
import os
import sys
import time

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


class Block(nn.Module):
    def __init__(self, c_in, c_out):
        super().__init__()
        self.conv1, self.conv2 = (nn.Conv2d(a, c_out, 3, padding=1, bias=False) for a in (c_in, c_out))
        self.norm1, self.norm2 = (nn.BatchNorm2d(c_out, eps=1e-12, momentum=0.4) for _ in range(2))
        for norm in (self.norm1, self.norm2):
            norm.weight.requires_grad_(False)

    def forward(self, x):
        x = F.gelu(self.norm1(F.max_pool2d(self.conv1(x), 2)))
        return F.gelu(self.norm2(self.conv2(x)))


class Network(nn.Module):
    def __init__(self, mean, std, widths=(64, 256, 256), classes=10):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        self.whiten = nn.Conv2d(3, 24, 2)
        self.whiten.weight.requires_grad_(False)
        nn.init.zeros_(self.whiten.bias)
        self.blocks = nn.Sequential(Block(24, widths[0]), Block(widths[0], widths[1]), Block(widths[1], widths[2]))
        self.head = nn.Linear(widths[2], classes, bias=False)
        for block in self.blocks:
            for conv in (block.conv1, block.conv2):
                w = conv.weight.data
                nn.init.dirac_(w[:w.size(1)])

    def normalize(self, x):  # uint8 N x 3 x H x W
        return (x.float() - self.mean) / self.std

    def forward(self, x):  # normalized
        x = self.blocks(F.gelu(self.whiten(x)))
        return self.head(torch.amax(x, dim=(2, 3))) / 9


def whitening(x, eps=5e-4):
    patches = x.unfold(2, 2, 1).unfold(3, 2, 1).permute(0, 2, 3, 1, 4, 5).reshape(-1, 12).double()
    values, vectors = torch.linalg.eigh(patches.T @ patches / len(patches))
    values, vectors = values.flip(0), vectors.flip(1)
    filters = (vectors / torch.sqrt(values + eps)).T.reshape(12, 3, 2, 2)
    return torch.cat([filters, -filters]).float()


def shifted(x, flips, shifts):
    """uint8 images (N x C x H x W) mirrored where `flips`, then shifted by
    whole pixels with the border reflected: one gather for the batch."""
    x = torch.where(flips.view(-1, 1, 1, 1), x.flip(-1), x)
    n, _, h, w = x.shape

    def reflected(size, s):
        i = torch.arange(size)[None] - s[:, None]
        return torch.where(i < 0, -i, torch.where(i >= size, 2 * (size - 1) - i, i))
    rows, cols = reflected(h, shifts[:, 0]), reflected(w, shifts[:, 1])
    return x[torch.arange(n)[:, None, None], :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def views(x):
    """The 6 test-time views and their weights."""
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    out = [(0.25, x), (0.25, x.flip(-1))]
    for crop in (padded[:, :, :-2, :-2], padded[:, :, 2:, 2:]):
        out += [(0.125, crop), (0.125, crop.flip(-1))]
    return out


def accuracy(net, x, y, autocast, tta):
    net.eval()
    correct = 0
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        for start in range(0, len(x), 1000):
            batch = net.normalize(x[start:start + 1000]).contiguous(memory_format=torch.channels_last)
            logits = sum(w * net(v).float() for w, v in views(batch)) if tta else net(batch).float()
            correct += (logits.argmax(1) == y[start:start + 1000]).sum().item()
    net.train()
    return correct / len(x)


def job(x, y, xt, yt, epochs, autocast, seed=0, batch=1024):
    torch.manual_seed(seed)
    start = time.perf_counter()
    flat = x[:5000].float().permute(1, 0, 2, 3).reshape(3, -1)
    net = Network(flat.mean(1).tolist(), flat.std(1, unbiased=False).tolist()).to(memory_format=torch.channels_last)
    net.whiten.weight.data[:] = whitening(net.normalize(x[:5000]))
    steps_per_epoch, momentum = len(x) // batch, 0.85
    steps = steps_per_epoch * epochs
    kilostep = 1024 * (1 + 1 / (1 - momentum))
    lr, wd = 11.5 / kilostep, 0.0153 * batch / kilostep  # for the summed loss, airbench's convention
    biases = [p for n, p in net.named_parameters() if "norm" in n and p.requires_grad]
    others = [p for n, p in net.named_parameters() if "norm" not in n and p.requires_grad]
    optimizer = torch.optim.SGD([dict(params=biases, lr=lr * 64, weight_decay=wd / (lr * 64)),
                                 dict(params=others, lr=lr, weight_decay=wd / lr)], momentum=momentum, nesterov=True)
    up = int(steps * 0.23)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.2 + 0.8 * s / up if s < up else 1 - 0.93 * (s - up) / (steps - up))
    trained = [p for p in net.parameters() if p.requires_grad]
    averages = [p.detach().clone() for p in trained]
    coins = torch.rand(len(x)) < 0.5
    done = 0
    for epoch in range(epochs):
        net.whiten.bias.requires_grad_(epoch < 3)
        flips = coins ^ bool(epoch % 2)
        shifts = torch.randint(-2, 3, (len(x), 2))
        order = torch.randperm(len(x))
        for i in range(steps_per_epoch):
            chosen = order[i * batch:(i + 1) * batch]
            crops = net.normalize(shifted(x[chosen], flips[chosen], shifts[chosen]))
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                logits = net(crops.contiguous(memory_format=torch.channels_last)).float()
            loss = F.cross_entropy(logits, y[chosen], label_smoothing=0.2, reduction="sum")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            done += 1
            if done % 5 == 0 or done == steps:
                decay = 1.0 if done % 5 else 0.95 ** 5 * (done / steps) ** 3
                with torch.no_grad():
                    for a, p in zip(averages, trained):
                        a.lerp_(p, 1 - decay)
                        p.copy_(a)
        single = accuracy(net, xt, yt, autocast, tta=False)
    tta = accuracy(net, xt, yt, autocast, tta=True)
    return {"job_seconds": round(time.perf_counter() - start, 2), "test_accuracy": tta,
            "test_accuracy_single_view": single, "epochs": epochs, "bfloat16": autocast,
            "threads": torch.get_num_threads(), "torch": torch.__version__}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--bfloat16", action="store_true", help="autocast to bfloat16, as our mixed precision")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--subset", type=int, default=0, help="the first N training images (quick checks)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    from cifarkit import datasets  # the collection's reader: the same images (data loading is not timed)
    (x, y), (xt, yt) = datasets.load_data(args.data_dir)
    if args.subset:
        x, y = x[:args.subset], y[:args.subset]
    torch.set_num_threads(os.cpu_count())
    to_tensor = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))  # noqa: E731
    result = job(to_tensor(x), torch.from_numpy(np.ravel(y).astype("int64")), to_tensor(xt),
                 torch.from_numpy(np.ravel(yt).astype("int64")), args.epochs, args.bfloat16, args.seed,
                 batch=min(1024, len(x)))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
