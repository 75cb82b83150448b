"""Models by name: the d2l classic CNNs and RNNs, the tabular networks, and timm's backbones.

``create_model(name, num_classes=..., in_chans=..., pretrained=False)`` and ``list_models(pattern)`` are
the only way in (timm's idiom); ``create_backbone`` is the same with ``pretrained=True`` by default.
Registration happens when a family module is imported, so every family module is imported here; a module
left out would silently drop its models (a test checks they are all listed).
"""

from models import cnn, rnn, tabular  # noqa: F401  (registers the families)
from models._registry import create_model, get_model_cfg, list_models, register_model
from models.pretrained import create_backbone, input_stats, weights_record

__all__ = ["create_backbone", "create_model", "get_model_cfg", "input_stats", "list_models", "register_model",
           "weights_record"]
