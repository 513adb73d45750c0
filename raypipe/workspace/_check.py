"""Load and validate a TAO AOI workspace: every problem reported at once, no side effects.

``check_workspace`` is what ``python -m raypipe.workspace check DIR`` and the pre-flight call;
``load_workspace`` is the strict form for code that needs a usable workspace. Both only read the
workspace: what the image check learns is cached in the user's cache directory, never beside the data.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from raypipe.spec import SpecError, load_spec
from raypipe.workspace._images import ImageCheckOptions, ImageScan, scan_images
from raypipe.workspace._labels import (
    LabelMapError,
    apply_label_map,
    check_labels,
    normalise_label_map,
)
from raypipe.workspace._layout import (
    ALL_CSV_FILES,
    IMAGE_ROOTS,
    OPTIONAL_SPLITS,
    SPEC_FILE,
)
from raypipe.workspace._overlap import check_overlap
from raypipe.workspace._paths import DirIndex, display, real
from raypipe.workspace._problems import Collector, Problem, WorkspaceError
from raypipe.workspace._rows import (
    REQUIRED_COLUMNS,
    ImageLayout,
    is_defect,
    normalise_label,
    read_rows,
)
from raypipe.workspace._validate import inspect_rows

_ALIASES = {"train": "train", "training": "train", "val": "validation", "validation": "validation",
            "kpi": "kpi", "test": "test", "sealed_test": "test", "pool": "pool", "mining_pool": "pool"}
_LIMIT = 20  # rows named per check and column; counts stay exact


@dataclass(frozen=True)
class Workspace:
    """A loaded workspace: where everything is, the parsed spec and the image layout it implies.

    ``test_csv`` is the optional sealed test split; ``label_map`` (label → PASS or a defect name, as
    the check was given it, keys case-folded) is applied by :meth:`rows`.
    """

    root: Path
    images_dir: Path
    spec_path: Path
    spec: dict[str, Any]
    layout: ImageLayout
    train_csv: Path
    val_csv: Path
    kpi_csv: Path
    pool_csv: Path | None
    test_csv: Path | None = None
    label_map: Mapping[str, str] = field(default_factory=dict)

    def csv(self, which: str) -> Path | None:
        """The CSV of ``which`` (train, validation/val, kpi, test/sealed_test, pool)."""
        key = _ALIASES.get(which)
        if key is None:
            raise ValueError(f"unknown CSV '{which}'; expected one of train, validation, kpi, test, pool")
        return {"train": self.train_csv, "validation": self.val_csv, "kpi": self.kpi_csv, "pool": self.pool_csv,
                "test": self.test_csv}[key]

    def rows(self, which: str) -> pd.DataFrame:
        """Rows of a CSV as strings, labels mapped by ``label_map`` and normalised (``PASS`` in any
        case → ``PASS``, anything else stripped lower case), extra columns kept."""
        path = self.csv(which)
        if path is None:
            raise FileNotFoundError(f"{self.root}: no {which} CSV in this workspace")
        df = read_rows(path)
        if "label" in df.columns:
            df["label"] = apply_label_map(df["label"], self.label_map).map(normalise_label)
        return df


@dataclass(frozen=True)
class CsvStats:
    """Rows and label distribution of one CSV (labels mapped and normalised)."""

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
    """The numbers the pre-flight dataset table shows. Overlaps count rows of the first split named."""

    csvs: dict[str, CsvStats] = field(default_factory=dict)
    lights: tuple[str, ...] = ()
    image_ext: str = ""
    image_size: tuple[int, int] | None = None  # (width, height) from the spec
    files_checked: int = 0
    missing_file_count: int = 0
    distinct_image_files: int = 0
    images_decoded: int = 0  # decoded by this check; the rest came from the user's cache
    images_from_cache: int = 0
    unreadable_image_count: int = 0
    train_val_overlap: int = 0
    train_val_content_overlap: int = 0
    train_kpi_capture_overlap: int = 0
    val_kpi_capture_overlap: int = 0
    pool_kpi_capture_overlap: int = 0
    pool_val_overlap: int = 0
    pool_val_content_overlap: int = 0
    train_test_capture_overlap: int = 0
    val_test_capture_overlap: int = 0
    pool_test_capture_overlap: int = 0
    test_kpi_capture_overlap: int = 0


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


def load_workspace(root: str | os.PathLike[str], *, label_map: Mapping[str, str] | None = None,
                   images: ImageCheckOptions | None = None) -> Workspace:
    """The workspace at ``root``; raises :class:`WorkspaceError` listing every problem found."""
    report = check_workspace(root, label_map=label_map, images=images)
    if report.problems or report.workspace is None:
        raise WorkspaceError(report.problems)
    return report.workspace


def check_workspace(root: str | os.PathLike[str], *, label_map: Mapping[str, str] | None = None,
                    images: ImageCheckOptions | None = None) -> CheckReport:
    """Validate the layout, spec, every CSV row, every image file and the split firewalls, and render
    a one-screen summary; never raises on bad input and never writes into the workspace.

    ``label_map`` (e.g. ``{"OK": "PASS"}``) says what labels that are not ``PASS`` or a defect name
    mean; without it, PASS synonyms and missing-value labels are errors. ``images`` sets the pixel
    cap, the cache directory and the worker count of the image check.
    """
    root = Path(root).absolute()
    out = Collector(_LIMIT)
    if not root.is_dir():
        msg = "workspace directory not found" if not root.exists() else "not a directory"
        problems = [Problem(str(root), None, None, f"{msg}; expected the TAO AOI layout (images/, specs/, train/, kpi/)")]
        return CheckReport(None, problems, _render(root, None, problems, [], DatasetStats()))

    try:
        mapping = normalise_label_map(label_map)
    except LabelMapError as exc:
        out.add(Problem("label_map", None, None, exc.detail))
        mapping = {}
    images_dir = _image_root(root, out)
    spec_path = root / SPEC_FILE
    spec, layout, size = _spec_and_layout(root, spec_path, out)
    frames: dict[str, tuple[Path, pd.DataFrame | None]] = {}
    for which, rel in ALL_CSV_FILES.items():
        path = root / rel
        if not path.is_file():
            if which in OPTIONAL_SPLITS:
                out.add(Problem(rel, None, None, _ABSENT[which], "warning"))
                continue
            out.add(Problem(rel, None, None, f"CSV not found; expected the {which} rows at {rel}"))
            continue
        frames[which] = (path, _read_csv(path, rel, which, out))

    csv_stats: dict[str, CsvStats] = {}
    index = DirIndex()
    files: dict[str, pd.DataFrame] = {}
    files_checked = missing = 0
    for which, (path, df) in frames.items():
        if df is None:
            continue
        name = display(path, root)
        if "label" in df.columns:
            mapped = apply_label_map(df["label"], mapping)
            labels = mapped.map(normalise_label).value_counts()
            csv_stats[which] = CsvStats(name, len(df), {str(k): int(v) for k, v in labels.items()})
            check_labels(mapped, name, out)
        if images_dir is not None and layout is not None:
            rep = inspect_rows(df, path, images_dir, layout, root, limit=_LIMIT, index=index)
            out.extend(rep.problems)
            files_checked += rep.files_checked
            missing += rep.missing_file_count
            if set(REQUIRED_COLUMNS) <= set(df.columns):
                files[which] = rep.files
    _class_balance(csv_stats, out)

    usable = {w: df for w, (_, df) in frames.items() if df is not None and set(REQUIRED_COLUMNS) <= set(df.columns)}
    names = {w: display(frames[w][0], root) for w in usable}
    scan = ImageScan({})
    stats: dict[str, int] = {}
    if images_dir is not None:
        scan = scan_images((p for f in files.values() for p in f["path"]), images)
        _unreadable(files, names, scan, root, out)
        stats = check_overlap(usable, files, names, images_dir, Path(real(root)), scan, out)

    problems_all = out.finish()
    errors = [p for p in problems_all if p.is_error]
    warnings = [p for p in problems_all if not p.is_error]
    workspace = None
    if images_dir is not None and spec is not None and layout is not None and all(
            w in frames and frames[w][1] is not None for w in ("train", "validation", "kpi")):
        optional = {w: frames[w][0] if w in frames else None for w in OPTIONAL_SPLITS}
        workspace = Workspace(root, images_dir, spec_path, spec, layout, frames["train"][0],
                              frames["validation"][0], frames["kpi"][0], optional["pool"], optional["test"],
                              mapping)
    ds = DatasetStats(csvs=csv_stats, lights=layout.lights if layout else (), image_ext=layout.image_ext if layout else "",
                      image_size=size, files_checked=files_checked, missing_file_count=missing,
                      distinct_image_files=len(scan.facts), images_decoded=scan.decoded,
                      images_from_cache=scan.cached, unreadable_image_count=scan.unreadable, **stats)
    return CheckReport(workspace, errors, _render(root, images_dir, errors, warnings, ds), warnings, ds)


_ABSENT = {
    "pool": "no mining pool CSV: the DEFT loop will have nothing to mine (SDG only)",
    "test": "no sealed test split (optional): final scores are reported on the KPI set only, which the DEFT "
            "loop steers by; add test/testing_set.csv (same columns as the KPI CSV) for an untouched estimate",
}


def _unreadable(files: dict[str, pd.DataFrame], names: dict[str, str], scan: ImageScan, root: Path,
                out: Collector) -> None:
    """An error per (row, column, light) whose image file cannot be decoded or holds a bomb."""
    bad = {p: f.error for p, f in scan.facts.items() if f.error is not None}
    if not bad:
        return
    root_real = real(root)
    for which, table in files.items():
        hit = table[table["path"].isin(bad)]
        for r in hit.itertuples(index=False):
            out.add(Problem(names[which], int(r.row), str(r.column),
                            f"image file {display(r.path, root_real)} (light {r.light}) {bad[r.path]}; "
                            f"replace the file or remove the row"), "unreadable image")


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


def _class_balance(csv_stats: dict[str, CsvStats], out: Collector) -> None:
    """FAR at 100% recall needs defect rows (recall) and PASS rows (FAR) wherever it is measured."""
    needs = {"train": "training needs both classes",
             "validation": "validation FAR at 100% recall (AutoML scoring) is undefined",
             "kpi": "KPI FAR at 100% recall is undefined",
             "test": "sealed test FAR at 100% recall is undefined"}
    for which, why in needs.items():
        st = csv_stats.get(which)
        if st is None or st.rows == 0:
            continue
        if st.defects == 0:
            out.add(Problem(st.path, None, "label", f"zero defect rows: {why} without defects (all {st.rows} rows PASS)"))
        if st.passes == 0:
            out.add(Problem(st.path, None, "label", f"zero PASS rows: {why} without PASS rows"))


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
        for which in ALL_CSV_FILES:
            st = ds.csvs.get(which)
            if st is None:
                continue
            labs = ", ".join(f"{k or '(empty)'} {v}" for k, v in sorted(st.labels.items()) if k != "PASS")
            lines.append(f"  {which:<11} {st.rows:>7} {st.passes:>7} {st.defects:>7}  {labs or '-'}")
        lines.append(f"  images      {ds.files_checked} files checked, {ds.missing_file_count} missing; "
                     f"{ds.distinct_image_files} distinct files opened, {ds.unreadable_image_count} unreadable "
                     f"({ds.images_decoded} decoded now, {ds.images_from_cache} from the cache)")
        lines.append(f"  leakage     train/validation {ds.train_val_overlap} rows by key, "
                     f"{ds.train_val_content_overlap} more by image content; rows sharing a KPI capture: "
                     f"train {ds.train_kpi_capture_overlap}, validation {ds.val_kpi_capture_overlap}, "
                     f"pool {ds.pool_kpi_capture_overlap}")
        if "test" in ds.csvs:
            lines.append(f"  sealed test rows sharing a test capture: train {ds.train_test_capture_overlap}, "
                         f"validation {ds.val_test_capture_overlap}, pool {ds.pool_test_capture_overlap}; "
                         f"test rows sharing a KPI capture {ds.test_kpi_capture_overlap}")
    for p in warnings:
        lines.append(f"  warning: {p}")
    if errors:
        lines.append(f"{len(errors)} problem{'s' if len(errors) != 1 else ''}:")
        lines.extend(f"  {p}" for p in errors)
    else:
        lines.append("OK: no problems found")
    return "\n".join(lines)
