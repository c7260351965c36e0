"""Scoring: feature vectors, model sidecars and registry, variants, the models a task serves,
the batch scorer and the score codec."""
