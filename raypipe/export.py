"""``python -m raypipe.export``: the delivered model as an ONNX file for ONNX Runtime or TensorRT.

    python -m raypipe.export --best-model RD/best_model.json --format onnx [--output PATH] [--opset 17]

The graph takes what a camera gives and returns what the line decides on:

* inputs ``capture`` and ``golden``: float32 ``[batch, 3 × lights, height, width]`` (NCHW), raw
  RGB pixel values 0–255; channel ``3·i + c`` is RGB channel ``c`` of light ``i``, lights in the
  order of the ``lights`` metadata entry; images resized to ``width × height`` (the training
  pipeline resizes with PIL's bilinear filter). The per-channel normalisation is inside the graph.
* outputs ``siamese_score`` float32 ``[batch]`` (P(defect), the score the threshold applies to)
  and ``logits`` float32 ``[batch, 2]`` (PASS, defect).
* the batch axis is dynamic (``batch``); height, width and channels are fixed by the model.

``metadata_props`` carry the operating threshold (``NO_PASS`` iff ``siamese_score > threshold``),
the metric it was picked for, lights, image size, normalisation and the input layout, so the file
alone is enough to deploy. Opset 17 is the default: TensorRT 8.6 and later parse it (``trtexec
--onnx=model.onnx --minShapes=capture:1x6x64x64,golden:1x6x64x64 --optShapes=… --maxShapes=…``).
The default output is ``<run dir>/export/best_model.onnx``: an export never writes into the
workspace's data.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import logging
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from raypipe._delivered import DeliverableError, DeliveredModel, load_delivered
from raypipe._io import atomic_write_bytes

INPUT_NAMES = ("capture", "golden")
OUTPUT_NAMES = ("siamese_score", "logits")
DEFAULT_OPSET = 17
DEFAULT_OUTPUT = Path("export") / "best_model.onnx"
METADATA_VERSION = "1"
# ONNX Runtime vs PyTorch on the same float32 input: the export self-check fails above this.
SELF_CHECK_TOL = 1e-4


class ExportError(Exception):
    """The delivered model cannot be exported; the message names the file or option."""


def _torch_modules() -> tuple[Any, Any]:
    import torch
    from torch import nn

    return torch, nn


def scoring_module(model: DeliveredModel) -> tuple[Any, dict[str, Any]]:
    """The delivered network wrapped to take raw NCHW pixels and return (P(defect), logits); and its
    description (lights, size, normalisation) for the metadata.

    The built-in backend's own classes are used read-only: the wrapper adds the normalisation the
    pipeline applies before the network and the softmax it applies after, nothing else.
    """
    torch, nn = _torch_modules()
    from raypipe.backends.builtin import CheckpointError
    from raypipe.backends.builtin._checkpoint import load_checkpoint, load_weights
    from raypipe.backends.builtin._config import (
        ModelConfig,
        SpecValueError,
        data_from_spec,
    )
    from raypipe.backends.builtin._model import build_model

    try:
        payload = load_checkpoint(model.checkpoint)
        arch = payload.get("architecture")
        if not isinstance(arch, dict) or not arch:
            raise ExportError(f"{model.checkpoint}: no 'architecture' record; only builtin-backend checkpoints "
                              "export here (export TAO models with TAO's own `export` task)")
        mcfg = ModelConfig.from_architecture(arch)
        net = build_model(mcfg, seed=0)
        load_weights(net, model.checkpoint, arch)
        dcfg = data_from_spec(model.spec)
    except (CheckpointError, SpecValueError) as exc:
        raise ExportError(str(exc)) from None
    n_lights, h, w = len(mcfg.lights), mcfg.image_height, mcfg.image_width

    class Scoring(nn.Module):  # type: ignore[name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.net = net
            # The pipeline's normaliser: (x − 255·mean) / (255·std) per RGB channel, on uint8 values.
            self.register_buffer("mean", torch.tensor(dcfg.rgb_mean).view(1, 1, 3, 1, 1) * 255.0)
            self.register_buffer("std", torch.tensor(dcfg.rgb_std).view(1, 1, 3, 1, 1) * 255.0)

        def forward(self, capture: Any, golden: Any) -> tuple[Any, Any]:
            cap = (capture.reshape(-1, n_lights, 3, h, w) - self.mean) / self.std
            gold = (golden.reshape(-1, n_lights, 3, h, w) - self.mean) / self.std
            logits = self.net(cap, gold)
            return torch.softmax(logits, dim=1)[:, 1], logits

    info = {"lights": list(mcfg.lights), "image_height": h, "image_width": w, "channels": 3 * n_lights,
            "concat_type": mcfg.concat_type, "rgb_mean": list(dcfg.rgb_mean), "rgb_std": list(dcfg.rgb_std),
            "backbone": mcfg.backbone, "checkpoint_epoch": payload.get("epoch"), "checkpoint_step": payload.get("step")}
    return Scoring().eval(), info


def metadata(model: DeliveredModel, info: dict[str, Any], opset: int) -> dict[str, str]:
    """The ``metadata_props`` of the exported file (ONNX stores strings; lists/dicts are JSON)."""
    rec = model.record
    contract = rec.get("metric_contract") or {}
    result = rec.get("metric_result") or {}
    digest = hashlib.sha256(model.checkpoint.read_bytes()).hexdigest()
    props = {
        "raypipe.metadata_version": METADATA_VERSION,
        "threshold": repr(float(model.threshold)),
        "decision_rule": "NO_PASS iff siamese_score > threshold (strict), else PASS",
        "metric": json.dumps({k: contract.get(k) for k in ("name", "display_name", "operator", "target", "unit")
                              if k in contract}, sort_keys=True),
        "metric_value": json.dumps(result.get("value")),
        "metric_set": "KPI",
        "lights": json.dumps(info["lights"]),
        "image_height": str(info["image_height"]),
        "image_width": str(info["image_width"]),
        "input_names": json.dumps(list(INPUT_NAMES)),
        "output_names": json.dumps(list(OUTPUT_NAMES)),
        "input_layout": (f"float32 NCHW [batch, {info['channels']}, {info['image_height']}, {info['image_width']}] "
                         f"per input; channel 3*i+c = RGB channel c of light i (lights in 'lights' order); raw pixel "
                         f"values 0-255, image resized to image_width x image_height"),
        "output_layout": "siamese_score float32 [batch] = P(defect); logits float32 [batch, 2] = (PASS, defect)",
        "normalisation": json.dumps({"rgb_input_mean": info["rgb_mean"], "rgb_input_std": info["rgb_std"],
                                     "formula": "(x - 255*mean) / (255*std) per RGB channel",
                                     "applied": "inside the graph: feed raw 0-255 pixels"}),
        "dynamic_axes": json.dumps({name: {"0": "batch"} for name in INPUT_NAMES + OUTPUT_NAMES}),
        "opset": str(opset),
        "backbone_type": str(rec.get("backbone_type") or info["backbone"]),
        "concat_type": str(info["concat_type"]),
        "iteration": model.iteration,
        "checkpoint": str(model.checkpoint),
        "checkpoint_sha256": digest,
        "best_model_json": str(model.best_model_json.resolve()),
    }
    return props


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    # The exporters print progress, deprecation notes and registry warnings (optional torchvision ops
    # this graph does not use); an export prints its own one-line result instead.
    torch_log = logging.getLogger("torch.onnx")
    level = torch_log.level
    torch_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        torch_log.setLevel(level)


def to_onnx(module: Any, info: dict[str, Any], opset: int) -> Any:
    """Trace ``module`` to an ``onnx.ModelProto`` with a dynamic batch axis.

    Opsets up to 17 go through the TorchScript exporter (the newer exporter starts at opset 18 and
    could not down-convert this graph); 18 and above through the ``torch.export``-based one.
    """
    torch, _ = _torch_modules()
    import onnx

    example = tuple(torch.rand(2, info["channels"], info["image_height"], info["image_width"]) * 255 for _ in range(2))
    with _quiet(), torch.no_grad():
        if opset <= 17:
            buf = io.BytesIO()
            torch.onnx.export(module, example, buf, dynamo=False, opset_version=opset, input_names=list(INPUT_NAMES),
                              output_names=list(OUTPUT_NAMES),
                              dynamic_axes={name: {0: "batch"} for name in INPUT_NAMES + OUTPUT_NAMES})
            proto = onnx.load_from_string(buf.getvalue())
        else:
            batch = torch.export.Dim("batch")
            program = torch.onnx.export(module, example, dynamo=True, opset_version=opset,
                                        input_names=list(INPUT_NAMES), output_names=list(OUTPUT_NAMES),
                                        dynamic_shapes=({0: batch}, {0: batch}), external_data=False)
            proto = program.model_proto
    got = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if got != opset:
        raise ExportError(f"--opset {opset}: the exporter produced opset {got}; choose --opset {got}")
    return proto


def self_check(proto: Any, module: Any, info: dict[str, Any]) -> float | None:
    """Max |ONNX Runtime − PyTorch| of ``siamese_score`` on a random batch of 3 (a batch size the trace
    never saw, so the dynamic axis is exercised). None when onnxruntime is not installed."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    torch, _ = _torch_modules()
    import numpy as np

    gen = torch.Generator().manual_seed(0)
    x = [torch.randint(0, 256, (3, info["channels"], info["image_height"], info["image_width"]), generator=gen)
         .float() for _ in range(2)]
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run([OUTPUT_NAMES[0]], {INPUT_NAMES[0]: x[0].numpy(), INPUT_NAMES[1]: x[1].numpy()})[0]
    with torch.no_grad():
        want = module(*x)[0].numpy()
    return float(np.abs(got - want).max())


def export_onnx(model: DeliveredModel, output: Path, *, opset: int = DEFAULT_OPSET) -> tuple[Path, float | None]:
    """Write the ONNX file atomically; returns (path, self-check max abs difference or None)."""
    try:
        import onnx
    except ImportError:
        raise ExportError("ONNX export needs the 'onnx' package: pip install 'raypipe[export]'") from None
    module, info = scoring_module(model)
    proto = to_onnx(module, info, opset)
    proto.doc_string = (f"raypipe delivered model ({model.iteration}) from {model.best_model_json}; "
                        f"NO_PASS iff siamese_score > {model.threshold!r}")
    onnx.helper.set_model_props(proto, metadata(model, info, opset))
    onnx.checker.check_model(proto)
    diff = self_check(proto, module, info)
    if diff is not None and not diff <= SELF_CHECK_TOL:
        raise ExportError(f"{output}: ONNX Runtime disagrees with PyTorch by {diff:.3g} (> {SELF_CHECK_TOL:g}) "
                          "on the self-check batch; the file was not written")
    return atomic_write_bytes(output, proto.SerializeToString()), diff


__all__ = ["DEFAULT_OPSET", "INPUT_NAMES", "OUTPUT_NAMES", "ExportError", "export_onnx", "metadata",
           "scoring_module", "to_onnx"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m raypipe.export", description=(__doc__ or "").splitlines()[0])
    p.add_argument("--best-model", required=True, help="RD/best_model.json of a finished run")
    p.add_argument("--format", required=True, choices=["onnx"], help="output format")
    p.add_argument("--output", default=None, help=f"output file (default: <run dir>/{DEFAULT_OUTPUT})")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                   help=f"ONNX opset (default {DEFAULT_OPSET}: parsed by TensorRT 8.6 and later)")
    a = p.parse_args(argv)
    if a.opset < 13:
        p.error("--opset must be 13 or higher")
    try:
        model = load_delivered(a.best_model)
        output = Path(a.output) if a.output else model.run_dir / DEFAULT_OUTPUT
        for src in (model.best_model_json, model.checkpoint, model.spec_path):
            if output.exists() and output.resolve() == src.resolve():
                raise ExportError(f"{src}: --output would overwrite this input; choose another --output")
        path, diff = export_onnx(model, output, opset=a.opset)
    except (DeliverableError, ExportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    check = "not run (onnxruntime not installed)" if diff is None else f"max |ORT − PyTorch| {diff:.2g}"
    print(f"onnx: {path} (opset {a.opset}, threshold {model.threshold:.6g} in metadata; self-check {check})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

