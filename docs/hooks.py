"""MkDocs hook: the CLI and configuration references, rendered from the code at build time.

docs/reference/cli.md and docs/reference/configuration.md each hold a marker line; ``on_page_markdown``
replaces it with the reference rendered from ``genreflow.flows.cli.build_parser()`` (every subcommand,
argument group, flag, help text and default, found by walking the argparse parser) or from
``genreflow.flows.config.Config`` (every section and field: type, default, bounds, description). Neither
list is written by hand, so neither can drift from the code. A page that lost its marker fails the build.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

from mkdocs.exceptions import PluginError

CLI_MARKER = "<!-- generated: cli reference -->"
CONFIG_MARKER = "<!-- generated: configuration reference -->"
PAGES = {"reference/cli.md": CLI_MARKER, "reference/configuration.md": CONFIG_MARKER}
# The CPU counts the parser is built under: a default that differs between the two depends on the machine.
CPU_PROBES = (3, 61)


def on_config(config: Any) -> Any:
    """``mkdocs serve`` rebuilds when the code the references come from changes."""
    root = Path(config["config_file_path"]).parent
    for folder in ("flows", "model"):
        if (root / folder).is_dir():
            config["watch"].append(str(root / folder))
    return config


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    marker = PAGES.get(page.file.src_uri)
    if marker is None:
        return markdown
    if marker not in markdown:
        raise PluginError(f"{page.file.src_uri} lost its marker line {marker!r}: the generated reference has no place")
    render = render_cli_reference if marker == CLI_MARKER else render_config_reference
    return markdown.replace(marker, render())


# --------------------------------------------------------------------------- building in a neutral place


@contextlib.contextmanager
def _neutral_environment() -> Iterator[None]:
    """No GENREFLOW_* variables and an empty working folder: the builder's own settings never reach the page."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("GENREFLOW_")}
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as empty:
        for key in saved:
            del os.environ[key]
        os.chdir(empty)
        try:
            yield
        finally:
            os.chdir(cwd)
            os.environ.update(saved)


def _build_parser(cpus: int) -> argparse.ArgumentParser:
    from genreflow.flows.cli import build_parser

    with _neutral_environment(), mock.patch("os.cpu_count", return_value=cpus):
        return build_parser()


# --------------------------------------------------------------------------- markdown helpers

_ESCAPES = str.maketrans({"\\": "\\\\", "*": "\\*", "_": "\\_", "[": "\\[", "]": "\\]", "<": "&lt;", ">": "&gt;",
                          "|": "\\|", "#": "\\#"})


def md_text(text: str) -> str:
    """Plain text as markdown for a table cell: code spans kept, everything else escaped."""
    parts = " ".join(str(text).split()).split("`")
    if len(parts) % 2 == 0:  # an unpaired backtick: no code spans at all
        return "\\`".join(p.translate(_ESCAPES) for p in parts)
    return "".join(md_code(p) if i % 2 else p.translate(_ESCAPES) for i, p in enumerate(parts))


def md_code(text: str) -> str:
    """``text`` as one inline code span (Python-Markdown's tables leave a pipe inside one alone)."""
    text = str(text)
    fence = "``" if "`" in text else "`"
    return f"{fence}{text}{fence}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]


# --------------------------------------------------------------------------- the command line


def _subparsers(parser: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    """(name, help, parser) of each subcommand, in the order the parser lists them."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            seen: set[int] = set()
            for name, sub in action.choices.items():
                if id(sub) in seen:  # an alias of a command already listed
                    continue
                seen.add(id(sub))
                found.append((name, helps.get(name) or "", sub))
    return found


def _help(action: argparse.Action, parser: argparse.ArgumentParser) -> str:
    """The action's help as --help prints it (%(default)s and friends filled in)."""
    if not action.help or action.help == argparse.SUPPRESS:
        return ""
    params = dict(vars(action), prog=parser.prog)
    params = {k: getattr(v, "__name__", v) for k, v in params.items() if v is not argparse.SUPPRESS}
    if params.get("choices") is not None:
        params["choices"] = ", ".join(map(str, params["choices"]))
    try:
        return action.help % params
    except (KeyError, TypeError, ValueError):
        return action.help


def _default(action: argparse.Action, other: argparse.Action | None) -> str | None:
    """The default worth stating, or None (no value, a switch's False, or one --help already states)."""
    if action.default in (None, argparse.SUPPRESS) or action.nargs == 0 or action.required:
        return None
    if isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
        return None
    if other is not None and other.default != action.default:
        return "the machine's CPU count"
    value = action.default
    if isinstance(value, (list, tuple)):
        value = " ".join(map(str, value))
    return md_code(value)


def _usage(parser: argparse.ArgumentParser, formatter: argparse.HelpFormatter) -> str:
    """``prog [options] POSITIONALS``: the flags are listed below, not repeated in one long line."""
    words = [parser.prog]
    if any(a.option_strings and not isinstance(a, argparse._HelpAction) for a in parser._actions):
        words.append("[options]")
    for action in parser._get_positional_actions():
        if action.help == argparse.SUPPRESS:
            continue
        if isinstance(action, argparse._SubParsersAction):
            words.append(f"{action.metavar or 'COMMAND'} ...")
        else:
            words.append(formatter._format_args(action, formatter._get_default_metavar_for_positional(action)))
    return " ".join(words)


def _render_parser(parser: argparse.ArgumentParser, other: argparse.ArgumentParser | None, command: str,
                   help_text: str, level: int) -> list[str]:
    lines = [f"{'#' * level} `{command}`", ""]
    description = parser.description or help_text
    if description:
        lines += [md_text(description), ""]
    formatter = parser._get_formatter()
    lines += ["```text", _usage(parser, formatter), "```", ""]
    if parser.epilog:
        lines += [md_text(parser.epilog), ""]
    others = {a.dest + "|" + "/".join(a.option_strings): a for a in (other._actions if other else [])}
    for group in parser._action_groups:
        actions = [a for a in group._group_actions
                   if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))
                   and a.help != argparse.SUPPRESS]
        if not actions:
            continue
        title = {"positional arguments": "Arguments", "options": "Options",
                 "optional arguments": "Options"}.get(group.title or "", group.title or "Options")
        rows = []
        for action in actions:
            text = md_text(_help(action, parser))
            default = _default(action, others.get(action.dest + "|" + "/".join(action.option_strings)))
            if default and "default" not in text.lower():
                text = f"{text} (default: {default})" if text else f"default: {default}"
            if action.required and action.option_strings:
                text = f"**Required.** {text}"
            invocation = formatter._format_action_invocation(action)
            rows.append([md_code(invocation), text or "–"])
        lines.append(f"**{md_text(title[0].upper() + title[1:])}**")
        lines.append("")
        if group.description:
            lines += [md_text(group.description), ""]
        positional = all(not a.option_strings for a in actions)
        lines += _table(["argument" if positional else "flag", "description"], rows)
    sub_others = {name: sub for name, _, sub in _subparsers(other)} if other else {}
    for name, sub_help, sub in _subparsers(parser):
        lines += _render_parser(sub, sub_others.get(name), f"{command} {name}", sub_help, min(level + 1, 6))
    return lines


def render_cli_reference() -> str:
    """Every command of ``genreflow``, walked from its argparse parser."""
    parser, other = _build_parser(CPU_PROBES[0]), _build_parser(CPU_PROBES[1])
    commands = _subparsers(parser)
    lines = ["## Commands", ""]
    lines += _table(["command", "does"], [[f"[`{parser.prog} {name}`](#{_anchor(parser.prog, name)})",
                                           md_text(help_text) or "–"] for name, help_text, _ in commands])
    lines += _render_parser(parser, other, parser.prog, "", 2)
    return "\n".join(lines)


def _anchor(*words: str) -> str:
    """The id MkDocs' toc gives a heading ``` `genreflow rebuild` ```."""
    return "-".join(w.lower() for w in words)


# --------------------------------------------------------------------------- the configuration


def _type_name(annotation: Any) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin is typing.Literal:
        return " \\| ".join(md_code(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        text = " or ".join(_type_name(a) for a in inner)
        return f"{text} or none" if len(inner) < len(args) else text
    if origin in (list, tuple, set):
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        return "table"
    if isinstance(annotation, type):
        return {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}.get(
            annotation.__name__, annotation.__name__)
    return md_text(str(annotation))


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, Path):
        return f'"{value}"'
    return str(value)


_BOUNDS = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<", "min_length": "at least {} items",
           "max_length": "at most {} items", "multiple_of": "a multiple of {}"}


def _bounds(field: Any) -> str:
    found = []
    for item in field.metadata:
        for name, word in _BOUNDS.items():
            value = getattr(item, name, None)
            if value is not None:
                found.append(word.format(value) if "{}" in word else f"{word} {value}")
    return ", ".join(found)


def _none_word(field: Any) -> str | None:
    """The word a flag types for None (``all`` clips, ``off`` folds), where the field declares one."""
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    return extra.get("none_word")


def _field_type(field: Any) -> str:
    text = _type_name(field.annotation)
    word = _none_word(field)
    return text.replace(" or none", f" or {md_code(word)}") if word else text


def _field_default(name: str, field: Any, recipes: dict[str, dict[str, Any]]) -> str:
    from pydantic_core import PydanticUndefined

    if field.default_factory is not None:
        value = field.default_factory()
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    none = md_code(_none_word(field)) if _none_word(field) else "none"
    if value is None and recipes and all(name in preset for preset in recipes.values()):
        set_by = ", ".join(f"{recipe}: {none if preset[name] is None else md_code(_toml(preset[name]))}"
                           for recipe, preset in recipes.items())
        return f"set by `recipe` ({set_by})"
    if value is None:
        return none
    return md_code(_toml(value))


def _flags(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Configuration field -> its flag, from the ``rebuild`` subcommand (where every field is a flag)."""
    flags: dict[str, str] = {}
    for name, _, sub in _subparsers(parser):
        if name != "rebuild":
            continue
        for action in sub._actions:
            long = [s for s in action.option_strings if s.startswith("--")]
            if long:
                flags.setdefault(action.dest, long[0])
    return flags


def render_config_reference() -> str:
    """Every section and field of ``genreflow.flows.config.Config``, from its pydantic schema."""
    from pydantic import BaseModel

    from genreflow.flows.config import Config

    try:
        from genreflow.model.params import RECIPES
    except ImportError:
        RECIPES = {}
    from genreflow.flows import config as config_module

    env_prefix = getattr(config_module, "ENV_PREFIX", None)  # every field is also $GENREFLOW_<FIELD>
    flags = _flags(_build_parser(CPU_PROBES[0]))
    lines: list[str] = []

    def section(model: type[BaseModel], path: list[str], level: int) -> None:
        doc = (model.__doc__ or "").strip().split("\n\n")[0]
        lines.extend([f"{'#' * level} `[{'.'.join(path)}]`", ""])
        if doc:
            lines.extend([md_text(doc), ""])
        rows, nested = [], []
        for name, field in model.model_fields.items():
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                nested.append((name, annotation))
                continue
            flag = md_code(flags[name]) if name in flags else "–"
            if env_prefix:
                flag += f"<br>{md_code('$' + env_prefix + name.upper())}"
            rows.append([md_code(name), flag, _field_type(field), _field_default(name, field, RECIPES),
                         _bounds(field) or "–", md_text(field.description or "") or "–"])
        if rows:
            header = "flag, environment" if env_prefix else "flag"
            lines.extend(_table(["field", header, "type", "default", "bounds", "description"], rows))
        for name, model_type in nested:
            section(model_type, [*path, name], min(level + 1, 6))

    for name, field in Config.model_fields.items():
        section(field.annotation, [name], 3)
    return "\n".join(lines)


if __name__ == "__main__":  # python docs/hooks.py cli|config: print what the site would show
    import sys

    print(render_cli_reference() if sys.argv[1:] == ["cli"] else render_config_reference())
