"""``renorm-small-batch`` (Ioffe 2017, sections 4.3-4.4): batch renorm vs batch norm on
microbatches and non-i.i.d. minibatches of MNIST.

- :mod:`~bnlab.experiments.renorm.config`: :class:`RenormConfig` (every option once), the runs
  and the renorm schedule it asks for;
- :mod:`~bnlab.experiments.renorm.experiment`: the nets, training through ``Trainer``, the
  training-mode accuracy, ``run``; registered as ``bnlab run renorm-small-batch``;
- :mod:`~bnlab.experiments.renorm.report`: the run's files (``metrics.json``/``.csv``), figures
  and report, from the run directory alone (it imports nothing of the experiment).

The non-i.i.d. batches are data: :class:`bnlab.data.noniid.NonIIDBatches`.
"""
