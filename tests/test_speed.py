"""skiplab.speed (training speed options) and the `skiplab bench` commands: the options change speed, not the
math, and the bench tables come out."""
from __future__ import annotations

import copy
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from skiplab import create_model
from skiplab.cli import main
from skiplab.cli.bench import measure_inference
from skiplab.export import onnxruntime_available
from skiplab.speed import default_speed_options, fused_supported, malloc_policy, matmul_peak_gflops, \
    optimizer_kwargs, prepare_for_training, set_malloc_policy, to_channels_last, tune_malloc


def _steps(model: nn.Module, fwd: nn.Module, opt_kwargs: dict, x: torch.Tensor, y: torch.Tensor) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4, **opt_kwargs)
    for _ in range(2):
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(fwd(x), y).backward()
        opt.step()


def test_speed_options_keep_the_training_math() -> None:
    torch.manual_seed(0)
    plain = create_model("resnet20", width=0.25)
    fast = copy.deepcopy(plain)
    x, y = torch.randn(4, 3, 16, 16), torch.randint(0, 10, (4,))
    _steps(plain, plain, {}, x, y)
    fwd = prepare_for_training(fast, channels_last=True)
    assert fwd is fast and fast.stem.conv.weight.is_contiguous(memory_format=torch.channels_last)
    _steps(fast, fwd, optimizer_kwargs(torch.optim.SGD, "cpu"), to_channels_last(x), y)
    for (n, p), q in zip(plain.named_parameters(), fast.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-5, msg=n)
    for k, v in plain.state_dict().items():
        if k.endswith(("running_mean", "running_var")):
            torch.testing.assert_close(fast.state_dict()[k], v, rtol=1e-4, atol=1e-5)


def test_prepare_for_training_compile_wraps_and_shares_parameters() -> None:
    model = create_model("resnet20", width=0.25)
    fwd = prepare_for_training(model, channels_last=False, compile=True)  # lazy: nothing compiles until called
    assert fwd is not model and {id(p) for p in fwd.parameters()} == {id(p) for p in model.parameters()}
    with pytest.raises(TypeError, match="nn.Module"):
        prepare_for_training("resnet20")  # type: ignore[arg-type]


def test_optimizer_kwargs_and_defaults() -> None:
    assert fused_supported(torch.optim.SGD, "cpu") == ("fused" in optimizer_kwargs(torch.optim.SGD, "cpu"))
    assert optimizer_kwargs(torch.optim.SGD, "cpu", fused=False) == {}
    cpu, gpu = default_speed_options("cpu"), default_speed_options("cuda")
    assert cpu.channels_last and cpu.tune_malloc and not cpu.fused_optimizer and not cpu.compile
    assert gpu.fused_optimizer and not gpu.tune_malloc
    if not torch.cuda.is_available():  # the GPU path's CPU-side logic: no CUDA, no fused kernels, no crash
        assert optimizer_kwargs(torch.optim.SGD, "cuda") == {}
    assert to_channels_last(torch.randn(2, 3)).shape == (2, 3)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_malloc_policies_apply() -> None:
    assert set_malloc_policy("memory") is True and malloc_policy() == "memory"
    assert tune_malloc() is True and malloc_policy() == "speed"
    with pytest.raises(ValueError, match="'speed', 'memory'"):
        set_malloc_policy("fast")


def test_matmul_peak_is_a_rate_and_leaves_the_thread_setting_alone() -> None:
    before = torch.get_num_threads()
    rate = matmul_peak_gflops(1, n=128, reps=2, clock="cpu")
    assert 0.1 < rate < 1e5 and torch.get_num_threads() == before
    with pytest.raises(ValueError, match="clock must be 'wall' or 'cpu'; got 'gpu'"):
        matmul_peak_gflops(clock="gpu")


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """The command's output with the table's line wrapping undone (words separated by single spaces)."""
    main(list(args))
    return " ".join(capsys.readouterr().out.split())


def test_bench_infer_prints_the_variants(capsys: pytest.CaptureFixture[str]) -> None:
    out = _cli(capsys, "bench", "infer", "--model", "resnet20", "--batch", "2", "--input-size", "3,16,16",
               "--rounds", "1", "--no-compile", "--clock", "cpu")
    for variant in ("eager", "folded", "folded+CL") + (("onnxruntime",) if onnxruntime_available() else ()):
        assert variant in out
    assert "img/s" in out and "diff" in out
    rows = measure_inference("resnet20", batch=2, input_size=(3, 16, 16), compile=False, rounds=1)
    assert all(r.max_abs_diff < 1e-4 and r.latency_ms > 0 and r.throughput > 0 for r in rows)


def test_bench_infer_bf16_variant(capsys: pytest.CaptureFixture[str]) -> None:
    """The bf16 row (forced on: the suite runs with SKIPLAB_CPU_BF16=0) stays close to eager float32."""
    rows = measure_inference("resnet20", batch=4, input_size=(3, 16, 16), compile=False, onnx=False, rounds=1,
                             bf16=True)
    bf16 = {r.variant: r for r in rows}["folded+CL+bf16"]
    assert 0 < bf16.max_abs_diff < 0.1 and 0 <= bf16.top1_agree <= 1 and bf16.throughput > 0
    out = _cli(capsys, "bench", "infer", "--model", "resnet20", "--batch", "2", "--input-size", "3,16,16",
               "--rounds", "1", "--no-compile", "--no-onnx", "--clock", "cpu")
    assert "folded+CL+bf16" not in out and "no bf16 row" in out and "SKIPLAB_CPU_BF16=0" in out


def test_matmul_peak_bf16() -> None:
    assert matmul_peak_gflops(1, n=128, reps=2, clock="cpu", dtype=torch.bfloat16) > 0
    with pytest.raises(ValueError, match="dtype must be"):
        matmul_peak_gflops(1, n=8, dtype=torch.int32)


def test_bench_step_prints_the_variants(capsys: pytest.CaptureFixture[str]) -> None:
    out = _cli(capsys, "bench", "step", "--model", "resnet20", "--batch", "2", "--input-size", "3,16,16",
               "--rounds", "1", "--no-malloc")
    assert "eager" in out and "CL+fused" in out and "allocator tuning off" in out


def test_bench_rejects_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["bench", "infer", "--model", "resnet20", "--rounds", "0"])
    assert e.value.code == 2 and "--rounds" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["bench", "infer", "--model", "no_such_model", "--no-compile"])
    assert e.value.code == 2


@pytest.mark.parametrize("cls", [torch.optim.SGD, torch.optim.AdamW])
def test_fused_step_after_loading_contiguous_state_matches_uninterrupted(cls) -> None:
    """A checkpoint stores optimizer state contiguous; a channels_last weight's fused step must still pair
    each element with its own momentum (match_state_layout), or resume is silently wrong."""
    from skiplab.train.optim import match_state_layout

    if not fused_supported(cls, "cpu"):
        pytest.fail(f"this torch build has no fused CPU {cls.__name__}; the test needs one")
    g = torch.Generator().manual_seed(0)
    w0 = torch.randn(4, 3, 3, 3, generator=g).contiguous(memory_format=torch.channels_last)
    grads = [torch.randn(4, 3, 3, 3, generator=g).contiguous(memory_format=torch.channels_last) for _ in range(4)]
    kw = dict(lr=0.1, momentum=0.9) if cls is torch.optim.SGD else dict(lr=0.01)

    def steps(p, opt, gs):
        for grad in gs:
            p.grad = grad.clone()
            opt.step()

    ref = nn.Parameter(w0.clone())
    opt = cls([ref], fused=True, **kw)
    steps(ref, opt, grads)

    p = nn.Parameter(w0.clone())
    opt = cls([p], fused=True, **kw)
    steps(p, opt, grads[:2])
    saved = {k: (v.contiguous() if isinstance(v, torch.Tensor) else v) for k, v in opt.state[p].items()}
    sd = opt.state_dict()
    sd["state"][0] = saved  # what a safetensors round trip gives back
    p2 = nn.Parameter(p.detach().clone())
    opt2 = cls([p2], fused=True, **kw)
    opt2.load_state_dict(sd)
    match_state_layout(opt2)
    steps(p2, opt2, grads[2:])
    assert torch.equal(p2.detach(), ref.detach())


def test_channels_last_hazard_names_the_crashing_layer_and_training_avoids_it() -> None:
    """Narrow nets' 1x1 stride-2 shortcuts with <8 input channels crash torch 2.13's channels_last CPU backward;
    the guard finds them (and only them) and prepare_for_training keeps such a net in NCHW."""
    from skiplab.speed import channels_last_hazard, prepare_for_training

    narrow = create_model("resnet20", width=0.25, shortcut="B")  # 4 -> 8 channel projection at stride 2
    assert channels_last_hazard(narrow) is not None
    assert channels_last_hazard(narrow, "cuda") is None
    assert channels_last_hazard(create_model("resnet20", width=0.5, shortcut="B")) is None  # 8 input channels
    assert channels_last_hazard(create_model("resnet20", width=0.25)) is None  # option A: no convolution
    prepare_for_training(narrow, channels_last=True)
    assert all(p.is_contiguous() for p in narrow.parameters())  # left NCHW
    safe = prepare_for_training(create_model("resnet20", width=0.5, shortcut="B"), channels_last=True)
    assert not all(p.is_contiguous() for p in safe.parameters())  # converted


def test_gpu_paths_choose_cuda_bf16_or_fp16_and_fused_steps(monkeypatch) -> None:
    """The CPU-side logic of the GPU code paths, with CUDA's answers stubbed: device 'auto' picks the GPU,
    amp 'auto' bf16 where the GPU has it and fp16 before (with a grad scaler), the fused optimizer on CUDA only."""
    from skiplab.train import TrainConfig
    from skiplab.train.loop import resolve_amp, resolve_device
    from skiplab.train.optim import build_optimizer

    cuda = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == cuda
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_amp("auto", cuda) is torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_amp("auto", cuda) is torch.float16
    assert resolve_amp("auto", torch.device("cpu")) is None  # no bf16 units here: float32
    seen = {}

    def spy(cls, device, fused=True):
        seen[torch.device(device).type] = fused
        return {}

    monkeypatch.setattr("skiplab.train.optim.optimizer_kwargs", spy)
    build_optimizer(nn.Linear(2, 2), TrainConfig(model="resnet20"))
    assert seen == {"cpu": False}  # no fused step asked for on CPU (no gain measured there)
