"""Moving averages against the population statistics of Algorithm 2 (Ioffe & Szegedy 2015).

- :mod:`~bnlab.experiments.population.config`: :class:`StatsConfig` and :class:`EpochsConfig`
  (every option of both experiments once);
- :mod:`~bnlab.experiments.population.stats`: ``bnlab run population-stats`` (trains BN MLPs on
  MNIST that differ only in the BN momentum, through ``Trainer``);
- :mod:`~bnlab.experiments.population.epochs`: ``bnlab run population-stats-epochs`` (the same
  comparison on the checkpoints of a finished run);
- :mod:`~bnlab.experiments.population.report`: both reports, from a run directory's files.
"""
