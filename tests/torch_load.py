#!/usr/bin/env python3
"""torch_load.py RUN_DIR: load a samx MLP's model.safetensors into torch.nn.Sequential with
load_state_dict and check that PyTorch's test loss and accuracy on Fashion-MNIST equal the final
record in RUN_DIR/metrics.jsonl. Optional: exits 77 (skip) where PyTorch is not installed.
Reads safetensors and IDX with the standard library, so it needs nothing but torch."""
import gzip
import json
import struct
import sys

try:
    import torch
except ImportError:
    print("1..0 # SKIP python3-torch is not installed")
    sys.exit(77)

run = sys.argv[1]
raw = open(f"{run}/model.safetensors", "rb").read()
(hlen,) = struct.unpack("<Q", raw[:8])
header = json.loads(raw[8:8 + hlen])
data = raw[8 + hlen:]
state = {}
for name, t in header.items():
    if name == "__metadata__":
        continue
    b, e = t["data_offsets"]
    state[name] = torch.frombuffer(bytearray(data[b:e]), dtype=torch.float32).reshape(t["shape"])

cfg_text = open(f"{run}/config.yaml").read()
act = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh, "gelu": torch.nn.GELU}[
    next(l.split(":")[1].strip() for l in cfg_text.splitlines() if l.strip().startswith("activation:"))]
layers = []
n_linear = len([k for k in state if k.endswith(".weight")])
for i in range(n_linear):
    w = state[f"{2 * i}.weight"]
    layers.append(torch.nn.Linear(w.shape[1], w.shape[0]))
    if i + 1 < n_linear:
        layers.append(act())
net = torch.nn.Sequential(*layers)
net.load_state_dict(state)

d = "/usr/share/datasets/fashion-mnist"
img = gzip.open(f"{d}/t10k-images-idx3-ubyte.gz").read()[16:]
lab = gzip.open(f"{d}/t10k-labels-idx1-ubyte.gz").read()[8:]
x = torch.frombuffer(bytearray(img), dtype=torch.uint8).reshape(-1, 784).float() / 255.0
x = (x - 0.2860) / 0.3530
y = torch.frombuffer(bytearray(lab), dtype=torch.uint8).long()
# The run evaluated the first limit_test examples (data.limit_test in the resolved config).
limit = next((l.split(":")[1].strip() for l in cfg_text.splitlines()
              if l.strip().startswith("limit_test:")), "null")
if limit not in ("null", "all", "~", ""):
    x, y = x[:int(limit)], y[:int(limit)]
with torch.no_grad():
    out = net(x)
    loss = torch.nn.functional.cross_entropy(out, y).item()
    acc = (out.argmax(1) == y).float().mean().item()
last = json.loads(open(f"{run}/metrics.jsonl").read().splitlines()[-1])
print(f"# pytorch test_loss {loss:.7f} acc {acc:.4f}; samx test_loss {last['test_loss']:.7f} "
      f"acc {last['test_acc']:.4f}")
good_loss = abs(loss - last["test_loss"]) <= 1e-5 * max(1.0, abs(loss))
good_acc = abs(acc - last["test_acc"]) <= 2e-4
print("1..2")
print(f"{'' if good_loss else 'not '}ok 1 - load_state_dict gives samx's test loss")
print(f"{'' if good_acc else 'not '}ok 2 - and its test accuracy")
sys.exit(0 if good_loss and good_acc else 1)
