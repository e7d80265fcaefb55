"""The fake libnftables is as strict as the kernel where zsd relies on it."""

from __future__ import annotations

from typing import Any

from tests.unit.network.secgroups.fakenft import FakeNft

T = {"family": "inet", "table": "t"}


def run(nft: FakeNft, *cmds: dict[str, Any]) -> int:
    return nft.json_cmd({"nftables": list(cmds)})[0]


def base(nft: FakeNft) -> None:
    assert (
        run(
            nft,
            {"add": {"table": {"family": "inet", "name": "t"}}},
            {"add": {"chain": {**T, "name": "a"}}},
            {"add": {"chain": {**T, "name": "b"}}},
            {
                "add": {
                    "set": {
                        **T,
                        "name": "s",
                        "type": "ipv4_addr",
                        "stmt": [{"counter": None}],
                        "elem": ["10.0.0.1"],
                    }
                }
            },
            {
                "add": {
                    "map": {
                        **T,
                        "name": "v",
                        "type": "mark",
                        "map": "verdict",
                        "elem": [[1, {"goto": {"target": "b"}}]],
                    }
                }
            },
            {
                "add": {
                    "rule": {
                        **T,
                        "chain": "a",
                        "expr": [{"match": {"op": "==", "left": {}, "right": "@s"}}],
                    }
                }
            },
        )
        == 0
    )


def test_transactions_are_all_or_nothing() -> None:
    nft = FakeNft()
    base(nft)
    before = nft.snapshot()
    assert (
        run(nft, {"flush": {"chain": {**T, "name": "a"}}}, {"delete": {"chain": {**T, "name": "nope"}}}) == 1
    )
    assert nft.snapshot() == before


def test_nothing_in_use_can_be_deleted() -> None:
    nft = FakeNft()
    base(nft)
    assert run(nft, {"delete": {"set": {**T, "name": "s"}}}) == 1
    assert run(nft, {"delete": {"chain": {**T, "name": "b"}}}) == 1  # the vmap points at it
    assert run(nft, {"flush": {"chain": {**T, "name": "a"}}}, {"delete": {"set": {**T, "name": "s"}}}) == 0
    assert (
        run(
            nft,
            {"delete": {"element": {**T, "name": "v", "elem": [1]}}},
            {"delete": {"chain": {**T, "name": "b"}}},
        )
        == 0
    )


def test_references_must_exist_and_elements_are_unique() -> None:
    nft = FakeNft()
    base(nft)
    assert run(nft, {"add": {"rule": {**T, "chain": "a", "expr": [{"jump": {"target": "zz"}}]}}}) == 1
    assert run(nft, {"add": {"element": {**T, "name": "s", "elem": ["10.0.0.1"]}}}) == 1
    assert run(nft, {"delete": {"element": {**T, "name": "s", "elem": ["10.0.0.2"]}}}) == 1
    assert run(nft, {"add": {"element": {**T, "name": "v", "elem": [[2, {"goto": {"target": "zz"}}]]}}}) == 1


def test_failures_are_injected_one_per_transaction_and_listings_show_element_counters() -> None:
    nft = FakeNft()
    base(nft)
    nft.failures = ["Error: boom\n"]
    assert nft.json_cmd({"nftables": [{"add": {"chain": {**T, "name": "x"}}}]}) == (1, "", "Error: boom\n")
    nft.hit("inet", "t", "s", {"prefix": {"addr": "10.0.0.1", "len": 32}}, packets=3, nbytes=180)
    rc, out, _ = nft.json_cmd({"nftables": [{"list": {"table": {"family": "inet", "name": "t"}}}]})
    (listed,) = [i["set"] for i in out["nftables"] if "set" in i]
    assert rc == 0 and listed["elem"] == [
        {"elem": {"val": "10.0.0.1", "counter": {"packets": 3, "bytes": 180}}}
    ]
