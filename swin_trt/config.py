"""yacs configuration: defaults, per-model YAML files and command-line overrides.

The layout follows the original Swin-Transformer repository (DATA, MODEL with
SWIN, SWINV2 and SWIN_MLP sub-nodes, TRAIN, AUG, TEST) and adds QUANT, ONNX and TRT
nodes for the deployment steps. A YAML under ``configs/`` holds only what
differs from these defaults.
"""
from __future__ import annotations

import os
from typing import Any, Iterable, Mapping, Optional, Sequence

import yaml
from yacs.config import CfgNode as CN

from swin_trt.errors import UserError

_C = CN()
_C.BASE = [""]  # YAML files merged before this one (paths relative to it)

# -----------------------------------------------------------------------------
# Data
# -----------------------------------------------------------------------------
_C.DATA = CN()
_C.DATA.BATCH_SIZE = 128  # images per GPU (or per process) and step
_C.DATA.DATA_PATH = ""  # ImageNet-style root holding train/ and val/
_C.DATA.DATASET = "imagenet"  # accepted so that the original's YAML files load; unused (any ImageFolder tree: train/<class>/, val/<class>/)
_C.DATA.IMG_SIZE = 224  # input resolution (square)
_C.DATA.INTERPOLATION = "bicubic"  # resize interpolation: random | bilinear | bicubic
_C.DATA.PIN_MEMORY = True  # pin host memory for faster copies to the GPU
_C.DATA.NUM_WORKERS = 8  # data loader worker processes
_C.DATA.MEAN = [0.485, 0.456, 0.406]  # normalisation mean (ImageNet)
_C.DATA.STD = [0.229, 0.224, 0.225]  # normalisation std (ImageNet)
_C.DATA.ON_BAD_IMAGE = "fail"  # unreadable image: fail (stop naming it) | skip (warn and drop it)

# -----------------------------------------------------------------------------
# Model
# -----------------------------------------------------------------------------
_C.MODEL = CN()
_C.MODEL.TYPE = "swin"  # swin | swinv2 | swin_mlp
_C.MODEL.NAME = "swin_tiny_patch4_window7_224"  # used in file names and logs
_C.MODEL.PRETRAINED = ""  # checkpoint to fine-tune from (head re-initialised if its size differs)
_C.MODEL.RESUME = ""  # checkpoint to evaluate or resume from
_C.MODEL.NUM_CLASSES = 1000  # classifier outputs
_C.MODEL.DROP_RATE = 0.0  # dropout
_C.MODEL.DROP_PATH_RATE = 0.1  # stochastic depth (highest rate, linear over blocks)
_C.MODEL.LABEL_SMOOTHING = 0.1  # label smoothing for the training loss
# the class names in logit order (transformers' id2label, timm's label_names); empty: unnamed classes. Evaluation maps
# the class folders of a dataset to them by name when every folder is one of them (data/image_folder.py)
_C.MODEL.LABEL_NAMES = []
# epsilon of the blocks' LayerNorms and the final norm (transformers' layer_norm_eps; the patch-embedding and merging
# norms keep PyTorch's 1e-5, as in the original and in transformers)
_C.MODEL.LAYER_NORM_EPS = 1e-5

_C.MODEL.SWIN = CN()
_C.MODEL.SWIN.PATCH_SIZE = 4  # patch-embedding stride and kernel
_C.MODEL.SWIN.IN_CHANS = 3  # image channels
_C.MODEL.SWIN.EMBED_DIM = 96  # channels of the first stage
_C.MODEL.SWIN.DEPTHS = [2, 2, 6, 2]  # blocks per stage
_C.MODEL.SWIN.NUM_HEADS = [3, 6, 12, 24]  # attention heads per stage
_C.MODEL.SWIN.WINDOW_SIZE = 7  # tokens per window side
_C.MODEL.SWIN.MLP_RATIO = 4.0  # MLP hidden width / channels
_C.MODEL.SWIN.QKV_BIAS = True  # bias in the qkv projection
_C.MODEL.SWIN.QK_SCALE = None  # attention scale; None means head_dim ** -0.5
_C.MODEL.SWIN.APE = False  # absolute position embedding
_C.MODEL.SWIN.PATCH_NORM = True  # LayerNorm after patch embedding

_C.MODEL.SWINV2 = CN()
_C.MODEL.SWINV2.PATCH_SIZE = 4  # patch-embedding stride and kernel
_C.MODEL.SWINV2.IN_CHANS = 3  # image channels
_C.MODEL.SWINV2.EMBED_DIM = 96  # channels of the first stage
_C.MODEL.SWINV2.DEPTHS = [2, 2, 6, 2]  # blocks per stage
_C.MODEL.SWINV2.NUM_HEADS = [3, 6, 12, 24]  # attention heads per stage
_C.MODEL.SWINV2.WINDOW_SIZE = 7  # tokens per window side (the last stages' windows shrink to their grid)
_C.MODEL.SWINV2.MLP_RATIO = 4.0  # MLP hidden width / channels
_C.MODEL.SWINV2.QKV_BIAS = True  # learnable q and v biases (k has none)
_C.MODEL.SWINV2.APE = False  # absolute position embedding
_C.MODEL.SWINV2.PATCH_NORM = True  # LayerNorm after patch embedding
_C.MODEL.SWINV2.PRETRAINED_WINDOW_SIZES = [0, 0, 0, 0]  # per stage, the window of pre-training (0: the same window)

_C.MODEL.SWIN_MLP = CN()
_C.MODEL.SWIN_MLP.PATCH_SIZE = 4
_C.MODEL.SWIN_MLP.IN_CHANS = 3
_C.MODEL.SWIN_MLP.EMBED_DIM = 96
_C.MODEL.SWIN_MLP.DEPTHS = [2, 2, 6, 2]
_C.MODEL.SWIN_MLP.NUM_HEADS = [3, 6, 12, 24]
_C.MODEL.SWIN_MLP.WINDOW_SIZE = 7
_C.MODEL.SWIN_MLP.MLP_RATIO = 4.0
_C.MODEL.SWIN_MLP.APE = False
_C.MODEL.SWIN_MLP.PATCH_NORM = True

# -----------------------------------------------------------------------------
# Training
# -----------------------------------------------------------------------------
_C.TRAIN = CN()
_C.TRAIN.START_EPOCH = 0  # accepted so that the original's YAML files load; unused (training resumes after the checkpoint's epoch)
_C.TRAIN.EPOCHS = 300  # training epochs
_C.TRAIN.WARMUP_EPOCHS = 20  # linear warm-up epochs
_C.TRAIN.WEIGHT_DECAY = 0.05  # AdamW weight decay (not on norms, biases, position tables)
_C.TRAIN.BASE_LR = 5e-4  # learning rate for a total batch of 512 (scaled linearly)
_C.TRAIN.WARMUP_LR = 5e-7  # learning rate at the start of warm-up (scaled likewise)
_C.TRAIN.MIN_LR = 5e-6  # learning rate at the end of the cosine (scaled likewise)
_C.TRAIN.CLIP_GRAD = 5.0  # gradient-norm clipping; 0 turns it off
_C.TRAIN.AUTO_RESUME = True  # resume from the newest checkpoint in the output folder
_C.TRAIN.ACCUMULATION_STEPS = 1  # gradient accumulation steps
_C.TRAIN.OPTIMIZER = CN()
_C.TRAIN.OPTIMIZER.NAME = "adamw"  # adamw (the Swin recipes) | sgd (Nesterov momentum), as the original
_C.TRAIN.OPTIMIZER.EPS = 1e-8
_C.TRAIN.OPTIMIZER.BETAS = (0.9, 0.999)  # AdamW betas
_C.TRAIN.OPTIMIZER.MOMENTUM = 0.9  # SGD momentum

# -----------------------------------------------------------------------------
# Augmentation (training only)
# -----------------------------------------------------------------------------
_C.AUG = CN()
_C.AUG.COLOR_JITTER = 0.4  # colour jitter factor
_C.AUG.CROP_PADDING = 4  # padded random crop replacing RandomResizedCrop at IMG_SIZE <= 32 (the original's)
_C.AUG.HFLIP = 0.5  # horizontal-flip probability (0 for data that is not mirror-symmetric, e.g. digits)
_C.AUG.AUTO_AUGMENT = "rand-m9-mstd0.5-inc1"  # timm RandAugment policy; "none" turns it off
_C.AUG.REPROB = 0.25  # random-erase probability
_C.AUG.REMODE = "pixel"  # random-erase mode
_C.AUG.RECOUNT = 1  # random-erase count
_C.AUG.MIXUP = 0.8  # mixup alpha; 0 turns it off
_C.AUG.CUTMIX = 1.0  # cutmix alpha; 0 turns it off
_C.AUG.CUTMIX_MINMAX = None  # cutmix min/max ratio (overrides alpha)
_C.AUG.MIXUP_PROB = 1.0  # probability of mixup or cutmix per batch
_C.AUG.MIXUP_SWITCH_PROB = 0.5  # probability of cutmix when both are on
_C.AUG.MIXUP_MODE = "batch"  # batch | pair | elem

# -----------------------------------------------------------------------------
# Testing
# -----------------------------------------------------------------------------
_C.TEST = CN()
_C.TEST.CROP = True  # resize the short side to IMG_SIZE / CROP_PCT, then centre-crop (else resize to the input size)
_C.TEST.CROP_PCT = 0.875  # with CROP: the crop's share of the resized short side (timm's crop_pct; 0.875 = 224/256)
_C.TEST.SEQUENTIAL = True  # accepted so that the original's YAML files load; unused (evaluation always reads val/ in file order, one shard per rank)

# -----------------------------------------------------------------------------
# Quantization (swin_quant_flow.py)
# -----------------------------------------------------------------------------
_C.QUANT = CN()
# int8 | fp8 (E4M3, Hopper and later) | mxfp8 | nvfp4 (Blackwell's block formats, quantized on an NVIDIA GPU) |
# auto (a format per module among AUTO_FORMATS within EFFECTIVE_BITS)
_C.QUANT.FORMAT = "int8"
_C.QUANT.CALIB_METHOD = "max"  # activation ranges: max | histogram (entropy) | percentile
_C.QUANT.PERCENTILE = 99.99  # percentile for the percentile calibrator
_C.QUANT.NUM_CALIB_BATCH = 4  # training batches seen by calibration
_C.QUANT.FINETUNE_EPOCHS = 1  # QAT epochs after calibration
_C.QUANT.FINETUNE_LR = 5e-6  # QAT learning rate for a total batch of 512, cosine to 0 (~1% of TRAIN.BASE_LR, Wu et al. 2020)
_C.QUANT.DISABLED = []  # placement-table rows to switch off (see quant/placement.py)
# modules left unquantized (fnmatch patterns over the model's module names, e.g. "layers.*.blocks.*.attn.qkv"): their
# GEMMs get no Q/DQ and run in HIGH_PRECISION; swin_quant_flow.py --sensitivity --sensitivity-by layer says which hurt
_C.QUANT.KEEP_HIGH_PRECISION = []
# SmoothQuant's migration strength alpha, folded into the LayerNorm before each Linear (quant/smoothquant.py); 0 is off
_C.QUANT.SMOOTH_ALPHA = 0.0
# FORMAT auto: ModelOpt's AutoQuantize picks INT8, FP8 or high precision per Linear within this many weight bits on
# average (8: every weight 8-bit; 16: none quantized); quant/auto.py
_C.QUANT.EFFECTIVE_BITS = 9.0
_C.QUANT.AUTO_FORMATS = ["int8", "fp8"]  # FORMAT auto searches these per Linear (and leaving it unquantized)
# images of val/ the sensitivity sweep evaluates every site on (a seeded pick; all of val/ when it holds fewer): the
# sweep is 2 x sites + 2 evaluations. On the outlier test bed 30, 60 and 120 images rank the harmful rows (qkv.input,
# fc1.input) first, in the order all 360 do (docs/RESULTS.md); 1,000 keeps a top-1 step at 0.1 point and costs, by row
# on ImageNet, 40,000 Swin-T images instead of 2 million
_C.QUANT.SENSITIVITY_IMAGES = 1000
_C.QUANT.HIGH_PRECISION = "fp16"  # type between the Q/DQ pairs of the exported graph: fp16 | bf16 | fp32 (debugging only)
# export check (quant/export_check.py), on in-distribution images: every logit of the Q/DQ graph within this many
# quantization steps of the classifier's input of the fake-quantized model (FP16 between the pairs moves values
# across rounding boundaries). Measured on the digits, PTQ and after 1-3 QAT epochs: at most 1.83 (V1) and 0.63 (V2)
_C.QUANT.CHECK_STEPS = 4.0
_C.QUANT.CHECK_FP16_FACTOR = 2.0  # ... plus this many times what PyTorch's own FP16 run of the model moves them
_C.QUANT.CHECK_IMAGES = 64  # calibration images the export is checked on

# -----------------------------------------------------------------------------
# ONNX export
# -----------------------------------------------------------------------------
_C.ONNX = CN()
_C.ONNX.OPSET = 20  # >= 17: LayerNormalization is one op; 20: GELU is one op
_C.ONNX.BATCH_SIZE = 1  # batch of the exported graph (ignored with DYNAMIC_BATCH)
_C.ONNX.DYNAMIC_BATCH = False  # symbolic batch dimension
# Ops kept in FP32 by the FP16/BF16 conversion, of the FP16 graph and of every Q/DQ graph alike. The
# original kept POW and REDUCE, the LayerNorm internals; from opset 17 LayerNormalization is one op
# that computes its statistics in FP32 with FP16 input and output (stash_type), and Softmax subtracts
# the row maximum before exp, so both run in FP16 (onnx_tools/fp16.py says why). ReduceL2 is Swin V2's
# q and k normalisation: its sum of squares grows with the square of the activations (benchmarks/fp16_ranges.py).
_C.ONNX.FP16_KEEP_FP32_OPS = ["ReduceMean", "Pow", "ReduceL2"]

# -----------------------------------------------------------------------------
# TensorRT
# -----------------------------------------------------------------------------
_C.TRT = CN()
_C.TRT.WORKSPACE_MIB = 4096  # builder workspace limit
_C.TRT.MIN_BATCH = 1  # optimisation profile (dynamic-batch ONNX files)
_C.TRT.OPT_BATCH = 64
_C.TRT.MAX_BATCH = 256
_C.TRT.OPTIMIZATION_LEVEL = 3  # builder optimisation level 0..5

# -----------------------------------------------------------------------------
# Misc
# -----------------------------------------------------------------------------
_C.AMP_ENABLE = True  # mixed precision on GPU (ignored on CPU)
_C.OUTPUT = "output"  # root of the output folders
_C.TAG = "default"  # sub-folder under OUTPUT/MODEL.NAME
_C.SAVE_FREQ = 1  # checkpoint every N epochs
_C.PRINT_FREQ = 10  # training and QAT log loss, learning rate and images/s every N steps
_C.SEED = 0  # random seed
_C.EVAL_MODE = False  # evaluate only
_C.LOCAL_RANK = 0  # accepted so that the original's YAML files load; unused (torchrun's LOCAL_RANK environment variable picks the GPU)


# MODEL.TYPE -> the node under MODEL that holds that family's architecture
MODEL_NODES = {"swin": "SWIN", "swinv2": "SWINV2", "swin_mlp": "SWIN_MLP"}


def model_node(config: CN) -> CN:
    """The architecture node of ``config.MODEL.TYPE``: ``MODEL.SWIN``, ``MODEL.SWINV2`` or ``MODEL.SWIN_MLP``.

    Raises:
        UserError: MODEL.TYPE names no known family.
    """
    if config.MODEL.TYPE not in MODEL_NODES:
        raise UserError(f"MODEL.TYPE {config.MODEL.TYPE!r} is not known: use one of {', '.join(MODEL_NODES)}.")
    return config.MODEL[MODEL_NODES[config.MODEL.TYPE]]


def default_config() -> CN:
    """A fresh copy of the defaults."""
    return _C.clone()


def _merge_yaml(config: CN, cfg_file: str) -> None:
    if not os.path.isfile(cfg_file):
        raise UserError(f"config file {cfg_file} does not exist: pass one of the files under configs/.")
    try:
        with open(cfg_file, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise UserError(f"config file {cfg_file} is not YAML ({type(err).__name__}): pass one of the files under configs/.") from None
    if not isinstance(data, dict):
        raise UserError(f"config file {cfg_file} holds a YAML {type(data).__name__}, not KEY: VALUE pairs: pass one of the files under configs/.")
    for base in data.get("BASE", [""]):
        if base:
            _merge_yaml(config, os.path.join(os.path.dirname(cfg_file), base))
    config.defrost()
    try:
        config.merge_from_file(cfg_file)
    except KeyError as err:
        raise UserError(f"config file {cfg_file} has an unknown key ({err.args[0]}): check its spelling against config.py.") from None
    except ValueError as err:
        raise UserError(f"config file {cfg_file} has a value of the wrong type ({err}).") from None


def _merge_opts(config: CN, opts: Sequence[str]) -> None:
    if len(opts) % 2:
        raise UserError(f"--opts takes KEY VALUE pairs; got an odd number of items: {' '.join(opts)}.")
    try:
        config.merge_from_list(list(opts))
    except (KeyError, AssertionError) as err:
        msg = err.args[0] if err.args else err
        raise UserError(f"--opts has an unknown key ({msg}): check its spelling against config.py.") from None
    except ValueError as err:
        raise UserError(f"--opts has a value of the wrong type ({err}).") from None


def config_beside(artifact: str) -> str:
    """Where the config a file was made with is written: ``weights/x_fp16.onnx`` -> ``weights/x_fp16.yaml``."""
    return os.path.splitext(artifact)[0] + ".yaml"


def save_config(config: CN, path: str) -> str:
    """Write ``config`` as YAML that ``--cfg`` reads back, atomically; returns ``path``."""
    from swin_trt.files import atomic_write_bytes

    atomic_write_bytes(path, config.dump().encode())
    return path


def get_config(cfg_file: Optional[str] = None, opts: Iterable[str] = (), values: Optional[Mapping[str, Any]] = None,
               **overrides: Any) -> CN:
    """Defaults ← YAML file ← ``values`` ← ``--opts`` pairs ← explicit CLI flags.

    Args:
        cfg_file: path of a YAML under configs/ (or None for the defaults).
        opts: flat ``KEY VALUE`` list as given after ``--opts``.
        values: dotted keys a weights folder's own files give (models/weight_source.py).
        overrides: dotted keys (``DATA__BATCH_SIZE`` style with ``__``) set last
            when their value is not None; the scripts map their flags here.
    """
    config = default_config()
    if cfg_file:
        _merge_yaml(config, cfg_file)
    config.defrost()
    for key, value in (values or {}).items():
        node = config
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = list(value) if isinstance(value, tuple) else value
    _merge_opts(config, list(opts or ()))
    for key, value in overrides.items():
        if value is None:
            continue
        node = config
        *parents, leaf = key.split("__")
        for p in parents:
            node = node[p]
        node[leaf] = value
    config.freeze()
    return config
