"""``scale-invariance``: BN((aW)u) = BN(Wu), measured on training trajectories (MNIST).

- :mod:`~bnlab.experiments.scale_invariance.config`: :class:`ScaleConfig` and the nets;
- :mod:`~bnlab.experiments.scale_invariance.run`: the nets trained in lock-step, ``run``;
  registered as ``bnlab run scale-invariance``;
- :mod:`~bnlab.experiments.scale_invariance.report`: files, verdicts, figures, report.
"""
