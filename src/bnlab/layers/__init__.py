"""Floor 2: stateful layers (parameters, gradients, running statistics, train/eval mode)."""

from bnlab.layers.activations import ReLU, Sigmoid, Softmax, Tanh
from bnlab.layers.affine import ChannelAffine
from bnlab.layers.base import LAYER_REGISTRY, Layer, layer_from_config
from bnlab.layers.batchnorm import BatchNorm
from bnlab.layers.batchrenorm import BatchRenorm
from bnlab.layers.conv2d import Conv2D
from bnlab.layers.dense import Dense
from bnlab.layers.dropout import Dropout
from bnlab.layers.flatten import Flatten
from bnlab.layers.groupnorm import GroupNorm, LayerNorm
from bnlab.layers.pooling import AvgPool2D, GlobalAveragePool2D, MaxPool2D
from bnlab.layers.residual import Residual, ZeroPadShortcut
from bnlab.layers.sequential import Sequential
from bnlab.layers.sync_batchnorm import SyncBatchNorm, SyncBatchRenorm, convert_sync_batchnorm

__all__ = ["LAYER_REGISTRY", "Layer", "layer_from_config"]
__all__ += ["BatchNorm", "BatchRenorm"]
__all__ += ["SyncBatchNorm", "SyncBatchRenorm", "convert_sync_batchnorm"]
__all__ += ["Dense", "Conv2D", "MaxPool2D", "GlobalAveragePool2D", "Flatten", "Dropout"]
__all__ += ["ReLU", "Sigmoid", "Tanh", "Softmax", "Sequential"]
__all__ += ["ChannelAffine"]
__all__ += ["GroupNorm", "LayerNorm", "Residual", "ZeroPadShortcut"]
__all__ += ["AvgPool2D"]
