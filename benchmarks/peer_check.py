"""Check skiplab's models against the real peers where they are installed: torchvision and timm.

For each pair, the peer's freshly initialised weights are saved as a PyTorch state dict, loaded into the skiplab
model through the public path (``create_model(name, weights=FILE)``, which remaps torchvision/timm key names),
and both models run the same random batch in eval mode (and one training-mode forward, so BatchNorm's batch
statistics are compared too).  Parameter counts are compared as well.  Nothing is downloaded: random weights
check the architecture and the key mapping as well as a pretrained checkpoint would (every weight is used).

    python benchmarks/peer_check.py                 # every pair whose peer library imports
    python benchmarks/peer_check.py --json out.json

Neither peer is installed on the project's CPU machines (torchvision is not available there); the GPU machine's
image has both, so ``benchmarks/gpu_suite.sh`` runs this script there.  Exit status 1 if any pair differs.
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
import tempfile
from pathlib import Path

import torch

from skiplab import create_model

# (peer library, constructor path in it, skiplab name, input size)
PAIRS = [
    ("torchvision", "torchvision.models.resnet18", "resnet18", 224),
    ("torchvision", "torchvision.models.resnet34", "resnet34", 224),
    ("torchvision", "torchvision.models.resnet50", "resnet50", 224),
    ("torchvision", "torchvision.models.resnet101", "resnet101", 224),
    ("torchvision", "torchvision.models.resnet152", "resnet152", 224),
    ("torchvision", "torchvision.models.wide_resnet50_2", "wide_resnet50_2", 224),
    ("torchvision", "torchvision.models.wide_resnet101_2", "wide_resnet101_2", 224),
    ("torchvision", "torchvision.models.resnext50_32x4d", "resnext50_32x4d", 224),
    ("torchvision", "torchvision.models.resnext101_32x8d", "resnext101_32x8d", 224),
    ("torchvision", "torchvision.models.resnext101_64x4d", "resnext101_64x4d", 224),
    ("torchvision", "torchvision.models.densenet121", "densenet121", 224),
    ("torchvision", "torchvision.models.densenet161", "densenet161", 224),
    ("torchvision", "torchvision.models.densenet169", "densenet169", 224),
    ("torchvision", "torchvision.models.densenet201", "densenet201", 224),
    ("torchvision", "torchvision.models.convnext_tiny", "convnext_tiny", 224),
    ("torchvision", "torchvision.models.mobilenet_v2", "mobilenet_v2", 224),
    ("torchvision", "torchvision.models.mobilenet_v3_large", "mobilenet_v3_large", 224),
    ("torchvision", "torchvision.models.mobilenet_v3_small", "mobilenet_v3_small", 224),
    ("torchvision", "torchvision.models.efficientnet_b0", "efficientnet_b0", 224),
    ("torchvision", "torchvision.models.efficientnet_v2_s", "efficientnet_v2_s", 224),
    ("torchvision", "torchvision.models.regnet_x_400mf", "regnet_x_400mf", 224),
    ("torchvision", "torchvision.models.mnasnet1_0", "mnasnet1_0", 224),
    ("torchvision", "torchvision.models.regnet_y_400mf", "regnet_y_400mf", 224),
    ("torchvision", "torchvision.models.regnet_y_1_6gf", "regnet_y_1_6gf", 224),
    ("torchvision", "torchvision.models.convnext_base", "convnext_base", 224),
    ("timm", "timm:resnet18", "resnet18", 224),
    ("timm", "timm:resnet50", "resnet50", 224),
    ("timm", "timm:resnext50_32x4d", "resnext50_32x4d", 224),
    ("timm", "timm:wide_resnet50_2", "wide_resnet50_2", 224),
    ("timm", "timm:densenet121", "densenet121", 224),
    ("timm", "timm:resnet18d", "resnet18d", 224),
    ("timm", "timm:resnet50d", "resnet50d", 224),
    ("timm", "timm:resnet101d", "resnet101d", 224),
    ("timm", "timm:convnext_tiny", "convnext_tiny", 224),
    ("timm", "timm:regnety_004", "regnet_y_400mf", 224),
    ("timm", "timm:mnasnet_100", "mnasnet1_0", 224),
    ("timm", "timm:seresnet50", "seresnet50", 224),
    ("timm", "timm:efficientnet_b0", "efficientnet_b0", 224),
    ("timm", "timm:tf_efficientnet_b0", "efficientnet_b0_keras", 224),
    ("timm", "timm:tf_mobilenetv3_large_100", "mobilenet_v3_large_keras", 224),
    ("timm", "timm:tf_efficientnetv2_s", "efficientnet_v2_s_keras", 224),
]


def build_peer(spec: str) -> torch.nn.Module:
    if spec.startswith("timm:"):
        import timm

        return timm.create_model(spec.split(":", 1)[1], pretrained=False)
    module, _, name = spec.rpartition(".")
    return getattr(importlib.import_module(module), name)(weights=None)


def compare(peer_spec: str, ours_name: str, size: int, batch: int, tol: float) -> dict:
    torch.manual_seed(0)
    peer = build_peer(peer_spec).eval()
    with torch.no_grad():  # non-trivial BN statistics, so eval mode tests them
        for m in peer.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "peer.pth"
        torch.save(peer.state_dict(), path)
        ours = create_model(ours_name, weights=str(path)).eval()
    x = torch.randn(batch, 3, size, size)
    with torch.no_grad():
        eval_diff = (peer(x) - ours(x)).abs().max().item()
        peer.train(), ours.train()
        for m in [*peer.modules(), *ours.modules()]:  # BN in training mode; random dropping off (the two
            if "drop" in type(m).__name__.lower() or type(m).__name__ == "StochasticDepth":  # nets draw differently)
                m.eval()
        train_diff = (peer(x) - ours(x)).abs().max().item()
    n_peer = sum(p.numel() for p in peer.parameters())
    n_ours = sum(p.numel() for p in ours.parameters())
    ok = eval_diff <= tol and train_diff <= tol and n_peer == n_ours
    return dict(peer=peer_spec, ours=ours_name, params_peer=n_peer, params_ours=n_ours, eval_max_abs_diff=eval_diff,
                train_max_abs_diff=train_diff, ok=ok)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--tol", type=float, default=1e-4)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    rows, missing = [], set()
    for lib, spec, ours, size in PAIRS:
        try:
            importlib.import_module(lib)
        except ImportError:
            missing.add(lib)
            continue
        try:
            rows.append(compare(spec, ours, size, args.batch, args.tol))
        except Exception as e:  # report every pair, then fail
            rows.append(dict(peer=spec, ours=ours, ok=False, error=f"{type(e).__name__}: {e}"))
        r = rows[-1]
        status = "ok  " if r["ok"] else "FAIL"
        detail = r.get("error") or (f"params {r['params_ours']:,} vs {r['params_peer']:,}; max |diff| eval "
                                    f"{r['eval_max_abs_diff']:.2e}, train {r['train_max_abs_diff']:.2e}")
        print(f"{status} {spec:<36} -> {ours:<12} {detail}", flush=True)
    for lib in sorted(missing):
        print(f"not installed here: {lib} (its pairs were not checked)")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "not_installed": sorted(missing)}, indent=1))
    if not rows:
        print("no peer library installed: nothing checked")
        return 0
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
