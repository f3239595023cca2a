"""`gridflow qrcodes`: printable QR codes of the county's grids and door plates (码上说), each
opening the residents' report form of its place (`/r/<grid>`, mobile.resident).

PNG files (one per code, the place written under it) or one PDF sheet of labels (A4, 3 × 4 a
page). The QR symbols come from segno; the PDF is drawn by reportlab with its built-in Chinese
font (STSong-Light, supplied by the PDF reader), so no font file is needed on the server.
"""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path

import click

from gridflow.core.refdata import ReferenceData
from mobile.places import Place, door_plate, grid_place

PLATE_RE = re.compile(r"^(?P<label>.+)@(?P<lat>-?\d+(\.\d+)?),(?P<lon>-?\d+(\.\d+)?)$")


def places(ref: ReferenceData, grids: tuple[str, ...], township: str | None,
           plates: tuple[str, ...]) -> list[Place]:
    """The places to print: the grids named (or all, or a township's), then the door plates
    ("门牌@lat,lon"). Raises click.BadParameter naming what is wrong."""
    out: list[Place] = []
    codes = list(grids) or ([] if plates else sorted(ref.grids))
    if township:
        if township not in ref.townships:
            raise click.BadParameter(f"乡镇(街道)编码 {township} 不存在", param_hint="--township")
        codes = [c for c in (codes or sorted(ref.grids)) if ref.grids[c].township_code == township]
    for code in codes:
        place = grid_place(ref, code)
        if place is None:
            raise click.BadParameter(f"网格编码 {code} 不存在", param_hint="--grid")
        out.append(place)
    for text in plates:
        m = PLATE_RE.match(text.strip())
        if not m:
            raise click.BadParameter(f"门牌应写作 名称@纬度,经度, 而不是 {text!r}",
                                     param_hint="--plate")
        plate = door_plate(ref, m["label"], float(m["lat"]), float(m["lon"]))
        if plate is None:
            raise click.BadParameter(f"门牌 {m['label']} 的位置不在本县任何网格内",
                                     param_hint="--plate")
        out.append(plate)
    return out


def code_url(base_url: str, place: Place) -> str:
    return base_url.rstrip("/") + place.path()


def file_name(place: Place, index: int) -> str:
    tag = "plate" if place.plate else "grid"
    return f"{index:03d}-{tag}-{place.grid_code}.png"


def write_pngs(items: list[Place], base_url: str, out: Path, scale: int = 8) -> list[Path]:
    """One PNG per place: the QR symbol (error correction M, quiet zone 4) with the place
    written under it."""
    import io

    import segno
    from PIL import Image, ImageDraw

    out.mkdir(parents=True, exist_ok=True)
    font = _label_font(24)
    written = []
    for i, place in enumerate(items, 1):
        buf = io.BytesIO()
        segno.make(code_url(base_url, place), error="m", micro=False).save(
            buf, kind="png", scale=scale, border=4)
        qr = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
        measure = partial(ImageDraw.Draw(qr).textlength, font=font)
        lines = ["码上说 · 扫码反映问题", *_wrap(place.where, measure, qr.width - 24)]
        sheet = Image.new("RGB", (qr.width, qr.height + 44 * len(lines) + 16), "white")
        sheet.paste(qr, (0, 0))
        draw = ImageDraw.Draw(sheet)
        for n, line in enumerate(lines):
            width = draw.textlength(line, font=font)
            draw.text(((qr.width - width) / 2, qr.height + 4 + 44 * n), line, fill="black",
                      font=font)
        path = out / file_name(place, i)
        sheet.save(path, "PNG", optimize=True)
        written.append(path)
    return written


def _wrap(text: str, width_of, limit: float) -> list[str]:  # type: ignore[no-untyped-def]
    """`text` in lines no wider than `limit` (broken at spaces where it can, else anywhere)."""
    lines: list[str] = []
    line = ""
    for word in text.split(" "):
        candidate = f"{line} {word}" if line else word
        if width_of(candidate) <= limit:
            line = candidate
            continue
        if line:
            lines.append(line)
        line = ""
        for ch in word:
            if width_of(line + ch) > limit and line:
                lines.append(line)
                line = ""
            line += ch
    if line:
        lines.append(line)
    return lines


def _label_font(size: int):  # type: ignore[no-untyped-def]
    """A CJK font for the PNG labels when the system has one (Noto CJK), else Pillow's own."""
    from PIL import ImageFont

    for candidate in ("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
                      "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
                      "/usr/share/fonts/opentype/noto/NotoSerifCJK-Regular.ttc"):
        if Path(candidate).exists():
            return ImageFont.truetype(candidate, size)
    return ImageFont.load_default(size)


def write_pdf(items: list[Place], base_url: str, path: Path, county: str) -> Path:
    """An A4 sheet of labels, 3 columns × 4 rows a page: the QR symbol drawn as vector squares,
    the place and the county under it."""
    import segno
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.units import mm
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.cidfonts import UnicodeCIDFont
    from reportlab.pdfgen import canvas

    pdfmetrics.registerFont(UnicodeCIDFont("STSong-Light"))
    path.parent.mkdir(parents=True, exist_ok=True)
    pdf = canvas.Canvas(str(path), pagesize=A4)
    pdf.setTitle(f"{county} 码上说二维码")
    page_w, page_h = A4
    cols, rows, margin = 3, 4, 12 * mm
    cell_w, cell_h = (page_w - 2 * margin) / cols, (page_h - 2 * margin) / rows
    side = min(cell_w, cell_h) - 26 * mm
    for i, place in enumerate(items):
        if i and i % (cols * rows) == 0:
            pdf.showPage()
        col, row = i % cols, (i // cols) % rows
        x0 = margin + col * cell_w
        y0 = page_h - margin - (row + 1) * cell_h
        pdf.setStrokeGray(0.8)
        pdf.rect(x0 + 2, y0 + 2, cell_w - 4, cell_h - 4)
        qr = segno.make(code_url(base_url, place), error="m", micro=False)
        matrix = list(qr.matrix_iter(scale=1, border=2))
        module = side / len(matrix)
        qx, qy = x0 + (cell_w - side) / 2, y0 + cell_h - side - 6 * mm
        pdf.setFillGray(0)
        for r, line in enumerate(matrix):
            for c, dark in enumerate(line):
                if dark:
                    pdf.rect(qx + c * module, qy + side - (r + 1) * module, module, module,
                             stroke=0, fill=1)
        pdf.setFont("STSong-Light", 10)
        pdf.drawCentredString(x0 + cell_w / 2, qy - 6 * mm, "码上说  扫码反映问题")
        pdf.setFont("STSong-Light", 8)
        width = partial(pdfmetrics.stringWidth, fontName="STSong-Light", fontSize=8)
        for n, part in enumerate(_wrap(place.where, width, cell_w - 8 * mm)[:3]):
            pdf.drawCentredString(x0 + cell_w / 2, qy - (11 + 4 * n) * mm, part)
        pdf.setFont("STSong-Light", 7)
        pdf.drawCentredString(x0 + cell_w / 2, y0 + 4 * mm, f"{county} 网格化管理")
    pdf.showPage()
    pdf.save()
    return path


@click.command("qrcodes")
@click.option("--out", "out", type=click.Path(path_type=Path), default=Path("qrcodes"),
              show_default=True, help="PNG 目录, 或 PDF 文件 (--format pdf)")
@click.option("--format", "fmt", type=click.Choice(["png", "pdf"]), default="png",
              show_default=True)
@click.option("--base-url", default=None,
              help="二维码里的网址前缀, 手机能访问到的 API 地址 (默认 http://<api host>:<port>)")
@click.option("--grid", "grids", multiple=True, help="网格编码 (可多次; 缺省为全部网格)")
@click.option("--township", default=None, help="只印该乡镇(街道)的网格")
@click.option("--plate", "plates", multiple=True,
              help="门牌: 名称@纬度,经度 (可多次), 例如 '石门村一组12号@32.16,109.96'")
def qrcodes(out: Path, fmt: str, base_url: str | None, grids: tuple[str, ...],
            township: str | None, plates: tuple[str, ...]) -> None:
    """Printable QR codes (码上说) for the county's grids and door plates."""
    from bootstrap import bootstrap

    world = bootstrap()
    settings, ref = world.settings, world.ref
    base = base_url or f"http://{settings.api_host}:{settings.api_port}"
    items = places(ref, grids, township, plates)
    if fmt == "pdf":
        target = out if out.suffix == ".pdf" else out / "qrcodes.pdf"
        write_pdf(items, base, target, ref.county.name)
        click.echo(f"{len(items)} 个二维码 → {target}")
    else:
        written = write_pngs(items, base, out)
        click.echo(f"{len(written)} 个二维码 → {out}/")
