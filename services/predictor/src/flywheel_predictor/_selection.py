"""Which execution provider and which model variant to run: pure decisions from settings and detection.

Nothing here touches ONNX Runtime or the file system, so the rules are unit-tested with fake provider
lists and metadata parsed through the contract. The caller passes `onnxruntime.get_available_providers()`
and the version's typed metadata (`model_repo.ModelVersion.spec`), and logs the returned reasons once at
start-up.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from flywheel_core.model_repo import ModelMetadata, Variant

from ._errors import ConfigError, ModelLoadError

TENSORRT = "TensorrtExecutionProvider"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"

PREFERENCE: tuple[str, ...] = (TENSORRT, CUDA, CPU)
"""Best first: TensorRT fuses and tunes kernels for the GPU it runs on, CUDA is the portable GPU path."""

GPU_PROVIDERS = frozenset({TENSORRT, CUDA})
VARIANTS: tuple[str, ...] = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class ProviderChoice:
    providers: tuple[str, ...]
    """Passed to InferenceSession in order; ONNX Runtime assigns each node to the first that supports it."""
    reason: str

    @property
    def primary(self) -> str:
        return self.providers[0]

    @property
    def gpu(self) -> bool:
        return self.primary in GPU_PROVIDERS


@dataclass(frozen=True)
class VariantChoice:
    variant: str
    file: str
    reason: str


def choose_providers(requested: Sequence[str] | None, available: Sequence[str]) -> ProviderChoice:
    """Providers for the session: `requested` (None = auto) checked against what this build offers."""
    available = list(available)
    if requested is None:
        ranked = [name for name in PREFERENCE if name in available]
        if not ranked:
            raise ConfigError(f"none of {', '.join(PREFERENCE)} is available in this ONNX Runtime build ({available})")
        # The others stay behind the best as fallbacks for nodes it does not implement (CPU last).
        return ProviderChoice(tuple(ranked), f"providers=auto: best available of {', '.join(available)}")
    missing = [name for name in requested if name not in available]
    if missing:
        raise ConfigError(
            f"Config 'FLYWHEEL_PREDICTOR_PROVIDERS' has value {','.join(requested)!r}: {', '.join(missing)} not "
            f"available in this ONNX Runtime build (available: {', '.join(available)}); install the `gpu` extra "
            "for CUDA/TensorRT or use 'auto'"
        )
    return ProviderChoice(tuple(requested), f"providers={','.join(requested)}: configured")


def published_variants(metadata: ModelMetadata) -> dict[str, Variant]:
    """Variants this predictor knows whose `published` flag is set and whose file is among the version's
    digested files."""
    return {
        name: info
        for name, info in metadata.published_variants().items()
        if name in VARIANTS and info.file in metadata.files
    }


def choose_variant(requested: str, metadata: ModelMetadata, gpu: bool) -> VariantChoice:
    """The variant to serve: `requested` if published, else by the auto rule (see Settings.variant)."""
    published = published_variants(metadata)
    if requested != "auto":
        if requested not in published:
            raise ModelLoadError(
                f"Config 'FLYWHEEL_PREDICTOR_VARIANT' has value {requested!r}, but {metadata.model} "
                f"{metadata.version} publishes only {sorted(published) or 'nothing'}; "
                "pick one of those or 'auto'"
            )
        return VariantChoice(requested, published[requested].file, f"variant={requested}: configured")
    if not published:
        raise ModelLoadError(
            f"{metadata.model} {metadata.version} publishes no variant (metadata.json 'variants'); "
            "republish it with at least model.fp32.onnx"
        )
    if gpu:
        if "fp16" in published:
            return VariantChoice(
                "fp16", published["fp16"].file, "variant=auto: fp16 is published and a GPU provider runs it"
            )
        chosen = "fp32" if "fp32" in published else sorted(published)[0]
        reason = f"variant=auto: GPU provider but fp16 is not published, so {chosen}"
        return VariantChoice(chosen, published[chosen].file, reason)
    timed = {
        name: info.cpu_latency_us
        for name, info in published.items()
        if info.cpu_latency_us is not None and info.cpu_latency_us > 0
    }
    if timed:
        chosen = min(timed, key=lambda name: (timed[name], VARIANTS.index(name)))
        figures = ", ".join(f"{name}={timed[name]:g}us" for name in sorted(timed))
        reason = f"variant=auto: lowest recorded cpu_latency_us on CPU ({figures})"
        return VariantChoice(chosen, published[chosen].file, reason)
    chosen = "fp32" if "fp32" in published else sorted(published)[0]
    return VariantChoice(chosen, published[chosen].file, f"variant=auto: no cpu_latency_us recorded, so {chosen}")
