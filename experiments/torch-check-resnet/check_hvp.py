#!/usr/bin/python3
"""samx's exact Hessian-vector product and top Hessian eigenvalue against PyTorch float64.

    /usr/bin/python3 experiments/torch-check-resnet/check_hvp.py BUILD_DIR [--model M] [--act A]
        [--smoothing S] [--n N] [--lambda-only 1] [--hvp-only 1]

Part 1, H v (for M in cnn, resnet20, resnet18, wrn, or all; A in relu, gelu, or both):
  builds the PyTorch module of check.py (and a `cnn` like samx's model/cnn.c) with random
  weights and random BatchNorm weights and running statistics, saves it as safetensors, writes
  N random CIFAR-format images and runs BUILD_DIR/tests/conv_dump --hvp 1: samx's train-mode
  pass (which moves the running statistics: after.*), then H v in evaluation mode for the
  direction v.* it drew, of the mean cross-entropy over the N images (label smoothing S).
  PyTorch loads the same weights and samx's after.* statistics into a float64 copy, model.eval(),
  and differentiates twice: g = grad(loss, w, create_graph=True), Hv = grad(g . v, w).
  Reported: ||Hv_samx - Hv_64|| / ||Hv_64|| over all weights and the worst tensor's
  ||.||/||.||, with torch's own float32 double-backward against float64 as the rounding floor,
  and the float64 Hv with the init_from statistics (before samx's pass) instead of after.*:
  how far a BatchNorm that ignored the running statistics would be off.
  Tolerance: 1e-5 with GELU (smooth: float32 rounding only); ReLU rows are for information
  (a unit within rounding of its kink switches between float32 and float64 and changes H).
Part 2, lambda_max: a ResNet-8 of width 8 (BatchNorm, option A, 1 block a stage), random
  weights and BatchNorm statistics, N test images: `samx run` with eval.lambda_max (exact HVPs,
  power iteration, the epoch-0 record at the init_from weights) against PyTorch's power iteration
  (PyHessian's loop) with float64 double-backward on the same images, weights and statistics,
  run to a relative change below 1e-12; PyTorch also reports the residual ||Hv - lambda v|| and
  the second eigenvalue (deflated), which bound how far a power iteration can be from lambda_1.
Exits 1 when a tolerance is missed; skips (exit 0, a message) without torch.
"""
import copy
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import check  # noqa: E402  (the modules, safetensors I/O, input normalisation constants)

try:
    import numpy as np
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError as err:  # pragma: no cover
    print(f"SKIP: PyTorch is not available ({err})")
    sys.exit(0)


class CNN(nn.Module):
    """samx's `cnn` (model/cnn.c) with its defaults: channels [16, 32], kernel 3, BatchNorm
    (convs without bias), max pool 2x2, no dropout, linear head `fc`."""

    def __init__(self, cin=3, hw=32, classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 32, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(32)
        self.fc = nn.Linear(32 * (hw // 4) * (hw // 4), classes)

    def forward(self, x):
        out = F.max_pool2d(check.act(self.bn1(self.conv1(x))), 2)
        out = F.max_pool2d(check.act(self.bn2(self.conv2(out))), 2)
        return self.fc(out.reshape(out.size(0), -1))


def build(which):
    if which == "cnn":
        return CNN(), "name: cnn\n"
    if which == "resnet20":
        return check.ResNet(3, [16, 32, 64], "A"), "name: resnet\ndepth: 20\n"
    if which == "resnet18":
        return check.ResNet(2, [64, 128, 256, 512], "B"), "name: resnet\ndepth: 18\n"
    if which == "wrn":
        return check.WideResNet(16, 2), "name: wrn\ndepth: 16\nwiden: 2\n"
    if which == "resnet8":
        return check.ResNet(1, [8, 16, 32], "A"), "name: resnet\ndepth: 8\nwidth: 8\n"
    raise SystemExit(f"unknown model {which}")


def write_data(tmp, rng, n):
    """n random CIFAR-10 records in every file; returns (labels, pixels) and the data yaml."""
    labels = rng.integers(0, 10, n).astype(np.uint8)
    pix = rng.integers(0, 256, (n, 3072)).astype(np.uint8)
    rec = np.concatenate([labels[:, None], pix], axis=1).tobytes()
    for f in ["data_batch_%d.bin" % i for i in range(1, 6)] + ["test_batch.bin"]:
        open(os.path.join(tmp, f), "wb").write(rec)
    dyaml = os.path.join(tmp, "d.yaml")
    open(dyaml, "w").write(f"name: cifar10\ndir: {tmp}\n")
    return labels, pix, dyaml


def samx_input(pix, n):
    """samx's normalised input: x = p * scale + shift in float32, scale = 1/(255 std)."""
    scale = np.array([1.0 / (255.0 * s) for s in check.STD], dtype=np.float32)
    shift = np.array([-m / s for m, s in zip(check.MEAN, check.STD)], dtype=np.float32)
    x = pix.reshape(n, 3, 32, 32).astype(np.float32) * scale[None, :, None, None] + \
        shift[None, :, None, None]
    return torch.from_numpy(x.astype(np.float32))


def load(net, tensors, prefix_buf):
    """Weights from `tensors` (state_dict names), running statistics from prefix_buf + name."""
    sd = net.state_dict()
    with torch.no_grad():
        for k, v in sd.items():
            if k.endswith("num_batches_tracked"):
                continue
            src = tensors[(prefix_buf + k) if "running" in k else k]
            v.copy_(torch.from_numpy(np.array(src)).to(v.dtype))


def torch_hvp(net, x, y, v, smoothing):
    """H v of the mean cross-entropy by double back-propagation, in net's dtype and mode."""
    params = [p for _, p in net.named_parameters()]
    loss = F.cross_entropy(net(x), y, label_smoothing=smoothing)
    g = torch.autograd.grad(loss, params, create_graph=True)
    dot = sum((gi * vi).sum() for gi, vi in zip(g, v))
    return [h.detach() for h in torch.autograd.grad(dot, params)]


def check_hvp(build_dir, which, act_name, n, smoothing):
    check.ACT = {"relu": F.relu, "gelu": F.gelu}[act_name]
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    net, yaml = build(which)
    check.randomize_bn(net)
    with tempfile.TemporaryDirectory() as tmp:
        sd = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
        wpath = os.path.join(tmp, "w.safetensors")
        check.st_write(wpath, sd)
        labels, pix, dyaml = write_data(tmp, rng, n)
        myaml = os.path.join(tmp, "m.yaml")
        open(myaml, "w").write(yaml + f"activation: {act_name}\ninit_from: {wpath}\n")
        out = os.path.join(tmp, "out.safetensors")
        subprocess.run([os.path.join(build_dir, "tests", "conv_dump"), myaml, dyaml, str(n), out,
                        "--hvp", "1", "--smoothing", repr(smoothing)], check=True)
        got = check.st_read(out)
        weights = check.st_read(wpath)
    x = samx_input(pix, n)
    y = torch.from_numpy(labels.astype(np.int64))
    names = [k for k, _ in net.named_parameters()]
    res = {}
    weights.update({k: got[k] for k in got if k.startswith("after.")})
    # float64 and float32 with samx's statistics after its train-mode pass; and, to show that
    # the comparison sees the evaluation-mode BatchNorm terms, float64 with the statistics of
    # the init_from file instead (before that pass).
    for key, dtype, prefix in ((64, torch.float64, "after."), (32, torch.float32, "after."),
                               ("before", torch.float64, "")):
        t = copy.deepcopy(net).to(dtype)
        load(t, weights, prefix)
        t.eval()
        v = [torch.from_numpy(np.array(got["v." + k])).to(dtype) for k in names]
        res[key] = [h.double().numpy() for h in torch_hvp(t, x.to(dtype), y, v, smoothing)]
    h64, h32 = res[64], res[32]
    hs = [np.array(got["hv." + k], dtype=np.float64) for k in names]

    def rel(a, b):
        return np.sqrt(sum(((ai - bi) ** 2).sum() for ai, bi in zip(a, b))) / \
            np.sqrt(sum((bi ** 2).sum() for bi in b))

    per = sorted(((np.linalg.norm(a - b) / (np.linalg.norm(b) + 1e-300), k, np.linalg.norm(b))
                  for a, b, k in zip(hs, h64, names)), reverse=True)
    r_s, r_t, r_b = rel(hs, h64), rel(h32, h64), rel(res["before"], h64)
    tol = 1e-5 if act_name == "gelu" else None
    ok = tol is None or r_s <= tol
    nw = sum(p.numel() for p in net.parameters())
    print(f"{which} ({act_name}, smoothing {smoothing}): {nw} weights, batch {n}: "
          f"||Hv||={np.sqrt(sum((b ** 2).sum() for b in h64)):.4g}  "
          f"samx vs float64 {r_s:.3g}  torch fp32 vs float64 {r_t:.3g}  "
          f"worst tensor {per[0][1]} {per[0][0]:.3g} (||Hv_t|| {per[0][2]:.3g}); "
          f"torch with the pre-pass statistics {r_b:.3g}  "
          f"tol {'%.0e' % tol if tol else 'none (information)'}  {'OK' if ok else 'MISSED'}")
    if os.environ.get("VERBOSE"):
        for r, k, nb in per[:8]:
            print(f"    {k:32s} rel {r:.3g}  ||Hv_t|| {nb:.3g}")
    return ok, (which, act_name, smoothing, nw, r_s, r_t, per[0][1], per[0][0], r_b)


def power_iteration(net, x, y, iters, tol, seed, eps, deflate=None):
    """PyHessian's eig loop in float64: v ~ N(0, I); each iteration v <- orth(v) / (||.|| + eps),
    lambda = v . Hv, v <- Hv / (||Hv|| + eps), until |lambda - lambda_prev| / (|lambda_prev| +
    1e-6) < tol. PyHessian (and samx) take eps = 1e-6, so ||v|| = 1 / (1 + 1e-6) at the product
    and lambda is the eigenvalue times (1 + 1e-6)^-2, 2e-6 relative low. Returns lambda, the
    Rayleigh quotient v.Hv / v.v of the same v (the eigenvalue without that factor), the
    iterations, the residual ||Hv - rq v|| / (|rq| ||v||) and v / ||v||."""
    params = [p for _, p in net.named_parameters()]
    gen = torch.Generator().manual_seed(seed)
    v = [torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in params]

    def dot(a, b):
        return sum((ai * bi).sum() for ai, bi in zip(a, b))

    def normalize(a, e):
        s = dot(a, a).sqrt() + e
        return [ai / s for ai in a]

    def orth(a):
        if deflate is None:
            return a
        c = dot(a, deflate)
        return [ai - c * qi for ai, qi in zip(a, deflate)]

    v = normalize(v, eps)
    lam = None
    for it in range(1, iters + 1):
        v = normalize(orth(v), eps)
        hv = torch_hvp(net, x, y, v, 0.0)
        lam_new = dot(hv, v).item()
        vv = dot(v, v).item()
        done = lam is not None and abs(lam - lam_new) / (abs(lam) + 1e-6) < tol
        lam, rq = lam_new, lam_new / vv
        r = [h - rq * vi for h, vi in zip(hv, v)]
        res = (dot(r, r).item() / vv) ** 0.5 / abs(rq)
        u = normalize(v, 0.0)
        v = normalize(hv, eps)
        if done:
            break
    return lam, rq, it, res, u


def check_lambda(build_dir, act_name, n):
    check.ACT = {"relu": F.relu, "gelu": F.gelu}[act_name]
    torch.manual_seed(1)
    rng = np.random.default_rng(1)
    net, yaml = build("resnet8")
    check.randomize_bn(net)
    with tempfile.TemporaryDirectory() as tmp:
        sd = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
        wpath = os.path.join(tmp, "w.safetensors")
        check.st_write(wpath, sd)
        labels, pix, _ = write_data(tmp, rng, n)
        model = "".join("  " + line + "\n" for line in yaml.splitlines())
        cfg = os.path.join(tmp, "run.yaml")
        # The test split holds exactly these n images, so the probe set is all of them (in the
        # order of the stream "eval.probe_set"; the mean loss does not depend on it).
        open(cfg, "w").write(
            f"name: hvp-lambda\nseed: 0\ndata:\n  name: cifar10\n  dir: {tmp}\nmodel:\n{model}"
            f"  activation: {act_name}\n  init_from: {wpath}\n"
            f"train:\n  epochs: 0\n  batch_size: {n}\noptimizer:\n  name: sgd\n  lr: 0.1\n"
            f"eval:\n  lambda_max: {{split: test, examples: {n}, iters: 1000, tol: 1.0e-7, "
            f"hvp: exact}}\n")
        rd = os.path.join(tmp, "run")
        subprocess.run([os.path.join(build_dir, "cmd", "samx"), "run", cfg, "-o", rd, "-q"],
                       check=True)
        rec = json.loads(open(os.path.join(rd, "metrics.jsonl")).readline())
        weights = check.st_read(wpath)
    x = samx_input(pix, n).double()
    y = torch.from_numpy(labels.astype(np.int64))
    t = copy.deepcopy(net).double()
    load(t, weights, "")
    t.eval()
    lam, rq, it, res, v1 = power_iteration(t, x, y, 3000, 1e-12, 0, 1e-6)
    lam2, _, it2, _, _ = power_iteration(t, x, y, 300, 1e-6, 1, 0.0, deflate=v1)
    ls = rec["lambda_max"]
    d, d_rq = abs(ls - lam) / abs(lam), abs(ls - rq) / abs(rq)
    nw = sum(p.numel() for p in net.parameters())
    # samx stops at a relative change below 1e-7; with r = |lambda_2 / lambda_1| its Rayleigh
    # quotient is then within about 1e-7 r^2 / (1 - r^2) of the limit (~3e-7 for r = 0.8), and
    # float32 HVPs add ~1e-7: 1e-5 leaves room for both and for PyHessian's 2e-6 factor.
    tol = 1e-5
    ok = d <= tol and d_rq <= tol
    print(f"lambda_max, resnet8 width 8 ({act_name}), {nw} weights, batch {n}: samx {ls:.9g} "
          f"({rec['lambda_max_iters']} iterations, last relative change "
          f"{rec['lambda_max_rel_change']:.2g}); torch float64, PyHessian's loop: {lam:.9g} "
          f"({it} iterations), Rayleigh quotient {rq:.9g} (residual {res:.2g}); "
          f"|lambda_2| {abs(lam2):.6g} ({it2} its); samx vs PyHessian's {d:.3g}, "
          f"vs the Rayleigh quotient {d_rq:.3g}  tol {tol:.0e}  {'OK' if ok else 'MISSED'}")
    return ok, (act_name, nw, ls, rec["lambda_max_iters"], lam, rq, it, res, lam2, d, d_rq)


def main():
    build_dir = sys.argv[1] if len(sys.argv) > 1 else "build"
    opts = dict(zip(sys.argv[2::2], sys.argv[3::2]))
    models = opts.get("--model", "all")
    models = ["cnn", "resnet20", "resnet18", "wrn"] if models == "all" else [models]
    acts = opts.get("--act", "both")
    acts = ["gelu", "relu"] if acts == "both" else [acts]
    smoothing = float(opts.get("--smoothing", "0"))
    for tool in ("tests/conv_dump", "cmd/samx"):
        if not os.path.exists(os.path.join(build_dir, tool)):
            print(f"error: {os.path.join(build_dir, tool)} not built")
            return 2
    print(f"torch {torch.__version__}")
    ok = True
    if not opts.get("--lambda-only"):
        for which in models:
            for a in acts:
                n = int(opts.get("--n", 16 if which == "resnet18" else 32))
                ok &= check_hvp(build_dir, which, a, n, smoothing)[0]
    if not opts.get("--hvp-only"):
        for a in acts:
            ok &= check_lambda(build_dir, a, int(opts.get("--n", 32)))[0]
    print("OK" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
