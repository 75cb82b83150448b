"""The shared file helpers: one atomic writer and one file digest for every pipeline."""

import hashlib

import pytest

from pipelines.core.files import atomic_write, file_digest


def test_atomic_write_replaces_whole_or_not_at_all(tmp_path):
    path = tmp_path / "deep" / "record.json"
    with atomic_write(path) as fh:
        fh.write("old")
    assert path.read_text() == "old"
    with pytest.raises(RuntimeError), atomic_write(path) as fh:
        fh.write("half of the new")
        raise RuntimeError("killed mid-write")
    assert path.read_text() == "old" and [p.name for p in path.parent.iterdir()] == ["record.json"]
    with atomic_write(path, "wb") as fh:
        fh.write(b"new")
    assert path.read_bytes() == b"new" and len(list(path.parent.iterdir())) == 1
    with pytest.raises(ValueError, match="mode"):
        atomic_write(path, "a").__enter__()


def test_file_digest_matches_hashlib(tmp_path):
    path = tmp_path / "w.bin"
    path.write_bytes(b"x" * (3 << 20))  # more than one read chunk
    assert file_digest(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    assert file_digest(path, "md5") == hashlib.md5(path.read_bytes()).hexdigest()
