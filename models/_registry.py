"""The table of our models: ``@register_model`` fills it, ``list_models`` and ``get_model_cfg`` read it.

timm's idiom (``timm/models/_registry.py``): a ``name -> entrypoint`` dict filled by a decorator at import
time, plus a small per-variant config (book input size, smallest input the architecture accepts) beside
it. Only a table: building a model is :mod:`models._factory`'s ``create_model``; names we do not register
fall through to timm there, so the classic baselines and the pretrained backbones are chosen the same way.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable, Iterable
from typing import Any

from torch import nn

from pipelines.core.errors import PipelineError

_entrypoints: dict[str, Callable[..., nn.Module]] = {}
_cfgs: dict[str, dict[str, Any]] = {}


def register_model(fn: Callable[..., nn.Module] | None = None, **cfg: Any):
    """Register ``fn`` under its own name; usable bare (``@register_model``) or with a config.

    ``cfg`` keys used here: ``input_size`` (C, H, W) the book trains at, ``min_input_size`` (C, H, W)
    the smallest image the architecture accepts (stride and pooling leave nothing below it).
    The family (``cnn``, ``rnn``, ``tabular``) is the defining module's last name.
    """

    def wrap(f: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = f.__name__
        if name in _entrypoints:  # a silent override would hide one of two models
            raise ValueError(f"model {name!r} is registered twice")
        _entrypoints[name] = f
        _cfgs[name] = {"architecture": name, "module": f.__module__.rsplit(".", 1)[-1], **cfg}
        return f

    return wrap(fn) if fn is not None else wrap


def list_models(pattern: str | None = None, module: str | Iterable[str] | None = None) -> list[str]:
    """Sorted names of our registered models, optionally filtered by an fnmatch ``pattern``
    and by family ``module`` (e.g. ``"cnn"`` or ``("cnn", "rnn")``). timm's own names are not listed."""
    modules = {module} if isinstance(module, str) else set(module or ())
    names = sorted(_entrypoints)
    if pattern:
        names = fnmatch.filter(names, pattern)
    if modules:
        names = [n for n in names if _cfgs[n]["module"] in modules]
    return names


def is_model(name: str) -> bool:
    """Whether ``name`` is one of ours (timm's names are not)."""
    return name in _entrypoints


def model_entrypoint(name: str) -> Callable[..., nn.Module]:
    """The registered function that builds ``name`` (``KeyError`` for a name that is not ours)."""
    return _entrypoints[name]


def get_model_cfg(name: str) -> dict[str, Any]:
    """The registered config of ``name`` (a copy); empty for timm pass-through names."""
    return dict(_cfgs.get(name, {}))


def check_model_name(name: str) -> None:
    """Nothing when ``name`` is ours or timm's; else a one-line :class:`PipelineError` listing close matches."""
    if name in _entrypoints:
        return
    import timm  # imported here: listing or building our own models never pays for it

    if timm.is_model(name):
        return
    close = difflib.get_close_matches(name, [*_entrypoints, *timm.list_models()], n=5, cutoff=0.6)
    hint = f"close matches: {', '.join(close)}" if close else "see models.list_models() or timm.list_models()"
    raise PipelineError(f"unknown model {name!r}; {hint}")
