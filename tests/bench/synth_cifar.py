"""synth_cifar.py DIR N_TRAIN N_TEST [SEED]: CIFAR-10 binary files of random images and labels
(data_batch_1.bin holds N_TRAIN, every other file N_TEST), for the benchmarks: a network's
cost does not depend on the pixels."""
import sys

import numpy as np

d, n_train, n_test = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
r = np.random.default_rng(int(sys.argv[4]) if len(sys.argv) > 4 else 0)
for f in ["data_batch_%d.bin" % i for i in range(1, 6)] + ["test_batch.bin"]:
    n = n_train if f == "data_batch_1.bin" else n_test
    lab = r.integers(0, 10, n).astype(np.uint8)
    pix = r.integers(0, 256, (n, 3072)).astype(np.uint8)
    open(f"{d}/{f}", "wb").write(np.concatenate([lab[:, None], pix], 1).tobytes())
