"""MultiStepDecay against torch.optim.lr_scheduler.MultiStepLR, its config round trip and
its checks."""

from __future__ import annotations

import pytest

from bnlab.optim import MultiStepDecay, schedule_from_config


def test_matches_torch_multisteplr() -> None:
    torch = pytest.importorskip("torch")
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[3, 5], gamma=0.1)
    ours = MultiStepDecay(0.1, [3, 5])
    for t in range(8):
        assert ours(t) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-12), t
        opt.step()
        sched.step()


def test_config_round_trip() -> None:
    s = MultiStepDecay(0.1, [32000, 48000])
    back = schedule_from_config(s.get_config())
    assert isinstance(back, MultiStepDecay)
    assert [back(t) for t in (0, 31999, 32000, 47999, 48000)] == [
        s(t) for t in (0, 31999, 32000, 47999, 48000)
    ]


@pytest.mark.parametrize("milestones", [[5, 3], [3, 3], [0], [2.5]])
def test_bad_milestones_are_refused(milestones: list) -> None:
    with pytest.raises((ValueError, TypeError), match="milestones"):
        MultiStepDecay(0.1, milestones)
