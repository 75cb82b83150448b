"""Training images/s of the shared loop (``pipelines.training.Trainer``) against a plain d2l-style loop.

Same model, same in-memory batches, same optimizer; the d2l loop is fp32 with no tricks (forward, loss,
zero_grad, backward, step), the shared loop uses what it uses on the device: autocast (bf16/fp16) and
channels_last on CUDA, plain fp32 on CPU. The two loops alternate for ``--repeats`` rounds and the best
round of each counts, so drifting machine load hits both alike. Prints both figures and the ratio.

    .venv/bin/python benchmarks/loop_throughput.py                # CPU: ratio should be >= ~1.0
    .venv/bin/python benchmarks/loop_throughput.py --device cuda  # one GPU: AMP + channels_last, >= 2.5x
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn


def d2l_epoch(net: nn.Module, batches, optimizer, loss_fn, device) -> float:
    """d2l's ``train_epoch_ch3``: the plainest correct loop. Returns images/s."""
    net.train()
    n, start = 0, time.perf_counter()
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        loss = loss_fn(net(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        n += len(x)
    _sync(device)
    return n / (time.perf_counter() - start)


def shared_epoch(trainer, batches) -> float:
    start = time.perf_counter()
    stats = trainer.train_epoch(batches)
    _sync(trainer.device)
    return stats["samples"] / (time.perf_counter() - start)


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> float:
    from models.pretrained import create_backbone
    from pipelines.training import Trainer

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="tf_efficientnet_lite0")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--img-size", type=int, help="default 224 on CUDA, 96 on CPU")
    p.add_argument("--batch-size", type=int, help="default 128 on CUDA, 32 on CPU")
    p.add_argument("--batches", type=int, default=8, help="batches per timed epoch")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--classes", type=int, default=176)
    args = p.parse_args(argv)
    cuda = args.device.startswith("cuda")
    size = args.img_size or (224 if cuda else 96)
    bs = args.batch_size or (128 if cuda else 32)
    torch.manual_seed(0)
    batches = [(torch.randn(bs, 3, size, size), torch.randint(0, args.classes, (bs,))) for _ in range(args.batches)]
    if cuda:
        batches = [(x.pin_memory(), y.pin_memory()) for x, y in batches]

    def fresh():
        net = create_backbone(args.model, args.classes, pretrained=False)
        return net, torch.optim.AdamW(net.parameters(), lr=1e-4)

    net, opt = fresh()
    net = net.to(args.device)
    shared_net, shared_opt = fresh()
    trainer = Trainer(shared_net, shared_opt, nn.CrossEntropyLoss(), device=args.device, channels_last=True)
    d2l_epoch(net, batches[:2], opt, nn.CrossEntropyLoss(), args.device)  # warm-up (cuDNN autotune, allocator)
    shared_epoch(trainer, batches[:2])
    plain, shared = [], []
    for _ in range(args.repeats):
        plain.append(d2l_epoch(net, batches, opt, nn.CrossEntropyLoss(), args.device))
        shared.append(shared_epoch(trainer, batches))
    ratio = max(shared) / max(plain)
    amp = trainer.amp_dtype or "fp32"
    print(f"{args.model} {size}px batch {bs} on {args.device}: d2l loop {max(plain):.1f} img/s, "
          f"shared loop ({amp}, channels_last={trainer.channels_last}) {max(shared):.1f} img/s, "
          f"ratio {ratio:.2f}x")
    return ratio


if __name__ == "__main__":
    main()
