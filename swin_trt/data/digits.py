"""The embedded default dataset: scikit-learn's handwritten digits as an ImageFolder of PNGs (make_digits.py writes it).

1,797 8×8 greyscale digits (shipped inside scikit-learn, no download) are
upsampled to 32×32 RGB PNGs and split 80/20 with a fixed seed, stratified by
class, into ``train/<digit>/`` and ``val/<digit>/``. The folder is written
under a temporary name and renamed when complete; a folder that already holds
exactly these images is left as it is, any other existing folder is refused.
"""
from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np
from PIL import Image

from swin_trt.errors import UserError
from swin_trt.files import make_folder, writing

SIZE = 32
VAL_FRACTION = 0.2
SEED = 0


def _differences(written: str, existing: str) -> int:
    """How many images of ``written`` are missing from ``existing`` or differ in their pixels, plus extra files."""
    def listing(root: str) -> set:
        return {os.path.relpath(os.path.join(d, f), root) for d, _, files in os.walk(root) for f in files}

    mine, theirs = listing(written), listing(existing)
    changed = 0
    for name in mine & theirs:
        try:
            with Image.open(os.path.join(existing, name)) as im:
                pixels = np.asarray(im.convert("RGB"))
        except (OSError, ValueError):
            changed += 1
            continue
        with Image.open(os.path.join(written, name)) as im:
            changed += not np.array_equal(pixels, np.asarray(im))
    return changed + len(mine ^ theirs)


def write_digits(output: str, size: int = SIZE, seed: int = SEED) -> dict:
    """Write the dataset to ``output`` and return its counts (``existing``: the folder already held it).

    Raises:
        UserError: ``output`` exists and is not this dataset (nothing in it is replaced).
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if os.path.exists(output) and not os.path.isdir(output):
        raise UserError(f"{output} already exists and is not a folder: remove it or choose another --output.")
    parent = os.path.dirname(os.path.abspath(output))
    make_folder(parent)
    digits = load_digits()
    images = (digits.images / 16.0 * 255.0).clip(0, 255).astype(np.uint8)
    idx_train, idx_val = train_test_split(np.arange(len(images)), test_size=VAL_FRACTION, random_state=seed,
                                          stratify=digits.target)
    with writing(output):
        tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(output)}.", dir=parent)
        try:
            for split, indices in (("train", idx_train), ("val", idx_val)):
                for i in indices:
                    folder = os.path.join(tmp, split, str(digits.target[i]))
                    os.makedirs(folder, exist_ok=True)
                    im = Image.fromarray(images[i], mode="L").resize((size, size), Image.BICUBIC).convert("RGB")
                    im.save(os.path.join(folder, f"{i:04d}.png"))
            existing = os.path.exists(output)
            if existing:
                differ = _differences(tmp, output)
                if differ:
                    raise UserError(f"{output} already exists and is not the digits dataset this command writes "
                                    f"({differ} file(s) missing, extra or different): remove it or choose another --output.")
            else:
                os.replace(tmp, output)
        finally:
            if os.path.exists(tmp):
                shutil.rmtree(tmp)
    return {"train": len(idx_train), "val": len(idx_val), "classes": 10, "existing": existing}
