#!/usr/bin/python3
"""Copies the parts of ../shared/golden that the tests read into tests/golden/.

The tests must pass on a clone without ../shared, so the golden tensors travel with the
project, trimmed: the input as uint8 (x = u8 / 255 exactly as ToTensor computes it), the
outputs the tests compare, the state dicts (they hold the CDF tables cdf.pt repeats) and
the train-step gradients. Run: /usr/bin/python3 scripts/trim_golden.py [SHARED_GOLDEN]
"""
import os
import sys

import torch

src = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "..", "shared", "golden")
dst = os.path.join(os.path.dirname(__file__), "..", "tests", "golden")
NAMES = ["bmshj2018-factorized", "bmshj2018-hyperprior", "mbt2018-mean"]
OUT_KEYS = ["x_hat", "likelihoods_y", "likelihoods_z", "y", "z", "z_symbols", "z_hat", "scales_hat", "means_hat",
            "indexes_y", "y_symbols", "y_hat", "y_string", "z_string"]

os.makedirs(dst, exist_ok=True)
x = torch.load(os.path.join(src, NAMES[0], "input.pt"))["x"]
u8 = torch.round(x * 255).to(torch.uint8)
assert torch.equal(u8.float().div(255), x), "input is not u8/255"
# two entries: LibTorch's unpickler lacks SETITEM, which Python uses for 1-item dicts
torch.save({"x_u8": u8, "shape": torch.tensor(u8.shape)}, os.path.join(dst, "input.pt"))
for n in NAMES:
    d = os.path.join(dst, n)
    os.makedirs(d, exist_ok=True)
    assert torch.equal(torch.load(os.path.join(src, n, "input.pt"))["x"], x)
    o = torch.load(os.path.join(src, n, "outputs.pt"))
    assert torch.equal(o["x_hat"].clamp(0, 1), o["x_hat_decompress"]), n
    torch.save({k: o[k] for k in OUT_KEYS if k in o}, os.path.join(d, "outputs.pt"))
    torch.save(torch.load(os.path.join(src, n, "state_dict.pt")), os.path.join(d, "state_dict.pt"))
    ts = torch.load(os.path.join(src, n, "train_step.pt"))
    torch.save({k: v for k, v in ts.items() if not k.startswith("likelihoods") and k != "x_hat"},
               os.path.join(d, "train_step.pt"))
    print(n, "ok")
