"""Running ``zsctl.main`` in-process against the fake server and capturing what it prints."""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Mapping
from typing import Any

from zsd.cli.zsctl import main

from .zsctl_fakes import NOW, ServerThread


@dataclasses.dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


class TtyStream(io.StringIO):
    def isatty(self) -> bool:
        return True


def zsctl(
    server: ServerThread | None,
    *argv: str,
    env: Mapping[str, str] | None = None,
    stdout: io.StringIO | None = None,
    stderr: io.StringIO | None = None,
) -> Result:
    out = stdout if stdout is not None else io.StringIO()
    err = stderr if stderr is not None else io.StringIO()
    endpoint = ["--endpoint", server.address] if server is not None else []
    code = main([*endpoint, *argv], env=env or {}, stdout=out, stderr=err, poll=0.01, now=lambda: NOW)
    return Result(code, out.getvalue(), err.getvalue())
