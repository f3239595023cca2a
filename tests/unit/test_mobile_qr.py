"""The places QR codes name (码上说) and the codes `gridflow qrcodes` prints."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from gridflow.core.geo import locate
from gridflow.core.refdata import load_reference_data
from mobile.places import door_plate, find_place, grid_place
from mobile.qrcodes import code_url, places, qrcodes

REF = load_reference_data()
GRID = "421099101201001"


def test_a_grid_code_reports_at_a_point_inside_its_grid() -> None:
    place = grid_place(REF, GRID)
    assert place is not None and not place.plate
    grid = locate(REF, place.lat, place.lon)
    assert grid is not None and grid.code == GRID
    assert place.path() == f"/r/{GRID}"
    assert place.where == "青石镇 石门村 石门村一组网格"


def test_a_door_plate_keeps_its_own_point_and_name() -> None:
    plate = door_plate(REF, "石门村一组12号", 32.16, 109.96)
    assert plate is not None and plate.plate and plate.grid_code == GRID
    again = find_place(REF, GRID, "32.160000,109.960000", "石门村一组12号")
    assert again == plate
    assert code_url("http://10.0.0.5:18080/", plate).startswith(f"http://10.0.0.5:18080/r/{GRID}?at=")


def test_a_code_whose_point_lies_elsewhere_reports_the_grid_it_names() -> None:
    other = find_place(REF, GRID, "32.0,110.2", "某门牌")  # not in this grid
    assert other == grid_place(REF, GRID)
    assert find_place(REF, "421099999999999") is None
    assert door_plate(REF, "县外", 10.0, 10.0) is None


def test_the_places_to_print() -> None:
    assert len(places(REF, (), None, ())) == len(REF.grids)
    township = places(REF, (), "421099101", ())
    assert township and all(p.grid_code.startswith("421099101") for p in township)
    with pytest.raises(click.BadParameter, match="门牌应写作"):
        places(REF, (), None, ("no point",))


def test_the_command_writes_pngs_and_a_pdf_sheet(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(qrcodes, ["--out", str(tmp_path / "png"), "--grid", GRID,
                                     "--plate", "石门村一组12号@32.16,109.96"])
    assert result.exit_code == 0, result.output
    pngs = sorted((tmp_path / "png").glob("*.png"))
    assert [p.name for p in pngs] == [f"001-grid-{GRID}.png", f"002-plate-{GRID}.png"]
    assert pngs[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = runner.invoke(qrcodes, ["--format", "pdf", "--out", str(tmp_path / "sheet.pdf")])
    assert result.exit_code == 0, result.output
    pdf = (tmp_path / "sheet.pdf").read_bytes()
    assert pdf.startswith(b"%PDF") and pdf.count(b"/Type /Page\n") + pdf.count(b"/Type /Page ") >= 1
