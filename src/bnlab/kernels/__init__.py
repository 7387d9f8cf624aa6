"""Floor 1: pure array functions, no state.

The batch-norm and batch-renorm kernels exported here are the path every normalization layer
takes (:mod:`bnlab.kernels.batchnorm`, :mod:`bnlab.kernels.batchrenorm`); the plain NumPy
references with the same signatures, their readable specification, are
:mod:`bnlab.kernels.batchnorm_ref` and :mod:`bnlab.kernels.batchrenorm_ref`.
"""

from bnlab.kernels._numba import kernel_threads
from bnlab.kernels.activations import (
    relu,
    relu_backward,
    sigmoid,
    sigmoid_backward,
    softmax,
    softmax_backward,
    tanh,
    tanh_backward,
)
from bnlab.kernels.batchnorm import (
    BatchNormCache,
    batch_norm_backward,
    batch_norm_forward,
    batch_norm_inference,
    batch_norm_inference_backward,
)
from bnlab.kernels.batchrenorm import (
    batch_renorm_backward,
    batch_renorm_forward,
    batch_renorm_inference,
)
from bnlab.kernels.im2col import col2im, im2col, same_padding
from bnlab.kernels.moments import merge_moment_stack, merge_moments, moments
from bnlab.kernels.pooling import max_pool_backward, max_pool_forward
from bnlab.kernels.winograd import winograd_conv3x3, winograd_conv3x3_backward

__all__ = ["BatchNormCache", "batch_norm_forward", "batch_norm_backward", "batch_norm_inference"]
__all__ += ["batch_norm_inference_backward", "moments", "merge_moments", "merge_moment_stack"]
__all__ += ["batch_renorm_forward", "batch_renorm_backward", "batch_renorm_inference"]
__all__ += ["im2col", "col2im", "same_padding", "max_pool_forward", "max_pool_backward"]
__all__ += ["sigmoid", "sigmoid_backward", "relu", "relu_backward", "tanh", "tanh_backward"]
__all__ += ["softmax", "softmax_backward", "kernel_threads"]
__all__ += ["winograd_conv3x3", "winograd_conv3x3_backward"]
