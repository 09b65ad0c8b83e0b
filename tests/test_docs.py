"""The README is a front page that starts with its two commands, and docs/ builds as a strict MkDocs site.

The site build (``mkdocs build --strict``, as .ci/run runs it) fails on a broken link or anchor
(mkdocs.yml ``validation:``); its command-line and configuration references are rendered from the parser
and the pydantic schema by docs/hooks.py, so these tests check that every command, flag and field is on
the built pages. The build tests skip where MkDocs and its theme are not installed (the ``docs`` extra).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = REPO / "docs"
# The two commands that must stay the first thing on the front page, exactly (issue 21).
FRONT_COMMANDS = [
    "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/genreflow rebuild",
    '.venv/bin/pip install -e ".[dev]" && .venv/bin/python -m pytest -q',
]
FRONT_PAGE_MAX_LINES = 200
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _fenced_blocks(text: str) -> list[list[str]]:
    blocks, current = [], None
    for line in text.splitlines():
        if line.startswith("```"):
            if current is None:
                current = []
            else:
                blocks.append(current)
                current = None
        elif current is not None:
            current.append(line)
    return blocks


def test_readme_starts_with_the_two_commands() -> None:
    lines = README.read_text().splitlines()
    first_fence = next(i for i, line in enumerate(lines) if line.startswith("```"))
    assert first_fence <= 10, "the two commands must be the first thing on the page, after the title and a sentence"
    assert not LINK.search("\n".join(lines[:first_fence])), "nothing but the title and a sentence before them"
    first_block = _fenced_blocks(README.read_text())[0]
    commands = [line for line in first_block if line.strip() and not line.lstrip().startswith("#")]
    assert commands == FRONT_COMMANDS


def test_readme_is_a_front_page() -> None:
    lines = README.read_text().splitlines()
    assert len(lines) <= FRONT_PAGE_MAX_LINES, f"README.md has {len(lines)} lines: move the rest into docs/"


def _readme_links() -> list[str]:
    return [target for target in LINK.findall(README.read_text()) if "://" not in target]


def test_readme_links_resolve() -> None:
    """Relative links from the front page name files that exist, and its own anchors name its headings."""
    text = README.read_text()
    headings = {_github_slug(line.lstrip("#")) for line in text.splitlines() if line.startswith("#")}
    links = _readme_links()
    assert any(link.startswith("docs/") for link in links), "the front page links into the docs"
    for link in links:
        path, _, anchor = link.partition("#")
        if path:
            assert (REPO / path).exists(), link
        else:
            assert anchor in headings, link


def _github_slug(heading: str) -> str:
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _documented_commands(text: str) -> list[list[str]]:
    """Each ``genreflow ...`` command in the fenced blocks of ``text``: continuations joined, comments and
    whatever follows a shell operator dropped."""
    commands = []
    for block in _fenced_blocks(text):
        pending = ""
        for raw in block:
            line = pending + raw.split("  #")[0].strip()
            if line.endswith("\\"):
                pending = line[:-1] + " "
                continue
            pending = ""
            line = re.split(r"\s(?:\|\||&&|\||;)\s", line)[0]
            if line.startswith("genreflow "):
                commands.append(shlex.split(line)[1:])
    return commands


def _doc_pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


@pytest.mark.parametrize("page", [README, *_doc_pages()], ids=lambda p: str(p.relative_to(REPO)))
def test_documented_commands_parse(page: Path) -> None:
    """Every `genreflow` command a page shows is one the CLI accepts, flags and values included."""
    from genreflow.flows.cli import build_parser

    for args in _documented_commands(page.read_text()):
        try:
            build_parser().parse_args([arg.replace("<run>", "run-1") for arg in args])
        except SystemExit:
            pytest.fail(f"{page.name}: `genreflow {' '.join(args)}` is not a valid command")


def test_every_exit_code_is_documented() -> None:
    from genreflow.flows import cli

    codes = {value for name, value in vars(cli).items() if name.startswith("EXIT_") and isinstance(value, int)}
    page = (DOCS / "reference" / "exit-codes.md").read_text()
    documented = {int(code) for code in re.findall(r"^\| (\d+) \|", page, flags=re.MULTILINE)}
    assert codes <= documented, f"exit codes missing from docs/reference/exit-codes.md: {sorted(codes - documented)}"


# --------------------------------------------------------------------------- the site


def _mkdocs_installed() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in ("mkdocs", "material"))


needs_mkdocs = pytest.mark.skipif(not _mkdocs_installed(), reason="MkDocs not installed: pip install -e '.[docs]'")


def _build(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # Material's end-of-life banner (docs/development.md)
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(config),
                           "--site-dir", str(site)], cwd=config.parent, env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    result = _build(REPO / "mkdocs.yml", out)
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout}\n{result.stderr}"
    return out


def _page(site: Path, name: str) -> str:
    return (site / name / "index.html").read_text()


Command = tuple[tuple[str, ...], argparse.ArgumentParser]


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[Command]:
    """(subcommand path, parser) of the parser and every subcommand below it."""
    found = [(path, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _commands(sub, (*path, name))
    return found


@needs_mkdocs
def test_site_builds_strict(site: Path) -> None:
    assert (site / "index.html").exists()
    for page in _doc_pages():
        if page.name != "index.md":
            relative = page.relative_to(DOCS).with_suffix("")
            assert (site / relative / "index.html").exists(), f"{page} is not on the site"


@needs_mkdocs
def test_cli_reference_lists_every_command_and_flag(site: Path) -> None:
    from genreflow.flows.cli import build_parser

    html = _page(site, "reference/cli")
    for path, parser in _commands(build_parser()):
        if len(path) == 1:
            assert f'id="genreflow-{path[0]}"' in html, f"no section for genreflow {path[0]}"
        for action in parser._actions:
            if action.help == argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
                continue
            for option in action.option_strings:
                assert option in html, f"genreflow {' '.join(path)} {option} is missing from the CLI reference"


@needs_mkdocs
def test_configuration_reference_lists_every_field(site: Path) -> None:
    from genreflow.flows.config import Config, leaf_fields

    html = _page(site, "reference/configuration")
    for section in Config.model_fields:
        assert f"<code>[{section}]</code>" in html, section
    for name in leaf_fields():
        assert f"<code>{name}</code>" in html, f"configuration field {name} is missing"


@needs_mkdocs
def test_readme_anchors_into_the_site_exist(site: Path) -> None:
    for link in _readme_links():
        path, _, anchor = link.partition("#")
        if not (path.startswith("docs/") and path.endswith(".md") and anchor):
            continue
        page = Path(path).relative_to("docs").with_suffix("")
        html = _page(site, "" if page.name == "index" else str(page))
        assert f'id="{anchor}"' in html, link


@needs_mkdocs
def test_a_broken_link_fails_the_build(tmp_path: Path) -> None:
    """strict + validation: a link to a missing page or anchor stops the build, as it stops CI."""
    shutil.copy(REPO / "mkdocs.yml", tmp_path / "mkdocs.yml")
    shutil.copytree(DOCS, tmp_path / "docs", ignore=shutil.ignore_patterns("__pycache__"))
    page = tmp_path / "docs" / "development.md"
    page.write_text(page.read_text() + "\n[gone](no-such-page.md) and [nowhere](index.md#no-such-anchor)\n")
    result = _build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert result.returncode != 0
    assert "no-such-page.md" in result.stderr and "no-such-anchor" in result.stderr
