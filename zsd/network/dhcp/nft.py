"""``FirewallDriver`` on the kernel: the ``nft`` command with libnftables JSON.

The command, not the in-process library, so the same code reaches another network
namespace (``ip netns exec``) for a simulated host without switching a thread's
namespace; a transaction is one ``nft -j -f -`` run, all or nothing.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence

from zsd.errors import FailedPrecondition, Internal
from zsd.network.dhcp.guard import FAMILY, Command

TIMEOUT = 30.0


class NftDriver:
    def __init__(self, *, netns: str = "", nft: str = "nft") -> None:
        """``netns``: the host's namespace when it is not this process's ("" = this one)."""
        self._prefix = ["ip", "netns", "exec", netns] if netns else []
        self._nft = nft

    def tables(self) -> set[str]:
        out = self._run(["-j", "list", "tables", FAMILY], None)
        return {
            str(item["table"]["name"])
            for item in json.loads(out).get("nftables", [])
            if "table" in item and item["table"].get("family") == FAMILY
        }

    def commit(self, commands: Sequence[Command]) -> None:
        if commands:
            self._run(["-j", "-f", "-"], json.dumps({"nftables": list(commands)}))

    def _run(self, args: list[str], stdin: str | None) -> str:
        argv = [*self._prefix, self._nft, *args]
        try:
            done = subprocess.run(
                argv, input=stdin, capture_output=True, text=True, timeout=TIMEOUT, check=False
            )
        except FileNotFoundError:
            raise FailedPrecondition(
                f"{argv[0]} is not installed (package nftables)", reason="NFT_NOT_INSTALLED"
            ) from None
        except subprocess.TimeoutExpired:
            raise Internal(f"nft {' '.join(args)} took more than {TIMEOUT} s", reason="NFT_FAILED") from None
        if done.returncode != 0:
            raise Internal(f"nft {' '.join(args)}: {done.stderr.strip()}", reason="NFT_FAILED")
        return done.stdout
