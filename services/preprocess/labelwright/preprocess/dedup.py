"""Duplicate clusters: exact (same decoded pixels) and near (perceptual hashes within a distance).

Near pairs are found with a BK-tree over 64-bit hashes (Burkhard & Keller, 1973), so a query
visits a small part of the tree instead of every other image; clusters are the connected
components of all pairs (union-find).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence


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


class BKTree:
    """Metric tree over integers under Hamming distance."""

    def __init__(self) -> None:
        self.root: list | None = None  # [value, item, {distance: child}]

    def add(self, value: int, item: int) -> None:
        if self.root is None:
            self.root = [value, item, {}]
            return
        node = self.root
        while True:
            d = (value ^ node[0]).bit_count()
            child = node[2].get(d)
            if child is None:
                node[2][d] = [value, item, {}]
                return
            node = child

    def query(self, value: int, radius: int) -> list[int]:
        """Items whose value lies within ``radius`` of ``value``."""
        found, stack = [], [self.root] if self.root else []
        while stack:
            node = stack.pop()
            d = (value ^ node[0]).bit_count()
            if d <= radius:
                found.append(node[1])
            for dist, child in node[2].items():
                if d - radius <= dist <= d + radius:
                    stack.append(child)
        return found


def cluster(pixel_hashes: Sequence[str], phashes: Sequence[int], max_distance: int) -> list[tuple[int, str]]:
    """For each item, ``(cluster_id, kind)`` where kind is ``exact``, ``near`` or ``""`` (alone).

    Items with equal pixel hashes are exact duplicates; items whose perceptual hashes differ in
    at most ``max_distance`` bits are near duplicates (``max_distance < 0`` turns that off). An
    item is ``exact`` when another item has its very pixels, else ``near``. A cluster's id is its
    first member's index.
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
    if max_distance >= 0:
        tree = BKTree()
        representatives = sorted(first_of.values())
        for i in representatives:
            for j in tree.query(phashes[i], max_distance):
                groups.union(i, j)
            tree.add(phashes[i], i)
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
