"""The yardstick: a minimal ASGI + onnxruntime server doing the predictor's single-row job and nothing else.

Same model file, same session options (CPU, one intra-op thread), same uvicorn (httptools, uvloop, no
access log), same orjson; V1 `{"instances": ...}` and V2 `{"inputs": ...}` on the same paths, with the
same response shapes. No validation beyond what numpy and orjson do on their own, no metrics, no
framework. `--inline` calls session.run on the event loop; by default it runs on a one-thread pool,
as the predictor must (it may never block its loop), so the ratio measures framework overhead only.

Run with the predictor's environment: services/predictor/.venv/bin/python baseline.py --onnx M --port P
"""

from __future__ import annotations

import argparse
import asyncio
import uuid
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnxruntime as ort
import orjson
import uvicorn

JSON = [(b"content-type", b"application/json")]


def make_app(model_path: str, name: str = "fraud", version: str = "v1", inline: bool = False):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model_path, sess_options=options, providers=["CPUExecutionProvider"])
    executor = ThreadPoolExecutor(1)
    fetch = ["probability"]
    v1, v2 = f"/v1/models/{name}:predict", f"/v2/models/{name}/infer"

    def run(rows: np.ndarray) -> np.ndarray:
        return session.run(fetch, {"input": rows})[0]

    async def score(rows: np.ndarray) -> np.ndarray:
        if inline:
            return run(rows)
        return await asyncio.get_running_loop().run_in_executor(executor, run, rows)

    async def respond(send, status: int, body: bytes) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [*JSON, (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def app(scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        path = scope["path"]
        try:
            document = orjson.loads(body)
            if path == v1:
                out = await score(np.array(document["instances"], dtype=np.float32))
                payload = orjson.dumps({"predictions": out}, option=orjson.OPT_SERIALIZE_NUMPY)
            elif path == v2:
                tensor = document["inputs"][0]
                out = await score(np.array(tensor["data"], dtype=np.float32).reshape(tensor["shape"]))
                response = {
                    "model_name": name,
                    "model_version": version,
                    "id": document.get("id") or str(uuid.uuid4()),
                    "outputs": [{"name": "probability", "shape": out.shape, "datatype": "FP32", "data": out.ravel()}],
                }
                payload = orjson.dumps(response, option=orjson.OPT_SERIALIZE_NUMPY)
            else:
                return await respond(send, 404, b'{"error":"not found"}')
        except Exception as e:  # the yardstick does no validation of its own
            return await respond(send, 400, orjson.dumps({"error": str(e)}))
        await respond(send, 200, payload)

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description="minimal ASGI + onnxruntime baseline server")
    parser.add_argument("--onnx", required=True, help="path of the .onnx file")
    parser.add_argument("--port", type=int, default=8089)
    parser.add_argument("--inline", action="store_true", help="run the session on the event loop")
    args = parser.parse_args()
    app = make_app(args.onnx, inline=args.inline)
    uvicorn.run(
        app, host="127.0.0.1", port=args.port, loop="uvloop", http="httptools", access_log=False, log_level="warning"
    )


if __name__ == "__main__":
    main()
