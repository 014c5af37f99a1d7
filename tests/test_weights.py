"""Weights I/O: safetensors round trip, torchvision checkpoints in and out (checked against an independent
reference ResNet with torchvision's module names), clear mismatch errors, and refusal of malicious pickles."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import skiplab
from skiplab.weights import load_weights, read_weights, save_state_dict, save_weights


# ------------------------------------------------------------------ reference: torchvision's names and semantics
class RefBasic(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class RefBottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)  # "v1.5": stride on the 3x3
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU()
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


class RefResNet(nn.Module):
    """torchvision's ResNet; ``deep=True``: timm's ResNet-D instead (``resnet50d``: conv1 a Sequential of three
    3x3 convolutions 32-32-64 with BN + ReLU between, downsample = AvgPool2d(2, stride, ceil_mode=True,
    count_include_pad=False) or Identity, then a stride-1 1x1 conv and BN)."""

    def __init__(self, block: type, layers: list[int], num_classes: int = 1000, deep: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False) if not deep else nn.Sequential(
            nn.Conv2d(3, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Conv2d(32, 32, 3, 1, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Conv2d(32, 64, 3, 1, 1, bias=False))
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        inplanes = 64
        for i, (planes, n) in enumerate(zip([64, 128, 256, 512], layers)):
            stride = 1 if i == 0 else 2
            blocks = []
            for j in range(n):
                s = stride if j == 0 else 1
                down = None
                if (s != 1 or inplanes != planes * block.expansion) and deep:
                    pool = nn.AvgPool2d(2, s, ceil_mode=True, count_include_pad=False) if s > 1 else nn.Identity()
                    down = nn.Sequential(pool, nn.Conv2d(inplanes, planes * block.expansion, 1, bias=False),
                                         nn.BatchNorm2d(planes * block.expansion))
                elif s != 1 or inplanes != planes * block.expansion:
                    down = nn.Sequential(nn.Conv2d(inplanes, planes * block.expansion, 1, s, bias=False),
                                         nn.BatchNorm2d(planes * block.expansion))
                blocks.append(block(inplanes, planes, s, down))
                inplanes = planes * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(inplanes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


REFS = {"resnet18": (RefBasic, [2, 2, 2, 2]), "resnet50": (RefBottleneck, [3, 4, 6, 3])}


def random_reference(name: str, deep: bool = False) -> RefResNet:
    """A reference net with every parameter and BN statistic random, so any mis-mapped key shows."""
    block, layers = REFS[name]
    with torch.device("meta"):  # skip the default init: every tensor is filled below
        ref = RefResNet(block, layers, deep=deep)
    ref = ref.to_empty(device="cpu")
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for m in ref.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.normal_(0, (2 / (m.weight[0].numel())) ** 0.5, generator=g)
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.0, generator=g)
                m.bias.normal_(0, 0.1, generator=g)
                m.running_mean.normal_(0, 0.1, generator=g)
                m.running_var.uniform_(0.5, 1.5, generator=g)
                m.num_batches_tracked.zero_()
            elif isinstance(m, nn.Linear):
                m.weight.normal_(0, m.in_features ** -0.5, generator=g)
                m.bias.normal_(0, 0.1, generator=g)
    return ref.eval()


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_torchvision_checkpoint_loads_and_matches_reference(name: str, tmp_path: Path) -> None:
    ref = random_reference(name)
    path = tmp_path / f"{name}-torchvision.pth"
    torch.save(ref.state_dict(), path)
    ours = skiplab.create_model(name, weights=str(path)).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected, got = ref(x), ours(x)
    assert (expected - got).abs().max().item() <= 1e-4
    # ...and back: our export loads strictly into the reference.
    ref2 = RefResNet(*REFS[name]).eval()
    ref2.load_state_dict(ours.to_torchvision_state_dict(), strict=True)
    with torch.no_grad():
        assert (ref2(x) - expected).abs().max().item() <= 1e-4


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_timm_resnet_d_checkpoint_loads_and_matches_reference(name: str, tmp_path: Path) -> None:
    """timm's key names for its ResNet-D nets (conv1.0 ... conv1.6, bn1, downsample.1/.2 after the pooling)."""
    ref = random_reference(name, deep=True)
    assert {"conv1.6.weight", "bn1.running_var", "layer2.0.downsample.1.weight"} <= set(ref.state_dict())
    torch.save(ref.state_dict(), tmp_path / "timm.pth")
    ours = skiplab.create_model(f"{name}d", weights=str(tmp_path / "timm.pth")).eval()
    x = torch.randn(1, 3, 67, 67)  # odd sizes: the pooled shortcut must meet the strided branch (ceil mode)
    with torch.no_grad():
        assert (ref(x) - ours(x)).abs().max().item() <= 1e-4
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters())
    with pytest.raises(ValueError, match="stem='deep'"):
        ours.to_torchvision_state_dict()


def test_export_torchvision_file_and_refuse_non_torchvision_architectures(tmp_path: Path) -> None:
    model = skiplab.create_model("resnet18", num_classes=5)
    save_weights(model, tmp_path / "tv.pth", format="torchvision")
    sd = torch.load(tmp_path / "tv.pth", weights_only=True)
    assert "layer2.0.downsample.0.weight" in sd and "fc.weight" in sd and "stem.conv.weight" not in sd
    not_torchvision = [("plain_resnet18", {}), ("resnet18", {"shortcut": "C"}), ("resnet50", {"stride_in_1x1": True})]
    for name, kwargs in not_torchvision:
        with torch.device("meta"):
            bad = skiplab.create_model(name, **kwargs)
        with pytest.raises(ValueError, match="match torchvision's architecture"):
            bad.to_torchvision_state_dict()


# --------------------------------------------------------------------------------------------- own format
def test_safetensors_round_trip_keeps_weights_and_identity(tmp_path: Path) -> None:
    model = skiplab.create_model("resnet20", num_classes=7, width=0.5)
    model.train()
    model(torch.randn(4, 3, 16, 16))  # move BN running statistics away from their init
    path = save_weights(model, tmp_path / "r20.safetensors")
    state, meta = read_weights(path)
    assert meta["model_name"] == "resnet20" and json.loads(meta["model_kwargs"]) == {"num_classes": 7, "width": 0.5}
    fresh = skiplab.create_model("resnet20", num_classes=7, width=0.5, weights=str(path))
    for k, v in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k
    assert path.read_bytes()[8:9] == b"{"  # a safetensors header, not a pickle


def test_wrapped_checkpoints_and_prefixes_are_unwrapped(tmp_path: Path) -> None:
    model = skiplab.create_model("resnet20", width=0.25)
    wrapped = {"epoch": 3, "model_name": "resnet20",
               "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}
    torch.save(wrapped, tmp_path / "ckpt.pt")
    fresh = skiplab.create_model("resnet20", width=0.25, weights=str(tmp_path / "ckpt.pt"))
    assert torch.equal(fresh.head.fc.weight, model.head.fc.weight)


def test_wrong_model_checkpoint_names_keys_and_model(tmp_path: Path) -> None:
    path = save_weights(skiplab.create_model("resnet20", width=0.25), tmp_path / "r20.safetensors")
    with pytest.raises(ValueError) as err:
        skiplab.create_model("resnet32", width=0.25, weights=str(path))
    msg = str(err.value)
    assert "saved from model 'resnet20'" in msg and "not 'resnet32'" in msg
    # resnet32 has 2 more blocks per stage: 3 x 2 blocks x 12 keys (2 convs + 2 BNs x 5 entries)
    assert "72 missing keys" in msg and "stages.0.3.branch.conv1.weight" in msg
    assert "unexpected" not in msg


def test_wrong_shape_names_key_and_both_shapes(tmp_path: Path) -> None:
    path = save_weights(skiplab.create_model("resnet20", width=0.25), tmp_path / "r20.safetensors")
    model = skiplab.create_model("resnet20", width=0.25, num_classes=100)
    expected = r"2 shape mismatches: head\.fc\.weight: model \[100, 16\] vs file \[10, 16\]; head\.fc\.bias"
    with pytest.raises(ValueError, match=expected):
        load_weights(model, path)
    with pytest.raises(ValueError, match="shape mismatches"):  # shapes must agree even when not strict
        load_weights(model, path, strict=False)


def test_non_strict_load_reports_missing_and_unexpected(tmp_path: Path) -> None:
    model = skiplab.create_model("resnet20", width=0.25)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("head.")}
    state["extra.weight"] = torch.zeros(3)
    path = save_state_dict(state, tmp_path / "partial.safetensors")
    result = load_weights(skiplab.create_model("resnet20", width=0.25), path, strict=False)
    assert result.missing_keys == ["head.fc.weight", "head.fc.bias"] and result.unexpected_keys == ["extra.weight"]
    with pytest.raises(ValueError, match=r"2 missing keys .*head\.fc\.weight.*\n.*1 unexpected keys .*extra\.weight"):
        load_weights(skiplab.create_model("resnet20", width=0.25), path)


def test_same_keys_different_model_warns(tmp_path: Path) -> None:
    path = save_weights(skiplab.create_model("plain20", width=0.25), tmp_path / "p20.safetensors")
    with pytest.warns(UserWarning, match="saved from model 'plain20'; loading it into 'resnet20'"):
        skiplab.create_model("resnet20", width=0.25, weights=str(path))


# ------------------------------------------------------------------------------------------------- untrusted
class _Evil:
    """Unpickling this calls open(marker, "w"), i.e. runs code that creates a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path: Path, writer: str) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    payload = {"conv.weight": torch.zeros(1), "x": _Evil(marker)}
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    assert not marker.exists()
    with pytest.raises(ValueError, match="refusing to load"):
        load_weights(skiplab.create_model("resnet20", width=0.25), path)
    assert not marker.exists()


def test_unreadable_files_give_clear_errors(tmp_path: Path) -> None:
    model = skiplab.create_model("resnet20", width=0.25)
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        load_weights(model, tmp_path / "nope.safetensors")
    (tmp_path / "w.txt").write_text("hello")
    with pytest.raises(ValueError, match="not a safetensors or PyTorch weights file"):
        load_weights(model, tmp_path / "w.txt")
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}      ")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_weights(model, tmp_path / "bad.safetensors")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="expected a state dict"):
        load_weights(model, tmp_path / "list.pth")


def test_a_safetensors_file_whose_header_length_starts_like_a_pickle_is_read_as_safetensors(tmp_path) -> None:
    """A safetensors header length's first byte is arbitrary: 0x80 (pickle's magic) must not send it to torch.load.
    (Found in CI: a checkpoint's metadata length depends on the run folder's path.)"""
    import json
    import struct

    import torch
    from safetensors.torch import save_file

    from skiplab.weights import read_weights

    for pad in range(0, 300):  # find metadata whose header length ends in byte 0x80
        path = tmp_path / "w.safetensors"
        save_file({"a": torch.ones(2)}, str(path), metadata={"pad": "x" * pad})
        if path.read_bytes()[0] == 0x80:
            break
    else:
        raise AssertionError("no padding gave a header length whose first byte is 0x80")
    assert struct.unpack("<Q", path.read_bytes()[:8])[0] % 256 == 0x80 and json.loads(
        path.read_bytes()[8:8 + struct.unpack("<Q", path.read_bytes()[:8])[0]])["__metadata__"]["pad"]
    state, meta = read_weights(path)
    assert torch.equal(state["a"], torch.ones(2)) and meta["pad"] == "x" * pad
