"""pai.files: one atomic write (whole file or nothing, permissions from the umask) and set-aside of bad files."""

from __future__ import annotations

import json
import os
import stat

import pytest

import pai.files
from pai.files import atomic_open, set_aside, write_json


@pytest.fixture
def umask():
    """Set the process umask for one test and restore it after."""
    old = os.umask(0o022)
    os.umask(old)

    def set_to(mask: int) -> None:
        os.umask(mask)

    yield set_to
    os.umask(old)


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_written_files_take_their_permissions_from_the_umask(tmp_path, umask, mask, mode):
    umask(mask)
    write_json(tmp_path / "r.json", {"a": 1})
    with atomic_open(tmp_path / "b.pt", "wb") as f:
        f.write(b"x")
    for name in ("r.json", "b.pt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    write_json(path, {"status": "done"})
    with pytest.raises(RuntimeError), atomic_open(path) as f:
        f.write('{"status": "fai')
        raise RuntimeError("killed mid-write")
    assert json.loads(path.read_text()) == {"status": "done"}
    monkeypatch.setattr(pai.files.os, "replace", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        write_json(path, {"status": "failed"})
    assert json.loads(path.read_text()) == {"status": "done"}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_the_write_is_fsynced_before_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(pai.files.os, "fsync", lambda fd: events.append("fsync") or real_fsync(fd))
    monkeypatch.setattr(pai.files.os, "replace", lambda a, b: events.append("replace") or real_replace(a, b))
    write_json(tmp_path / "x.json", [1])
    assert events[:2] == ["fsync", "replace"]


def test_set_aside_renames_never_deletes_and_names_the_file(tmp_path, caplog):
    path = tmp_path / "last.pt"
    for content in (b"first", b"second"):  # twice in the same second: two distinct names
        path.write_bytes(content)
        with caplog.at_level("WARNING", logger="pai.files"):
            moved = set_aside(path, "its content does not match its digest")
        assert moved is not None and moved.parent == tmp_path and moved.name.startswith("last.pt.corrupt-")
        assert not path.exists()
    assert sorted(p.read_bytes() for p in tmp_path.glob("last.pt.corrupt-*")) == [b"first", b"second"]
    assert str(path) in caplog.text and "does not match its digest" in caplog.text
    assert set_aside(path, "gone already") is None  # another process set it aside first
