"""Experiment ``mnist-sigmoid`` (Ioffe & Szegedy 2015, Figure 1): see :mod:`.run`."""
