"""Server CPU instructions per operation under callgrind, wsframe against raw aiohttp; needs valgrind.
``python -m benchmarks.tools.instructions [--cases open_close,echo] [--count 500] [--smoke]``."""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from .. import harness
from ..client import CLOSE_FRAME, OP_TEXT, WsClient, client_frame, connect
from ..report import table
from ..servers import KINDS, command

__all__ = ["CASES", "Drive", "count_instructions", "main", "render_markdown"]

ECHO_FRAME = client_frame(OP_TEXT, b"e" * 64)
_TOTALS = re.compile(r"^totals: (\d+)", re.MULTILINE)


async def _open_close(port: int, count: int) -> None:
    started = 0

    async def one_after_another() -> None:
        nonlocal started
        while started < count:
            started += 1
            client = await connect(port)
            client.send(CLOSE_FRAME)
            await client.close_received
            client.close()

    await asyncio.gather(*(one_after_another() for _ in range(8)))


async def _echo(port: int, count: int) -> None:
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()

    def on_message(client: WsClient, opcode: int, payload: bytes) -> None:
        if not waiter.done():
            waiter.set_result(None)

    client = await connect(port, on_message=on_message)
    try:
        for _ in range(count):
            client.send(ECHO_FRAME)
            await waiter
            waiter = loop.create_future()
    finally:
        client.send(CLOSE_FRAME)
        with contextlib.suppress(ConnectionError):
            await asyncio.wait_for(client.close_received, 5)
        client.close()


Drive = Callable[[int, int], Coroutine[Any, Any, None]]
CASES: dict[str, tuple[str, Drive]] = {"open_close": ("connection open + close", _open_close)}
CASES["echo"] = ("echo round trip, 64-byte text, 1 connection", _echo)
"""Case id -> (title, coroutine driving *count* operations against a port)."""


def _callgrind_control(pid: int, switch: str) -> None:
    done = subprocess.run(["callgrind_control", "-i", switch, str(pid)], capture_output=True, text=True)
    if done.returncode != 0 or "OK" not in done.stdout:
        raise RuntimeError(f"callgrind_control -i {switch} {pid} failed: {done.stdout}{done.stderr}")


def count_instructions(kind: str, case: str, count: int, *, warmup: int, use_uvloop: bool) -> int:
    """Run *case* *count* times against a fresh *kind* server under callgrind; return its instructions."""
    port = harness.free_port()
    drive = CASES[case][1]
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "callgrind.out"
        valgrind = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}"]
        line, quiet = [*valgrind, *command(kind, port, use_uvloop)], subprocess.DEVNULL
        process = subprocess.Popen(line, cwd=harness.ROOT, stdout=quiet, stderr=subprocess.PIPE)
        try:
            harness.wait_for_port(port, process, timeout=180)
            asyncio.run(drive(port, warmup))
            _callgrind_control(process.pid, "on")
            asyncio.run(drive(port, count))
            _callgrind_control(process.pid, "off")
        finally:
            process.send_signal(signal.SIGINT)
            try:
                _, stderr = process.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                process.kill()
                _, stderr = process.communicate()
        match = _TOTALS.search(out.read_text()) if out.exists() else None
        if match is None:
            raise RuntimeError(f"no callgrind totals for {kind}:\n{stderr.decode(errors='replace')[-2000:]}")
        return int(match.group(1))


def render_markdown(report: dict[str, Any]) -> str:
    """The counts as a Markdown table."""
    meta = report["meta"]
    intro = f"Instructions per operation in the server process, counted by callgrind ({meta['date']}, commit "
    intro += f"{meta['commit']}, {meta['count']} operations per case, event loop: {meta['loop']}). "
    rows = [[r["title"], f"{r['raw']:,.0f}", f"{r['wsframe']:,.0f}"] for r in report["cases"]]
    for row, r in zip(rows, report["cases"], strict=True):
        row += [f"{r['wsframe'] / r['raw']:.3f}x", f"{r['raw'] / r['wsframe']:.3f}x"]
    header = ["case", "raw aiohttp", "wsframe", "wsframe/raw", "raw/wsframe (as a speed ratio)"]
    intro += "Repeatable to about 0.5 %; wsframe/raw > 1 means wsframe does more work."
    return "\n".join([intro, "", *table(header, rows)]) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Count both servers' instructions for each case; print and write the table."""
    parser = harness.parser("Count server instructions per operation (wsframe vs raw aiohttp).", "20 operations")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}")
    parser.add_argument("--count", type=int, default=500, help="operations per case (default 500)")
    parser.add_argument("--warmup", type=int, default=200, help="uncounted operations first (default 200)")
    args = parser.parse_args(argv)
    cases = [c for c in args.cases.split(",") if c]
    if unknown := sorted(set(cases) - set(CASES)):
        parser.error(f"unknown case(s) {', '.join(unknown)}; choose from {', '.join(CASES)}")
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("benchmarks.tools.instructions needs valgrind: apt-get install valgrind")
    count, warmup = (20, 10) if args.smoke else (args.count, args.warmup)
    use_uvloop, rows = harness.uvloop_available(), list[dict[str, Any]]()
    for case in cases:
        rows.append({"id": case, "title": CASES[case][0]})
        for kind in KINDS:
            print(f"{case}: {kind} under callgrind ...", file=sys.stderr, flush=True)
            rows[-1][kind] = count_instructions(kind, case, count, warmup=warmup, use_uvloop=use_uvloop) / count
    meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "commit": harness.commit(), "count": count}
    meta |= {"loop": "uvloop" if use_uvloop else "asyncio", "python": sys.version.split()[0]}
    report = {"meta": meta, "cases": rows}
    harness.write(args.results_dir, "instructions", report, render_markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
