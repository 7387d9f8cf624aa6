"""Floor 3: inference and deployment.

Population statistics (Algorithm 2), folding BN into the layer before it, ONNX export,
PyTorch/Keras interop, checkpoints. onnx and torch are imported only where used.
"""

from bnlab.deploy.checkpoint import (
    Checkpoint,
    CheckpointError,
    load,
    load_checkpoint,
    save,
    save_checkpoint,
)
from bnlab.deploy.fold import fold_batch_norm
from bnlab.deploy.onnx_export import export_onnx
from bnlab.deploy.population import (
    PopulationStatsSummary,
    recompute_population_stats,
    shuffled_batches,
)
from bnlab.deploy.torch_interop import from_torch, load_keras_batch_norm, to_torch

__all__ = ["recompute_population_stats", "PopulationStatsSummary", "shuffled_batches"]
__all__ += ["fold_batch_norm"]
__all__ += ["export_onnx", "to_torch", "from_torch", "load_keras_batch_norm"]
__all__ += ["save_checkpoint", "load_checkpoint", "Checkpoint", "CheckpointError"]
__all__ += ["save", "load"]
