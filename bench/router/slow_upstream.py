"""A slow shadow candidate for bench/router: answers every request with a V2 inference body after a delay.

Stdlib asyncio, HTTP/1.1 keep-alive, Content-Length bodies only (what the router sends). It stands in for
a candidate version that answers in 50 ms, so the benchmark can show that mirroring to it never slows
the callers of the stable.

    python3 bench/router/slow_upstream.py --port 18090 [--delay-ms 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json

BODY = json.dumps(
    {"model_name": "fraud", "model_version": "slow", "outputs": [
        {"name": "probability", "shape": [1, 1], "datatype": "FP32", "data": [0.5]}
    ]}
).encode()
RESPONSE = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
    + str(len(BODY)).encode()
    + b"\r\n\r\n"
    + BODY
)


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay_s: float) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if length:
                await reader.readexactly(length)
            await asyncio.sleep(delay_s)
            writer.write(RESPONSE)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay-ms", type=float, default=50.0)
    args = parser.parse_args()
    server = await asyncio.start_server(
        lambda r, w: handle(r, w, args.delay_ms / 1000), "127.0.0.1", args.port, backlog=1024
    )
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
