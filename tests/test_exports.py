"""The public API: the top-level names, and __all__ everywhere."""

from __future__ import annotations

import importlib
import pkgutil

import wsframe
import wsframe.websocket

CONTRACT = {
    "create_app",
    "GenericWebsocket",
    "send_message_to_websocket",
    "close_websocket_connection",
    "status",
}


def test_design_contract_names_are_exported_at_the_top() -> None:
    assert set(wsframe.__all__) >= CONTRACT


def test_seed_import_paths_work() -> None:
    from wsframe import status as top_status
    from wsframe.status import WS_1000_NORMAL_CLOSURE
    from wsframe.websocket import GenericWebsocket, close_websocket_connection, send_message_to_websocket

    assert GenericWebsocket is wsframe.GenericWebsocket
    assert send_message_to_websocket is wsframe.send_message_to_websocket
    assert close_websocket_connection is wsframe.close_websocket_connection
    assert top_status.WS_1000_NORMAL_CLOSURE == 1000
    assert WS_1000_NORMAL_CLOSURE == 1000


def test_every_top_level_name_comes_from_a_module_that_exports_it() -> None:
    for name in wsframe.__all__:
        obj = getattr(wsframe, name)
        if name == "status":
            continue
        module = importlib.import_module(obj.__module__)
        assert name in module.__all__, f"{name} is not in {module.__name__}.__all__"


def test_every_module_declares_all() -> None:
    for info in pkgutil.walk_packages(wsframe.__path__, "wsframe."):
        module = importlib.import_module(info.name)
        assert hasattr(module, "__all__"), info.name
        for name in module.__all__:
            assert hasattr(module, name), f"{info.name}.__all__ names missing {name}"


def test_stats_api_is_exported_at_the_top() -> None:
    from wsframe.snapshot import WorkerStats, stats

    assert wsframe.stats is stats
    assert wsframe.WorkerStats is WorkerStats
