#!/usr/bin/python3
"""Checks a state dict written by `lic export --format compressai` against CompressAI.

    /usr/bin/python3 scripts/check_compressai_export.py EXPORTED.pt ARCH N M [--legacy] [--resave OUT.pt]

Loads EXPORTED.pt with torch.load, requires a plain dict {str: tensor}, and compares its
keys, shapes and dtypes exactly with the state_dict() of CompressAI's class for ARCH
(bmshj2018-factorized / bmshj2018-hyperprior / mbt2018-mean, or the lic names factorized /
hyperprior / mean-scale) at sizes N, M. The expected list is built here from the
architecture (CompressAI v1.2.4 layer layout, /work/shared/golden/README.md lists it for
N=32, M=48), so CompressAI itself is not needed. Entropy-bottleneck parameters are
expected as `matrices.{i}/biases.{i}/factors.{i}` (CompressAI >= 1.2.7), or with --legacy
as `_matrix{i}/_bias{i}/_factor{i}` (v1.2.4). The coding tables (_quantized_cdf, _offset,
_cdf_length, scale_table) have data-dependent lengths: only their first dimension and
dtype are checked. When EXPORTED.pt.json (lic's sidecar) exists it must agree.

--resave OUT.pt writes the loaded dict again with torch.save, so the C++ side can import
a file that Python wrote.

Exit status: 0 all good, 1 a mismatch (each one printed), 2 usage, 77 python3-torch is not
installed (a skip for test drivers).
"""
import argparse
import json
import os
import sys

try:
    import torch
except ImportError:
    print("SKIP: python3-torch not installed")
    sys.exit(77)

ARCHES = {
    "bmshj2018-factorized": "bmshj2018-factorized",
    "factorized": "bmshj2018-factorized",
    "bmshj2018-hyperprior": "bmshj2018-hyperprior",
    "hyperprior": "bmshj2018-hyperprior",
    "mbt2018-mean": "mbt2018-mean",
    "mean-scale": "mbt2018-mean",
}
LIC_NAMES = {"bmshj2018-factorized": "factorized", "bmshj2018-hyperprior": "hyperprior", "mbt2018-mean": "mean-scale"}

F32, I32 = torch.float32, torch.int32
TABLE = object()  # marker: first dimension only


def entropy_bottleneck(C, legacy, filters=(3, 3, 3, 3)):
    """EntropyBottleneck(C): the density network, quantiles, coding tables."""
    f = (1,) + tuple(filters) + (1,)
    names = ("_matrix{}", "_bias{}", "_factor{}") if legacy else ("matrices.{}", "biases.{}", "factors.{}")
    out = {}
    for i in range(len(filters) + 1):
        out["entropy_bottleneck." + names[0].format(i)] = ([C, f[i + 1], f[i]], F32)
        out["entropy_bottleneck." + names[1].format(i)] = ([C, f[i + 1], 1], F32)
        if i < len(filters):
            out["entropy_bottleneck." + names[2].format(i)] = ([C, f[i + 1], 1], F32)
    out["entropy_bottleneck.quantiles"] = ([C, 1, 3], F32)
    out["entropy_bottleneck._offset"] = ([C], I32, TABLE)
    out["entropy_bottleneck._quantized_cdf"] = ([C], I32, TABLE)
    out["entropy_bottleneck._cdf_length"] = ([C], I32, TABLE)
    out["entropy_bottleneck.target"] = ([3], F32)
    out["entropy_bottleneck.likelihood_lower_bound.bound"] = ([1], F32)
    return out


def gdn(prefix, C):
    return {
        prefix + ".beta": ([C], F32),
        prefix + ".gamma": ([C, C], F32),
        prefix + ".beta_reparam.pedestal": ([1], F32),
        prefix + ".beta_reparam.lower_bound.bound": ([1], F32),
        prefix + ".gamma_reparam.pedestal": ([1], F32),
        prefix + ".gamma_reparam.lower_bound.bound": ([1], F32),
    }


def conv(prefix, cin, cout, k):  # nn.Conv2d weight: [out, in, k, k]
    return {prefix + ".weight": ([cout, cin, k, k], F32), prefix + ".bias": ([cout], F32)}


def deconv(prefix, cin, cout, k=5):  # nn.ConvTranspose2d weight: [in, out, k, k]
    return {prefix + ".weight": ([cin, cout, k, k], F32), prefix + ".bias": ([cout], F32)}


def expected_keys(arch, N, M, legacy):
    """{key: (shape, dtype[, TABLE])} of CompressAI's state_dict() for arch at N, M."""
    out = {}
    out.update(entropy_bottleneck(M if arch == "bmshj2018-factorized" else N, legacy))
    # g_a: conv(3,N) GDN conv(N,N) GDN conv(N,N) GDN conv(N,M); g_s mirrors it with IGDN.
    out.update(conv("g_a.0", 3, N, 5))
    out.update(conv("g_a.2", N, N, 5))
    out.update(conv("g_a.4", N, N, 5))
    out.update(conv("g_a.6", N, M, 5))
    out.update(deconv("g_s.0", M, N))
    out.update(deconv("g_s.2", N, N))
    out.update(deconv("g_s.4", N, N))
    out.update(deconv("g_s.6", N, 3))
    for i in (1, 3, 5):
        out.update(gdn("g_a.%d" % i, N))
        out.update(gdn("g_s.%d" % i, N))
    if arch == "bmshj2018-factorized":
        return out
    out.update(conv("h_a.0", M, N, 3))
    out.update(conv("h_a.2", N, N, 5))
    out.update(conv("h_a.4", N, N, 5))
    if arch == "bmshj2018-hyperprior":
        out.update(deconv("h_s.0", N, N))
        out.update(deconv("h_s.2", N, N))
        out.update(conv("h_s.4", N, M, 3))
    else:  # mbt2018-mean: the hyper-synthesis predicts means and scales (2M channels)
        out.update(deconv("h_s.0", N, M))
        out.update(deconv("h_s.2", M, M * 3 // 2))
        out.update(conv("h_s.4", M * 3 // 2, M * 2, 3))
    # GaussianConditional: the table length L is the scale table's (CompressAI: 64).
    out["gaussian_conditional._offset"] = (["L"], I32, TABLE)
    out["gaussian_conditional._quantized_cdf"] = (["L"], I32, TABLE)
    out["gaussian_conditional._cdf_length"] = (["L"], I32, TABLE)
    out["gaussian_conditional.scale_table"] = (["L"], F32, TABLE)
    out["gaussian_conditional.scale_bound"] = ([1], F32)
    out["gaussian_conditional.likelihood_lower_bound.bound"] = ([1], F32)
    out["gaussian_conditional.lower_bound_scale.bound"] = ([1], F32)
    return out


def check(d, arch, N, M, legacy):
    """Returns the list of problems (empty: d matches)."""
    problems = []
    if not isinstance(d, dict):
        return ["not a dict but a %s" % type(d).__name__]
    for k, v in d.items():
        if not isinstance(k, str):
            problems.append("key %r is not a string" % (k,))
        elif not isinstance(v, torch.Tensor):
            problems.append("%s: not a tensor but a %s" % (k, type(v).__name__))
    if problems:
        return problems
    exp = expected_keys(arch, N, M, legacy)
    missing = [k for k in exp if k not in d]
    unexpected = [k for k in d if k not in exp]
    if missing:
        problems.append("missing %d key(s): %s" % (len(missing), " ".join(missing)))
    if unexpected:
        problems.append("unexpected %d key(s): %s" % (len(unexpected), " ".join(unexpected)))
    levels = d.get("gaussian_conditional.scale_table")
    L = levels.shape[0] if levels is not None and levels.dim() == 1 else None
    for k, spec in exp.items():
        if k not in d:
            continue
        t = d[k]
        shape, dtype, table = spec[0], spec[1], len(spec) > 2
        if t.dtype != dtype:
            problems.append("%s: dtype %s, expected %s" % (k, t.dtype, dtype))
        if table:
            want = L if shape[0] == "L" else shape[0]
            if t.dim() < 1 or want is None or t.shape[0] != want:
                problems.append("%s: shape %s, expected first dimension %s" % (k, list(t.shape), want))
            elif k.endswith("_quantized_cdf") and t.dim() != 2:
                problems.append("%s: shape %s, expected 2 dimensions" % (k, list(t.shape)))
            elif not k.endswith("_quantized_cdf") and t.dim() != 1:
                problems.append("%s: shape %s, expected 1 dimension" % (k, list(t.shape)))
        elif list(t.shape) != shape:
            problems.append("%s: shape %s, expected %s" % (k, list(t.shape), shape))
    if L is not None and L < 2:
        problems.append("gaussian_conditional.scale_table: %d levels" % L)
    return problems


def check_sidecar(path, arch, N, M, legacy):
    side = path + ".json"
    if not os.path.exists(side):
        return []
    with open(side) as f:
        j = json.load(f)
    want = {"architecture": arch, "lic_model": LIC_NAMES[arch], "N": N, "M": M,
            "key_names": "legacy" if legacy else "current"}
    return ["%s: %s is %r, expected %r" % (side, k, j.get(k), v) for k, v in want.items() if j.get(k) != v]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("exported", help="state dict written by lic export --format compressai")
    ap.add_argument("arch", help="bmshj2018-factorized, bmshj2018-hyperprior, mbt2018-mean (or lic names)")
    ap.add_argument("N", type=int)
    ap.add_argument("M", type=int)
    ap.add_argument("--legacy", action="store_true", help="expect v1.2.4 names (_matrix0, ...)")
    ap.add_argument("--resave", metavar="OUT.pt", help="write the loaded dict again with torch.save")
    a = ap.parse_args()
    if a.arch not in ARCHES:
        print("FAIL: unknown architecture %r (one of %s)" % (a.arch, ", ".join(sorted(ARCHES))))
        return 1
    arch = ARCHES[a.arch]
    try:
        d = torch.load(a.exported, map_location="cpu")
    except Exception as e:  # truncated, foreign, missing
        print("FAIL: %s: torch.load failed: %s" % (a.exported, e))
        return 1
    problems = check(d, arch, a.N, a.M, a.legacy) + check_sidecar(a.exported, arch, a.N, a.M, a.legacy)
    if problems:
        print("FAIL: %s is not a CompressAI %s state dict (N=%d, M=%d, %s names):"
              % (a.exported, arch, a.N, a.M, "legacy" if a.legacy else "current"))
        for p in problems:
            print("  " + p)
        return 1
    print("OK: %s: %d tensors match CompressAI %s (N=%d, M=%d, %s names)"
          % (a.exported, len(d), arch, a.N, a.M, "legacy" if a.legacy else "current"))
    if a.resave:
        torch.save(d, a.resave)
        back = torch.load(a.resave)
        assert back.keys() == d.keys() and all(torch.equal(back[k], d[k]) for k in d), "re-saved file differs"
        print("re-saved to %s" % a.resave)
    return 0


if __name__ == "__main__":
    sys.exit(main())
