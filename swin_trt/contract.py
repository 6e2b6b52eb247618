"""The contract an exported model carries: which images it takes and how to make them from a file.

Every ONNX file written by export.py or swin_quant_flow.py records it in its
``metadata_props`` (keys ``swin_trt.<field>``, JSON values), and
trt/build_engine.py copies it into the engine's JSON sidecar, as timm's
``pretrained_cfg`` travels with its models. A later step then never guesses
the preprocessing: the evaluators and the benchmark check ``--cfg`` against
the contract (one sentence on a mismatch) or take it when ``--cfg`` is left
out.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import onnx
from yacs.config import CfgNode

from swin_trt.config import model_node
from swin_trt.data.transforms import NO_CROP, eval_crop_pct
from swin_trt.errors import UserError

KEY_PREFIX = "swin_trt."


def config_input_shape(config: CfgNode) -> Tuple[int, int, int]:
    """(C, H, W) of the images the config's model takes."""
    return model_node(config).IN_CHANS, config.DATA.IMG_SIZE, config.DATA.IMG_SIZE


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """What a model file needs from its input pipeline (timm's ``pretrained_cfg`` fields, and the model it is).

    Attributes:
        model: MODEL.NAME.
        num_classes: logits per image.
        input_size: (C, H, W).
        mean, std: per-channel normalisation of [0, 1] pixels.
        crop_pct: the centre crop of evaluation (0.875: short side to floor(H / 0.875), crop H); 1.0 means a plain
            resize.
        interpolation: DATA.INTERPOLATION.
        labels: the class names in logit order (MODEL.LABEL_NAMES); empty when the classes are unnamed.
    """

    model: str
    num_classes: int
    input_size: Tuple[int, int, int]
    mean: Tuple[float, ...]
    std: Tuple[float, ...]
    crop_pct: float
    interpolation: str
    labels: Tuple[str, ...] = ()

    @classmethod
    def from_config(cls, config: CfgNode) -> "Preprocessing":
        return cls(config.MODEL.NAME, int(config.MODEL.NUM_CLASSES), tuple(config_input_shape(config)),
                   tuple(float(v) for v in config.DATA.MEAN), tuple(float(v) for v in config.DATA.STD),
                   eval_crop_pct(config), config.DATA.INTERPOLATION, tuple(str(v) for v in config.MODEL.LABEL_NAMES))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Preprocessing":
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in fields}
        return cls(**values)

    def as_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def mismatches(self, config: CfgNode) -> List[str]:
        """``field file-value vs config-value`` for every field the config sets otherwise (a config without label
        names leaves the file's names alone: unnamed classes are not other classes)."""
        other = Preprocessing.from_config(config)
        return [f"{f.name} {_shown(getattr(self, f.name))} vs {_shown(getattr(other, f.name))}"
                for f in dataclasses.fields(self)
                if differs(getattr(self, f.name), getattr(other, f.name)) and not (f.name == "labels" and not other.labels)]

    def check_config(self, config: CfgNode, source: str, cfg_file: str) -> None:
        """Raise a :class:`UserError` unless ``config`` prepares images as ``source`` (a file) was made to take them."""
        found = self.mismatches(config)
        if found:
            raise UserError(f"{source} was made for other images than config {cfg_file} describes "
                            f"({'; '.join(found)}): pass the config it was made with, or leave --cfg out to use "
                            "the file's own.")

    def config(self, base: CfgNode) -> CfgNode:
        """``base`` (defaults, ``--opts``, flags) with this contract's model name, classes and preprocessing."""
        config = base.clone()
        config.defrost()
        config.MODEL.NAME, config.MODEL.NUM_CLASSES = self.model, self.num_classes
        model_node(config).IN_CHANS, config.DATA.IMG_SIZE = self.input_size[0], self.input_size[1]
        config.DATA.MEAN, config.DATA.STD = list(self.mean), list(self.std)
        config.DATA.INTERPOLATION, config.TEST.CROP = self.interpolation, self.crop_pct < NO_CROP
        if self.crop_pct < NO_CROP:
            config.TEST.CROP_PCT = self.crop_pct
        config.MODEL.LABEL_NAMES = list(self.labels)
        config.freeze()
        return config


def _shown(value: Any) -> Any:
    """A field's value for a message: a long list of names as its first few."""
    if isinstance(value, tuple) and len(value) > 4 and all(isinstance(v, str) for v in value):
        return f"({', '.join(value[:3])}, ... {len(value)} names)"
    return value


def differs(a: Any, b: Any) -> bool:
    """Whether two config or contract values differ (sequences item by item, floats beyond 1e-6)."""
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) != len(b) or any(differs(x, y) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        return abs(float(a) - float(b)) > 1e-6
    return a != b


def write_onnx_contract(model: onnx.ModelProto, contract: Preprocessing) -> onnx.ModelProto:
    """Record ``contract`` in ``model.metadata_props`` (replacing an older record, keeping other records); returns
    ``model``."""
    fields = {KEY_PREFIX + f.name for f in dataclasses.fields(Preprocessing)}
    kept = [p for p in model.metadata_props if p.key not in fields]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in contract.as_dict().items():
        model.metadata_props.add(key=KEY_PREFIX + key, value=json.dumps(value))
    return model


def onnx_contract(model: onnx.ModelProto) -> Optional[Preprocessing]:
    """The contract recorded in ``model`` (None for a file made elsewhere, or before files carried one)."""
    fields = {f.name for f in dataclasses.fields(Preprocessing)}
    values = {p.key[len(KEY_PREFIX):]: json.loads(p.value) for p in model.metadata_props
              if p.key.startswith(KEY_PREFIX) and p.key[len(KEY_PREFIX):] in fields}
    return Preprocessing.from_dict(values) if values else None


def read_onnx_contract(path: str) -> Optional[Preprocessing]:
    """:func:`onnx_contract` of the file ``path`` (its weights are not read)."""
    return onnx_contract(onnx.load(path, load_external_data=False))


def resolve_config(cfg_file: Optional[str], opts: Sequence[str], contract: Optional[Preprocessing], source: str,
                   **overrides: Any) -> CfgNode:
    """The config of a command that consumes ``source`` (an ONNX file or engine) carrying ``contract``.

    With ``cfg_file`` the config is checked against the contract; without it the contract makes the config.

    Raises:
        UserError: the config contradicts the contract, or there is neither a config nor a contract.
    """
    from swin_trt.config import get_config

    if cfg_file:
        config = get_config(cfg_file, opts, **overrides)
        if contract is not None:
            contract.check_config(config, source, cfg_file)
        return config
    if contract is None:
        raise UserError(f"{source} records no preprocessing (it was made elsewhere, or by an older version): "
                        "pass --cfg with the config it was made with.")
    return contract.config(get_config(None, opts, **overrides))
