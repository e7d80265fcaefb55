"""Router over real grpc.aio servers on loopback: a follower forwards to the leader,
returns its answer or error unchanged, waits for its own copy to catch up, retries
while no leader is known, and never forwards a forwarded call again."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import grpc
import pytest
from grpc_status import rpc_status

from zsd.api.router import FORWARDED, REVISION, LeaderView, Router
from zsd.api.status import from_rpc_error, to_rpc_status
from zsd.cluster.peerclient import PeerTarget
from zsd.cluster.store.errors import Fenced
from zsd.errors import InvalidArgument, Unavailable, ZsdError
from zsd.v1 import host_pb2

SERVICE = "test.Routed"
METHOD = f"/{SERVICE}/Do"


@dataclass
class Leader:
    """The leader's side: answers with its name and a revision, or fails as told."""

    fail: list[ZsdError] = field(default_factory=list)
    calls: list[tuple[str, bool]] = field(default_factory=list)

    async def handle(
        self, request: host_pb2.GetHostRequest, context: grpc.aio.ServicerContext
    ) -> host_pb2.Host:  # type: ignore[type-arg]
        forwarded = any(k == FORWARDED for k, _ in context.invocation_metadata() or ())
        self.calls.append((request.name, forwarded))
        if self.fail:
            status = rpc_status.to_status(to_rpc_status(self.fail.pop(0)))
            await context.abort(status.code, status.details, status.trailing_metadata)
        context.set_trailing_metadata(((REVISION, "7"),))
        return host_pb2.Host(name=request.name, zsd_version="leader")


async def serve(handler: Callable[..., Awaitable[host_pb2.Host]]) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                SERVICE,
                {
                    "Do": grpc.unary_unary_rpc_method_handler(
                        handler,
                        request_deserializer=host_pb2.GetHostRequest.FromString,
                        response_serializer=host_pb2.Host.SerializeToString,
                    )
                },
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


@dataclass
class Follower:
    view: LeaderView
    waited: list[int] = field(default_factory=list)

    def router(self) -> Router:
        channels: dict[str, grpc.aio.Channel] = {}

        def channel(target: PeerTarget) -> grpc.aio.Channel:
            if target.endpoint not in channels:
                channels[target.endpoint] = grpc.aio.insecure_channel(target.endpoint)
            return channels[target.endpoint]

        async def wait_revision(revision: int, timeout: float) -> None:
            self.waited.append(revision)

        return Router(
            leader=lambda: self.view, channel=channel, wait_revision=wait_revision, retry_interval=0.05
        )


async def call(
    follower: Follower,
    *,
    forwarded: bool = False,
    timeout: float = 5.0,
    local_fails: list[ZsdError] | None = None,
) -> tuple[host_pb2.Host, str]:
    router = follower.router()
    failures = local_fails if local_fails is not None else []

    async def handle(request: host_pb2.GetHostRequest, context: grpc.aio.ServicerContext) -> host_pb2.Host:  # type: ignore[type-arg]
        async def local() -> tuple[host_pb2.Host, int]:
            if failures:
                raise failures.pop(0)
            return host_pb2.Host(name=request.name, zsd_version="local"), 3

        try:
            return await router.call(
                context, method=METHOD, request=request, response_type=host_pb2.Host.FromString, local=local
            )
        except ZsdError as e:
            status = rpc_status.to_status(to_rpc_status(e))
            await context.abort(status.code, status.details, status.trailing_metadata)
            raise

    server, endpoint = await serve(handle)
    try:
        async with grpc.aio.insecure_channel(endpoint) as channel:
            stub = channel.unary_unary(
                METHOD,
                request_serializer=host_pb2.GetHostRequest.SerializeToString,
                response_deserializer=host_pb2.Host.FromString,
            )
            metadata = ((FORWARDED, "1"),) if forwarded else ()
            rpc = stub(host_pb2.GetHostRequest(name="hosts/x"), timeout=timeout, metadata=metadata)
            try:
                response = await rpc
            except grpc.aio.AioRpcError as e:
                raise from_rpc_error(e.code(), e.details() or "", e.trailing_metadata() or ()) from e
            trailing = dict(await rpc.trailing_metadata() or ())
            return response, str(trailing.get(REVISION, ""))
    finally:
        await server.stop(None)


def run(coro: Awaitable[object]) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


def test_the_leader_runs_the_call_itself() -> None:
    follower = Follower(LeaderView(leading=True, target=None, epoch=1))
    response, revision = run(call(follower))  # type: ignore[misc]
    assert response.zsd_version == "local" and revision == "3"


def test_a_follower_forwards_and_catches_up() -> None:
    async def scenario() -> None:
        leader = Leader()
        server, endpoint = await serve(leader.handle)
        try:
            follower = Follower(
                LeaderView(leading=False, target=PeerTarget(endpoint=endpoint, host_name="l"), epoch=1)
            )
            response, revision = await call(follower)
            assert response.zsd_version == "leader" and revision == "7"
            assert leader.calls == [("hosts/x", True)]
            assert follower.waited == [7]
        finally:
            await server.stop(None)

    run(scenario())


def test_the_leaders_error_comes_back_unchanged() -> None:
    async def scenario() -> None:
        leader = Leader(fail=[InvalidArgument("bad label", field="host.labels.x", reason="BAD_LABEL")])
        server, endpoint = await serve(leader.handle)
        try:
            follower = Follower(
                LeaderView(leading=False, target=PeerTarget(endpoint=endpoint, host_name="l"), epoch=1)
            )
            with pytest.raises(InvalidArgument) as e:
                await call(follower)
            assert (e.value.field, e.value.reason, e.value.message) == (
                "host.labels.x",
                "BAD_LABEL",
                "bad label",
            )
        finally:
            await server.stop(None)

    run(scenario())


def test_waits_for_a_leader_and_retries_one_that_stepped_down() -> None:
    async def scenario() -> None:
        leader = Leader(fail=[Unavailable("stepped down", reason="NOT_LEADER")])
        server, endpoint = await serve(leader.handle)
        try:
            follower = Follower(LeaderView(leading=False, target=None, epoch=1))

            async def elect() -> None:
                await asyncio.sleep(0.3)
                follower.view = LeaderView(
                    leading=False, target=PeerTarget(endpoint=endpoint, host_name="l"), epoch=2
                )

            task = asyncio.create_task(elect())
            response, _ = await call(follower)
            await task
            assert response.zsd_version == "leader"
            assert len(leader.calls) == 2  # the NOT_LEADER answer, then the retry
        finally:
            await server.stop(None)

    run(scenario())


def test_a_forwarded_call_is_not_forwarded_again() -> None:
    follower = Follower(
        LeaderView(leading=False, target=PeerTarget(endpoint="127.0.0.1:9", host_name="l"), epoch=1)
    )
    with pytest.raises(Unavailable) as e:
        run(call(follower, forwarded=True))
    assert e.value.reason == "NOT_LEADER"


def test_no_leader_until_the_deadline() -> None:
    follower = Follower(LeaderView(leading=False, target=None, epoch=1))
    with pytest.raises(ZsdError) as e:
        run(call(follower, timeout=0.5))
    assert e.value.reason == "NO_LEADER"


def fenced() -> Fenced:
    return Fenced("cluster.db was opened by epoch 3; epoch 2 is deposed", epoch=2, current_epoch=3)


def test_a_fenced_leader_retries_instead_of_failing() -> None:
    # It has not noticed its lease is gone; the store refused before writing.
    follower = Follower(LeaderView(leading=True, target=None, epoch=2))
    failures: list[ZsdError] = [fenced()]
    response, _ = run(call(follower, local_fails=failures))  # type: ignore[misc]
    assert response.zsd_version == "local" and failures == []


def test_a_fenced_leaders_answer_makes_the_follower_retry() -> None:
    async def scenario() -> None:
        leader = Leader(fail=[fenced()])
        server, endpoint = await serve(leader.handle)
        try:
            follower = Follower(
                LeaderView(leading=False, target=PeerTarget(endpoint=endpoint, host_name="l"), epoch=2)
            )
            response, _ = await call(follower)
            assert response.zsd_version == "leader"
            assert len(leader.calls) == 2
        finally:
            await server.stop(None)

    run(scenario())


def test_a_fenced_forwarded_call_answers_not_leader() -> None:
    follower = Follower(LeaderView(leading=True, target=None, epoch=2))
    with pytest.raises(Unavailable) as e:
        run(call(follower, forwarded=True, local_fails=[fenced()]))
    assert e.value.reason == "NOT_LEADER" and "deposed" in e.value.message
