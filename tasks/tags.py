"""Predicted genres into the files' own tags, journalled first and undoable, never half-written.

Plain file I/O on the user's library, with mutagen; no Prefect. The tag each
format's players read: ID3 ``TCON`` for mp3, the Vorbis comment ``GENRE`` for
flac and ogg, ``©gen`` for mp4/m4a. Other formats (wav, au) are skipped.

- :func:`plan_tags` decides, without writing, what each file would get: a
  write, a kept genre (a file that has one keeps it unless ``overwrite``), or a
  skip with the reason (under the confidence threshold, not predicted, a
  read-only file or folder, hard links, a tag mutagen cannot parse).
- :func:`apply_tags` writes them. Each write is journalled first (file, old
  value, new value, one JSON line, synced) and then made on a copy of the file
  in its folder: the copy is tagged, read back, and renamed over the original
  only if the original did not change meanwhile. A crash or an error at any
  moment leaves the original or the tagged file, never a mix; mutagen itself
  rewrites files in place, which a kill could leave half-written.
- :func:`undo_journal` puts the old values back, exactly (the same list of
  values; no genre field where there was none, no tag where there was none),
  for each file whose genre is still the one written.

Only tag bytes change: the audio frames are copied as they are, which
tests/tasks/test_tags.py checks by hashing them before, after and after undo.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import stat
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from genreflow.storage.errors import GenreflowError
from genreflow.storage.files import display_path

# Extension -> which tag holds a genre.
TAG_KINDS: dict[str, str] = {".mp3": "id3", ".flac": "vorbis", ".ogg": "vorbis", ".oga": "vorbis",
                             ".opus": "vorbis", ".m4a": "mp4", ".mp4": "mp4", ".m4b": "mp4"}
MP4_GENRE = "\xa9gen"
UNKNOWN = "unknown"  # an open-set decision: nothing is written for it
JOURNAL_PREFIX = "tag-journal-"

Action = Literal["write", "keep", "skip"]


class TagError(GenreflowError, RuntimeError):
    """A journal that cannot be read or written."""


class _Unparseable(Exception):
    """mutagen could not read the file's tags."""


@dataclass(frozen=True)
class TagPlan:
    """What one file gets: a write (``new``), a kept genre, or a skip, with the reason in words."""

    path: str  # the file's own path (links resolved: the file that is written)
    shown: str  # the path as the table shows it
    action: Action
    reason: str
    new: str | None = None
    old: list[str] | None = None
    probability: float = float("nan")
    snapshot: tuple[int, int, int] | None = None  # (size, mtime_ns, inode) when planned


@dataclass(frozen=True)
class TagOutcome:
    """What happened to one file in :func:`apply_tags` or :func:`undo_journal`."""

    path: str
    done: bool
    reason: str
    shown: str = ""  # the path as the predictions table shows it


@dataclass
class TagReport:
    """The outcomes of a run, and the journal of its writes."""

    journal: str | None
    outcomes: list[TagOutcome] = field(default_factory=list)

    @property
    def written(self) -> int:
        return sum(o.done for o in self.outcomes)


# --------------------------------------------------------------------------- reading and writing one file's genre


def tag_kind(path: str) -> str | None:
    return TAG_KINDS.get(os.path.splitext(path)[1].lower())


def _open(path: str, kind: str) -> Any:
    """The mutagen object of ``path``; raises _Unparseable with mutagen's reason."""
    import mutagen
    from mutagen.mp3 import MP3
    from mutagen.mp4 import MP4

    try:
        if kind == "id3":
            return MP3(path)
        if kind == "mp4":
            return MP4(path)
        audio = mutagen.File(path)
    except (mutagen.MutagenError, OSError, ValueError, EOFError) as exc:  # mutagen's own and the struct errors
        raise _Unparseable(str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__) from None
    if audio is None:
        raise _Unparseable("not a format mutagen knows")
    return audio


def read_genre(path: str) -> tuple[list[str] | None, dict[str, Any]]:
    """The file's genre values (None: no genre field) and what restoring them exactly needs (the tag's
    presence, ID3's version and text encoding)."""
    kind = tag_kind(path)
    if kind is None:
        raise _Unparseable("no genre tag for this format")
    audio = _open(path, kind)
    tags = audio.tags
    details: dict[str, Any] = {"kind": kind, "had_tag": tags is not None}
    if tags is None:
        return None, details
    if kind == "id3":
        details["id3_version"] = list(tags.version)
        frame = tags.get("TCON")
        if frame is None:
            return None, details
        details["id3_encoding"] = int(frame.encoding)
        return [str(t) for t in frame.text], details
    if kind == "mp4":
        values = tags.get(MP4_GENRE)
        if values is None and "gnre" in tags:
            details["mp4_numeric_genre"] = True
        return (None if values is None else [str(v) for v in values]), details
    values = tags.get("genre")
    return (None if not values else [str(v) for v in values]), details


def _set_genre(path: str, values: list[str] | None, details: dict[str, Any], remove_tag: bool = False) -> None:
    """Write ``values`` as the genre of ``path`` (None: remove the field; ``remove_tag``: remove the whole
    tag if nothing else is left in it), keeping ID3's version and encoding."""
    from mutagen.id3 import TCON
    from mutagen.id3 import delete as delete_id3

    kind = details["kind"]
    audio = _open(path, kind)
    if kind == "id3":
        tags = audio.tags
        if tags is None:
            audio.add_tags()
            tags = audio.tags
        version = details.get("id3_version") or list(tags.version)
        tags.delall("TCON")
        if values is not None:
            tags.add(TCON(encoding=details.get("id3_encoding", 3 if version[1] >= 4 else 1), text=values))
        if remove_tag and len(tags) == 0:
            delete_id3(path)  # the ID3v2 and any ID3v1 tag: the file as it was before the tag was added
            return
        if version[1] < 4:
            tags.update_to_v23()  # mutagen reads every tag as v2.4; a v2.3 tag is written back as v2.3
        tags.save(path, v2_version=4 if version[1] >= 4 else 3)
        return
    if audio.tags is None:
        audio.add_tags()
    key = MP4_GENRE if kind == "mp4" else "genre"
    if values is None:
        if key in audio.tags:
            del audio.tags[key]
    else:
        audio.tags[key] = list(values)
    if remove_tag and len(audio.tags.keys()) == 0:
        audio.delete()
        return
    audio.save()


def _snapshot(st: os.stat_result) -> tuple[int, int, int]:
    return st.st_size, st.st_mtime_ns, st.st_ino


def _write_safely(path: str, values: list[str] | None, details: dict[str, Any], snapshot: tuple[int, int, int],
                  expect: list[str] | None, remove_tag: bool = False) -> str | None:
    """Tag a copy of ``path`` beside it, read it back, and rename it over ``path`` if ``path`` is still as
    ``snapshot`` says. None when written, else why not (the file is then untouched)."""
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, f".{name}.genreflow-tag-{os.getpid()}{os.path.splitext(name)[1]}")  # its format
    try:
        st = os.stat(path)
        if _snapshot(st) != snapshot:
            return "changed while tagging: left as it is"
        shutil.copy2(path, tmp)
        _set_genre(tmp, values, details, remove_tag)
        if read_genre(tmp)[0] != expect:
            return "the tag did not read back as written: left as it is"
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        if _snapshot(os.stat(path)) != snapshot:
            return "changed while tagging: left as it is"
        if hasattr(os, "chown"):
            with contextlib.suppress(OSError):  # not root: the copy is ours, as a file we write always is
                os.chown(tmp, st.st_uid, st.st_gid)
        os.replace(tmp, path)
        _sync_folder(folder)
        return None
    except _Unparseable as exc:
        return f"mutagen cannot parse it: {exc}"
    except OSError as exc:
        return f"cannot write: {(exc.strerror or type(exc).__name__).lower()}"
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


def _sync_folder(folder: str) -> None:
    try:
        handle = os.open(folder or ".", os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def _not_writable(path: str, st: os.stat_result) -> str | None:
    """Why a file is not to be written, or None: read-only (its mode, even for root), its folder, its links."""
    if not st.st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
        return "read-only file"
    folder = os.path.dirname(path) or "."
    if not os.access(folder, os.W_OK | os.X_OK):
        return "read-only folder: a tagged copy cannot be made beside it"
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return "read-only file system"
    except (OSError, AttributeError):
        pass
    if st.st_nlink > 1:
        return f"has {st.st_nlink} hard links: a tagged copy would split them"
    return None


# --------------------------------------------------------------------------- plan, apply, undo


def plan_tags(rows: Iterable[tuple[str, str, str | None, float, str]], min_confidence: float | None = None,
              overwrite: bool = False) -> list[TagPlan]:
    """What each file would get, written nowhere.

    ``rows``: (the file's path, the path as shown, decided genre or None, its
    probability, the prediction's error or ""). ``unknown`` (the open-set
    decision, model/open_set.py), or a genre under ``min_confidence`` where
    given (``--min-confidence``: the rows then carry the top genre), writes nothing.
    """
    plans = []
    for path, shown, genre, probability, error in rows:
        real = os.path.realpath(path)

        def skip(reason: str, shown: str = shown, real: str = real, probability: float = probability) -> TagPlan:
            return TagPlan(real, shown, "skip", reason, probability=probability)

        if error:
            plans.append(skip(f"not predicted: {error}"))
            continue
        if tag_kind(real) is None:
            plans.append(skip(f"no genre tag for {os.path.splitext(real)[1] or 'files without an extension'}"))
            continue
        if genre is None or genre == UNKNOWN:
            plans.append(skip("the model's decision is unknown: nothing to write"))
            continue
        if min_confidence is not None and not probability >= min_confidence:
            plans.append(skip(f"confidence {probability:.2f} is under --min-confidence {min_confidence:.2f}"))
            continue
        try:
            st = os.stat(real)
        except OSError as exc:
            plans.append(skip(f"cannot open: {(exc.strerror or type(exc).__name__).lower()}"))
            continue
        why = _not_writable(real, st)
        if why:
            plans.append(skip(why))
            continue
        try:
            old, details = read_genre(real)
        except _Unparseable as exc:
            plans.append(skip(f"mutagen cannot parse it: {exc}"))
            continue
        if details.get("id3_version") and details["id3_version"][1] < 3:
            plans.append(skip("ID3v2.2 tag: mutagen would rewrite every frame of it"))
            continue
        if old == [genre]:
            plans.append(TagPlan(real, shown, "keep", f"already {genre}", genre, old, probability))
        elif (old or details.get("mp4_numeric_genre")) and not overwrite:
            has = "; ".join(old) if old else "a numeric genre (gnre)"
            plans.append(TagPlan(real, shown, "keep", f"has a genre ({has}): --overwrite replaces it", genre, old,
                                 probability))
        else:
            plans.append(TagPlan(real, shown, "write", f"{'; '.join(old) if old else '(none)'} -> {genre} "
                                 f"({probability:.2f})", genre, old, probability, _snapshot(st)))
    return plans


def _journal_line(handle: Any, record: dict[str, Any]) -> None:
    handle.write(json.dumps(record, ensure_ascii=True) + "\n")  # ensure_ascii keeps a non-UTF-8 name's bytes
    handle.flush()
    os.fsync(handle.fileno())


def new_journal(folder: str | os.PathLike[str]) -> Path:
    """A fresh journal's path in ``folder`` (the work folder), named by the time."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return Path(folder) / f"{JOURNAL_PREFIX}{stamp}.jsonl"


def apply_tags(plans: Iterable[TagPlan], journal: str | os.PathLike[str]) -> TagReport:
    """Write the planned genres, each journalled first in ``journal`` (created; JSON lines)."""
    path = Path(journal)
    path.parent.mkdir(parents=True, exist_ok=True)
    report = TagReport(str(path))
    with open(path, "x", encoding="ascii") as handle:
        for plan in plans:
            if plan.action != "write" or plan.snapshot is None:
                continue
            try:
                old, details = read_genre(plan.path)
            except _Unparseable as exc:
                report.outcomes.append(TagOutcome(plan.path, False, f"mutagen cannot parse it: {exc}"))
                continue
            if old != plan.old:
                report.outcomes.append(TagOutcome(plan.path, False, "its genre changed since it was planned"))
                continue
            _journal_line(handle, {"path": plan.path, "shown": plan.shown, "old": old, "new": [plan.new], **details,
                                   "at": dt.datetime.now(dt.UTC).isoformat()})
            why = _write_safely(plan.path, [str(plan.new)], details, plan.snapshot, [str(plan.new)])
            report.outcomes.append(TagOutcome(plan.path, why is None, why or f"{plan.new}", plan.shown))
    return report


def read_journal(journal: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The writes a journal records, in order; a torn last line (a kill while journalling) is left out."""
    try:
        lines = Path(journal).read_text(encoding="ascii").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise TagError(f"cannot read the journal {journal}: {exc}") from None
    records = []
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except ValueError:
            if number == len(lines):
                break
            raise TagError(f"{journal}:{number}: not a journal line") from None
        if not isinstance(record, dict) or "path" not in record or "new" not in record:
            raise TagError(f"{journal}:{number}: not a journal line")
        records.append(record)
    return records


def undo_journal(journal: str | os.PathLike[str]) -> TagReport:
    """Restore each journalled file's old genre, last write first, where its genre is still the one written.

    The undo's own writes are journalled beside (``<journal>.undo.jsonl``), so an
    undo too can be looked at, or undone.
    """
    records = read_journal(journal)
    undo_path = Path(f"{journal}.undo.jsonl")
    report = TagReport(str(undo_path))
    with open(undo_path, "a", encoding="ascii") as handle:
        for record in reversed(records):
            path = record["path"]
            details = {k: record[k] for k in ("kind", "had_tag", "id3_version", "id3_encoding") if k in record}
            try:
                current, now = read_genre(path)
                st = os.stat(path)
            except (_Unparseable, OSError) as exc:
                report.outcomes.append(TagOutcome(path, False, f"cannot read it: {exc}"))
                continue
            if current == record["old"]:
                report.outcomes.append(TagOutcome(path, False, "already as before"))
                continue
            if current != record["new"]:
                shown = "; ".join(current) if current else "no genre"
                report.outcomes.append(TagOutcome(path, False, f"changed since it was tagged (now {shown}): "
                                                               "left as it is"))
                continue
            _journal_line(handle, {"path": path, "old": current, "new": record["old"], "kind": now["kind"],
                                   "undo_of": str(journal), "at": dt.datetime.now(dt.UTC).isoformat()})
            why = _write_safely(path, record["old"], details, _snapshot(st), record["old"],
                                remove_tag=not record.get("had_tag", True))
            report.outcomes.append(TagOutcome(path, why is None, why or "restored", record.get("shown", path)))
    return report


def plan_lines(plans: list[TagPlan], verbose_keep: bool = True) -> list[str]:
    """One line a file: what a dry run would do, or what was left alone and why."""
    verbs = {"write": "would write", "keep": "keep", "skip": "skip"}
    return [f"{verbs[p.action]}: {display_path(p.shown)}: {p.reason}" for p in plans
            if verbose_keep or p.action != "keep"]


def plan_counts(plans: list[TagPlan]) -> dict[str, int]:
    counts = {"write": 0, "keep": 0, "skip": 0}
    for plan in plans:
        counts[plan.action] += 1
    return counts


def as_dict(plan: TagPlan) -> dict[str, Any]:
    return asdict(plan)
