"""Staying useful while a dependency fails: the circuit breaker policy and the last known values."""
