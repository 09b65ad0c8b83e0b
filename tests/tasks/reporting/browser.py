"""Headless Chromium (Debian's ``chromium``) for the report tests: the page's DOM as the browser built it, and
the duration the browser decoded from each ``<audio>``.

Outside CI a machine without Chromium skips these checks; under ``CI=true`` its absence fails them (.ci/run
installs it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import pytest

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync")
# Appended to a copy of the page: once every player has loaded its metadata (or failed), the durations the
# browser decoded go into an attribute of <body>, where --dump-dom shows them.
PROBE = """<script>
window.addEventListener("load", () => {
  const players = [...document.querySelectorAll("audio")];
  let left = players.length;
  const done = () => document.body.setAttribute("data-durations", players.map(
    p => isFinite(p.duration) ? p.duration.toFixed(2) : (p.error ? "error" : "none")).join(","));
  players.forEach(p => {
    const one = () => { if (--left === 0) done(); };
    p.addEventListener("loadedmetadata", one);
    p.addEventListener("error", one);
    p.load();
  });
  if (!left) done();
});
</script>
"""


def chromium() -> str:
    """The Chromium executable, or skip (fail under CI=true, where .ci/run installs it)."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail("chromium is not installed; .ci/run installs Debian's chromium package")
    pytest.skip("chromium is not installed (apt-get install chromium)")


def run_chromium(page: Path, *args: str, timeout: float = 120) -> str:
    """Chromium's stdout for ``page`` with ``args`` (--dump-dom, --screenshot=...), a fresh profile each time."""
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run([chromium(), *FLAGS, f"--user-data-dir={profile}", *args, page.resolve().as_uri()],
                              capture_output=True, text=True, timeout=timeout, check=True)
    return done.stdout


def dump_dom(page: Path) -> str:
    return run_chromium(page, "--dump-dom")


def decoded_durations(page: Path) -> list[str]:
    """The duration Chromium decoded from each <audio> of ``page``, in page order ("error" where it could not)."""
    probe = page.with_name(f".probe-{page.name}")  # beside the page, so its relative excerpt paths resolve
    probe.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    try:
        dom = run_chromium(probe, "--virtual-time-budget=15000", "--dump-dom")
    finally:
        probe.unlink()
    parsed = Elements()
    parsed.feed(dom)
    body = next(attrs for tag, attrs in parsed.elements if tag == "body")
    assert "data-durations" in body, "the probe did not finish: Chromium loaded no metadata in time"
    return [d for d in body["data-durations"].split(",") if d]


class Elements(HTMLParser):
    """Every start tag of a document, with its attributes, and the classes of table rows."""

    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {name: value or "" for name, value in attrs}))

    def rows(self, css_class: str) -> int:
        return sum(tag == "tr" and css_class in attrs.get("class", "").split() for tag, attrs in self.elements)

    def audio_sources(self) -> list[str]:
        return [attrs["src"] for tag, attrs in self.elements if tag == "audio"]


def parse(html: str) -> Elements:
    elements = Elements()
    elements.feed(html)
    return elements
