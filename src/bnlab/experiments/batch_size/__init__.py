"""Experiment ``batch-size``: Wu & He 2018 (Group Normalization), Figure 1, on CIFAR-10.

The claim: BatchNorm's error grows quickly as the per-device batch shrinks (32 -> 2), since
its statistics come from the batch; GroupNorm's (and LayerNorm's) does not depend on the
batch and stays flat. Batch renorm (Ioffe 2017) is the batch-dependent fix; synchronized BN
(statistics over every rank's examples) recovers the large batch's statistics.

Every (norm, per-device batch b) pair trains the same net from the same seed for the same
number of epochs (so small batches take more steps), SGD momentum 0.9 with lr scaled with the
global batch (Wu & He's linear rule: ``lr * global / 32``), /10 after 3/4 of the steps,
weight decay on the kernels, cifar10-resnet's input pipeline (per-pixel mean, pad 4 + crop,
flips); the test error at the end is the point of the figure.

Under ``mpiexec -n P`` each rank takes b examples of a global batch P*b; ``--bn-sync local``
is Wu & He's setting (BN statistics per device), ``--bn-sync global`` makes the BN and renorm
layers synchronized (:func:`bnlab.layers.convert_sync_batchnorm`): statistics over P*b, the
same numbers as one process at batch P*b (a test checks it).

The default (about 10 minutes on 2 cores): a 3-layer conv net ("cnn3", below), 5,000
training and 2,000 test images, 4 epochs. ``--full``: ResNet-20 on all images, 30 epochs.
``metrics.json`` (``"schema": "bnlab.batch_size.metrics/1"``) holds one record per finished
run (see :data:`~bnlab.experiments.batch_size.run.RUN_KEYS`), rewritten after each.
"""
