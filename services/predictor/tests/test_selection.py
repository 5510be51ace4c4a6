"""Provider and variant selection: pure rules, checked against fake provider lists and metadata."""

from __future__ import annotations

import pytest

from flywheel_core import model_repo
from flywheel_predictor import ConfigError, ModelLoadError, choose_providers, choose_variant

import tiny_model

CPU_ONLY = ["AzureExecutionProvider", "CPUExecutionProvider"]
CUDA = ["CUDAExecutionProvider", "CPUExecutionProvider"]
TENSORRT = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


def metadata(files: dict[str, str] | None = None, **variants) -> model_repo.ModelMetadata:
    """A version's metadata through the contract; every published variant's file is digested unless `files`."""
    if files is None:
        files = {info["file"]: "0" * 64 for info in variants.values() if info.get("published")}
    document = {**tiny_model.metadata(variants=variants), "model": "fraud", "version": "v3", "files": files}
    return model_repo.parse_metadata(document)


def variant(name: str, published: bool = True, **extra) -> dict:
    return {"file": f"model.{name}.onnx", "published": published, "gate": {}, **extra}


@pytest.mark.parametrize(
    ("available", "expected"),
    [
        (CPU_ONLY, ("CPUExecutionProvider",)),
        (CUDA, ("CUDAExecutionProvider", "CPUExecutionProvider")),
        (TENSORRT, ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")),
        (["CPUExecutionProvider", "CUDAExecutionProvider"], ("CUDAExecutionProvider", "CPUExecutionProvider")),
    ],
)
def test_auto_takes_the_best_available_provider_first_with_the_rest_as_fallbacks(available, expected) -> None:
    choice = choose_providers(None, available)
    assert choice.providers == expected
    assert "auto" in choice.reason


def test_auto_on_a_gpu_provider_reports_gpu() -> None:
    assert choose_providers(None, CUDA).gpu
    assert not choose_providers(None, CPU_ONLY).gpu


def test_configured_providers_are_used_as_given() -> None:
    choice = choose_providers(("CPUExecutionProvider",), TENSORRT)
    assert choice.providers == ("CPUExecutionProvider",)
    assert not choice.gpu


def test_configured_provider_missing_from_the_build_fails_naming_the_setting() -> None:
    with pytest.raises(ConfigError, match="FLYWHEEL_PREDICTOR_PROVIDERS.*CUDAExecutionProvider not available"):
        choose_providers(("CUDAExecutionProvider", "CPUExecutionProvider"), CPU_ONLY)


def test_auto_with_no_known_provider_fails() -> None:
    with pytest.raises(ConfigError, match="none of"):
        choose_providers(None, ["AzureExecutionProvider"])


def test_gpu_takes_fp16_when_published() -> None:
    chosen = choose_variant("auto", metadata(fp32=variant("fp32"), fp16=variant("fp16")), gpu=True)
    assert (chosen.variant, chosen.file) == ("fp16", "model.fp16.onnx")
    assert "GPU" in chosen.reason


def test_gpu_without_fp16_takes_fp32() -> None:
    chosen = choose_variant("auto", metadata(fp32=variant("fp32"), fp16=variant("fp16", published=False)), gpu=True)
    assert chosen.variant == "fp32"


def test_cpu_takes_the_published_variant_with_the_lowest_recorded_latency() -> None:
    meta = metadata(
        fp32=variant("fp32", cpu_latency_us=210),
        fp16=variant("fp16", cpu_latency_us=900),
        int8=variant("int8", cpu_latency_us=120),
    )
    chosen = choose_variant("auto", meta, gpu=False)
    assert chosen.variant == "int8"
    assert "int8=120us" in chosen.reason and "fp32=210us" in chosen.reason


def test_cpu_ignores_unpublished_variants_even_when_faster() -> None:
    meta = metadata(fp32=variant("fp32", cpu_latency_us=210), int8=variant("int8", published=False, cpu_latency_us=50))
    assert choose_variant("auto", meta, gpu=False).variant == "fp32"


def test_cpu_ignores_a_variant_whose_file_is_not_in_the_digests() -> None:
    meta = metadata(
        {"model.fp32.onnx": "0" * 64},
        fp32=variant("fp32", cpu_latency_us=210),
        int8=variant("int8", cpu_latency_us=50),
    )
    assert choose_variant("auto", meta, gpu=False).variant == "fp32"


def test_cpu_without_recorded_latencies_takes_fp32() -> None:
    chosen = choose_variant("auto", metadata(fp32=variant("fp32"), int8=variant("int8")), gpu=False)
    assert chosen.variant == "fp32"
    assert "no cpu_latency_us" in chosen.reason


def test_configured_variant_is_used_when_published() -> None:
    chosen = choose_variant("int8", metadata(fp32=variant("fp32"), int8=variant("int8")), gpu=True)
    assert chosen.variant == "int8"
    assert "configured" in chosen.reason


def test_configured_variant_that_is_not_published_refuses_naming_the_setting() -> None:
    with pytest.raises(ModelLoadError, match="FLYWHEEL_PREDICTOR_VARIANT.*'fp16'.*publishes only \\['fp32'\\]"):
        choose_variant("fp16", metadata(fp32=variant("fp32"), fp16=variant("fp16", published=False)), gpu=False)


def test_a_version_without_variants_refuses() -> None:
    with pytest.raises(ModelLoadError, match="publishes no variant"):
        choose_variant("auto", metadata(), gpu=False)
