"""Learning-rate schedules: callables ``t -> lr`` where ``t`` is the number of steps taken."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bnlab._checks import check_bool, check_int, check_real

__all__ = ["Schedule", "StepDecay", "MultiStepDecay", "ExponentialDecay", "schedule_from_config"]


class Schedule:
    """A learning rate as a function of the step count ``t`` (0 for the first step)."""

    def __call__(self, t: int) -> float:
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        raise NotImplementedError


class StepDecay(Schedule):
    """``lr_t = lr * gamma ** floor(t / step_size)`` (torch's ``StepLR`` counted in steps)."""

    def __init__(self, lr: float, step_size: int, gamma: float = 0.1) -> None:
        check_real(lr, "lr", where="StepDecay", low=0, low_open=True)
        check_int(step_size, "step_size", where="StepDecay", low=1)
        check_real(gamma, "gamma", where="StepDecay", low=0, low_open=True)
        self.lr, self.step_size, self.gamma = float(lr), int(step_size), float(gamma)

    def __call__(self, t: int) -> float:
        return self.lr * self.gamma ** (t // self.step_size)

    def get_config(self) -> dict[str, Any]:
        return {
            "type": "StepDecay",
            "lr": self.lr,
            "step_size": self.step_size,
            "gamma": self.gamma,
        }


class MultiStepDecay(Schedule):
    """``lr_t = lr * gamma ** (number of milestones <= t)`` (torch's ``MultiStepLR`` counted
    in steps): He et al.'s CIFAR ResNets divide lr 0.1 by 10 at steps 32000 and 48000.

    >>> MultiStepDecay(0.1, [2, 4])(3)
    0.010000000000000002
    """

    def __init__(self, lr: float, milestones: list[int], gamma: float = 0.1) -> None:
        check_real(lr, "lr", where="MultiStepDecay", low=0, low_open=True)
        check_real(gamma, "gamma", where="MultiStepDecay", low=0, low_open=True)
        ms = [check_int(m, "milestones", where="MultiStepDecay", low=1) for m in milestones]
        if ms != sorted(set(ms)):
            raise ValueError(f"MultiStepDecay: milestones must be increasing, got {milestones}")
        self.lr, self.milestones, self.gamma = float(lr), ms, float(gamma)

    def __call__(self, t: int) -> float:
        return self.lr * self.gamma ** sum(1 for m in self.milestones if m <= t)

    def get_config(self) -> dict[str, Any]:
        return {
            "type": "MultiStepDecay",
            "lr": self.lr,
            "milestones": list(self.milestones),
            "gamma": self.gamma,
        }


class ExponentialDecay(Schedule):
    """``lr_t = lr * decay_rate ** (t / decay_steps)`` (Keras' ``ExponentialDecay``).

    With ``staircase=True`` the exponent is ``floor(t / decay_steps)``.
    """

    def __init__(
        self, lr: float, decay_rate: float, decay_steps: int, staircase: bool = False
    ) -> None:
        where = "ExponentialDecay"
        check_real(lr, "lr", where=where, low=0, low_open=True)
        check_real(decay_rate, "decay_rate", where=where, low=0, low_open=True)
        check_int(decay_steps, "decay_steps", where=where, low=1)
        check_bool(staircase, "staircase", where=where)
        self.lr, self.decay_rate = float(lr), float(decay_rate)
        self.decay_steps, self.staircase = int(decay_steps), bool(staircase)

    def __call__(self, t: int) -> float:
        p = t // self.decay_steps if self.staircase else t / self.decay_steps
        return self.lr * self.decay_rate**p

    def get_config(self) -> dict[str, Any]:
        return {
            "type": "ExponentialDecay",
            "lr": self.lr,
            "decay_rate": self.decay_rate,
            "decay_steps": self.decay_steps,
            "staircase": self.staircase,
        }


_SCHEDULES: dict[str, type[Schedule]] = {
    "StepDecay": StepDecay,
    "MultiStepDecay": MultiStepDecay,
    "ExponentialDecay": ExponentialDecay,
}


def schedule_from_config(config: Mapping[str, Any]) -> Schedule:
    """Rebuild a schedule from its ``get_config()`` dict (``{"type": ..., **kwargs}``)."""
    kw = dict(config)
    kind = kw.pop("type", None)
    if kind not in _SCHEDULES:
        raise ValueError(f"unknown schedule type {kind!r}; known: {sorted(_SCHEDULES)}")
    return _SCHEDULES[kind](**kw)
