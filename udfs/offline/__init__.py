"""Offline paths over event history: point-in-time training examples."""
