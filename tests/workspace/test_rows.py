"""The CSV row contract: label normalisation, string rows, column order, image paths."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from raypipe.workspace import ImageLayout, is_defect, normalise_label, read_rows, write_rows


@pytest.mark.parametrize(
    "raw, expected",
    [("Missing ", "missing"), (" pass", "PASS"), ("PASS", "PASS"), ("Pass\t", "PASS"),
     ("Foreign_Material", "foreign_material"), ("passed", "passed"), ("NO_PASS", "no_pass")],
)
def test_normalise_label(raw: str, expected: str) -> None:
    assert normalise_label(raw) == expected
    assert is_defect(raw) == (expected != "PASS")


def test_write_rows_orders_required_columns_normalises_labels_keeps_extras(tmp_path: Path) -> None:
    df = pd.DataFrame({
        "boardname": ["PB1", "PB2"],
        "label": ["Missing ", " pass"],
        "object_name": ["C1018@1", "R12@3"],
        "golden_path": ["b1/golden", "b2/golden"],
        "input_path": ["b1/cap", "b2/cap"],
        "comp_type_1": ["capacitor", "resistor"],
    })
    out = write_rows(df, tmp_path / "sub" / "rows.csv")
    text = out.read_text().splitlines()
    assert text[0] == "input_path,golden_path,label,object_name,boardname,comp_type_1"
    back = read_rows(out)
    assert back["label"].tolist() == ["missing", "PASS"]
    assert back["comp_type_1"].tolist() == ["capacitor", "resistor"]
    assert df["label"].tolist() == ["Missing ", " pass"]  # the caller's frame is untouched


def test_read_rows_keeps_every_cell_a_string(tmp_path: Path) -> None:
    p = tmp_path / "r.csv"
    p.write_text("input_path,golden_path,label,object_name,boardname\nb1/cap,b1/golden,PASS,007,NA\nb1/cap,b1/golden,PASS,8,\n")
    df = read_rows(p)
    assert df["object_name"].tolist() == ["007", "8"]  # no int coercion: file stems survive
    assert df["boardname"].tolist() == ["NA", ""]  # no NaN


def test_image_layout_from_spec_orders_lights_by_channel(tmp_path: Path) -> None:
    spec = {"dataset": {"classify": {"input_map": {"SolderLight": 1, "LowAngleLight": 0}, "image_ext": "png"}}}
    layout = ImageLayout.from_spec(spec)
    assert layout == ImageLayout(("LowAngleLight", "SolderLight"), ".png")
    row = {"input_path": "b1/cap", "golden_path": "/abs/golden", "object_name": "C1@1"}
    assert layout.capture_paths(tmp_path, row) == [tmp_path / "b1/cap/C1@1_LowAngleLight.png",
                                                   tmp_path / "b1/cap/C1@1_SolderLight.png"]
    assert layout.golden_paths(tmp_path, row)[0] == Path("/abs/golden/C1@1_LowAngleLight.png")
    with pytest.raises(ValueError, match="input_map"):
        ImageLayout.from_spec({"dataset": {"classify": {}}})
