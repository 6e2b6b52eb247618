"""Hub folders as transformers and timm write them (``save_pretrained``, ``timm.models.save_for_hf``), a Hugging Face
cache filled by hand in its documented layout, and JPEGs of several sizes: what benchmarks/hub_parity.py and the
weight-source tests read. Nothing is downloaded."""
from __future__ import annotations

import io
import os
import shutil
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from PIL import Image

from swin_trt.models.build import spread_weights

IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
# small Swin / Swin V2 shapes (image 64, patch 4: a 16x16 grid, windows of 4, two stages), seconds to build and run
SMALL = dict(image_size=64, patch_size=4, embed_dim=32, depths=[2, 2], num_heads=[2, 4], window_size=4)
SMALL_TIMM = dict(img_size=64, embed_dim=32, depths=(2, 2), num_heads=(2, 4), window_size=4)


def transformers_folder(path: Path, family: str = "swin", num_labels: int = 1000, names: Optional[Sequence[str]] = None,
                        processor: str = "current", seed: int = 0, **overrides) -> Path:
    """A ``Swin(v2)ForImageClassification`` with spread random weights, written by ``save_pretrained``, with an image
    processor config: ``current`` (ViTImageProcessor's own save) or ``legacy`` (the Hub's ViTFeatureExtractor form,
    as microsoft/swin-tiny-patch4-window7-224 holds it); ``None`` writes none."""
    from transformers import (Swinv2Config, Swinv2ForImageClassification, SwinConfig, SwinForImageClassification,
                              ViTImageProcessor)

    kwargs = dict(SMALL, **overrides)
    if names is not None:
        kwargs.update(id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)})
    else:
        kwargs["num_labels"] = num_labels
    config_class, model_class = {"swin": (SwinConfig, SwinForImageClassification),
                                 "swinv2": (Swinv2Config, Swinv2ForImageClassification)}[family]
    torch.manual_seed(seed)
    spread_weights(model_class(config_class(**kwargs)).eval(), seed).save_pretrained(path)
    size = kwargs["image_size"]
    if processor == "current":
        ViTImageProcessor(size={"height": size, "width": size}, resample=3, image_mean=IMAGENET_MEAN,
                          image_std=IMAGENET_STD).save_pretrained(path)
    elif processor == "legacy":
        import json

        (path / "preprocessor_config.json").write_text(json.dumps({
            "do_normalize": True, "do_resize": True, "feature_extractor_type": "ViTFeatureExtractor",
            "image_mean": IMAGENET_MEAN, "image_std": IMAGENET_STD, "resample": 3, "size": size}))
    return path


def timm_folder(path: Path, architecture: str, num_classes: int, label_names: Optional[Sequence[str]] = None,
                seed: int = 0, **model_args) -> Path:
    """A timm model with spread random weights, written by ``timm.models.save_for_hf`` (safetensors)."""
    import timm

    torch.manual_seed(seed)
    model = timm.create_model(architecture, pretrained=False, num_classes=num_classes, **model_args).eval()
    spread_weights(model, seed)
    timm.models.save_for_hf(model, str(path), model_config={"label_names": list(label_names)} if label_names else None,
                            safe_serialization=True)
    return path


def fill_hub_cache(cache: Path, repo: str, folder: Path, commit: str = "0123456789abcdef0123456789abcdef01234567",
                   ref: str = "main") -> str:
    """Put ``folder``'s files into a Hugging Face cache as the snapshot ``commit`` of ``repo``, ``ref`` pointing at it
    (the layout huggingface_hub documents: models--ORG--NAME/{refs,snapshots,blobs}); returns ``commit``."""
    root = cache / f"models--{repo.replace('/', '--')}"
    snapshot = root / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / ref).write_text(commit)
    for file in folder.iterdir():
        shutil.copyfile(file, snapshot / file.name)
    return commit


SIZES = ((70, 50), (50, 90), (64, 64), (200, 120), (97, 131), (40, 40))


def jpegs(count: int, seed: int = 0) -> List[bytes]:
    """JPEG files (bytes) of smooth random RGB images of several sizes: landscape, portrait, square, smaller and
    larger than the model's input."""
    rng = np.random.default_rng(seed)
    files = []
    for i in range(count):
        width, height = SIZES[i % len(SIZES)]
        coarse = rng.integers(0, 256, (max(2, height // 8), max(2, width // 8), 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(coarse).resize((width, height), Image.BICUBIC).save(buffer, "JPEG", quality=92)
        files.append(buffer.getvalue())
    return files


def decoded(files: Sequence[bytes]) -> List[Image.Image]:
    """The JPEG files as RGB images, as every pipeline here decodes them (Pillow)."""
    return [Image.open(io.BytesIO(data)).convert("RGB") for data in files]


def folder_by_prediction(root: Path, files: Sequence[bytes], predicted: Sequence[str]) -> Dict[str, int]:
    """``root/val/<predicted class name>/image_i.jpg``: a dataset whose every label is the source's own top-1 on that
    very file, so Acc@1 is 100 exactly when every image's top-1 agrees with it; returns the images per class."""
    counts: Dict[str, int] = {}
    for i, (data, name) in enumerate(zip(files, predicted)):
        folder = root / "val" / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"image_{i:02d}.jpg").write_bytes(data)
        counts[name] = counts.get(name, 0) + 1
    return counts


def listing(root: Path) -> List[str]:
    """Every file under ``root``, relative, for "nothing was written" checks."""
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, files in os.walk(root) for f in files)
