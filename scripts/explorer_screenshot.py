"""docs/explorer.png: a run's report explorer after a hover and a click, as headless Chromium shows it.

Usage: .venv/bin/python scripts/explorer_screenshot.py <run>/report/report.html [docs/explorer.png]
The page gets the suite's scripted visit (tests/explorer_driver.html: a hover over the first
mapped image, then a click on it) and shows the explorer alone.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXPLORER_ONLY = "<style>body>section:not(#explorer),body>table,body>h2,body>p{display:none}</style>"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("output", type=Path, nargs="?", default=ROOT / "docs" / "explorer.png")
    args = parser.parse_args()
    chromium = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    if chromium is None:
        raise SystemExit("no chromium: apt-get install chromium")
    driver = (ROOT / "tests" / "explorer_driver.html").read_text()
    page = args.report.read_text().replace("</head>", EXPLORER_ONLY + "</head>")
    with tempfile.TemporaryDirectory() as folder:
        visited = Path(folder) / "report.html"
        visited.write_text(page.replace("</body>", driver + "</body>"))
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000"]
        command = [chromium, *flags, f"--screenshot={args.output.resolve()}", "--window-size=1100,1000"]
        subprocess.run([*command, visited.as_uri()], check=True, capture_output=True, timeout=120)
    print(f"written {args.output}")


if __name__ == "__main__":
    main()
