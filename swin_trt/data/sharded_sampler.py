"""Evaluation sampler for torch.distributed: contiguous shards, no padding, no repeats."""
from __future__ import annotations

from typing import Iterator, Optional, Sized

import torch.distributed as dist
from torch.utils.data import Sampler


class ShardedEvalSampler(Sampler[int]):
    """Rank r gets images [r*n/W, (r+1)*n/W): every image exactly once over all ranks.

    ``DistributedSampler`` pads the last shard with repeats, which would count
    some images twice in all-reduced accuracy; this sampler does not.
    """

    def __init__(self, dataset: Sized, num_replicas: Optional[int] = None, rank: Optional[int] = None) -> None:
        self.num_replicas = dist.get_world_size() if num_replicas is None else num_replicas
        self.rank = dist.get_rank() if rank is None else rank
        n = len(dataset)
        self.start = n * self.rank // self.num_replicas
        self.stop = n * (self.rank + 1) // self.num_replicas

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.stop))

    def __len__(self) -> int:
        return self.stop - self.start
