"""What the MNIST experiments ``mnist-sigmoid`` and ``mnist-lr`` share (a sigmoid MLP trained
without and with batch normalization, Ioffe & Szegedy 2015). Not an experiment itself: one
package for the shared code (more than a file's worth) that both import, and that
``population-stats`` and ``renorm-small-batch`` use for the data and the net.

Read it in this order (each module imports only the ones above it):

- :mod:`~bnlab.experiments.mnist.config`: ``MnistConfig``, the options both share;
- :mod:`~bnlab.experiments.mnist.nets`: the data and the two nets;
- :mod:`~bnlab.experiments.mnist.metrics`: the ``metrics.json`` schema and its numbers;
- :mod:`~bnlab.experiments.mnist.training`: every (lr, seed, net) run through ``Trainer``, in
  lockstep, into a :class:`~bnlab.experiments.rundir.RunDir`;
- :mod:`~bnlab.experiments.mnist.report`: the accuracy figure and the paragraphs both reports
  share.
"""
