"""One leaves fold: its loaders, the trainer (backbone, optimizer, schedule, augmentation, mixup, EMA), the
epochs (inner-split early stopping, checkpoints, resume) and the predictions in every kept view.

The flips and turns a fold keeps and the test-time views come from ``views.py``; the loop itself is the
shared ``pipelines.core.training.Trainer``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from pipelines.competitions.leaves.config import (
    ANNEAL_MIN_SHARE,
    LeavesConfig,
    anneal_epochs,
    auto_batch_size,
    auto_epochs,
    eval_batch_size,
    say,
)
from pipelines.core.errors import PipelineError

if TYPE_CHECKING:
    from pipelines.competitions.leaves.data import LeafData


def make_loader(images, labels, cfg: LeavesConfig, *, train: bool, seed: int, device):
    """Batches of the uint8 cache (moved to the GPU once when it fits there): shuffled full batches (training,
    sharded over DDP ranks) or in order (``config.eval_batch_size``)."""
    from features.batches import TensorBatches, on_device
    from pipelines.core.distributed import world

    rank, world_size = world()
    images = on_device(images, device)
    if not train:
        return TensorBatches(images, labels, eval_batch_size(cfg, device), shuffle=False, pin=device.type == "cuda")
    return TensorBatches(images, labels, cfg.batch_size, shuffle=True, seed=seed, rank=rank, world_size=world_size,
                         pin=device.type == "cuda")


class MixHook:
    """timm's Mixup/CutMix as the trainer's ``batch_hook``. timm mixes pairs, so it needs an even batch: the
    last sample of an odd batch is kept, unmixed, with its smoothed one-hot target (timm's ``mixup_target`` at
    ``lam`` 1), never dropped."""

    def __init__(self, mixup):
        self.mixup = mixup

    def __call__(self, x, y):
        if not len(x) % 2:
            return self.mixup(x, y)
        import torch
        from timm.data.mixup import mixup_target

        m = self.mixup
        last_y = mixup_target(y[-1:], m.num_classes, 1.0, m.label_smoothing, getattr(m, "multi_label", False))
        if len(x) == 1:
            return x, last_y
        last_x = x[-1:].clone()  # timm mixes in place; the kept sample must stay as it is
        mixed_x, mixed_y = m(x[:-1], y[:-1])
        return torch.cat([mixed_x, last_x]), torch.cat([mixed_y, last_y])


def build_trainer(cfg: LeavesConfig, n_classes: int, steps_per_epoch: int, device, symmetry=None, head_fit=None):
    """Backbone (offline pretrained; the head at the linear probe of ``head_fit``, the fold's rows' pre-logits
    and labels (:func:`head_features`), when given, else at zero), AdamW, warmup+cosine, label smoothing, EMA,
    the batched augmentation with ``symmetry``'s flips and turns (none when not given), mixup if asked."""
    import torch
    from timm.data import Mixup
    from timm.loss import SoftTargetCrossEntropy
    from timm.utils import ModelEmaV3

    from features.augment import BatchAugment
    from features.symmetry import Symmetry
    from models import create_model, fit_head, get_classifier, input_stats
    from pipelines.core.training import Trainer, adamw, warmup_cosine

    model = create_model(cfg.model, n_classes, pretrained=cfg.pretrained, pretrained_file=cfg.pretrained_file,
                         zero_head=bool(cfg.pretrained or cfg.pretrained_file))
    if cfg.pretrained or cfg.pretrained_file:
        freeze_early(model, cfg.freeze)
        model = fold_frozen_norms(model, cfg.img_size or 224)
        if head_fit is not None:
            features, labels = (torch.as_tensor(np.asarray(a)) for a in head_fit)
            fit_head(model.to(device), features.to(device), labels.to(device), label_smoothing=cfg.label_smoothing)
    classifier = get_classifier(model)
    head = {id(p) for p in classifier.parameters()} if classifier is not None else set()
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if id(p) not in head], "lr": cfg.lr},
              {"params": [p for p in params if id(p) in head], "lr": cfg.lr, "lr_scale": cfg.head_lr_mult}]
    optimizer = adamw([g for g in groups if g["params"]], lr=cfg.lr, weight_decay=cfg.weight_decay, device=device)
    epochs = cfg.epochs or auto_epochs(steps_per_epoch * cfg.batch_size, cfg.batch_size, cfg.steps)
    scheduler = warmup_cosine(optimizer, round(cfg.warmup_epochs * steps_per_epoch), epochs * steps_per_epoch)
    mix = None
    if cfg.mix_prob > 0 and (cfg.mixup > 0 or cfg.cutmix > 0):
        mix = MixHook(Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, prob=cfg.mix_prob,
                            label_smoothing=cfg.label_smoothing, num_classes=n_classes))
        loss_fn = SoftTargetCrossEntropy()
    else:
        loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    mean, std = input_stats(model)
    hook = BatchAugment(mean, std, symmetry=symmetry or Symmetry(), crop_scale=cfg.crop_scale, rotation=cfg.rotation,
                        jitter=cfg.jitter, auto_augment=cfg.auto_augment, then=mix)
    ema = ModelEmaV3(model, decay=cfg.ema_decay, use_warmup=True) if cfg.ema_decay > 0 else None
    return Trainer(model, optimizer, loss_fn, scheduler=scheduler, device=device, grad_clip=cfg.grad_clip,
                   channels_last=True, amp=cfg.amp, batch_hook=hook, ema=ema, progress=cfg.progress,
                   compile=bool(cfg.compile))


def freeze_early(model, groups: int) -> list[str]:
    """Keep the first ``groups`` layer groups of a pretrained model at their ImageNet values (timm's coarse
    ``group_matcher``: the stem, then one group per stage; batch norm frozen with its statistics).

    The early layers see edges and textures, which ImageNet taught well, at the highest resolution, where a
    backward pass costs most: freezing the stem and two stages of efficientnet-lite0 trains 1.4x faster at
    112 px on a CPU. Returns the frozen module names (none for a model without a group matcher).
    """
    if groups <= 0 or not hasattr(model, "group_matcher"):
        return []
    from timm.models import group_modules
    from timm.utils.model import freeze

    ordered = list(group_modules(model, model.group_matcher(coarse=True)).values())
    names = sorted({name.rsplit(".", 1)[0] if name.count(".") > 1 else name
                    for group in ordered[:groups] for name in group})
    freeze(model, names)
    return names


def head_features(cfg: LeavesConfig, data: LeafData, device, compute=None) -> np.ndarray | None:
    """Every training row's pre-logits from the pretrained backbone (:func:`pre_logits`), the features the
    folds' linear-probe heads fit on (``--head-init probe``, "LP-FT" in docs/leaves.md): computed once per run,
    by ``compute(rows)`` when given (``fold_jobs`` shares the rows among its processes), and kept on ``data``
    for every fold (and a tuner's every trial) of the same backbone and size. Each fold fits on its own rows'
    features: a fold used to run the backbone over its rows itself, so every row was computed K - 1 times.
    None where the head starts at zero (no pretrained weights, ``--head-init zero``, a model without timm's
    ``forward_head``)."""
    if cfg.head_init != "probe" or not (cfg.pretrained or cfg.pretrained_file):
        return None
    if data.head_features is None or data.head_features[0] != head_key(cfg):
        rows = np.arange(len(data.y))
        data.head_features = (head_key(cfg), compute(rows) if compute is not None else
                              pre_logits(cfg, data.train_images, rows, device))
    return data.head_features[1]


def head_key(cfg: LeavesConfig) -> tuple:
    """What :func:`head_features` depend on besides the images: the backbone, its weights and the side."""
    return cfg.model, cfg.img_size, cfg.pretrained, cfg.pretrained_file


def pre_logits(cfg: LeavesConfig, images, rows: np.ndarray, device) -> np.ndarray | None:
    """The pretrained backbone's pre-logits (what its classifier reads) of ``images[rows]`` (uint8) in the plain
    view, gathered a prediction batch at a time (a streamed cache is never loaded whole): the function a fold's
    freshly built model computes, by a copy with every batch norm folded into its convolution (faster; a test
    checks the two agree). Building it draws nothing from the run's random stream. None for a model without
    timm's ``forward_head``."""
    import torch

    from features.augment import View
    from models import create_model, input_stats
    from pipelines.core.fold_batchnorm import fold_batchnorm

    with torch.random.fork_rng(devices=[]):
        model = create_model(cfg.model, 2, pretrained=cfg.pretrained, pretrained_file=cfg.pretrained_file)
    if not hasattr(model, "forward_head"):
        return None
    view, batch = View("identity", *input_stats(model)), eval_batch_size(cfg, device)
    model = model.to(device, memory_format=torch.channels_last).eval()
    rows, feats = torch.as_tensor(np.asarray(rows), dtype=torch.long), []
    with torch.no_grad():
        for i in range(0, len(rows), batch):
            x = view(images[rows[i:i + batch]].to(device))  # channels_last, as the model
            if not i:
                model = fold_batchnorm(model, x[:2])[0].eval()
            feats.append(model.forward_head(model.forward_features(x), pre_logits=True).float().cpu())
    return torch.cat(feats).numpy()


def fold_frozen_norms(model, side: int):
    """``model`` with each frozen layer's batch norm folded into its frozen convolution (the same function;
    training about 1.1x faster for efficientnet-lite0 with three groups frozen, ``pipelines.core.fold_batchnorm``).
    The sample is a fixed ramp, not a random draw: the run's random stream stays as it was."""
    import torch

    from pipelines.core.fold_batchnorm import fold_batchnorm

    sample = torch.linspace(-2, 2, 2 * 3 * side * side).reshape(2, 3, side, side)
    return fold_batchnorm(model, sample, frozen_only=True)[0]


def inner_split(y: np.ndarray, train_idx: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``train_idx`` split into (fit, early-stopping) rows: a stratified 10 % (at least one per class) stops."""
    from sklearn.model_selection import StratifiedShuffleSplit

    n_classes = len(np.unique(y[train_idx]))
    size = max(n_classes, round(0.1 * len(train_idx)))
    try:
        fit, stop = next(StratifiedShuffleSplit(1, test_size=size, random_state=seed).split(train_idx, y[train_idx]))
    except ValueError as err:
        raise PipelineError(f"--patience needs an inner early-stopping split of the training folds ({err}); "
                            "use --patience 0") from None
    return train_idx[np.sort(fit)], train_idx[np.sort(stop)]


def fit_fold(cfg: LeavesConfig, data: LeafData, fold: int, train_idx, valid_idx, run_dir: Path, device,
             on_epoch: Callable[[int, float], None] | None = None, symmetry: tuple | None = None) -> dict:
    """Train one fold (resuming from its last checkpoint) and predict its rows once, in every view of the
    symmetry its training rows kept (the test set waits for the views' choice: :func:`predict_tests`).

    The fold's rows never choose anything: the flips and turns come from the flags or from the probe on
    ``train_idx`` (``views.fold_symmetry``); with ``patience`` 0 the weights after the last epoch score them,
    else early stopping watches an inner split of ``train_idx`` (:func:`inner_split`). The fold's own rows are
    scored once, after training, unless ``on_epoch(epoch, val_acc)`` asks for every epoch (a tuner reports and
    prunes there). Returns ``valid``, the probabilities of the plain view, ``valid_views`` of shape (views, rows,
    classes), the views' names, the symmetry and its record. ``symmetry`` is ``fold_symmetry``'s answer when
    the caller has it already (``fold_jobs``: decided in the parent, where the probe's features are).
    """
    import torch

    from models.pretrained import input_stats
    from pipelines.competitions.leaves.views import fold_symmetry, predict_views, tta_elements
    from pipelines.core.checkpoint import load_checkpoint
    from pipelines.core.distributed import barrier
    from pipelines.core.seed import set_seed

    cfg = auto_batch_size(cfg, device)  # resolved already by a run; a tuner's trial config may leave it out
    fold_seed = fold_seed_of(cfg, fold)
    symmetry, symmetry_record = symmetry or fold_symmetry(cfg, probe_of(cfg, data, device), data.y,
                                                          np.asarray(train_idx), fold_seed)
    set_seed(fold_seed)
    stop_idx = np.array([], dtype=int)
    if cfg.patience > 0:
        train_idx, stop_idx = inner_split(data.y, np.asarray(train_idx), fold_seed)
    steps = _n_batches(len(train_idx), cfg)
    cfg = dataclasses.replace(cfg, epochs=cfg.epochs or auto_epochs(len(train_idx), cfg.batch_size, cfg.steps))
    fold_dir, fit_rows = run_dir / f"fold{fold}", np.asarray(train_idx, dtype=np.int64)
    head_fit = None  # a resumed fold's checkpoint replaces the head: no probe for it (the probe draws nothing)
    if not FoldEpochs.last_checkpoint(fold_dir).exists() and (feats := head_features(cfg, data, device)) is not None:
        head_fit = (feats[fit_rows], data.y[fit_rows])
    trainer = build_trainer(cfg, len(data.classes), steps, device, symmetry=symmetry, head_fit=head_fit)
    loaders = fold_loaders(cfg, data, fold, train_idx, valid_idx, stop_idx, device)
    epochs = FoldEpochs(cfg, fold, data.classes, loaders, fold_dir, on_epoch)
    epochs.resume(trainer)
    trainer.add_callback("on_epoch_end", epochs)
    start = time.perf_counter()
    trainer.fit(loaders.train, cfg.epochs - trainer.epoch)
    train_seconds = time.perf_counter() - start
    barrier()
    chosen = load_checkpoint(epochs.best)
    trainer.eval_model.load_state_dict(chosen["model"])
    elements = tta_elements(symmetry, cfg.tta)
    mean, std = input_stats(trainer.module)
    valid_views = predict_views(trainer, loaders.valid, elements, mean, std)
    return {"valid": valid_views[0], "valid_views": valid_views,
            "history": epochs.history, "train_seconds": train_seconds, "epoch_used": int(chosen["epoch"]),
            "epochs": trainer.epoch, "epochs_planned": cfg.epochs, "annealed_after": epochs.annealed_after,
            "n_fit": len(train_idx), "n_stop": len(stop_idx), "symmetry": symmetry,
            "symmetry_record": symmetry_record, "views": elements,
            "threads": torch.get_num_threads()}  # a fold's arithmetic depends on it (the record keeps it)


def predict_tests(cfg: LeavesConfig, data: LeafData, views: dict[int, list[str]], run_dir: Path, device,
                  rows: slice | None = None) -> dict[int, np.ndarray]:
    """Each fold's probabilities of the test set (or its ``rows``) in its views ``views[fold]`` (views, rows,
    classes), by the weights that scored the fold (its ``best.pt``) in a model built as the fold's was. Called
    once the OOF rows have chosen how many views to average (``views.choose_tta``), so no view the submission
    does not use is predicted.

    The folds' frozen stem and stages hold the same ImageNet weights in every fold: where the backbone splits
    there (:func:`frozen_split`), they run once per batch and view, and each fold's trained layers take it from
    there, the same operations on the same inputs as each fold's whole model (a test checks the bytes). On
    efficientnet-lite0 with four groups frozen they are about half of a forward pass at 112 px, so K folds
    predict the test set in (0.5 + 0.5 K) / K of the passes."""
    import torch

    from features.augment import View
    from models.pretrained import input_stats
    from pipelines.core.checkpoint import load_checkpoint

    cfg = auto_batch_size(cfg, device)
    trainers = {}
    for fold in views:
        trainers[fold] = build_trainer(cfg, len(data.classes), 1, device)
        best = load_checkpoint(FoldEpochs.best_checkpoint(run_dir / f"fold{fold}"))
        trainers[fold].eval_model.load_state_dict(best["model"])
    images = data.test_images if rows is None else data.test_images[rows]
    loader = make_loader(images, None, cfg, train=False, seed=0, device=device)
    first = next(iter(trainers.values()))
    order = list(dict.fromkeys(e for elements in views.values() for e in elements))
    transforms = {e: View(e, *input_stats(first.module)) for e in order}
    models, split, outs = {}, None, {fold: {e: [] for e in views[fold]} for fold in views}
    with torch.no_grad():
        for batch in loader:
            x = first.to_device(batch[0] if isinstance(batch, list | tuple) else batch)
            for e in order:
                v = transforms[e](x)
                if not models:  # each fold's inference copy (every norm folded), and the split if it holds
                    models = {fold: tr.inference_model(tr.eval_model.eval(), v) for fold, tr in trainers.items()}
                    split = frozen_split(models, cfg.freeze, v, first)
                with first.autocast():
                    shared = split[0](v) if split else None
                    for fold in views:
                        if e in outs[fold]:
                            out = split[1][fold](shared) if split else models[fold](v)
                            outs[fold][e].append(out.float().cpu())
    return {fold: torch.stack([torch.cat(outs[fold][e]).softmax(1) for e in views[fold]]).numpy() for fold in views}


def frozen_split(models: dict, freeze: int, sample, trainer) -> tuple | None:
    """``(prefix, {fold: suffix})``: the inference copies ``models`` cut after their first ``freeze`` layer groups
    (the stem and ``freeze - 1`` stages, :func:`freeze_early`) where they are timm's EfficientNet (``conv_stem``,
    ``bn1``, ``blocks``, then ``conv_head``, ``bn2`` and the head, as its ``forward_features`` runs them), every
    fold's prefix holds the same weights, and prefix then suffix gives the whole model's output on ``sample``
    exactly; None otherwise (each fold then runs its whole model)."""
    import torch
    from timm.models.efficientnet import EfficientNet

    first = next(iter(models.values()))
    if freeze < 2 or not all(isinstance(m, EfficientNet) for m in models.values()):
        return None
    k = min(freeze - 1, len(first.blocks))

    def prefix_of(m):
        return torch.nn.Sequential(m.conv_stem, m.bn1, *m.blocks[:k])

    def suffix_of(m):
        rest = m.blocks[k:]
        return lambda h: m.forward_head(m.bn2(m.conv_head(rest(h))))

    prefix = prefix_of(first)
    weights = list(prefix.state_dict().values())
    for m in models.values():
        if any(not torch.equal(a, b) for a, b in zip(weights, prefix_of(m).state_dict().values(), strict=True)):
            return None
    suffixes = {fold: suffix_of(m) for fold, m in models.items()}
    with trainer.autocast():
        if not torch.equal(suffixes[next(iter(models))](prefix(sample)), first(sample)):
            return None
    return prefix, suffixes


def fold_seed_of(cfg: LeavesConfig, fold: int) -> int:
    """Fold ``fold``'s seed: its own, so ``--fold k`` alone (or in its own process) reproduces fold k of a run."""
    from pipelines.core.seed import seed32

    return seed32(cfg.seed * 1000 + fold)


def probe_of(cfg: LeavesConfig, data: LeafData, device, compute=None):
    """The symmetry probe's features (computed once per run, on a sample of all training rows, by
    ``compute(rows)`` when given); None when the flags decide every symmetry."""
    from pipelines.competitions.leaves.views import flag_overrides, probe_features

    if None not in flag_overrides(cfg):
        return None
    if data.probe is None:
        data.probe = probe_features(data.train_images, data.y, cfg.seed, device, compute=compute)
    return data.probe


class FoldLoaders(NamedTuple):
    train: object  # shuffled full uint8 batches; augmented on the device (features.augment.BatchAugment)
    valid: object  # the fold's rows: scored once after training (every epoch only for a tuner)
    stop: object | None  # the inner split early stopping watches (``patience`` > 0)


def fold_loaders(cfg: LeavesConfig, data: LeafData, fold: int, train_idx, valid_idx, stop_idx,
                 device) -> FoldLoaders:
    """The fold's batches of the uint8 cache (normalisation happens on the device, in the views)."""
    import torch

    def rows(idx):
        return data.train_images[torch.as_tensor(np.asarray(idx, dtype=np.int64))], data.y[idx]

    train = make_loader(*rows(train_idx), cfg, train=True, seed=fold_seed_of(cfg, fold), device=device)
    stop = make_loader(*rows(stop_idx), cfg, train=False, seed=0, device=device) if len(stop_idx) else None
    return FoldLoaders(train, make_loader(*rows(valid_idx), cfg, train=False, seed=0, device=device), stop)


class FoldEpochs:
    """A fold's ``on_epoch_end``: early-stop on the inner split, end the schedule early once the fold has fit
    its rows (:meth:`anneal`), log, and checkpoint: ``best.pt`` holds the weights that will score the fold,
    ``last.pt`` everything a killed run needs to continue exactly. The fold's own rows are scored here only
    for a tuner's ``on_epoch`` (never used to choose)."""

    def __init__(self, cfg: LeavesConfig, fold: int, classes: list[str], loaders: FoldLoaders, fold_dir: Path,
                 on_epoch: Callable[[int, float], None] | None):
        from pipelines.core.callbacks import EarlyStopping

        self.cfg, self.fold, self.classes, self.loaders, self.on_epoch = cfg, fold, classes, loaders, on_epoch
        self.end_epoch, self.annealed_after = cfg.epochs, None  # anneal() may bring the end forward
        self.view = None  # the plain view, normalised with the model's mean/std (set at the first epoch)
        self.last, self.best = self.last_checkpoint(fold_dir), self.best_checkpoint(fold_dir)
        self.stopper, self.history = EarlyStopping(cfg.patience, mode="max"), []

    @staticmethod
    def last_checkpoint(fold_dir: Path) -> Path:
        return fold_dir / "last.pt"

    @staticmethod
    def best_checkpoint(fold_dir: Path) -> Path:
        return fold_dir / "best.pt"

    def resume(self, trainer) -> None:
        """Continue from ``last.pt`` if a killed run left one."""
        from pipelines.core.checkpoint import load_checkpoint

        if not self.last.exists():
            return
        state = load_checkpoint(self.last)
        try:
            trainer.load_state_dict(state["trainer"])
        except RuntimeError as err:  # e.g. a run saved before frozen norms were folded into their convolutions
            first = str(err).strip().splitlines()[0]
            raise PipelineError(f"fold {self.fold}: {self.last} does not fit the model this code builds ({first}); "
                                "it was saved by another version: start a new run") from None
        self.stopper.load_state_dict(state["early_stopping"])
        self.history = state["history"]
        self.end_epoch, self.annealed_after = state.get("end_epoch", self.cfg.epochs), state.get("annealed_after")
        trainer.should_stop = state["finished"]
        say(f"fold {self.fold}: resumed after epoch {trainer.epoch}")

    def __call__(self, tr, stats: dict) -> None:
        from pipelines.core.checkpoint import save_checkpoint
        from pipelines.core.distributed import barrier, broadcast_value, is_main_process

        if not np.isfinite(stats["loss"]):
            raise PipelineError(f"fold {self.fold} diverged at epoch {tr.epoch} (loss is NaN); lower --lr")
        if self.view is None:
            from features.augment import View
            from models.pretrained import input_stats

            self.view = View("identity", *input_stats(tr.module))
        metrics = {}
        if self.on_epoch is not None:  # a tuner's running CV: reported, never used to choose
            metrics = tr.evaluate(self.loaders.valid, self.view)
        chosen = True  # patience 0: the latest weights are the ones that score the fold
        if self.loaders.stop is not None:
            metrics["stop_acc"] = tr.evaluate(self.loaders.stop, self.view)["val_acc"]
            chosen = self.stopper.step(broadcast_value(metrics["stop_acc"]))
            tr.should_stop = self.stopper.should_stop
        self.history.append({**stats, **metrics, "lr": tr.optimizer.param_groups[0]["lr"]})
        extra = "".join(f" {k} {metrics[k]:.4f}" for k in ("val_acc", "stop_acc") if k in metrics)
        say(f"fold {self.fold} epoch {tr.epoch}/{self.end_epoch}: loss {stats['loss']:.3f} "
            f"acc {stats.get('acc', 0):.3f}{extra} ({stats['samples_per_s']:.0f} img/s)")
        self.anneal(tr, stats)
        finished = tr.should_stop or tr.epoch >= self.end_epoch
        tr.should_stop = finished
        if is_main_process():
            # without early stopping the fold is scored by its last weights: best.pt is written once, at the end
            if chosen and (finished or self.loaders.stop is not None):
                save_checkpoint(self.best, {"model": tr.eval_model.state_dict(), "epoch": tr.epoch,
                                            "classes": self.classes})
            save_checkpoint(self.last, {"trainer": tr.state_dict(), "early_stopping": self.stopper.state_dict(),
                                        "history": self.history, "finished": finished, "end_epoch": self.end_epoch,
                                        "annealed_after": self.annealed_after})
        barrier()
        if self.on_epoch is not None:
            self.on_epoch(tr.epoch, metrics["val_acc"])

    def anneal(self, tr, stats: dict) -> None:
        """Once an epoch's training accuracy (the augmented batches, as trained; the fold's rows are never
        looked at) reaches ``--anneal-at`` (0: off), after at least :data:`config.ANNEAL_MIN_SHARE` of ``--steps``
        optimizer steps, the fold has fit its rows: the LR leaves the planned cosine and decays to its floor over
        the next :func:`config.anneal_epochs` epochs, where the fold ends. A fold that fits early stops spending
        passes; one that never does, or a small set's fold whose few steps an epoch fit it at once (180 wide
        images, 3 steps an epoch: CV 0.861 annealed at epochs 3-5, 1.000 trained its 13), trains its plan."""
        from pipelines.core.distributed import broadcast_value

        if not self.cfg.anneal_at or self.annealed_after is not None or "acc" not in stats:
            return
        if tr.step < ANNEAL_MIN_SHARE * self.cfg.steps:  # a small set fits its rows long before it has learnt them
            return
        if broadcast_value(stats["acc"]) < self.cfg.anneal_at:
            return
        end = tr.epoch + anneal_epochs(tr.epoch)
        if end >= self.end_epoch:
            return
        tr.scheduler.end_early(tr.step, tr.step + (end - tr.epoch) * (tr.step // tr.epoch))
        self.end_epoch, self.annealed_after = end, tr.epoch
        say(f"fold {self.fold}: training accuracy {stats['acc']:.3f} >= {self.cfg.anneal_at:g} after epoch {tr.epoch}: "
            f"the LR decays over {end - tr.epoch} more, the fold ends at epoch {end} of {self.cfg.epochs}")


def _n_batches(n: int, cfg: LeavesConfig) -> int:
    """Optimizer steps per epoch, as :func:`make_loader` batches the training set (for the LR schedule)."""
    from pipelines.core.distributed import world

    per_rank = n // world()[1]
    return max(1, per_rank // min(cfg.batch_size, per_rank))
