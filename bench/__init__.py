"""Benchmarks of mfkern against its peers (plain numpy, PyTorch CPU with autograd) and the BLAS floor.

``python -m bench`` runs the per-step suite (bench/run.py); ``python bench/paper_run.py`` times the paper's
experiment size; ``bench/peers.py`` holds the peer implementations and ``bench/machine.py`` describes the
machine a run was measured on.
"""
