"""Models by name: the d2l classic CNNs and RNNs, the tabular networks, and timm's backbones.

``create_model(name, num_classes=..., in_chans=..., pretrained=False)`` and ``list_models(pattern)`` are
the only way in (timm's idiom): ``pretrained=True`` or ``pretrained_file=`` starts from weights,
``zero_head=True`` starts the new classifier at zero. Inside, each module imports only those below it:
``_factory`` (``create_model``) > ``pretrained`` (weights) > ``_registry`` (the table), ``_head``.
Registration happens when a family module is imported, so every family module is imported here; a module
left out would silently drop its models (a test checks they are all listed).
"""

from models import cnn, rnn, tabular  # noqa: F401  (registers the families)
from models._factory import create_model
from models._head import fit_head, get_classifier, zero_head
from models._registry import get_model_cfg, list_models, register_model
from models.pretrained import input_stats, weights_record

__all__ = ["create_model", "fit_head", "get_classifier", "get_model_cfg", "input_stats", "list_models",
           "register_model", "weights_record", "zero_head"]
