"""Code shared by Flywheel services. Import the submodules: `schema`, `ondemand`, `model_repo`, `sim`,
`feature_pipeline`. Nothing here imports Feast, KServe or alibi-detect, so every service can use it."""
