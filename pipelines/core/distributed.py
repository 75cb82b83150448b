"""Process-group helpers: which rank this is, which device it owns, and how ranks agree.

Everything here is a no-op outside ``torchrun`` (world size 1), so single-process code calls it freely.
Kept apart from the training loop because the pipelines need it too, before and after training: rank 0
downloads or draws the data while the others wait (``barrier``), every rank uses rank 0's run name
(``broadcast_object``) and rank 0's early-stopping score (``broadcast_value``).
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def local_gpu(count: int | None = None) -> int:
    """This rank's GPU index: ``LOCAL_RANK`` modulo the GPUs present, so that more ranks than GPUs share them."""
    count = torch.cuda.device_count() if count is None else count
    rank = int(os.environ.get("LOCAL_RANK", 0))
    return rank % count if count else rank


def default_device() -> torch.device:
    """``cuda:<LOCAL_RANK>`` under torchrun with GPUs, ``cuda`` with one, else CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", local_gpu())
    return torch.device("cpu")


def dist_backend(cuda: bool | None = None) -> str:
    """NCCL on GPUs, gloo on CPU; ``PIPELINES_DIST_BACKEND`` overrides (gloo for several ranks on one GPU,
    which NCCL refuses as a duplicate GPU)."""
    cuda = torch.cuda.is_available() if cuda is None else cuda
    return os.environ.get("PIPELINES_DIST_BACKEND") or ("nccl" if cuda else "gloo")


def world() -> tuple[int, int]:
    """``(rank, world_size)`` of the process group, ``(0, 1)`` outside one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main_process() -> bool:
    return world()[0] == 0


def init_distributed() -> bool:
    """Join the process group ``torchrun`` describes (NCCL on GPUs, gloo on CPU); ``False`` if none."""
    if int(os.environ.get("WORLD_SIZE", 1)) <= 1 or (dist.is_available() and dist.is_initialized()):
        return dist.is_available() and dist.is_initialized()
    backend = dist_backend()
    if torch.cuda.is_available():
        torch.cuda.set_device(local_gpu())
    dist.init_process_group(backend)
    return True


def collective_device(backend: str) -> torch.device:
    """Where a tensor must live for ``backend``'s collectives: NCCL has no CPU collectives, so this rank's GPU."""
    if backend == "nccl":
        return torch.device("cuda", local_gpu())  # init_distributed set_device'd it
    return torch.device("cpu")


def broadcast_value(value: float) -> float:
    """Rank 0's ``value`` on every rank, so that all ranks take the same decisions (early stopping)."""
    if world()[1] == 1:
        return value
    t = torch.tensor([float(value)], dtype=torch.float64, device=collective_device(dist.get_backend()))
    dist.broadcast(t, 0)
    return float(t.item())


def barrier() -> None:
    """Wait for every rank (rank 0 wrote something the others read next)."""
    if world()[1] > 1:
        dist.barrier()


def broadcast_object(obj):
    """Rank 0's picklable ``obj`` on every rank (e.g. a run folder's name made from the clock)."""
    if world()[1] == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
