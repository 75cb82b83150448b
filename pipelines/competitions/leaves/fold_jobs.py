"""Folds trained side by side on a CPU, each in a process of its own (``--fold-jobs``, ``config.auto_fold_jobs``).

On a small CPU one training step of efficientnet-lite0 at 96-112 px does not split well between threads: its
later stages run on 3 x 3 to 7 x 7 feature maps, too small to keep two cores busy. Two or three folds trained at
once, one thread each, get 1.15-1.3x more images through per second on 2 cores (docs/leaves.md). Processes, not
threads: the augmentation, the shuffling and dropout draw from torch's global generator, which threads would
share and interleave; a process has its own, seeded per fold, so each fold is reproducible on its own.

The processes are forked from a server process that imported torch, timm and this package once (``forkserver``;
``spawn`` where the platform has none), and their first work is the symmetry probe's features, then the
pretrained pre-logits the folds' heads start from, the rows shared among them at batch bounds: both cost a few
seconds of one process where they cost one import per process and a pass on two threads. The parent keeps what
needs the whole training set: the probe's features and each fold's flips-and-turns decision, sent to the fold's
process with its rows. The decoded images and the heads' features go through ``.npy`` files that every process
maps read-only (the page cache holds them once), not through a pipe or ``/dev/shm`` (64 MB in a default
container). What comes back is the fold's predictions and record; once the views are chosen, the test rows are
shared among the processes, each predicting its share with every fold's checkpoint (the frozen layers once for
all folds: ``train.predict_tests``).
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np


class FoldProcesses:
    """``fit(fold, train_idx, valid_idx)`` trains a fold in one of ``jobs`` processes and returns what
    ``train.fit_fold`` returns; a context manager (the pool and the mapped images live inside the block)."""

    def __init__(self, cfg, data, run_dir: Path, jobs: int, device, cores: int | None = None):
        from joblib import cpu_count

        self.cfg, self.data, self.run_dir, self.jobs, self.device = cfg, data, Path(run_dir), jobs, device
        self.threads = max(1, (cpu_count() if cores is None else cores) // jobs)

    def __enter__(self):
        from pipelines.competitions.leaves.train import head_features, probe_of

        self.folder = Path(tempfile.mkdtemp(prefix=".images-", dir=self.run_dir))
        self.images = [str(self.folder / f"{name}.npy") for name in ("train_images", "test_images", "head_features")]
        self.pool = None
        try:
            for path, images in zip(self.images[:2], (self.data.train_images, self.data.test_images), strict=True):
                np.save(path, images.numpy())
            self.pool = ProcessPoolExecutor(self.jobs, mp_context=context())
            # once, before the folds ask: the symmetry probe's features, then the heads' (every training row)
            probe_of(self.cfg, self.data, self.device, compute=self.shared_probe_features)
            heads = head_features(self.cfg, self.data, self.device, compute=self.shared_head_features)
            if heads is not None:
                np.save(self.images[2], heads)
        except BaseException as err:  # a full disk, Ctrl-C: no process and no file left behind
            self.__exit__(type(err), err, err.__traceback__)
            raise
        # what a fold's process needs of the data, without the images and head features (mapped there) or the
        # probe (used here)
        self.slim = dataclasses.replace(self.data, train_images=None, test_images=None, probe=None,
                                        head_features=None)
        return self

    def shared_probe_features(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """``views.rows_features`` of ``rows``, a share of whole batches in each process."""
        from pipelines.competitions.leaves.views import PROBE_BATCH

        parts = self.shared(probe_share, rows, PROBE_BATCH, self.images[0])
        return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}

    def shared_head_features(self, rows: np.ndarray) -> np.ndarray | None:
        """``train.pre_logits`` of ``rows``, a share of whole prediction batches in each process."""
        from pipelines.competitions.leaves.config import eval_batch_size

        parts = self.shared(head_share, rows, eval_batch_size(self.cfg, self.device), self.images[0], self.cfg)
        return None if parts[0] is None else np.concatenate(parts)

    def shared(self, task, rows: np.ndarray, batch: int, *args) -> list:
        """``task(share, threads, *args)`` of ``rows`` split at ``batch`` bounds into one share per
        process (each row computed as one process computing them all would, on as many threads), in order."""
        batches = np.array_split(np.arange(0, len(rows), batch), self.jobs)
        shares = [rows[b[0]:b[-1] + batch] for b in batches if len(b)]
        futures = [self.pool.submit(task, share, self.threads, *args) for share in shares]
        return [future.result() for future in futures]

    def fit(self, fold: int, train_idx, valid_idx) -> dict:
        from pipelines.competitions.leaves.train import fold_seed_of, probe_of
        from pipelines.competitions.leaves.views import fold_symmetry

        symmetry = fold_symmetry(self.cfg, probe_of(self.cfg, self.data, self.device), self.data.y,
                                 np.asarray(train_idx), fold_seed_of(self.cfg, fold))
        return self.pool.submit(train_fold, self.cfg, self.slim, self.images, fold, np.asarray(train_idx),
                                np.asarray(valid_idx), self.run_dir, symmetry, self.threads).result()

    def predict_tests(self, views: dict[int, list[str]]) -> dict[int, np.ndarray]:
        """``train.predict_tests`` of the folds in ``views`` (fold -> its views), the test rows shared among the
        processes at batch bounds (each process runs every fold, the frozen layers once for them all)."""
        from pipelines.competitions.leaves.config import eval_batch_size

        parts = self.shared(test_share, np.arange(len(self.data.test)), eval_batch_size(self.cfg, self.device),
                            self.cfg, self.slim, self.images, views, self.run_dir)
        return {fold: np.concatenate([part[fold] for part in parts], axis=1) for fold in views}

    def __exit__(self, exc_type, *exc) -> None:
        if self.pool is not None:
            if exc_type is not None:  # an error, Ctrl-C or SIGTERM here: the running processes are not waited for
                for process in list((self.pool._processes or {}).values()):  # Python 3.14 has terminate_workers()
                    process.terminate()
            self.pool.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(self.folder, ignore_errors=True)


# What a fold's process imports: the fork server imports it once, and every process it forks starts with it
PRELOAD = ["numpy", "torch", "timm", "timm.data", "timm.loss", "timm.utils", "models", "features.augment",
           "features.symmetry", "pipelines.core.training", "pipelines.competitions.leaves.train",
           "pipelines.competitions.leaves.views", "pipelines.competitions.leaves.fold_jobs"]


def context():
    """``forkserver`` with :data:`PRELOAD` where the platform has it (Linux, macOS), else ``spawn``. Never a
    plain ``fork`` of this process, whose threads (torch's, the CV driver's) a fork would copy mid-flight."""
    import multiprocessing

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def head_share(rows: np.ndarray, threads: int, images: str, cfg) -> np.ndarray | None:
    """In a fold's process, before its fold: ``train.pre_logits`` of ``rows`` on ``threads`` threads."""
    import torch

    from pipelines.competitions.leaves.train import pre_logits

    torch.set_num_threads(threads)
    return pre_logits(cfg, mapped_array(images), rows, torch.device("cpu"))


def probe_share(rows: np.ndarray, threads: int, images: str) -> dict[str, np.ndarray]:
    """In a fold's process, before its fold: the probe's features of ``rows`` on ``threads`` threads."""
    import torch

    from pipelines.competitions.leaves.views import rows_features

    torch.set_num_threads(threads)
    return rows_features(mapped_array(images), rows, torch.device("cpu"))


def train_fold(cfg, data, images: list[str], fold: int, train_idx, valid_idx, run_dir: Path, symmetry,
               threads: int) -> dict:
    """In the fold's process: map the images, train and predict the fold on ``threads`` threads. What it returns
    is arrays (pickled through the pipe; a tensor would go through shared memory)."""
    import torch

    from pipelines.competitions.leaves.train import fit_fold

    info = fit_fold(cfg, mapped(data, images, threads, cfg), fold, train_idx, valid_idx, run_dir, torch.device("cpu"),
                    symmetry=symmetry)
    return {k: v.numpy() if isinstance(v, torch.Tensor) else v for k, v in info.items()}


def test_share(rows: np.ndarray, threads: int, cfg, data, images: list[str], views: dict[int, list[str]],
               run_dir: Path) -> dict[int, np.ndarray]:
    """In a fold's process: ``train.predict_tests`` of the test rows ``rows`` (consecutive) by every fold in
    ``views``, on ``threads`` threads."""
    import torch

    from pipelines.competitions.leaves.train import predict_tests

    return predict_tests(cfg, mapped(data, images, threads), views, run_dir, torch.device("cpu"),
                         rows=slice(int(rows[0]), int(rows[-1]) + 1))


def mapped(data, images: list[str], threads: int, cfg=None):
    """``data`` with its images (and, with ``cfg``, the head features where the run computed them) mapped
    read-only from the run's ``.npy`` files, on ``threads`` threads."""
    import torch

    from pipelines.competitions.leaves.train import head_key

    torch.set_num_threads(threads)
    train_images, test_images = (mapped_array(path) for path in images[:2])
    heads = None
    if cfg is not None and Path(images[2]).exists():
        heads = (head_key(cfg), np.load(images[2], mmap_mode="r"))
    return dataclasses.replace(data, train_images=train_images, test_images=test_images, head_features=heads)


def mapped_array(path: str):
    """The ``.npy`` file at ``path`` as a tensor over its pages, mapped copy-on-write (never written back)."""
    import torch

    return torch.from_numpy(np.load(path, mmap_mode="c"))
