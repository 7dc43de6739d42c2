#!/usr/bin/env python3
"""torch_mlp.py --opt sgd|sam|crsam --threads N [--epochs E]: the reference a user would
otherwise pick. Fashion-MNIST, MLP 784-512-512-10 (torch.nn.Sequential), batch 128, reshuffled
each epoch, SGD lr 0.05 momentum 0.9 weight decay 5e-4; SAM rho 0.05 and CR-SAM (rho 0.1, gamma
0.1, beta 0.01) written out as plain PyTorch, as the reference repositories do. Prints the best
training-epoch time in seconds (data already in memory as float tensors: PyTorch's best case)."""
import argparse
import gzip
import time

import torch

ap = argparse.ArgumentParser()
ap.add_argument("--opt", default="sgd", choices=["sgd", "sam", "crsam"])
ap.add_argument("--threads", type=int, default=1)
ap.add_argument("--epochs", type=int, default=2)
a = ap.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(0)

d = "/usr/share/datasets/fashion-mnist"
img = gzip.open(f"{d}/train-images-idx3-ubyte.gz").read()[16:]
lab = gzip.open(f"{d}/train-labels-idx1-ubyte.gz").read()[8:]
x = (torch.frombuffer(bytearray(img), dtype=torch.uint8).reshape(-1, 784).float() / 255 - 0.2860) / 0.3530
y = torch.frombuffer(bytearray(lab), dtype=torch.uint8).long()

net = torch.nn.Sequential(torch.nn.Linear(784, 512), torch.nn.ReLU(), torch.nn.Linear(512, 512),
                          torch.nn.ReLU(), torch.nn.Linear(512, 10))
opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
params = list(net.parameters())
lossf = torch.nn.CrossEntropyLoss()


def grads(xb, yb):
    opt.zero_grad(set_to_none=False)
    loss = lossf(net(xb), yb)
    loss.backward()
    return loss


def step(xb, yb):
    if a.opt == "sgd":
        grads(xb, yb)
        opt.step()
        return
    rho = 0.05 if a.opt == "sam" else 0.1
    grads(xb, yb)
    with torch.no_grad():
        g = [p.grad.clone() for p in params]
        norm = torch.norm(torch.stack([t.norm() for t in g]))
        e = [rho * t / (norm + 1e-12) for t in g]
        saved = [p.detach().clone() for p in params]
        for p, ei in zip(params, e):
            p.add_(ei)
    grads(xb, yb)
    if a.opt == "crsam":
        with torch.no_grad():
            gp = [p.grad.clone() for p in params]
            for p, s, ei in zip(params, saved, e):
                p.copy_(s).sub_(ei)
        grads(xb, yb)
        with torch.no_grad():
            for p, gpi, gi in zip(params, gp, g):
                gm = p.grad.clone()
                p.grad.copy_(gpi + 0.1 * (gpi + gm - 2 * gi) + 0.01 * (gpi - gm))
    with torch.no_grad():
        for p, s in zip(params, saved):
            p.copy_(s)
    opt.step()


best = float("inf")
for ep in range(a.epochs):
    perm = torch.randperm(x.shape[0])
    t0 = time.perf_counter()
    for i in range(0, x.shape[0], 128):
        idx = perm[i:i + 128]
        step(x[idx], y[idx])
    best = min(best, time.perf_counter() - t0)
print(f"{best:.3f}")
