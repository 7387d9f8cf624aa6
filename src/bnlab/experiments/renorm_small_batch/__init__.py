"""``renorm-small-batch`` (Ioffe 2017, sections 4.3-4.4): batch renorm vs batch norm on
microbatches and non-i.i.d. minibatches of MNIST.

- :mod:`~bnlab.experiments.renorm_small_batch.config`: :class:`RenormConfig` (every option
  once), the runs and the renorm schedule it asks for;
- :mod:`~bnlab.experiments.renorm_small_batch.run`: the nets, training through ``Trainer``,
  the training-mode accuracy, ``run``;
- :mod:`~bnlab.experiments.renorm_small_batch.report`: the run's files (``metrics.json``,
  ``metrics.csv``), figures and report, from the run directory alone.

The non-i.i.d. batches are data: :class:`bnlab.data.noniid.NonIIDBatches`.
"""
