"""The MNIST experiments ``mnist-sigmoid`` and ``mnist-lr`` (Ioffe & Szegedy 2015, Figure 1
and section 4.2.2): a sigmoid MLP trained without and with batch normalization.

Read it in this order (each module imports only the ones above it):

- :mod:`~bnlab.experiments.mnist.config`: the options (``MnistConfig`` shared,
  ``MnistSigmoidConfig``, ``MnistLrConfig``), their checks and derived values;
- :mod:`~bnlab.experiments.mnist.nets`: the data and the two nets (also used by other
  experiments);
- :mod:`~bnlab.experiments.mnist.metrics`: the ``metrics.json`` schema, writing and reading it;
- :mod:`~bnlab.experiments.mnist.training`: every (lr, seed, net) run through ``Trainer``, in
  lockstep, into a :class:`~bnlab.experiments.rundir.RunDir`;
- :mod:`~bnlab.experiments.mnist.numbers`, :mod:`~bnlab.experiments.mnist.figures`,
  :mod:`~bnlab.experiments.mnist.text`, :mod:`~bnlab.experiments.mnist.readme`,
  :mod:`~bnlab.experiments.mnist.report`: what a report says, from the run's files only;
- :mod:`~bnlab.experiments.mnist.sigmoid`, :mod:`~bnlab.experiments.mnist.lr`: the two
  experiments (``DESCRIPTION``, ``CONFIG``, ``add_arguments``, ``run``, ``render``).
"""
