"""What a `feast apply` would change, one phrase per object, from Feast's own plan.

Feast's apply prints, for every property that differs, the whole protobuf before and after, in ANSI colour.
After a materialize, each feature view differs from its definition only in the created / last-updated
timestamps Feast stamps on the batch and stream sources embedded in it, so every warm `make features`
printed ~170 lines of identical protobufs and rewrote the registry for nothing. Here a difference made of
those timestamps alone is no difference; anything else is named (object, and which properties).
"""

from __future__ import annotations

from typing import Any

from feast.diff.infra_diff import InfraDiff
from feast.diff.property_diff import TransitionType
from feast.diff.registry_diff import RegistryDiff
from feast.feature_view import DUMMY_ENTITY_NAME
from google.protobuf.message import Message

STAMPS = frozenset({"created_timestamp", "last_updated_timestamp"})
"""Fields Feast sets to the time of a registry write: not part of a definition."""

_VERBS = {TransitionType.CREATE: "created", TransitionType.DELETE: "deleted", TransitionType.UPDATE: "updated"}


def _unstamped(message: Message) -> Message:
    """A copy of `message` with every STAMPS field cleared, at any depth."""
    copy = type(message)()
    copy.CopyFrom(message)
    _clear_stamps(copy)
    return copy


def _clear_stamps(message: Message) -> None:
    for field, value in message.ListFields():
        if field.name in STAMPS:
            message.ClearField(field.name)
        elif field.message_type is None:
            continue
        elif field.is_repeated and field.message_type.GetOptions().map_entry:
            if field.message_type.fields_by_name["value"].message_type is not None:
                for item in value.values():
                    _clear_stamps(item)
        elif field.is_repeated:
            for item in value:
                _clear_stamps(item)
        else:
            _clear_stamps(value)


def differs(existing: Any, declared: Any) -> bool:
    """True unless the two values are equal once Feast's write timestamps are set aside."""
    if isinstance(existing, Message) and isinstance(declared, Message):
        return _unstamped(existing) != _unstamped(declared)
    try:
        pairs = list(zip(existing, declared, strict=True))
    except (TypeError, ValueError):  # not both sequences, or of different lengths
        return existing != declared
    if pairs and all(isinstance(a, Message) and isinstance(b, Message) for a, b in pairs):
        return any(differs(a, b) for a, b in pairs)
    return existing != declared


def changes(registry_diff: RegistryDiff, infra_diff: InfraDiff) -> list[str]:
    """What applying the plan would change, e.g. `updated feature view card_activity (ttl)`; [] if nothing."""
    said = []
    for diff in registry_diff.feast_object_diffs:
        if diff.name == DUMMY_ENTITY_NAME or diff.transition_type not in _VERBS:
            continue
        what = f"{_VERBS[diff.transition_type]} {diff.feast_object_type.value} {diff.name}"
        if diff.transition_type == TransitionType.UPDATE:
            properties = [
                p.property_name for p in diff.feast_object_property_diffs if differs(p.val_existing, p.val_declared)
            ]
            if not properties:
                continue
            what += f" ({', '.join(properties)})"
        said.append(what)
    for infra in infra_diff.infra_object_diffs:
        if infra.transition_type in _VERBS:
            said.append(f"{_VERBS[infra.transition_type]} {infra.infra_object_type} {infra.name}")
    return said
