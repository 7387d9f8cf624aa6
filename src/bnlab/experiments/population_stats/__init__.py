"""Experiment ``population-stats`` (moving averages vs Algorithm 2): see :mod:`.run`."""
