#!/usr/bin/python3
"""Behdin & Mazumder (arXiv 2302.11836v1) study for samx: data, run list, closed forms, checks.

    bm.py setup WORK SAMX      write data sets, init weights and the list of samx runs (WORK/cmds)
    bm.py analyze WORK OUT     read the runs, compute the closed forms (algorithms.md 6.2), check
                               agreement (exit 3 on FAIL), write OUT/*.dat, results.md, *.csv

Conventions (README.md has the derivations):
  paper loss   f(b) = ||y - X b||^2 / (2n),  H = X^T X / n
  samx loss    L(b) = mean (y - X b)^2 = 2 f(b)
  GD           samx lr = eta/2
  USAM         samx lr = eta/2, rho = rho_paper/2      (normalize: false, e = rho grad L)
  NSAM         samx lr = eta/2, rho = rho_paper        (normalize: true, e = rho g/||g||)
Closed form, per eigen-direction of H (or of X X^T/n for fitted values):
  a_i = 1 - eta lam_i (1 + rho lam_i),  fitted values f_k = U diag(1 - a^k) U^T y  (b_0 = 0)
Only numpy; every random draw comes from numpy.random.default_rng(SEED + offset).
"""
import json
import os
import struct
import sys

import numpy as np

SEED = 20230223            # v1 submission date; any fixed seed
K_ITERS = 200              # iterations = samx epochs (full batch)
DRAWS = 60                 # noise draws, as 30 antithetic pairs (xi, -xi)
BASIS_SKIP = 1e-9          # basis directions with closed-form Var share below this are skipped
TOL = 1e-3                 # max relative deviation allowed for exact (float32) agreement

# Placeholders for the unknown v1 setup (algorithms.md 6.3 / 13.4); README explains each.
PROBLEMS = {
    "ls": dict(kind="ls", n=100, p=20, alpha=1.0, sigma=1.0, m_test=1000,
               eta_rel=0.5, rho_rel=2.0),
    "kernel": dict(kind="kernel", n=100, bandwidth=0.1, sigma=0.5,
                   eta_rel=0.5, rho_rel=2.0),
}
METHODS = ("gd", "usam", "nsam", "nsam_s")
SENS_RHO = (0.0, 0.5, 1.0, 2.0)   # rho * lam_max in the closed-form sensitivity table
NSAM_SMALL = 0.1           # nsam_s: normalized SAM with a 10x smaller radius


# ----------------------------------------------------------------------------- data
def f32(a):
    """Round to float32 (what samx reads) and back to float64 for the closed forms."""
    return np.asarray(a, dtype=np.float32).astype(np.float64)


def kernel_fstar(x):
    return np.sin(2 * np.pi * x) + 0.5 * np.cos(5 * np.pi * x)


def rbf(a, b, h):
    return np.exp(-(a[:, None] - b[None, :]) ** 2 / (2 * h * h))


def make_problem(name):
    """Design X (float32-exact), in-sample targets t, optional out-of-sample (Xt, tt), params."""
    P = dict(PROBLEMS[name])
    rng = np.random.default_rng(SEED + (1 if name == "ls" else 2))
    if P["kind"] == "ls":
        n, p = P["n"], P["p"]
        scale = np.arange(1, p + 1) ** (-P["alpha"] / 2)          # Sigma = diag(i^-alpha)
        X = f32(rng.standard_normal((n, p)) * scale)
        beta = rng.standard_normal(p)                              # beta* ~ N(0, I_p)
        Xt = f32(rng.standard_normal((P["m_test"], p)) * scale)   # fresh inputs, same law
        t, tt = f32(X @ beta), f32(Xt @ beta)
        P["beta_star"] = beta
    else:
        n, h = P["n"], P["bandwidth"]
        x = np.sort(rng.uniform(0, 1, n))
        X = f32(rbf(x, x, h))                                      # features = rows of K: f = K c
        t = f32(kernel_fstar(x))
        Xt = tt = None
        P["x"] = x
    H = X.T @ X / X.shape[0]
    lmax = np.linalg.eigvalsh(H).max()
    P["lam_max"] = lmax
    P["eta"] = P["eta_rel"] / lmax
    P["rho"] = P["rho_rel"] / lmax
    g0 = X.T @ t / X.shape[0]                                      # ||grad f(0)|| (noiseless)
    P["rho_n"] = P["rho"] * np.linalg.norm(g0)                    # NSAM radius matched at k=0
    return X, t, Xt, tt, P


def noise(name, n, sigma):
    rng = np.random.default_rng(SEED + 100 + (1 if name == "ls" else 2))
    half = f32(sigma * rng.standard_normal((DRAWS // 2, n)))
    return np.concatenate([half, -half])                          # antithetic pairs


def gram_eig(X):
    """eigh of X X^T / n: eigenvalues lam (>= 0) and orthonormal U (n x n)."""
    n = X.shape[0]
    lam, U = np.linalg.eigh(X @ X.T / n)
    return np.clip(lam, 0, None), U


def write_csv(path, X, y):
    np.savetxt(path, np.column_stack([X, y]).astype(np.float32), delimiter=",", fmt="%.9g")


def write_zero(path, p):
    hdr = json.dumps({"0.weight": {"dtype": "F32", "shape": [1, p],
                                   "data_offsets": [0, 4 * p]}}).encode()
    hdr += b" " * (-len(hdr) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(hdr)) + hdr + np.zeros(p, "<f4").tobytes())


def basis_dirs(lam, P):
    """Indices of U's columns used for the exact variance (skip negligible directions)."""
    a = 1 - P["eta"] * lam * (1 + P["rho"] * lam)
    share = (1 - a ** K_ITERS) ** 2
    keep = np.nonzero(share > BASIS_SKIP * share.sum())[0]
    return keep, float(share[np.setdiff1d(np.arange(lam.size), keep)].sum() / share.sum())


def setup(work, samx):
    here = os.path.dirname(os.path.abspath(__file__))
    cmds = []
    meta = {}
    for name in PROBLEMS:
        X, t, Xt, tt, P = make_problem(name)
        n, p = X.shape
        d = os.path.join(work, name)
        os.makedirs(d, exist_ok=True)
        write_zero(os.path.join(d, "zero.safetensors"), p)
        write_csv(os.path.join(d, "train_bias.csv"), X, t)
        write_csv(os.path.join(d, "test_in.csv"), X, t)
        write_csv(os.path.join(d, "test_zero.csv"), X, np.zeros(n))
        if Xt is not None:
            write_csv(os.path.join(d, "test_out.csv"), Xt, tt)
            write_csv(os.path.join(d, "test_zero_out.csv"), Xt, np.zeros(Xt.shape[0]))
        xi = noise(name, n, P["sigma"])
        for k in range(DRAWS):
            write_csv(os.path.join(d, f"train_d{k}.csv"), X, t + xi[k])
        lam, U = gram_eig(X)
        keep, skipped = basis_dirs(lam, P)
        for j in keep:
            write_csv(os.path.join(d, f"train_b{j}.csv"), X, P["sigma"] * U[:, j])
        meta[name] = {k: v for k, v in P.items() if isinstance(v, (int, float, str))}
        meta[name]["basis"] = [int(j) for j in keep]
        meta[name]["basis_skipped_share"] = skipped

        lr = P["eta"] / 2
        opt = {"gd": ("gd.yaml", [f"optimizer.lr={lr!r}"]),
               "usam": ("sam.yaml", [f"optimizer.base.lr={lr!r}", f"optimizer.rho={P['rho'] / 2!r}",
                                     "optimizer.normalize=false"]),
               "nsam": ("sam.yaml", [f"optimizer.base.lr={lr!r}", f"optimizer.rho={P['rho_n']!r}",
                                     "optimizer.normalize=true"]),
               "nsam_s": ("sam.yaml", [f"optimizer.base.lr={lr!r}",
                                       f"optimizer.rho={P['rho_n'] * NSAM_SMALL!r}",
                                       "optimizer.normalize=true"])}
        tests = ["in", "out"] if Xt is not None else ["in"]
        for m in METHODS:
            cfg, ov = opt[m]
            jobs = [("bias_" + s, "train_bias.csv", f"test_{s}.csv") for s in tests]
            # noise draws: every method in-sample; out of sample NSAM (no closed form) and GD
            # (the control variate for NSAM); GD/USAM expectations come from the basis runs
            mc_tests = tests if m in ("gd", "nsam", "nsam_s") else ["in"]
            jobs += [(f"d{k}_{s}", f"train_d{k}.csv", f"test_{s}.csv")
                     for s in mc_tests for k in range(DRAWS)]
            if not m.startswith("nsam"):
                jobs += [(f"b{j}", f"train_b{j}.csv", "test_zero.csv") for j in keep]
                if Xt is not None:
                    jobs += [(f"bo{j}", f"train_b{j}.csv", "test_zero_out.csv") for j in keep]
            for tag, tr, te in jobs:
                out = os.path.join(work, "runs", name, m, tag)
                cmds.append(" ".join([
                    samx, "run", os.path.join(here, "configs", cfg),
                    f"data.train={os.path.join(d, tr)}", f"data.test={os.path.join(d, te)}",
                    f"model.init_from={os.path.join(d, 'zero.safetensors')}",
                    f"train.epochs={K_ITERS}", f"train.batch_size={n}", *ov,
                    "-o", out, "-t", "1", "-q"]))
    with open(os.path.join(work, "cmds"), "w") as fh:
        fh.write("\n".join(cmds) + "\n")
    with open(os.path.join(work, "params.json"), "w") as fh:
        json.dump(meta, fh, indent=1)
    print(f"bm.py: {len(cmds)} samx runs planned in {work}/cmds")


# ----------------------------------------------------------------------------- closed forms
def contraction(lam, P, method):
    rho = P["rho"] if method == "usam" else 0.0
    return 1 - P["eta"] * lam * (1 + rho * lam)


def powers(a):
    return a[None, :] ** np.arange(K_ITERS + 1)[:, None]          # (K+1, n)


def fitted(U, ak, y):
    """f_k = U diag(1 - a^k) U^T y for every k: (K+1, n) (b_0 = 0)."""
    return ((1 - ak) * (U.T @ y)[None, :]) @ U.T


def coeffs(X, P, method, y):
    """b_k for every k (LS only, H well conditioned): (K+1, p)."""
    n = X.shape[0]
    lam, V = np.linalg.eigh(X.T @ X / n)
    ak = powers(contraction(lam, P, method))
    return ((1 - ak) / lam * (V.T @ (X.T @ y / n))[None, :]) @ V.T, lam, V


def nsam_sim(X, Y, P, scale=1.0):
    """Normalized SAM in float64 (algorithms.md 6.2), all draws at once; in-sample f_k."""
    n = X.shape[0]
    B = np.zeros((Y.shape[0], X.shape[1]))
    out = [B @ X.T]
    for _ in range(K_ITERS):
        g = (B @ X.T - Y) @ X / n
        e = scale * P["rho_n"] * g / (np.linalg.norm(g, axis=1, keepdims=True) + 1e-12)
        gs = ((B + e) @ X.T - Y) @ X / n
        B = B - P["eta"] * gs
        out.append(B @ X.T)
    return np.stack(out, 1)                                        # (D, K+1, n)


# ----------------------------------------------------------------------------- analysis
def load(work, name, method, tag, key="test_loss"):
    path = os.path.join(work, "runs", name, method, tag, "metrics.jsonl")
    with open(path) as fh:
        recs = [json.loads(line) for line in fh]
    v = np.array([r[key] if r.get(key) is not None else np.nan for r in recs])
    if v.size != K_ITERS + 1:
        raise SystemExit(f"bm.py: {path}: {v.size} records, expected {K_ITERS + 1}")
    return v


def pair_se(R):
    """Standard error of the mean over draws stored as antithetic pairs (rows d, d + D/2)."""
    h = R.shape[0] // 2
    pm = (R[:h] + R[h:]) / 2
    return pm.std(0, ddof=1) / np.sqrt(h)


def reldev(meas, ref):
    return float(np.nanmax(np.abs(meas - ref) / np.abs(ref)))


def analyze(work, outdir):
    os.makedirs(outdir, exist_ok=True)
    checks, table, sens, zoom, allcurves = [], [], [], [], {}
    failed = False

    def check(label, dev, tol=TOL, exact=True, note=""):
        nonlocal failed
        ok = dev <= tol
        if exact and not ok:
            failed = True
        st = ("ok" if ok else "FAIL") if exact else "informational"
        checks.append((label, dev, tol if exact else "-", st, note))
        print(f"  {label:<60s} {dev:10.2e}  {'(tol %g) ' % tol if exact else ''}{st} {note}")

    print("agreement of samx with the closed forms (max relative deviation over k = 0..K):")
    for name in PROBLEMS:
        X, t, Xt, tt, P = make_problem(name)
        n = X.shape[0]
        lam, U = gram_eig(X)
        xi = noise(name, n, P["sigma"])
        Y = t[None, :] + xi
        basis = json.load(open(os.path.join(work, "params.json")))[name]["basis"]
        curves, MC = {}, {}
        for m in METHODS:
            S = {}
            S["bias"] = load(work, name, m, "bias_in")
            R = MC[m, "in"] = np.stack([load(work, name, m, f"d{k}_in") for k in range(DRAWS)])
            TR = np.stack([load(work, name, m, f"d{k}_in", "train_loss") for k in range(DRAWS)])
            S["risk_mc"] = R.mean(0)
            if Xt is not None:
                S["bias_out"] = load(work, name, m, "bias_out")
                if m != "usam":
                    MC[m, "out"] = np.stack([load(work, name, m, f"d{k}_out")
                                             for k in range(DRAWS)])
            if not m.startswith("nsam"):
                # ---- exact cases: GD and USAM (algorithms.md 6.2)
                ak = powers(contraction(lam, P, m))
                C = {"bias": ((ak ** 2) * (U.T @ t) ** 2).sum(1) / n,
                     "var": P["sigma"] ** 2 / n * ((1 - ak) ** 2).sum(1)}
                C["risk"] = C["bias"] + C["var"]
                # per draw: in-sample risk and training loss (record k holds L(b_{k-1}))
                Fk = np.stack([fitted(U, ak, y) for y in Y])          # (D, K+1, n)
                Rd = ((Fk - t) ** 2).mean(2)
                TRd = ((Fk - Y[:, None, :]) ** 2).mean(2)
                TRd = np.concatenate([TRd[:, :1], TRd[:, :-1]], 1)
                varx = sum(load(work, name, m, f"b{j}") for j in basis)
                S["risk"] = S["bias"] + varx                          # samx, exact expectation
                S["risk_se"] = np.zeros(K_ITERS + 1)
                check(f"{name} {m}: bias, noiseless run", reldev(S["bias"], C["bias"]))
                check(f"{name} {m}: variance, sum of {len(basis)} basis runs",
                      reldev(varx[1:], C["var"][1:]))
                check(f"{name} {m}: E risk = bias + basis variance", reldev(S["risk"], C["risk"]))
                check(f"{name} {m}: risk of each of {DRAWS} draws", reldev(R, Rd))
                check(f"{name} {m}: train_loss of each draw (noisy y)", reldev(TR, TRd))
                check(f"{name} {m}: mean risk of the draws vs same-draw closed form",
                      reldev(S["risk_mc"], Rd.mean(0)))
                z = np.abs(S["risk_mc"] - C["risk"])[1:] / pair_se(R)[1:]
                check(f"{name} {m}: mean of the draws vs expectation (max z over k)",
                      float(z.max()), exact=False,
                      note="z = abs(mean - E)/s.e., not a relative deviation; 2-3 expected")
                if Xt is not None:
                    B, lamp, V = coeffs(X, P, m, t)
                    C["bias_out"] = ((B @ Xt.T - tt) ** 2).mean(1)
                    akp = powers(contraction(lamp, P, m))
                    St = Xt.T @ Xt / Xt.shape[0]
                    w = np.einsum("ij,jk,ki->i", V.T, St, V)
                    C["var_out"] = P["sigma"] ** 2 / n * ((1 - akp) ** 2 / lamp * w).sum(1)
                    C["risk_out"] = C["bias_out"] + C["var_out"]
                    S["risk_out"] = S["bias_out"] + sum(load(work, name, m, f"bo{j}")
                                                        for j in basis)
                    S["risk_out_se"] = np.zeros(K_ITERS + 1)
                    check(f"{name} {m}: out-of-sample bias, noiseless run",
                          reldev(S["bias_out"], C["bias_out"]))
                    check(f"{name} {m}: out-of-sample E risk, bias + {len(basis)} basis runs",
                          reldev(S["risk_out"], C["risk_out"]))
                curves[m + "_cf"] = C
            else:
                # ---- normalized SAM: no closed form. E risk by Monte Carlo with GD on the
                # same draws as control variate: E R = E R_gd (exact) + mean(R - R_gd).
                for s_ in (["in", "out"] if Xt is not None else ["in"]):
                    sfx = "" if s_ == "in" else "_out"
                    dlt = MC[m, s_] - MC["gd", s_]
                    S["risk" + sfx] = curves["gd"]["risk" + sfx] + dlt.mean(0)
                    S["risk" + sfx + "_se"] = pair_se(dlt)
                F = nsam_sim(X, Y, P, NSAM_SMALL if m == "nsam_s" else 1.0)
                Rs = ((F - t) ** 2).mean(2)
                dev = np.abs(R - Rs) / Rs
                kk = int(np.argmax(dev.max(0) > TOL)) if (dev.max(0) > TOL).any() else K_ITERS + 1
                check(f"{name} {m}: risk of each draw vs float64 simulation",
                      float(dev.max()), exact=False,
                      note=f"first > {TOL:g} at k={kk}; mean over draws at k={K_ITERS}: "
                           f"{abs(S['risk_mc'][-1] / Rs.mean(0)[-1] - 1):.1e}")
                Fm = F.mean(0)
                S["sim_bias"] = ((Fm - t) ** 2).mean(1)       # bias of the mean predictor
                S["sim_var"] = ((F - Fm) ** 2).mean((0, 2))  # variance around it (float64 sim)
            S["var"] = S["risk"] - S["bias"]
            curves[m] = S
            kmin = int(np.argmin(S["risk"]))
            kg = int(np.argmin(curves["gd"]["risk"]))
            row = dict(problem=name, method=m, k_best=kmin, risk_best=S["risk"][kmin],
                       se_best=S["risk_se"][kmin], bias_best=S["bias"][kmin],
                       var_best=S["var"][kmin], risk_K=S["risk"][-1],
                       diff_gd=S["risk"][kmin] - curves["gd"]["risk"][kg],
                       diff_gd_se=S["risk_se"][kmin],
                       k_best_mc=int(np.argmin(S["risk_mc"])), risk_best_mc=S["risk_mc"].min())
            if Xt is not None:
                ko = int(np.argmin(S["risk_out"]))
                row.update(k_best_out=ko, risk_best_out=S["risk_out"][ko],
                           se_best_out=S["risk_out_se"][ko], risk_K_out=S["risk_out"][-1])
            if "sim_bias" in S:
                row.update(sim_bias=S["sim_bias"][kmin], sim_var=S["sim_var"][kmin])
            table.append(row)
        write_dat(outdir, name, curves, Xt is not None)
        allcurves[name] = curves
        for q in (["risk", "risk_out"] if Xt is not None else ["risk"]):
            lo = min(curves[m][q].min() for m in METHODS)
            zoom.append((0.97 * lo, 1.3 * lo))
        if name == "ls":
            sens = sensitivity()
    write_results(outdir, checks, table, sens, allcurves)
    with open(os.path.join(outdir, "zoom.gp"), "w") as fh:   # y ranges of the zoom panels
        fh.write("array zlo[%d] = [%s]\n" % (len(zoom), ", ".join("%.5g" % z[0] for z in zoom)))
        fh.write("array zhi[%d] = [%s]\n" % (len(zoom), ", ".join("%.5g" % z[1] for z in zoom)))
    return 3 if failed else 0


def write_dat(outdir, name, c, has_out):
    """One row per iteration k, a header row of column names (gnuplot: columnheaders).
    samx: <m>_bias (noiseless run), <m>_risk (E risk: GD/USAM bias run + basis runs, exact;
    NSAM: Monte Carlo with GD as control variate), <m>_se (its standard error);
    closed forms: <m>_cf_bias, <m>_cf_var; suffix _out: out of sample."""
    cols = {"k": np.arange(K_ITERS + 1)}
    for m in METHODS:
        S = c[m]
        for o in ["", "_out"] if has_out else [""]:
            cols[f"{m}_bias{o}"] = S["bias" + o]
            cols[f"{m}_risk{o}"] = S["risk" + o]
            if m.startswith("nsam"):
                cols[f"{m}_se{o}"] = S["risk" + o + "_se"]
            if m + "_cf" in c:
                cols[f"{m}_cf_bias{o}"] = c[m + "_cf"]["bias" + o]
                cols[f"{m}_cf_var{o}"] = c[m + "_cf"]["var" + o]
    with open(os.path.join(outdir, f"{name}.dat"), "w") as fh:
        fh.write(" ".join(cols) + "\n")
        np.savetxt(fh, np.column_stack(list(cols.values())), fmt="%.5g")


def sensitivity():
    """Closed form only: early-stopped E risk of USAM / GD over spectra, signals, sigma, rho."""
    rows = []
    n, p = 100, 20
    for alpha in (1.0, 2.0):
        for bdec in (0.0, 1.0):
            for sigma in (0.1, 0.5, 1.0):
                rng = np.random.default_rng(SEED + 7)
                X = rng.standard_normal((n, p)) * np.arange(1, p + 1) ** (-alpha / 2)
                t = X @ (rng.standard_normal(p) * np.arange(1, p + 1) ** (-bdec))
                lam, U = gram_eig(X)
                lmax = lam.max()
                res = []
                for rho_rel in SENS_RHO:
                    P = dict(eta=0.5 / lmax, rho=rho_rel / lmax)
                    kk = np.arange(20 * K_ITERS + 1)[:, None]            # long horizon
                    ak = (1 - P["eta"] * lam * (1 + P["rho"] * lam))[None, :] ** kk
                    R = ((ak ** 2) * (U.T @ t) ** 2).sum(1) / n + sigma ** 2 / n * ((1 - ak) ** 2).sum(1)
                    res.append((R.min(), int(R.argmin())))
                rows.append(dict(alpha=alpha, b=bdec, sigma=sigma, res=res))
    return rows


NAMES = {"gd": "GD", "usam": "SAM un-normalized (USAM)", "nsam": "SAM normalized (NSAM)",
         "nsam_s": "SAM normalized, rho/10"}
FIXED_K = (10, 25, 50, 100, 200)


def write_results(outdir, checks, table, sens, allcurves):
    keys = ["problem", "method", "k_best", "risk_best", "se_best", "bias_best", "var_best",
            "diff_gd", "diff_gd_se", "risk_K", "k_best_out", "risk_best_out", "se_best_out",
            "risk_K_out", "k_best_mc", "risk_best_mc", "sim_bias", "sim_var"]
    with open(os.path.join(outdir, "early_stopping.csv"), "w") as fh:
        fh.write(",".join(keys) + "\n")
        for r in table:
            fh.write(",".join(("%.6g" % r[k]) if isinstance(r.get(k), float) else str(r.get(k, ""))
                              for k in keys) + "\n")
    L = ["# behdin-mazumder: results", "",
         "Generated by `run.sh` (do not edit). Risk = in-sample excess risk ||X(b_k - b*)||^2/n "
         "in paper units (out of sample: mean over %d fresh inputs of (x.(b_k - b*))^2), "
         "expected over the label noise. GD and USAM: samx, exact (noiseless run + basis runs; "
         "equal to the closed form, see the checks). NSAM: samx, %d noise draws (%d antithetic "
         "pairs) with GD on the same draws as control variate; ± is its standard error."
         % (PROBLEMS["ls"]["m_test"], DRAWS, DRAWS // 2), ""]
    L += ["## Early stopping", "",
          "Each method at its own best iteration k. \"minus GD\": E risk at the method's best k "
          "minus GD's at GD's best k. Bias: the noiseless run; variance: E risk - bias.", "",
          "| problem | method | best k | E risk ± s.e. | bias | variance | minus GD "
          "| E risk at k=%d | out of sample: best k, E risk | mean of the %d draws: best k, risk |"
          % (K_ITERS, DRAWS),
          "|---|---|---|---|---|---|---|---|---|---|"]
    for r in table:
        se = f" ± {r['se_best']:.2g}" if r["se_best"] > 0 else ""
        if "k_best_out" in r:
            so = f" ± {r['se_best_out']:.2g}" if r["se_best_out"] > 0 else ""
            oo = f"{r['k_best_out']}, {r['risk_best_out']:.4f}{so}"
        else:
            oo = "-"
        dg = "-" if r["method"] == "gd" else (f"{r['diff_gd']:+.5f}" + (
            f" ± {r['diff_gd_se']:.2g}" if r["diff_gd_se"] > 0 else ""))
        L.append(f"| {r['problem']} | {NAMES[r['method']]} | {r['k_best']} | {r['risk_best']:.4f}"
                 f"{se} | {r['bias_best']:.4f} | {r['var_best']:.4f} | {dg} | {r['risk_K']:.4f} | "
                 f"{oo} | {r['k_best_mc']}, {r['risk_best_mc']:.4f} |")
    L += ["", "Normalized SAM is not linear in the noise, so \"bias = noiseless run\" is not the "
          "bias of the mean predictor. The textbook split from the float64 simulation of the same "
          "draws (bias of the mean predictor / variance around it), at the best k above:", ""]
    for r in table:
        if "sim_bias" in r:
            L.append(f"* {r['problem']}, {NAMES[r['method']]}: {r['sim_bias']:.4f} / "
                     f"{r['sim_var']:.4f}")
    L += ["", "## Bias and variance at fixed iterations", "",
          "GD and USAM: closed form (equal to samx, see the checks); NSAM: samx (noiseless run; "
          "E risk - bias, control-variate estimate).", "",
          "| problem | k | " + " | ".join(f"{NAMES[m]} bias / var" for m in METHODS) + " |",
          "|---|---|" + "---|" * len(METHODS)]
    for name, c in allcurves.items():
        for k in FIXED_K:
            cells = []
            for m in METHODS:
                src = c[m + "_cf"] if m + "_cf" in c else c[m]
                cells.append(f"{src['bias'][k]:.4f} / {src['var'][k]:.4f}")
            L.append(f"| {name} | {k} | " + " | ".join(cells) + " |")
    L += ["", "## Agreement of samx with the closed forms", "",
          "Max relative deviation abs(samx - closed form) / closed form over k = 0..%d (and over "
          "draws where per draw). FAIL makes run.sh exit 3." % K_ITERS, "",
          "| check | max rel. deviation | tol | status | note |", "|---|---|---|---|---|"]
    for lab, dev, tol, st, note in checks:
        L.append(f"| {lab} | {dev:.2e} | {tol} | {st} | {note} |")
    L += ["", "## Closed-form sensitivity of the early-stopping comparison (GD vs USAM)", "",
          "Least squares, n=100, p=20, eta = 0.5/lam_max, spectrum lam_i ~ i^-alpha, "
          "b*_i ~ N(0, i^-2b), horizon %d iterations; cells: min_k E risk (argmin k) for "
          "rho * lam_max = %s (0 = GD)." % (20 * K_ITERS, ", ".join("%g" % r for r in SENS_RHO)), "",
          "| alpha | b | sigma | " + " | ".join(f"rho={r:g}" for r in SENS_RHO) +
          " | best SAM / GD |", "|---|---|---|" + "---|" * (len(SENS_RHO) + 1)]
    for s_ in sens:
        cells = [f"{R:.4g} ({k})" for R, k in s_["res"]]
        ratio = min(R for R, _ in s_["res"][1:]) / s_["res"][0][0]
        L.append(f"| {s_['alpha']:g} | {s_['b']:g} | {s_['sigma']:g} | " + " | ".join(cells) +
                 f" | {ratio:.4f} |")
    with open(os.path.join(outdir, "results.md"), "w") as fh:
        fh.write("\n".join(L) + "\n")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "setup":
        setup(os.path.abspath(sys.argv[2]), sys.argv[3])
    elif len(sys.argv) == 4 and sys.argv[1] == "analyze":
        sys.exit(analyze(os.path.abspath(sys.argv[2]), sys.argv[3]))
    else:
        sys.exit(__doc__)
