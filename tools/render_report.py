"""Render a run dir's DEFT report in headless Chromium: full-page PNGs and a horizontal-overflow check.

    python tools/render_report.py RD [--out DIR] [--widths 1440,1366,1024] [--as-is]

The report is re-rendered from RD's files into ``--out`` (RD itself is never written), unless
``--as-is`` screenshots RD's existing ``DEFT_Loop_Report.html``. For each width it writes
``report_<W>.png`` (trailing blank space cropped) and checks that nothing makes the page wider
than the window: a copy of the page with a small measuring script is loaded with
``--dump-dom`` and every element whose right edge passes the window is listed, except those
inside a scrolling table box (they scroll inside their box, which is the intended layout).
Exit status 1 when any width overflows. Needs a ``chromium`` (Debian's package) on PATH or
``--chromium``.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

_PROBE = """<script>
addEventListener('load', () => {
  const W = document.documentElement.clientWidth;
  const bad = [];
  for (const el of document.querySelectorAll('body *')) {
    if (el.closest('.tw') && !el.classList.contains('tw')) continue;  // scrolls inside its box
    const r = el.getBoundingClientRect();
    if (r.width > 0 && r.right > W + 1) {
      bad.push({tag: el.tagName.toLowerCase(), id: el.id, cls: String(el.className.baseVal ?? el.className),
                right: Math.round(r.right), text: (el.textContent || '').trim().slice(0, 60)});
    }
  }
  const out = document.createElement('pre');
  out.id = 'overflow-probe';
  out.textContent = JSON.stringify({width: W, scrollWidth: document.documentElement.scrollWidth,
                                    offenders: bad.slice(0, 20), count: bad.length});
  document.body.appendChild(out);
});
</script>"""


def find_chromium(explicit: str | None) -> str:
    for name in ([explicit] if explicit else ["chromium", "chromium-browser", "google-chrome", "chrome"]):
        path = shutil.which(name) if name else None
        if path:
            return path
    raise SystemExit("error: no chromium on PATH (install Debian's `chromium` package or pass --chromium)")


def _chromium(binary: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    # A fresh profile per call: headless Chromium refuses to share a locked profile directory.
    with tempfile.TemporaryDirectory(prefix="report-chromium-") as profile:
        return subprocess.run([binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                               "--no-first-run", f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=timeout, check=False)


def screenshot(binary: str, html: Path, png: Path, width: int, height: int) -> Path:
    """Full-page PNG: a tall window, then the blank space below the content cropped away."""
    from PIL import Image, ImageChops

    p = _chromium(binary, f"--screenshot={png}", f"--window-size={width},{height}", html.resolve().as_uri())
    if not png.is_file():
        raise SystemExit(f"error: chromium wrote no screenshot for {html}:\n{p.stderr[-2000:]}")
    with Image.open(png) as im:
        rgb = im.convert("RGB")
    box = ImageChops.difference(rgb, Image.new("RGB", rgb.size, (255, 255, 255))).getbbox()
    if box is not None and box[3] + 24 < rgb.height:
        rgb.crop((0, 0, rgb.width, box[3] + 24)).save(png)
    return png


def overflow(binary: str, html: Path, width: int, workdir: Path) -> dict:
    """What sticks out of a ``width``-px window (see the module docstring)."""
    probe = workdir / f"probe_{width}.html"
    probe.write_text(html.read_text(encoding="utf-8").replace("</body>", _PROBE + "</body>"), encoding="utf-8")
    p = _chromium(binary, "--dump-dom", f"--window-size={width},900", probe.resolve().as_uri())
    m = re.search(r"<pre id=\"overflow-probe\">(.*?)</pre>", p.stdout, flags=re.DOTALL)
    if not m:
        raise SystemExit(f"error: the overflow probe did not run in chromium:\n{p.stderr[-2000:]}")
    return json.loads(m.group(1).replace("&quot;", '"').replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--out", type=Path, default=None, help="output folder (default: a new temporary folder)")
    ap.add_argument("--widths", default="1440,1024", help="comma-separated window widths in px")
    ap.add_argument("--height", type=int, default=14000, help="window height before cropping")
    ap.add_argument("--as-is", action="store_true", help="screenshot RD/DEFT_Loop_Report.html instead of re-rendering")
    ap.add_argument("--chromium", default=None)
    a = ap.parse_args(argv)
    binary = find_chromium(a.chromium)
    out = a.out or Path(tempfile.mkdtemp(prefix="report-render-"))
    out.mkdir(parents=True, exist_ok=True)
    if a.as_is:
        html = a.run_dir / "DEFT_Loop_Report.html"
    else:
        from raypipe._io import read_json
        from raypipe.deft.report import render_html
        from raypipe.rundir import RunDir

        html = out / "DEFT_Loop_Report.html"
        html.write_text(render_html(a.run_dir, read_json(RunDir(a.run_dir).deft_state)), encoding="utf-8")
    worst = 0
    for width in (int(w) for w in a.widths.split(",") if w.strip()):
        png = screenshot(binary, html, out / f"report_{width}.png", width, a.height)
        res = overflow(binary, html, width, out)
        status = "ok" if res["count"] == 0 and res["scrollWidth"] <= res["width"] else "OVERFLOW"
        print(f"{width} px: {png}  page scrollWidth {res['scrollWidth']} / {res['width']}  {status}")
        for o in res["offenders"]:
            print(f"    {o['tag']}#{o['id']}.{o['cls']} right={o['right']}: {o['text']!r}")
        worst = max(worst, 0 if status == "ok" else 1)
    return worst


if __name__ == "__main__":
    sys.exit(main())
