"""``covariate-shift``: Santurkar, Tsipras, Ilyas & Madry 2018, "How Does Batch Normalization
Help Optimization?", three measurements on an MNIST MLP (or the Keras CIFAR-10 net).

- :mod:`~bnlab.experiments.covariate_shift.config`: :class:`ShiftConfig`;
- :mod:`~bnlab.experiments.covariate_shift.nets`: the nets and the noise layer of "noisy BN";
- :mod:`~bnlab.experiments.covariate_shift.measure`: ICS and the loss landscape at one step;
- :mod:`~bnlab.experiments.covariate_shift.run`: training with the measurements, ``run``;
  registered as ``bnlab run covariate-shift``;
- :mod:`~bnlab.experiments.covariate_shift.report`: files, verdicts, figures, report.
"""
