"""A classifier served by Triton, through tritonclient (HTTP or gRPC): found, checked, and asked for logits.

Before any image is sent the server must answer, the model must be ready (else the server's own reason is
reported) and its inputs must fit the images the config makes. Readiness is asked per model, never of the whole
server: a repository that holds a model the server cannot load would answer "not ready" for all of them.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
from yacs.config import CfgNode

from swin_trt.contract import Preprocessing, config_input_shape
from swin_trt.errors import UserError
from swin_trt.serving.model_config import contract_of

PROTOCOLS = ("http", "grpc")
DEFAULT_PORTS = {"http": 8000, "grpc": 8001}
LOGITS = "logits"  # the ensembles' logits output (swin_trt/serving/repository.py)
_NUMPY = {"FP32": np.float32, "FP16": np.float16}


def _module(protocol: str):
    if protocol == "http":
        import tritonclient.http as module
    else:
        import tritonclient.grpc as module
    return module


def check_url(url: str) -> str:
    """``HOST:PORT`` as tritonclient takes it.

    Raises:
        UserError: a scheme, a path or no port.
    """
    if not re.fullmatch(r"(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.\-]+):\d{1,5}", url or ""):
        raise UserError(f"--url {url} is not HOST:PORT (e.g. 127.0.0.1:8000, without http:// or a path): pass the "
                        "address of the server's HTTP or gRPC port.")
    return url


@dataclasses.dataclass(frozen=True)
class Tensor:
    """A served model's input or output as its metadata gives it (``datatype`` FP32, BYTES...; -1 for the batch)."""

    name: str
    datatype: str
    shape: Tuple[int, ...]


def _tensors(entries: List[Dict[str, Any]]) -> List[Tensor]:
    # gRPC's JSON writes int64 values as strings
    return [Tensor(e["name"], e["datatype"], tuple(int(d) for d in e["shape"])) for e in entries]


class ServedClassifier:
    """One classifier or ensemble on a Triton server.

    Args:
        url: ``HOST:PORT`` of the server's HTTP or gRPC endpoint.
        protocol: ``http`` or ``grpc``.
        model: the model's name in the repository.
        timeout: seconds for connecting and for each request.

    Raises:
        UserError: no server answers at ``url``, the server has no such model, or the model is not ready (with the
            server's reason), or it is not a classifier of one input and a logits output.
    """

    def __init__(self, url: str, protocol: str, model: str, timeout: float = 60.0) -> None:
        self.url, self.protocol, self.model, self.timeout = check_url(url), protocol, model, timeout
        self.module = _module(protocol)
        client = self.new_client()
        try:
            self._check_ready(client)
            metadata = self._ask(client.get_model_metadata, model)
            config = self._ask(client.get_model_config, model)
        finally:
            client.close()
        config = config.get("config", config)  # gRPC wraps it
        self.inputs, self.outputs = _tensors(metadata["inputs"]), _tensors(metadata["outputs"])
        self.max_batch_size = int(config.get("max_batch_size", 0))
        self.contract: Optional[Preprocessing] = contract_of(config.get("parameters", {}))
        if len(self.inputs) != 1:
            raise UserError(f"model {model} at {url} has {len(self.inputs)} inputs, not one image input: pass a "
                            "classifier or ensemble written by trt/triton_repository.py.")
        self.input = self.inputs[0]
        named = [o for o in self.outputs if o.name == LOGITS]
        if len(self.outputs) != 1 and not named:
            raise UserError(f"model {model} at {url} has outputs {[o.name for o in self.outputs]} and none is "
                            f"{LOGITS!r}: pass a classifier or ensemble written by trt/triton_repository.py.")
        self.output = named[0] if named else self.outputs[0]

    @property
    def takes_images(self) -> bool:
        """Whether the model takes encoded images (an ensemble with preprocessing) rather than tensors."""
        return self.input.datatype == "BYTES"

    def new_client(self):
        """A tritonclient client of the protocol (one per thread: a client is not shared between threads)."""
        if self.protocol == "http":
            return self.module.InferenceServerClient(self.url, connection_timeout=self.timeout,
                                                     network_timeout=self.timeout)
        return self.module.InferenceServerClient(self.url)

    def _ask(self, call, *args, as_json: bool = True):
        """``call(*args)``, with the request timeout (gRPC) and its answer as JSON-like dicts (gRPC: ``as_json``)."""
        if self.protocol == "grpc":
            return call(*args, as_json=True, client_timeout=self.timeout) if as_json else \
                call(*args, client_timeout=self.timeout)
        return call(*args)

    def _check_ready(self, client) -> None:
        try:
            live = self._ask(client.is_server_live, as_json=False)
        except Exception as err:  # refused, reset, timed out, another protocol: tritonclient and its transports' types
            reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
            raise UserError(f"no Triton server answers at {self.url} over {self.protocol} ({reason}): start one "
                            "(README, \"Serving\") or check --url and --protocol.") from None
        if not live:
            raise UserError(f"the Triton server at {self.url} says it is not live: see its log.")
        if self._ask(client.is_model_ready, self.model, as_json=False):
            return
        index = self._ask(client.get_model_repository_index)
        entries = index.get("models", []) if isinstance(index, dict) else index
        states = {e["name"]: e for e in entries}
        if self.model not in states:
            raise UserError(f"the Triton server at {self.url} has no model {self.model} (it has: "
                            f"{', '.join(sorted(states)) or 'none'}): pass one of those to --model.")
        entry = states[self.model]
        if not entry.get("state"):  # never loaded: an ensemble whose steps did not all load
            failed = [f"{name} ({_first_line(e.get('reason', ''))})" for name, e in sorted(states.items())
                      if e.get("state") == "UNAVAILABLE"]
            raise UserError(f"model {self.model} at {self.url} was not loaded, as happens to an ensemble when one of its "
                            f"steps did not load; models not ready: {'; '.join(failed) or 'none'}.")
        raise UserError(f"model {self.model} at {self.url} is not ready ({entry['state']}: "
                        f"{_first_line(entry.get('reason', '')) or 'no reason given'}): fix what the server says, "
                        "then restart it.")

    def check_config(self, config: CfgNode) -> None:
        """Raise a :class:`UserError` unless the model takes the config's images and gives its number of classes."""
        where = f"model {self.model} at {self.url}"
        if self.takes_images:
            if self.input.shape[1:] != (1,):
                raise UserError(f"{where} takes {self.input.name} {list(self.input.shape)} of BYTES, not one encoded "
                                "image per batch row: pass an ensemble written by trt/triton_repository.py.")
        else:
            expected = config_input_shape(config)
            if self.input.datatype not in _NUMPY or self.input.shape[1:] != expected:
                raise UserError(f"{where} takes {self.input.name} {list(self.input.shape)} of {self.input.datatype} but "
                                f"the config ({config.MODEL.NAME}) makes images (N, {expected[0]}, {expected[1]}, "
                                f"{expected[2]}) of FP32: pass the config the model was made with, or leave --cfg out "
                                "to use the model's own record.")
        if self.output.shape[-1:] != (config.MODEL.NUM_CLASSES,):
            raise UserError(f"{where} gives {self.output.name} {list(self.output.shape)} but the config "
                            f"({config.MODEL.NAME}) has MODEL.NUM_CLASSES {config.MODEL.NUM_CLASSES}: pass the config "
                            "the model was made with.")
        if self.max_batch_size <= 0:
            raise UserError(f"{where} does not batch (max_batch_size 0): pass a model written by "
                            "trt/triton_repository.py.")

    def infer(self, client, batch: np.ndarray) -> np.ndarray:
        """Logits (N, classes) of one request: encoded images (N, 1) of bytes, or images (N, C, H, W).

        Raises:
            UserError: the server failed the request (its reason).
        """
        if self.takes_images:
            data = batch
        else:
            data = np.ascontiguousarray(batch, dtype=_NUMPY[self.input.datatype])
        request = self.module.InferInput(self.input.name, list(data.shape), self.input.datatype)
        request.set_data_from_numpy(data)
        # every output: tritonserver 2.51 fails an ensemble request that asks for only some of the ensemble's outputs
        # ("unexpected deadlock, at least one output is not set while no more ensemble steps can be made")
        outputs = [self.module.InferRequestedOutput(o.name) for o in self.outputs]
        from tritonclient.utils import InferenceServerException

        try:
            if self.protocol == "grpc":
                result = client.infer(self.model, [request], outputs=outputs, client_timeout=self.timeout)
            else:
                result = client.infer(self.model, [request], outputs=outputs)
        except InferenceServerException as err:
            raise UserError(f"model {self.model} at {self.url} failed a request ({err.message()}): check the "
                            "server's log.") from None
        return result.as_numpy(self.output.name)

    def statistics(self) -> Dict[str, Any]:
        """The server's inference statistics of this model (``model_stats[0]``: counts, batch sizes, times)."""
        client = self.new_client()
        try:
            stats = self._ask(client.get_inference_statistics, self.model)
        finally:
            client.close()
        return stats["model_stats"][0]


def _first_line(text: str) -> str:
    """The first line of a server's reason (a Python model's error is followed by its traceback)."""
    lines = (text or "").strip().splitlines()
    return lines[0] if lines else ""


def repository_status(url: str, timeout: float = 30.0) -> List[Dict[str, str]]:
    """Every model of the server's repository with its state and the server's reason (HTTP ``url``)."""
    import tritonclient.http as http

    client = http.InferenceServerClient(check_url(url), connection_timeout=timeout, network_timeout=timeout)
    try:
        index = client.get_model_repository_index()
    finally:
        client.close()
    return [{"model": e["name"], "state": e.get("state", ""), "reason": _first_line(e.get("reason", ""))}
            for e in sorted(index, key=lambda e: e["name"])]
