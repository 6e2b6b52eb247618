"""Where quantization hurts: each site quantized alone, and every site but one, on a model calibrated once.

A site is a row of the placement table (``by="row"``: every quantizer its wildcard matches, e.g. all ``fc1.input``
quantizers) or one quantized module (``by="layer"``: the quantizers a module owns, e.g. ``layers.2.blocks.3.mlp.fc1``
for its input and weight, ``layers.2.blocks.3.attn`` for its four matmul inputs, ``layers.2.blocks.3`` for its two
residual adds). For each site the model is evaluated with only that site quantized (what it costs on its own) and with
every site but that one (what leaving it in higher precision wins back). Switching a quantizer off here is exactly what
``QUANT.DISABLED`` or ``QUANT.KEEP_HIGH_PRECISION`` do at export: that site's tensors stay in the high-precision type.
"""
from __future__ import annotations

import fnmatch
from typing import Any, Callable, Dict, List, Sequence

import torch.nn as nn

from swin_trt.quant.placement import QuantSite

BY = ("row", "layer")
Evaluate = Callable[[nn.Module, str], Dict[str, Any]]


def active_quantizers(model: nn.Module) -> Dict[str, nn.Module]:
    """The quantizers calibration switched on, by module name."""
    from swin_trt.quant.quantize import quantizer_modules  # here: the report reads this module without ModelOpt

    return quantizer_modules(model)


def sites_by_row(quantizers: Sequence[str], table: Sequence[QuantSite]) -> Dict[str, List[str]]:
    """Placement row -> the active quantizers its wildcard matches (rows with none are left out)."""
    sites = {site.name: [q for q in quantizers if fnmatch.fnmatchcase(q, site.quantizer)] for site in table}
    return {name: members for name, members in sites.items() if members}


def sites_by_layer(quantizers: Sequence[str]) -> Dict[str, List[str]]:
    """Module -> its active quantizers (``layers.0.blocks.0.mlp.fc1`` -> its input and weight quantizers)."""
    sites: Dict[str, List[str]] = {}
    for name in quantizers:
        sites.setdefault(name.rsplit(".", 1)[0], []).append(name)
    return sites


def _switch(quantizers: Dict[str, nn.Module], on: Sequence[str]) -> None:
    wanted = set(on)
    for name, quantizer in quantizers.items():
        if name in wanted:
            quantizer.enable()
        else:
            quantizer.disable()


def sensitivity(model: nn.Module, sites: Dict[str, List[str]], evaluate: Evaluate) -> Dict[str, Any]:
    """Evaluate ``model`` (calibrated) with no site, every site, each site alone and every site but one quantized.

    Args:
        model: the calibrated, fake-quantized model.
        sites: site name -> its quantizer module names (:func:`sites_by_row` or :func:`sites_by_layer`).
        evaluate: ``evaluate(model, label)`` -> metrics with ``acc1`` and ``loss``.

    Returns:
        ``{"fp32": {...}, "all": {...}, "sensitivity": [{"site", "quantizers", "acc1_only", "loss_only",
        "acc1_all_but", "loss_all_but", "images"}, ...]}``, the rows sorted by harm: the lowest Acc@1 with the site alone first
        (then the highest loss), so the sites that cost most on their own lead; every quantizer is switched back on
        at the end.
    """
    quantizers = active_quantizers(model)
    every = [q for members in sites.values() for q in members]
    try:
        _switch(quantizers, [])
        result: Dict[str, Any] = {"fp32": _metrics(evaluate(model, "no site"))}
        _switch(quantizers, every)
        result["all"] = _metrics(evaluate(model, "every site"))
        rows = []
        for site, members in sites.items():
            _switch(quantizers, members)
            only = _metrics(evaluate(model, f"{site} alone"))
            _switch(quantizers, [q for q in every if q not in set(members)])
            all_but = _metrics(evaluate(model, f"all but {site}"))
            rows.append({"site": site, "quantizers": len(members), "acc1_only": only["acc1"],
                         "loss_only": only["loss"], "acc1_all_but": all_but["acc1"], "loss_all_but": all_but["loss"],
                         "images": only["images"]})
    finally:
        _switch(quantizers, list(quantizers))
    result["sensitivity"] = sorted(rows, key=lambda r: (r["acc1_only"], -r["loss_only"]))
    return result


def _metrics(metrics: Dict[str, Any]) -> Dict[str, float]:
    return {"acc1": metrics["acc1"], "loss": metrics["loss"], "images": metrics["images"]}


def sensitivity_rows(result: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The table: a row per site, Acc@1 and loss alone and all-but, and the change each makes against FP32 / all."""
    fp32, every = result["fp32"]["acc1"], result["all"]["acc1"]
    rows = [{"site": "(none: FP32)", "acc1 alone": f"{fp32:.3f}", "loss alone": f"{result['fp32']['loss']:.4f}",
             "Δ alone": "", "acc1 all but": "", "loss all but": "", "Δ all but": ""},
            {"site": "(every site)", "acc1 alone": "", "loss alone": "", "Δ alone": "",
             "acc1 all but": f"{every:.3f}", "loss all but": f"{result['all']['loss']:.4f}", "Δ all but": ""}]
    for r in result["sensitivity"]:
        rows.append({"site": r["site"], "acc1 alone": f"{r['acc1_only']:.3f}", "loss alone": f"{r['loss_only']:.4f}",
                     "Δ alone": f"{r['acc1_only'] - fp32:+.3f}", "acc1 all but": f"{r['acc1_all_but']:.3f}",
                     "loss all but": f"{r['loss_all_but']:.4f}", "Δ all but": f"{r['acc1_all_but'] - every:+.3f}"})
    return rows
