"""``python -m raypipe.infer``: score any CSV in the workspace schema with a delivered model.

This is how a user scores new production data: the model's lights and image size come from its
spec, the images from ``--images-dir``. ``inference.csv`` carries ``siamese_score`` (P(defect))
and ``predicted_label`` (``NO_PASS`` iff the score is above the delivered threshold, else
``PASS``); FAR at 100 % recall is written when the CSV has defects. Nothing the command reads is
ever overwritten, and every bad input ends with one ``error:`` line naming the file.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from raypipe._delivered import DeliverableError, load_delivered
from raypipe._io import atomic_write_text
from raypipe.spec import SpecError, get_dotted, load_spec

if TYPE_CHECKING:
    import pandas as pd

    from raypipe.workspace import Problem

PREDICTED = "predicted_label"
# Everything infer writes into --output-dir (the evaluator writes the last three beside its JSON).
OUTPUT_FILES = ("inference.csv", "metric_result.json", "threshold_metrics.csv", "summary.txt")


class InferError(Exception):
    """A bad input: the message is the one line the user sees after ``error:``."""


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_outputs(out_dir: Path, inputs: list[Path]) -> None:
    """Refuse an output dir where writing would replace one of the inputs (e.g. ``--csv OUT/inference.csv``)."""
    for name in OUTPUT_FILES:
        target = out_dir / name
        for src in inputs:
            if _same_file(target, src) or target.resolve() == src.resolve():
                raise InferError(f"{src}: --output-dir {out_dir} would overwrite this input with {name}; "
                                 f"choose another --output-dir")


def check_checkpoint_file(ckpt: Path) -> None:
    """A ``.pth`` written by ``torch.save`` (builtin and TAO alike) is a zip archive: a truncated or
    foreign file is named here in one line instead of by a torch unpickling message."""
    import zipfile

    if ckpt.stat().st_size == 0:
        raise InferError(f"{ckpt}: checkpoint file is empty")
    if not zipfile.is_zipfile(ckpt):
        raise InferError(f"{ckpt}: not a PyTorch checkpoint (not a torch.save archive; truncated or another format)")


def add_predicted_label(inference_csv: Path, threshold: float) -> dict[str, int]:
    """Insert ``predicted_label`` right after ``siamese_score`` (``NO_PASS`` iff score > threshold, strict)."""
    import pandas as pd

    df = pd.read_csv(inference_csv, dtype=str, keep_default_na=False)
    scores = pd.to_numeric(df["siamese_score"], errors="raise")
    pred = ["NO_PASS" if s > threshold else "PASS" for s in scores]
    df = df.drop(columns=[PREDICTED], errors="ignore")
    df.insert(df.columns.get_loc("siamese_score") + 1, PREDICTED, pred)
    atomic_write_text(inference_csv, df.to_csv(index=False))
    return {"PASS": pred.count("PASS"), "NO_PASS": pred.count("NO_PASS")}


def _resolve_model(a: argparse.Namespace) -> tuple[Path, dict, list[Path], float | None, str]:
    """(checkpoint, spec, input files, threshold or None, where the threshold comes from)."""
    if a.best_model:
        model = load_delivered(a.best_model)
        threshold, source = model.threshold, f"{model.best_model_json}"
        if a.threshold is not None:
            threshold, source = a.threshold, "--threshold"
        return model.checkpoint, model.spec, [model.best_model_json, model.checkpoint, model.spec_path], \
            threshold, source
    if not a.spec:
        raise InferError("--checkpoint needs --spec (the training or inference spec of that checkpoint)")
    ckpt, spec_path = Path(a.checkpoint), Path(a.spec)
    if not ckpt.is_file():
        raise InferError(f"{ckpt}: checkpoint not found")
    spec = load_spec(spec_path)
    if a.threshold is not None:
        return ckpt, spec, [ckpt, spec_path], a.threshold, "--threshold"
    # Only an inference spec written by finalize carries the operating threshold (as eval_margin);
    # a training spec's eval_margin is TAO's training margin, not a threshold.
    margin = get_dotted(spec, "model.classify.eval_margin", None) if get_dotted(spec, "inference.checkpoint", None) \
        else None
    if isinstance(margin, (int, float)) and not isinstance(margin, bool) and math.isfinite(margin):
        return ckpt, spec, [ckpt, spec_path], float(margin), f"{spec_path} (model.classify.eval_margin)"
    return ckpt, spec, [ckpt, spec_path], None, ""


def run(a: argparse.Namespace) -> int:
    ckpt, spec, inputs, threshold, source = _resolve_model(a)
    csv, images_dir, out = Path(a.csv), Path(a.images_dir), Path(a.output_dir)
    if not csv.is_file():
        raise InferError(f"{csv}: CSV not found")
    if not images_dir.is_dir():
        raise InferError(f"{images_dir}: --images-dir is not a directory")
    check_outputs(out, [csv, *inputs])
    check_checkpoint_file(ckpt)

    from raypipe.backends import get_backend
    from raypipe.metrics import EvaluatorInputError, MetricUndefinedError, evaluate_inference_csv
    from raypipe.workspace import ImageLayout, read_rows, validate_rows

    try:
        rows = read_rows(csv)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InferError(f"{csv}: not a readable CSV ({exc})") from None
    try:
        layout = ImageLayout.from_spec(spec)
    except ValueError as exc:
        raise InferError(f"{', '.join(str(p) for p in inputs[1:])}: {exc}") from None
    problems = validate_rows(rows, csv, images_dir, layout, images_dir) + _label_problems(rows, csv)
    if problems:
        for pr in problems[:20]:
            print(f"error: {pr}", file=sys.stderr)
        if len(problems) > 20:
            print(f"error: … and {len(problems) - 20} more", file=sys.stderr)
        return 1
    trainer = get_backend(a.backend)
    try:
        inference_csv = trainer.infer(spec, ckpt, csv, out, images_dir=images_dir)
    except (ValueError, OSError, RuntimeError) as exc:
        # The builtin backend's CheckpointError / ImageDataError / SpecValueError name the file or key.
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InferError(text if str(ckpt) in text or str(csv) in text else f"{ckpt}: {text}") from None
    print(f"inference: {inference_csv}")
    if threshold is not None:
        counts = add_predicted_label(Path(inference_csv), threshold)
        print(f"{PREDICTED} at threshold {threshold:.6g} (from {source}): PASS {counts['PASS']}, "
              f"NO_PASS {counts['NO_PASS']}")
    else:
        print(f"no threshold known for {ckpt}: pass --threshold (or use --best-model) to get {PREDICTED}",
              file=sys.stderr)
    undefined = _far_undefined(rows)
    if undefined:
        print(f"{undefined}: FAR at 100% recall is undefined, metric_result.json not written")
        return 0
    try:
        r = evaluate_inference_csv(inference_csv, out / "metric_result.json")
    except (MetricUndefinedError, EvaluatorInputError) as exc:
        raise InferError(str(exc)) from None
    print(f"FAR at 100% recall: {r['value']:.2f} % (threshold {r['threshold']:.6g}) → {out / 'metric_result.json'}")
    return 0


def _label_problems(rows: pd.DataFrame, csv: Path) -> list[Problem]:
    """Labels that would score as the wrong class (``OK``, ``nan``): refused before anything is written."""
    from raypipe.workspace._labels import check_labels
    from raypipe.workspace._problems import Collector

    if "label" not in rows.columns:
        return []
    out = Collector(20)
    check_labels(rows["label"], str(csv), out)
    return out.finish()


def _far_undefined(rows: pd.DataFrame) -> str | None:
    """Why FAR at 100 % recall cannot be computed for these rows (None: it can)."""
    if "label" not in rows.columns:
        return "no label column"
    defect = rows["label"].str.strip().str.upper() != "PASS"
    if not defect.any():
        return "no defect rows"
    if defect.all():
        return "no PASS rows"
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m raypipe.infer", description=(__doc__ or "").splitlines()[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--best-model", help="RD/best_model.json of a finished run")
    src.add_argument("--checkpoint", help="a model_epoch_*.pth checkpoint (needs --spec)")
    p.add_argument("--spec", help="training or inference spec of --checkpoint")
    p.add_argument("--threshold", type=float, default=None,
                   help="operating threshold for predicted_label (default: the one in best_model.json)")
    p.add_argument("--csv", required=True, help="CSV with input_path, golden_path, label, object_name")
    p.add_argument("--images-dir", required=True, help="root that the CSV's input_path/golden_path resolve against")
    p.add_argument("--output-dir", required=True, help="where inference.csv and the metric files are written")
    p.add_argument("--backend", default="builtin", choices=["builtin", "tao"])
    a = p.parse_args(argv)
    if a.threshold is not None and not math.isfinite(a.threshold):
        p.error("--threshold must be a finite number")
    try:
        return run(a)
    except (InferError, DeliverableError, SpecError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
