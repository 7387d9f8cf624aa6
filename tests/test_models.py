"""bnlab.models.resnet20 against an independently written PyTorch ResNet-20 (He et al. 2016,
section 4.2) with copied weights: parameter count and forward, in train and eval mode."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from bnlab.layers import Layer
from bnlab.models import resnet20


def _norm(kind: str, c: int) -> nn.Module:
    return {"bn": nn.BatchNorm2d(c), "gn": nn.GroupNorm(min(32, c), c), "ln": nn.GroupNorm(1, c)}[
        kind
    ]


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, norm: str, option: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.n1 = _norm(norm, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.n2 = _norm(norm, cout)
        self.pad = 0
        self.stride = stride
        self.proj: nn.Module | None = None
        if stride != 1 or cin != cout:
            if option == "B":
                self.proj = nn.Sequential(
                    nn.Conv2d(cin, cout, 1, stride, bias=False), _norm(norm, cout)
                )
            else:
                self.pad = cout - cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.n2(self.conv2(torch.relu(self.n1(self.conv1(x)))))
        if self.proj is not None:
            short = self.proj(x)
        elif self.pad or self.stride != 1:
            short = nn.functional.pad(
                x[:, :, :: self.stride, :: self.stride], (0, 0, 0, 0, 0, self.pad)
            )
        else:
            short = x
        return torch.relu(out + short)


def torch_resnet20(norm: str, option: str) -> nn.Module:
    layers: list[nn.Module] = [nn.Conv2d(3, 16, 3, 1, 1, bias=False), _norm(norm, 16), nn.ReLU()]
    cin = 16
    for cout, stride in ((16, 1), (32, 2), (64, 2)):
        for i in range(3):
            layers.append(Block(cin, cout, stride if i == 0 else 1, norm, option))
            cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10)]
    return nn.Sequential(*layers).double()


def copy_weights(ours: Layer, twin: nn.Module) -> None:
    """Leaves with parameters, in forward order on both sides (Conv, norm, Linear)."""
    mine = [m for m in ours.modules() if not m.sublayers() and (m.params or m.buffers)]
    kinds = (nn.Conv2d, nn.BatchNorm2d, nn.GroupNorm, nn.Linear)
    theirs = [m for m in twin.modules() if isinstance(m, kinds)]
    assert len(mine) == len(theirs)
    with torch.no_grad():
        for a, b in zip(mine, theirs, strict=True):
            if isinstance(b, nn.Conv2d):
                b.weight.copy_(torch.tensor(np.transpose(a.params["W"], (3, 2, 0, 1))))
            elif isinstance(b, nn.Linear):
                b.weight.copy_(torch.tensor(a.params["W"].T))
                b.bias.copy_(torch.tensor(a.params["b"]))
            else:
                b.weight.copy_(torch.tensor(a.params["gamma"]))
                b.bias.copy_(torch.tensor(a.params["beta"]))
                if isinstance(b, nn.BatchNorm2d):
                    b.running_mean.copy_(torch.tensor(a.buffers["running_mean"]))
                    b.running_var.copy_(torch.tensor(a.buffers["running_var"]))


@pytest.mark.parametrize("option, expected", [("A", 269_722), ("B", 272_474)])
def test_parameter_count_is_the_papers_027m(option, expected):
    twin = torch_resnet20("bn", option)
    assert sum(p.numel() for p in twin.parameters()) == expected
    assert resnet20(shortcut=option).num_params() == expected
    assert resnet20(norm="gn", shortcut=option).num_params() == expected  # same affine sizes


@pytest.mark.parametrize("norm, option", [("bn", "A"), ("gn", "B"), ("ln", "A")])
def test_forward_equals_a_torch_twin_with_copied_weights(norm, option):
    rng = np.random.default_rng(3)
    ours = resnet20(norm=norm, shortcut=option, seed=1).astype(np.float64)
    for key, v in ours.params.items():
        if key.endswith(("gamma", "beta")):
            v[...] = rng.normal(1.0 if key.endswith("gamma") else 0.0, 0.3, v.shape)
    for key, v in ours.buffers.items():
        if key.endswith(("running_mean", "running_var")):
            v[...] = rng.uniform(0.5, 1.5, v.shape)
    twin = torch_resnet20(norm, option)
    copy_weights(ours, twin)
    x = rng.normal(size=(2, 32, 32, 3))
    for mode in ("eval", "train"):
        getattr(ours, mode)()
        getattr(twin, mode)()
        want = twin(torch.tensor(x.transpose(0, 3, 1, 2).copy())).detach().numpy()
        np.testing.assert_allclose(ours.forward(x), want, rtol=1e-9, atol=1e-10)


def test_zero_init_residual_and_bad_arguments():
    model = resnet20(zero_init_residual=True)
    lasts = [k for k in model.params if k.endswith("0.4.gamma")]
    assert len(lasts) == 9 and all(not model.params[k].any() for k in lasts)
    with pytest.raises(ValueError, match="norm must be one of"):
        resnet20(norm="in")
    with pytest.raises(ValueError, match="shortcut must be 'A' or 'B'"):
        resnet20(shortcut="C")
