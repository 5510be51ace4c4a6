"""The serving floor for bench/router: uvicorn as the router runs it, with an app that does nothing.

A pure ASGI app that reads the request body and answers a fixed V2 inference body, under the router's
uvicorn settings (uvloop, httptools, no access log, no server/date headers). Its CPU per request is what
any Python router on this stack pays before routing or forwarding anything, so the router's figure minus
this one is the cost of its own code plus its upstream client.

    services/router/.venv/bin/python bench/router/floor_app.py --port 18070
"""

from __future__ import annotations

import argparse

import uvicorn

BODY = (
    b'{"model_name":"fraud","model_version":"v1","outputs":[{"name":"probability","shape":[1,1],'
    b'"datatype":"FP32","data":[0.5]}]}'
)
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope: dict, receive, send) -> None:
    if scope["type"] != "http":
        return
    message = await receive()
    while message.get("more_body", False):
        message = await receive()
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        lifespan="off",
        access_log=False,
        proxy_headers=False,
        server_header=False,
        date_header=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
