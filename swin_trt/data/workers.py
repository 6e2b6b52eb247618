"""How many worker processes a data loader starts: the number asked for (``DATA.NUM_WORKERS``, ``--num-workers``), at
most the CPUs this process may run on.

The original's default, 8 workers, suits a GPU server; on a laptop or a 2-core CI machine it made PyTorch warn twice
for every loader ("... might get DataLoader running slow or even freeze") and oversubscribed the cores. The count is
lowered to the CPUs of the process's affinity mask (what PyTorch itself checks against), and that is said once."""
from __future__ import annotations

import logging
import os
from typing import Set

_LOG = logging.getLogger("swin")
_SAID: Set[int] = set()


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the system has one, else every CPU)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def worker_processes(requested: int) -> int:
    """``requested`` loader workers, or the usable CPUs when there are fewer (logged once per requested count)."""
    cpus = usable_cpus()
    if requested <= cpus:
        return requested
    if requested not in _SAID:
        _SAID.add(requested)
        _LOG.info("%d data loader workers asked for and %d CPU%s to run them: starting %d per loader "
                  "(DATA.NUM_WORKERS or --num-workers sets the count)", requested, cpus, "" if cpus == 1 else "s", cpus)
    return cpus
