#!/usr/bin/python3
"""samx's ResNet-20 against PyTorch at the same weights, on the same CIFAR-format input.

    /usr/bin/python3 experiments/torch-check-resnet/check.py BUILD_DIR [--model resnet20|resnet18|wrn]
        [--act relu|gelu]

1. builds the PyTorch module (akamaster's CIFAR ResNet-20 with option-A shortcuts; or the
   CIFAR ResNet-18 of kuangliu/pytorch-cifar; or xternalz's WRN-16-2), random weights and random
   BatchNorm running statistics, and saves its state_dict as safetensors;
2. writes 64 random images in the CIFAR-10 binary format;
3. runs BUILD_DIR/tests/conv_dump (samx, model.init_from = that file) and PyTorch on the same
   normalised input: eval-mode logits, train-mode logits, mean cross-entropy, every weight's
   gradient, and the running statistics after the train-mode pass (momentum 0.1, unbiased var);
4. prints the largest absolute differences and exits 1 when one exceeds its tolerance.
With --act gelu every ReLU of both networks is an exact GELU (samx's `activation: gelu`): a
smooth network has no unit that float32 rounding can switch on or off, so its gradient must
match the float64 one as closely as torch's own float32 gradient does.
Skips (exit 0, a message) without torch.
"""
import json
import os
import struct
import subprocess
import sys
import tempfile

try:
    import numpy as np
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError as err:  # pragma: no cover
    print(f"SKIP: PyTorch is not available ({err})")
    sys.exit(0)

MEAN = (0.4914, 0.4822, 0.4465)  # samx's cifar10 defaults (WSAM recipe)
STD = (0.2470, 0.2435, 0.2616)


# ---- the PyTorch modules, named as their reference repositories name them ----

ACT = F.relu  # the nonlinearity of every module below (--act)


def act(x):
    return ACT(x)

class LambdaLayer(nn.Module):
    def __init__(self, f):
        super().__init__()
        self.f = f

    def forward(self, x):
        return self.f(x)


class BasicBlock(nn.Module):
    """akamaster (option A) and kuangliu (option B) BasicBlock."""

    def __init__(self, cin, planes, stride, option):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != planes:
            if option == "A":
                p = planes // 4
                self.shortcut = LambdaLayer(
                    lambda x: F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, p, p), "constant", 0))
            else:
                self.shortcut = nn.Sequential(nn.Conv2d(cin, planes, 1, stride, bias=False),
                                              nn.BatchNorm2d(planes))

    def forward(self, x):
        out = act(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return act(out + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, blocks, widths, option, classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        cin = widths[0]
        for s, w in enumerate(widths):
            layers = []
            for b in range(blocks):
                layers.append(BasicBlock(cin, w, 2 if s > 0 and b == 0 else 1, option))
                cin = w
            setattr(self, f"layer{s + 1}", nn.Sequential(*layers))
        self.n_stages = len(widths)
        self.linear = nn.Linear(cin, classes)

    def forward(self, x):
        out = act(self.bn1(self.conv1(x)))
        for s in range(self.n_stages):
            out = getattr(self, f"layer{s + 1}")(out)
        out = F.avg_pool2d(out, out.size()[3])
        return self.linear(out.view(out.size(0), -1))


class WideBlock(nn.Module):
    """xternalz/WideResNet-pytorch BasicBlock (dropout 0)."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.equal = cin == cout and stride == 1
        self.convShortcut = None if self.equal else nn.Conv2d(cin, cout, 1, stride, 0, bias=False)

    def forward(self, x):
        if not self.equal:
            x = act(self.bn1(x))
            out = x
        else:
            out = act(self.bn1(x))
        out = act(self.bn2(self.conv1(out if self.equal else x)))
        out = self.conv2(out)
        return (x if self.equal else self.convShortcut(x)) + out


class NetworkBlock(nn.Module):
    def __init__(self, n, cin, cout, stride):
        super().__init__()
        self.layer = nn.Sequential(*[WideBlock(cin if i == 0 else cout, cout,
                                               stride if i == 0 else 1) for i in range(n)])

    def forward(self, x):
        return self.layer(x)


class WideResNet(nn.Module):
    def __init__(self, depth, k, classes=10):
        super().__init__()
        n = (depth - 4) // 6
        ch = [16, 16 * k, 32 * k, 64 * k]
        self.conv1 = nn.Conv2d(3, ch[0], 3, 1, 1, bias=False)
        self.block1 = NetworkBlock(n, ch[0], ch[1], 1)
        self.block2 = NetworkBlock(n, ch[1], ch[2], 2)
        self.block3 = NetworkBlock(n, ch[2], ch[3], 2)
        self.bn1 = nn.BatchNorm2d(ch[3])
        self.fc = nn.Linear(ch[3], classes)

    def forward(self, x):
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = act(self.bn1(out))
        out = F.avg_pool2d(out, 8)
        return self.fc(out.view(out.size(0), -1))


# ---- safetensors without the safetensors package ----

def randomize_bn(net):
    """Non-trivial BatchNorm affine weights and running statistics, so every BatchNorm term of
    the comparison is exercised."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)


def st_write(path, tensors):
    header, blobs, off = {}, [], 0
    for name, t in tensors.items():
        a = np.ascontiguousarray(t.detach().cpu().numpy().astype(np.float32))
        header[name] = {"dtype": "F32", "shape": list(a.shape),
                        "data_offsets": [off, off + a.nbytes]}
        blobs.append(a.tobytes())
        off += a.nbytes
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def st_read(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    header = json.loads(b[8:8 + n])
    out = {}
    for name, v in header.items():
        if name == "__metadata__":
            continue
        lo, hi = v["data_offsets"]
        dt = {"F32": np.float32, "F64": np.float64, "I64": np.int64}[v["dtype"]]
        out[name] = np.frombuffer(b[8 + n + lo:8 + n + hi], dtype=dt).reshape(v["shape"])
    return out


def main():
    global ACT
    build = sys.argv[1] if len(sys.argv) > 1 else "build"
    opts = dict(zip(sys.argv[2::2], sys.argv[3::2]))
    which = opts.get("--model", "resnet20")
    act_name = opts.get("--act", "relu")
    ACT = {"relu": F.relu, "gelu": F.gelu}[act_name]
    dump = os.path.join(build, "tests", "conv_dump")
    if not os.path.exists(dump):
        print(f"error: {dump} not built")
        return 2
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    if which == "resnet20":
        net, yaml = ResNet(3, [16, 32, 64], "A"), "name: resnet\ndepth: 20\n"
    elif which == "resnet18":
        net, yaml = ResNet(2, [64, 128, 256, 512], "B"), "name: resnet\ndepth: 18\n"
    else:
        net, yaml = WideResNet(16, 2), "name: wrn\ndepth: 16\nwiden: 2\n"
    randomize_bn(net)
    n = 64
    with tempfile.TemporaryDirectory() as tmp:
        sd = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
        wpath = os.path.join(tmp, "w.safetensors")
        st_write(wpath, sd)
        labels = rng.integers(0, 10, n).astype(np.uint8)
        pix = rng.integers(0, 256, (n, 3072)).astype(np.uint8)
        rec = np.concatenate([labels[:, None], pix], axis=1).tobytes()
        for f in ["data_batch_%d.bin" % i for i in range(1, 6)] + ["test_batch.bin"]:
            open(os.path.join(tmp, f), "wb").write(rec)
        open(os.path.join(tmp, "m.yaml"), "w").write(
            yaml + f"activation: {act_name}\ninit_from: {wpath}\n")
        open(os.path.join(tmp, "d.yaml"), "w").write(f"name: cifar10\ndir: {tmp}\n")
        out = os.path.join(tmp, "out.safetensors")
        subprocess.run([dump, os.path.join(tmp, "m.yaml"), os.path.join(tmp, "d.yaml"), str(n),
                        out], check=True)
        got = st_read(out)
    # The same input as samx: x = p * scale + shift in float32, scale = 1/(255 std).
    scale = np.array([1.0 / (255.0 * s) for s in STD], dtype=np.float32)
    shift = np.array([-m / s for m, s in zip(MEAN, STD)], dtype=np.float32)
    x = pix.reshape(n, 3, 32, 32).astype(np.float32) * scale[None, :, None, None] + \
        shift[None, :, None, None]
    x = torch.from_numpy(x.astype(np.float32))
    y = torch.from_numpy(labels.astype(np.int64))
    # The float32 noise floor: the same gradient from a float64 copy of the module (same
    # weights, same input), so the samx-vs-torch gap can be read against torch32-vs-torch64.
    import copy
    net64 = copy.deepcopy(net).double()
    net64.train()
    F.cross_entropy(net64(x.double()), y).backward()
    net.eval()
    with torch.no_grad():
        le = net(x).numpy()
    net.train()
    lt = net(x)
    loss = F.cross_entropy(lt, y)
    loss.backward()
    rows = [("logits, eval mode", np.abs(le - got["logits_eval"]).max(), np.abs(le).max(), 1e-4),
            ("logits, train mode", np.abs(lt.detach().numpy() - got["logits_train"]).max(),
             np.abs(lt.detach().numpy()).max(), 1e-4),
            ("mean cross-entropy", abs(loss.item() - float(got["loss_train"])), loss.item(), 1e-5)]
    if os.environ.get("VERBOSE"):
        for k, p in net.named_parameters():
            d = np.abs(p.grad.numpy() - got["grad." + k])
            print(f"    {k:28s} {d.max():.3g} rel {d.max() / (np.abs(p.grad.numpy()).max() + 1e-30):.3g}")
    params = dict(net.named_parameters())
    p64 = dict(net64.named_parameters())
    gs = np.concatenate([got["grad." + k].ravel() for k in params])
    g32 = np.concatenate([p.grad.numpy().ravel() for p in params.values()])
    g64 = np.concatenate([p64[k].grad.numpy().ravel() for k in params])
    # Relative to the float64 gradient: samx and torch's float32 both carry rounding (and, near
    # ReLU kinks, the odd flipped unit); a real error would be orders above the torch32 gap.
    rel_s = np.linalg.norm(gs - g64) / np.linalg.norm(g64)
    rel_t = np.linalg.norm(g32 - g64) / np.linalg.norm(g64)
    # With about a million ReLU units, one pre-activation within float32 rounding of 0 is
    # likely, and its unit then switches between the two float32 computations: every weight
    # upstream of it changes by ~1e-3 relative (seen for ResNet-20 at this seed: 4e-4 from a
    # unit in layer2.0 with one build, 1.5e-3 from one in the last block with another; torch's
    # float32 itself: 1.3e-3 for ResNet-18, 2.4e-3 for WRN). Which unit switches depends on the
    # last bits of the forward pass, so the ReLU tolerance is loose (5e-3); --act gelu is the
    # tight check of the same code.
    rows.append(("gradient, ||samx-torch||/||torch||", np.linalg.norm(gs - g32) /
                 np.linalg.norm(g32), 1.0, 5e-3))
    # Smooth (GELU): nothing can switch, so samx must be as close to float64 as torch's float32.
    tol_s = max(1e-4, 10 * rel_t) if act_name == "gelu" else max(5e-3, 2 * rel_t)
    rows.append(("gradient vs float64: samx", rel_s, 1.0, tol_s))
    rows.append(("gradient vs float64: torch fp32", rel_t, 1.0, 5e-3))
    gmax = np.abs(gs - g32).max()
    print(f"  (largest single gradient difference {gmax:.3g}, samx vs float64 "
          f"{np.abs(gs - g64).max():.3g}, torch fp32 vs float64 {np.abs(g32 - g64).max():.3g})")
    bmax = max(np.abs(v.numpy() - got["after." + k]).max() for k, v in net.state_dict().items()
               if "running" in k)
    rows.append(("running stats after the pass", bmax, 1.0, 1e-5))
    print(f"{which} ({act_name}): {sum(p.numel() for p in net.parameters())} weights, batch {n}, "
          f"torch {torch.__version__}")
    bad = False
    for name, diff, scale_, tol in rows:
        print(f"  {name:32s} max |samx - torch| = {diff:.3g}  (max |torch| {scale_:.3g}, "
              f"tol {tol:.0e})")
        bad |= not diff <= tol
    print("FAIL" if bad else "OK")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
