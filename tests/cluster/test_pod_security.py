"""PodSecurity admission enforces the restricted standard in a labelled namespace."""

from __future__ import annotations

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

IMAGE = "registry.invalid/flywheel/app:1"


def _pod(name: str, security: client.V1SecurityContext | None) -> client.V1Pod:
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1PodSpec(containers=[client.V1Container(
            name="app", image=IMAGE, security_context=security)]),
    )


RESTRICTED = client.V1SecurityContext(
    run_as_non_root=True, run_as_user=10001, allow_privilege_escalation=False,
    capabilities=client.V1Capabilities(drop=["ALL"]),
    seccomp_profile=client.V1SeccompProfile(type="RuntimeDefault"),
)


def test_privileged_pod_is_rejected_in_restricted_namespace(api, restricted_namespace):
    core = client.CoreV1Api(api)
    with pytest.raises(ApiException) as err:
        core.create_namespaced_pod(restricted_namespace, _pod(
            "bad", client.V1SecurityContext(privileged=True)))
    assert err.value.status == 403
    assert "violates PodSecurity" in err.value.body


def test_compliant_pod_is_admitted_in_restricted_namespace(api, restricted_namespace):
    core = client.CoreV1Api(api)
    created = core.create_namespaced_pod(restricted_namespace, _pod("good", RESTRICTED))
    assert created.metadata.uid


def test_unlabelled_namespace_admits_the_same_privileged_pod(api, namespace):
    created = client.CoreV1Api(api).create_namespaced_pod(
        namespace, _pod("priv", client.V1SecurityContext(privileged=True)))
    assert created.metadata.uid
