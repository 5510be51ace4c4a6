"""`GET /v2/models/fraud`: V2 model metadata that says what the transformer serves, in KServe's own shape."""

import shutil

import pytest
from kserve.model_repository import ModelRepository
from kserve.protocol.rest.v2_datamodels import ModelMetadataResponse
from prometheus_client import CollectorRegistry

from flywheel_core import schema
from flywheel_transformer import FraudTransformer, load_settings
from flywheel_transformer._errors import VersionUnusable
from flywheel_transformer._features import FeatureClient
from flywheel_transformer._metrics import Metrics
from flywheel_transformer._predictor import PredictorClient
from flywheel_transformer._repo import load_spec
from flywheel_transformer._server import _TransformerDataPlane

from conftest import publish_version, run

ONNX = "flywheel-transformer (predictor: onnxruntime_onnx)"


def transformer(repo, version="latest", load=True):
    settings = load_settings(model_repo=repo, model_version=version)
    model = FraudTransformer(
        settings,
        Metrics(CollectorRegistry()),
        FeatureClient("http://features", 0.5),
        PredictorClient("http://predictor", "fraud", 1.0),
    )
    if load:
        model.use(load_spec(repo, "fraud", version))
    return model


def metadata(model):
    """What KServe's V2 route answers: the data plane's dict through KServe's own response model."""
    registry = ModelRepository()
    registry.update(model)
    answer = run(_TransformerDataPlane(model_registry=registry).model_metadata("fraud"))
    return ModelMetadataResponse.model_validate(answer).model_dump()


def test_metadata_names_the_default_version_first_then_the_others_a_request_may_name(two_versions):
    assert metadata(transformer(two_versions, "v1"))["versions"] == ["v1", "v2"]
    assert metadata(transformer(two_versions, "latest"))["versions"] == ["v2", "v1"]


def test_metadata_says_it_is_a_transformer_in_front_of_an_onnx_predictor(repo):
    assert metadata(transformer(repo))["platform"] == ONNX


def test_metadata_inputs_are_the_raw_transaction_and_outputs_the_prediction_fields(repo):
    answer = metadata(transformer(repo))
    assert answer["name"] == "fraud"
    assert sorted(t["name"] for t in answer["inputs"]) == sorted(schema.RAW_TRANSACTION_FIELDS)
    assert {t["name"]: t["datatype"] for t in answer["inputs"]}["amount"] == "FP64"
    assert [t["name"] for t in answer["outputs"]] == [
        "id",
        "score",
        "decision",
        "threshold",
        "model_version",
        "missing_features",
        "missing_reasons",
        "unknown_entities",
        "degraded",
        "unseen",
    ]
    assert {t["name"]: t["shape"] for t in answer["outputs"]}["unseen"] == [-1, -1]  # a list of field names each


def test_a_version_that_failed_to_load_is_left_out_until_it_is_looked_at_again(two_versions):
    (two_versions / "fraud" / "v2" / "model.fp32.onnx").write_bytes(b"tampered: its digest no longer matches")
    model = transformer(two_versions, "v1")
    assert metadata(model)["versions"] == ["v1", "v2"]  # not tried yet: published, so a request may name it
    with pytest.raises(VersionUnusable):  # the digest check fails
        run(model.specs.get("v2"))
    assert metadata(model)["versions"] == ["v1"]


def test_before_any_version_is_published_metadata_is_still_valid_and_lists_none(tmp_path):
    repo = tmp_path / "model_repo"
    publish_version(repo)
    shutil.rmtree(repo / "fraud")
    answer = metadata(transformer(repo, load=False))
    assert (answer["versions"], answer["platform"]) == ([], "flywheel-transformer")


def test_a_version_published_in_another_format_names_no_predictor_platform(tmp_path):
    repo = tmp_path / "model_repo"
    publish_version(repo, variants={"fp32": {"file": "model.pt", "published": True, "gate": {}}})
    assert metadata(transformer(repo))["platform"] == "flywheel-transformer"
