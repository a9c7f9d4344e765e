#!/usr/bin/env python3
"""How fast the Python client verifies against a running daemon.

    python3 bench.py SOCKET [TOKEN] [--seconds 3]

TOKEN defaults to $AUTHENTA_KEY, which keeps it out of ``ps`` (an argument is visible to
every user of the host). Reports verifies per second for: one ``verify`` at a time
(blocking client), ``verify_many`` in batches of 100 (pipelined), and one ``verify`` at
a time with the asyncio client. Run it from a checkout (``src`` is put on the path) or
with the package installed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from typing import Callable

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "src"))

from authenta_client import AsyncClient, Client, __version__  # noqa: E402

BATCH = 100


def rate(label: str, seconds: float, round_trip: Callable[[], int]) -> float:
    """Runs ``round_trip`` (which returns the verifies it made) for about ``seconds``,
    after a short warm-up, and prints and returns verifies per second."""
    warm_until = time.perf_counter() + min(0.5, seconds / 4)
    while time.perf_counter() < warm_until:
        round_trip()
    done = 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        done += round_trip()
    per_second = done / (time.perf_counter() - start)
    print(f"{label:<40} {per_second:>12,.0f} verifies/s")
    return per_second


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("socket", help="the daemon's socket")
    parser.add_argument("token", nargs="?", help="a valid token (default: $AUTHENTA_KEY)")
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    args = parser.parse_args()
    token = args.token or os.environ.get("AUTHENTA_KEY")
    if not token:
        parser.error("give a token, or set AUTHENTA_KEY")

    client = Client(args.socket)
    answer = client.verify(token, "read")
    if not answer.allowed:
        print(f"the token answers {answer.status} {answer.code.value}: give one that may read")
        return 1
    python = sys.version.split()[0]
    print(f"authenta-client {__version__}, daemon {client.server_version}, Python {python}")

    def one() -> int:
        client.verify(token, "read")
        return 1

    def batch() -> int:
        return len(client.verify_many([token] * BATCH, "read"))

    rate("sync verify, one at a time", args.seconds, one)
    rate(f"verify_many, batches of {BATCH}", args.seconds, batch)

    async def run_async() -> None:
        async_client = AsyncClient(args.socket)
        loop = asyncio.get_running_loop()
        done = 0
        warm_until = loop.time() + min(0.5, args.seconds / 4)
        while loop.time() < warm_until:
            await async_client.verify(token, "read")
        start = loop.time()
        while loop.time() < start + args.seconds:
            await async_client.verify(token, "read")
            done += 1
        print(
            f"{'async verify, one at a time':<40} {done / (loop.time() - start):>12,.0f} verifies/s"
        )
        await async_client.aclose()

    asyncio.run(run_async())
    client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
