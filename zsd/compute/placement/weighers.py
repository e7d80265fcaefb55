"""Which of the hosts that fit wins.

Each host carries a precomputed key (the higher the better) that only changes when a
VM lands on or leaves that host, so choosing among 1000 hosts is one ``max`` in C:

- spread: the most free memory fraction, then the lowest vCPU use ratio;
- pack: the least free memory, then the fewest free vCPUs.

Both end with the host name (the lowest wins) so the same state always gives the
same answer. A preferred policy's bonus dominates the key: a host with a higher
bonus always beats one with a lower bonus, whatever their keys.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from zsd.compute.placement.model import Strategy

Key = tuple[float, float, int]


def host_key(
    strategy: Strategy,
    *,
    rank: int,
    free_vcpus: int,
    cap_vcpus: int,
    free_memory_mib: int,
    cap_memory_mib: int,
) -> Key:
    """``rank``: the host's position in name order."""
    if strategy == "pack":
        return (-free_memory_mib, -free_vcpus, -rank)
    free_fraction = free_memory_mib / cap_memory_mib if cap_memory_mib > 0 else 0.0
    used_ratio = (cap_vcpus - free_vcpus) / cap_vcpus if cap_vcpus > 0 else 1.0
    return (free_fraction, -used_ratio, -rank)


def choose(fit: Sequence[str], keys: Mapping[str, Key], bonus: Mapping[str, int]) -> str:
    """The winner among ``fit`` (not empty); ``bonus`` holds only non-zero entries."""
    by_key = keys.__getitem__
    marked = [h for h in fit if h in bonus] if bonus else []
    if not marked:
        return max(fit, key=by_key)
    top = max(marked, key=lambda h: (bonus[h], keys[h]))
    if bonus[top] > 0:
        return top
    # Every marked host is penalized: any unmarked host beats them.
    rest = [h for h in fit if h not in bonus]
    return max(rest, key=by_key) if rest else top
