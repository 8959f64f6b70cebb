"""The reference server of the ``single`` scenario: a bare aiohttp handler.

It answers ``POST /api/v1/transactions`` by reading the body and returning a small JSON
body of the node's answer's shape, with no other work: what one aiohttp process can do
on one core. It runs pinned to one CPU, prints ``{"port": N}`` once it listens on
127.0.0.1, and serves until SIGTERM.

Usage: python -m bench.bare [--cpu N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys

from aiohttp import web

_ANSWER = {"ids": ["0" * 64]}


async def submit(request: web.Request) -> web.Response:
    """Read the body; answer 202 with a small JSON body."""
    await request.read()
    return web.json_response(_ANSWER, status=202)


async def serve(cpu: int | None) -> None:
    """Serve until SIGTERM or SIGINT."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    app = web.Application()
    app.router.add_post("/api/v1/transactions", submit)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    sys.stdout.write(json.dumps({"port": runner.addresses[0][1]}) + "\n")
    sys.stdout.flush()
    await stop.wait()
    await runner.cleanup()


def main() -> None:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", type=int, help="pin the server to this CPU")
    asyncio.run(serve(parser.parse_args().cpu))


if __name__ == "__main__":
    main()
