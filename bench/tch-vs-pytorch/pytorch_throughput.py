"""Training throughput of the DARTS_V2 evaluation network in PyTorch eager, built exactly like
nat-train's tch network (same modules, same parameter count), on the same real images.

Prints one JSON line like crates/nat-train/examples/throughput.rs does. Run by run.sh.
"""
import argparse
import gzip
import json
import os
import struct
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

# DARTS_V2 (NAT-SPEC §7): (op, from) per edge, two edges per node, concat 2..5.
DARTS_V2 = {
    "normal": [("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
               ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)],
    "normal_concat": [2, 3, 4, 5],
    "reduce": [("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
               ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)],
    "reduce_concat": [2, 3, 4, 5],
}


def relu_conv_bn(cin, cout, k, stride, pad):
    return nn.Sequential(nn.ReLU(), nn.Conv2d(cin, cout, k, stride, pad, bias=False), nn.BatchNorm2d(cout))


class FactorizedReduce(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout // 2, 1, 2, bias=False)
        self.c2 = nn.Conv2d(cin, cout - cout // 2, 1, 2, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        x = F.relu(x)
        if x.size(2) % 2:
            x = F.pad(x, (1, 0, 1, 0))
        return self.bn(torch.cat([self.c1(x), self.c2(x[:, :, 1:, 1:])], 1))


def sep_conv(c, k, stride):
    p = k // 2
    return nn.Sequential(
        nn.ReLU(), nn.Conv2d(c, c, k, stride, p, groups=c, bias=False), nn.Conv2d(c, c, 1, bias=False),
        nn.BatchNorm2d(c),
        nn.ReLU(), nn.Conv2d(c, c, k, 1, p, groups=c, bias=False), nn.Conv2d(c, c, 1, bias=False),
        nn.BatchNorm2d(c))


def dil_conv(c, k, stride):
    return nn.Sequential(
        nn.ReLU(), nn.Conv2d(c, c, k, stride, k - 1, dilation=2, groups=c, bias=False),
        nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c))


def make_op(name, c, stride):
    if name == "skip_connect":
        return nn.Identity() if stride == 1 else FactorizedReduce(c, c)
    if name == "max_pool_3x3":
        return nn.MaxPool2d(3, stride, 1)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride, 1, count_include_pad=False)
    if name.startswith("sep_conv_"):
        return sep_conv(c, int(name[-1]), stride)
    if name.startswith("dil_conv_"):
        return dil_conv(c, int(name[-1]), stride)
    if name.startswith("conv_"):
        k = int(name[-1])
        return relu_conv_bn(c, c, k, stride, k // 2)
    raise ValueError(f"op {name} not in this benchmark")


class Cell(nn.Module):
    def __init__(self, edges, concat, c_pp, c_p, c, reduction, reduction_prev):
        super().__init__()
        self.pre0 = FactorizedReduce(c_pp, c) if reduction_prev else relu_conv_bn(c_pp, c, 1, 1, 0)
        self.pre1 = relu_conv_bn(c_p, c, 1, 1, 0)
        self.froms = [f for _, f in edges]
        self.ops = nn.ModuleList(
            make_op(op, c, 2 if reduction and f < 2 else 1) for op, f in edges)
        self.concat = concat

    def forward(self, s0, s1):
        states = [self.pre0(s0), self.pre1(s1)]
        for i in range(0, len(self.ops), 2):
            states.append(self.ops[i](states[self.froms[i]]) + self.ops[i + 1](states[self.froms[i + 1]]))
        return torch.cat([states[i] for i in self.concat], 1)


class Network(nn.Module):
    def __init__(self, genotype, c, layers, in_channels, classes):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 3 * c, 3, 1, 1, bias=False), nn.BatchNorm2d(3 * c))
        c_pp, c_p, c_cur = 3 * c, 3 * c, c
        reduction_prev = False
        self.cells = nn.ModuleList()
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            if reduction:
                c_cur *= 2
            kind = "reduce" if reduction else "normal"
            concat = genotype[kind + "_concat"]
            self.cells.append(Cell(genotype[kind], concat, c_pp, c_p, c_cur, reduction, reduction_prev))
            reduction_prev = reduction
            c_pp, c_p = c_p, len(concat) * c_cur
        self.classifier = nn.Linear(c_p, classes)

    def forward(self, x):
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1)
        return self.classifier(F.adaptive_avg_pool2d(s1, 1).flatten(1))


def read_idx_images(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    magic, n, rows, cols = struct.unpack(">IIII", data[:16])
    assert magic == 0x803, path
    return torch.frombuffer(bytearray(data[16:]), dtype=torch.uint8).view(n, 1, rows, cols)


def read_idx_labels(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    return torch.frombuffer(bytearray(data[8:]), dtype=torch.uint8).long()


def find(directory, stem):
    for name in (stem, stem + ".gz"):
        if os.path.exists(os.path.join(directory, name)):
            return os.path.join(directory, name)
    raise SystemExit(f"{stem}[.gz] not found in {directory} (run scripts/fetch-data.sh)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", default=os.environ.get(
        "NAT_DATA_DIR", os.path.expanduser("~/.cache/nat-orchestrator/data")))
    ap.add_argument("--dataset", default="fashion-mnist", choices=["fashion-mnist", "mnist"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--channels", type=int, default=8)
    ap.add_argument("--layers", type=int, default=5)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    directory = os.path.join(args.data_dir, args.dataset)
    images = read_idx_images(find(directory, "train-images-idx3-ubyte")).float().div(255)
    labels = read_idx_labels(find(directory, "train-labels-idx1-ubyte"))
    images = ((images - images.mean()) / images.std()).to(device)
    labels = labels.to(device)
    net = Network(DARTS_V2, args.channels, args.layers, 1, 10).to(device)
    params = sum(p.numel() for p in net.parameters())
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=3e-4)
    net.train()
    n = images.size(0)
    timed = 0.0
    for step in range(args.warmup + args.steps):
        start = (step * args.batch) % (n - args.batch)
        x, y = images[start:start + args.batch], labels[start:start + args.batch]
        t0 = time.perf_counter()
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        loss.item()
        if step >= args.warmup:
            timed += time.perf_counter() - t0
    print(json.dumps({
        "impl": "pytorch", "device": args.device, "threads": args.threads, "dataset": args.dataset,
        "genotype": "darts-v2", "channels": args.channels, "layers": args.layers, "batch": args.batch,
        "steps": args.steps, "params": params, "images_per_second": round(args.steps * args.batch / timed, 1),
    }))


if __name__ == "__main__":
    main()
