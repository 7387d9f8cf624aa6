"""Experiment ``cifar10-keras``: Keras' cifar10_cnn example, without and with batch norm.

The claim reproduced (seed text 003, a Keras blog post): the Keras cifar10_cnn example reaches
77% test accuracy after 50 epochs (Keras itself reports 79%), and 87% with batch normalization
after every Conv2D and the Dense 512, before the ReLU, dropout removed and the RMSprop
learning rate raised from 1e-4 to 1e-3; BN is ahead from the first epochs.

Baseline (exactly the example)::

    Conv(32, 3x3, same) ReLU  Conv(32, 3x3, valid) ReLU  MaxPool(2)  Dropout(0.25)
    Conv(64, 3x3, same) ReLU  Conv(64, 3x3, valid) ReLU  MaxPool(2)  Dropout(0.25)
    Flatten  Dense(512) ReLU  Dropout(0.5)  Dense(10)  softmax

Glorot-uniform kernels and zero biases (Keras' defaults); softmax cross-entropy on the logits;
RMSprop(lr=1e-4, rho=0.9, eps=1e-7, decay=1e-6), Keras 2's decay ``lr_t = lr / (1 + decay*t)``
per step; batches of 32; pixels scaled to [0, 1]; random shifts of up to 10% of the width
and height and horizontal flips. The BN net replaces each ``Conv -> ReLU`` and ``Dense(512) ->
ReLU`` by ``Conv(no bias) -> BatchNorm -> ReLU`` (beta replaces the bias), has no dropout and
uses lr 1e-3. BN uses Keras' defaults by default: eps 1e-3 and Keras momentum 0.99, which is
momentum 0.01 in bnlab's (PyTorch's) convention. Both nets start from the same seed: the same
kernels, the same batch order and the same augmentation draws.

Every epoch records, per net: the mean training loss and accuracy over the epoch's batches
(training mode, augmented images, as Keras prints them), the test loss and accuracy on the
whole test set (eval mode, BN with its running statistics), and the wall times. The nets are
trained in alternation, one epoch each, so an interrupted run holds both curves to about the
same epoch. ``metrics.json``/``metrics.csv`` are rewritten after every epoch, and a checkpoint
per net (``checkpoints/<net>.npz``: model, optimizer, epoch and history) is saved, so ``--resume``
continues an interrupted run (data order, augmentation and dropout masks are re-seeded from
``(seed, epoch)``, so a resumed run follows the same path as an uninterrupted one).

``metrics.json`` (``"schema": "bnlab.cifar10_keras.metrics/1"``)::

    {"schema", "experiment": "cifar10-keras", "status": "running" | "complete" |
     "interrupted" | "failed", "epochs_total": int, "data": {source description},
     "models": {"baseline" | "bn": {"epochs_done": int, "error": str | null,
                                    "history": {key: [one value per epoch]}}}}

with the history keys of ``run.HISTORY_KEYS``.

The package: :mod:`~bnlab.experiments.cifar10_keras.config` (``Cifar10KerasConfig``, every
option once), :mod:`~bnlab.experiments.cifar10_keras.nets` (the nets, the optimizer, the
epoch's batches), :mod:`~bnlab.experiments.cifar10_keras.run` (the run, through
:meth:`bnlab.train.Trainer.fit_epoch`) and :mod:`~bnlab.experiments.cifar10_keras.report`
(figures and report from the run directory's files). Where the data is and loading it:
:mod:`bnlab.data.cifar_source`.
"""
