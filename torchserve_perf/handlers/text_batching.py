"""Padding and length groups for token-id batches: pure functions on lengths.

A batch is padded to its longest request, so one long request makes every short one pay for its
padding. The handler splits a batch into groups of similar length (each padded to its own
longest) when the padding saved outweighs the cost of one more model call.
"""

from __future__ import annotations

from typing import Sequence


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def padded_length(longest: int, multiple: int, cap: int) -> int:
    """The length a group is padded to: its longest, rounded up to ``multiple``, at most ``cap``."""
    return min(cap, round_up(max(longest, 1), multiple))


def length_groups(lengths: Sequence[int], multiple: int, cap: int, call_cost_tokens: int) -> list[tuple[int, ...]]:
    """Rows grouped so that padded tokens plus ``call_cost_tokens`` per model call is least.

    Rows are sorted by length and cut into contiguous runs (an optimal grouping under this cost
    never interleaves lengths); each group lists row indices, shortest group first. With
    ``call_cost_tokens`` large enough, one group: the plain batch.
    """
    if not lengths:
        return []
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    count = len(order)
    best = [0] + [-1] * count  # best[j]: least cost of the first j sorted rows
    cut = [0] * (count + 1)
    for end in range(1, count + 1):
        for start in range(end):
            cost = best[start] + (end - start) * padded_length(lengths[order[end - 1]], multiple, cap) + call_cost_tokens
            if best[end] < 0 or cost < best[end]:
                best[end], cut[end] = cost, start
    groups = []
    end = count
    while end > 0:
        groups.append(tuple(order[cut[end]:end]))
        end = cut[end]
    return groups[::-1]
