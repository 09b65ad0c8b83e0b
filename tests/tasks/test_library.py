"""tasks/library.py: a library walked safely (links once, loops named, own names first) and files' identities."""

from __future__ import annotations

import os
from pathlib import Path

from genreflow.storage.files import display_path
from genreflow.tasks.library import file_identity, identities, list_library


def test_links_are_followed_once_and_every_other_path_is_named(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    (lib / "Rock").mkdir(parents=True)
    for name in ("a.mp3", "b.flac"):
        (lib / "Rock" / name).write_bytes(b"x")
    os.symlink("Rock", lib / "Alias")  # sorts first, but the real folder wins
    os.symlink("..", lib / "Rock" / "up")
    os.symlink(lib / "Rock" / "a.mp3", lib / "0-first.mp3")  # a link to a listed file, sorted first
    os.symlink("self.mp3", lib / "self.mp3")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "c.ogg").write_bytes(b"x")
    os.symlink(outside, lib / "NAS")  # a linked folder outside the tree: followed
    os.link(lib / "Rock" / "b.flac", lib / "hard.flac")  # a hard link is a file of its own
    listing = list_library([lib, lib / "Rock" / "a.mp3"])
    assert listing.files == [str(lib / p) for p in ("NAS/c.ogg", "Rock/a.mp3", "Rock/b.flac", "hard.flac",
                                                    "self.mp3")]
    assert dict(listing.duplicates) == {str(lib / "Alias"): f"the same folder as {lib / 'Rock'}",
                                        str(lib / "Rock" / "up"): f"a symlink loop back to {lib}",
                                        str(lib / "0-first.mp3"): f"the same file as {lib / 'Rock' / 'a.mp3'}"}
    assert listing.problems == [] and listing.stats[str(lib / "self.mp3")] is None
    assert file_identity(str(lib / "self.mp3")) == ""


def test_identities_and_names_that_are_not_utf8(tmp_path: Path) -> None:
    song = tmp_path / "song.mp3"
    song.write_bytes(b"abc")
    os.utime(song, ns=(5, 7_000_000_123))
    assert file_identity(str(song)) == "3:7000000123"
    hashed = file_identity(str(song), content_hash=True)
    assert hashed.startswith("3:b2-") and identities([str(song)], content_hash=True) == [hashed]
    os.utime(song, ns=(5, 9))  # mtime only: the same content hash
    assert file_identity(str(song), content_hash=True) == hashed and file_identity(str(song)) == "3:9"
    os.mkfifo(tmp_path / "pipe.mp3")
    assert file_identity(str(tmp_path / "pipe.mp3")) == "special:10000"
    odd = os.fsdecode(os.fsencode(str(tmp_path)) + b"/caf\xe9.mp3")
    assert display_path(odd) == f"{tmp_path}/caf\\xe9.mp3" and display_path(str(song)) == str(song)
