"""wsframe.stats(app) and the /metrics endpoint in one process: what each figure counts."""

from __future__ import annotations

import asyncio
import json
import re
import sys

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

import wsframe
from tests.support.servers import ROOT, Serve
from wsframe import ConfigurationError, GenericWebsocket, MissingDependencyError, create_app
from wsframe.backends.redis import RedisBackendStats
from wsframe.snapshot import backend_counters

SERIES = {
    "wsframe_connections": "gauge",
    "wsframe_connections_opened": "counter",
    "wsframe_connections_closed": "counter",
    "wsframe_handshakes_refused": "counter",
    "wsframe_messages_received": "counter",
    "wsframe_messages_sent": "counter",
    "wsframe_bytes_received": "counter",
    "wsframe_bytes_sent": "counter",
    "wsframe_slow_consumers": "counter",
    "wsframe_backend_outages": "counter",
    "wsframe_backend_publish_failures": "counter",
    "wsframe_messages_possibly_lost": "counter",
    "wsframe_messages_unrouted": "counter",
    "wsframe_group_members": "gauge",
}
"""Every series name of the contract (counters without their ``_total``) and its type."""


class Echo(GenericWebsocket):
    async def connect(self) -> None:
        await self.accept()
        await self.join_group("everyone")

    async def receive(self, data: str) -> None:
        if data == "flood":
            await self.send("f" * (8 << 20))
            await self.send("too much")
        else:
            await self.send(data)


def echo_app(**options: object) -> aiohttp.web.Application:
    return create_app(
        {"echo/": Echo},
        allowed_origins=["http://good.example"],
        max_outbound_buffer=1 << 20,
        **options,  # type: ignore[arg-type]
    )


async def scrape(client: aiohttp.test_utils.TestClient, path: str = "/metrics") -> dict[str, dict[str, float]]:
    """Family name -> {sample name with its labels: value}."""
    response = await client.get(path)
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    families: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(await response.text()):
        samples = families.setdefault(family.name, {})
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}"] = sample.value
    return families


async def until_finished(app: aiohttp.web.Application, closed: int) -> None:
    for _ in range(500):
        if sum(wsframe.stats(app).closed.values()) >= closed:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{closed} connection(s) never finished: {wsframe.stats(app)}")


async def test_stats_counts_messages_and_bytes_each_way(serve: Serve) -> None:
    app = echo_app()
    client = await serve(app)
    async with client.ws_connect("/echo/") as ws:
        for text in ("a", "bb", "ccc"):
            await ws.send_str(text)
            assert await ws.receive_str() == text
        snapshot = wsframe.stats(app)
    assert (snapshot.messages_received, snapshot.messages_sent) == (3, 3)
    assert snapshot.bytes_received == 6 + 3 * 6  # a client frame: a 2-byte header and a 4-byte mask
    assert snapshot.bytes_sent == 6 + 3 * 2  # a 2-byte frame header each


async def test_stats_counts_open_connections_by_route_and_group_members(serve: Serve) -> None:
    app = echo_app()
    client = await serve(app)
    async with client.ws_connect("/echo/") as first, client.ws_connect("/echo/") as second:
        await first.send_str("x")
        await second.send_str("x")
        await first.receive_str()
        await second.receive_str()
        snapshot = wsframe.stats(app)
    assert snapshot.connections == 2
    assert snapshot.connections_by_route == {"/echo/": 2}
    assert snapshot.group_members == 2
    assert snapshot.opened == 2


async def test_stats_keeps_the_counts_of_connections_that_ended(serve: Serve) -> None:
    app = echo_app()
    client = await serve(app)
    async with client.ws_connect("/echo/") as ws:
        await ws.send_str("hello")
        await ws.receive_str()
    await until_finished(app, 1)
    snapshot = wsframe.stats(app)
    assert snapshot.connections == 0
    assert snapshot.closed == {1000: 1}
    assert (snapshot.messages_received, snapshot.messages_sent, snapshot.opened) == (1, 1, 1)


async def test_stats_counts_refused_handshakes_by_reason(serve: Serve) -> None:
    app = echo_app()
    client = await serve(app)
    for _ in range(2):
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await client.ws_connect("/echo/", origin="http://evil.example")
    assert wsframe.stats(app).refused == {"origin": 2}


async def test_stats_counts_a_slow_consumer_closed_with_1013(serve: Serve) -> None:
    app = echo_app()
    client = await serve(app)
    async with client.ws_connect("/echo/", max_msg_size=0) as ws:
        await ws.send_str("flood")
        while (await ws.receive()).type is aiohttp.WSMsgType.TEXT:
            pass
    await until_finished(app, 1)
    snapshot = wsframe.stats(app)
    assert snapshot.slow_consumers_closed == 1
    assert snapshot.closed == {1013: 1}


async def test_stats_counts_a_slow_consumer_in_drop_mode_and_its_dropped_messages(serve: Serve) -> None:
    app = echo_app(slow_consumer="drop")
    client = await serve(app)
    async with client.ws_connect("/echo/", max_msg_size=0) as ws:
        await ws.send_str("flood")
        assert len(await ws.receive_str(timeout=10)) == 8 << 20
        snapshot = wsframe.stats(app)
    assert snapshot.slow_consumers_dropping == 1
    assert snapshot.messages_dropped == 1


class Room(GenericWebsocket):
    async def connect(self, room: int) -> None:
        await self.accept()


async def test_stats_counts_a_path_variable_that_does_not_convert_as_not_found(serve: Serve) -> None:
    app = create_app({"room/<room>/": Room})
    client = await serve(app)
    with pytest.raises(aiohttp.WSServerHandshakeError):
        await client.ws_connect("/room/abc/")
    assert wsframe.stats(app).refused == {"not_found": 1}


def test_stats_without_a_running_app_raises_application_not_found() -> None:
    with pytest.raises(wsframe.ApplicationNotFoundError):
        wsframe.stats()


def test_backend_counters_include_fields_and_properties_of_the_backend_stats() -> None:
    counters = backend_counters(RedisBackendStats(publish_failures=2, unrouted=3, outages=1))
    assert counters["publish_failures"] == 2
    assert counters["possibly_lost"] == 5
    assert counters["outages"] == 1


async def test_metrics_endpoint_serves_every_series_of_the_contract(serve: Serve) -> None:
    app = echo_app(metrics=True)
    client = await serve(app)
    async with client.ws_connect("/echo/") as ws:
        await ws.send_str("hello")
        await ws.receive_str()
        families = await scrape(client)
    missing = {name for name in SERIES if name not in families}
    assert not missing
    assert families["wsframe_connections"]["wsframe_connections{route=/echo/}"] == 1
    assert families["wsframe_messages_received"]["wsframe_messages_received_total{}"] == 1
    assert families["wsframe_messages_sent"]["wsframe_messages_sent_total{}"] == 1
    assert families["wsframe_backend_outages"]["wsframe_backend_outages_total{}"] == 0


async def test_metrics_endpoint_counts_refusals_and_closes_with_their_labels(serve: Serve) -> None:
    app = echo_app(metrics=True)
    client = await serve(app)
    with pytest.raises(aiohttp.WSServerHandshakeError):
        await client.ws_connect("/echo/", origin="http://evil.example")
    async with client.ws_connect("/echo/") as ws:
        await ws.send_str("x")
        await ws.receive_str()
    await until_finished(app, 1)
    families = await scrape(client)
    assert families["wsframe_handshakes_refused"]["wsframe_handshakes_refused_total{reason=origin}"] == 1
    assert families["wsframe_connections_closed"]["wsframe_connections_closed_total{code=1000}"] == 1
    assert families["wsframe_connections"]["wsframe_connections{route=/echo/}"] == 0


async def test_counters_do_not_grow_between_scrapes_without_traffic(serve: Serve) -> None:
    app = echo_app(metrics=True)
    client = await serve(app)
    async with client.ws_connect("/echo/") as ws:
        await ws.send_str("x")
        await ws.receive_str()
        first = await scrape(client)
        second = await scrape(client)
    assert first["wsframe_messages_sent"] == second["wsframe_messages_sent"]


async def test_metrics_can_be_served_at_another_path(serve: Serve) -> None:
    client = await serve(echo_app(metrics="/internal/prometheus"))
    assert "wsframe_connections" in await scrape(client, "/internal/prometheus")
    assert (await client.get("/metrics")).status == 404


async def test_metrics_off_by_default(serve: Serve) -> None:
    client = await serve(echo_app())
    assert (await client.get("/metrics")).status == 404


@pytest.mark.parametrize("bad", ["metrics", "", 3])
def test_metrics_path_must_start_with_a_slash(bad: object) -> None:
    with pytest.raises(ConfigurationError, match="metrics must be"):
        echo_app(metrics=bad)


def test_metrics_without_prometheus_client_names_the_install_line(monkeypatch: pytest.MonkeyPatch) -> None:
    # An entry of None in sys.modules makes `import prometheus_client` fail as if it were not installed.
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(MissingDependencyError, match=re.escape("pip install 'wsframe[metrics]'")):
        echo_app(metrics=True)


def test_grafana_dashboard_queries_only_series_the_endpoint_exports() -> None:
    dashboard = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text())
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    used = {name for expression in expressions for name in re.findall(r"\bwsframe_[a-z_]+", expression)}
    exported = set(SERIES) | {f"{name}_total" for name, kind in SERIES.items() if kind == "counter"}
    assert used <= exported, used - exported
    for name in ("wsframe_connections", "wsframe_messages_possibly_lost_total", "wsframe_slow_consumers_total"):
        assert name in used


def test_deployment_docs_describe_every_series() -> None:
    text = (ROOT / "docs" / "deployment.md").read_text()
    assert [name for name in SERIES if f"`{name}" not in text] == []


async def test_a_pong_is_not_counted_as_a_message_sent(serve: Serve) -> None:
    app = echo_app()
    client = await serve(app)
    async with client.ws_connect("/echo/", autoping=False) as ws:
        await ws.ping(b"are you there")
        assert (await ws.receive(timeout=5)).type is aiohttp.WSMsgType.PONG
        snapshot = wsframe.stats(app)
    assert snapshot.messages_sent == 0
    assert snapshot.bytes_sent == 2 + len(b"are you there")
