#!/usr/bin/python3
"""Writes the torch.save fixtures of tests/test_pickle.cpp (what Python users really save).

    /usr/bin/python3 scripts/make_pickle_fixtures.py [OUT_DIR]      # default tests/data/pickle
    /usr/bin/python3 scripts/make_pickle_fixtures.py --wrap IN.pt OUT.pt

state_dict.pt   torch.save(net.state_dict()) of a tiny Conv2d + BatchNorm2d net: a
                collections.OrderedDict with its _metadata attribute, plus extra entries
                for every storage type, a non-contiguous tensor and a view sharing its
                base's storage.
checkpoint.pt   a CompressAI-style training checkpoint: {"epoch", "state_dict" (an
                OrderedDict), "loss" (a 0-d tensor), "optimizer" / "aux_optimizer" (Adam
                state: int keys, lists), "lr_scheduler" (ReduceLROnPlateau: floats, inf,
                strings, bools), "args" (argparse.Namespace), "tags" (a set)}.

Every value is a simple formula of its index, so the C++ test checks them exactly without a
second file. --wrap turns a plain dict {str: tensor} into such a checkpoint (the end-to-end
`lic import` test uses it).

Exit status: 0 written, 2 usage, 77 python3-torch is not installed (a skip for test drivers).
"""
import argparse
import collections
import os
import sys

try:
    import torch
    from torch import nn
except ImportError:
    print("SKIP: python3-torch not installed")
    sys.exit(77)


def ramp(shape, dtype=torch.float32, scale=0.125, shift=0.0):
    """(arange(n) - n/2) * scale + shift, reshaped: exact in float32."""
    n = 1
    for s in shape:
        n *= s
    return ((torch.arange(n, dtype=torch.float64) - n // 2) * scale + shift).to(dtype).reshape(shape)


def tiny_net():
    net = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3))
    with torch.no_grad():
        net[0].weight.copy_(ramp([3, 2, 3, 3]))
        net[0].bias.copy_(torch.tensor([0.5, -1.5, 2.25]))
        net[1].weight.copy_(torch.tensor([1.0, 2.0, 3.0]))
        net[1].bias.copy_(torch.tensor([-0.25, 0.0, 0.25]))
        net[1].running_mean.copy_(torch.tensor([1.0, 2.0, 3.0]))
        net[1].running_var.copy_(torch.tensor([0.25, 0.5, 4.0]))
        net[1].num_batches_tracked.fill_(7)
    return net


def state_dict_fixture():
    sd = tiny_net().state_dict()  # an OrderedDict with a _metadata attribute
    assert isinstance(sd, collections.OrderedDict) and hasattr(sd, "_metadata")
    base = torch.arange(10, dtype=torch.float64)
    sd["extra.transposed"] = ramp([3, 4]).t()  # strides (1, 4): not contiguous
    sd["extra.base"] = base
    sd["extra.view"] = base[2:8:2]  # shares base's storage: offset 2, stride 2
    sd["extra.long"] = torch.tensor([-(2**40), -1, 0, 2**62], dtype=torch.int64)
    sd["extra.int"] = torch.tensor([-(2**31), 7], dtype=torch.int32)
    sd["extra.short"] = torch.tensor([-300, 300], dtype=torch.int16)
    sd["extra.char"] = torch.tensor([-128, 127], dtype=torch.int8)
    sd["extra.byte"] = torch.tensor([0, 255], dtype=torch.uint8)
    sd["extra.bool"] = torch.tensor([True, False, True])
    sd["extra.half"] = torch.tensor([0.5, -2.0, 65504.0, 2.0**-24], dtype=torch.float16)
    sd["extra.bfloat16"] = torch.tensor([1.5, -3.0e38], dtype=torch.bfloat16)
    return sd


def checkpoint(state_dict, epoch=3):
    """CompressAI's examples/train.py save_checkpoint payload around `state_dict`."""
    params = [nn.Parameter(t.detach().clone().float()) for t in state_dict.values() if t.is_floating_point()]
    opt = torch.optim.Adam(params[:-1] or params, lr=1e-4)
    aux = torch.optim.Adam(params[-1:], lr=1e-3)
    for o in (opt, aux):  # one step, so the state holds exp_avg / exp_avg_sq / step
        for group in o.param_groups:
            for p in group["params"]:
                p.grad = torch.ones_like(p)
        o.step()
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, "min")
    sched.step(0.75)
    od = collections.OrderedDict(state_dict)
    od._metadata = getattr(state_dict, "_metadata", collections.OrderedDict({"": {"version": 1}}))
    return {
        "epoch": epoch,
        "state_dict": od,
        "loss": torch.tensor(0.75),
        "optimizer": opt.state_dict(),
        "aux_optimizer": aux.state_dict(),
        "lr_scheduler": sched.state_dict(),
        "args": argparse.Namespace(lmbda=0.013, model="bmshj2018-factorized", cuda=False),
        "tags": {"fixture"},
    }


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "--wrap":
        torch.save(checkpoint(torch.load(sys.argv[2])), sys.argv[3])
        return 0
    if len(sys.argv) > 2 or (len(sys.argv) == 2 and sys.argv[1].startswith("-")):
        print(__doc__)
        return 2
    out = sys.argv[1] if len(sys.argv) == 2 else os.path.join(os.path.dirname(__file__), "..", "tests", "data", "pickle")
    os.makedirs(out, exist_ok=True)
    torch.save(state_dict_fixture(), os.path.join(out, "state_dict.pt"))
    torch.save(checkpoint(tiny_net().state_dict()), os.path.join(out, "checkpoint.pt"))
    for name in ("state_dict.pt", "checkpoint.pt"):
        print(name, os.path.getsize(os.path.join(out, name)), "bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
