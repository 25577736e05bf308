"""Atomic writes: a reader sees the old output or the new one, never a part; data is on disk first."""

from __future__ import annotations

import os

import pytest

from negopt import io


def test_atomic_path_keeps_the_old_file_when_the_writer_fails(tmp_path):
    target = tmp_path / "out.json"
    io.write_text(target, "old")
    with pytest.raises(RuntimeError), io.atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]  # no temp file left behind


def test_atomic_path_fsyncs_the_file_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    target = tmp_path / "m.json"
    io.write_json(target, {"a": 1})
    kinds = [kind for kind, _ in events]
    assert kinds == ["fsync", "replace", "fsync"], events
    assert events[0][1].startswith(str(tmp_path / ".m.json."))  # the temp file, with its data
    assert events[2][1] == str(tmp_path)  # the folder, so the rename itself is durable
    assert io.read_json(target) == {"a": 1}


def test_atomic_dir_replaces_a_folder_whole_and_fsyncs_every_file(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real_fsync(fd)))
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "stale.bin").write_text("from an earlier run")
    with io.atomic_dir(folder) as tmp:
        (tmp / "sub").mkdir()
        (tmp / "sub" / "weights.safetensors").write_text("w")
        (tmp / "config.json").write_text("{}")
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")) == [
        "config.json", "sub", "sub/weights.safetensors"]
    assert any(s.endswith("/sub/weights.safetensors") for s in synced)
    assert any(s.endswith("/config.json") for s in synced)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_atomic_dir_keeps_the_old_folder_when_the_writer_fails(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("old")
    with pytest.raises(RuntimeError), io.atomic_dir(folder) as tmp:
        (tmp / "config.json").write_text("new, unfinished")
        raise RuntimeError("killed")
    assert (folder / "config.json").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_append_jsonl_appends_whole_lines(tmp_path):
    path = tmp_path / "ckpt.jsonl"
    io.append_jsonl(path, [{"a": 1}])
    io.append_jsonl(path, [{"b": 2}, {"c": 3}])
    assert path.read_text().splitlines() == ['{"a": 1}', '{"b": 2}', '{"c": 3}']
