#!/usr/bin/python3
"""Compare samx's optimizers with independent PyTorch implementations.

For each method: train the same small MLP full-batch (shuffle off, one batch = the whole data
set, so 20 epochs = 20 steps) from the same initial weights, once with `samx run` and once with
the PyTorch code below, then print the largest relative weight difference after 20 steps:
max over tensors of max|w_samx - w_torch| / max|w_torch|.

The PyTorch side is written from the papers' update rules and the authors' public code (as
summarized in the project's algorithms.md), not from samx's C. Data: a synthetic 4-class problem (512 x 20)
written as CSV, so both sides read the same float32 values.

    python3 experiments/torch-check/check.py [--samx PATH] [--only NAME,...] [--keep DIR]
"""
import argparse
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import tempfile

import torch
import torch.nn.functional as F

STEPS = 20
N, D, C, H = 512, 20, 4, 32
LR0 = 0.1  # base lr: cosine from LR0 to 0 over the 20 steps
MOM, WD = 0.9, 5e-4


# ---------------------------------------------------------------- data, weights, files

def make_data(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N + 128, D, generator=g)
    teacher = torch.randn(D, C, generator=g)
    y = (torch.tanh(x) @ teacher + 0.5 * torch.randn(N + 128, C, generator=g)).argmax(1)
    return x, y


def write_csv(path, x, y):
    with open(path, "w") as f:
        for row, lab in zip(x.tolist(), y.tolist()):
            f.write(",".join("%.9g" % v for v in row) + ",%d\n" % lab)


def read_csv_back(path):
    """The floats exactly as written (float32 of the printed decimals)."""
    xs, ys = [], []
    with open(path) as f:
        for line in f:
            v = line.strip().split(",")
            xs.append([float(t) for t in v[:-1]])
            ys.append(int(v[-1]))
    return torch.tensor(xs, dtype=torch.float32), torch.tensor(ys)


def init_weights(seed=1):
    g = torch.Generator().manual_seed(seed)
    shapes = [("0.weight", (H, D)), ("0.bias", (H,)), ("2.weight", (H, H)), ("2.bias", (H,)),
              ("4.weight", (C, H)), ("4.bias", (C,))]
    out = {}
    for name, shp in shapes:
        fan_in = shp[1] if len(shp) == 2 else (D if name.startswith("0") else H)
        out[name] = (torch.rand(shp, generator=g) * 2 - 1) / math.sqrt(fan_in)
    return out


def save_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for name, t in tensors.items():
        b = t.contiguous().to(torch.float32).numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def load_safetensors(path):
    import numpy as np
    with open(path, "rb") as f:
        raw = f.read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        arr = np.frombuffer(raw[8 + n + a:8 + n + b], dtype="<f4").reshape(info["shape"])
        out[name] = torch.from_numpy(arr.copy())
    return out


# ---------------------------------------------------------------- samx's random stream

M64 = (1 << 64) - 1


def _splitmix64(x):
    x = (x + 0x9e3779b97f4a7c15) & M64
    z = ((x ^ (x >> 30)) * 0xbf58476d1ce4e5b9) & M64
    z = ((z ^ (z >> 27)) * 0x94d049bb133111eb) & M64
    return x, z ^ (z >> 31)


class SamxStream:
    """samx's stream (seed, name, counter) as lib/rng.h defines it (FNV-1a of the name and
    splitmix64 into a xoshiro256** state; normals by Box-Muller, no cached second value), so
    the PyTorch side draws the very numbers samx draws. Python's math.log/cos are the C ones."""

    def __init__(self, seed, name, counter):
        h = 0xcbf29ce484222325
        for ch in name.encode():
            h = ((h ^ ch) * 0x100000001b3) & M64
        x, a = _splitmix64(seed & M64)
        x, b = _splitmix64(a ^ h)
        x = b ^ ((counter * 0xd1342543de82ef95 + 0x2545f4914f6cdd1d) & M64)
        self.s = []
        for _ in range(4):
            x, v = _splitmix64(x)
            self.s.append(v)

    def u64(self):
        s = self.s
        rotl = lambda v, k: ((v << k) | (v >> (64 - k))) & M64
        out = (rotl((s[1] * 5) & M64, 7) * 9) & M64
        t = (s[1] << 17) & M64
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = rotl(s[3], 45)
        return out

    def uniform(self):
        return (self.u64() >> 11) * 2.0 ** -53

    def normal(self):
        u1 = 1.0 - self.uniform()
        u2 = self.uniform()
        return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)


def rsam_noise(ps, stream, sigma, filter_wise):
    """R-SAM's random vector (RSAM-Optimizer/R-SAM vit_jax/train.py random_vector): sigma times
    a standard normal, times the norm of the element's output row (tensors of 2+ dims) or of
    the whole tensor + 1e-16 (1-dim); elements drawn in order from samx's stream."""
    out = []
    for p in ps:
        w = p.detach().double()
        z = torch.tensor([stream.normal() for _ in range(w.numel())],
                         dtype=torch.float64).reshape(w.shape)
        if not filter_wise:
            scale = torch.ones_like(w)
        elif w.dim() >= 2:
            scale = w.reshape(w.shape[0], -1).norm(dim=1).reshape(
                [w.shape[0]] + [1] * (w.dim() - 1)).expand_as(w)
        else:
            scale = torch.full_like(w, w.norm().item() + 1e-16)
        out.append((sigma * scale * z).float())
    return out


# ---------------------------------------------------------------- the PyTorch side

class Run:
    """Model, data and a base optimizer (torch.optim.SGD or AdamW) for one method."""

    def __init__(self, x, y, w0, base="sgd", lr0=LR0, wd=WD, l2=0.0):
        self.model = torch.nn.Sequential(torch.nn.Linear(D, H), torch.nn.Tanh(),
                                         torch.nn.Linear(H, H), torch.nn.Tanh(),
                                         torch.nn.Linear(H, C))
        with torch.no_grad():
            for name, p in self.model.named_parameters():
                p.copy_(w0[name])
        self.ps = list(self.model.parameters())
        self.names = [n for n, _ in self.model.named_parameters()]
        self.x, self.y, self.lr0 = x, y, lr0
        if base == "sgd":
            self.opt = torch.optim.SGD(self.ps, lr=lr0, momentum=MOM, weight_decay=wd)
        else:
            self.opt = torch.optim.AdamW(self.ps, lr=lr0, weight_decay=0.05)
        self.l2 = l2

    def lr(self, t):
        return self.lr0 * (1 + math.cos(math.pi * t / STEPS)) / 2

    def grad(self, idx=None):
        self.model.zero_grad()
        x, y = (self.x, self.y) if idx is None else (self.x[idx], self.y[idx])
        loss = F.cross_entropy(self.model(x), y)
        if self.l2:
            # L2 inside the loss (sam-jax, understanding-sam): every gradient has l2 * w
            (loss + 0.5 * self.l2 * sum((p ** 2).sum() for p in self.ps)).backward()
        else:
            loss.backward()
        return loss.item(), [p.grad.detach().clone() for p in self.ps]

    def losses(self):
        with torch.no_grad():
            return F.cross_entropy(self.model(self.x), self.y, reduction="none")

    def save(self):
        return [p.detach().clone() for p in self.ps]

    def restore(self, saved):
        with torch.no_grad():
            for p, s in zip(self.ps, saved):
                p.copy_(s)

    def add(self, e, sign=1.0):
        with torch.no_grad():
            for p, ei in zip(self.ps, e):
                p.add_(ei, alpha=sign)

    def base_step(self, t, d):
        for gr in self.opt.param_groups:
            gr["lr"] = self.lr(t)
        for p, di in zip(self.ps, d):
            p.grad = di.clone()
        self.opt.step()

    def weights(self):
        return {n: p.detach().clone() for n, p in zip(self.names, self.ps)}


def norm(ts):
    return torch.norm(torch.stack([t.norm() for t in ts]))


def ascent(g, rho, delta):
    s = rho / (norm(g) + delta)
    return [gi * s for gi in g]


def sam_grad(r, rho, delta=1e-12, idx=None):
    """g, gs at w + rho g/(||g|| + delta), weights restored."""
    saved = r.save()
    _, g = r.grad(idx)
    r.add(ascent(g, rho, delta))
    _, gs = r.grad(idx)
    r.restore(saved)
    return g, gs


def m_sam(r, t, rho, m):
    n_groups = N // m
    acc = None
    for c in range(n_groups):
        idx = torch.arange(c * m, (c + 1) * m)
        _, gs = sam_grad(r, rho, idx=idx)
        acc = gs if acc is None else [a + b for a, b in zip(acc, gs)]
    r.base_step(t, [a / n_groups for a in acc])


def run_torch(method, x, y, w0):
    name, kw, base = method["name"], method.get("torch", {}), method.get("base", "sgd")
    r = Run(x, y, w0, base=base, lr0=0.01 if base == "adamw" else LR0,
            wd=method.get("base_wd", WD), l2=method.get("train", {}).get("l2", 0.0))
    state = {}
    for t in range(STEPS):
        if name == "sgd" or name == "adamw":
            _, g = r.grad()
            r.base_step(t, g)
        elif name == "sam" and kw.get("m"):
            m_sam(r, t, kw["rho"], kw["m"])
        elif name == "sam" and kw.get("clip"):
            # understanding-sam weight_ascent_step with no_grad_norm: delta = rho g, then
            # delta *= rho / ||delta|| when ||delta|| > rho
            saved = r.save()
            _, g = r.grad()
            delta = [kw["rho"] * gi for gi in g]
            dn = norm(delta)
            if dn > kw["rho"]:
                delta = [di * (kw["rho"] / dn) for di in delta]
            state.setdefault("clipped", []).append(bool(dn > kw["rho"]))
            r.add(delta)
            _, gs = r.grad()
            r.restore(saved)
            r.base_step(t, gs)
        elif name == "sam":
            _, gs = sam_grad(r, kw["rho"])
            r.base_step(t, gs)
        elif name == "adaptive":
            # davda54 / GSAM / atorch adaptive=True: e = rho w^2 g / (|| |w| g || + 1e-12)
            saved = r.save()
            _, g = r.grad()
            nrm = norm([p.detach().abs() * gi for p, gi in zip(r.ps, g)])
            scale = kw["rho"] / (nrm + 1e-12)
            r.add([gi * scale * p.detach() ** 2 for p, gi in zip(r.ps, g)])
            _, gs = r.grad()
            r.restore(saved)
            if kw["method"] == "wsam":  # decoupled, atorch
                a = kw["gamma"] / (1 - kw["gamma"])
                r.base_step(t, g)
                with torch.no_grad():
                    for p, gi, gsi in zip(r.ps, g, gs):
                        p.add_(gsi - gi, alpha=-r.lr(t) * a)
            else:  # gsam, constant rho (rho_min = rho)
                inner = sum((a * b).sum() for a, b in zip(g, gs))
                ng, ngp = norm(g), norm(gs)
                cosine = inner / (ng * ngp + 1e-12)
                r.base_step(t, [b - kw["alpha"] * (a - cosine * ng * b / (ngp + 1e-12))
                                for a, b in zip(g, gs)])
        elif name == "fsam":
            # nblt/F-SAM FriendlySAM.first_step (ema "code"), or the paper's m_t before d
            saved = r.save()
            _, g = r.grad()
            sig, lam = kw["sigma"], kw["lambda"]
            if kw["ema"] == "code":
                if "m" not in state:
                    state["m"] = [gi.clone() for gi in g]
                    d = [gi.clone() for gi in g]
                else:
                    d = [gi - mi * sig for gi, mi in zip(g, state["m"])]
                    state["m"] = [mi * lam + gi * (1 - lam) for mi, gi in zip(state["m"], g)]
            else:
                m = state.get("m", [torch.zeros_like(gi) for gi in g])
                state["m"] = [mi * lam + gi * (1 - lam) for mi, gi in zip(m, g)]
                d = [gi - mi * sig for gi, mi in zip(g, state["m"])]
            r.add(ascent(d, kw["rho"], 1e-12))
            _, gs = r.grad()
            r.restore(saved)
            r.base_step(t, gs)
        elif name == "msam":
            # MarlonBecker/MSAM optimizer/msam.py: the parameters hold the perturbed point
            # between steps; SGD with momentum inside, weight decay at the perturbed point.
            if "v" not in state:
                state["v"] = [torch.zeros_like(p) for p in r.ps]
                state["inv"] = 0.0
            _, g = r.grad()
            lr, rho, v = r.lr(t), kw["rho"], state["v"]
            with torch.no_grad():
                for p, gi, vi in zip(r.ps, g, v):
                    d_p = gi + WD * p
                    p.add_(vi, alpha=rho * state["inv"])
                    vi.mul_(MOM).add_(d_p)
                    p.add_(vi, alpha=-lr)
                state["inv"] = 1 / (norm(v) + 1e-12)
                for p, vi in zip(r.ps, v):
                    p.sub_(vi, alpha=rho * state["inv"])
            if t == STEPS - 1:  # move_back_from_momentumAscent
                with torch.no_grad():
                    for p, vi in zip(r.ps, v):
                        p.add_(vi, alpha=rho * state["inv"])
        elif name == "lookbehind":
            # chandar-lab/Lookbehind-SAM lookbehind.py (LookbehindSAM) driven as example_cifar.py
            # drives it: k ascent/descent pairs on each batch, then the slow-weight interpolation
            k, rho, alpha = kw["k"], kw["rho"], kw["alpha"]
            if "slow" not in state:
                state["slow"], state["cached"] = r.save(), r.save()
            first = None
            for i in range(k):
                _, g = r.grad()
                gn = norm(g) + 1e-16
                r.add([gi * (rho / gn) for gi in g])
                _, gs = r.grad()
                backup = r.save()
                r.restore(state["cached"])
                r.base_step(t, gs)
                if alpha == -1 and i == 0:
                    first = r.save()
                state["cached"] = r.save()
                r.restore(backup)
            r.restore(state["cached"])
            with torch.no_grad():
                for j, p in enumerate(r.ps):
                    slow = state["slow"][j]
                    if alpha == -1:
                        cos = torch.nn.CosineSimilarity(dim=0)((first[j] - slow).flatten(),
                                                               (p - slow).flatten())
                        a = ((cos + 1.) / 2.).item()
                    else:
                        a = alpha
                    p.mul_(a).add_(slow, alpha=1.0 - a)
            state["cached"], state["slow"] = r.save(), r.save()
        elif name == "fishersam":
            # Kim et al.'s Fisher ball, f = 1 + eta g^2 (the inverse as a third-party
            # implementation forms it): e = rho f^-1 g / sqrt(g f^-1 g), or rho u/||u||
            saved = r.save()
            _, g = r.grad()
            inv = [1.0 / (1.0 + kw["eta"] * gi.pow(2)) for gi in g]
            u = [fi * gi for fi, gi in zip(inv, g)]
            if kw["norm"] == "fisher":
                den = torch.sqrt(sum((gi * fi * gi).sum() for gi, fi in zip(g, inv)))
            else:
                den = norm(u)
            r.add([ui * (kw["rho"] / (den + 1e-12)) for ui in u])
            _, gs = r.grad()
            r.restore(saved)
            r.base_step(t, gs)
        elif name == "gam":
            # xxgege/GAM gam/gam.py step(): four passes, unperturb by subtraction
            rho, rho_n = kw["rho"], kw["rho_norm"]
            b1, b3, b2 = kw["alpha"], 1 - kw["alpha"], 1 - kw["beta"]
            _, g0 = r.grad()
            e0 = ascent(g0, rho, 1e-12)
            r.add(e0)
            _, g1 = r.grad()
            r.add(e0, -1.0)
            u = [a - b for a, b in zip(g1, g0)]
            e12 = ascent(u, rho_n, 1e-12)
            r.add(e12)
            _, g2 = r.grad()
            e2 = ascent(g2, rho, 1e-12)
            r.add(e2)
            e12 = [a + b for a, b in zip(e12, e2)]
            _, g3 = r.grad()
            pro_m = [a + abs(b2) * b for a, b in zip(g0, g2)]
            d = [b1 * a + b3 * b for a, b in zip(g1, g3)]
            inner = sum((a * b).sum() for a, b in zip(pro_m, d))
            nd, nm = norm(d), norm(pro_m)
            cosine = inner / (nd * nm + 1e-12)
            d = [di - kw["gamma"] * (mi - cosine * nm * di / (nd + 1e-12))
                 for di, mi in zip(d, pro_m)]
            r.add(e12, -1.0)
            r.base_step(t, d)
        elif name == "rsam":
            # RSAM-Optimizer/R-SAM vit_jax/train.py sam_gradient: gradient at w + delta,
            # ascent along 2 g + delta (lambda g + delta) from w; sigma a cosine rising 5x
            # (the code's CosineInc); with m, one delta and one ascent per group
            sig = kw["sigma"]
            if kw.get("sigma_end") is not None:
                inc = kw["sigma_end"] / sig - 1
                sig = sig * ((-math.cos(t * math.pi / STEPS) * 0.5 + 0.5) * inc + 1)
            stream = SamxStream(0, "optim.rsam", t)
            groups = [None] if not kw.get("m") else \
                [torch.arange(c * kw["m"], (c + 1) * kw["m"]) for c in range(N // kw["m"])]
            acc = None
            for idx in groups:
                saved = r.save()
                delta = rsam_noise(r.ps, stream, sig, kw["noise"] == "filter")
                r.add(delta)
                _, gt = r.grad(idx)
                r.restore(saved)
                r.add(ascent([kw["lambda"] * a + b for a, b in zip(gt, delta)], kw["rho"], 1e-12))
                _, gs = r.grad(idx)
                r.restore(saved)
                acc = gs if acc is None else [a + b for a, b in zip(acc, gs)]
            r.base_step(t, [a / len(groups) for a in acc])
        elif name == "asam":
            # Kwon et al.: e = rho T^2 g / ||T g||, T = |w| + eta (weights only, or all tensors).
            saved = r.save()
            _, g = r.grad()
            T = [(p.detach().abs() + kw["eta"]) if (kw["all"] or n.endswith("weight"))
                 else torch.ones_like(p) for n, p in zip(r.names, r.ps)]
            tg = [ti * gi for ti, gi in zip(T, g)]
            nrm = norm(tg) + kw["delta"]
            r.add([kw["rho"] * ti * ti * gi / nrm for ti, gi in zip(T, g)])
            _, gs = r.grad()
            r.restore(saved)
            r.base_step(t, gs)
        elif name == "wsam":
            g, gs = sam_grad(r, kw["rho"])
            if kw.get("max_norm"):
                for lst in (g, gs):
                    total = norm(lst)
                    coef = kw["max_norm"] / (total + 1e-6)
                    if coef < 1:
                        for v in lst:
                            v.mul_(coef)
            a = kw["gamma"] / (1 - kw["gamma"])
            if kw["decouple"]:
                r.base_step(t, g)
                with torch.no_grad():
                    for p, gi, gsi in zip(r.ps, g, gs):
                        p.add_(gsi - gi, alpha=-r.lr(t) * a)
            else:
                r.base_step(t, [a * gsi + (1 - a) * gi for gi, gsi in zip(g, gs)])
        elif name == "crsam":
            saved = r.save()
            _, g = r.grad()
            e = ascent(g, kw["rho"], 1e-12)
            r.add(e)
            _, gp = r.grad()
            r.restore(saved)
            r.add(e, -1.0)
            _, gm = r.grad()
            r.restore(saved)
            d = [a + kw["gamma"] * (a + b - 2 * c) + kw["beta"] * (a - b)
                 for a, b, c in zip(gp, gm, g)]
            r.base_step(t, d)
        elif name == "samar":
            saved = r.save()
            l0, g = r.grad()
            r.add(ascent(g, kw["rho"], 1e-12))
            l1, gs = r.grad()
            r.restore(saved)
            lam = state.get("lam", kw["lambda"])
            r.base_step(t, [(1 - lam) * gi + lam * gsi for gi, gsi in zip(g, gs)])
            S = l1 - l0
            b = kw["beta_s"]
            sh = S if "sh" not in state else b * state["sh"] + (1 - b) * S
            state["sh"] = sh
            hist = state.setdefault("hist", {})
            hist[t] = float(torch.tensor(sh, dtype=torch.float32))
            if (t + 1) % kw["period"] == 0 and t >= kw["tau"] and hist[t - kw["tau"]] > 0:
                ratio = sh / hist[t - kw["tau"]]
                if ratio > kw["c_hi"]:
                    lam = min(lam * kw["up"], kw["lam_max"])
                elif ratio < kw["c_lo"]:
                    lam = max(lam * kw["down"], kw["lam_min"])
            state["lam"] = lam
        elif name == "gsam":
            lr, lr_max, lr_min = r.lr(t), r.lr0, 0.0
            rho_t = kw["rho_min"] + (kw["rho"] - kw["rho_min"]) * (lr - lr_min) / (lr_max - lr_min)
            g, gp = sam_grad(r, rho_t)
            inner = sum((a * b).sum() for a, b in zip(g, gp))
            ng, ngp = norm(g), norm(gp)
            cosine = inner / (ng * ngp + 1e-12)
            d = [b - kw["alpha"] * (a - cosine * ng * b / (ngp + 1e-12)) for a, b in zip(g, gp)]
            r.base_step(t, d)
        elif name == "vasso":
            saved = r.save()
            _, g = r.grad()
            if "ema" not in state:
                state["ema"] = [gi.clone() for gi in g]
            else:
                state["ema"] = [(1 - kw["theta"]) * a + kw["theta"] * b
                                for a, b in zip(state["ema"], g)]
            r.add(ascent(state["ema"], kw["rho"], 1e-7))
            _, gs = r.grad()
            r.restore(saved)
            r.base_step(t, gs)
        elif name == "looksam":
            if t % kw["k"] == 0:
                g, gs = sam_grad(r, kw["rho"], 1e-8)
                gv = []
                for a, b in zip(g, gs):
                    ga, gb = a / a.norm(), b / b.norm()
                    gv.append(b - b.norm() * (ga * gb).sum() * ga)
                state["gv"] = gv
                r.base_step(t, gs)
            else:
                _, g = r.grad()
                d = [a + kw["alpha"] * (a.norm() / (v.norm() + 1e-8)) * v
                     for a, v in zip(g, state["gv"])]
                r.base_step(t, d)
        elif name == "esam":
            # beta = 1 (no tensor dropped: samx's SWP draws come from its own stream).
            saved = r.save()
            _, g = r.grad()
            l_before = r.losses()
            s = kw["rho"] / (norm(g) + 1e-7) / 1.0
            r.add([gi * s for gi in g])
            l_after = r.losses()
            sharp = l_after - l_before
            q = int(N * kw["gamma"])
            cutoff = torch.topk(sharp, q).values[-1]
            idx = torch.nonzero(sharp > cutoff).flatten()
            _, gs = r.grad(idx)
            r.restore(saved)
            r.base_step(t, gs)
        else:
            raise ValueError(name)
    return r.weights()


# ---------------------------------------------------------------- methods and samx configs

def methods():
    sgd = {"name": "sgd", "lr": {"schedule": "cosine", "start": LR0, "end": 0},
           "momentum": MOM, "weight_decay": WD}
    adamw = {"name": "adamw", "lr": {"schedule": "cosine", "start": 0.01, "end": 0},
             "weight_decay": 0.05}
    samar = {"rho": 0.05, "lambda": 1.0, "tau": 2, "period": 2, "beta_s": 0.5, "up": 1.5,
             "down": 0.8, "c_lo": 0.99, "c_hi": 1.01, "lam_min": 0.1, "lam_max": 10}
    return [
        {"label": "sgd", "name": "sgd", "samx": dict(sgd)},
        {"label": "adamw", "name": "adamw", "base": "adamw", "samx": dict(adamw)},
        {"label": "sam", "name": "sam", "torch": {"rho": 0.05}, "samx": {"rho": 0.05}},
        {"label": "sam/adamw", "name": "sam", "base": "adamw", "torch": {"rho": 0.05},
         "samx": {"rho": 0.05}},
        {"label": "sam m=128", "name": "sam", "torch": {"rho": 0.05, "m": 128},
         "samx": {"rho": 0.05, "m": 128}},
        {"label": "asam weights", "name": "asam",
         "torch": {"rho": 0.5, "eta": 0.01, "all": False, "delta": 1e-16},
         "samx": {"rho": 0.5, "eta": 0.01, "scale": "weights"}},
        {"label": "asam all", "name": "asam",
         "torch": {"rho": 0.5, "eta": 0.0, "all": True, "delta": 1e-12},
         "samx": {"rho": 0.5, "scale": "all"}},
        {"label": "wsam decoupled", "name": "wsam",
         "torch": {"rho": 0.05, "gamma": 0.9, "decouple": True},
         "samx": {"rho": 0.05, "gamma": 0.9, "decouple": True}},
        {"label": "wsam coupled clip", "name": "wsam",
         "torch": {"rho": 0.05, "gamma": 0.6, "decouple": False, "max_norm": 0.3},
         "samx": {"rho": 0.05, "gamma": 0.6, "decouple": False, "max_norm": 0.3}},
        {"label": "crsam", "name": "crsam", "torch": {"rho": 0.1, "gamma": 0.1, "beta": 0.01},
         "samx": {"rho": 0.1, "gamma": 0.1, "beta": 0.01}},
        {"label": "samar (trend)", "name": "samar", "torch": samar, "samx": dict(samar)},
        {"label": "gsam", "name": "gsam", "torch": {"rho": 0.1, "rho_min": 0.02, "alpha": 0.4},
         "samx": {"rho": 0.1, "rho_min": 0.02, "alpha": 0.4}},
        {"label": "vasso", "name": "vasso", "torch": {"rho": 0.05, "theta": 0.4},
         "samx": {"rho": 0.05, "theta": 0.4}},
        {"label": "looksam", "name": "looksam", "torch": {"rho": 0.1, "k": 5, "alpha": 0.7},
         "samx": {"rho": 0.1, "k": 5, "alpha": 0.7}},
        {"label": "esam (beta 1)", "name": "esam", "torch": {"rho": 0.05, "gamma": 0.5},
         "samx": {"rho": 0.05, "beta": 1.0, "gamma": 0.5}},
        {"label": "sam train.l2", "name": "sam", "torch": {"rho": 0.05}, "samx": {"rho": 0.05},
         "train": {"l2": 5e-3}, "base_wd": 0.0},
        {"label": "sam unnorm clip", "name": "sam", "torch": {"rho": 0.5, "clip": True},
         "samx": {"rho": 0.5, "normalize": False, "clip": True}},
        # a strong L2 term makes ||g|| > 1 for the first steps (clipped) and < 1 later
        {"label": "sam unnorm clip l2", "name": "sam", "torch": {"rho": 0.5, "clip": True},
         "samx": {"rho": 0.5, "normalize": False, "clip": True}, "train": {"l2": 1.0},
         "base_wd": 0.0},
        {"label": "gsam adaptive", "name": "adaptive",
         "torch": {"method": "gsam", "rho": 0.5, "alpha": 0.4},
         "samx": {"rho": 0.5, "alpha": 0.4, "adaptive": True}, "samx_name": "gsam"},
        {"label": "wsam adaptive", "name": "adaptive",
         "torch": {"method": "wsam", "rho": 0.5, "gamma": 0.9},
         "samx": {"rho": 0.5, "gamma": 0.9, "adaptive": True}, "samx_name": "wsam"},
        {"label": "fsam (paper)", "name": "fsam",
         "torch": {"rho": 0.1, "sigma": 1.0, "lambda": 0.6, "ema": "paper"},
         "samx": {"rho": 0.1, "sigma": 1.0, "lambda": 0.6}},
        {"label": "fsam (code)", "name": "fsam",
         "torch": {"rho": 0.1, "sigma": 1.0, "lambda": 0.6, "ema": "code"},
         "samx": {"rho": 0.1, "sigma": 1.0, "lambda": 0.6, "ema": "code"}},
        {"label": "msam", "name": "msam", "torch": {"rho": 0.3}, "samx": {"rho": 0.3}},
        {"label": "lookbehind adaptive", "name": "lookbehind",
         "torch": {"rho": 0.05, "k": 2, "alpha": -1}, "samx": {"rho": 0.05, "k": 2}},
        {"label": "lookbehind alpha 0.5", "name": "lookbehind",
         "torch": {"rho": 0.05, "k": 3, "alpha": 0.5},
         "samx": {"rho": 0.05, "k": 3, "alpha": 0.5}},
        {"label": "fishersam", "name": "fishersam",
         "torch": {"rho": 0.1, "eta": 50.0, "norm": "fisher"}, "samx": {"rho": 0.1, "eta": 50.0}},
        {"label": "fishersam euclid", "name": "fishersam",
         "torch": {"rho": 0.1, "eta": 50.0, "norm": "euclidean"},
         "samx": {"rho": 0.1, "eta": 50.0, "norm": "euclidean"}},
        {"label": "gam", "name": "gam",
         "torch": {"rho": 0.03, "rho_norm": 0.2, "alpha": 0.6, "beta": 0.5, "gamma": 0.03},
         "samx": {"rho": 0.03, "rho_norm": 0.2, "alpha": 0.6, "beta": 0.5, "gamma": 0.03}},
        {"label": "rsam filter", "name": "rsam",
         "torch": {"rho": 0.1, "sigma": 0.05, "sigma_end": 0.25, "lambda": 2.0,
                   "noise": "filter"},
         "samx": {"rho": 0.1, "sigma": {"schedule": "cosine", "start": 0.05, "end": 0.25},
                  "lambda": 2.0}},
        {"label": "rsam plain", "name": "rsam",
         "torch": {"rho": 0.1, "sigma": 0.01, "lambda": 1.5, "noise": "plain"},
         "samx": {"rho": 0.1, "sigma": 0.01, "lambda": 1.5, "noise": "plain"}},
        {"label": "rsam m=128", "name": "rsam",
         "torch": {"rho": 0.1, "sigma": 0.05, "lambda": 2.0, "noise": "filter", "m": 128},
         "samx": {"rho": 0.1, "sigma": 0.05, "lambda": 2.0, "m": 128}},
    ]


def yaml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, dict):
        return "{" + ", ".join("%s: %s" % (k, yaml_value(x)) for k, x in v.items()) + "}"
    return repr(v) if isinstance(v, float) else str(v)


def samx_config(method, work, train_csv, test_csv, init):
    base = method.get("base", "sgd")
    if method["name"] in ("sgd", "adamw"):
        opt = method["samx"]
    else:
        opt = {"name": method.get("samx_name", method["name"])}
        opt.update(method["samx"])
        opt["base"] = ({"name": "sgd", "lr": {"schedule": "cosine", "start": LR0, "end": 0},
                        "momentum": MOM, "weight_decay": method.get("base_wd", WD)}
                       if base == "sgd" else
                       {"name": "adamw", "lr": {"schedule": "cosine", "start": 0.01, "end": 0},
                        "weight_decay": 0.05})
    lines = [
        "name: torch-check",
        "seed: 0",
        "data: {name: csv, train: %s, test: %s, shuffle: false}" % (train_csv, test_csv),
        "model: {name: mlp, hidden: [%d, %d], activation: tanh, init_from: %s}" % (H, H, init),
        "train: " + yaml_value(dict({"epochs": STEPS, "batch_size": N},
                                    **method.get("train", {}))),
        "optimizer: " + yaml_value(opt),
    ]
    path = os.path.join(work, method["label"].replace(" ", "_").replace("/", "_") + ".yaml")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def rel_diff(a, b):
    worst = 0.0
    for name in b:
        d = (a[name] - b[name]).abs().max().item() / b[name].abs().max().item()
        worst = max(worst, d)
    return worst


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samx", default=os.path.join(here, "..", "..", "build", "cmd", "samx"))
    ap.add_argument("--only", default="", help="comma-separated labels to run")
    ap.add_argument("--keep", default="", help="work directory to keep (default: a temp dir)")
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    work = args.keep or tempfile.mkdtemp(prefix="samx-torch-check-")
    os.makedirs(work, exist_ok=True)
    x, y = make_data()
    train_csv, test_csv = os.path.join(work, "train.csv"), os.path.join(work, "test.csv")
    write_csv(train_csv, x[:N], y[:N])
    write_csv(test_csv, x[N:], y[N:])
    xt, yt = read_csv_back(train_csv)
    w0 = init_weights()
    init = os.path.join(work, "init.safetensors")
    save_safetensors(init, w0)
    only = set(s.strip() for s in args.only.split(",") if s.strip())
    print("%-20s %s" % ("method", "max rel weight diff after %d full-batch steps" % STEPS))
    worst = 0.0
    for m in methods():
        if only and m["label"] not in only:
            continue
        cfg = samx_config(m, work, train_csv, test_csv, init)
        out = os.path.join(work, "run-" + os.path.basename(cfg)[:-5])
        proc = subprocess.run([args.samx, "run", cfg, "-o", out, "-t", "1", "-q", "--force"],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            print("%-20s samx failed: %s" % (m["label"], proc.stderr.strip()))
            worst = math.inf
            continue
        ws = load_safetensors(os.path.join(out, "model.safetensors"))
        wt = run_torch(m, xt, yt, w0)
        d = rel_diff(ws, wt)
        worst = max(worst, d)
        print("%-20s %.3g" % (m["label"], d))
    if not args.keep:
        shutil.rmtree(work)
    print("largest: %.3g" % worst)
    return 0 if worst < 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
