"""``python -m raypipe.infer``: score any CSV in the workspace schema with a delivered model.

This is how a user scores new production data: the model's lights and image size come from its
spec, the images from ``--images-dir``; FAR at 100 % recall is written when the CSV has defects.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from raypipe._io import read_json
from raypipe.spec import SpecError, load_spec


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m raypipe.infer", description=__doc__.splitlines()[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--best-model", help="RD/best_model.json of a finished run")
    src.add_argument("--checkpoint", help="a model_epoch_*.pth checkpoint (needs --spec)")
    p.add_argument("--spec", help="training or inference spec of --checkpoint")
    p.add_argument("--csv", required=True, help="CSV with input_path, golden_path, label, object_name")
    p.add_argument("--images-dir", required=True, help="root that the CSV's input_path/golden_path resolve against")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--backend", default="builtin", choices=["builtin", "tao"])
    a = p.parse_args(argv)

    try:
        if a.best_model:
            best = read_json(a.best_model)
            ckpt = Path(best["checkpoint"])
            spec_path = Path(a.best_model).parent / "best_model_inference_spec.yaml"
            spec = load_spec(spec_path if spec_path.is_file() else best["training_spec"])
        else:
            if not a.spec:
                p.error("--checkpoint needs --spec")
            ckpt, spec = Path(a.checkpoint), load_spec(a.spec)
    except (OSError, KeyError, SpecError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if not ckpt.is_file():
        print(f"error: checkpoint {ckpt} not found", file=sys.stderr)
        return 1
    csv, images_dir, out = Path(a.csv), Path(a.images_dir), Path(a.output_dir)
    if not csv.is_file():
        print(f"error: {csv}: CSV not found", file=sys.stderr)
        return 1

    from raypipe.backends import get_backend
    from raypipe.metrics import evaluate_inference_csv
    from raypipe.workspace import ImageLayout, read_rows, validate_rows

    rows = read_rows(csv)
    problems = validate_rows(rows, csv, images_dir, ImageLayout.from_spec(spec), images_dir)
    if problems:
        for pr in problems[:20]:
            print(f"error: {pr}", file=sys.stderr)
        if len(problems) > 20:
            print(f"error: … and {len(problems) - 20} more", file=sys.stderr)
        return 1
    trainer = get_backend(a.backend)
    inference_csv = trainer.infer(spec, ckpt, csv, out, images_dir=images_dir)
    print(f"inference: {inference_csv}")
    labels = rows["label"].str.strip().str.upper()
    if (labels != "PASS").any():
        r = evaluate_inference_csv(inference_csv, out / "metric_result.json")
        print(f"FAR at 100% recall: {r['value']:.2f} % (threshold {r['threshold']:.6g}) → {out / 'metric_result.json'}")
    else:
        print("no defect rows: FAR at 100% recall is undefined, metric_result.json not written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
