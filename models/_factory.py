"""``create_model``: the one way to build a model, fresh or with its starting weights (timm's ``_factory.py``).

The layers inside ``models/``, each importing only those below it (``tests/test_import_layers.py`` checks):
``_factory`` (build) > ``pretrained`` (find and read weights) > ``_registry`` (the table), ``_head``,
``_same_padding`` > ``_depthwise``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from models._depthwise import fast_depthwise_gradients
from models._head import zero_head as _zero_head
from models._registry import check_model_name, get_model_cfg, is_model, model_entrypoint
from models._same_padding import pad_inside_convolutions
from models.pretrained import load_pretrained, resolve_weights


def create_model(
    name: str,
    num_classes: int | None = None,
    in_chans: int | None = None,
    *,
    pretrained: bool = False,
    pretrained_file: str | Path | None = None,
    zero_head: bool = False,
    **kwargs: Any,
) -> nn.Module:
    """Build ``name``: fresh weights by default (timm's ``create_model(pretrained=False)`` rule).

    ``None`` arguments are dropped so that unset CLI flags keep the model's own defaults (image
    models default to ``in_chans=3``). Our registry wins over timm on a shared name (``vgg11`` is
    the d2l VGG-11); any other name timm knows is built by ``timm.create_model``. Anything else is a
    one-line :class:`PipelineError` listing close matches.

    ``pretrained=True`` or a ``pretrained_file`` starts from the weights :func:`models.pretrained.resolve_weights`
    finds (the file, a packaged copy, or timm's hub), or stops with one line; it never falls back to random
    weights. The classifier is re-initialised for ``num_classes``; the model's ``pretrained_cfg`` carries
    the mean/std its inputs must be normalised with (:func:`models.input_stats`). ``zero_head`` then starts
    the classifier at zero (fine-tuning: every class equally likely at the first step). timm's TensorFlow-padded
    convolutions pad inside the convolution instead of copying their input (``models._same_padding``), and a
    depthwise filter's weight gradient on a small map is computed as a forward convolution on a CPU
    (``models._depthwise``): the same functions, 1.3x faster inference and training at 96 px.
    """
    kwargs = dict(kwargs, num_classes=num_classes, in_chans=in_chans)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if pretrained or pretrained_file is not None:
        model = _create_pretrained(name, pretrained_file, **kwargs)
    else:
        model = _create_fresh(name, **kwargs)
    pad_inside_convolutions(model)  # TensorFlow's "SAME" padding without a copy of each input: same outputs
    fast_depthwise_gradients(model)  # a depthwise filter's gradient on small CPU maps: same values, faster
    if zero_head:
        _zero_head(model)
    return model


def _create_fresh(name: str, **kwargs: Any) -> nn.Module:
    """``name`` with freshly initialised weights (``kwargs`` already stripped of ``None``)."""
    if is_model(name):
        model = model_entrypoint(name)(**kwargs)
        model.pretrained_cfg = _model_cfg(name, kwargs.get("in_chans", 3))
        return model
    check_model_name(name)  # unknown to timm too: one line with close matches
    import timm  # imported here: listing or building our own models never pays for it

    return timm.create_model(name, pretrained=False, **kwargs)


def _create_pretrained(name: str, pretrained_file: str | Path | None, **kwargs: Any) -> nn.Module:
    """A fresh model plus the weights :func:`resolve_weights` finds; timm loads its own hub/URL weights
    (its checkpoint filters, head reset and ``in_chans`` adaptation apply)."""
    origin = resolve_weights(name, pretrained=True, pretrained_file=pretrained_file)
    if origin.kind in ("hub", "url"):
        import timm

        return timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": str(origin.path)}, **kwargs)
    model = _create_fresh(name, **kwargs)
    load_pretrained(model, name, origin)
    return model


def _model_cfg(name: str, in_chans: int) -> dict[str, Any]:
    """The config a built model carries (timm's ``model.pretrained_cfg``), channels set to the model's."""
    cfg = get_model_cfg(name)
    for key in ("input_size", "min_input_size"):
        if key in cfg:
            cfg[key] = (in_chans, *cfg[key][1:])
    return cfg
