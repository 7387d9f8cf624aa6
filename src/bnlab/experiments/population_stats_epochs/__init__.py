"""Experiment ``population-stats-epochs`` (Algorithm 2 per checkpoint): see :mod:`.run`."""
