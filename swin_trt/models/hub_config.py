"""The config a Hub folder's own files describe: transformers' ``config.json`` + ``preprocessor_config.json``, or
timm's ``config.json`` (``architecture``, ``model_args``, ``pretrained_cfg``), as dotted config keys.

Every value comes from the folder, never from a guess: the family, widths, depths, heads, window, image and patch
size, classes and their names, V2's pretrained windows, the absolute position embedding and the blocks' LayerNorm
epsilon; the preprocessing (resize, crop, interpolation, mean, std) from the image processor (transformers) or the
``pretrained_cfg`` (timm). An option the toolkit's model does not build ends in one sentence naming it.
"""
from __future__ import annotations

import re
from typing import Any, Dict, List, Mapping, Optional, Sequence

from swin_trt.errors import UserError

SWIN_MODEL_TYPES = {"swin": "SWIN", "swinv2": "SWINV2"}  # transformers model_type -> our MODEL node
# PIL resampling filters by number (transformers' ``resample``) -> DATA.INTERPOLATION
RESAMPLE = {2: "bilinear", 3: "bicubic"}
RESAMPLE_NAMES = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
_DEFAULT_LABEL = re.compile(r"^LABEL_\d+$")  # what transformers writes when a model was given no class names


def _square(value: Any, what: str, where: str) -> int:
    """An int from an int or a [h, w] pair with h == w."""
    if isinstance(value, (list, tuple)):
        if len(value) != 2 or value[0] != value[1]:
            raise UserError(f"{where}: {what} {list(value)} is not square; the toolkit builds square images and patches.")
        value = value[0]
    return int(value)


def label_names(names: Optional[Sequence[str]], num_classes: int, where: str) -> List[str]:
    """Class names in logit order, or [] for unnamed classes (none given, or transformers' ``LABEL_i`` defaults).

    Raises:
        UserError: a number of names that is not the number of classes.
    """
    names = [str(n) for n in (names or [])]
    if not names or all(_DEFAULT_LABEL.match(n) for n in names):
        return []
    if len(names) != num_classes:
        raise UserError(f"{where} names {len(names)} classes but its classifier has {num_classes}: the folder's config "
                        "does not describe its weights.")
    return names


def _id2label(config: Mapping[str, Any], where: str) -> List[str]:
    id2label = config.get("id2label") or {}
    try:
        ids = sorted(int(i) for i in id2label)
    except (TypeError, ValueError):
        raise UserError(f"{where}: id2label has keys that are not class numbers.") from None
    if ids != list(range(len(ids))):
        raise UserError(f"{where}: id2label numbers its classes {ids[:5]}..., not 0..{len(ids) - 1}.")
    return [str(id2label[str(i)] if str(i) in id2label else id2label[i]) for i in ids]


def transformers_values(config: Mapping[str, Any], preprocessor: Optional[Mapping[str, Any]],
                        where: str) -> Dict[str, Any]:
    """Dotted config keys of a transformers ``Swin(v2)ForImageClassification`` folder.

    Args:
        config: its ``config.json``.
        preprocessor: its ``preprocessor_config.json`` (None when absent: the preprocessing is then not derived).
        where: the folder or Hub id, for messages.

    Raises:
        UserError: not a Swin classifier, or an option the toolkit does not build (named).
    """
    model_type = config.get("model_type")
    if model_type not in SWIN_MODEL_TYPES:
        raise UserError(f"{where} holds a transformers {model_type!r} model, not a Swin Transformer (model_type swin or "
                        "swinv2): this toolkit deploys Swin V1 and V2 classifiers.")
    architectures = config.get("architectures") or []
    if architectures and not any(a.endswith("ForImageClassification") for a in architectures):
        raise UserError(f"{where} holds a {architectures[0]}, not an image classifier ({model_type.capitalize()}"
                        "ForImageClassification): the toolkit deploys classifiers.")
    unsupported = []
    if config.get("hidden_act", "gelu") != "gelu":
        unsupported.append(f"hidden_act {config['hidden_act']!r} (the blocks use exact GELU)")
    if config.get("always_partition"):
        unsupported.append("always_partition true (windows that do not shrink to a smaller grid)")
    if unsupported:
        raise UserError(f"{where} is a Swin with options this toolkit does not build: {'; '.join(unsupported)}.")
    node = f"MODEL.{SWIN_MODEL_TYPES[model_type]}"
    depths = [int(d) for d in config.get("depths", [2, 2, 6, 2])]
    names = _id2label(config, where)
    num_classes = len(names) or int(config.get("num_labels", 2))
    values: Dict[str, Any] = {
        "MODEL.TYPE": model_type,
        "DATA.IMG_SIZE": _square(config.get("image_size", 224), "image_size", where),
        f"{node}.PATCH_SIZE": _square(config.get("patch_size", 4), "patch_size", where),
        f"{node}.IN_CHANS": int(config.get("num_channels", 3)),
        f"{node}.EMBED_DIM": int(config.get("embed_dim", 96)),
        f"{node}.DEPTHS": depths,
        f"{node}.NUM_HEADS": [int(h) for h in config.get("num_heads", [3, 6, 12, 24])],
        f"{node}.WINDOW_SIZE": _square(config.get("window_size", 7), "window_size", where),
        f"{node}.MLP_RATIO": float(config.get("mlp_ratio", 4.0)),
        f"{node}.QKV_BIAS": bool(config.get("qkv_bias", True)),
        f"{node}.APE": bool(config.get("use_absolute_embeddings", False)),
        "MODEL.NUM_CLASSES": num_classes,
        "MODEL.LAYER_NORM_EPS": float(config.get("layer_norm_eps", 1e-5)),
        "MODEL.LABEL_NAMES": label_names(names, num_classes, where),
    }
    if model_type == "swinv2":
        # transformers reads one entry per stage and ignores the rest (its default lists four for any depth)
        windows = [int(w) for w in config.get("pretrained_window_sizes", [0] * len(depths))]
        values[f"{node}.PRETRAINED_WINDOW_SIZES"] = windows[:len(depths)] if len(windows) >= len(depths) else windows
    if preprocessor is not None:
        values.update(image_processor_values(preprocessor, values["DATA.IMG_SIZE"], where))
    return values


def crop_values(crop_pct: float) -> Dict[str, Any]:
    """TEST.CROP (and TEST.CROP_PCT when it crops) of an evaluation crop; 1.0 or more is a plain resize."""
    return {"TEST.CROP": True, "TEST.CROP_PCT": crop_pct} if crop_pct < 1.0 else {"TEST.CROP": False}


def _size_of(size: Any, where: str, what: str) -> Dict[str, int]:
    """transformers' ``size``/``crop_size``: an int (a square), ``{"height", "width"}`` or ``{"shortest_edge"}``."""
    if isinstance(size, int):
        return {"height": size, "width": size}
    if isinstance(size, Mapping) and ("shortest_edge" in size or {"height", "width"} <= set(size)):
        return {k: int(v) for k, v in size.items() if v is not None}
    raise UserError(f"{where}: preprocessor_config.json's {what} {size!r} is not a size the toolkit reads "
                    "(an int, height and width, or shortest_edge).")


def image_processor_values(processor: Mapping[str, Any], img_size: int, where: str) -> Dict[str, Any]:
    """DATA.MEAN/STD/INTERPOLATION and TEST.CROP/CROP_PCT of a transformers image processor's config.

    Swin's (``ViTImageProcessor``) resizes straight to ``height`` x ``width``: no crop. A processor that resizes the
    shortest edge and centre-crops (``do_center_crop``, ``crop_size`` or ``crop_pct``) becomes the same crop here.

    Raises:
        UserError: a resampling filter, rescale or geometry the toolkit does not build (named).
    """
    where = f"{where} (preprocessor_config.json)"
    resample = int(processor.get("resample", 2))
    if resample not in RESAMPLE:
        raise UserError(f"{where} resizes with {RESAMPLE_NAMES.get(resample, resample)!r}: the toolkit resizes "
                        "bicubic or bilinear.")
    if processor.get("do_rescale", True) and abs(float(processor.get("rescale_factor", 1 / 255)) - 1 / 255) > 1e-9:
        raise UserError(f"{where} rescales pixels by {processor['rescale_factor']}, not 1/255: not built by the toolkit.")
    if not processor.get("do_resize", True):
        raise UserError(f"{where} does not resize (do_resize false): the toolkit's evaluation resizes every image.")
    normalize = processor.get("do_normalize", True)
    mean = [float(v) for v in processor.get("image_mean", [0.5] * 3)] if normalize else [0.0] * 3
    std = [float(v) for v in processor.get("image_std", [0.5] * 3)] if normalize else [1.0] * 3
    size = _size_of(processor.get("size", img_size), where, "size")
    values: Dict[str, Any] = {"DATA.MEAN": mean, "DATA.STD": std, "DATA.INTERPOLATION": RESAMPLE[resample]}
    if "shortest_edge" in size:
        if processor.get("crop_pct") is not None:
            crop_pct = float(processor["crop_pct"])
        elif processor.get("do_center_crop"):
            crop = _size_of(processor.get("crop_size", img_size), where, "crop_size")
            crop_pct = crop["height"] / size["shortest_edge"]
        else:
            raise UserError(f"{where} resizes the shortest edge to {size['shortest_edge']} without a crop: the "
                            "toolkit's model takes square images.")
        return {**values, **crop_values(crop_pct)}
    if (size["height"], size["width"]) != (img_size, img_size):
        raise UserError(f"{where} resizes to {size['height']}x{size['width']}, but the model takes {img_size}x{img_size} "
                        "images.")
    return {**values, "TEST.CROP": False}


def timm_values(config: Mapping[str, Any], where: str) -> Dict[str, Any]:
    """Dotted config keys of a timm Hub folder: the architecture is built by timm on the meta device (no weights, no
    memory) with the folder's ``model_args``, and read; the preprocessing is its ``pretrained_cfg``.

    Raises:
        UserError: an architecture that is not timm's Swin V1/V2, or options the toolkit does not build.
    """
    import timm
    import torch

    architecture = str(config.get("architecture", ""))
    if not architecture.startswith("swin") or architecture.startswith("swinv2_cr"):
        raise UserError(f"{where} holds timm's {architecture!r}, not a Swin Transformer V1/V2 (swin_* or swinv2_*): "
                        "this toolkit deploys Swin classifiers.")
    args = dict(config.get("model_args") or {})
    args.setdefault("num_classes", config.get("num_classes", 1000))
    try:
        with torch.device("meta"):
            model = timm.create_model(architecture, pretrained=False, **args)
    except (RuntimeError, TypeError, ValueError) as err:
        raise UserError(f"{where}: timm cannot build {architecture!r} with its model_args ({err}).") from None
    kind = type(model).__name__
    if kind not in ("SwinTransformer", "SwinTransformerV2"):
        raise UserError(f"{where}: timm builds {architecture!r} as {kind}, not SwinTransformer or SwinTransformerV2.")
    v2 = kind == "SwinTransformerV2"
    node = "MODEL.SWINV2" if v2 else "MODEL.SWIN"
    blocks = [layer.blocks[0] for layer in model.layers]
    first = blocks[0]
    dim = model.patch_embed.proj.out_channels
    if not v2 and first.attn.qkv.out_features != 3 * dim:
        raise UserError(f"{where}: timm's head_dim makes q, k and v {first.attn.qkv.out_features // 3} wide, not the "
                        f"{dim} channels: not built by the toolkit.")
    values: Dict[str, Any] = {
        "MODEL.TYPE": "swinv2" if v2 else "swin",
        "DATA.IMG_SIZE": _square(model.patch_embed.img_size, "img_size", where),
        f"{node}.PATCH_SIZE": _square(model.patch_embed.patch_size, "patch_size", where),
        f"{node}.IN_CHANS": model.patch_embed.proj.in_channels,
        f"{node}.EMBED_DIM": dim,
        f"{node}.DEPTHS": [len(layer.blocks) for layer in model.layers],
        f"{node}.NUM_HEADS": [b.attn.num_heads for b in blocks],
        f"{node}.WINDOW_SIZE": _square(first.window_size, "window_size", where),
        f"{node}.MLP_RATIO": first.mlp.fc1.out_features / first.mlp.fc1.in_features,
        f"{node}.QKV_BIAS": (first.attn.q_bias is not None) if v2 else (first.attn.qkv.bias is not None),
        f"{node}.APE": getattr(model, "absolute_pos_embed", None) is not None,
        "MODEL.NUM_CLASSES": int(model.num_classes),
        "MODEL.LAYER_NORM_EPS": float(first.norm1.eps),
    }
    if v2:
        values[f"{node}.PRETRAINED_WINDOW_SIZES"] = [_square(b.attn.pretrained_window_size, "pretrained_window_size",
                                                             where) for b in blocks]
    pretrained = config.get("pretrained_cfg") or {}
    values["MODEL.LABEL_NAMES"] = label_names(config.get("label_names") or pretrained.get("label_names"),
                                              values["MODEL.NUM_CLASSES"], where)
    values.update(timm_preprocessing(pretrained, values["DATA.IMG_SIZE"], where))
    return values


def timm_preprocessing(pretrained: Mapping[str, Any], img_size: int, where: str) -> Dict[str, Any]:
    """DATA.MEAN/STD/INTERPOLATION and TEST.CROP/CROP_PCT of a timm ``pretrained_cfg``, as timm's own
    ``resolve_data_config`` reads it for ``create_transform`` (its defaults where a field is missing)."""
    from timm.data import resolve_data_config

    data = resolve_data_config({}, pretrained_cfg=dict(pretrained))
    if data["interpolation"] not in ("bicubic", "bilinear"):
        raise UserError(f"{where}: pretrained_cfg resizes {data['interpolation']!r}; the toolkit resizes bicubic or "
                        "bilinear.")
    if data.get("crop_mode", "center") != "center":
        raise UserError(f"{where}: pretrained_cfg's crop_mode {data['crop_mode']!r} is not built; the toolkit "
                        "centre-crops.")
    if _square(list(data["input_size"][1:]), "input_size", where) != img_size:
        raise UserError(f"{where}: pretrained_cfg's input_size {list(data['input_size'])} is not the model's {img_size}.")
    return {"DATA.MEAN": [float(v) for v in data["mean"]], "DATA.STD": [float(v) for v in data["std"]],
            "DATA.INTERPOLATION": data["interpolation"], **crop_values(float(data["crop_pct"]))}
