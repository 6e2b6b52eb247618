"""Reading a checkpoint file safely: ``torch.load(weights_only=True)`` plus exactly what the original repository saves."""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Dict

import torch

from swin_trt.errors import UserError
from swin_trt.files import require_file


class _CfgNodeAsOrderedDict:
    """Stands in for ``yacs.config.CfgNode`` while a checkpoint is unpickled with ``weights_only=True``.

    The original repository saves its yacs config inside every training checkpoint. The weights-only
    unpickler fills only exact ``dict``/``OrderedDict`` objects with items, so even an allow-listed
    ``CfgNode`` (a dict subclass) is refused; this stand-in makes the node an ``OrderedDict`` (whose
    ``__dict__`` takes the node's flags) and no yacs code runs while reading. :func:`_restore_cfgnodes`
    turns the result back into a ``CfgNode``.
    """

    def __new__(cls, *args: Any) -> "OrderedDict":
        return OrderedDict()


# exactly the globals a checkpoint of the original repository's training needs beyond PyTorch's defaults
CHECKPOINT_SAFE_GLOBALS = [(_CfgNodeAsOrderedDict, "yacs.config.CfgNode")]
_CFGNODE_FLAG = "__immutable__"  # set in every CfgNode's __dict__ by its constructor


def _restore_cfgnodes(value: Any) -> Any:
    """``OrderedDict`` objects made by :class:`_CfgNodeAsOrderedDict` (nested ones too) back into ``CfgNode``."""
    if isinstance(value, OrderedDict) and _CFGNODE_FLAG in vars(value):
        from yacs.config import CfgNode

        node = CfgNode({k: _restore_cfgnodes(v) for k, v in value.items()})
        if vars(value)[_CFGNODE_FLAG]:
            node.freeze()
        return node
    if type(value) is dict:
        return {k: _restore_cfgnodes(v) for k, v in value.items()}
    return value


def load_checkpoint_file(path: str) -> Dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` (plus :data:`CHECKPOINT_SAFE_GLOBALS`).

    Raises:
        UserError: the file is missing or unreadable, or holds an object of a type weights-only loading
            refuses (the sentence names the type).
    """
    require_file(path, "checkpoint", "pass the path of a .pth file")
    try:
        with torch.serialization.safe_globals(CHECKPOINT_SAFE_GLOBALS):
            return _restore_cfgnodes(torch.load(path, map_location="cpu", weights_only=True))
    except Exception as err:  # pickle, zip or unsupported-type errors all mean "not a checkpoint we can read safely"
        refused = _refused_types(path)
        if refused:
            raise UserError(f"checkpoint {path} holds objects of type {', '.join(refused)}, which loading with "
                            "weights_only=True refuses: if you trust the file, load it once with weights_only=False "
                            "and save only its 'model' state dict.") from None
        raise UserError(f"checkpoint {path} could not be read as a PyTorch checkpoint ({type(err).__name__}): is it the right file?") from None


def _refused_types(path: str) -> list:
    """The globals in ``path``'s pickle that weights-only loading does not allow (empty if it cannot tell)."""
    try:
        found = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # not a zip checkpoint at all
        return []
    allowed = {name for _, name in CHECKPOINT_SAFE_GLOBALS}
    return [name for name in found if name not in allowed]
