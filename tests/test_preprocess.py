"""The preprocess stage on real images in normal, odd and hostile forms."""

from __future__ import annotations

import io

import numpy as np
import pytest
from images import digit, encode, exif_rotated_jpeg, photo, png_bomb
from labelwright.core.datasets import ingest
from labelwright.core.images import is_grey, join_pixels, load_pixels, save_pixels, stack_pixels
from labelwright.core.messages import Shard
from labelwright.core.pipeline import StageError, build_task
from labelwright.core.settings import Settings
from labelwright.core.storage import FileStore
from labelwright.preprocess.decode import Rejected, decode
from labelwright.preprocess.dedup import (
    candidate_pairs,
    cluster,
    grey_frames,
    native_canvas,
    native_grey,
    phashes,
    thumbnails,
)
from labelwright.preprocess.png import encode_png
from labelwright.preprocess.stage import run
from PIL import Image

SETTINGS = Settings(image_size=16)


def test_exif_orientation_is_applied():
    decoded = decode(exif_rotated_jpeg(), 16, SETTINGS.max_image_pixels)
    assert (decoded.width, decoded.height) == (67, 96), "portrait after applying orientation 6"


@pytest.mark.parametrize("make, mode", [
    (lambda: encode(photo().convert("P"), "PNG"), "RGB"),
    (lambda: encode(photo().convert("RGBA"), "PNG"), "RGB"),
    (lambda: encode(digit().convert("I;16"), "PNG"), "L"),
    (lambda: encode(digit().convert("1"), "PNG"), "L"),
    (lambda: encode(photo().convert("CMYK"), "JPEG"), "RGB"),
    (lambda: encode(photo(), "WEBP"), "RGB"),
    (lambda: encode(photo(), "BMP"), "RGB"),
    (lambda: encode(photo(), "GIF"), "RGB"),
    (lambda: encode(photo(), "TIFF"), "RGB"),
])
def test_odd_formats_are_normalised(make, mode):
    decoded = decode(make(), 16, SETTINGS.max_image_pixels)
    assert decoded.image.size == (16, 16)
    assert decoded.image.mode == mode


def test_sixteen_bit_keeps_its_contrast():
    image = Image.fromarray((np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16))
    decoded = decode(encode(image, "PNG"), 16, SETTINGS.max_image_pixels)
    pixels = np.asarray(decoded.image)
    assert pixels.min() < 10 and pixels.max() > 240


@pytest.mark.parametrize("data, reason", [
    (b"", "empty file"),
    (b"hello, I am a text file pretending to be a JPEG\n", "not an image"),
    (b"<!DOCTYPE html><html><body>hi</body></html>", "not an image"),
    (b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"></svg>', "unsupported format: SVG"),
    (b"\x7fELF\x02\x01\x01" + bytes(100), "not an image"),
])
def test_non_images_are_rejected_with_a_reason(data, reason):
    with pytest.raises(Rejected, match=reason):
        decode(data, 16, SETTINGS.max_image_pixels)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_files_are_rejected(fmt):
    data = encode(photo(), fmt)
    with pytest.raises(Rejected, match="truncated|corrupt"):
        decode(data[: len(data) // 2], 16, SETTINGS.max_image_pixels)


def test_decompression_bomb_is_rejected_before_decoding():
    with pytest.raises(Rejected, match="decompression bomb"):
        decode(png_bomb(), 16, SETTINGS.max_image_pixels)


def _regions() -> list[np.ndarray]:
    """Distinct 40x40 grey pictures: non-overlapping regions of two real photos."""
    from sklearn.datasets import load_sample_image

    out = []
    for name in ("china.jpg", "flower.jpg"):
        grey = np.asarray(Image.fromarray(load_sample_image(name)).convert("L"))
        out += [grey[y:y + 160:4, x:x + 160:4] for y in (20, 220) for x in (40, 240, 440)]
    return out


def _frame(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("L").resize((32, 32), Image.Resampling.BILINEAR))


def test_phashes_are_the_ones_imagehash_computes():
    import imagehash

    frames = [_frame(Image.fromarray(r)) for r in _regions()] + [_frame(photo())]
    expected = [str(imagehash.phash(Image.fromarray(f))) for f in frames]
    assert phashes(grey_frames(frames)) == expected


def test_pictures_whose_profiles_share_nothing_are_not_duplicates():
    # every candidate pair fails the profile check, so no detail is compared at all
    ramp = np.tile(np.linspace(0, 255, 32), (32, 1)).astype(np.uint8)
    frames = grey_frames([ramp, ramp.T])
    assert cluster(["a", "b"], frames) == [(0, ""), (1, "")]


def test_near_duplicates_survive_reencoding_crops_and_brightness_but_distinct_pictures_stay_apart():
    regions = _regions()
    shapes = [digit(i).resize((32, 32), Image.Resampling.BICUBIC) for i in (0, 1, 2)]
    originals = [Image.fromarray(r) for r in regions] + shapes
    copies = [
        Image.open(io.BytesIO(encode(originals[0], "JPEG", quality=50))),
        Image.fromarray(np.clip(regions[1].astype(int) + 30, 0, 255).astype(np.uint8)),
        originals[2].resize((30, 30)),
        shapes[0].crop((2, 1, 31, 30)),  # an object on a plain background, slightly cropped
    ]
    images = originals + copies
    frames = grey_frames([_frame(image) for image in images])
    hashes = [str(i) for i in range(len(images))] + ["0"]  # and one exact copy of the first
    groups = cluster(hashes, np.concatenate([frames, frames[:1]]))
    n = len(originals)
    for k, original in enumerate((0, 1, 2, len(regions))):
        assert groups[n + k] == (original, "near"), f"copy {k} joins its original"
    assert groups[-1] == (0, "exact") and groups[0] == (0, "exact")
    alone = set(range(n)) - {0, 1, 2, len(regions)}
    assert all(groups[i] == (i, "") for i in alone), "distinct pictures are not duplicates"


def test_small_crops_are_found_pixel_for_pixel_among_look_alikes():
    # 300 handwritten digits (many look alike) and 30 copies cropped by 0-3 pixels per side,
    # saved at their cropped size: compared at their own size the crops are found, where the
    # resized frames alone miss many of them; no two distinct digits are joined either way
    rng = np.random.default_rng(0)
    originals = [digit(i).resize((28, 28), Image.Resampling.BICUBIC) for i in range(300)]
    crops = [originals[i].crop((left, top, 28 - right, 28 - bottom))
             for i, (left, top, right, bottom) in enumerate(rng.integers(0, 4, (30, 4)))]
    images = originals + crops
    frames = grey_frames([_frame(image) for image in images])
    hashes = [str(i) for i in range(len(images))]
    found = {}
    for name, natives in (("frames", None), ("own size", native_canvas([native_grey(i) for i in images]))):
        groups = cluster(hashes, frames, natives=natives)
        found[name] = sum(groups[300 + i][0] == groups[i][0] for i in range(30))
        assert not any(groups[i][1] for i in range(30, 300)), "distinct digits stay apart"
    assert found["own size"] >= 28 > found["frames"] + 5
    assert native_grey(photo()) is None, "large pictures are compared in the resized frames only"


def test_candidates_come_from_an_index_not_from_all_pairs():
    frames = grey_frames([np.random.default_rng(i).integers(0, 256, (32, 32), dtype=np.uint8) for i in range(400)])
    pairs = candidate_pairs(thumbnails(frames), neighbours=5)
    assert 0 < len(pairs) <= 400 * 5 * 2 < 400 * 399 // 2
    assert (pairs[:, 0] < pairs[:, 1]).all()


def _dataset(tmp_path):
    root = tmp_path / "input"
    (root / "cat").mkdir(parents=True)
    (root / "dog").mkdir()
    for i in range(4):
        digit(i).save(root / "cat" / f"c{i}.png")
        digit(10 + i).save(root / "dog" / f"d{i}.png")
    digit(0).save(root / "cat" / "copy of c0.png")
    digit(0).save(root / "dog" / "c0.png")  # the same picture labelled differently, same file name as in cat/
    photo().save(root / "photo ünïcode.jpg")
    (root / "bad.jpg").write_bytes(b"not really a jpeg")
    (root / "empty.png").write_bytes(b"")
    return root


def test_stage_writes_the_contract_and_flags_conflicting_seeds(tmp_path):
    store = FileStore(tmp_path / "out")
    index = ingest(_dataset(tmp_path), store, "dataset/")
    result = run(build_task("j", "preprocess", "", {}, {"image_size": 16}, dataset=index.ref), store, SETTINGS)
    rejected = {r["file_name"]: r["reason"] for r in store.get_csv("preprocess/rejected.csv")}
    assert rejected == {"bad.jpg": "not an image: text", "empty.png": "empty file"}
    manifest = {r["file_name"]: r for r in store.get_csv("preprocess/manifest.csv")}
    assert len(manifest) == 11 and manifest["photo ünïcode.jpg"]["label"] == ""
    assert manifest["dog/c0.png"]["label"] == "dog" and manifest["cat/c0.png"]["label"] == "cat"
    duplicates = store.get_csv("preprocess/duplicates.csv")
    exact = {d["file_name"] for d in duplicates if d["kind"] == "exact"}
    assert {"cat/c0.png", "cat/copy of c0.png", "dog/c0.png"} <= exact
    summary = store.get_json("preprocess/summary.json")
    assert summary["seed_label_conflicts"][0]["labels"] == ["cat", "dog"]
    assert result.counts["rejected"] == 2 and store.exists("preprocess/images/photo ünïcode.jpg.png")


def test_shards_merge_to_the_same_result_as_one_task(tmp_path):
    dataset = _dataset(tmp_path)
    whole, sharded = FileStore(tmp_path / "whole"), FileStore(tmp_path / "sharded")
    params = {"image_size": 16}
    index = ingest(dataset, whole, "dataset/")
    run(build_task("j", "preprocess", "", {}, params, dataset=index.ref), whole, SETTINGS)
    index = ingest(dataset, sharded, "dataset/")
    parts = {i: run(build_task("j", "preprocess", "", {}, params, dataset=index.ref, shard=Shard(index=i, count=3)),
                    sharded, SETTINGS).outputs for i in range(3)}
    run(build_task("j", "preprocess", "", {}, params, dataset=index.ref, merge_shards=parts), sharded, SETTINGS)
    for name in ("manifest.csv", "rejected.csv", "duplicates.csv"):
        assert whole.get_csv(f"preprocess/{name}") == sharded.get_csv(f"preprocess/{name}")
    whole_names, whole_pixels = load_pixels(whole, whole.ref("preprocess/pixels.npz"))
    sharded_names, sharded_pixels = load_pixels(sharded, sharded.ref("preprocess/pixels.npz"))
    assert whole_names == sharded_names and np.array_equal(whole_pixels, sharded_pixels)


def test_a_dataset_with_no_usable_image_fails_readably(tmp_path):
    root = tmp_path / "junk"
    root.mkdir()
    (root / "a.jpg").write_text("nope")
    store = FileStore(tmp_path / "out")
    index = ingest(root, store, "dataset/")
    with pytest.raises(StageError, match="no usable image"):
        run(build_task("j", "preprocess", "", {}, {}, dataset=index.ref), store, SETTINGS)


@pytest.mark.parametrize("shape", [(5, 7), (5, 7, 1), (9, 4, 3)])
def test_png_encoder_writes_what_pillow_reads_back(shape):
    pixels = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    with Image.open(io.BytesIO(encode_png(pixels))) as image:
        assert image.format == "PNG" and image.mode == ("RGB" if len(shape) == 3 and shape[2] == 3 else "L")
        assert np.array_equal(np.asarray(image), pixels.reshape(shape[:2]) if image.mode == "L" else pixels)


def test_normalised_images_match_the_pixels_the_learning_stages_get(tmp_path):
    store = FileStore(tmp_path / "out")
    index = ingest(_dataset(tmp_path), store, "dataset/")
    run(build_task("j", "preprocess", "", {}, {"image_size": 16}, dataset=index.ref), store, SETTINGS)
    names, pixels = load_pixels(store, store.ref("preprocess/pixels.npz"))
    manifest = {r["file_name"]: r for r in store.get_csv("preprocess/manifest.csv")}
    assert sorted(names) == sorted(manifest)
    for name, expected in zip(names, pixels, strict=True):
        with Image.open(io.BytesIO(store.read_ref(store.ref(manifest[name]["image"])))) as image:
            assert image.size == (16, 16)
            assert np.array_equal(np.asarray(image.convert("RGB")), expected), name


def test_pixels_are_stored_with_one_channel_only_when_every_image_is_grey(tmp_path):
    store = FileStore(tmp_path)
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
    colour = np.stack([grey, grey + 1, grey + 2], axis=2)
    save_pixels(store, "grey.npz", ["a", "b"], [grey, grey[:, :, None]])
    save_pixels(store, "mixed.npz", ["a", "b"], [grey, colour])
    assert np.load(tmp_path / "grey.npz")["pixels"].shape == (2, 3, 4, 1)
    names, pixels = load_pixels(store, store.ref("grey.npz"))
    assert names == ["a", "b"] and pixels.shape == (2, 3, 4, 3) and is_grey(pixels)
    assert np.array_equal(pixels[1, :, :, 2], grey)
    _, pixels = load_pixels(store, store.ref("mixed.npz"))
    assert not is_grey(pixels) and np.array_equal(pixels[0, :, :, 1], grey) and np.array_equal(pixels[1], colour)
    # shards' arrays join the same way; a shard with no usable image adds nothing
    joined = join_pixels([stack_pixels([grey]), stack_pixels([]), stack_pixels([colour])])
    assert joined.shape == (2, 3, 4, 3)
    assert np.array_equal(joined[0, :, :, 2], grey) and np.array_equal(joined[1], colour)
    assert join_pixels([stack_pixels([grey]), stack_pixels([])]).shape == (1, 3, 4, 1)
