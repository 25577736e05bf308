"""Atomic writes: a reader sees the old output or the new one, never a part; data is on disk first."""

from __future__ import annotations

import os

import pytest

from negopt.core import io


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


def test_a_killed_writers_temp_files_are_removed_by_the_next_write(tmp_path):
    # what SIGKILLed writers leave: mkstemp/mkdtemp siblings (8 random characters), never the final name
    (tmp_path / ".a.json.k3x9_q0z.json").write_text("{half")
    (tmp_path / ".out.ab12cd34").mkdir()
    (tmp_path / ".out.ab12cd34" / "w.bin").write_bytes(b"x")
    keep = [".a.json.x.json", ".a.jsonl.k3x9_q0z.jsonl", ".out.old", ".out.x.ab12cd34", "a.json.k3x9_q0z.json"]
    for name in keep:  # not temp files of a.json or of out/: other outputs' names or too short a random part
        (tmp_path / name).write_text("other")
    io.write_json(tmp_path / "a.json", {"v": 1})
    with io.atomic_dir(tmp_path / "out") as tmp:
        (tmp / "w.bin").write_bytes(b"whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep + ["a.json", "out"])


def test_recover_dir_puts_back_a_folder_moved_aside_by_a_killed_swap(tmp_path, monkeypatch):
    out = tmp_path / "ckpt"
    with io.atomic_dir(out) as tmp:
        (tmp / "w").write_text("old")
    real_replace = os.replace

    def killed_after_first_rename(src, dst):  # the process dies between atomic_dir's two renames
        real_replace(src, dst)
        raise KeyboardInterrupt

    monkeypatch.setattr(io.os, "replace", killed_after_first_rename)
    with pytest.raises(KeyboardInterrupt), io.atomic_dir(out) as tmp:
        (tmp / "w").write_text("new")
    monkeypatch.setattr(io.os, "replace", real_replace)
    assert not out.exists() and (tmp_path / ".ckpt.old" / "w").read_text() == "old"
    io.recover_dir(out)
    assert (out / "w").read_text() == "old" and not (tmp_path / ".ckpt.old").exists()
    io.recover_dir(out)  # nothing aside: a no-op
    assert (out / "w").read_text() == "old"
