"""The torch modules bnlab adds (``Permute``, ``ChannelAffine``, ``Residual``,
``ZeroPadShortcut``), shared by torch_interop (bnlab ->
torch) and torch_from (torch -> bnlab); torch is imported on first use."""

from __future__ import annotations

import functools
import types
from typing import Any

__all__ = ["torch_modules"]


@functools.lru_cache(maxsize=1)
def torch_modules() -> Any:
    """The torch modules bnlab adds (``Permute``, ``ChannelAffine``), built on first use."""
    import torch
    from torch import nn

    class Permute(nn.Module):
        """``x.permute(*dims)``: the NHWC <-> NCHW switch."""

        def __init__(self, *dims: int) -> None:
            super().__init__()
            self.dims = tuple(int(d) for d in dims)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.permute(*self.dims)

        def extra_repr(self) -> str:
            return ", ".join(map(str, self.dims))

    class ChannelAffine(nn.Module):
        """``y = x * scale + shift`` along ``dim`` (bnlab's ChannelAffine)."""

        def __init__(self, num_features: int, dim: int = -1) -> None:
            super().__init__()
            self.dim = int(dim)
            self.scale = nn.Parameter(torch.ones(num_features))
            self.shift = nn.Parameter(torch.zeros(num_features))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            shape = [1] * x.dim()
            shape[self.dim] = -1
            return x * self.scale.reshape(shape) + self.shift.reshape(shape)

    class Residual(nn.Module):
        """``branch(x) + shortcut(x)`` (bnlab's Residual; ``shortcut=None``: the identity)."""

        def __init__(self, branch: nn.Module, shortcut: nn.Module | None = None) -> None:
            super().__init__()
            self.branch = branch
            self.shortcut = shortcut

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.branch(x) + (x if self.shortcut is None else self.shortcut(x))

    class ZeroPadShortcut(nn.Module):
        """He et al.'s option A on NCHW: ``x[:, :, ::s, ::s]``, zero channels appended."""

        def __init__(self, out_channels: int, stride: int) -> None:
            super().__init__()
            self.out_channels, self.stride = int(out_channels), int(stride)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = x[:, :, :: self.stride, :: self.stride]
            return nn.functional.pad(y, (0, 0, 0, 0, 0, self.out_channels - x.shape[1]))

    return types.SimpleNamespace(
        Permute=Permute,
        ChannelAffine=ChannelAffine,
        Residual=Residual,
        ZeroPadShortcut=ZeroPadShortcut,
    )
