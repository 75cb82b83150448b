"""One registry for every model: ``@register_model`` fills it, ``create_model`` is the only way in.

timm's idiom (``timm/models/_registry.py``, ``_factory.py``): a ``name -> factory`` dict filled by a
decorator at import time, plus a small per-variant config (book input size, smallest input the
architecture accepts) beside the factory. Names we do not register fall through to timm, so the
classic baselines and the pretrained backbones are chosen the same way, by name.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable, Iterable
from typing import Any

from torch import nn

from pipelines.core.errors import PipelineError

_factories: dict[str, Callable[..., nn.Module]] = {}
_cfgs: dict[str, dict[str, Any]] = {}


def register_model(fn: Callable[..., nn.Module] | None = None, **cfg: Any):
    """Register ``fn`` under its own name; usable bare (``@register_model``) or with a config.

    ``cfg`` keys used here: ``input_size`` (C, H, W) the book trains at, ``min_input_size`` (C, H, W)
    the smallest image the architecture accepts (stride and pooling leave nothing below it).
    The family (``cnn``, ``rnn``, ``tabular``) is the defining module's last name.
    """

    def wrap(f: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = f.__name__
        if name in _factories:  # a silent override would hide one of two models
            raise ValueError(f"model {name!r} is registered twice")
        _factories[name] = f
        _cfgs[name] = {"architecture": name, "module": f.__module__.rsplit(".", 1)[-1], **cfg}
        return f

    return wrap(fn) if fn is not None else wrap


def list_models(pattern: str | None = None, module: str | Iterable[str] | None = None) -> list[str]:
    """Sorted names of our registered models, optionally filtered by an fnmatch ``pattern``
    and by family ``module`` (e.g. ``"cnn"`` or ``("cnn", "rnn")``). timm's own names are not listed."""
    modules = {module} if isinstance(module, str) else set(module or ())
    names = sorted(_factories)
    if pattern:
        names = fnmatch.filter(names, pattern)
    if modules:
        names = [n for n in names if _cfgs[n]["module"] in modules]
    return names


def get_model_cfg(name: str) -> dict[str, Any]:
    """The registered config of ``name`` (a copy); empty for timm pass-through names."""
    return dict(_cfgs.get(name, {}))


def create_model(
    name: str,
    num_classes: int | None = None,
    in_chans: int | None = None,
    *,
    pretrained: bool = False,
    pretrained_file: str | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build ``name``: fresh weights by default (timm's ``create_model(pretrained=False)`` rule).

    ``None`` arguments are dropped so that unset CLI flags keep the model's own defaults (image
    models default to ``in_chans=3``). Our registry wins over timm on a shared name (``vgg11`` is
    the d2l VGG-11); any other name timm knows is built by ``timm.create_model``. Anything else is a
    one-line :class:`PipelineError` listing close matches. ``pretrained=True`` or a ``pretrained_file``
    loads starting weights through :mod:`models.pretrained` (packaged, timm's hub, or the file), or
    stops with one line; it never falls back to random weights.
    """
    kwargs = dict(kwargs, num_classes=num_classes, in_chans=in_chans)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if pretrained or pretrained_file is not None:
        from models.pretrained import create_pretrained

        return create_pretrained(name, pretrained_file=pretrained_file, **kwargs)
    return create_fresh(name, **kwargs)


def create_fresh(name: str, **kwargs: Any) -> nn.Module:
    """``name`` with freshly initialised weights (``kwargs`` already stripped of ``None``)."""
    if name in _factories:
        model = _factories[name](**kwargs)
        model.pretrained_cfg = _model_cfg(name, kwargs.get("in_chans", 3))
        return model
    import timm  # imported here: listing or building our own models never pays for it

    if timm.is_model(name):
        return timm.create_model(name, pretrained=False, **kwargs)
    close = difflib.get_close_matches(name, [*_factories, *timm.list_models()], n=5, cutoff=0.6)
    hint = f"close matches: {', '.join(close)}" if close else "see models.list_models() or timm.list_models()"
    raise PipelineError(f"unknown model {name!r}; {hint}")


def _model_cfg(name: str, in_chans: int) -> dict[str, Any]:
    """The config a built model carries (timm's ``model.pretrained_cfg``), channels set to the model's."""
    cfg = get_model_cfg(name)
    for key in ("input_size", "min_input_size"):
        if key in cfg:
            cfg[key] = (in_chans, *cfg[key][1:])
    return cfg
