"""Duplicate clusters: exact (same decoded pixels) and near (the same picture re-encoded, resized,
slightly cropped or brightness-shifted).

A plain perceptual hash with one Hamming threshold cannot do near duplicates well on small,
look-alike images: a crop of two pixels moves a 28-pixel item's pHash by 8-20 bits while
distinct Fashion-MNIST items often lie within 4 bits of each other. So near pairs are found in two
steps, each linear-ish in the number of images rather than in the number of pairs:

1. **Candidates** from a nearest-neighbour index (scipy KD-tree on a 12-component PCA) over
   perceptual thumbnails (8x8 box-filtered, zero-mean, unit-norm: brightness-invariant) in two
   frames: the whole image (nearest neighbour only) and the content's bounding box (which undoes
   crops of background; five neighbours).
   Small images (at most 48 pixels a side) have a third space: the central 20x20 window at the
   image's own size, in 2x2 blocks, which a crop of a few pixels barely moves.
2. **Verification** of each candidate pair by the correlation of mid-frequency detail
   (difference of Gaussians) after aligning the crop: the crop window is estimated separably from
   row and column intensity profiles, one image is resampled into the other's frame and the
   band-passed images are correlated. Detail is what tells a re-encoded copy from a distinct item
   of the same silhouette. A copy made from fewer pixels (downscaled, or cropped and stretched
   back) is softer than its original, so the detail is also compared with the sharper image of
   the pair softened.
3. **At their own size**, small images are compared once more (``NativeMatcher``): a crop or a
   brightness shift keeps the pixels, so the copy is a window of the original at a whole-pixel
   offset and the detail correlates almost perfectly; resized to one frame, a crop of 3 of 28
   pixels correlated no better than distinct look-alikes. Pairs the resized frames rejected, and
   the central window's candidates, are accepted when this correlation reaches 0.96.

   The thresholds are tuned by ``benchmarks/bench_duplicates.py``. On its benchmark set (1,000
   Fashion-MNIST items with 1-3 copies each among 9,000 others), the pairs in the stage's
   clusters: precision 0.979, recall 0.924 (0.929 with five neighbours in the whole frame's
   space instead of one, for 37% more candidates). Without the comparison at the images' own
   size: 0.976 / 0.783; before the softened comparison, the 12-component PCA and the exact box
   thumbnails: 0.970 / 0.712. Still missed (about 250 of 3,320 pairs): mostly pairs with a crop
   in them that never became candidates, or a crop against a resized or darkened copy.

Clusters are the connected components of all exact and verified pairs (union-find). The pHash
(as ``imagehash.phash`` computes it, batched) stays in the manifest for users who search by it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from labelwright.core.images import stack_pixels
from labelwright.core.pipeline import usable_cores
from PIL import Image
from scipy.fft import dct
from scipy.ndimage import gaussian_filter1d
from scipy.spatial import cKDTree
from sklearn.decomposition import PCA
from threadpoolctl import threadpool_limits

from .decode import pixel_array

FRAME = 32
"""Side of the grey frame every comparison is made in."""
DEFAULT_THRESHOLD = 0.982
NEIGHBOURS = 5
WHOLE_NEIGHBOURS = 1
"""Neighbours per item in the whole frame's space; the content box's space takes ``NEIGHBOURS``.
On the duplicate benchmark's tuning set the whole frame's second to fifth neighbours added no
pair to the clusters (recall 0.932 with 1 or 5; 0.897 with none) and were 37% of the candidates."""
COMPONENTS = 12
SEARCH_EPS = 0.5
"""The nearest-neighbour search may return neighbours up to (1 + eps) times farther than the
true k-th: 2.5x faster over 100,000 Fashion-MNIST items (18.7 s against 46.9 s for both spaces),
and on the duplicate benchmark's tuning set it finds one true pair more, none fewer."""
MARGINS = np.arange(0.0, 5.01, 1.0)
"""Crop margins (pixels of the 32-pixel frame, per side) the alignment searches."""
SOFTEN = 0.75
"""Extra blur (pixels) for comparing an image with a softer copy of it."""
SOFT_MIN = 0.9
"""Detail correlation under which a pair is not compared softened. On the duplicate benchmark no
pair accepted at 0.982 correlated under 0.935 before softening, and 87% of the others did."""
PROFILE_MIN = 0.92
"""Mean correlation of the row and column profiles, at their best crop, below which a pair is not
scored further."""
PROFILE_TIE = 0.002
"""Profile correlations (summed over both axes) closer than this do not decide which image of a
pair is the crop."""
NATIVE_SIDE = 48
"""Images no larger than this (pixels per side) are also compared at their own resolution."""
NATIVE_SHIFT = 6
"""Largest difference in size, and largest offset, between two images compared at their own
resolution (pixels per side)."""
NATIVE_THRESHOLD = 0.96
"""Detail correlation at the images' own resolution from which a pair is a near duplicate (tuned
by ``benchmarks/bench_duplicates.py --tune``)."""
NATIVE_PROFILE_MIN = 0.95
"""Correlation of the row and of the column profiles at their best offset below which a pair is
not compared at its own resolution. At 0.95 four in five candidates stop here; at 0.9 (three in
five) recall on the duplicate benchmark's tuning set was 0.003 higher."""
NATIVE_WINDOW = 20
"""Side of the central window (pixels, at the image's own size) whose 2x2-block thumbnail finds
more candidates among small images: a crop of a few pixels moves the centre by at most half of
that, where it rescales the whole frame."""


class UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def grey_frames(pixels: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
    """Normalised images (H, W[, 1 or 3] uint8; a list, or already stacked by ``stack_pixels``) as
    32x32 grey uint8, converted and resized as ``imagehash.phash`` does (Pillow's ITU-R 601-2 luma
    in fixed point, Lanczos)."""
    if not len(pixels):
        return np.empty((0, FRAME, FRAME), np.uint8)
    array = stack_pixels(pixels)
    if array.shape[3] == 1:
        array = array[..., 0]
    else:
        r, g, b = array[..., 0], array[..., 1], array[..., 2]
        if np.array_equal(r, g) and np.array_equal(g, b):  # grey pictures stored as RGB
            array = r
        else:
            array = ((r.astype(np.uint32) * 19595 + g.astype(np.uint32) * 38470 + b.astype(np.uint32) * 7471
                      + 0x8000) >> 16).astype(np.uint8)
    if array.shape[1:] != (FRAME, FRAME):
        array = np.stack([np.asarray(Image.fromarray(a).resize((FRAME, FRAME), Image.Resampling.LANCZOS))
                          for a in array])
    return array


def _dct_rows(count: int = 8, size: int = FRAME) -> np.ndarray:
    """The first ``count`` rows of the (unnormalised, type II) DCT of ``size`` samples as a matrix:
    ``_dct_rows() @ x == scipy.fft.dct(x, axis=0)[:count]``."""
    return dct(np.eye(size), axis=0)[:count]


def phashes(frames: np.ndarray) -> list[str]:
    """``imagehash.phash`` of each frame as hex, computed for all frames at once: only the 8x8
    lowest frequencies, as two matrix products (a tenth of the time of whole DCTs)."""
    basis = _dct_rows()
    coefficients = np.empty((len(frames), 64))
    for start in range(0, len(frames), 2048):  # in chunks that stay in the cache
        chunk = frames[start:start + 2048].astype(np.float64)
        across = (chunk.reshape(-1, FRAME) @ basis.T).reshape(len(chunk), FRAME, 8)
        coefficients[start:start + 2048] = np.matmul(basis, across).reshape(len(chunk), 64)
    bits = coefficients > np.median(coefficients, axis=1, keepdims=True)
    return [f"{int(row):016x}" for row in np.packbits(bits, axis=1).view(">u8").ravel()]


def _unit(x: np.ndarray) -> np.ndarray:
    x = x - x.mean(axis=-1, keepdims=True)
    return x / (np.linalg.norm(x, axis=-1, keepdims=True) + 1e-6)


def _content_boxes(frames: np.ndarray) -> np.ndarray:
    """Per frame, the bounding box ``(left, top, right, bottom)`` of what differs from the median
    of its border by more than 25 levels (the whole frame for a photo, or when under 4 pixels do)."""
    n = len(frames)
    border = np.concatenate([frames[:, 0], frames[:, -1], frames[:, :, 0], frames[:, :, -1]], axis=1)
    content = np.abs(frames.astype(np.float32) - np.median(border, axis=1)[:, None, None]) > 25.0
    columns, rows = content.any(axis=1), content.any(axis=2)
    first = lambda m: m.argmax(axis=1)  # noqa: E731
    last = lambda m: FRAME - m[:, ::-1].argmax(axis=1)  # noqa: E731
    boxes = np.stack([first(columns), first(rows), last(columns), last(rows)], axis=1).astype(np.float32)
    boxes[content.reshape(n, -1).sum(axis=1) < 4] = (0.0, 0.0, FRAME, FRAME)
    return boxes


def _box_weights(low: np.ndarray, high: np.ndarray, size: int = 8) -> np.ndarray:
    """Per item, the (size, FRAME) map that box-filters the span ``[low, high)`` of a line into
    ``size`` samples: each output averages its share of the span, pixels weighted by overlap."""
    edges = low[:, None] + (high - low)[:, None] * np.arange(size + 1, dtype=np.float32) / size
    start, stop = edges[:, :-1, None], edges[:, 1:, None]
    pixels = np.arange(FRAME, dtype=np.float32)
    overlap = np.clip(np.minimum(stop, pixels + 1) - np.maximum(start, pixels), 0, None)
    return overlap / overlap.sum(axis=2, keepdims=True)


def _box_thumbnails(frames: np.ndarray, boxes: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """8x8 box-filtered, brightness-invariant thumbnails of the box ``boxes`` gives for each frame
    of a chunk (``(left, top, right, bottom)`` rows; one row: the same box for all), as matrix
    products in chunks that stay in the cache."""
    out = np.empty((len(frames), 64), np.float32)
    for start in range(0, len(frames), 2048):
        chunk = frames[start:start + 2048]
        box = boxes(chunk)
        across, down = _box_weights(box[:, 0], box[:, 2]), _box_weights(box[:, 1], box[:, 3])
        thumbs = np.matmul(np.matmul(down, chunk.astype(np.float32)), across.transpose(0, 2, 1))
        out[start:start + 2048] = _unit(thumbs.reshape(len(chunk), 64))
    return out


def whole_thumbnails(frames: np.ndarray) -> np.ndarray:
    """Thumbnails of the whole frame: its 4x4 block means (as products: 7x faster than a mean over
    two axes of a reshaped view)."""
    return _box_thumbnails(frames, lambda _: np.float32([[0, 0, FRAME, FRAME]]))


def boxed_thumbnails(frames: np.ndarray) -> np.ndarray:
    """The same of the content box, so that crops of background do not move the thumbnail."""
    return _box_thumbnails(frames, _content_boxes)


def thumbnails(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return whole_thumbnails(frames), boxed_thumbnails(frames)


def candidate_pairs(descriptors: Sequence[np.ndarray], neighbours: int | Sequence[int] = NEIGHBOURS) -> np.ndarray:
    """Pairs ``(i, j)``, ``i < j``, that are among each other's nearest neighbours in any of the
    descriptor spaces (KD-tree on a PCA, so no all-pairs comparison; the queries use every core:
    scipy's tree found the same neighbours as scikit-learn's ``NearestNeighbors`` at a third of
    its time on 20,000 items, and is allowed ``SEARCH_EPS``). ``neighbours``: per item, for all
    spaces or one number per space."""
    n = len(descriptors[0])
    if n < 2:
        return np.empty((0, 2), np.int64)
    counts = [neighbours] * len(descriptors) if isinstance(neighbours, int) else list(neighbours)
    found = []
    for x, count in zip(descriptors, counts, strict=True):
        k = min(count + 1, n)
        reduced = PCA(min(COMPONENTS, n, x.shape[1]), random_state=0).fit_transform(x) if n > COMPONENTS else x
        _, index = cKDTree(reduced).query(reduced, k=k, eps=SEARCH_EPS, workers=-1)
        rows = np.repeat(np.arange(n), k)
        found.append(np.stack([rows, index.ravel()], axis=1))
    pairs = np.concatenate(found)
    return _distinct_pairs(np.sort(pairs[pairs[:, 0] != pairs[:, 1]], axis=1), n)


def _distinct_pairs(pairs: np.ndarray, n: int, without: np.ndarray | None = None) -> np.ndarray:
    """The distinct rows of ``pairs`` (each ``i < j``, indices below ``n``), in order, leaving out
    those also in ``without``."""
    codes = np.unique(pairs[:, 0] * n + pairs[:, 1])
    if without is not None:
        codes = codes[~np.isin(codes, without[:, 0] * n + without[:, 1])]
    return np.stack([codes // n, codes % n], axis=1)


def _resampling_matrices() -> np.ndarray:
    """For every (low, high) crop margin pair: the linear map from a 32-sample line to the
    32-sample line of its crop stretched back to full length."""
    spans = [(lo, hi) for lo in MARGINS for hi in MARGINS]
    centres = np.arange(FRAME) + 0.5
    matrices = np.zeros((len(spans), FRAME, FRAME), np.float32)
    for s, (lo, hi) in enumerate(spans):
        u = np.clip(lo + centres * (FRAME - lo - hi) / FRAME - 0.5, 0, FRAME - 1)
        left = np.floor(u).astype(int)
        right = np.minimum(left + 1, FRAME - 1)
        w = (u - left).astype(np.float32)
        matrices[s, np.arange(FRAME), left] += 1 - w
        matrices[s, np.arange(FRAME), right] += w
    return matrices


def _blur_matrix(sigma: float, size: int = FRAME) -> np.ndarray:
    """``gaussian_filter1d(line, sigma, mode="nearest")`` of a ``size``-sample line as a matrix."""
    return gaussian_filter1d(np.eye(size), sigma, axis=0, mode="nearest").astype(np.float32)


def _blur(frames: np.ndarray, matrix: np.ndarray, across: np.ndarray | None = None) -> np.ndarray:
    """Rows and columns of each frame blurred: ``G @ frame @ H.T`` with ``H`` = ``across`` for
    frames that are not square, else ``G`` (4x faster than filtering)."""
    across = matrix if across is None else across
    return np.matmul(matrix, (frames.reshape(-1, frames.shape[-1]) @ across.T).reshape(frames.shape))


def _band(frames: np.ndarray) -> np.ndarray:
    """Difference of Gaussians (sigma 0.7 and 2 pixels): the detail that tells items apart."""
    return _blur(frames, _blur_matrix(0.7)) - _blur(frames, _blur_matrix(2.0))


def _in_threads(work: Callable[[slice], None], n: int, chunk: int) -> None:
    """``work`` over consecutive slices of ``range(n)``: one thread per core, each with a
    single-threaded BLAS. NumPy releases the GIL in its products, and these small products gain
    nothing from BLAS threads (scoring 138,000 pairs: 2.1x faster than one thread on 2 cores)."""
    with threadpool_limits(1), ThreadPoolExecutor(usable_cores()) as pool:
        list(pool.map(lambda start: work(slice(start, min(start + chunk, n))), range(0, n, chunk)))


class Aligner:
    """Scores how well one image of a pair is a (re-encoded, rescaled, cropped, brightened) copy of
    the other."""

    def __init__(self, frames: np.ndarray) -> None:
        n = len(frames)
        self.matrices = _resampling_matrices()
        self.stacked = self.matrices.reshape(-1, FRAME)
        self.soft = _blur_matrix(SOFTEN)
        # the same crops, then softened: G @ (M @ x @ M.T) @ G.T == (G @ M) @ x @ (G @ M).T
        self.soft_matrices = np.matmul(self.soft, self.matrices)
        # per item only the detail itself (4 KB); its unit and softened forms are made per pair,
        # which keeps these arrays at 0.4 GB for 100,000 images instead of 1.2 GB
        self.band = np.empty((n, FRAME, FRAME), np.float32)
        self.profiles = (np.empty((n, FRAME), np.float32), np.empty((n, FRAME), np.float32))  # columns, rows
        self.norms = (np.empty((n, len(self.matrices)), np.float32), np.empty((n, len(self.matrices)), np.float32))

        def features(items: slice) -> None:
            x = frames[items].astype(np.float32)
            self.band[items] = _band(x)
            for axis in (0, 1):
                profiles = self.profiles[axis][items] = x.mean(axis=axis + 1)
                self.norms[axis][items] = self._span_norms(profiles)

        _in_threads(features, n, 2048)

    def _crops(self, profiles: np.ndarray) -> np.ndarray:
        """Every crop span of every profile, stretched back to full length: (items, spans, FRAME)."""
        return (profiles @ self.stacked.T).reshape(len(profiles), len(self.matrices), FRAME)

    def _span_norms(self, profiles: np.ndarray) -> np.ndarray:
        """Norm of every centred crop of every profile: (items, spans)."""
        cropped = self._crops(profiles)
        centred = cropped - cropped.mean(axis=2, keepdims=True)
        # floored at 0.1 grey level: a flat profile has no shape to correlate, and dividing by
        # its rounding noise made correlations of several units
        return np.sqrt(np.einsum("nsp,nsp->ns", centred, centred)) + 0.1

    def _best_span(self, axis: int, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The crop span of ``a``'s profile that best matches ``b``'s whole profile, and that
        correlation (``b``'s unit profile is centred, so only the crop's norm needs centring)."""
        profiles, norms = self.profiles[axis], self.norms[axis]
        dots = np.matmul(self._crops(profiles[a]), _unit(profiles[b])[:, :, None])[:, :, 0] / norms[a]
        best = dots.argmax(axis=1)
        return best, dots[np.arange(len(a)), best]

    @staticmethod
    def _correlation(x: np.ndarray, y_unit: np.ndarray) -> np.ndarray:
        """Correlation of each row of ``x`` with the centred unit row of ``y_unit``: only ``x``'s
        norm needs centring."""
        x = x.reshape(len(x), -1)
        total = x.sum(axis=1)
        energy = np.einsum("ij,ij->i", x, x) - total * total / x.shape[1]
        return np.einsum("ij,ij->i", x, y_unit) / (np.sqrt(np.maximum(energy, 0)) + 1e-6)

    def _detail(self, a: np.ndarray, b: np.ndarray, kx: np.ndarray, ky: np.ndarray) -> np.ndarray:
        """Detail correlation of ``b`` with the crop ``(kx, ky)`` of ``a``."""
        band = self.band[a]
        aligned = np.matmul(np.matmul(self.matrices[ky], band), self.matrices[kx].transpose(0, 2, 1))
        b_band = self.band[b]
        b_unit = _unit(b_band.reshape(len(b), -1))
        out = self._correlation(aligned, b_unit)
        # A copy made from fewer pixels (downscaled, cropped and stretched) is softer: compare the
        # detail at the softer image's resolution too, whichever of the two it is. Only for pairs
        # that already correlate well (most candidates do not, and are spared the products).
        s = out >= SOFT_MIN
        if s.any():
            softened = np.matmul(np.matmul(self.soft_matrices[ky[s]], band[s]),
                                 self.soft_matrices[kx[s]].transpose(0, 2, 1))
            b_soft = _unit(_blur(b_band[s], self.soft).reshape(int(s.sum()), -1))
            out[s] = np.maximum.reduce([out[s], self._correlation(softened, b_unit[s]),
                                        self._correlation(aligned[s], b_soft)])
        return out

    def _pair_scores(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        # Which image is the crop is unknown. The direction whose profiles align better is scored;
        # where the profiles cannot tell the directions apart, both are, and the better one counts.
        kx, cx = self._best_span(0, a, b)
        ky, cy = self._best_span(1, a, b)
        kx2, cx2 = self._best_span(0, b, a)
        ky2, cy2 = self._best_span(1, b, a)
        forward = cx + cy >= cx2 + cy2
        # (cropped image, copy, spans): the better-aligned direction first, the other second
        first = (np.where(forward, a, b), np.where(forward, b, a),
                 np.where(forward, kx, kx2), np.where(forward, ky, ky2))
        second = (first[1], first[0], np.where(forward, kx2, kx), np.where(forward, ky2, ky))
        # pairs whose profiles do not match under any crop are not copies: no detail to compare
        # (a quarter of the candidates among 20,000 Fashion-MNIST items; no accepted benchmark pair)
        out = np.zeros(len(a), np.float32)
        s = np.maximum(cx + cy, cx2 + cy2) >= 2 * PROFILE_MIN
        if not s.any():
            return out
        out[s] = self._detail(*(x[s] for x in first))
        t = s & (np.abs(cx + cy - cx2 - cy2) < PROFILE_TIE)
        if t.any():
            out[t] = np.maximum(out[t], self._detail(*(x[t] for x in second)))
        return out

    def score(self, pairs: np.ndarray, chunk: int = 1024) -> np.ndarray:
        """The detail correlation of each pair after alignment (at most 1; 0 for pairs whose
        profiles do not match)."""
        out = np.empty(len(pairs), np.float32)

        def work(part: slice) -> None:
            out[part] = self._pair_scores(pairs[part, 0], pairs[part, 1])

        _in_threads(work, len(pairs), chunk)
        return out


def native_grey(image: Image.Image) -> np.ndarray | None:
    """The decoded image in grey at its own size (Pillow's luma, as the frames), if it is small
    enough to be compared at its own resolution; else None."""
    if max(image.size) > NATIVE_SIDE:
        return None
    return pixel_array(image if image.mode == "L" else image.convert("L"))[:, :, 0]


def native_canvas(images: Sequence[np.ndarray | None]) -> tuple[np.ndarray, np.ndarray]:
    """Small grey images at their own size, stacked top-left in a ``(n, side, side)`` canvas as
    wide as the largest of them, and their ``(height, width)`` (0, 0 where there is none)."""
    side = max((max(a.shape) for a in images if a is not None), default=0)
    canvas = np.zeros((len(images), side, side), np.uint8)
    shapes = np.zeros((len(images), 2), np.int32)
    for i, a in enumerate(images):
        if a is not None:
            canvas[i, : a.shape[0], : a.shape[1]] = a
            shapes[i] = a.shape
    return canvas, shapes


def join_canvases(parts: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Several ``native_canvas`` results as one (the shards' parts at the merge)."""
    side = max((c.shape[1] for c, _ in parts), default=0)
    canvases = [np.pad(c, ((0, 0), (0, side - c.shape[1]), (0, side - c.shape[2]))) for c, _ in parts]
    return (np.concatenate(canvases) if canvases else np.zeros((0, 0, 0), np.uint8),
            np.concatenate([s for _, s in parts]) if parts else np.zeros((0, 2), np.int32))


def _running_sums(x: np.ndarray) -> np.ndarray:
    """Per row, the sums of its first 0, 1, ... len(row) elements."""
    return np.pad(np.cumsum(x, axis=1), ((0, 0), (1, 0)))


class NativeMatcher:
    """Scores pairs of small images at their own resolution, before any resizing.

    A crop or a brightness shift of a small image keeps its pixels: the copy is a window of the
    original at a whole-pixel offset, and its fine detail (the image minus its Gaussian blur,
    sigma 1 pixel) correlates almost perfectly with the original's over the overlap. Resized to a
    common frame, the same pair only correlates as well as distinct look-alikes do. The offset
    comes from the row and column intensity profiles (on the tuning set of the duplicate
    benchmark it was the best of all offsets within 6 pixels for every true pair that correlated
    at 0.96 or more).
    """

    def __init__(self, canvas: np.ndarray, shapes: np.ndarray) -> None:
        self.shapes = shapes.astype(np.int64)
        # the detail in 1/16 grey levels as int16: half the memory of float32, quick to convert,
        # and a correlation does not depend on the scale
        self.detail = np.zeros(canvas.shape, np.int16)
        side = canvas.shape[1] if canvas.ndim == 3 else 0
        self.profiles = (np.zeros((len(canvas), side), np.float32), np.zeros((len(canvas), side), np.float32))
        # candidates of their own: thumbnails of the central window at the images' own size
        half = NATIVE_WINDOW // 2
        blocks = np.zeros((len(canvas), half * half), np.float32)
        for shape in np.unique(self.shapes[self.shapes.min(axis=1) > 0], axis=0):
            h, w = (int(v) for v in shape)
            same_size = np.nonzero((self.shapes == shape).all(axis=1))[0]
            down, across = _blur_matrix(1.0, h), _blur_matrix(1.0, w)

            def features(part: slice, h: int = h, w: int = w, same_size: np.ndarray = same_size,
                         down: np.ndarray = down, across: np.ndarray = across) -> None:
                members = same_size[part]
                x = canvas[members, :h, :w].astype(np.float32)
                self.detail[members, :h, :w] = ((x - _blur(x, down, across)) * 16).astype(np.int16)
                self.profiles[0][members, :h] = x.mean(axis=2)  # rows
                self.profiles[1][members, :w] = x.mean(axis=1)  # columns
                if min(h, w) >= NATIVE_WINDOW:
                    top, left = (h - NATIVE_WINDOW) // 2, (w - NATIVE_WINDOW) // 2
                    window = x[:, top : top + NATIVE_WINDOW, left : left + NATIVE_WINDOW]
                    sums = window[:, 0::2, 0::2] + window[:, 1::2, 0::2] + window[:, 0::2, 1::2] + window[:, 1::2, 1::2]
                    blocks[members] = sums.reshape(len(members), -1)  # 2x2 block sums: _unit drops the scale

            _in_threads(features, len(same_size), 2048)
        # running sums of each profile and of its square, for the sums over any overlap
        self.sums = tuple((_running_sums(p), _running_sums(p * p)) for p in self.profiles)
        self.windowed = np.nonzero(self.shapes.min(axis=1) >= NATIVE_WINDOW)[0]
        self.descriptors = _unit(blocks[self.windowed])

    def _offset(self, axis: int, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per pair, the shift s (|s| <= NATIVE_SHIFT) at which ``b``'s profile along ``axis`` best
        matches ``a``'s (``b[y]`` against ``a[y + s]``), and that correlation.

        Profiles are zero beyond their image, so the product of two shifted profiles is already
        confined to their overlap; the overlap's sums of each profile come from running sums."""
        m = NATIVE_SHIFT
        sums, squares = self.sums[axis]
        la, lb = self.shapes[a, axis][:, None], self.shapes[b, axis][:, None]
        pa, pb = self.profiles[axis][a], self.profiles[axis][b]
        side = pa.shape[1]
        # every shift at once: (pairs, shifts, side) views of a's padded profile
        windows = np.lib.stride_tricks.sliding_window_view(np.pad(pa, ((0, 0), (m, m))), side, axis=1)
        uv = np.einsum("psi,pi->ps", windows, pb)
        shifts = np.arange(-m, m + 1)
        high = np.clip(np.minimum(lb, la - shifts), 0, side)
        low = np.minimum(np.maximum(0, -shifts), high)
        n = high - low

        def overlap_sum(run: np.ndarray, offset: np.ndarray | int) -> np.ndarray:
            return np.take_along_axis(run, high + offset, axis=1) - np.take_along_axis(run, low + offset, axis=1)

        count = np.maximum(n, 1)
        u, uu = overlap_sum(sums[b], 0), overlap_sum(squares[b], 0)
        v, vv = overlap_sum(sums[a], shifts), overlap_sum(squares[a], shifts)
        c = (uv - u * v / count) / np.sqrt(np.maximum((uu - u * u / count) * (vv - v * v / count), 0) + 1e-6)
        c[n < 0.75 * np.minimum(la, lb)] = -2.0
        best = c.argmax(axis=1)
        return shifts[best], c[np.arange(len(a)), best]

    def _correlation(self, a: np.ndarray, b: np.ndarray, dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
        """Detail correlation of ``b`` with ``a`` shifted by ``(dy, dx)``, over their overlap."""
        m = NATIVE_SHIFT
        side = int(max(self.shapes[a].max(), self.shapes[b].max()))
        shifted = np.pad(self.detail[a, :side, :side].astype(np.float32), ((0, 0), (m, m), (m, m)))
        x = np.empty((len(a), side, side), np.float32)
        offset = (dy + m) * (2 * m + 1) + dx + m
        for key in np.unique(offset):  # pairs at one offset at a time: slices instead of gathers
            same = np.nonzero(offset == key)[0]
            oy, ox = divmod(int(key), 2 * m + 1)
            x[same] = shifted[same, oy : oy + side, ox : ox + side]
        y = self.detail[b, :side, :side].astype(np.float32)
        position = np.arange(side)
        rows = ((position < self.shapes[b, 0][:, None]) & (position + dy[:, None] >= 0)
                & (position + dy[:, None] < self.shapes[a, 0][:, None])).astype(np.float32)
        columns = ((position < self.shapes[b, 1][:, None]) & (position + dx[:, None] >= 0)
                   & (position + dx[:, None] < self.shapes[a, 1][:, None])).astype(np.float32)

        def total(z: np.ndarray) -> np.ndarray:  # sum over the overlap, a rectangle per pair
            return np.einsum("pi,pi->p", rows, np.matmul(z, columns[:, :, None])[:, :, 0])

        n = np.maximum(rows.sum(axis=1) * columns.sum(axis=1), 1)
        sx, sy = total(x), total(y)
        # x is zero beyond a's image and y beyond b's, so their product is confined to the overlap
        cov = np.einsum("pij,pij->p", x, y) - sx * sy / n
        vx, vy = total(x * x) - sx * sx / n, total(y * y) - sy * sy / n
        return cov / np.sqrt(np.maximum(vx * vy, 1e-6))

    def candidates(self, neighbours: int = NEIGHBOURS) -> np.ndarray:
        """Pairs ``(i, j)``, ``i < j``, among each other's nearest neighbours by their central window."""
        return np.sort(self.windowed[candidate_pairs((self.descriptors,), neighbours)], axis=1)

    def score(self, pairs: np.ndarray, chunk: int = 2048) -> np.ndarray:
        """Detail correlation of each pair at the offset its profiles give; -1 for pairs that
        cannot be compared at their own size (too large, sizes too far apart, profiles unlike)."""
        out = np.full(len(pairs), -1.0, np.float32)
        if not len(pairs):
            return out
        ha, hb = self.shapes[pairs[:, 0]], self.shapes[pairs[:, 1]]
        comparable = np.nonzero((ha.min(axis=1) > 0) & (hb.min(axis=1) > 0)
                                & (np.abs(ha - hb).max(axis=1) <= NATIVE_SHIFT))[0]
        # chunks of pairs of like size, so that each is compared on a canvas no larger than it needs
        comparable = comparable[np.argsort(np.maximum(ha, hb).max(axis=1)[comparable], kind="stable")]

        def work(part: slice) -> None:
            rows = comparable[part]
            a, b = pairs[rows, 0], pairs[rows, 1]
            dy, cy = self._offset(0, a, b)
            dx, cx = self._offset(1, a, b)
            alike = np.minimum(cy, cx) >= NATIVE_PROFILE_MIN
            if alike.any():
                out[rows[alike]] = self._correlation(a[alike], b[alike], dy[alike], dx[alike])

        _in_threads(work, len(comparable), chunk)
        return out


def near_pairs(frames: np.ndarray, threshold: float = DEFAULT_THRESHOLD, neighbours: int = NEIGHBOURS,
               boxed: np.ndarray | None = None,
               natives: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Verified near-duplicate pairs among ``frames`` and their scores (``boxed``: the boxed
    thumbnails when already computed, e.g. by the shards; ``natives``: the ``native_canvas`` of
    the same items, for comparing small images at their own size as well)."""
    boxed = boxed_thumbnails(frames) if boxed is None else boxed
    pairs = candidate_pairs((whole_thumbnails(frames), boxed), (min(WHOLE_NEIGHBOURS, neighbours), neighbours))
    if not len(pairs):
        return pairs, np.empty(0, np.float32)
    scores = Aligner(frames).score(pairs)
    keep = scores >= threshold
    if natives is None or not natives[1].any():
        return pairs[keep], scores[keep]
    # small images: the pairs the resized frames rejected, and the candidates by their central
    # window (crops, mostly), are compared at the images' own size. Not again those whose profiles
    # matched under no crop (score 0): a quarter of the rejected pairs among 20,000 Fashion-MNIST
    # items, and none of them a copy at its own size on the duplicate benchmark's tuning set.
    matcher = NativeMatcher(*natives)
    more = _distinct_pairs(np.concatenate([pairs[~keep & (scores > 0)], matcher.candidates(neighbours)]), len(frames),
                           without=pairs[keep])
    native = matcher.score(more)
    same = native >= NATIVE_THRESHOLD
    return np.concatenate([pairs[keep], more[same]]), np.concatenate([scores[keep], native[same]])


def cluster(pixel_hashes: Sequence[str], frames: np.ndarray, threshold: float | None = DEFAULT_THRESHOLD,
            boxed: np.ndarray | None = None,
            natives: tuple[np.ndarray, np.ndarray] | None = None) -> list[tuple[int, str]]:
    """For each item, ``(cluster_id, kind)`` where kind is ``exact``, ``near`` or ``""`` (alone).

    Items with equal pixel hashes are exact duplicates; one representative of each exact group
    takes part in the near-duplicate search (``threshold`` None turns it off). An item is
    ``exact`` when another item has its very pixels, else ``near``. A cluster's id is its first
    member's index.
    """
    n = len(pixel_hashes)
    groups = UnionFind(n)
    first_of: dict[str, int] = {}
    exact = [False] * n
    for i, h in enumerate(pixel_hashes):
        if h in first_of:
            groups.union(first_of[h], i)
            exact[i] = exact[first_of[h]] = True
        else:
            first_of[h] = i
    if threshold is not None:
        representatives = np.array(sorted(first_of.values()), dtype=np.int64)
        pairs, _ = near_pairs(frames[representatives], threshold,
                              boxed=None if boxed is None else boxed[representatives],
                              natives=None if natives is None else (natives[0][representatives],
                                                                    natives[1][representatives]))
        for a, b in representatives[pairs]:
            groups.union(int(a), int(b))
    members: dict[int, list[int]] = defaultdict(list)
    for i in range(n):
        members[groups.find(i)].append(i)
    result: list[tuple[int, str]] = [(i, "") for i in range(n)]
    for root, items in members.items():
        if len(items) < 2:
            continue
        for i in items:
            result[i] = (root, "exact" if exact[i] else "near")
    return result
