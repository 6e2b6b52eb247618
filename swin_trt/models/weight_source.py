"""Where a model's weights come from, and what they bring: the one module every command asks.

A weights reference (``--resume``, ``--pretrained``, ``--compare-checkpoint``) is one of

- a ``.pth`` file: the original's releases, our training and quantized checkpoints, timm-layout state dicts
  (``torch.load(weights_only=True)``);
- a ``.safetensors`` file in any layout :func:`models.checkpoint.load_weights` accepts (read without unpickling);
- a timm Hub folder: ``config.json`` (``architecture``, ``model_args``, ``pretrained_cfg``) and ``model.safetensors``
  (or ``pytorch_model.bin``), as ``timm.models.save_for_hf`` writes it;
- a transformers folder: ``config.json`` (``model_type`` swin or swinv2), ``model.safetensors`` (or its shards, or
  ``pytorch_model.bin``) and ``preprocessor_config.json``, as ``save_pretrained`` writes them;
- ``hf:ORG/NAME[@REVISION]``: that Hub repository, resolved by ``huggingface_hub`` into its cache (downloaded on a
  machine with a network; read from the cache alone with ``HF_HUB_OFFLINE=1``).

:func:`resolve` checks a reference and says what it is (:class:`WeightSource`); :func:`read_checkpoint` reads its
tensors; :func:`weights_config` makes the config of a command from ``--cfg`` and the folder's own files (a folder
needs no YAML; with one, every field they disagree on is named). The contract of every exported file follows from
that config (``contract.Preprocessing.from_config``), label names included.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import re
import struct
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from yacs.config import CfgNode

from swin_trt.errors import UserError

_LOG = logging.getLogger("swin")
HF_PREFIX = "hf:"
# a folder's weights, in the order they are looked for
SAFETENSORS_FILES = ("model.safetensors", "model.safetensors.index.json")
PICKLE_FILES = ("pytorch_model.bin", "pytorch_model.bin.index.json")
_ZIP, _PICKLE = b"PK\x03\x04", 0x80
KINDS = {"pth": "PyTorch checkpoint", "safetensors": "safetensors file", "timm": "timm Hub folder",
         "transformers": "transformers folder"}


@dataclasses.dataclass(frozen=True)
class WeightSource:
    """A checked weights reference.

    Attributes:
        reference: as the user gave it (a path or ``hf:ORG/NAME[@REVISION]``).
        kind: ``pth``, ``safetensors``, ``timm`` or ``transformers``.
        path: the file, or the folder (for ``hf:``, the snapshot folder in the Hugging Face cache).
        weight_files: the files holding the tensors.
        hub_id, revision: the Hub repository and the commit its snapshot is (``hf:`` only).
        config_json, preprocessor: a folder's ``config.json`` and ``preprocessor_config.json`` (None when absent).
    """

    reference: str
    kind: str
    path: str
    weight_files: Tuple[str, ...]
    hub_id: Optional[str] = None
    revision: Optional[str] = None
    config_json: Optional[Dict[str, Any]] = None
    preprocessor: Optional[Dict[str, Any]] = None

    @property
    def is_folder(self) -> bool:
        return self.kind in ("timm", "transformers")

    @property
    def name(self) -> str:
        """MODEL.NAME for a folder: the Hub repository's name or the folder's, in file-name-safe characters."""
        base = self.hub_id.split("/")[-1] if self.hub_id else os.path.basename(os.path.normpath(self.path))
        return re.sub(r"[^A-Za-z0-9._-]+", "_", base) or "model"

    def describe(self) -> Dict[str, Any]:
        """What a report, a stamp or a quantized checkpoint records of where the weights came from."""
        from swin_trt.trt.metadata import file_sha256

        return {"reference": self.reference, "kind": self.kind, "path": os.path.abspath(self.path),
                "hub_id": self.hub_id, "revision": self.revision,
                "weights": [{"path": f, "sha256": file_sha256(f)} for f in self.weight_files]}

    def config_values(self) -> Dict[str, Any]:
        """The dotted config keys a folder's own files give (empty for a single file, which carries no config)."""
        from swin_trt.models.hub_config import timm_values, transformers_values

        if self.kind == "transformers":
            if self.preprocessor is None:
                _LOG.warning("%s has no preprocessor_config.json: its images are prepared as the config says "
                             "(DATA.MEAN, DATA.STD, DATA.INTERPOLATION, TEST.CROP)", self.reference)
            values = transformers_values(self.config_json, self.preprocessor, self.reference)
        elif self.kind == "timm":
            values = timm_values(self.config_json, self.reference)
        else:
            return {}
        return {"MODEL.NAME": self.name, **values}


def describe_file(path: str) -> str:
    """A few words on what ``path`` holds, for messages."""
    from swin_trt.validation import describe

    return describe(path)


def is_safetensors(path: str) -> bool:
    """True when ``path`` starts as a safetensors file does: an 8-byte little-endian header length, then JSON."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError:
        return False
    return len(head) == 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] < os.path.getsize(path)


def check_safetensors(path: str) -> Dict[str, Any]:
    """The header of a safetensors file, after checking that every tensor it lists lies inside the file.

    Raises:
        UserError: not a safetensors file, or truncated (the sentence names the file and what to do).
    """
    size = os.path.getsize(path)
    try:
        with open(path, "rb") as f:
            length = struct.unpack("<Q", f.read(8))[0]
            if length > size - 8:
                raise ValueError("header longer than the file")
            header = json.loads(f.read(length))
        end = max((int(t["data_offsets"][1]) for k, t in header.items() if k != "__metadata__"), default=0)
    except (ValueError, KeyError, TypeError, struct.error, UnicodeDecodeError):
        raise UserError(f"{path} is not a readable safetensors file (its header does not parse): download or copy it "
                        "again.") from None
    if 8 + length + end > size:
        raise UserError(f"{path} is truncated: its header lists {8 + length + end:,} bytes of tensors and the file has "
                        f"{size:,}: download or copy it again.")
    return header


def _folder_source(folder: str, reference: str, hub_id: Optional[str] = None,
                   revision: Optional[str] = None) -> WeightSource:
    config_path = os.path.join(folder, "config.json")
    if not os.path.isfile(config_path):
        raise UserError(f"folder {reference} has no config.json: pass a timm or transformers model folder (config.json "
                        "and model.safetensors), hf:ORG/NAME, or a .pth / .safetensors file with --cfg.")
    try:
        with open(config_path, encoding="utf-8") as f:
            config = json.load(f)
    except (ValueError, UnicodeDecodeError):
        raise UserError(f"{config_path} is not JSON: download or copy the folder again.") from None
    if not isinstance(config, dict) or not ("model_type" in config or "architecture" in config):
        raise UserError(f"{config_path} is neither transformers' (no model_type) nor timm's (no architecture): pass a "
                        "folder written by save_pretrained or timm.models.save_for_hf.")
    kind = "transformers" if "model_type" in config else "timm"
    preprocessor = None
    processor_path = os.path.join(folder, "preprocessor_config.json")
    if kind == "transformers" and os.path.isfile(processor_path):
        with open(processor_path, encoding="utf-8") as f:
            preprocessor = json.load(f)
    files = _weight_files(folder, reference)
    return WeightSource(reference, kind, folder, files, hub_id, revision, config, preprocessor)


def _weight_files(folder: str, reference: str) -> Tuple[str, ...]:
    """The weight files of a folder: ``model.safetensors``, its shards, or ``pytorch_model.bin`` (or its shards)."""
    for name in SAFETENSORS_FILES + PICKLE_FILES:
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            continue
        if name.endswith(".index.json"):
            with open(path, encoding="utf-8") as f:
                shards = sorted(set(json.load(f).get("weight_map", {}).values()))
            missing = [s for s in shards if not os.path.isfile(os.path.join(folder, s))]
            if missing:
                raise UserError(f"{reference}: {name} lists shards that are not there ({', '.join(missing[:3])}): "
                                "download the folder again.")
            files = tuple(os.path.join(folder, s) for s in shards)
        else:
            files = (path,)
        for file in files:
            if file.endswith(".safetensors"):
                check_safetensors(file)
        return files
    raise UserError(f"{reference} has a config.json but no weights (model.safetensors or pytorch_model.bin): download "
                    "the folder again.")


def parse_hub_reference(reference: str) -> Tuple[str, Optional[str]]:
    """``hf:ORG/NAME[@REVISION]`` -> ``(ORG/NAME, REVISION or None)``.

    Raises:
        UserError: not of that form.
    """
    body = reference[len(HF_PREFIX):]
    repo, _, revision = body.partition("@")
    if not re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", repo) or ("@" in body and not revision):
        raise UserError(f"{reference} is not a Hub reference: write hf:ORG/NAME or hf:ORG/NAME@REVISION, e.g. "
                        "hf:microsoft/swin-tiny-patch4-window7-224.")
    return repo, revision or None


def _hub_snapshot(reference: str) -> Tuple[str, str, Optional[str]]:
    """The snapshot folder of ``hf:ORG/NAME[@REVISION]`` in the Hugging Face cache (downloaded when online).

    Returns:
        (folder, repository id, commit hash).
    """
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    repo, revision = parse_hub_reference(reference)
    fetch = f"`hf download {repo}{' --revision ' + revision if revision else ''}`"
    try:
        folder = snapshot_download(repo, revision=revision, allow_patterns=["*.json", "*.safetensors"])
        if not any(os.path.isfile(os.path.join(folder, n)) for n in SAFETENSORS_FILES):
            folder = snapshot_download(repo, revision=revision, allow_patterns=["*.json", "*.bin"])
    except LocalEntryNotFoundError:
        where = "HF_HUB_OFFLINE=1 is set" if constants.HF_HUB_OFFLINE else "the Hub could not be reached"
        raise UserError(f"{reference} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and {where}: fetch "
                        f"it on a machine with a network with {fetch} (into the same HF_HUB_CACHE), then run again.") from None
    except GatedRepoError:
        raise UserError(f"{reference} is a gated repository: accept its terms on the Hub and log in (`hf auth login`), "
                        "then run again.") from None
    except RepositoryNotFoundError:
        raise UserError(f"{reference}: the Hub has no repository {repo} (or it is private): check the name.") from None
    except RevisionNotFoundError:
        raise UserError(f"{reference}: {repo} has no revision {revision}: check the branch, tag or commit.") from None
    except (HfHubHTTPError, OSError) as err:
        raise UserError(f"{reference} could not be downloaded ({type(err).__name__}): check the network, or fetch it "
                        f"with {fetch} and set HF_HUB_OFFLINE=1.") from None
    return folder, repo, os.path.basename(os.path.normpath(folder))


def is_folder_reference(reference: str) -> bool:
    """True for a reference that brings its own config: a folder or ``hf:ORG/NAME``."""
    return reference.startswith(HF_PREFIX) or os.path.isdir(reference)


def _stamp(reference: str) -> Tuple:
    """What changes when a local reference's files change (sizes and times), so a cached answer is never stale."""
    if os.path.isdir(reference):
        return tuple(sorted((e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in os.scandir(reference)))
    if os.path.isfile(reference):
        stat = os.stat(reference)
        return (stat.st_size, stat.st_mtime_ns)
    return ()


def resolve(reference: str) -> WeightSource:
    """Check a weights reference and say what it is (see the module docstring); a command asks several times, the
    answer is worked out once per state of the files (and once per process for ``hf:``).

    Raises:
        UserError: missing, of no kind listed above, a folder without config.json or weights, a truncated
            safetensors file, a Hub repository that cannot be had (each in one sentence).
    """
    return _resolve(reference, () if reference.startswith(HF_PREFIX) else _stamp(reference))


@functools.lru_cache(maxsize=16)
def _resolve(reference: str, stamp: Tuple) -> WeightSource:
    if reference.startswith(HF_PREFIX):
        folder, repo, revision = _hub_snapshot(reference)
        return _folder_source(folder, reference, repo, revision)
    if os.path.isdir(reference):
        return _folder_source(reference, reference)
    if not os.path.isfile(reference):
        raise UserError(f"weights file or folder {reference} does not exist: pass a .pth or .safetensors file, a timm "
                        "or transformers model folder, or hf:ORG/NAME.")
    if reference.endswith(".safetensors") or is_safetensors(reference):
        check_safetensors(reference)
        return WeightSource(reference, "safetensors", reference, (reference,))
    with open(reference, "rb") as f:
        head = f.read(4)
    if head.startswith(_ZIP) or (len(head) > 1 and head[0] == _PICKLE):
        return WeightSource(reference, "pth", reference, (reference,))
    raise UserError(f"weights {reference} are not a PyTorch checkpoint or a safetensors file (it is "
                    f"{describe_file(reference)}): pass a .pth or .safetensors file, a model folder, or hf:ORG/NAME.")


def _read_file(path: str) -> Dict[str, torch.Tensor]:
    if path.endswith(".safetensors"):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(path, device="cpu")
        except SafetensorError as err:
            raise UserError(f"{path} is not a readable safetensors file ({err}): download or copy it again.") from None
    from swin_trt.checkpoint_file import load_checkpoint_file

    return load_checkpoint_file(path)


def read_checkpoint(reference: str) -> Dict[str, Any]:
    """The checkpoint dict of a reference: a ``.pth`` file's own dict (with ``model``, optimizer state...), else
    ``{"model": tensors}`` read without unpickling (safetensors) or weights-only (``pytorch_model.bin``)."""
    source = resolve(reference)
    if source.kind == "pth":
        return _read_file(source.path)
    tensors: Dict[str, torch.Tensor] = {}
    for path in source.weight_files:
        tensors.update(_read_file(path))
    return {"model": tensors}


def opts_keys(opts: Sequence[str]) -> List[str]:
    """The keys an ``--opts KEY VALUE ...`` list sets."""
    return list(opts[0::2])


def disagreements(config: CfgNode, values: Dict[str, Any], skip: Sequence[str] = ()) -> List[str]:
    """``KEY config-value vs folder-value`` for every derived key the config holds otherwise (names and keys in
    ``skip`` aside; a config without label names takes the folder's)."""
    from swin_trt.contract import differs

    found = []
    for key, value in values.items():
        if key in ("MODEL.NAME",) or key in skip:
            continue
        node = config
        for part in key.split("."):
            node = node[part]
        if key == "MODEL.LABEL_NAMES" and not node:
            continue
        if key == "TEST.CROP_PCT" and not config.TEST.CROP:
            continue
        if differs(list(node) if isinstance(node, (list, tuple)) else node,
                    list(value) if isinstance(value, (list, tuple)) else value):
            shown = (lambda v: f"{len(v)} names" if key == "MODEL.LABEL_NAMES" else v)
            found.append(f"{key} {shown(node)} vs {shown(value)}")
    return found


def weights_config(cfg_file: Optional[str], opts: Sequence[str], weights: Optional[str], **overrides: Any) -> CfgNode:
    """The config of a command that loads ``weights``: defaults ← ``--cfg`` ← the folder's own files ← ``--opts`` ←
    flags.

    A folder (or ``hf:``) needs no ``--cfg``: its config.json (and image processor or pretrained_cfg) make the
    model and its preprocessing. With ``--cfg`` too, every field they disagree on is one sentence (keys set by
    ``--opts`` are the user's choice and not compared). A single file carries no config: ``--cfg`` is required.

    Raises:
        UserError: no config for a single file, a disagreement, or what :func:`resolve` raises.
    """
    from swin_trt.config import get_config

    source = resolve(weights) if weights else None
    values = source.config_values() if source is not None else {}
    if not values:
        if not cfg_file:
            what = f"{weights} carries no config" if weights else "no --resume or --cfg given"
            raise UserError(f"{what}: pass --cfg with the model's config (configs/*.yaml), or a timm or transformers "
                            "model folder (or hf:ORG/NAME), which carries its own.")
        return get_config(cfg_file, opts, **overrides)
    if cfg_file:
        found = disagreements(get_config(cfg_file, opts), values, opts_keys(opts))
        if found:
            raise UserError(f"config {cfg_file} disagrees with {weights} ({'; '.join(found[:4])}): leave --cfg out to "
                            "use the folder's own config, or pass the config it was made with.")
        values = {k: v for k, v in values.items() if k in ("MODEL.LABEL_NAMES",)}
    return get_config(cfg_file, opts, values=values, **overrides)
