"""Turn a user's input (a folder, a ``.zip`` or a ``.tar.gz``) into a dataset index in a store.

Input layout (DESIGN.md): ImageFolder, where each sub-folder is a class whose images are seed
labels and images directly in the root are unlabelled; or any folder plus a ``labels.csv`` of
``file_name,label`` (an empty label means unlabelled). Every regular file is an item: a file that
is not an image is quarantined later by preprocess, with its reason.

The index (``<prefix>index.csv``: ``file_name,label,ref,reason``) is what preprocess reads.
Archive members are streamed into the store under ``<prefix>files/``; nothing is ever written
outside that prefix. Members that cannot be taken (unsafe paths, links, nested archives, too
large) keep a row with an empty ``ref`` and a ``reason``.
"""

from __future__ import annotations

import os
import stat
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO

from .storage import Store, read_csv_bytes

INDEX_FIELDS = ["file_name", "label", "ref", "reason"]
LABELS_CSV = "labels.csv"
NESTED_ARCHIVE_SUFFIXES = (".zip", ".tar", ".tgz", ".gz", ".bz2", ".xz", ".7z", ".rar")


class DatasetError(ValueError):
    """The input cannot be used at all (not found, not an archive, too large, no images)."""


@dataclass(frozen=True)
class Limits:
    """Caps applied before anything is extracted."""

    max_total_bytes: int = 2 * 1024**3
    max_member_bytes: int = 64 * 1024**2
    max_ratio: int = 200
    max_members: int = 1_000_000


@dataclass
class DatasetIndex:
    """The rows of ``index.csv`` and where it was written."""

    rows: list[dict[str, str]] = field(default_factory=list)
    ref: str = ""

    @property
    def usable(self) -> list[dict[str, str]]:
        return [r for r in self.rows if r["ref"]]

    @property
    def labelled(self) -> int:
        return sum(1 for r in self.usable if r["label"])


def _is_hidden(parts: tuple[str, ...]) -> bool:
    return any((p.startswith(".") and p not in (".", "..")) or p == "__MACOSX" for p in parts)


def _unsafe_reason(name: str) -> str | None:
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "unsafe path: absolute"
    if ".." in PurePosixPath(name.replace("\\", "/")).parts:
        return "unsafe path: escapes the archive"
    return None


def _label_from_path(file_name: str) -> str:
    parts = PurePosixPath(file_name).parts
    return parts[0] if len(parts) > 1 else ""


def _strip_common_root(names: list[str]) -> str:
    """An archive of ``dataset/cat/1.png, dataset/dog/2.png`` has the root ``dataset/``."""
    tops = {PurePosixPath(n).parts[0] for n in names if len(PurePosixPath(n).parts) > 1}
    singles = [n for n in names if len(PurePosixPath(n).parts) == 1]
    if len(tops) == 1 and not singles:
        return tops.pop() + "/"
    return ""


class _Member:
    def __init__(self, name: str, size: int, compressed: int, opener, reason: str | None = None):
        self.name, self.size, self.compressed, self.open, self.reason = name, size, compressed, opener, reason


def _zip_members(archive: zipfile.ZipFile) -> Iterator[_Member]:
    for info in archive.infolist():
        if info.is_dir():
            continue
        mode = info.external_attr >> 16
        reason = _unsafe_reason(info.filename)
        if reason is None and stat.S_ISLNK(mode):
            reason = "symlink (not followed)"
        yield _Member(info.filename, info.file_size, info.compress_size, lambda i=info: archive.open(i), reason)


def _tar_members(archive: tarfile.TarFile) -> Iterator[_Member]:
    for info in archive:
        if info.isdir():
            continue
        reason = _unsafe_reason(info.name)
        if reason is None and (info.issym() or info.islnk()):
            reason = "symlink (not followed)"
        elif reason is None and not info.isfile():
            reason = "not a regular file"
        opener = (lambda i=info: archive.extractfile(i)) if reason is None else None
        yield _Member(info.name, info.size, info.size, opener, reason)


def _read_capped(stream: IO[bytes], cap: int) -> bytes:
    data = stream.read(cap + 1)
    if len(data) > cap:
        raise DatasetError("member larger than it declared")
    return data


def _labels_from_csv(data: bytes) -> dict[str, str]:
    rows = read_csv_bytes(data)
    if rows and not {"file_name", "label"} <= set(rows[0]):
        raise DatasetError(f"{LABELS_CSV} needs the columns file_name,label")
    return {PurePosixPath(r["file_name"].replace("\\", "/")).as_posix(): (r["label"] or "").strip() for r in rows}


def _finish(rows: list[dict[str, str]], labels: dict[str, str] | None) -> list[dict[str, str]]:
    for row in rows:
        if not row["ref"]:
            row["label"] = ""
        elif labels is not None:
            row["label"] = labels.get(row["file_name"], "")
        else:
            row["label"] = _label_from_path(row["file_name"])
    rows.sort(key=lambda r: r["file_name"])
    return rows


def index_folder(root: Path, labels_csv: Path | None = None) -> list[dict[str, str]]:
    """Index a local folder in place: references point at the original files."""
    root = root.resolve()
    labels_path = labels_csv or (root / LABELS_CSV if (root / LABELS_CSV).is_file() else None)
    labels = _labels_from_csv(labels_path.read_bytes()) if labels_path else None
    rows = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            path = Path(dirpath) / name
            file_name = path.relative_to(root).as_posix()
            if _is_hidden(PurePosixPath(file_name).parts) or (labels_path and path == labels_path.resolve()):
                continue
            if path.is_symlink():
                rows.append({"file_name": file_name, "ref": "", "reason": "symlink (not followed)"})
            else:
                rows.append({"file_name": file_name, "ref": path.as_uri(), "reason": ""})
    return _finish(rows, labels)


def index_archive(path: Path, store: Store, prefix: str, limits: Limits) -> list[dict[str, str]]:
    """Stream the members of a ``.zip`` or ``.tar(.gz)`` into ``<prefix>files/`` and index them."""
    archive_bytes = path.stat().st_size
    if zipfile.is_zipfile(path):
        handle = zipfile.ZipFile(path)  # noqa: SIM115 - closed by the with-block below
        members = list(_zip_members(handle))
    elif tarfile.is_tarfile(path):
        handle = tarfile.open(path, mode="r:*")  # noqa: SIM115 - closed by the with-block below
        members = list(_tar_members(handle))
    else:
        raise DatasetError(f"{path.name} is neither a folder, a .zip nor a .tar.gz archive")
    with handle:
        if len(members) > limits.max_members:
            raise DatasetError(f"archive holds {len(members)} members; the limit is {limits.max_members}")
        total = sum(m.size for m in members if m.reason is None)
        if total > limits.max_total_bytes:
            raise DatasetError(f"archive expands to {total} bytes; the limit is {limits.max_total_bytes}")
        if archive_bytes and total / archive_bytes > limits.max_ratio:
            raise DatasetError(
                f"archive expands {total / archive_bytes:.0f}x (limit {limits.max_ratio}x): refused as a zip bomb"
            )
        names = [m.name for m in members if m.reason is None]
        root = _strip_common_root(names)
        labels: dict[str, str] | None = None
        rows = []
        for member in members:
            file_name = member.name[len(root):] if root and member.name.startswith(root) else member.name
            file_name = PurePosixPath(file_name.replace("\\", "/")).as_posix()
            if _is_hidden(PurePosixPath(file_name).parts):
                continue
            reason = member.reason
            if reason is None and file_name.lower().endswith(NESTED_ARCHIVE_SUFFIXES):
                reason = "nested archive (not extracted)"
            if reason is None and member.size > limits.max_member_bytes:
                reason = f"file too large ({member.size} bytes; limit {limits.max_member_bytes})"
            if reason is None and member.compressed and member.size / member.compressed > limits.max_ratio:
                reason = f"compression ratio {member.size / member.compressed:.0f}x exceeds {limits.max_ratio}x"
            if reason is not None:
                rows.append({"file_name": file_name, "ref": "", "reason": reason})
                continue
            with member.open() as stream:
                data = _read_capped(stream, max(member.size, 0))
            if file_name == LABELS_CSV:
                labels = _labels_from_csv(data)
                continue
            ref = store.put(f"{prefix}files/{file_name}", data)
            rows.append({"file_name": file_name, "ref": ref, "reason": ""})
    return _finish(rows, labels)


def ingest(source: Path, store: Store, prefix: str, limits: Limits | None = None,
           labels_csv: Path | None = None) -> DatasetIndex:
    """Index a folder or archive and write ``<prefix>index.csv``; returns the index."""
    limits = limits or Limits()
    if not source.exists():
        raise DatasetError(f"input not found: {source}")
    rows = index_folder(source, labels_csv) if source.is_dir() else index_archive(source, store, prefix, limits)
    index = DatasetIndex(rows=rows)
    if not index.usable:
        raise DatasetError(f"{source.name} holds no files to label")
    index.ref = store.put_csv(f"{prefix}index.csv", INDEX_FIELDS, rows)
    return index


def index_prefix(store: Store, source_prefix: str, prefix: str) -> DatasetIndex:
    """Register objects already in the store (``s3://bucket/prefix``) as a dataset, without copying."""
    source_prefix = source_prefix.rstrip("/") + "/" if source_prefix else ""
    keys = [k for k in store.list(source_prefix) if not _is_hidden(PurePosixPath(k).parts)]
    labels = None
    if f"{source_prefix}{LABELS_CSV}" in keys:
        labels = _labels_from_csv(store.get(f"{source_prefix}{LABELS_CSV}"))
        keys.remove(f"{source_prefix}{LABELS_CSV}")
    rows = [{"file_name": k[len(source_prefix):], "ref": store.ref(k), "reason": ""} for k in keys]
    index = DatasetIndex(rows=_finish(rows, labels))
    if not index.usable:
        raise DatasetError(f"{store.ref(source_prefix)} holds no objects")
    index.ref = store.put_csv(f"{prefix}index.csv", INDEX_FIELDS, index.rows)
    return index
