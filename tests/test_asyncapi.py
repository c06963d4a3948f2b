"""AsyncAPI 3.0 documents from url tables: valid for the official parser, and saying what the app does.

The parser is npm's ``@asyncapi/parser``, pinned in ``tests/asyncapi/package-lock.json`` and
installed once per session with ``npm ci``. The golden file ``samples/chat/asyncapi.json`` is
the CLI's output; regenerate it with::

    python -m wsframe asyncapi samples.chat.main:app --title "Chat sample" --server 127.0.0.1:8000 \\
        > samples/chat/asyncapi.json
"""

from __future__ import annotations

import enum
import importlib.metadata
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

import msgspec
import pytest

from samples.book.main import app as book_app
from samples.chat.main import app as chat_app
from tests.support.servers import ROOT, Serve
from wsframe import GenericWebsocket, create_app
from wsframe.asyncapi import SEND_TYPE_ATTRIBUTE, asyncapi_document, encode_document
from wsframe.exceptions import ConfigurationError

PARSER = ROOT / "tests" / "asyncapi"
# npm installs the parser outside the source tree: third-party code never mixes with ours.
INSTALLED = ROOT / ".cache" / "asyncapi-parser"
GOLDEN = ROOT / "samples" / "chat" / "asyncapi.json"
GOLDEN_COMMAND = ["asyncapi", "samples.chat.main:app", "--title", "Chat sample", "--server", "127.0.0.1:8000"]


@pytest.fixture(scope="session")
def asyncapi_parser() -> Path:
    """The official parser, installed from the lock file (``npm ci``) the first time a session needs it."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail("AsyncAPI tests need Node.js and npm (Debian: apt-get install -y nodejs npm)")
    INSTALLED.mkdir(parents=True, exist_ok=True)
    files = ("package.json", "package-lock.json", "validate.mjs")
    stale = any(
        not (INSTALLED / f).is_file() or (INSTALLED / f).read_bytes() != (PARSER / f).read_bytes() for f in files
    )
    if stale or not (INSTALLED / "node_modules" / "@asyncapi" / "parser" / "package.json").is_file():
        for f in files:
            shutil.copyfile(PARSER / f, INSTALLED / f)
        # --ignore-scripts: the parser needs no install script (one dependency's is telemetry).
        subprocess.run(
            ["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund"],
            cwd=INSTALLED,
            check=True,
            capture_output=True,
            timeout=300,
        )
    return INSTALLED / "validate.mjs"


def parse(script: Path, document: dict[str, Any], tmp_path: Path) -> list[dict[str, Any]]:
    """Run the parser on *document*; return its diagnostics, failing the test on any error."""
    path = tmp_path / "asyncapi.json"
    path.write_bytes(encode_document(document))
    result = subprocess.run(
        ["node", str(script), str(path)], cwd=script.parent, capture_output=True, text=True, timeout=120, check=False
    )
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert result.returncode == 0, result.stdout + result.stderr
    return lines[:-1]


def only_the_version_hint(diagnostics: list[dict[str, Any]]) -> bool:
    """No error and no warning: at most the parser's note that 3.1.0 exists (severity 2, information)."""
    return all(d["code"] == "asyncapi-latest-version" and d["severity"] == 2 for d in diagnostics)


# ------------------------------------------------------------------ the official parser


def test_chat_sample_document_is_valid_asyncapi_3(asyncapi_parser: Path, tmp_path: Path) -> None:
    golden = json.loads(GOLDEN.read_text())
    assert only_the_version_hint(parse(asyncapi_parser, golden, tmp_path))


def test_book_sample_document_with_raw_frames_is_valid_asyncapi_3(asyncapi_parser: Path, tmp_path: Path) -> None:
    assert only_the_version_hint(parse(asyncapi_parser, asyncapi_document(book_app), tmp_path))


def test_cli_prints_the_golden_chat_document() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "wsframe", *GOLDEN_COMMAND], cwd=ROOT, capture_output=True, check=True, timeout=60
    )
    assert result.stdout == GOLDEN.read_bytes(), "regenerate samples/chat/asyncapi.json: see this module's docstring"


async def test_route_serves_the_document_with_the_requested_host_as_server(serve: Serve) -> None:
    client = await serve(chat_app)
    response = await client.get("/asyncapi.json")
    served = await response.json()
    host = f"{client.server.host}:{client.server.port}"
    golden = json.loads(GOLDEN.read_text())
    golden["servers"]["default"]["host"] = host
    assert response.content_type == "application/json"
    assert served == golden


# ------------------------------------------------------------------ what the document says


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Move(msgspec.Struct, tag="move"):
    """Move a piece."""

    x: int
    y: int


class Resign(msgspec.Struct, tag="resign"):
    pass


class Board(msgspec.Struct):
    cells: list[list[int]]


class Game(GenericWebsocket):
    """A game between two players."""

    rate_limit = 5
    send_type: ClassVar[object] = Board

    async def connect(self, game_id: int, colour: Colour) -> None:
        await self.accept()

    async def receive(self, data: Move | Resign) -> None:
        pass


class Echo(GenericWebsocket):
    async def receive(self, data: str) -> None:
        await self.send(data)


async def health(request: object) -> None:
    pass


def game_document() -> dict[str, Any]:
    app = create_app({"ws/game/<game_id>/<colour>/": Game, "ws/echo/": Echo, "health/": health})
    return asyncapi_document(app, title="Games", version="2.0.0")


def test_document_with_typed_parameters_and_both_directions_is_valid_asyncapi_3(
    asyncapi_parser: Path, tmp_path: Path
) -> None:
    assert only_the_version_hint(parse(asyncapi_parser, game_document(), tmp_path))


def test_one_channel_per_websocket_route_and_none_for_http_routes() -> None:
    channels = game_document()["channels"]
    assert {cid: c["address"] for cid, c in channels.items()} == {
        "ws_echo": "/ws/echo/",
        "ws_game_game_id_colour": "/ws/game/{game_id}/{colour}/",
    }


def test_path_variables_are_channel_parameters_with_enum_values() -> None:
    parameters = game_document()["channels"]["ws_game_game_id_colour"]["parameters"]
    assert parameters == {
        "game_id": {"description": "Path variable `game_id`, converted to int; 404 if it does not convert."},
        "colour": {
            "description": "Path variable `colour`, converted to Colour; 404 if it does not convert.",
            "enum": ["red", "blue"],
        },
    }


def test_receive_operation_has_one_message_per_struct_of_the_union() -> None:
    operation = game_document()["operations"]["receive_ws_game_game_id_colour"]
    assert operation["action"] == "receive"
    assert operation["messages"] == [
        {"$ref": "#/channels/ws_game_game_id_colour/messages/Move"},
        {"$ref": "#/channels/ws_game_game_id_colour/messages/Resign"},
    ]


def test_message_payloads_are_msgspec_json_schema_components() -> None:
    document = game_document()
    assert document["components"]["messages"]["Move"] == {
        "name": "Move",
        "title": "Move",
        "summary": "Move a piece.",
        "payload": {"$ref": "#/components/schemas/Move"},
    }
    assert document["components"]["schemas"]["Move"] == {
        "title": "Move",
        "description": "Move a piece.",
        "type": "object",
        "properties": {"type": {"enum": ["move"]}, "x": {"type": "integer"}, "y": {"type": "integer"}},
        "required": ["type", "x", "y"],
    }


def test_send_operation_comes_from_the_send_type_attribute() -> None:
    operations = game_document()["operations"]
    assert SEND_TYPE_ATTRIBUTE == "send_type"
    assert operations["send_ws_game_game_id_colour"]["messages"] == [
        {"$ref": "#/channels/ws_game_game_id_colour/messages/Board"}
    ]
    assert "send_ws_echo" not in operations


def test_raw_receive_is_a_plain_string_message() -> None:
    message = game_document()["components"]["messages"]["Echo_receive"]
    assert message == {
        "name": "Echo_receive",
        "title": "Echo_receive",
        "summary": "A text frame, any content, as-is (not JSON-decoded).",
        "contentType": "text/plain",
        "payload": {"type": "string"},
    }


def test_close_codes_list_1007_for_typed_receive_and_1008_for_a_rate_limit_only() -> None:
    channels = game_document()["channels"]
    game = channels["ws_game_game_id_colour"]["x-wsframe-close-codes"]
    echo = channels["ws_echo"]["x-wsframe-close-codes"]
    assert list(game) == ["1000", "1001", "1007", "1008", "1009", "1011", "1013"]
    assert game["1008"] == "More than 5 messages per second."
    assert list(echo) == ["1000", "1001", "1009", "1011", "1013"]


def test_handshake_refusals_list_404_only_for_routes_with_variables() -> None:
    channels = game_document()["channels"]
    assert list(channels["ws_game_game_id_colour"]["x-wsframe-handshake-refusals"]) == ["403", "404", "408", "426"]
    assert list(channels["ws_echo"]["x-wsframe-handshake-refusals"]) == ["403", "408", "426"]


def test_tagged_union_discriminator_is_the_property_name_asyncapi_expects() -> None:
    class Say(msgspec.Struct, tag="say"):
        text: str

    class Wave(msgspec.Struct, tag="wave"):
        pass

    class Room(GenericWebsocket):
        send_type: ClassVar[object] = list[Say | Wave]

    document = asyncapi_document(create_app({"ws/": Room}))
    payload = document["components"]["messages"]["Room_send"]["payload"]
    assert payload["items"]["discriminator"] == "type"


def test_send_type_without_a_json_schema_is_a_configuration_error() -> None:
    class Bad(GenericWebsocket):
        send_type: ClassVar[object] = object

    with pytest.raises(ConfigurationError, match=r"Bad: send_type <class 'object'> has no JSON Schema"):
        asyncapi_document(create_app({"ws/": Bad}))


def test_cli_error_for_an_app_not_made_by_create_app_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "plain.py").write_text("from aiohttp import web\napp = web.Application()\n")
    result = subprocess.run(
        [sys.executable, "-m", "wsframe", "asyncapi", "plain:app"], cwd=tmp_path, capture_output=True, text=True
    )
    assert (result.returncode, result.stderr.splitlines()) == (
        2,
        ["wsframe: plain:app: this application was not made by wsframe.create_app(); it has no url table"],
    )


@pytest.mark.skipif(
    tuple(int(part) for part in importlib.metadata.version("msgspec").split(".")[:2]) < (0, 23),
    reason="msgspec before 0.23 gives two Structs of one name one schema component (measured on 0.18-0.22)",
)
def test_two_structs_of_one_name_get_two_messages() -> None:
    def make_struct(field: str) -> type[msgspec.Struct]:
        return msgspec.defstruct("Update", [(field, int)])

    class A(GenericWebsocket):
        send_type: ClassVar[object] = make_struct("a")

    class B(GenericWebsocket):
        send_type: ClassVar[object] = make_struct("b")

    document = asyncapi_document(create_app({"ws/a/": A, "ws/b/": B}))
    messages = document["components"]["messages"]
    assert list(messages) == ["A_receive", "Update", "B_receive", "Update_2"]
    schemas = document["components"]["schemas"]
    first, second = (
        schemas[m["payload"]["$ref"].rsplit("/", 1)[1]] for m in (messages["Update"], messages["Update_2"])
    )
    assert (list(first["properties"]), list(second["properties"])) == (["a"], ["b"])
