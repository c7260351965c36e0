"""Test fixtures shared by ``tests/`` and ``bench/`` (a private Redis, a reader process, tiny
models). Development only: not installed, never shipped with the jobs."""
