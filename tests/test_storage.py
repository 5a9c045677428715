"""Both object stores keep the same promises, including for batches of small objects."""

from __future__ import annotations

import uuid

import pytest
from labelwright.core.settings import Settings
from labelwright.core.storage import BatchWriter, FileStore, S3Store, StoreError


@pytest.fixture(params=["file", "s3"])
def store(request, tmp_path):
    if request.param == "file":
        return FileStore(tmp_path / "store")
    endpoint = request.getfixturevalue("s3_endpoint")
    settings = Settings(s3_endpoint=endpoint, s3_access_key="testing", s3_secret_key="testing")
    return S3Store(f"lwtest-{uuid.uuid4().hex[:8]}", settings)


def test_put_many_and_read_many_round_trip_in_order_and_report_what_is_missing(store):
    objects = [(f"job/images/{i:03d} ü.png", bytes([i]) * (i + 1), "image/png") for i in range(40)]
    refs = store.put_many(objects)
    assert refs == [store.ref(key) for key, _, _ in objects]
    missing = store.ref("job/images/never written.png")
    got = list(store.read_many([*refs[:20], missing, *refs[20:]]))
    assert isinstance(got[20], StoreError)
    assert [*got[:20], *got[21:]] == [data for _, data, _ in objects]
    assert store.get("job/images/007 ü.png") == bytes([7]) * 8


def test_a_file_store_reads_plain_and_quoted_references_and_refuses_keys_that_escape(tmp_path):
    store = FileStore(tmp_path / "store")
    outside = tmp_path / "raw file #1.png"
    outside.write_bytes(b"raw")
    assert store.read_ref(f"file://{outside}".replace(" ", "%20").replace("#", "%23")) == b"raw"
    assert store.read_ref(store.put("a/plain.bin", b"plain")) == b"plain"
    with pytest.raises(StoreError):
        store.read_ref(f"file://{tmp_path}/store/a")  # a folder is not an object
    with pytest.raises(StoreError, match="escapes"):
        store.put_many([("../outside.bin", b"x", "application/octet-stream")])


class _WriteBehindFileStore(FileStore):
    write_behind = True  # the background path S3 takes, on a folder


@pytest.mark.parametrize("store_class", [FileStore, _WriteBehindFileStore])
def test_a_batch_writer_writes_everything_and_surfaces_a_failed_batch(tmp_path, store_class):
    store = store_class(tmp_path / "store")
    with BatchWriter(store, batch=3) as writer:
        for i in range(10):
            writer.put(f"out/{i}.bin", bytes([i]))
    assert [store.get(f"out/{i}.bin") for i in range(10)] == [bytes([i]) for i in range(10)]
    with pytest.raises(StoreError, match="escapes"), BatchWriter(store, batch=2) as writer:
        for key in ("out/a.bin", "out/b.bin", "../c.bin", "out/d.bin"):
            writer.put(key, b"x")
