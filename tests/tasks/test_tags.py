"""tasks/tags.py on files made here: mp3, flac, ogg and m4a tagged, dry-run, undone; only the tag ever changes.

The audio payload is hashed before a write, after it and after its undo: the
MPEG frames of an mp3 (the bytes between its ID3v2 and ID3v1 tags), the
decoded PCM of flac and ogg (soundfile), and the ``mdat`` box of an m4a with
its decoded PCM (ffmpeg). The m4a is made by ffmpeg (Debian's package, which
.ci/run installs); without it locally the m4a cases skip, under CI=true they fail.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from genreflow.tasks.tags import (
    _Unparseable,
    apply_tags,
    new_journal,
    plan_tags,
    read_genre,
    read_journal,
    undo_journal,
)

FFMPEG = shutil.which("ffmpeg")
SR = 22050
FORMATS = ["mp3", "flac", "ogg", "m4a"]


def _tone(seconds: float = 1.5, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def make_audio(path: Path) -> Path:
    """An untagged file of ``path``'s format, made here."""
    kind = path.suffix[1:]
    if kind == "m4a":
        if FFMPEG is None:
            if os.environ.get("CI"):
                pytest.fail("ffmpeg is missing: .ci/run installs Debian's ffmpeg for the m4a tag tests")
            pytest.skip("ffmpeg not installed: the m4a tag tests need it to make an m4a")
        subprocess.run([FFMPEG, "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i",
                        "sine=frequency=440:duration=1.5", "-c:a", "aac", "-b:a", "64k", "-map_metadata", "-1",
                        str(path)], check=True)
        return path
    formats = {"mp3": ("MP3", "MPEG_LAYER_III"), "flac": ("FLAC", "PCM_16"), "ogg": ("OGG", "VORBIS")}
    fmt, subtype = formats[kind]
    sf.write(path, _tone(), SR, format=fmt, subtype=subtype)
    return path


def _boxes(data: bytes) -> dict[str, bytes]:
    """The top-level boxes of an MP4 file: type -> payload."""
    out, at = {}, 0
    while at + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[at : at + 8])
        header = 8
        if size == 1:
            size, header = struct.unpack(">Q", data[at + 8 : at + 16])[0], 16
        elif size == 0:
            size = len(data) - at
        out[kind.decode("latin-1")] = data[at + header : at + size]
        at += size
    return out


def payload_hash(path: Path) -> str:
    """A hash of what a player plays: never of a tag."""
    data = path.read_bytes()
    kind = path.suffix[1:]
    if kind == "mp3":
        start = 0
        if data[:3] == b"ID3":
            size = 0
            for byte in data[6:10]:  # syncsafe: 7 bits a byte
                size = (size << 7) | (byte & 0x7F)
            start = 10 + size + (10 if data[5] & 0x10 else 0)
        end = len(data) - 128 if data[-128:-125] == b"TAG" else len(data)
        frames = data[start:end]
        assert frames[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xf2", b"\xff\xe3") or frames[:1] == b"\xff"
        return hashlib.sha256(frames).hexdigest()
    if kind == "m4a":
        pcm = subprocess.run([FFMPEG or "ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(path), "-f", "s16le",
                              "-"], check=True, capture_output=True).stdout
        return hashlib.sha256(_boxes(data)["mdat"] + pcm).hexdigest()
    samples, rate = sf.read(path, dtype="int16" if kind == "flac" else "float32")
    return hashlib.sha256(samples.tobytes() + str(rate).encode()).hexdigest()


def tag_dump(path: Path) -> object:
    """Every tag field as mutagen reads it, for comparing before and after an undo."""
    import mutagen

    audio = mutagen.File(path)
    if audio is None or audio.tags is None:
        return None
    tags = audio.tags
    if hasattr(tags, "getall"):  # ID3: frame id -> (encoding, text) of each frame
        return sorted((key, repr(frame)) for key, frame in tags.items())
    return sorted((key, repr(value)) for key, value in tags.items())


def set_tags(path: Path, genre: list[str], title: str = "A song") -> None:
    """A tagged file as another program left it: a title and a genre."""
    import mutagen
    from mutagen.id3 import TCON, TIT2
    from mutagen.mp4 import MP4

    kind = path.suffix[1:]
    if kind == "mp3":
        audio = mutagen.File(path)
        audio.add_tags()
        audio.tags.add(TIT2(encoding=1, text=[title]))  # UTF-16, in an ID3v2.3 tag: both must survive
        audio.tags.add(TCON(encoding=1, text=genre))
        audio.tags.update_to_v23()
        audio.tags.save(path, v2_version=3)
        return
    if kind == "m4a":
        audio = MP4(path)
        if audio.tags is None:
            audio.add_tags()
        audio.tags["\xa9nam"], audio.tags["\xa9gen"] = [title], genre
        audio.save()
        return
    audio = mutagen.File(path)
    if audio.tags is None:
        audio.add_tags()
    audio.tags["title"], audio.tags["genre"] = [title], genre
    audio.save()


def row(path: Path, genre: str | None = "Rock", probability: float = 0.9, error: str = "") -> tuple:
    return (str(path), str(path), genre, probability, error)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("before", [None, ["Jazz", "Blues"]], ids=["untagged", "tagged"])
def test_write_dry_run_and_undo_change_only_the_genre(fmt: str, before: list[str] | None, tmp_path: Path) -> None:
    song = make_audio(tmp_path / f"song.{fmt}")
    if before is not None:
        set_tags(song, before)
    original_bytes, original_tags, payload = song.read_bytes(), tag_dump(song), payload_hash(song)
    if fmt == "mp3" and before is not None:
        before = ["/".join(before)]  # an ID3v2.3 tag holds one text, its values joined by "/"
    assert read_genre(str(song))[0] == before

    # the dry run: a plan and nothing written
    plans = plan_tags([row(song)], overwrite=False)
    assert [p.action for p in plans] == (["write"] if before is None else ["keep"])
    assert song.read_bytes() == original_bytes
    if before is not None:
        assert plans[0].reason == f"has a genre ({'; '.join(before)}): --overwrite replaces it"
        plans = plan_tags([row(song)], overwrite=True)
        assert plans[0].action == "write" and plans[0].reason == f"{'; '.join(before)} -> Rock (0.90)"

    journal = new_journal(tmp_path / "work")
    report = apply_tags(plans, journal)
    assert report.written == 1 and read_genre(str(song))[0] == ["Rock"]
    assert payload_hash(song) == payload, "a tag write changed the audio"
    assert [(r["path"], r["old"], r["new"]) for r in read_journal(journal)] == [(str(song), before, ["Rock"])]

    undone = undo_journal(journal)
    assert undone.written == 1 and read_genre(str(song))[0] == before
    assert tag_dump(song) == original_tags, "the undo did not restore the tags exactly"
    assert payload_hash(song) == payload, "an undo changed the audio"
    if fmt == "mp3" and before is None:
        assert song.read_bytes() == original_bytes  # the tag genreflow added is gone, the file as it was
    assert undo_journal(journal).outcomes[0].reason == "already as before"  # a second undo changes nothing


def test_what_is_not_written_and_why(tmp_path: Path) -> None:
    files = {name: make_audio(tmp_path / f"{name}.mp3") for name in ("low", "unknown", "failed", "ro", "linked")}
    files["wav"] = tmp_path / "song.wav"
    sf.write(files["wav"], _tone(), SR)
    files["garbage"] = tmp_path / "garbage.mp3"
    files["garbage"].write_bytes(b"\x00" * 64)
    os.chmod(files["ro"], 0o444)  # read-only even for root: its mode says so
    os.link(files["linked"], tmp_path / "other-name.mp3")
    rows = [row(files["low"], probability=0.3), row(files["unknown"], genre="unknown"),
            row(files["failed"], genre=None, error="not decodable audio"), row(files["ro"]), row(files["linked"]),
            row(files["wav"]), row(files["garbage"]), row(tmp_path / "gone.mp3")]
    before = {name: path.read_bytes() for name, path in files.items()}
    plans = plan_tags(rows, min_confidence=0.5)
    reasons = {Path(p.path).name: p.reason for p in plans}
    assert all(p.action == "skip" for p in plans)
    assert reasons == {
        "low.mp3": "confidence 0.30 is under --min-confidence 0.50",
        "unknown.mp3": "the model's decision is unknown: nothing to write",
        "failed.mp3": "not predicted: not decodable audio",
        "ro.mp3": "read-only file",
        "linked.mp3": "has 2 hard links: a tagged copy would split them",
        "song.wav": "no genre tag for .wav",
        "garbage.mp3": reasons["garbage.mp3"],
        "gone.mp3": "cannot open: no such file or directory",
    }
    assert reasons["garbage.mp3"].startswith("mutagen cannot parse it: ")
    report = apply_tags(plans, new_journal(tmp_path / "work"))
    assert report.outcomes == [] and read_journal(report.journal) == []
    assert {name: path.read_bytes() for name, path in files.items()} == before


def test_a_file_that_changes_while_tagging_is_left_as_it_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import genreflow.tasks.tags as tags

    early, late = make_audio(tmp_path / "early.flac"), make_audio(tmp_path / "late.flac")
    plans = plan_tags([row(early), row(late)])
    with open(early, "ab") as handle:  # changed between the plan and the write
        handle.write(b"\x00")
    real = tags._set_genre

    def meanwhile(path: str, *args: object, **kwargs: object) -> None:
        real(path, *args, **kwargs)  # type: ignore[arg-type]
        if ".late.flac." in path:  # the tagged copy is made; then another program writes the original
            os.utime(late, ns=(1, 1))

    monkeypatch.setattr(tags, "_set_genre", meanwhile)
    late_before = late.read_bytes()
    report = apply_tags(plans, new_journal(tmp_path / "work"))
    assert [(Path(o.path).name, o.done, o.reason) for o in report.outcomes] == [
        ("early.flac", False, "changed while tagging: left as it is"),
        ("late.flac", False, "changed while tagging: left as it is")]
    assert late.read_bytes() == late_before and read_genre(str(late))[0] is None
    assert not [p for p in tmp_path.iterdir() if "genreflow-tag" in p.name]  # no copy left behind


def test_an_undo_leaves_a_genre_changed_since_and_reads_a_torn_journal(tmp_path: Path) -> None:
    a, b = make_audio(tmp_path / "a.ogg"), make_audio(tmp_path / "b.ogg")
    journal = new_journal(tmp_path / "work")
    apply_tags(plan_tags([row(a), row(b)]), journal)
    set_tags(b, ["Polka"])  # the user retagged it since
    with open(journal, "a") as handle:
        handle.write('{"path": "torn')  # a kill while the journal was written
    report = undo_journal(journal)
    assert [(Path(o.path).name, o.done, o.reason) for o in report.outcomes] == [
        ("b.ogg", False, "changed since it was tagged (now Polka): left as it is"), ("a.ogg", True, "restored")]
    assert read_genre(str(a))[0] is None and read_genre(str(b))[0] == ["Polka"]


def test_read_genre_refuses_what_has_no_genre_tag(tmp_path: Path) -> None:
    with pytest.raises(_Unparseable, match="no genre tag for this format"):
        read_genre(str(tmp_path / "x.wav"))
    locked = make_audio(tmp_path / "x.flac")
    os.chmod(locked, stat.S_IRUSR)
    assert plan_tags([row(locked)])[0].reason == "read-only file"
