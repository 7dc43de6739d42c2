#!/usr/bin/python3
"""PyTorch side of the ResNet-20 epoch benchmark (README): SGD steps of batch 128 on random
32x32x3 data, the same work as `samx run bench.yaml`. Prints images/s for each thread count.

    /usr/bin/python3 bench_torch.py STEPS THREADS...
"""
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from check import ResNet  # noqa: E402  (akamaster's ResNet-20, as checked)


def main():
    steps = int(sys.argv[1])
    for t in [int(a) for a in sys.argv[2:]]:
        torch.set_num_threads(t)
        torch.manual_seed(0)
        net = ResNet(3, [16, 32, 64], "A")
        opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
        x = torch.randn(128, 3, 32, 32)
        y = torch.randint(0, 10, (128,))
        net.train()
        for i in range(steps + 2):  # 2 warm-up steps
            if i == 2:
                t0 = time.perf_counter()
            opt.zero_grad()
            F.cross_entropy(net(x), y).backward()
            opt.step()
        dt = time.perf_counter() - t0
        print(f"threads {t}: {steps * 128 / dt:.1f} images/s ({dt / steps * 1000:.0f} ms/step)")


if __name__ == "__main__":
    main()
