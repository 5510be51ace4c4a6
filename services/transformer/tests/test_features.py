import httpx
import pytest

from flywheel_contracts.auth import TokenFile
from flywheel_core.schema import ONLINE_FEATURE_REFS
from flywheel_transformer._errors import FeaturesUnavailable, status_of
from flywheel_transformer._features import FeatureClient, lookup_body, parse_lookup
from flywheel_transformer._scoring import MissingReason
from flywheel_transformer._validation import parse_instances

from conftest import ONLINE_NAMES, feast_answer, feast_transport, known_values, run, transaction


def transactions(*cards):
    return parse_instances(
        {
            "instances": [
                transaction(transaction_id=f"t{i}", card_id=c, merchant_id=f"m{i}") for i, c in enumerate(cards)
            ]
        },
        100,
    )


def test_one_lookup_carries_every_instance_as_an_entity_row_with_the_shared_feature_refs():
    body = lookup_body(transactions("c1", "c2", "c1"))
    assert body["features"] == list(ONLINE_FEATURE_REFS)
    assert body["entities"] == {"card_id": ["c1", "c2", "c1"], "merchant_id": ["m0", "m1", "m2"]}


def test_column_wise_answer_is_turned_into_per_instance_values():
    values = known_values(2)
    rows = parse_lookup(feast_answer(["c1", "c2"], ["m0", "m1"], values), 2).values
    assert rows[0]["txn_count_1h"] == values["txn_count_1h"][0]
    assert rows[1]["merchant_amount_mean_30d"] == values["merchant_amount_mean_30d"][1]
    assert set(rows[0]) == set(ONLINE_NAMES)


def test_not_found_null_and_expired_values_are_missing():
    values = known_values(3)
    values["txn_count_1h"] = [None, 5, 7]
    values["amount_mean_30d"] = [1.0, 2.0, 3.0]
    statuses = {"amount_mean_30d": ["PRESENT", "OUTSIDE_MAX_AGE", "NOT_FOUND"]}
    lookup = parse_lookup(feast_answer(["a", "b", "c"], ["x", "y", "z"], values, statuses), 3)
    rows = lookup.values
    assert rows[0]["txn_count_1h"] is None
    assert rows[1]["txn_count_1h"] == 5.0
    assert [r["amount_mean_30d"] for r in rows] == [1.0, None, None]
    assert lookup.reasons == [
        {"txn_count_1h": MissingReason.NOT_FOUND},
        {"amount_mean_30d": MissingReason.OUTSIDE_MAX_AGE},
        {"amount_mean_30d": MissingReason.NOT_FOUND},
    ]


def test_redis_stores_unknown_entity_present_null_at_the_epoch_is_not_found():
    # Feast 0.67's Redis online store answers an entity it has no row for with PRESENT, a null value and a 1970
    # timestamp (SQLite says NOT_FOUND); a written null (a real timestamp) stays a null value.
    values = known_values(2)
    values["txn_count_1h"] = [None, None]
    answer = feast_answer(["a", "b"], ["x", "y"], values, {"txn_count_1h": ["PRESENT", "PRESENT"]})
    column = answer["results"][answer["metadata"]["feature_names"].index("txn_count_1h")]
    column["event_timestamps"] = ["1970-01-01T00:00:00Z", "2026-11-30T10:00:00Z"]
    lookup = parse_lookup(answer, 2)
    assert lookup.reasons[0]["txn_count_1h"] is MissingReason.NOT_FOUND
    assert lookup.reasons[1]["txn_count_1h"] is MissingReason.NULL_VALUE


def test_a_value_older_than_its_views_ttl_before_the_transaction_is_outside_max_age_as_in_training():
    # merchant_risk's ttl is 2 days, card_activity's 30: judged against each transaction's time, not the clock.
    from datetime import UTC, datetime

    values = known_values(3)
    answer = feast_answer(["a", "b", "c"], ["x", "y", "z"], values)
    for column, _name in zip(answer["results"][2:], ONLINE_NAMES, strict=True):
        column["event_timestamps"] = ["2026-11-01T00:00:00Z"] * 3
    at = [datetime(2026, 11, 2, 23, 59, tzinfo=UTC),  # within both ttls
          datetime(2026, 11, 3, 0, 0, 1, tzinfo=UTC),  # merchant snapshot over 2 days old
          datetime(2026, 12, 1, 0, 0, 1, tzinfo=UTC)]  # the card row over 30 days old too
    lookup = parse_lookup(answer, 3, at)
    assert lookup.reasons[0] == {}
    assert lookup.reasons[1] == {name: MissingReason.OUTSIDE_MAX_AGE for name in ONLINE_NAMES
                                 if name.startswith("merchant_")}
    assert lookup.reasons[2] == {name: MissingReason.OUTSIDE_MAX_AGE for name in ONLINE_NAMES}
    assert lookup.values[1]["txn_count_1h"] == values["txn_count_1h"][1]
    assert parse_lookup(answer, 3).reasons == [{}, {}, {}]  # without the times nothing is judged


def test_a_null_or_unusable_present_value_and_a_left_out_feature_are_null_values():
    values = known_values(2)
    values["txn_count_24h"] = [None, "not a number"]
    statuses = {"txn_count_24h": ["NULL_VALUE", "PRESENT"]}
    answer = feast_answer(["a", "b"], ["x", "y"], values, statuses)
    left_out = ONLINE_NAMES.index("merchant_txn_count_7d") + 2  # after the two entity key columns
    del answer["metadata"]["feature_names"][left_out], answer["results"][left_out]
    lookup = parse_lookup(answer, 2)
    for reasons in lookup.reasons:
        assert reasons == {
            "txn_count_24h": MissingReason.NULL_VALUE,
            "merchant_txn_count_7d": MissingReason.NULL_VALUE,
        }


def test_int64_as_json_strings_and_full_feature_names_are_understood():
    answer = feast_answer(["c"], ["m"], known_values(1))
    answer["metadata"]["feature_names"] = {
        "val": [n if ":" in n else n for n in ["card_id", "merchant_id"]] + [f"view__{n}" for n in ONLINE_NAMES]
    }
    answer["results"][2]["values"] = ["17"]
    rows = parse_lookup(answer, 1).values
    assert rows[0][ONLINE_NAMES[0]] == 17.0


@pytest.mark.parametrize(
    "answer",
    [
        {},
        {"metadata": {"feature_names": ["a"]}, "results": []},
        {"metadata": {"feature_names": ["txn_count_1h"]}, "results": [{"values": [1, 2]}]},
        {"metadata": {"feature_names": ["txn_count_1h"]}, "results": ["nope"]},
    ],
)
def test_an_unusable_answer_is_a_feature_service_failure(answer):
    with pytest.raises(FeaturesUnavailable) as caught:
        parse_lookup(answer, 1)
    assert caught.value.reason == "bad_response"
    assert status_of(caught.value) == 503


def lookup_with(transport, timeout_s=0.5, token=None):
    async def go():
        client = FeatureClient("http://features", timeout_s, transport=transport, token=token)
        try:
            return await client.lookup(transactions("c1"))
        finally:
            await client.aclose()

    return run(go())


def test_the_client_posts_to_get_online_features_and_parses_the_answer():
    seen = []

    def handler(body):
        seen.append(body)
        return feast_answer(body["entities"]["card_id"], body["entities"]["merchant_id"], known_values(1))

    rows = lookup_with(feast_transport(handler)).values
    assert seen[0]["entities"]["card_id"] == ["c1"]
    assert rows[0]["txn_count_1h"] == 1.0


def test_every_phase_of_a_lookup_is_bounded_by_the_features_timeout():
    # The process test (test_server.py) shows a hung feature service ends in a 503; this pins that the bound
    # is FEATURES_TIMEOUT_S and not httpx's 5 s default, without timing anything.
    feast = feast_transport(lambda body: feast_answer(body["entities"]["card_id"], body["entities"]["merchant_id"],
                                                      known_values(1)))
    seen = []

    def recording(request):
        seen.append(request.extensions["timeout"])
        return feast.handle_request(request)

    lookup_with(httpx.MockTransport(recording), timeout_s=0.3)
    assert seen == [{"connect": 0.3, "read": 0.3, "write": 0.3, "pool": 0.3}]


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (httpx.ReadTimeout("slow"), "timeout"),
        (httpx.ConnectTimeout("slow"), "timeout"),
        (httpx.ConnectError("refused"), "unreachable"),
    ],
)
def test_transport_failures_are_feature_service_unavailable_with_a_bounded_reason(error, reason):
    def handler(request):
        raise error

    with pytest.raises(FeaturesUnavailable) as caught:
        lookup_with(httpx.MockTransport(handler))
    assert caught.value.reason == reason
    assert "feature service is unavailable" in str(caught.value)


def test_an_error_status_from_feast_is_feature_service_unavailable():
    with pytest.raises(FeaturesUnavailable) as caught:
        lookup_with(feast_transport(lambda body: httpx.Response(500, text="registry not applied")))
    assert caught.value.reason == "http_error"
    assert "500" in str(caught.value)


def test_the_callers_message_names_neither_the_address_nor_the_reply_and_the_log_has_both_once(caplog):
    transport = feast_transport(lambda body: httpx.Response(500, text="internal: redis://10.0.0.7 refused"))

    async def go():
        client = FeatureClient("http://features.internal:6566", 0.5, transport=transport)
        errors = []
        for _ in range(3):
            with pytest.raises(FeaturesUnavailable) as caught:
                await client.lookup(transactions("c1"))
            errors.append(str(caught.value))
        await client.aclose()
        return errors

    with caplog.at_level("INFO", logger="flywheel_transformer.features"):
        errors = run(go())
    for error in errors:
        assert "features.internal" not in error and "redis" not in error
    lines = [r.getMessage() for r in caplog.records if r.name == "flywheel_transformer.features"]
    assert len(lines) == 1  # once per outage, not per request
    assert "features.internal:6566" in lines[0] and "redis://10.0.0.7" in lines[0]


def authorizations(answer):
    """A mock feature server recording each request's Authorization header (None when absent)."""
    seen = []

    def handler(request):
        seen.append(request.headers.get("authorization"))
        return answer

    return httpx.MockTransport(handler), seen


def test_the_features_read_token_is_sent_and_re_read_when_its_file_changes(tmp_path):
    path = tmp_path / "features-read"
    path.write_text("first\n")
    transport, seen = authorizations(httpx.Response(200, json=feast_answer(["c1"], ["m00001"], known_values(1))))
    lookup_with(transport, token=TokenFile(path))
    path.write_text("second-and-longer\n")  # a rotated Secret: no restart
    lookup_with(transport, token=TokenFile(path))
    assert seen == ["Bearer first", "Bearer second-and-longer"]


def test_without_a_token_file_no_authorization_is_sent():
    transport, seen = authorizations(httpx.Response(200, json=feast_answer(["c1"], ["m00001"], known_values(1))))
    lookup_with(transport)
    assert seen == [None]


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_credential_is_a_503_naming_the_feature_service_and_unauthorized(status):
    transport, _ = authorizations(httpx.Response(status, json={"error": "send Authorization", "code": "unauthorized"}))
    with pytest.raises(FeaturesUnavailable) as caught:
        lookup_with(transport)
    assert (caught.value.reason, status_of(caught.value)) == ("unauthorized", 503)
    assert "feature service" in str(caught.value) and "unauthorized" in str(caught.value)
    assert "FLYWHEEL_TRANSFORMER_FEATURES_TOKEN_FILE" in str(caught.value)
