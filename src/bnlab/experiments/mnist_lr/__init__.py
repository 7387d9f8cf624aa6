"""Experiment ``mnist-lr`` (BN-x5 / BN-x30, Ioffe & Szegedy 2015, 4.2.2): see :mod:`.run`."""
