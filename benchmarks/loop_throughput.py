"""Training images/s of the shared loop (``pipelines.core.training.Trainer``) against a plain fp32 d2l-style loop.

Same model, same in-memory batches, same optimizer; the d2l loop is fp32 with no tricks (forward, loss,
zero_grad, backward, step), the shared loop uses what the leaves pipeline uses on the device: channels_last
and autocast (bf16 on a CPU with hardware bf16, depthwise convs kept fp32; bf16/fp16 on CUDA), plus
``torch.compile`` with ``--compile``. The loops alternate for ``--repeats`` rounds and the best round of
each counts, so drifting machine load hits both alike. Two clocks: wall time (images/s, what a run feels
like) and process CPU time (images per CPU-second: steadier when other jobs share the cores). Prints both
ratios and the load average at the start, so a figure is never read without the load it was taken under.

    .venv/bin/python benchmarks/loop_throughput.py                # CPU, lite0 96 px: target >= 1.5x
    .venv/bin/python benchmarks/loop_throughput.py --device cuda  # one GPU, 224 px: target >= 2.5x
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from torch import nn


def _clocks() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _rates(n: int, start: tuple[float, float], device) -> tuple[float, float]:
    _sync(device)
    wall, cpu = _clocks()
    return n / (wall - start[0]), n / max(cpu - start[1], 1e-9)


def d2l_epoch(net: nn.Module, batches, optimizer, loss_fn, device) -> tuple[float, float]:
    """d2l's ``train_epoch_ch3``: the plainest correct loop. Returns (images/s, images per CPU-second)."""
    net.train()
    n, start = 0, _clocks()
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        loss = loss_fn(net(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        n += len(x)
    return _rates(n, start, device)


def shared_epoch(trainer, batches) -> tuple[float, float]:
    start = _clocks()
    stats = trainer.train_epoch(batches)
    return _rates(stats["samples"], start, trainer.device)


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> float:
    from models import create_model
    from pipelines.core.training import Trainer

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="tf_efficientnet_lite0")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--img-size", type=int, help="default 224 on CUDA, 96 on CPU")
    p.add_argument("--batch-size", type=int, help="default 128 on CUDA, 32 on CPU")
    p.add_argument("--batches", type=int, default=6, help="batches per timed epoch")
    p.add_argument("--repeats", type=int, default=4)
    p.add_argument("--classes", type=int, default=176)
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    p.add_argument("--no-amp", dest="amp", action="store_false", help="shared loop without autocast")
    p.add_argument("--compile", action="store_true", help="shared loop under torch.compile (long warm-up on CPU)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = args.device.startswith("cuda")
    size = args.img_size or (224 if cuda else 96)
    bs = args.batch_size or (128 if cuda else 32)
    torch.manual_seed(0)
    batches = [(torch.randn(bs, 3, size, size), torch.randint(0, args.classes, (bs,))) for _ in range(args.batches)]
    if cuda:
        batches = [(x.pin_memory(), y.pin_memory()) for x, y in batches]

    def fresh():
        net = create_model(args.model, args.classes)
        return net, torch.optim.AdamW(net.parameters(), lr=1e-4)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    net, opt = fresh()
    net = net.to(args.device)
    shared_net, shared_opt = fresh()
    trainer = Trainer(shared_net, shared_opt, nn.CrossEntropyLoss(), device=args.device, channels_last=True,
                      amp=args.amp, compile=args.compile)
    d2l_epoch(net, batches[:2], opt, nn.CrossEntropyLoss(), args.device)  # warm-up (allocator, cuDNN, compile)
    shared_epoch(trainer, batches[:2])
    plain, shared = [], []
    for _ in range(args.repeats):
        plain.append(d2l_epoch(net, batches, opt, nn.CrossEntropyLoss(), args.device))
        shared.append(shared_epoch(trainer, batches))
    best = lambda runs, clock: max(r[clock] for r in runs)  # noqa: E731
    ratio, cpu_ratio = best(shared, 0) / best(plain, 0), best(shared, 1) / best(plain, 1)
    amp = str(trainer.amp_dtype or "fp32").removeprefix("torch.")
    print(f"{args.model} {size}px batch {bs} on {args.device} ({torch.get_num_threads()} threads, "
          f"load average {load:.1f} at start), best of {args.repeats} interleaved rounds:")
    print(f"  plain fp32 loop        {best(plain, 0):7.1f} img/s  {best(plain, 1):7.1f} img/CPU-s")
    print(f"  shared loop ({amp}, channels_last={trainer.channels_last}, compile={args.compile}) "
          f"{best(shared, 0):7.1f} img/s  {best(shared, 1):7.1f} img/CPU-s")
    print(f"  ratio {ratio:.2f}x (wall), {cpu_ratio:.2f}x (CPU time)")
    return ratio


if __name__ == "__main__":
    main()
