"""Where wsframe's records go when gunicorn's error log is set up in this process: real loggers, restored after."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from wsframe._logs import adopt_gunicorn_error_log

GUNICORN_FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s"


@pytest.fixture
def loggers() -> Iterator[tuple[logging.Logger, logging.Logger, logging.Logger]]:
    """(root, "wsframe", "gunicorn.error") as they are, put back as they were afterwards (see :func:`bare`)."""
    picked = [logging.getLogger(), logging.getLogger("wsframe"), logging.getLogger("gunicorn.error")]
    saved = [(logger, list(logger.handlers), logger.level) for logger in picked]
    yield picked[0], picked[1], picked[2]
    for logger, handlers, level in saved:
        logger.handlers[:] = handlers
        logger.setLevel(level)


def bare(loggers: tuple[logging.Logger, logging.Logger, logging.Logger]) -> None:
    """Take every handler off *loggers* and the level off ``wsframe``, as in a process that configured no logging.

    Called in the test itself: pytest adds its capture handler to the root after fixtures ran.
    """
    for logger in loggers:
        logger.handlers.clear()
    loggers[1].setLevel(logging.NOTSET)


def gunicorn_error_log(gunicorn: logging.Logger, level: int = logging.INFO) -> io.StringIO:
    """Give *gunicorn* a handler in gunicorn's format and *level*, as its Logger.setup does; return the stream."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(GUNICORN_FORMAT))
    gunicorn.addHandler(handler)
    gunicorn.setLevel(level)
    return stream


def test_wsframe_records_go_through_gunicorns_handlers_at_its_level(
    loggers: tuple[logging.Logger, logging.Logger, logging.Logger],
) -> None:
    bare(loggers)
    _, ours, gunicorn = loggers
    stream = gunicorn_error_log(gunicorn)
    assert adopt_gunicorn_error_log() is True
    logging.getLogger("wsframe.websocket").info("refused handshake")
    logging.getLogger("wsframe.websocket").debug("not at info")
    assert stream.getvalue().endswith("[INFO] refused handshake\n")
    assert stream.getvalue().count("\n") == 1
    assert ours.level == logging.INFO


def test_gunicorns_debug_level_is_wsframes_too(loggers: tuple[logging.Logger, logging.Logger, logging.Logger]) -> None:
    bare(loggers)
    _, ours, gunicorn = loggers
    gunicorn_error_log(gunicorn, logging.DEBUG)
    adopt_gunicorn_error_log()
    assert ours.getEffectiveLevel() == logging.DEBUG


def test_outside_gunicorn_nothing_changes(loggers: tuple[logging.Logger, logging.Logger, logging.Logger]) -> None:
    bare(loggers)
    _, ours, _ = loggers
    assert adopt_gunicorn_error_log() is False
    assert (ours.handlers, ours.level) == ([], logging.NOTSET)


def test_an_app_that_configured_the_root_logger_is_left_alone(
    loggers: tuple[logging.Logger, logging.Logger, logging.Logger],
) -> None:
    bare(loggers)
    root, ours, gunicorn = loggers
    gunicorn_error_log(gunicorn)
    root.addHandler(logging.StreamHandler(io.StringIO()))
    assert adopt_gunicorn_error_log() is False
    assert (ours.handlers, ours.level) == ([], logging.NOTSET)


def test_an_app_that_gave_wsframe_a_handler_is_left_alone(
    loggers: tuple[logging.Logger, logging.Logger, logging.Logger],
) -> None:
    bare(loggers)
    _, ours, gunicorn = loggers
    gunicorn_error_log(gunicorn)
    own = logging.NullHandler()
    ours.addHandler(own)
    assert adopt_gunicorn_error_log() is False
    assert ours.handlers == [own]


def test_a_level_the_app_gave_wsframe_is_kept(loggers: tuple[logging.Logger, logging.Logger, logging.Logger]) -> None:
    bare(loggers)
    _, ours, gunicorn = loggers
    gunicorn_error_log(gunicorn)
    ours.setLevel(logging.WARNING)
    assert adopt_gunicorn_error_log() is True
    assert ours.level == logging.WARNING


def test_adopting_twice_adds_the_handlers_once(loggers: tuple[logging.Logger, logging.Logger, logging.Logger]) -> None:
    bare(loggers)
    _, ours, gunicorn = loggers
    gunicorn_error_log(gunicorn)
    adopt_gunicorn_error_log()
    assert adopt_gunicorn_error_log() is False
    assert ours.handlers == gunicorn.handlers
