"""cifar10-keras: the two nets against PyTorch at their exact shapes (logits, loss, every
gradient, BN's running statistics)."""

from __future__ import annotations

import numpy as np
import pytest

from bnlab.experiments.cifar10_keras import nets as ck
from bnlab.experiments.cifar10_keras.config import Cifar10KerasConfig


def _torch_net(model: object, bn: bool) -> object:
    """The same net in PyTorch (NCHW inside, NHWC flatten order), weights copied."""
    import torch
    from torch import nn

    class NHWC(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.permute(0, 2, 3, 1)

    mods: list[nn.Module] = []
    for layer in model.layers:  # type: ignore[attr-defined]
        kind = type(layer).__name__
        p = {k: torch.tensor(v, dtype=torch.float64) for k, v in layer.params.items()}
        if kind == "Conv2D":
            kh, _, cin, cout = layer.params["W"].shape
            pad = 1 if layer.get_config()["padding"] == "same" else 0
            conv = nn.Conv2d(cin, cout, kh, padding=pad, bias="b" in p).double()
            conv.weight.data = p["W"].permute(3, 2, 0, 1).contiguous()
            if "b" in p:
                conv.bias.data = p["b"]
            mods.append(conv)
        elif kind == "Dense":
            din, dout = layer.params["W"].shape
            lin = nn.Linear(din, dout, bias="b" in p).double()
            lin.weight.data = p["W"].T.contiguous()
            if "b" in p:
                lin.bias.data = p["b"]
            mods.append(lin)
        elif kind == "BatchNorm":
            n = layer.params["gamma"].shape[0]
            cls = (
                nn.BatchNorm1d if len(mods) and isinstance(mods[-1], nn.Linear) else nn.BatchNorm2d
            )
            mods.append(cls(n, eps=1e-3, momentum=0.01).double())
        elif kind == "ReLU":
            mods.append(nn.ReLU())
        elif kind == "MaxPool2D":
            mods.append(nn.MaxPool2d(2))
        elif kind == "Dropout":
            mods.append(nn.Identity())
        elif kind == "Flatten":
            mods += [NHWC(), nn.Flatten()]
        else:
            raise AssertionError(f"no PyTorch twin for {kind}")
    return nn.Sequential(*mods)


@pytest.mark.parametrize("kind", ["baseline", "bn"])
def test_nets_match_pytorch(kind: str) -> None:
    import torch

    from bnlab.losses import SoftmaxCrossEntropy

    cfg = Cifar10KerasConfig.from_dict()
    model = ck.build_model(kind, cfg).astype(np.float64)
    # Keras' model.summary() of cifar10_cnn: 1,250,858; BN drops 704 biases, adds 1,408
    assert model.num_params() == (1_250_858 if kind == "baseline" else 1_251_562)
    tnet = _torch_net(model, kind == "bn")
    x = np.random.default_rng(1).random((4, 32, 32, 3))
    y = np.array([0, 3, 9, 3])
    if kind == "baseline":
        model.eval()  # dropout off; PyTorch has identities in its place
    logits = model.forward(x)
    loss, dlogits = SoftmaxCrossEntropy()(logits, y)
    model.backward(dlogits)
    tx = torch.tensor(x, dtype=torch.float64).permute(0, 3, 1, 2).requires_grad_()
    tnet.train(kind == "bn")  # type: ignore[attr-defined]
    tlogits = tnet(tx)  # type: ignore[operator]
    tloss = torch.nn.functional.cross_entropy(tlogits, torch.tensor(y))
    tloss.backward()
    np.testing.assert_allclose(logits, tlogits.detach().numpy(), rtol=1e-9, atol=1e-10)
    assert loss == pytest.approx(tloss.item(), rel=1e-10)
    tgrads = [p.grad.numpy() for p in tnet.parameters()]  # type: ignore[attr-defined]
    ours = list(model.grads.values())
    assert len(ours) == len(tgrads)
    for g, tg in zip(ours, tgrads, strict=True):
        tg = tg.transpose(2, 3, 1, 0) if tg.ndim == 4 else (tg.T if tg.ndim == 2 else tg)
        np.testing.assert_allclose(g, tg, rtol=1e-7, atol=1e-10)
    tbns = [m for m in tnet if "BatchNorm" in type(m).__name__]  # type: ignore[attr-defined]
    bns = [layer for layer in model.layers if type(layer).__name__ == "BatchNorm"]
    assert len(bns) == len(tbns) == (5 if kind == "bn" else 0)
    for b, tb in zip(bns, tbns, strict=True):
        np.testing.assert_allclose(b.running_mean, tb.running_mean.numpy(), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(b.running_var, tb.running_var.numpy(), rtol=1e-9, atol=1e-12)
