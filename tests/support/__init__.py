"""What the tests share and that is not a test: servers, clients, nodes and assertions.

- :mod:`~tests.support.servers`: free ports, server processes, the type of the ``serve`` fixture;
- :mod:`~tests.support.rawclient`: a raw websocket client that sends and reports every frame;
- :mod:`~tests.support.nodes`: several nodes of one app in the test process, on a real backend;
- :mod:`~tests.support.gunicorn_harness`: a real gunicorn and clients of ``tests.apps.groups_app``;
- :mod:`~tests.support.redis_server`: the shared Redis on 6379, or a private one to kill and pause;
- :mod:`~tests.support.liveserver`: ``tests.apps.conformance_app`` in a ``python -m wsframe run`` process;
- :mod:`~tests.support.checks`: assertions shared by the conformance and fuzz tests.

The apps these serve live in ``tests/apps/``.
"""
