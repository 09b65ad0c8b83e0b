"""A genreflow project in a folder: ``genreflow init``'s files, and the shell completion script.

``genreflow.toml`` is what later commands in that folder (or below it) read
without ``--config``, the way DVC and Kedro find theirs; ``prefect.yaml``
deploys a nightly rebuild of the same collection with the same settings.
"""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path
from typing import Any

import yaml

from genreflow.flows.config import PATH_FIELDS, PROJECT_FILE, ConfigError, build_config, leaf_fields

PREFECT_FILE = "prefect.yaml"
NIGHTLY_CRON = "0 2 * * *"


def _toml_value(value: Any) -> str:
    """A TOML literal: JSON's strings, numbers, booleans and arrays are TOML's."""
    return json.dumps(value)


def project_toml(given: dict[str, Any]) -> str:
    """Every setting by section: the ones given as lines, the rest commented out at their defaults.

    A value that is None (``--clips-per-track all``) has no TOML literal; it is written as its flag's word
    would be, as a comment that says so, and the default applies.
    """
    lines = ["# genreflow project settings: every `genreflow` command run in this folder or below reads them.",
             "# Precedence, highest first: a flag, $GENREFLOW_<FIELD>, this file, the data root's recorded",
             "# configuration, the default. Relative paths are relative to this file's folder.", ""]
    section = None
    for name, (part, field) in leaf_fields().items():
        if part != section:
            section = part
            lines += ["", f"[{section}]"]
        lines.append(f"# {field.description}" if field.description else f"# {name}")
        default = field.default_factory() if field.default_factory else field.default
        if name in given and given[name] is not None:
            lines.append(f"{name} = {_toml_value(given[name])}")
        elif default is None:
            lines.append(f"# {name} =  (unset: {field.description or 'see the docs'})")
        else:
            lines.append(f"# {name} = {_toml_value(default)}")
    return "\n".join(lines).replace("\n\n\n", "\n\n").lstrip("\n") + "\n"


def prefect_deployment(config: dict[str, Any]) -> str:
    """prefect.yaml with one deployment: the whole DAG nightly, with this project's configuration."""
    document = {
        "name": "genreflow",
        "pull": [{"prefect.deployments.steps.set_working_directory": {"directory": "{{ $GENREFLOW_HOME }}"}}],
        "deployments": [{
            "name": "nightly",
            "description": "The whole DAG every night; what is up to date is skipped.",
            "entrypoint": "flows/serve.py:scheduled_rebuild",
            "parameters": {"config": config},
            "schedules": [{"cron": NIGHTLY_CRON, "timezone": "UTC", "active": True}],
            "concurrency_limit": {"limit": 1, "collision_strategy": "ENQUEUE"},
            "work_pool": {"name": "genreflow", "work_queue_name": "default"},
        }],
    }
    header = ("# A nightly rebuild of this collection (genreflow init). GENREFLOW_HOME: a checkout of genreflow.\n"
              "#   prefect work-pool create genreflow --type process --concurrency-limit 1\n"
              f"#   prefect deploy --all --prefect-file {PREFECT_FILE} && prefect worker start --pool genreflow\n")
    return header + yaml.safe_dump(document, sort_keys=False)


def write_project(folder: Path, given: dict[str, Any], force: bool = False) -> list[Path]:
    """``genreflow init``: genreflow.toml and prefect.yaml in ``folder``; existing files are kept unless
    ``force``. Relative paths given are made absolute in prefect.yaml, whose runs start elsewhere."""
    toml_path, prefect_path = folder / PROJECT_FILE, folder / PREFECT_FILE
    existing = [path for path in (toml_path, prefect_path) if path.exists()]
    if existing and not force:
        raise ConfigError(f"{', '.join(map(str, existing))} already exist(s): --force overwrites")
    config = build_config(None, _explicit=given)  # checks the values before anything is written
    leaves = leaf_fields()
    nested: dict[str, dict[str, Any]] = {}
    for name, value in given.items():
        if name in PATH_FIELDS and isinstance(value, str) and "://" not in value:
            value = str((folder / value).resolve())
        nested.setdefault(leaves[name][0], {})[name] = value
    nested.setdefault("run", {}).setdefault("data_root", str((folder / config.run.data_root).resolve()))
    toml_path.write_text(project_toml(given))
    prefect_path.write_text(prefect_deployment(nested))
    return [toml_path, prefect_path]


def _options(parser: argparse.ArgumentParser) -> list[str]:
    return sorted(option for action in parser._actions for option in action.option_strings)


def completion_script(parser: argparse.ArgumentParser, shell: str) -> str:
    """A bash completion function for ``genreflow``, generated from the parser, so it knows every command and
    flag of this version (zsh runs it through bashcompinit)."""
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    cases = "\n".join(f"        {name}) opts={shlex.quote(' '.join(_options(sub)))} ;;"
                      for name, sub in sorted(subparsers.choices.items()))
    commands = " ".join(sorted(subparsers.choices))
    script = f"""_genreflow() {{
    local cur=${{COMP_WORDS[COMP_CWORD]}} cmd="" word opts
    for word in "${{COMP_WORDS[@]:1:COMP_CWORD-1}}"; do
        case "$word" in -*) ;; *) cmd="$word"; break ;; esac
    done
    if [ -z "$cmd" ]; then
        COMPREPLY=($(compgen -W {shlex.quote(commands + ' ' + ' '.join(_options(parser)))} -- "$cur"))
        return
    fi
    case "$cmd" in
{cases}
        *) opts="" ;;
    esac
    if [[ "$cur" == -* ]]; then
        COMPREPLY=($(compgen -W "$opts" -- "$cur"))
    else
        COMPREPLY=($(compgen -f -- "$cur"))
    fi
}}
complete -o filenames -F _genreflow genreflow
"""
    if shell == "zsh":
        script = "autoload -U +X bashcompinit && bashcompinit\n" + script
    return script
