"""Where the IPC backend's sockets live: the runtime directory, its sweep, and gunicorn detection.

Under gunicorn (``SERVER_SOFTWARE`` says ``gunicorn/...``) every worker uses
``<runtime base>/gunicorn-<master pid>``, which the master pid makes shared
by the workers of one gunicorn and private to it, with or without
``--preload``. Elsewhere the directory is made when the backend is created,
so processes forked afterwards share it; or one is given explicitly.
Directories of dead masters are swept at startup.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import shutil
import socket
import stat
import tempfile
from pathlib import Path

from ..._ids import is_node_id
from ...exceptions import ConfigurationError

__all__ = [
    "in_gunicorn",
    "runtime_base",
    "sweep",
    "new_directory",
    "resolve_directory",
    "remove_directory",
    "listening_socket",
    "node_ids_in",
]

logger = logging.getLogger("wsframe.backends.ipc")

_OWNED_DIR = re.compile(r"(?:gunicorn-)?(\d+)(?:-[0-9a-f]+)?")


def in_gunicorn() -> bool:
    """Return whether this process is a gunicorn master or worker (gunicorn sets ``SERVER_SOFTWARE``)."""
    return os.environ.get("SERVER_SOFTWARE", "").startswith("gunicorn/")


def runtime_base() -> Path:
    """Return the private folder that holds wsframe's per-app socket directories.

    ``$XDG_RUNTIME_DIR/wsframe`` when that is set, else ``<tmp>/wsframe-<uid>``.
    Created with mode 0700; raises :class:`~wsframe.exceptions.ConfigurationError`
    when it exists but is not a directory owned by this user (another user
    could otherwise read or plant sockets).
    """
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    base = (
        Path(xdg) / "wsframe" if xdg and os.path.isdir(xdg) else Path(tempfile.gettempdir()) / f"wsframe-{os.getuid()}"
    )
    _private_dir(base)
    return base


def _private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, exist_ok=True)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise ConfigurationError(
            f"{path} must be a directory owned by uid {os.getuid()} with mode 0700 for wsframe's worker sockets; "
            "remove it, or pass backend='ipc:///some/private/dir'."
        )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _has_live_socket(directory: Path) -> bool:
    for path in directory.glob("*.sock"):
        with socket.socket(socket.AF_UNIX) as probe:
            probe.settimeout(0.1)
            try:
                probe.connect(str(path))
            except OSError:
                continue
            return True
    return False


def sweep(base: Path) -> None:
    """Remove directories whose owning process (master or creator) is gone and where nobody listens.

    The socket check matters when the base is shared across pid namespaces
    (containers with a common /tmp), where a live master's pid looks dead.
    """
    for entry in base.iterdir():
        match = _OWNED_DIR.fullmatch(entry.name)
        if match and not _pid_alive(int(match.group(1))) and not _has_live_socket(entry):
            logger.debug("removing %s: the process that made it is gone", entry)
            shutil.rmtree(entry, ignore_errors=True)


def new_directory(creator: int) -> Path:
    """Make and return a fresh private directory for the processes *creator* (a pid) will fork.

    Sweeps the runtime base first. Raises
    :class:`~wsframe.exceptions.ConfigurationError` when the base is unsafe.
    """
    base = runtime_base()
    sweep(base)
    directory = base / f"{creator}-{secrets.token_hex(4)}"
    directory.mkdir(mode=0o700)
    return directory


def resolve_directory(explicit: Path | None, made: Path | None) -> Path:
    """Return the directory this node's socket goes in, made if missing (see the module docstring).

    *explicit* is the directory the user gave, *made* the one
    :func:`new_directory` made at construction. Raises
    :class:`~wsframe.exceptions.ConfigurationError` when there is none, or
    ``FileExistsError`` when *explicit* is a file.
    """
    if explicit is not None:
        explicit.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not explicit.is_dir():  # pragma: no cover - mkdir(exist_ok) raises first for files
            raise ConfigurationError(f"{explicit} is not a directory")
        return explicit
    if in_gunicorn():
        # Workers are children of the gunicorn master: its pid names the
        # one directory all of them share, with or without --preload.
        base = runtime_base()
        sweep(base)
        directory = base / f"gunicorn-{os.getppid()}"
        directory.mkdir(mode=0o700, exist_ok=True)
        return directory
    if made is None:  # pragma: no cover - made at construction whenever not under gunicorn
        raise ConfigurationError("the IPC backend has no directory")
    made.mkdir(mode=0o700, exist_ok=True)
    return made


def remove_directory(creator: int, explicit: Path | None, made: Path | None) -> None:
    """At exit of the process *creator*, remove the directory it made or its gunicorn workers shared.

    Does nothing in any other process (forked children inherit atexit
    handlers) and for an *explicit* directory; never raises.
    """
    if os.getpid() != creator:
        return
    if made is not None:
        shutil.rmtree(made, ignore_errors=True)
    elif explicit is None and in_gunicorn():
        # Built in the gunicorn master (--preload): its workers used
        # gunicorn-<this pid>; remove what killed workers left behind.
        with contextlib.suppress(ConfigurationError):  # the base was made unsafe since startup
            shutil.rmtree(runtime_base() / f"gunicorn-{creator}", ignore_errors=True)


def listening_socket(path: Path) -> socket.socket:
    """Return a Unix socket already listening at *path*, which appears only once it listens.

    Bound and listening under a temporary name first, then renamed into place
    (atomic): a worker that finds ``<node>.sock`` can always connect to it. A
    socket bound at its final name would be visible before listen(), and a
    peer starting at that moment would get ECONNREFUSED, take the socket for
    a dead worker's and unlink it. Raises ``OSError`` (the temporary name
    removed) when it cannot bind.
    """
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(temporary))
        os.chmod(temporary, 0o600)
        sock.listen(1024)
        os.rename(temporary, path)
    except BaseException:
        sock.close()
        temporary.unlink(missing_ok=True)
        raise
    sock.setblocking(False)
    return sock


def node_ids_in(directory: Path) -> list[str]:
    """Return the node ids with a socket in *directory* (blocking: run it in an executor)."""
    with os.scandir(directory) as entries:
        names = [entry.name[: -len(".sock")] for entry in entries if entry.name.endswith(".sock")]
    return [name for name in names if is_node_id(name)]
