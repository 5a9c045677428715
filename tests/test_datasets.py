"""Input layouts and archive safety: nothing is written outside the dataset's own prefix."""

from __future__ import annotations

import io
import tarfile
import zipfile

import pytest
from images import digit, encode
from labelwright.core.datasets import DatasetError, Limits, ingest
from labelwright.core.storage import FileStore


def _zip(path, members: dict[str, bytes], symlinks: dict[str, str] | None = None):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o120777 << 16)
            archive.writestr(info, target)
    return path


PNG = encode(digit(), "PNG")


def test_image_folder_layout(tmp_path):
    root = tmp_path / "in"
    (root / "cat").mkdir(parents=True)
    (root / "cat" / "a.png").write_bytes(PNG)
    (root / "b.png").write_bytes(PNG)
    (root / ".hidden.png").write_bytes(PNG)
    index = ingest(root, FileStore(tmp_path / "out"), "dataset/")
    assert [(r["file_name"], r["label"]) for r in index.rows] == [("b.png", ""), ("cat/a.png", "cat")]


def test_labels_csv_overrides_folders(tmp_path):
    root = tmp_path / "in"
    (root / "x").mkdir(parents=True)
    (root / "x" / "a.png").write_bytes(PNG)
    (root / "b.png").write_bytes(PNG)
    (root / "labels.csv").write_text("file_name,label\nx/a.png,dog\nb.png,\n")
    index = ingest(root, FileStore(tmp_path / "out"), "dataset/")
    assert {r["file_name"]: r["label"] for r in index.rows} == {"x/a.png": "dog", "b.png": ""}


def test_zip_with_a_root_folder_and_hostile_members(tmp_path):
    archive = _zip(tmp_path / "d.zip", {
        "data/cat/a.png": PNG, "data/b.png": PNG, "data/../../evil.png": PNG, "/abs.png": PNG,
        "data/inner.zip": b"PK\x03\x04", "data/__MACOSX/._a.png": b"x",
    }, symlinks={"data/link.png": "/etc/passwd"})
    store = FileStore(tmp_path / "out")
    index = ingest(archive, store, "datasets/d1/")
    reasons = {r["file_name"]: r["reason"] for r in index.rows if r["reason"]}
    assert reasons["inner.zip"] == "nested archive (not extracted)"
    assert reasons["link.png"] == "symlink (not followed)"
    assert any("escapes" in r for r in reasons.values()) and any("absolute" in r for r in reasons.values())
    assert {(r["file_name"], r["label"]) for r in index.usable} == {("cat/a.png", "cat"), ("b.png", "")}
    written = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()}
    assert all(w == "d.zip" or w.startswith("out/datasets/d1/") for w in written), written


def test_zip_bomb_is_refused_before_extraction(tmp_path):
    archive = _zip(tmp_path / "bomb.zip", {"big.png": bytes(50_000_000)})
    store = FileStore(tmp_path / "out")
    with pytest.raises(DatasetError, match="zip bomb"):
        ingest(archive, store, "datasets/d/", Limits(max_ratio=100))
    assert not list(store.list("datasets/"))


def test_total_size_cap(tmp_path):
    archive = _zip(tmp_path / "big.zip", {f"{i}.png": PNG for i in range(5)})
    with pytest.raises(DatasetError, match="limit"):
        ingest(archive, FileStore(tmp_path / "out"), "d/", Limits(max_total_bytes=len(PNG) * 2))


def test_tar_gz_with_symlink(tmp_path):
    path = tmp_path / "d.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        info = tarfile.TarInfo("dog/a.png")
        info.size = len(PNG)
        archive.addfile(info, io.BytesIO(PNG))
        link = tarfile.TarInfo("dog/l.png")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        archive.addfile(link)
        info = tarfile.TarInfo("u.png")
        info.size = len(PNG)
        archive.addfile(info, io.BytesIO(PNG))
    index = ingest(path, FileStore(tmp_path / "out"), "d/")
    assert {r["file_name"]: r["reason"] for r in index.rows} == {
        "dog/a.png": "", "dog/l.png": "symlink (not followed)", "u.png": ""}


def test_archive_without_files_and_non_archives(tmp_path):
    with pytest.raises(DatasetError, match="no files"):
        ingest(_zip(tmp_path / "e.zip", {"x/../../y.png": PNG}), FileStore(tmp_path / "o"), "d/")
    (tmp_path / "f.txt").write_text("hello")
    with pytest.raises(DatasetError, match="neither"):
        ingest(tmp_path / "f.txt", FileStore(tmp_path / "o"), "d/")
