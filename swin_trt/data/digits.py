"""The embedded default dataset: scikit-learn's handwritten digits as an ImageFolder of PNGs (make_digits.py writes it).

1,797 8×8 greyscale digits (shipped inside scikit-learn, no download) are
upsampled to 32×32 RGB PNGs and split 80/20 with a fixed seed, stratified by
class, into ``train/<digit>/`` and ``val/<digit>/``. The folder is written
under a temporary name and renamed when complete.
"""
from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np
from PIL import Image

from swin_trt.errors import UserError

SIZE = 32
VAL_FRACTION = 0.2
SEED = 0


def write_digits(output: str, size: int = SIZE, seed: int = SEED) -> dict:
    """Write the dataset to ``output`` (replacing nothing: an existing folder is an error). Returns counts."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if os.path.exists(output):
        raise UserError(f"{output} already exists: remove it or choose another --output.")
    parent = os.path.dirname(os.path.abspath(output))
    os.makedirs(parent, exist_ok=True)
    digits = load_digits()
    images = (digits.images / 16.0 * 255.0).clip(0, 255).astype(np.uint8)
    idx_train, idx_val = train_test_split(np.arange(len(images)), test_size=VAL_FRACTION, random_state=seed,
                                          stratify=digits.target)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(output)}.", dir=parent)
    try:
        for split, indices in (("train", idx_train), ("val", idx_val)):
            for i in indices:
                folder = os.path.join(tmp, split, str(digits.target[i]))
                os.makedirs(folder, exist_ok=True)
                im = Image.fromarray(images[i], mode="L").resize((size, size), Image.BICUBIC).convert("RGB")
                im.save(os.path.join(folder, f"{i:04d}.png"))
        os.replace(tmp, output)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp)
    return {"train": len(idx_train), "val": len(idx_val), "classes": 10}
