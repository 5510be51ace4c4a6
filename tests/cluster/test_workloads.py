"""Workload controllers run end to end: scheduler, controllers and kwok's pod lifecycle."""

from __future__ import annotations

from kubernetes import client

from conftest import wait_for

IMAGE = "registry.invalid/flywheel/app:1"  # never pulled: kwok runs no containers


def _pod_spec(labels: dict[str, str], restart: str = "Always") -> client.V1PodTemplateSpec:
    return client.V1PodTemplateSpec(
        metadata=client.V1ObjectMeta(labels=labels),
        spec=client.V1PodSpec(restart_policy=restart, containers=[client.V1Container(
            name="app", image=IMAGE, ports=[client.V1ContainerPort(container_port=8080)],
            resources=client.V1ResourceRequirements(requests={"cpu": "100m", "memory": "64Mi"}),
        )]),
    )


def _deployment(name: str, replicas: int) -> client.V1Deployment:
    labels = {"app": name}
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1DeploymentSpec(
            replicas=replicas, selector=client.V1LabelSelector(match_labels=labels),
            template=_pod_spec(labels)),
    )


def _condition(obj, kind: str) -> bool:
    return any(c.type == kind and c.status == "True" for c in (obj.status.conditions or []))


def test_deployment_becomes_available(api, namespace):
    apps = client.AppsV1Api(api)
    apps.create_namespaced_deployment(namespace, _deployment("web", 2))

    def available():
        d = apps.read_namespaced_deployment("web", namespace)
        return d.status.available_replicas == 2 and _condition(d, "Available")

    wait_for("Deployment web Available with 2 replicas", available)


def test_job_completes(api, namespace):
    batch = client.BatchV1Api(api)
    batch.create_namespaced_job(namespace, client.V1Job(
        metadata=client.V1ObjectMeta(name="train"),
        spec=client.V1JobSpec(completions=2, parallelism=2, backoff_limit=0,
                              template=_pod_spec({"job": "train"}, restart="Never")),
    ))

    def complete():
        j = batch.read_namespaced_job("train", namespace)
        return j.status.succeeded == 2 and _condition(j, "Complete")

    wait_for("Job train Complete with 2 succeeded pods", complete)


def test_service_gets_ready_endpoints(api, namespace):
    client.AppsV1Api(api).create_namespaced_deployment(namespace, _deployment("api", 2))
    client.CoreV1Api(api).create_namespaced_service(namespace, client.V1Service(
        metadata=client.V1ObjectMeta(name="api"),
        spec=client.V1ServiceSpec(selector={"app": "api"}, ports=[
            client.V1ServicePort(name="http", port=80, target_port=8080)]),
    ))
    discovery = client.DiscoveryV1Api(api)

    def ready_addresses():
        slices = discovery.list_namespaced_endpoint_slice(
            namespace, label_selector="kubernetes.io/service-name=api").items
        return [a for s in slices for e in (s.endpoints or []) if e.conditions.ready
                for a in e.addresses]

    addresses = wait_for("2 ready addresses in Service api's EndpointSlices",
                         lambda: len(ready_addresses()) == 2 and ready_addresses())
    assert len(set(addresses)) == 2


def test_gpu_pod_is_scheduled_onto_a_node_advertising_nvidia_gpu(api, namespace):
    core = client.CoreV1Api(api)
    gpu_nodes = [n.metadata.name for n in core.list_node().items
                 if int((n.status.allocatable or {}).get("nvidia.com/gpu", "0")) > 0]
    if not gpu_nodes:
        import pytest

        pytest.skip("no node advertises nvidia.com/gpu in this cluster")
    template = _pod_spec({"app": "gpu"})
    template.spec.containers[0].resources.limits = {"nvidia.com/gpu": "1"}
    template.spec.tolerations = [client.V1Toleration(
        key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")]
    core.create_namespaced_pod(namespace, client.V1Pod(
        metadata=client.V1ObjectMeta(name="gpu"), spec=template.spec))

    def running():
        p = core.read_namespaced_pod("gpu", namespace)
        return p.status.phase == "Running" and p.spec.node_name

    assert wait_for("GPU pod Running", running) in gpu_nodes
