"""Floor 2: stateful layers (parameters, gradients, running statistics, train/eval mode)."""

from bnlab.layers.base import LAYER_REGISTRY, Layer, layer_from_config

__all__ = ["LAYER_REGISTRY", "Layer", "layer_from_config"]
