"""Experiment ``cifar10-resnet``: ResNet-20 on CIFAR-10 (He et al. 2016, section 4.2).

The paper: 3 stages of 3 basic blocks (16/32/64 filters, :func:`bnlab.models.resnet20`),
option A shortcuts, BN after every convolution; SGD momentum 0.9, weight decay 1e-4, batch
128, lr 0.1 divided by 10 at 32k and 48k iterations, 64k iterations, 4-pixel zero padding +
random 32x32 crops + horizontal flips, per-pixel mean subtraction: 8.75% test error.

``--full`` runs that schedule (about 27 h here at 1.5 s a step; ``--resume`` continues it
across sessions, bit for bit). The default is the same schedule scaled to
:data:`~bnlab.experiments.cifar10_resnet.config.DEFAULT_ITERATIONS` iterations (lr divided
at 1/2 and 3/4 of them, as 32k/64k and 48k/64k), about 28 minutes on 2 cores (measured:
1,666 s, 65.47% test accuracy on the JPEG q75 copy).

Every epoch (a shuffled pass over the training images; the last one cut at the iteration
budget) is trained through :meth:`bnlab.train.Trainer.fit_epoch`, evaluated on the test set,
checkpointed (``checkpoints/resnet20.npz``) and appended to ``metrics.json`` (``"schema":
"bnlab.cifar10_resnet.metrics/1"``: status, iterations_total, data, history of
:data:`~bnlab.experiments.cifar10_resnet.run.HISTORY_KEYS`). Batch order and augmentation are
re-seeded from ``(seed, epoch)``, so a resumed run follows the uninterrupted one's path.
:mod:`~bnlab.experiments.cifar10_resnet.nets` holds the net, optimizer and batches that
``batch-size`` shares.
"""
