"""The shared loop's device choices, checked without a GPU: autocast dtype per device, the CPU bf16 probe,
the device NCCL collectives need, fp32 depthwise convs under CPU bf16, and torch.compile on CPU."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from pipelines.core import training
from pipelines.core.distributed import collective_device, dist_backend, local_gpu
from pipelines.core.training import Trainer, autocast_dtype, cpu_has_bf16, fp32_depthwise


def test_cpu_bf16_probe_reads_the_flags():
    assert cpu_has_bf16("fpu sse avx512f avx512_bf16 avx512vl")
    assert cpu_has_bf16("fpu amx_tile amx_bf16")
    assert not cpu_has_bf16("fpu sse avx2 avx512f avx512bw")  # emulated bf16 is slower than fp32
    assert not cpu_has_bf16("")
    assert isinstance(cpu_has_bf16(), bool)  # this machine's /proc/cpuinfo


@pytest.mark.parametrize("cpu_bf16", [True, False])
def test_autocast_dtype_per_device(monkeypatch, cpu_bf16):
    monkeypatch.setattr(training, "cpu_has_bf16", lambda: cpu_bf16)
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 1)
    assert autocast_dtype(cpu, None) is None  # CPU autocast is opt-in: regression outputs need fp32
    assert autocast_dtype(cpu, True) == (torch.bfloat16 if cpu_bf16 else None)
    assert autocast_dtype(cpu, False) is None
    for bf16_gpu, dtype in ((True, torch.bfloat16), (False, torch.float16)):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda bf16_gpu=bf16_gpu: bf16_gpu)
        assert autocast_dtype(cuda, None) == dtype and autocast_dtype(cuda, True) == dtype
        assert autocast_dtype(cuda, False) is None


def test_nccl_collectives_use_this_ranks_gpu(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert collective_device("nccl") == torch.device("cuda", 3)  # NCCL has no CPU collectives
    assert collective_device("gloo") == torch.device("cpu")


def test_more_ranks_than_gpus_share_them_and_backend_can_be_chosen(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert local_gpu(count=2) == 1 and local_gpu(count=8) == 3 and local_gpu(count=0) == 3
    monkeypatch.delenv("PIPELINES_DIST_BACKEND", raising=False)
    assert dist_backend(cuda=True) == "nccl" and dist_backend(cuda=False) == "gloo"
    monkeypatch.setenv("PIPELINES_DIST_BACKEND", "gloo")  # NCCL refuses two ranks on one GPU
    assert dist_backend(cuda=True) == "gloo"


def _tiny_cnn(classes: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.ReLU(),  # depthwise
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, classes))


def test_depthwise_convs_stay_fp32_under_cpu_bf16_autocast():
    net = _tiny_cnn()
    keys = list(net.state_dict())
    assert fp32_depthwise(net) == 1 and fp32_depthwise(net) == 1  # idempotent
    assert list(net.state_dict()) == keys and isinstance(net[3], nn.Conv2d)
    twin = copy.deepcopy(net)  # timm's EMA deep-copies the model: the copy must use its own weights
    with torch.no_grad():
        twin[3].weight.zero_()
    x = torch.randn(2, 3, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert net[0](x).dtype == torch.bfloat16
        assert net[3](net[0](x)).dtype == torch.float32
        assert not torch.equal(net(x), twin(x))


def _batches(n: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, 3, 16, 16, generator=g), torch.randint(0, 3, (8,), generator=g)) for _ in range(n)]


@pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has no hardware bf16")
def test_cpu_bf16_channels_last_trains_and_repeats_exactly():
    def run():
        torch.manual_seed(0)
        net = _tiny_cnn()
        trainer = Trainer(net, torch.optim.AdamW(net.parameters(), 1e-2), nn.CrossEntropyLoss(), device="cpu",
                          channels_last=True, amp=True)
        assert trainer.amp_dtype == torch.bfloat16
        assert trainer.module[0].weight.is_contiguous(memory_format=torch.channels_last)
        history = trainer.fit(_batches(), 2)
        return history, trainer.predict(_batches(1, seed=1))

    (h1, p1), (h2, p2) = run(), run()
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in h1)
    assert p1.dtype == torch.float32 and torch.equal(p1, p2)  # reproducible under a seed
    assert [h["loss"] for h in h1] == [h["loss"] for h in h2]


def test_cpp_compiler_is_the_one_inductor_would_use_or_none():
    """A CPU compile needs a working C++ compiler; without one it fails after a minute of tracing, so the
    leaves default asks first, with inductor's own search (here: one that cannot compile, then the real one)."""
    import shutil

    from torch._inductor import config

    with config.patch({"cpp.cxx": (None, "/bin/false")}):  # inductor's own override, undone on exit
        assert training.cpp_compiler() is None
    with config.patch({"cpp.cxx": (None, "g++")}):
        assert (training.cpp_compiler() is not None) == (shutil.which("g++") is not None)


@pytest.mark.slow
def test_compile_on_cpu_matches_eager(monkeypatch):
    """The compiled step gives the eager step's weights. The trainer lets a kernel that cannot be built fall back
    to eager (``suppress_errors``); here a failure must fail, so a silent fallback cannot pass for a match."""
    from torch import _dynamo

    def run(compile: bool):
        torch.manual_seed(0)
        net = _tiny_cnn()
        trainer = Trainer(net, torch.optim.SGD(net.parameters(), 0.1), nn.CrossEntropyLoss(), device="cpu",
                          compile=compile, amp=False)
        monkeypatch.setattr(_dynamo.config, "suppress_errors", False)
        trainer.fit(_batches(), 1)
        return trainer.module[0].weight.detach().clone()

    torch.testing.assert_close(run(True), run(False), rtol=1e-4, atol=1e-5)


def test_warmup_cosine_schedule_seen_by_the_optimizer():
    """The LR each optimizer step uses: linear warmup from base/W to base over W steps, cosine to min_factor
    x base at the last step, held after; a group with timm's ``lr_scale`` follows the same curve, scaled."""
    base, warmup, total, floor = 0.1, 4, 14, 0.01
    net = nn.Linear(3, 1)
    optimizer = torch.optim.SGD([{"params": [net.weight], "lr": base},
                                 {"params": [net.bias], "lr": base, "lr_scale": 10.0}])
    seen = []
    optimizer.register_step_pre_hook(lambda opt, *_: seen.append([g["lr"] for g in opt.param_groups]))
    trainer = Trainer(net, optimizer, nn.MSELoss(), scheduler=training.warmup_cosine(optimizer, warmup, total, floor),
                      device="cpu")
    trainer.fit([(torch.randn(2, 3), torch.randn(2, 1))] * 6, 3)  # 18 steps: 4 past the end of the cosine

    def expected(k: int) -> float:
        if k < warmup:
            return base / warmup + k * (base - base / warmup) / warmup
        progress = min(1.0, (k - warmup) / (total - warmup))
        return base * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))

    assert len(seen) == 18
    assert [lr for lr, _ in seen] == pytest.approx([expected(k) for k in range(18)], rel=1e-12)
    assert [head for _, head in seen] == pytest.approx([10 * expected(k) for k in range(18)], rel=1e-12)
    assert seen[0][0] == pytest.approx(base / warmup) and seen[warmup][0] == pytest.approx(base)
    assert seen[total][0] == pytest.approx(floor * base) and seen[-1][0] == pytest.approx(floor * base)
    with pytest.raises(ValueError, match="lr_scale"):
        training.warmup_cosine(torch.optim.SGD([{"params": [net.weight], "lr": 0.1},
                                                {"params": [net.bias], "lr": 1.0}]), 1, 5)


def test_a_brought_forward_end_decays_from_where_the_lr_is_to_the_floor_and_survives_a_resume():
    """``end_early(start, stop)``: up to ``start`` the planned warmup + cosine; then a half cosine from the LR
    at ``start`` down to the floor at ``stop``, held after; the end is in the state a checkpoint keeps."""
    base, warmup, total, floor, start, stop = 0.1, 2, 40, 0.01, 10, 16
    net = nn.Linear(3, 1)
    optimizer = torch.optim.SGD(net.parameters(), lr=base)
    schedule = training.warmup_cosine(optimizer, warmup, total, floor)
    planned = [schedule._get_lr(t)[0] for t in range(total + 1)]
    schedule.end_early(start, stop)
    lrs = [schedule._get_lr(t)[0] for t in range(total + 1)]
    assert lrs[: start + 1] == planned[: start + 1]
    assert all(a > b for a, b in zip(lrs[start:stop], lrs[start + 1 : stop + 1], strict=True))
    assert lrs[start + 1] < planned[start + 1] and lrs[stop] == pytest.approx(floor * base)
    assert lrs[stop:] == pytest.approx([floor * base] * (total + 1 - stop))
    fresh = training.warmup_cosine(torch.optim.SGD(net.parameters(), lr=base), warmup, total, floor)
    fresh.load_state_dict(schedule.state_dict())
    assert [fresh._get_lr(t)[0] for t in range(total + 1)] == lrs


def test_adamw_is_fused_where_torch_has_the_kernel_and_updates_as_the_loop_does():
    """The fused kernel is the same AdamW: five steps of it and of the per-tensor loop end at the same weights."""
    torch.manual_seed(0)
    nets = [nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))]
    nets.append(copy.deepcopy(nets[0]))
    start = copy.deepcopy(nets[0])
    fused = training.adamw(nets[0].parameters(), lr=1e-2, weight_decay=0.05, device=torch.device("cpu"))
    loop = torch.optim.AdamW(nets[1].parameters(), lr=1e-2, weight_decay=0.05, foreach=False)
    assert fused.defaults["fused"] and training.fused_optimizer("cuda") and not training.fused_optimizer("meta")
    x, y = torch.randn(32, 8), torch.randint(0, 3, (32,))
    for _ in range(5):
        for net, opt in zip(nets, (fused, loop), strict=True):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
    for a, b, a0 in zip(nets[0].parameters(), nets[1].parameters(), start.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6) and not torch.allclose(a, a0, atol=1e-3)
