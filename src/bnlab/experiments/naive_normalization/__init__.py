"""``naive-normalization`` (Ioffe & Szegedy 2015, section 2): normalizing with the batch mean
(or mean and variance) while the gradient ignores that the statistics depend on the bias.

- :mod:`~bnlab.experiments.naive_normalization.config`: :class:`NaiveConfig` and the runs;
- :mod:`~bnlab.experiments.naive_normalization.normalize`: the layer, proper or stop-gradient;
- :mod:`~bnlab.experiments.naive_normalization.run`: training, ``run``; registered as
  ``bnlab run naive-normalization``;
- :mod:`~bnlab.experiments.naive_normalization.report`: files, verdict, figures, report.
"""
