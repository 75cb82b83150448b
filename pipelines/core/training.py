"""The shared training loop: one readable block (forward, loss, backward, clip, step) for every model.

One code path for every device: CPU (bf16 autocast where the CPU does bf16 in hardware and the caller asks
for it, channels_last; reproducible under a seed), one CUDA GPU (autocast in bf16 where supported, else fp16
with a gradient scaler, and channels_last), several GPUs under ``torchrun`` (the model is wrapped in DDP when
a process group is up; NCCL or gloo). Extras are small and optional:
a ``batch_hook`` (mixup/cutmix), an EMA of the weights, accuracy tracking, a tqdm bar; early stopping
and checkpoints hang on the ``on_epoch_end`` event (minGPT's ``add_callback``), not on a framework.
Used by the d2l house-prices preset, the leaves pipeline, the ``models/`` baselines and tuning.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch import nn

from pipelines.core.checkpoint import rng_state, set_rng_state
from pipelines.core.distributed import default_device, is_main_process, world
from pipelines.core.fold_batchnorm import fold_batchnorm

EVENTS = ("on_epoch_end",)


def cpu_has_bf16(flags: str | None = None) -> bool:
    """Whether the CPU does bf16 arithmetic in hardware (AVX-512 BF16 or AMX), from ``/proc/cpuinfo``'s flags.

    Without it bf16 autocast is emulated and slower than fp32, so the trainer stays in fp32.
    """
    if flags is None:
        try:
            lines = Path("/proc/cpuinfo").read_text().splitlines()
        except OSError:  # not Linux: do not guess
            return False
        flags = next((line.partition(":")[2] for line in lines if line.startswith("flags")), "")
    return not {"avx512_bf16", "amx_bf16"}.isdisjoint(flags.split())


def cpp_compiler() -> str | None:
    """The C++ compiler ``torch.compile`` would build its CPU kernels with (inductor's own search: ``$CXX``, then
    g++ and clang++, each run once), or ``None`` when none works: a CPU compile would then fail after tracing."""
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler
    except ImportError:  # an inductor without this helper: it would search the same names
        import os
        import shutil

        return next((path for path in map(shutil.which, (os.environ.get("CXX") or "g++", "clang++")) if path), None)
    try:
        return get_cpp_compiler()
    except Exception:  # InvalidCxxCompiler: nothing on the path compiles
        return None


def autocast_dtype(device: torch.device, amp: bool | None = None) -> torch.dtype | None:
    """The autocast dtype for ``device``, ``None`` for plain fp32.

    ``amp=None`` (the default) autocasts on CUDA only: bf16 where the GPU supports it, else fp16 (the
    trainer then scales the loss). ``amp=True`` also autocasts on a CPU with hardware bf16 (image models;
    regression outputs keep fp32: bf16 holds 3 significant digits). ``amp=False`` never autocasts.
    """
    if amp is False:
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and amp and cpu_has_bf16():
        return torch.bfloat16
    return None


def fp32_depthwise(model: nn.Module) -> int:
    """Run ``model``'s depthwise convolutions in fp32 under CPU bf16 autocast; returns how many.

    oneDNN has no fast bf16 depthwise backward: training efficientnet-lite0 (96 px, batch 32, one thread,
    channels_last) under bf16 autocast ran at 0.65x the fp32 speed, and at 1.2x with depthwise convs in fp32.
    Each such conv's class is swapped for a subclass (deepcopy- and EMA-safe; same state-dict keys).
    """
    count = 0
    for module in model.modules():
        if isinstance(module, nn.Conv2d) and module.groups > 1 and module.groups == module.in_channels:
            if not getattr(module, "_fp32_under_autocast", False):
                module.__class__ = _fp32_class(type(module))
            count += 1
    return count


_FP32_CLASSES: dict[type, type] = {}


def _fp32_class(cls: type) -> type:
    """``cls`` whose forward disables autocast and takes fp32 input (one subclass per conv class)."""
    if cls not in _FP32_CLASSES:
        def forward(self, x):
            with torch.autocast(x.device.type, enabled=False):
                return cls.forward(self, x.float())

        _FP32_CLASSES[cls] = type(f"Fp32{cls.__name__}", (cls,), {"forward": forward, "_fp32_under_autocast": True})
    return _FP32_CLASSES[cls]


def adamw(params, *, lr: float = 1e-3, weight_decay: float = 0.01, device: torch.device | str = "cpu"
          ) -> torch.optim.AdamW:
    """AdamW with torch's fused kernel where ``device`` has one (:func:`fused_optimizer`), else its default.

    The same update in one kernel over every weight instead of a loop of per-tensor ops: for
    efficientnet-lite0 with its stem and three stages frozen (3.3 M trained weights), ``optimizer.step()``
    took 6-7 ms instead of 20 ms on one core of a 2-core CPU, about 4 % of a training step at 96 px.
    """
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused_optimizer(device) or None)


def fused_optimizer(device: torch.device | str) -> bool:
    """Whether torch has fused optimizer kernels (AdamW's among them) for ``device``'s type."""
    from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

    return torch.device(device).type in _get_fused_kernels_supported_devices()


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, min_factor: float = 0.01):
    """Per-step LR schedule, timm's ``CosineLRScheduler``: linear warmup from ``1/warmup_steps`` of the base LR
    (step 0) to the base LR (step ``warmup_steps``), then cosine down to ``min_factor`` of it at ``total_steps``,
    held there after (its end may be brought forward: :meth:`~pipelines.core.schedules.WarmupCosine.end_early`).
    The trainer calls its ``step_update`` after every optimizer step.

    The groups share one base ``lr``; a group that trains faster (a new classifier) sets timm's ``lr_scale``.
    """
    from pipelines.core.schedules import WarmupCosine

    base = {group["lr"] for group in optimizer.param_groups}
    if len(base) != 1:
        raise ValueError(f"parameter groups have different base LRs {sorted(base)}: give each the same 'lr' "
                         "and scale a group with 'lr_scale'")
    lr = base.pop()
    return WarmupCosine(optimizer, t_initial=max(1, total_steps - warmup_steps), lr_min=min_factor * lr,
                        warmup_t=warmup_steps, warmup_lr_init=lr / max(1, warmup_steps), warmup_prefix=True,
                        t_in_epochs=False)


class Trainer:
    """Owns model, optimizer and loss; ``fit`` trains, ``evaluate`` scores, ``predict`` infers.

    ``amp`` chooses autocast (:func:`autocast_dtype`: CUDA by default, a bf16-capable CPU when ``True``);
    ``channels_last`` stores 4-D inputs and weights NHWC (faster convolutions on CUDA and oneDNN CPUs).
    ``compile`` wraps the model in ``torch.compile`` (inductor: C++ kernels on CPU, Triton on CUDA).
    ``scheduler`` is a timm scheduler (:func:`warmup_cosine`), stepped per optimizer step (``step_update``);
    ``batch_hook(x, y) -> (x, y)`` transforms each training batch on the device (mixup/cutmix);
    ``ema`` (timm ``ModelEmaV3``) is updated after every step and used by ``evaluate``/``predict``.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        *,
        scheduler=None,
        device: torch.device | str | None = None,
        grad_clip: float | None = None,
        channels_last: bool = False,
        amp: bool | None = None,
        batch_hook: Callable | None = None,
        ema: nn.Module | None = None,
        progress: bool = False,
        compile: bool = False,
    ):
        self.device = torch.device(device) if device is not None else default_device()
        cuda = self.device.type == "cuda"
        self.channels_last, self.amp_dtype = channels_last, autocast_dtype(self.device, amp)
        self.module = self._prepare(model)  # the bare model: what EMA tracks and checkpoints hold
        if ema is not None:  # timm's EMA copies the model where it was built (CPU): keep it beside the model
            self._prepare(ema.module)
        self.model = self.module
        if world()[1] > 1:
            from torch.nn.parallel import DistributedDataParallel

            self.model = DistributedDataParallel(self.module, device_ids=[self.device.index] if cuda else None)
        if compile:
            from torch import _dynamo

            _dynamo.config.suppress_errors = True  # a kernel that cannot be built runs eagerly (and warns)
            # inductor's CPU build imports cpp_extension, which warns "No CUDA runtime is found" on every CPU box
            logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
            self.model = torch.compile(self.model)
        self.optimizer, self.loss_fn, self.scheduler, self.grad_clip = optimizer, loss_fn, scheduler, grad_clip
        self.batch_hook, self.ema, self.progress = batch_hook, ema, progress
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.callbacks: dict[str, list[Callable]] = defaultdict(list)
        self.epoch, self.step = 0, 0  # epochs and optimizer steps done
        self.should_stop = False  # a callback sets it (early stopping); ``fit`` then returns

    def _prepare(self, net: nn.Module) -> nn.Module:
        """``net`` on the device, NHWC if asked, depthwise convs fp32 under CPU bf16 autocast (in place)."""
        net = net.to(self.device)
        if self.channels_last:
            net = net.to(memory_format=torch.channels_last)
        if self.amp_dtype == torch.bfloat16 and self.device.type == "cpu":
            fp32_depthwise(net)
        return net

    def add_callback(self, event: str, fn: Callable[..., None]) -> None:
        if event not in EVENTS:
            raise ValueError(f"unknown event {event!r}; events: {EVENTS}")
        self.callbacks[event].append(fn)

    def _trigger(self, event: str, **info) -> None:
        for fn in self.callbacks[event]:
            fn(self, **info)

    def to_device(self, x: torch.Tensor) -> torch.Tensor:
        """An input batch on the trainer's device, in its memory format (``channels_last`` for 4-D)."""
        x = x.to(self.device, non_blocking=True)
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def autocast(self):
        """The trainer's autocast context (a no-op for plain fp32)."""
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None)

    @property
    def eval_model(self) -> nn.Module:
        """The weights to evaluate: the EMA copy when there is one."""
        return self.ema.module if self.ema is not None else self.module

    def train_epoch(self, loader: Iterable) -> dict:
        """One pass over ``loader``; returns mean loss, accuracy (classification), samples and throughput."""
        self.model.train()
        total, count, correct, start = 0.0, 0, 0, time.perf_counter()  # correct: None if not classifying
        bar = _progress(loader, f"epoch {self.epoch + 1}") if self.progress and is_main_process() else None
        for x, y in bar if bar is not None else loader:
            x, y = self.to_device(x), y.to(self.device, non_blocking=True)
            if self.batch_hook is not None:
                x, y = self.batch_hook(x, y)
            with self.autocast():
                out = self.model(x)
                loss = self.loss_fn(out, y)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if self.grad_clip:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.module.parameters(), self.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.step += 1
            if self.scheduler is not None:
                self.scheduler.step_update(self.step)
            if self.ema is not None:
                self.ema.update(self.module, step=self.step)
            total += loss.item() * len(x)
            count += len(x)
            hits = _n_correct(out, y)
            correct = None if hits is None or correct is None else correct + hits
            if bar is not None:
                seconds = time.perf_counter() - start
                acc = f"{correct / count:.3f}" if correct is not None else "-"
                bar.set_postfix(loss=f"{total / count:.3f}", acc=acc, img_s=f"{count / max(seconds, 1e-9):.0f}",
                                refresh=False)
        seconds = time.perf_counter() - start
        stats = {"loss": total / max(count, 1), "samples": count, "seconds": seconds,
                 "samples_per_s": count / max(seconds, 1e-9)}
        if correct is not None and count:
            stats["acc"] = correct / count
        return stats

    def fit(self, loader: Iterable, epochs: int) -> list[dict]:
        """Train ``epochs`` more epochs, or until a callback sets ``should_stop``.

        ``on_epoch_end`` callbacks get the epoch's stats (and may validate, checkpoint or stop).
        A loader whose sampler has ``set_epoch`` (DDP, :class:`features.images.SeededSampler`) gets it.
        """
        history = []
        for _ in range(epochs):
            if self.should_stop:
                break
            sampler = getattr(loader, "sampler", None)
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(self.epoch)
            stats = self.train_epoch(loader)
            self.epoch += 1
            stats["epoch"] = self.epoch
            self._trigger("on_epoch_end", stats=stats)
            history.append(stats)
        return history

    @staticmethod
    def inference_model(model: nn.Module, x: torch.Tensor) -> nn.Module:
        """``model`` (in eval mode) with its batch norms folded into their convolutions, a copy made for one
        pass over a loader (``x``: its first batch): the same outputs, 1.3-1.5x faster on a CPU
        (``pipelines.core.fold_batchnorm``). A model without conv + norm pairs comes back as it is."""
        return fold_batchnorm(model, x[:2])[0].eval()

    @torch.no_grad()
    def predict(self, loader: Iterable, transform: Callable | None = None) -> torch.Tensor:
        """Outputs for every batch of ``loader`` (inputs, or ``(inputs, _)`` pairs), on CPU, fp32.

        ``transform`` is applied to each input batch first (a test-time augmentation view).
        """
        model, outs = self.eval_model.eval(), []
        for batch in loader:
            x = self.to_device(batch[0] if isinstance(batch, list | tuple) else batch)
            if transform is not None:
                x = transform(x)
            if not outs:
                model = self.inference_model(model, x)
            with self.autocast():
                outs.append(model(x).float().cpu())
        return torch.cat(outs)

    @torch.no_grad()
    def evaluate(self, loader: Iterable, transform: Callable | None = None) -> dict:
        """Cross-entropy loss and accuracy of the evaluation weights over a labelled ``(x, y)`` loader
        (``transform`` applied to each input batch on the device first, as in :meth:`predict`)."""
        model, outs, ys = self.eval_model.eval(), [], []
        for x, y in loader:
            x = self.to_device(x)
            x = transform(x) if transform is not None else x
            if not outs:
                model = self.inference_model(model, x)
            with self.autocast():
                outs.append(model(x).float().cpu())
            ys.append(torch.as_tensor(y))
        logits, y = torch.cat(outs), torch.cat(ys)
        return {"val_loss": float(nn.functional.cross_entropy(logits, y)),
                "val_acc": float((logits.argmax(1) == y).float().mean())}

    def state_dict(self) -> dict:
        """Everything needed to continue training exactly: weights, optimizer, schedule, scaler, EMA, RNG."""
        return {
            "epoch": self.epoch,
            "step": self.step,
            "model": self.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "rng": rng_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.step = state["epoch"], state["step"]
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        set_rng_state(state["rng"])


def _n_correct(out: torch.Tensor, y: torch.Tensor) -> int | None:
    """Correct top-1 predictions; soft (mixup) targets count their largest class. ``None`` for regression."""
    if out.ndim != 2 or out.shape[1] < 2:
        return None
    target = y.argmax(1) if y.ndim == 2 else y
    if target.dtype.is_floating_point:
        return None
    return int((out.argmax(1) == target).sum())


def _progress(loader: Iterable, desc: str):
    from tqdm.auto import tqdm

    return tqdm(loader, desc=desc, leave=False, dynamic_ncols=True, mininterval=1.0)
