"""``zsctl``: the thin command-line client of the zsd API.

It ships alone: besides the standard library it imports only grpc, google.protobuf,
google.rpc, the generated ``zsd.v1`` stubs and ``zsd.__version__`` (plus yaml for
``-o yaml`` and shtab for ``completion``, lazily). Its modules, one job each:

- ``zsctl``             the command line: parser, ``main``, failures -> exit status
- ``_zsctl_commands``   one handler per command; the ``Api`` and ``Console`` they use
- ``_zsctl_endpoint``   endpoint resolution and channel construction
- ``_zsctl_output``     JSON/YAML documents, tables and ``key: value`` blocks
- ``_zsctl_errors``     google.rpc.Status -> ``error: message (reason: X, field: Y)``
- ``_zsctl_wait``       the operation wait loop and its progress display
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.util
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

import grpc

from zsd import __version__
from zsd.v1 import operation_pb2

from ._zsctl_commands import (
    DEFAULT_POLL,
    Api,
    CommandError,
    Console,
    Handler,
    Interrupted,
    LabelChange,
    cmd_cluster_show,
    cmd_cluster_watch,
    cmd_host_label,
    cmd_host_list,
    cmd_host_refresh,
    cmd_host_remove,
    cmd_host_set_vfs,
    cmd_host_show,
    cmd_operation_cancel,
    cmd_operation_list,
    cmd_operation_show,
    cmd_operation_wait,
)
from ._zsctl_endpoint import (
    CA_ENV,
    CERT_ENV,
    DEFAULT_ENDPOINT,
    ENDPOINT_ENV,
    KEY_ENV,
    ConnectOptions,
    Endpoint,
    EndpointError,
    open_channel,
    resolve_endpoint,
)
from ._zsctl_errors import decode_rpc_error
from ._zsctl_network_commands import add_network_nouns
from ._zsctl_output import FORMATS, Clock
from ._zsctl_policy_commands import add_policy_noun
from ._zsctl_secgroup_commands import add_secgroup_noun
from ._zsctl_storage_commands import add_storage_nouns
from ._zsctl_vm_commands import add_vm_noun

DEFAULT_TIMEOUT = 30.0
COMPLETION_SHELLS = ("bash", "zsh")
# shtab's "complete with file names" marker, spelled out so building the parser needs no shtab.
_FILE_COMPLETION = {"bash": "_shtab_compgen_files", "zsh": "_files", "tcsh": "f"}
_OPERATION_STATES = [
    name.lower()
    for name in operation_pb2.OperationMetadata.State.keys()  # noqa: SIM118 - an enum wrapper, not a dict
    if name != "STATE_UNSPECIFIED"
]

EPILOG = f"""\
endpoint:
  --endpoint, else ${ENDPOINT_ENV}, else {DEFAULT_ENDPOINT} (root only).
  Forms: unix:/path, unix:///path, host:port, [ipv6]:port. TCP uses TLS with
  --ca FILE (${CA_ENV}) and, for mutual TLS, --cert/--key (${CERT_ENV}/${KEY_ENV});
  plain TCP only with --insecure.

output (-o):
  table  for people (default); layout may change between versions.
  json   exactly one document: an array of resource objects for list commands,
         one object otherwise. Objects use the proto3 JSON mapping with proto field
         names (snake_case). Every scalar, enum and repeated field is present even
         when zero or empty; message fields (nested messages, timestamps) appear
         only when set. Enums are full names ("READY"), 64-bit integers are strings,
         timestamps RFC 3339, durations like "12.5s".
  yaml   the same data as YAML.
  `cluster watch` streams instead: with json one compact object per line (JSON
  Lines), with yaml one document per revision, each opened by "---".

deadlines:
  --timeout bounds each call (default {DEFAULT_TIMEOUT:g}s). A watch is one call that runs
  until the server ends it or you stop it, so it has a deadline only when --timeout
  is given; reaching that deadline ends the watch normally (exit 0).

exit status:
  0 success; 1 API error, unreachable server, or an operation that failed or did
  not finish in time (the message is on stderr); 2 usage error; 130 interrupted
  (Ctrl-C; the usual way to stop `cluster watch`; stderr says how to resume).

completion:
  source <(zsctl completion bash)
"""

# -- parser ----------------------------------------------------------------------------------


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds: {text!r}")
    return value


def _page_size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 0 <= value <= 1000:
        raise argparse.ArgumentTypeError(f"must be 0..1000 (0: the server's default): {text!r}")
    return value


def _revision(text: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise argparse.ArgumentTypeError(f"not a revision (a whole number, 0 or more): {text!r}")
    return int(text)


def _vf_count(text: str) -> int:
    # SR-IOV counts VFs in 16 bits; which count a PF takes is the server's to say.
    if not (text.isascii() and text.isdigit()) or int(text) > 0xFFFF:
        raise argparse.ArgumentTypeError(f"not a VF count (a whole number, 0 to 65535): {text!r}")
    return int(text)


def _label_change(text: str) -> LabelChange:
    """``key=value`` sets, ``key-`` removes (kubectl's syntax). Which keys and values are
    allowed is the server's to say; its error names the offending label."""
    key, equals, value = text.partition("=")
    if equals and key:
        return LabelChange(key=key, value=value)
    if not equals and len(text) > 1 and text.endswith("-"):
        return LabelChange(key=text[:-1], value=None)
    raise argparse.ArgumentTypeError(f"{text!r} is neither KEY=VALUE (set a label) nor KEY- (remove one)")


class _DistinctLabels(argparse.Action):
    """Refuses a key named twice: which of the two should win is anyone's guess."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        assert isinstance(values, list)  # nargs="+" of _label_change results
        changes: list[LabelChange] = values
        keys: set[str] = set()
        for change in changes:
            if change.key in keys:
                raise argparse.ArgumentError(self, f"label {change.key!r} is named more than once")
            keys.add(change.key)
        setattr(namespace, self.dest, changes)


def _global_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """Options accepted before the noun and, for convenience, after the verb too.

    On the sub-commands their defaults are suppressed so that an option given before
    the noun is not reset by the sub-command's parse.
    """

    def default(value: object) -> object:
        return argparse.SUPPRESS if suppress else value

    group = parser.add_argument_group("connection and output")
    group.add_argument(
        "--endpoint", metavar="E", default=default(None), help=f"server endpoint (${ENDPOINT_ENV})"
    )
    group.add_argument("-o", "--output", choices=FORMATS, default=default("table"), help="output format")
    group.add_argument(
        "--timeout",
        type=_positive_seconds,
        metavar="SECONDS",
        default=default(None),
        help=f"deadline of each call (default {DEFAULT_TIMEOUT:g}; a watch: none)",
    )
    for flag, env, what in (
        ("--ca", CA_ENV, "CA bundle"),
        ("--cert", CERT_ENV, "client certificate"),
        ("--key", KEY_ENV, "client key"),
    ):
        action = group.add_argument(
            flag, metavar="FILE", default=default(None), help=f"TLS {what}, PEM (${env})"
        )
        action.complete = _FILE_COMPLETION  # type: ignore[attr-defined]
    group.add_argument(
        "--tls-server-name",
        metavar="NAME",
        default=default(None),
        help="name expected in the server certificate",
    )
    group.add_argument(
        "--insecure", action="store_true", default=default(False), help="allow plain TCP without TLS"
    )


def build_parser() -> argparse.ArgumentParser:
    """The whole command line; leaves carry ``handler`` (or ``completion``) in their defaults."""
    parser = argparse.ArgumentParser(
        prog="zsctl",
        description="Client of the zsd API: hosts, the cluster, operations, storage and VMs.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"zsctl {__version__}")
    _global_options(parser, suppress=False)
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common, suppress=True)

    nouns = parser.add_subparsers(dest="noun", metavar="NOUN", required=True)

    def noun(name: str, help_text: str) -> _Noun:
        sub = nouns.add_parser(name, help=help_text, description=help_text)
        return _Noun(verbs=sub.add_subparsers(dest="verb", metavar="VERB", required=True), common=common)

    _host_commands(noun("host", "hypervisor hosts"))
    _cluster_commands(noun("cluster", "the cluster as a whole"))
    _operation_commands(noun("operation", "long-running operations"))
    add_storage_nouns(noun, _operation_options)
    add_vm_noun(noun, _operation_options)
    add_policy_noun(noun)
    add_network_nouns(noun)
    add_secgroup_noun(noun)

    completion = nouns.add_parser(
        "completion", help="print a shell completion script", description="print a shell completion script"
    )
    completion.add_argument("shell", choices=COMPLETION_SHELLS)
    completion.set_defaults(completion=True)
    return parser


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Noun:
    """The verbs of one noun; every verb also takes the global options (``common``)."""

    verbs: argparse._SubParsersAction[argparse.ArgumentParser]
    common: argparse.ArgumentParser

    def verb(self, name: str, help_text: str, handler: Handler) -> argparse.ArgumentParser:
        leaf = self.verbs.add_parser(name, help=help_text, description=help_text, parents=[self.common])
        leaf.set_defaults(handler=handler)
        return leaf


def _host_commands(hosts: _Noun) -> None:
    listing = hosts.verb("list", "list the hosts of the cluster", cmd_host_list)
    _page_size_option(listing)
    _consistent_option(listing)
    show = hosts.verb("show", "show one host", cmd_host_show)
    _host_name_argument(show, default_self=True)
    _consistent_option(show)
    refresh = hosts.verb("refresh", "re-collect a host's inventory and show it", cmd_host_refresh)
    _host_name_argument(refresh, default_self=True)
    _operation_options(refresh)

    label = hosts.verb("label", "set or remove labels of a host and show it", cmd_host_label)
    label.formatter_class = argparse.RawDescriptionHelpFormatter
    label.epilog = (
        "Only the keys named change; other labels stay as they are.\n\n"
        "example:\n  zsctl host label node1 rack=r12 zone=a gpu-"
    )
    _host_name_argument(label, default_self=False)
    label.add_argument(
        "changes",
        nargs="+",
        type=_label_change,
        action=_DistinctLabels,
        metavar="KEY=VALUE|KEY-",
        help="KEY=VALUE sets a label, KEY- removes it",
    )
    label.add_argument(
        "--etag",
        metavar="ETAG",
        help="change only if the host's etag (see host show) is still this; otherwise fail (ABORTED)",
    )
    _request_id_option(label)

    set_vfs = hosts.verb(
        "set-vfs", "set how many SR-IOV VFs a PF has enabled (0: none) and show the PF", cmd_host_set_vfs
    )
    set_vfs.epilog = (
        "The host must be the one serving the call (reach another with --endpoint). A different "
        "non-zero count goes through 0, as the kernel requires: the PF's VFs are made anew."
    )
    set_vfs.add_argument("address", metavar="ADDRESS", help='the PF, "DDDD:BB:SS.F" as `host show` lists it')
    set_vfs.add_argument(
        "count", type=_vf_count, metavar="COUNT", help="VFs to have enabled, 0 up to the PF's total_vfs"
    )
    set_vfs.add_argument(
        "--host",
        default="hosts/-",
        metavar="H",
        help='"node1" or "hosts/node1" (default: the host that serves the call)',
    )

    remove = hosts.verb("remove", "remove a host from the cluster", cmd_host_remove)
    _host_name_argument(remove, default_self=False)
    remove.add_argument(
        "--force", action="store_true", help="remove even though VMs still run there (they are left to HA)"
    )
    _operation_options(remove)


def _cluster_commands(cluster: _Noun) -> None:
    cluster.verb("show", "show the cluster, its members and leader", cmd_cluster_show)
    watch = cluster.verb(
        "watch",
        "print resource changes as they commit, until stopped (Ctrl-C) or the server ends the stream",
        cmd_cluster_watch,
    )
    watch.add_argument(
        "--from-revision",
        type=_revision,
        default=0,
        metavar="N",
        help="changes after revision N (default 0: every resource as it is now, then changes)",
    )
    watch.add_argument(
        "--collection",
        dest="collections",
        action="append",
        metavar="C",
        help='watch only this collection, e.g. "hosts"; repeatable (default: all)',
    )


def _operation_commands(operations: _Noun) -> None:
    listing = operations.verb("list", "list operations", cmd_operation_list)
    _page_size_option(listing)
    listing.add_argument("--state", choices=_OPERATION_STATES, help="only operations in this state")
    listing.add_argument(
        "--target", metavar="T", help='only operations acting on this resource ("hosts/node1")'
    )
    for name, help_text, handler in (
        ("show", "show one operation", cmd_operation_show),
        ("wait", "wait for an operation to finish and show it", cmd_operation_wait),
        ("cancel", "ask an operation to stop", cmd_operation_cancel),
    ):
        leaf = operations.verb(name, help_text, handler)
        leaf.add_argument("name", metavar="NAME", help='"operations/ID" or "ID"')
        if name == "wait":
            _wait_limit_option(leaf)


def _host_name_argument(leaf: argparse.ArgumentParser, *, default_self: bool) -> None:
    if default_self:
        leaf.add_argument(
            "name",
            nargs="?",
            default="hosts/-",
            metavar="NAME",
            help='"node1" or "hosts/node1" (default: the host that serves the call)',
        )
    else:
        leaf.add_argument("name", metavar="NAME", help='"node1" or "hosts/node1"')


def _page_size_option(leaf: argparse.ArgumentParser) -> None:
    leaf.add_argument(
        "--page-size",
        type=_page_size,
        default=0,
        metavar="N",
        help="results per call; all pages are fetched (default: the server's)",
    )


def _consistent_option(leaf: argparse.ArgumentParser) -> None:
    leaf.add_argument(
        "--consistent",
        action="store_true",
        help="read from the leader at its newest revision instead of the serving host's copy",
    )


def _request_id_option(leaf: argparse.ArgumentParser) -> None:
    leaf.add_argument("--request-id", metavar="ID", help="idempotency key (default: a new UUID)")


def _wait_limit_option(leaf: argparse.ArgumentParser) -> None:
    leaf.add_argument(
        "--timeout-op",
        type=_positive_seconds,
        metavar="SECONDS",
        default=None,
        help="give up waiting after this long (the operation keeps running)",
    )


def _operation_options(leaf: argparse.ArgumentParser) -> None:
    """For verbs that start an operation and wait for it."""
    leaf.add_argument("--no-wait", action="store_true", help="print the operation and return at once")
    _request_id_option(leaf)
    _wait_limit_option(leaf)


def completion_script(parser: argparse.ArgumentParser, shell: str) -> str:
    import shtab

    script: str = shtab.complete(parser, shell=shell)
    return script if script.endswith("\n") else script + "\n"


# -- main ------------------------------------------------------------------------------------


def main(
    argv: Sequence[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    poll: float = DEFAULT_POLL,
    now: Clock | None = None,
) -> int:
    """Run one command and return the exit status (0 ok, 1 API error, 2 usage).

    The keyword arguments replace the process environment, streams, the wait-loop
    poll interval and the clock (for tests and embedding).
    """
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    try:
        code = _main(argv, env=os.environ if env is None else env, out=out, err=err, poll=poll, now=now)
        out.flush()
    except BrokenPipeError:
        # The reader went away (``zsctl ... | head``): stop quietly, and keep Python from
        # complaining again when it flushes stdout at exit.
        if out is sys.stdout:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return 1
    return code


def _main(
    argv: Sequence[str] | None,
    *,
    env: Mapping[str, str],
    out: TextIO,
    err: TextIO,
    poll: float,
    now: Clock | None,
) -> int:
    parser = build_parser()
    try:
        args = _parse(parser, argv, out, err)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 2
    # Refuse before calling anything: a mutation whose result cannot be printed is worse.
    feature, module, package = (
        ("completion", "shtab", "shtab")
        if getattr(args, "completion", False)
        else ("-o yaml", "yaml", "pyyaml")
    )
    if (feature == "completion" or args.output == "yaml") and importlib.util.find_spec(module) is None:
        err.write(f"error: {feature} needs the {module} module (pip install {package})\n")
        return 1
    if getattr(args, "completion", False):
        out.write(completion_script(parser, args.shell))
        return 0
    options = ConnectOptions(
        endpoint=args.endpoint,
        ca=args.ca,
        cert=args.cert,
        key=args.key,
        server_name=args.tls_server_name,
        insecure=args.insecure,
    )
    try:
        endpoint = resolve_endpoint(options, env)
        channel = open_channel(endpoint)
    except EndpointError as e:
        err.write(f"{parser.prog}: error: {e}\n")
        return 2
    console = Console(
        out=out,
        err=err,
        fmt=args.output,
        err_tty=_isatty(err),
        poll=poll,
        now=now or (lambda: datetime.datetime.now(datetime.UTC)),
    )
    with channel:
        api = Api.over(channel, timeout=args.timeout or DEFAULT_TIMEOUT, stream_timeout=args.timeout)
        return run_command(args.handler, args, api, console, endpoint)


def run_command(
    handler: Handler, args: argparse.Namespace, api: Api, console: Console, endpoint: Endpoint
) -> int:
    """Run a handler; every failure becomes one line on stderr and exit 1, never a traceback."""
    try:
        return handler(args, api, console)
    except grpc.RpcError as e:
        console.error(rpc_error_line(e, endpoint, api.timeout))
    except Interrupted as e:
        console.error(f"interrupted: {e}")
        return 130
    except CommandError as e:
        console.error(f"error: {e}")
    except KeyboardInterrupt:
        console.error("interrupted")
        return 130
    return 1


def rpc_error_line(error: grpc.RpcError, endpoint: Endpoint, timeout: float) -> str:
    """The server's own message when it sent one; else what went wrong reaching it."""
    decoded, from_server = decode_rpc_error(error)
    if from_server:
        return decoded.line()
    if decoded.code == "UNAVAILABLE":
        return f"error: cannot reach zsd at {endpoint.display}: {decoded.message}"
    if decoded.code == "DEADLINE_EXCEEDED":
        return f"error: zsd at {endpoint.display} did not answer within {timeout:g}s"
    return decoded.line()


def _parse(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None, out: TextIO, err: TextIO
) -> argparse.Namespace:
    # argparse writes help and usage errors to sys.stdout/sys.stderr; point them at ours.
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err
    try:
        return parser.parse_args(argv)
    finally:
        sys.stdout, sys.stderr = saved


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


if __name__ == "__main__":
    sys.exit(main())
