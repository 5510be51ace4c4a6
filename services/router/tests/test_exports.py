import flywheel_router


def test_public_names_are_exactly_the_documented_surface():
    assert flywheel_router.__all__ == [
        "AdminApp",
        "BadRequest",
        "Choice",
        "CompiledRoute",
        "ConfigError",
        "Conflict",
        "InferenceApp",
        "MethodNotAllowed",
        "NotFound",
        "PayloadTooLarge",
        "RequestError",
        "RouteSource",
        "RouteSourceError",
        "RouteTable",
        "RouterError",
        "Settings",
        "TokenFile",
        "Unauthorized",
        "UnsupportedMediaType",
        "UpstreamError",
        "UpstreamUnavailable",
        "choose",
        "load_settings",
        "make_source",
        "pinned",
        "ring_point",
        "threshold",
    ]


def test_all_is_sorted_and_every_name_resolves():
    assert flywheel_router.__all__ == sorted(flywheel_router.__all__)
    for name in flywheel_router.__all__:
        assert getattr(flywheel_router, name) is not None
