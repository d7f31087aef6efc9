"""Torch on one CPU thread for the tiny matrices of a toy network, in the calling thread only."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["one_thread"]


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch's parallel regions on one thread for the block, in the calling thread only; safe in any thread.

    Tiny matrices gain nothing from more threads, and on a busy machine the extra threads wait for a core: on two
    cores with one busy, ``train_toy()`` takes 0.7 s on one thread and 10-16 s on two (kernel thread or worker).
    ``torch.set_num_threads`` is not used: it also sets the count every thread started later begins with, so a
    worker thread (the RegionExplorer's retraining) must not call it. The OpenMP limit of ``threadpoolctl`` (a
    scikit-learn dependency) holds for the calling thread only; without threadpoolctl the block runs as it is.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    # torch sets up a thread's OpenMP count on its first parallel call: do it now, or it would undo the limit
    torch.get_num_threads()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # threadpoolctl warns about some mixes of OpenMP runtimes: not ours to fix
        limits = threadpool_limits(limits=1, user_api="openmp")
    try:
        yield
    finally:
        limits.restore_original_limits()
