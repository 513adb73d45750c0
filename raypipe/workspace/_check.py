"""Load and validate a TAO AOI workspace (SPEC §2): every problem reported at once, no side effects.

``check_workspace`` is what ``python -m raypipe.workspace check DIR`` and the pre-flight call;
``load_workspace`` is the strict form for code that needs a usable workspace.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from raypipe.spec import SpecError, load_spec
from raypipe.workspace._layout import CSV_FILES, IMAGE_ROOTS, SPEC_FILE
from raypipe.workspace._paths import DirIndex, display
from raypipe.workspace._problems import Collector, Problem, WorkspaceError
from raypipe.workspace._rows import REQUIRED_COLUMNS, ImageLayout, is_defect, normalise_label, read_rows
from raypipe.workspace._validate import capture_overlap, inspect_rows, leakage_overlap

_ALIASES = {"train": "train", "training": "train", "val": "validation", "validation": "validation",
            "kpi": "kpi", "test": "kpi", "pool": "pool", "mining_pool": "pool"}
_LIMIT = 20  # rows named per check and column; counts stay exact


@dataclass(frozen=True)
class Workspace:
    """A loaded workspace: where everything is, the parsed spec and the image layout it implies."""

    root: Path
    images_dir: Path
    spec_path: Path
    spec: dict[str, Any]
    layout: ImageLayout
    train_csv: Path
    val_csv: Path
    kpi_csv: Path
    pool_csv: Path | None

    def csv(self, which: str) -> Path | None:
        """The CSV of ``which`` (train, validation/val, kpi/test, pool)."""
        key = _ALIASES.get(which)
        if key is None:
            raise ValueError(f"unknown CSV '{which}'; expected one of train, validation, kpi, pool")
        return {"train": self.train_csv, "validation": self.val_csv, "kpi": self.kpi_csv, "pool": self.pool_csv}[key]

    def rows(self, which: str) -> pd.DataFrame:
        """Rows of a CSV as strings, labels normalised (SPEC §2.1), extra columns kept."""
        path = self.csv(which)
        if path is None:
            raise FileNotFoundError(f"{self.root}: no {which} CSV in this workspace")
        df = read_rows(path)
        if "label" in df.columns:
            df["label"] = df["label"].map(normalise_label)
        return df


@dataclass(frozen=True)
class CsvStats:
    """Rows and label distribution of one CSV (normalised labels)."""

    path: str
    rows: int
    labels: dict[str, int]

    @property
    def defects(self) -> int:
        return sum(n for lab, n in self.labels.items() if is_defect(lab))

    @property
    def passes(self) -> int:
        return self.rows - self.defects


@dataclass(frozen=True)
class DatasetStats:
    """The numbers the pre-flight dataset table shows (SPEC §8.1, section 4)."""

    csvs: dict[str, CsvStats] = field(default_factory=dict)
    lights: tuple[str, ...] = ()
    image_ext: str = ""
    image_size: tuple[int, int] | None = None  # (width, height) from the spec
    files_checked: int = 0
    missing_file_count: int = 0
    train_val_overlap: int = 0
    train_kpi_capture_overlap: int = 0
    val_kpi_capture_overlap: int = 0
    pool_kpi_capture_overlap: int = 0
    pool_val_overlap: int = 0


@dataclass(frozen=True)
class CheckReport:
    """Result of :func:`check_workspace`. ``workspace`` is set when the structure (dirs, spec, CSVs,
    lights) could be loaded, even if rows have problems; ``ok`` means no errors at all."""

    workspace: Workspace | None
    problems: list[Problem]
    summary_text: str
    warnings: list[Problem] = field(default_factory=list)
    stats: DatasetStats = field(default_factory=DatasetStats)

    @property
    def ok(self) -> bool:
        return not self.problems


def load_workspace(root: str | os.PathLike[str]) -> Workspace:
    """The workspace at ``root``; raises :class:`WorkspaceError` listing every problem found."""
    report = check_workspace(root)
    if report.problems or report.workspace is None:
        raise WorkspaceError(report.problems)
    return report.workspace


def check_workspace(root: str | os.PathLike[str]) -> CheckReport:
    """Validate everything SPEC §2 asks for and render a one-screen summary; never raises on bad input."""
    root = Path(root).absolute()
    out = Collector(_LIMIT)
    if not root.is_dir():
        msg = "workspace directory not found" if not root.exists() else "not a directory"
        problems = [Problem(str(root), None, None, f"{msg}; expected the TAO AOI layout (images/, specs/, train/, kpi/)")]
        return CheckReport(None, problems, _render(root, None, problems, [], DatasetStats()))

    images_dir = _image_root(root, out)
    spec_path = root / SPEC_FILE
    spec, layout, size = _spec_and_layout(root, spec_path, out)
    frames: dict[str, tuple[Path, pd.DataFrame | None]] = {}
    for which, rel in CSV_FILES.items():
        path = root / rel
        if not path.is_file():
            if which == "pool":
                out.add(Problem(rel, None, None, "no mining pool CSV: the DEFT loop will have nothing to mine "
                                                 "(SDG only)", "warning"))
                continue
            out.add(Problem(rel, None, None, f"CSV not found; expected the {which} rows at {rel}"))
            continue
        frames[which] = (path, _read_csv(path, rel, which, out))

    stats: dict[str, Any] = {}
    csv_stats: dict[str, CsvStats] = {}
    index = DirIndex()
    files_checked = missing = 0
    for which, (path, df) in frames.items():
        if df is None:
            continue
        if "label" in df.columns:
            normalised = df["label"].map(normalise_label)
            labels = normalised.value_counts()
            csv_stats[which] = CsvStats(display(path, root), len(df), {str(k): int(v) for k, v in labels.items()})
            _suspicious_labels(normalised, display(path, root), out)
        if images_dir is not None and layout is not None:
            rep = inspect_rows(df, path, images_dir, layout, root, limit=_LIMIT, index=index)
            out.extend(rep.problems)
            files_checked += rep.files_checked
            missing += rep.missing_file_count
    _class_balance(csv_stats, out)

    usable = {w: df for w, (_, df) in frames.items() if df is not None and set(REQUIRED_COLUMNS) <= set(df.columns)}
    if images_dir is not None:
        stats.update(_cross_checks(usable, frames, images_dir, layout, root, out))

    problems_all = out.finish()
    errors = [p for p in problems_all if p.is_error]
    warnings = [p for p in problems_all if not p.is_error]
    workspace = None
    if images_dir is not None and spec is not None and layout is not None and all(
            w in frames and frames[w][1] is not None for w in ("train", "validation", "kpi")):
        pool = frames.get("pool")
        workspace = Workspace(root, images_dir, spec_path, spec, layout, frames["train"][0],
                              frames["validation"][0], frames["kpi"][0], pool[0] if pool else None)
    ds = DatasetStats(csvs=csv_stats, lights=layout.lights if layout else (), image_ext=layout.image_ext if layout else "",
                      image_size=size, files_checked=files_checked, missing_file_count=missing, **stats)
    return CheckReport(workspace, errors, _render(root, images_dir, errors, warnings, ds), warnings, ds)


def _image_root(root: Path, out: Collector) -> Path | None:
    for cand in (root / r for r in IMAGE_ROOTS):
        if cand.is_dir():
            return cand
    out.add(Problem("images/", None, None, "image root not found; expected images/ (or the legacy kpi/images/) "
                                          "holding the directories named by input_path/golden_path"))
    return None


def _spec_and_layout(root: Path, spec_path: Path, out: Collector
                     ) -> tuple[dict[str, Any] | None, ImageLayout | None, tuple[int, int] | None]:
    rel = SPEC_FILE
    if not spec_path.is_file():
        out.add(Problem(rel, None, None, "spec not found; expected a Visual ChangeNet classify spec (TAO YAML)"))
        return None, None, None
    try:
        spec = load_spec(spec_path)
    except SpecError as exc:
        # load_spec names the absolute file; we name it relative like every other problem
        msg = str(exc).split(": ", 1)[1] if ": " in str(exc) else str(exc)
        out.add(Problem(rel, None, None, msg))
        return None, None, None
    ds = spec.get("dataset")
    ds = ds.get("classify") if isinstance(ds, Mapping) else None
    if not isinstance(ds, Mapping):
        out.add(Problem(rel, None, "dataset.classify", "section missing; expected input_map, num_input, image_ext, "
                                                       "image_width, image_height"))
        return spec, None, None
    layout = _layout(ds, rel, out)
    size = None
    w, h = ds.get("image_width"), ds.get("image_height")
    if w is None or h is None:
        out.add(Problem(rel, None, "dataset.classify.image_width", "image_width/image_height not set", "warning"))
    elif not (isinstance(w, int) and isinstance(h, int) and w > 0 and h > 0) or isinstance(w, bool) or isinstance(h, bool):
        out.add(Problem(rel, None, "dataset.classify.image_width",
                        f"image_width/image_height must be positive integers, got {w!r} x {h!r}"))
    else:
        size = (w, h)
    return spec, layout, size


def _layout(ds: Mapping[str, Any], rel: str, out: Collector) -> ImageLayout | None:
    key = "dataset.classify.input_map"
    example = "e.g. {LowAngleLight: 0, SolderLight: 1}"
    input_map = ds.get("input_map")
    if input_map is None:
        out.add(Problem(rel, None, key, f"missing; expected a mapping light name → channel index, {example}"))
        return None
    if not isinstance(input_map, Mapping) or not input_map:
        out.add(Problem(rel, None, key, f"expected a non-empty mapping light name → channel index, {example}; "
                                        f"got {input_map!r}"))
        return None
    bad_names = [k for k in input_map if not isinstance(k, str) or not k.strip() or any(s in k for s in "/\\")]
    bad_idx = [v for v in input_map.values() if not isinstance(v, int) or isinstance(v, bool)]
    if bad_names or bad_idx:
        out.add(Problem(rel, None, key, f"light names must be plain strings and indices integers, {example}; "
                                        f"got {dict(input_map)!r}"))
        return None
    if sorted(input_map.values()) != list(range(len(input_map))):
        out.add(Problem(rel, None, key, f"channel indices must be 0..{len(input_map) - 1}, each once; "
                                        f"got {dict(input_map)!r}"))
        return None
    num_input = ds.get("num_input")
    if num_input is None:
        out.add(Problem(rel, None, "dataset.classify.num_input",
                        f"not set; TAO expects it to equal the number of lights ({len(input_map)})", "warning"))
    elif num_input != len(input_map):
        out.add(Problem(rel, None, "dataset.classify.num_input",
                        f"is {num_input!r} but input_map names {len(input_map)} lights ({', '.join(input_map)})"))
        return None
    ext = ds.get("image_ext", ".png")
    if not isinstance(ext, str) or not ext.strip(".") or any(s in ext for s in "/\\"):
        out.add(Problem(rel, None, "dataset.classify.image_ext", f"expected a file extension like .png, got {ext!r}"))
        return None
    return ImageLayout.from_spec({"dataset": {"classify": dict(ds)}})


def _read_csv(path: Path, rel: str, which: str, out: Collector) -> pd.DataFrame | None:
    if path.stat().st_size == 0:
        out.add(Problem(rel, None, None, f"file is empty; expected a header {','.join(REQUIRED_COLUMNS)},... "
                                         f"and the {which} rows"))
        return None
    try:
        df = read_rows(path)
    except pd.errors.EmptyDataError:
        out.add(Problem(rel, None, None, f"no header; expected {','.join(REQUIRED_COLUMNS)},..."))
        return None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        out.add(Problem(rel, None, None, f"not a readable CSV: {exc}".strip()))
        return None
    cols = list(df.columns)
    if cols[: len(REQUIRED_COLUMNS)] != list(REQUIRED_COLUMNS) and set(REQUIRED_COLUMNS) <= set(cols):
        out.add(Problem(rel, None, None, f"columns should start with {','.join(REQUIRED_COLUMNS)} in that order "
                                         f"(found {','.join(cols)}); rows we write will be reordered", "warning"))
    if df.empty:
        severity = "warning" if which == "pool" else "error"
        out.add(Problem(rel, None, None, "no data rows (header only)", severity))
    return df


# what spreadsheets and pandas write for a missing value: as a label it would become a defect class
_MISSING_MARKERS = frozenset({"nan", "none", "null", "na", "n/a", "#n/a"})


def _suspicious_labels(labels: pd.Series, file: str, out: Collector) -> None:
    bad = labels.isin(_MISSING_MARKERS).to_numpy()
    if bad.any():
        first = int(bad.argmax()) + 1
        out.add(Problem(file, first, "label", f"label '{labels.iloc[first - 1]}' looks like a missing value "
                                              f"({int(bad.sum())} rows); it would train as a defect class", "warning"))


def _class_balance(csv_stats: dict[str, CsvStats], out: Collector) -> None:
    """FAR at 100% recall needs defect rows (recall) and PASS rows (FAR) wherever it is measured."""
    needs = {"train": "training needs both classes",
             "validation": "validation FAR at 100% recall (AutoML scoring) is undefined",
             "kpi": "KPI FAR at 100% recall is undefined"}
    for which, why in needs.items():
        st = csv_stats.get(which)
        if st is None or st.rows == 0:
            continue
        if st.defects == 0:
            out.add(Problem(st.path, None, "label", f"zero defect rows: {why} without defects (all {st.rows} rows PASS)"))
        if st.passes == 0:
            out.add(Problem(st.path, None, "label", f"zero PASS rows: {why} without PASS rows"))


def _cross_checks(usable: dict[str, pd.DataFrame], frames: dict[str, tuple[Path, pd.DataFrame | None]],
                  images_dir: Path, layout: ImageLayout | None, root: Path, out: Collector) -> dict[str, int]:
    stats: dict[str, int] = {}
    name = {w: display(frames[w][0], root) for w in usable}
    if "train" in usable and "validation" in usable:
        pairs = leakage_overlap(usable["train"], images_dir, usable["validation"], images_dir, root)
        stats["train_val_overlap"] = len({a for a, _ in pairs})
        for a, b in pairs:
            out.add(Problem(name["train"], a, None, f"train/validation leakage: same sample as {name['validation']} "
                                                    f"row {b} (leakage key input_path, golden_path, label, "
                                                    f"object_name, boardname)"), "leakage")
    if "pool" in usable and "validation" in usable:
        pairs = leakage_overlap(usable["pool"], images_dir, usable["validation"], images_dir, root)
        stats["pool_val_overlap"] = len({a for a, _ in pairs})
        if pairs:
            out.add(Problem(name["pool"], None, None, f"{stats['pool_val_overlap']} pool rows equal validation rows; "
                                                      f"mining drops them (e.g. row {pairs[0][0]})", "warning"))
    if layout is not None and "kpi" in usable:
        for which, severity in (("train", "error"), ("validation", "error"), ("pool", "warning")):
            if which not in usable:
                continue
            pairs = capture_overlap(usable[which], images_dir, usable["kpi"], images_dir, layout)
            rows = sorted({a for a, _ in pairs})
            stats[f"{'val' if which == 'validation' else which}_kpi_capture_overlap"] = len(rows)
            if severity == "warning":
                if rows:
                    out.add(Problem(name[which], None, "input_path",
                                    f"{len(rows)} pool rows use KPI capture files; mining must never add them "
                                    f"(e.g. row {rows[0]})", "warning"))
                continue
            why = ("the KPI set must stay unseen by training" if which == "train"
                   else "the KPI set is never used by AutoML, and validation scores it")
            first = {}
            for a, b in pairs:
                first.setdefault(a, b)
            for a in rows:
                out.add(Problem(name[which], a, "input_path", f"capture file is a KPI capture file "
                                                              f"({name['kpi']} row {first[a]}): {why}"), "kpi capture")
    return stats


def _render(root: Path, images_dir: Path | None, errors: list[Problem], warnings: list[Problem],
            ds: DatasetStats) -> str:
    lines = [f"Workspace {root}"]
    if images_dir is not None:
        legacy = "  (legacy layout)" if images_dir.parent.name == "kpi" else ""
        lines.append(f"  image root  {display(images_dir, root)}/{legacy}")
    if ds.lights:
        size = f"{ds.image_size[0]}x{ds.image_size[1]}" if ds.image_size else "not set"
        lines.append(f"  lights      {', '.join(ds.lights)} ({len(ds.lights)}), ext {ds.image_ext}, image {size}")
    if ds.csvs:
        lines.append(f"  {'CSV':<11} {'rows':>7} {'PASS':>7} {'defect':>7}  labels")
        for which in CSV_FILES:
            st = ds.csvs.get(which)
            if st is None:
                continue
            labs = ", ".join(f"{k or '(empty)'} {v}" for k, v in sorted(st.labels.items()) if k != "PASS")
            lines.append(f"  {which:<11} {st.rows:>7} {st.passes:>7} {st.defects:>7}  {labs or '-'}")
        lines.append(f"  images      {ds.files_checked} files checked, {ds.missing_file_count} missing")
        lines.append(f"  leakage     train/validation {ds.train_val_overlap} overlapping rows; training rows with "
                     f"KPI capture files {ds.train_kpi_capture_overlap}; validation {ds.val_kpi_capture_overlap}")
    for p in warnings:
        lines.append(f"  warning: {p}")
    if errors:
        lines.append(f"{len(errors)} problem{'s' if len(errors) != 1 else ''}:")
        lines.extend(f"  {p}" for p in errors)
    else:
        lines.append("OK: no problems found")
    return "\n".join(lines)
