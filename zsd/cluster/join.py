"""``zsd cluster join``: make this host a member of the cluster on shared storage.

The joiner needs the shared storage mounted (sanlock needs it anyway), so it
finds everything there: the cluster (``cluster.json``), the CA, and where the
leader listens (``leader.json``). It checks that the CA is the one the token pins
(a wrong directory is caught before anything is sent), makes its own key and a
certificate signing request, and asks the leader (PeerService.Join) to admit it.

The leader's listener takes only callers with a certificate of the cluster CA,
and this host has none yet: it presents a join certificate it mints with the CA
key, which lets it call Join and nothing else. The token is what admits it.

Leaders change and ``leader.json`` may be stale or missing for a while, so the
call is retried, re-reading the hint, until the timeout. A retry sends the same
key and identity, so a join whose answer was lost is answered again, not done
twice. Nothing is written unless the join succeeded (except this host's identity
file, which must be stable across those retries); the membership file is written
last.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from zsd.api.status import from_rpc_error
from zsd.cluster import pki
from zsd.cluster.bootstrap import (
    Membership,
    SharedLayout,
    load_ca,
    load_cluster_info,
    load_membership,
    membership_path,
    write_member_files,
)
from zsd.cluster.identity import host_identity
from zsd.cluster.leaderhint import LeaderHint, read_hint
from zsd.errors import (
    AlreadyExists,
    Conflict,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    Unavailable,
    ZsdError,
)
from zsd.paths import Paths
from zsd.peer.v1 import peer_pb2, peer_pb2_grpc

log = logging.getLogger(__name__)

ATTEMPT_TIMEOUT = 10.0
"""Seconds one Join call may take (the leader signs and commits once)."""
RETRY_DELAY = 1.0


@dataclass(frozen=True, kw_only=True)
class JoinSpec:
    shared_dir: Path
    token: str
    host_name: str
    address: str
    timeout: float = 60.0
    """Seconds to keep trying while no leader answers."""


@dataclass(frozen=True, kw_only=True)
class JoinResult:
    host_id: int
    cluster_uid: str
    cluster_name: str
    leader: str
    """The host name of the leader that admitted this host."""


JoinCall = Callable[[LeaderHint, pki.KeyPair, bytes, peer_pb2.JoinRequest, float], peer_pb2.JoinResponse]
"""(leader hint, join certificate, CA certificate, request, timeout) -> response;
raises ZsdError. :func:`call_join` is the real one."""


def call_join(
    hint: LeaderHint, join_cert: pki.KeyPair, ca_pem: bytes, request: peer_pb2.JoinRequest, timeout: float
) -> peer_pb2.JoinResponse:
    """One PeerService.Join call to the leader the hint names, over mutual TLS."""
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca_pem, private_key=join_cert.key_pem, certificate_chain=join_cert.cert_pem
    )
    # Host certificates name the host (DNS SAN); the endpoint is only where it is now.
    options = [("grpc.ssl_target_name_override", hint.host_name), ("grpc.enable_http_proxy", 0)]
    with grpc.secure_channel(hint.endpoint, credentials, options=options) as channel:
        stub = peer_pb2_grpc.PeerServiceStub(channel)
        try:
            response: peer_pb2.JoinResponse = stub.Join(request, timeout=timeout, wait_for_ready=False)
        except grpc.RpcError as e:
            if not isinstance(e, grpc.Call):  # what a stub raises always is one
                raise Unavailable(f"the call to {hint.host_name} failed: {e}") from e
            raise from_rpc_error(e.code(), e.details() or "", e.trailing_metadata() or ()) from e
        return response


def join_cluster(
    spec: JoinSpec,
    *,
    paths: Paths,
    call: JoinCall = call_join,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    progress: Callable[[str], None] = lambda _line: None,
) -> JoinResult:
    """Joins the cluster in ``spec.shared_dir``; the host is a member once this returns."""
    if load_membership(paths) is not None:
        raise AlreadyExists(
            f"this host is already a cluster member ({membership_path(paths)}); "
            "remove it from that cluster first",
            field="host",
        )
    if not spec.address:
        raise InvalidArgument(
            "a joining host needs host.address: the IP address other hosts reach it at", field="host.address"
        )
    layout = SharedLayout(root=spec.shared_dir)
    info = load_cluster_info(layout)
    token = pki.parse_join_token(spec.token)
    ca = load_ca(layout)
    _check_pin(token, info.uid, info.name, ca, layout)
    host_uid = host_identity(paths.identity_file).uid
    key_pem, csr_pem = pki.make_key_and_csr(spec.host_name, [spec.address])
    request = peer_pb2.JoinRequest(
        token=spec.token, host_name=spec.host_name, address=spec.address, csr_pem=csr_pem, host_uid=host_uid
    )
    hint, response = _call_leader(spec, ca, request, call=call, clock=clock, sleep=sleep, progress=progress)
    host = pki.KeyPair(cert_pem=response.cert_pem, key_pem=key_pem)
    _check_response(response, host=host, spec=spec, cluster_uid=info.uid, ca_pem=ca.cert_pem)
    write_member_files(
        paths,
        host=host,
        ca_pem=ca.cert_pem,
        membership=Membership(
            cluster_uid=info.uid, host_id=response.host_id, shared_dir=str(spec.shared_dir)
        ),
    )
    log.info("joined cluster %s as host %d", info.name, response.host_id)
    return JoinResult(
        host_id=response.host_id, cluster_uid=info.uid, cluster_name=info.name, leader=hint.host_name
    )


def _check_pin(token: pki.JoinToken, uid: str, name: str, ca: pki.KeyPair, layout: SharedLayout) -> None:
    if token.cluster_uid != uid:
        raise InvalidArgument(
            f"the token is for cluster {token.cluster_uid}, but {layout.root} holds cluster {name!r} "
            f"({uid}): wrong token or wrong --shared-dir",
            field="token",
        )
    if not hmac.compare_digest(token.ca_fingerprint, ca.fingerprint):
        # Same cluster, other CA: someone replaced ca.pem. Trusting it would let them
        # stand in for the leader.
        raise FailedPrecondition(
            f"{layout.ca_cert} is not the CA the token pins (sha256 {token.ca_fingerprint[:16]}..., "
            f"found {ca.fingerprint[:16]}...); refusing to join",
            reason="CA_MISMATCH",
            field="shared_dir",
        )


def _retryable(error: ZsdError) -> bool:
    # No leader (yet), a stale hint, a leader changing hands, a lost race for a host id.
    return isinstance(error, Unavailable | DeadlineExceeded) or (
        isinstance(error, Conflict) and error.reason == "CONTENDED"
    )


def _call_leader(
    spec: JoinSpec,
    ca: pki.KeyPair,
    request: peer_pb2.JoinRequest,
    *,
    call: JoinCall,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
    progress: Callable[[str], None],
) -> tuple[LeaderHint, peer_pb2.JoinResponse]:
    deadline = clock() + spec.timeout
    last: ZsdError | None = None
    while True:
        remaining = deadline - clock()
        if remaining <= 0:
            raise Unavailable(
                f"no leader admitted this host within {spec.timeout:g} s; last error: {last}",
                reason="JOIN_TIMEOUT",
            )
        try:
            hint = read_hint(spec.shared_dir)
            progress(f"asking the leader {hint.host_name} ({hint.endpoint}, epoch {hint.epoch})")
            # A join certificate per attempt: it lives 10 minutes, a join may wait longer.
            join_cert = pki.issue_join_cert(ca, spec.host_name)
            return hint, call(hint, join_cert, ca.cert_pem, request, min(ATTEMPT_TIMEOUT, remaining))
        except ZsdError as e:
            if not _retryable(e):
                raise
            if last is None or str(e) != str(last):
                progress(f"not yet: {e}")
            last = e
        sleep(min(RETRY_DELAY, max(0.0, deadline - clock())))


def _check_response(
    response: peer_pb2.JoinResponse, *, host: pki.KeyPair, spec: JoinSpec, cluster_uid: str, ca_pem: bytes
) -> None:
    """The leader answered for this cluster, with a certificate of its CA for this
    host's own key: anything else is a bug or an impostor, and nothing is written."""
    if response.cluster_uid != cluster_uid or response.ca_pem.strip() != ca_pem.strip():
        raise FailedPrecondition(
            f"the leader answered for cluster {response.cluster_uid!r}, not {cluster_uid!r} "
            "(or with another CA); nothing was written",
            reason="JOIN_MISMATCH",
        )
    try:
        name, host_id = pki.verify_host_cert(ca_pem, response.cert_pem)
        cert_key = x509.load_pem_x509_certificate(response.cert_pem).public_key()
        own_key = serialization.load_pem_private_key(host.key_pem, password=None).public_key()
    except (InvalidArgument, ValueError) as e:
        raise FailedPrecondition(
            f"the leader's certificate for this host is not valid ({e}); nothing was written",
            reason="JOIN_MISMATCH",
        ) from e
    raw = serialization.PublicFormat.SubjectPublicKeyInfo
    if (name, host_id) != (spec.host_name, response.host_id) or cert_key.public_bytes(
        serialization.Encoding.DER, raw
    ) != own_key.public_bytes(serialization.Encoding.DER, raw):
        raise FailedPrecondition(
            f"the leader's certificate names {name!r} (host {host_id}) or another key, not this host "
            f"{spec.host_name!r} (host {response.host_id}); nothing was written",
            reason="JOIN_MISMATCH",
        )
