"""The standard gRPC health check against one zsd endpoint, answered as a word."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def check_health(endpoint: str, *, timeout: float = 2.0) -> str:
    """``SERVING``/``NOT_SERVING``/... from the server, or the gRPC status code name
    (``UNAVAILABLE``, ``DEADLINE_EXCEEDED`` for a stopped process, ...)."""
    with grpc.insecure_channel(endpoint, options=[("grpc.enable_http_proxy", 0)]) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        except grpc.RpcError as e:
            code = e.code() if isinstance(e, grpc.Call) else None
            return code.name if code is not None else "ERROR"
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))
