"""torch's intra-op thread count: the one module in bpm that changes it.

The count belongs to the whole process, so a library call that wants its own
(``FeatureExtractor(threads=N)``) holds it only while it works (:func:`torch_threads`). The one
lasting change is made when a process becomes one of several ranks on a machine
(:func:`share_cores_between_ranks`, from :func:`bpm.distributed.init`, which the ``train``
command calls): from then on the process is that rank.
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator

import torch


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """``count`` intra-op threads inside, the caller's count afterwards; ``0`` leaves the count alone."""
    if count <= 0:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def share_cores_between_ranks(local_world_size: int) -> None:
    """Give this rank its share of the machine's cores, unless ``OMP_NUM_THREADS`` already decides.

    Ranks sharing a machine must not each start one thread per core: that oversubscribes the
    cores several times over and slows every rank down.
    """
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world_size))
