"""For reference: the obvious kserve.Model around the same session, on a stock kserve.ModelServer.

This is what "a predictor built on KServe" costs without the predictor's changes (the 0.30x figure in
the predictor's brief). It does no validation; see services/predictor/README.md for what it answers
to bad requests.

Run with the predictor's environment: services/predictor/.venv/bin/python stock_kserve.py --onnx M --port P
"""

from __future__ import annotations

import argparse

import onnxruntime as ort
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer


class StockModel(Model):
    def __init__(self, name: str, model_path: str) -> None:
        super().__init__(name)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(model_path, sess_options=options, providers=["CPUExecutionProvider"])
        self.ready = True

    def predict(self, payload, headers=None):
        import numpy as np

        if isinstance(payload, InferRequest):
            out = self.session.run(["probability"], {"input": payload.inputs[0].as_numpy()})[0]
            output = InferOutput("probability", list(out.shape), "FP32", out)
            return InferResponse(
                response_id=payload.id or "", model_name=self.name, model_version="v1", infer_outputs=[output]
            )
        out = self.session.run(["probability"], {"input": np.array(payload["instances"], dtype=np.float32)})[0]
        return {"predictions": out.tolist()}


def main() -> None:
    parser = argparse.ArgumentParser(description="stock kserve.ModelServer + onnxruntime")
    parser.add_argument("--onnx", required=True, help="path of the .onnx file")
    parser.add_argument("--port", type=int, default=8088)
    args, _ = parser.parse_known_args()
    ModelServer(http_port=args.port, enable_grpc=False).start([StockModel("fraud", args.onnx)])


if __name__ == "__main__":
    main()
