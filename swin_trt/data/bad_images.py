"""Unreadable images, handled where they are read: DATA.ON_BAD_IMAGE ``fail`` or ``skip``.

No image is opened before it is needed: checking every header up front cost a
file open per image on every rank and every run (2.6 M per rank for one
ImageNet quantization run). Instead a dataset returns a :class:`BadImage`
for a file it cannot decode; the collate function (in the worker) drops it
from the batch, and the loader (in the main process) applies the policy.
Decisions are made in the main process so that ``fail`` ends with the
project's one sentence, not with PyTorch's worker traceback around it.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, List, NamedTuple, Optional, Sequence

from torch.utils.data import DataLoader, default_collate

from swin_trt.data.workers import worker_processes
from swin_trt.errors import UserError

_LOG = logging.getLogger("swin")
POLICIES = ("fail", "skip")


class BadImage(NamedTuple):
    """What a dataset returns instead of ``(image, label)`` for a file it cannot decode."""

    path: str
    reason: str


class CollatedWithBad(NamedTuple):
    """A batch whose samples included unreadable images: the readable ones collated (None if none), and the bad ones."""

    batch: Any
    bad: List[BadImage]


def check_policy(on_bad_image: str) -> str:
    """Return ``on_bad_image`` if it is a known policy, else raise a :class:`UserError`."""
    if on_bad_image not in POLICIES:
        raise UserError(f"DATA.ON_BAD_IMAGE is {on_bad_image!r}: use 'fail' or 'skip'.")
    return on_bad_image


class CollateSkippingBad:
    """``collate_fn`` that leaves :class:`BadImage` samples out of the batch and reports them beside it.

    Runs in the loader's workers, so it only sorts; the loader decides (see :class:`ImageLoader`).

    Args:
        collate: collates the readable samples (default: PyTorch's).
    """

    def __init__(self, collate: Callable[[Sequence[Any]], Any] = default_collate) -> None:
        self.collate = collate

    def __call__(self, samples: Sequence[Any]) -> Any:
        bad = [s for s in samples if isinstance(s, BadImage)]
        if not bad:
            return self.collate(samples)
        good = [s for s in samples if not isinstance(s, BadImage)]
        return CollatedWithBad(self.collate(good) if good else None, bad)


class ImageLoader(DataLoader):
    """A ``DataLoader`` over a dataset that may return :class:`BadImage`, applying DATA.ON_BAD_IMAGE.

    ``fail``: the first unreadable image (in loader order) ends the run with a :class:`UserError` naming it.
    ``skip``: each one is logged and left out; its batch is smaller, and a batch with no readable image
    is not yielded at all (so ``len(loader)`` is an upper bound).

    Args:
        dataset: returns ``(image, label)`` or a :class:`BadImage`.
        on_bad_image: ``fail`` or ``skip``.
        collate_fn: collates readable samples (default: PyTorch's).
        **kwargs: as for ``DataLoader``; ``num_workers`` at most the usable CPUs (:mod:`swin_trt.data.workers`).
    """

    def __init__(self, dataset, on_bad_image: str = "fail", collate_fn: Optional[Callable] = None, **kwargs: Any) -> None:
        kwargs["num_workers"] = worker_processes(kwargs.get("num_workers", 0))
        super().__init__(dataset, collate_fn=CollateSkippingBad(collate_fn or default_collate), **kwargs)
        self.on_bad_image = check_policy(on_bad_image)

    def __iter__(self):
        for batch in super().__iter__():
            if isinstance(batch, CollatedWithBad):
                first = batch.bad[0]
                if self.on_bad_image == "fail":
                    raise UserError(f"image {first.path} cannot be read ({first.reason}): remove or replace it, "
                                    "or pass --opts DATA.ON_BAD_IMAGE skip to leave unreadable images out.")
                for bad in batch.bad:
                    _LOG.warning("skipping unreadable image %s (%s)", bad.path, bad.reason)
                if batch.batch is None:
                    continue
                batch = batch.batch
            yield batch
