"""Shared fixtures for the mfkern test suite: a seeded generator, a small random problem factory, and Python's
own SIGINT handler during every test."""
from __future__ import annotations

import os
import signal
import threading
from types import SimpleNamespace

import numpy as np
import pytest


@pytest.fixture
def rng():
    """A numpy Generator with a fixed seed, so every test is reproducible."""
    return np.random.default_rng(20240314)


@pytest.fixture
def make_problem(rng):
    """Factory of small random MFLD problems.

    Returns a function ``make(n=6, N=8, d=3, T=None, particle_scale=1.0)`` giving a namespace with
    X (n, d), W (N, d+1) and Y: shape (n,) when T is None, else (n, T). Inputs are standard normal
    scaled by 1/sqrt(d) so that pre-activations are O(1) and the activation is neither linear nor saturated.
    """

    def make(n=6, N=8, d=3, T=None, particle_scale=1.0):
        X = rng.standard_normal((n, d)) / np.sqrt(d)
        W = particle_scale * rng.standard_normal((N, d + 1))
        Y = rng.standard_normal(n if T is None else (n, T))
        return SimpleNamespace(X=X, W=W, Y=Y, n=n, N=N, d=d, T=1 if T is None else T)

    return make


@pytest.fixture(autouse=True)
def python_sigint_handler():
    """Python's KeyboardInterrupt handler for SIGINT during every test, whatever the suite inherited: a shell
    starts background jobs with SIGINT ignored, Python then leaves it ignored, and the Ctrl-C tests would wait
    for an interrupt that never comes."""
    if os.name != "posix" or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        if previous is not None:  # None: a handler installed outside Python, which cannot be put back
            signal.signal(signal.SIGINT, previous)
