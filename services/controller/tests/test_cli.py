"""`kubectl flywheel` end to end against a fake kubectl.

The fake is a small Python script written into tmp_path: it records its argv (and KUBECONFIG), answers
`get` and `patch` from a JSON file that plays the cluster, and, when told to, plays the controller too (the
next `get` after an intent marks it handled). Waiting goes through an injected sleep, so no test sleeps.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml

from flywheel_contracts import DecisionRecord, ModelRolloutSpec, ModelRolloutStatus, Phase
from flywheel_controller._cli import main

RESOURCE = "modelrollouts.flywheel.dev"

FAKE_KUBECTL = textwrap.dedent('''
    import json, os, sys

    STATE, LOG = sys.argv[1], sys.argv[2]
    argv = sys.argv[3:]
    with open(LOG, "a") as f:
        f.write(json.dumps({"argv": argv, "KUBECONFIG": os.environ.get("KUBECONFIG")}) + "\\n")
    with open(STATE) as f:
        state = json.load(f)

    def save():
        with open(STATE, "w") as f:
            json.dump(state, f)

    namespace, args, i = None, [], 0
    while i < len(argv):
        if argv[i] in ("-n", "--namespace"):
            namespace = argv[i + 1]
        if argv[i] in ("-n", "--namespace", "--kubeconfig", "--context"):
            i += 2
            continue
        args.append(argv[i])
        i += 1
    namespace = namespace or state["context_namespace"]
    verb = args[0]
    failure = state["fail"].get(verb) or state["fail"].get("*")
    if failure:
        sys.stderr.write(failure)
        sys.exit(1)
    if verb == "config":
        print(state["context_namespace"])
        sys.exit(0)
    if verb == "get" and (len(args) == 4 or "--all-namespaces" in args):
        items = [o for k, o in sorted(state["objects"].items()) if "--all-namespaces" in args or k.startswith(namespace + "/")]
        print(state["raw"] if state["raw"] is not None else json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
        sys.exit(0)
    name = args[2]
    key = f"{namespace}/{name}"
    if state["script"].get(key):  # the object changes as a watch polls it
        state["objects"][key] = state["script"][key].pop(0)
    obj = state["objects"].get(key)
    if obj is None:
        sys.stderr.write(f'Error from server (NotFound): {args[1]} "{name}" not found\\n')
        sys.exit(1)
    status = obj.setdefault("status", {})
    if verb == "patch":
        status.update(json.loads(args[args.index("-p") + 1])["status"])
    elif state["controller"] is not None and status.get("intent") and status.get("intentHandled") != status["intent"]["id"]:
        status.update(json.loads(json.dumps(state["controller"]).replace("{id}", status["intent"]["id"])))
        status["intentHandled"] = status["intent"]["id"]
    save()
    print(state["raw"] if state["raw"] is not None else json.dumps(obj))
''')


def rollout_object(name: str = "fraud-v2-canary", namespace: str = "default", **status) -> dict:
    """The object as the API server returns it, built from the contract models."""
    spec = ModelRolloutSpec.model_validate({
        "model": "fraud",
        "stable": {"version": "v1"},
        "candidate": {"version": "v2"},
        "strategy": {"type": "Canary", "canary": {"steps": [{"setWeight": 10}, {"pause": {}}, {"setWeight": 50}]}},
    })
    return {
        "apiVersion": "flywheel.dev/v1alpha1",
        "kind": "ModelRollout",
        "metadata": {"name": name, "namespace": namespace, "creationTimestamp": "2025-05-01T12:00:00Z"},
        "spec": spec.model_dump(mode="json", by_alias=True, exclude_none=True),
        "status": ModelRolloutStatus(**status).to_json(),
    }


class FakeCluster:
    def __init__(self, tmp_path: Path) -> None:
        self.state_path, self.log_path = tmp_path / "cluster.json", tmp_path / "calls.jsonl"
        self.bin = tmp_path / "bin"
        self.bin.mkdir()
        self.kubectl = self.bin / "kubectl"
        self.kubectl.write_text(
            f"#!/bin/sh\nexec {sys.executable} {tmp_path / 'fake_kubectl.py'} {self.state_path} {self.log_path} \"$@\"\n"
        )
        self.kubectl.chmod(0o755)
        (tmp_path / "fake_kubectl.py").write_text(FAKE_KUBECTL)
        self.log_path.write_text("")
        self.state = {"objects": {}, "script": {}, "fail": {}, "controller": None, "raw": None, "context_namespace": "default"}
        self.save()

    def save(self) -> None:
        self.state_path.write_text(json.dumps(self.state))

    def add(self, obj: dict) -> None:
        self.state["objects"][f"{obj['metadata']['namespace']}/{obj['metadata']['name']}"] = obj
        self.save()

    def set(self, **changes) -> None:
        self.state.update(changes)
        self.save()

    def object(self, name: str = "fraud-v2-canary", namespace: str = "default") -> dict:
        return json.loads(self.state_path.read_text())["objects"][f"{namespace}/{name}"]

    @property
    def calls(self) -> list[dict]:
        return [json.loads(line) for line in self.log_path.read_text().splitlines()]

    @property
    def patches(self) -> list[list[str]]:
        return [c["argv"] for c in self.calls if "patch" in c["argv"]]


@pytest.fixture
def cluster(tmp_path, monkeypatch) -> FakeCluster:
    fake = FakeCluster(tmp_path)
    monkeypatch.setenv("KUBECTL", str(fake.kubectl))
    monkeypatch.delenv("NO_COLOR", raising=False)
    return fake


@dataclass
class Result:
    code: int
    out: str
    err: str
    sleeps: list[float]


def flywheel(*argv: str, sleep=None) -> Result:
    out, err, sleeps = io.StringIO(), io.StringIO(), []
    code = main(list(argv), stdout=out, stderr=err, sleep=sleep or sleeps.append)
    return Result(code, out.getvalue(), err.getvalue(), sleeps)


# ------------------------------------------------------------------------------------------------- reading


def test_list_shows_the_rollouts_of_the_namespace(cluster):
    cluster.add(rollout_object("fraud-v2-canary", phase=Phase.PROGRESSING, candidate_weight=10, stable_version="v1"))
    cluster.add(rollout_object("elsewhere", namespace="other"))

    result = flywheel("list")

    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0].split()[:3] == ["NAME", "MODEL", "STRATEGY"]
    assert lines[1].split()[:8] == ["fraud-v2-canary", "fraud", "Canary", "v1", "v2", "10%", "1/3", "Progressing"]
    assert len(lines) == 2
    assert cluster.calls[0]["argv"] == ["get", RESOURCE, "-o", "json"]


def test_list_across_namespaces_asks_kubectl_for_all_of_them(cluster):
    cluster.add(rollout_object("a"))
    cluster.add(rollout_object("b", namespace="other"))

    result = flywheel("list", "-A")

    assert [line.split()[:2] for line in result.out.splitlines()[1:]] == [["default", "a"], ["other", "b"]]
    assert "--all-namespaces" in cluster.calls[0]["argv"]


def test_global_flags_and_kubeconfig_reach_kubectl_before_or_after_the_command(cluster, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", "/tmp/team.yaml")
    cluster.add(rollout_object(namespace="ml"))

    before = flywheel("--kubeconfig", "/tmp/k.yaml", "--context", "prod", "-n", "ml", "status", "fraud-v2-canary")
    after = flywheel("status", "fraud-v2-canary", "--namespace", "ml", "--context", "prod")

    assert before.code == after.code == 0
    assert cluster.calls[0]["argv"] == [
        "--kubeconfig", "/tmp/k.yaml", "--context", "prod", "--namespace", "ml", "get", RESOURCE, "fraud-v2-canary",
        "-o", "json",
    ]
    assert cluster.calls[1]["argv"][:4] == ["--context", "prod", "--namespace", "ml"]
    assert {c["KUBECONFIG"] for c in cluster.calls} == {"/tmp/team.yaml"}


def test_kubectl_is_found_on_path_without_kubectl_env(cluster, monkeypatch):
    monkeypatch.delenv("KUBECTL")
    monkeypatch.setenv("PATH", f"{cluster.bin}{os.pathsep}{os.environ['PATH']}")

    assert flywheel("list").code == 0
    assert len(cluster.calls) == 1


def test_status_prints_the_summary(cluster):
    cluster.add(rollout_object(phase=Phase.PAUSED, candidate_weight=10, current_step_index=1, stable_version="v1"))

    result = flywheel("status", "fraud-v2-canary")

    assert result.code == 0
    assert "Phase:            Paused" in result.out
    assert "Versions:         v1 (stable) -> v2 (candidate)" in result.out
    assert "  >  2  pause (until promoted)" in result.out
    assert "\x1b[" not in result.out  # not a TTY: no colour


@pytest.mark.parametrize("output, load", [("json", json.loads), ("yaml", yaml.safe_load)])
def test_status_prints_the_object_as_json_or_yaml(cluster, output, load):
    obj = rollout_object(phase=Phase.PROGRESSING)
    cluster.add(obj)

    result = flywheel("status", "fraud-v2-canary", "-o", output)

    assert result.code == 0
    assert load(result.out) == obj


def test_watch_redraws_on_change_until_the_phase_is_terminal(cluster):
    first = rollout_object(phase=Phase.PROGRESSING, candidate_weight=10)
    cluster.add(first)
    cluster.set(script={"default/fraud-v2-canary": [
        first, first, rollout_object(phase=Phase.PROGRESSING, candidate_weight=50), rollout_object(phase=Phase.SUCCEEDED),
    ]})

    result = flywheel("status", "fraud-v2-canary", "--watch", "--interval", "5")

    assert result.code == 0
    assert result.out.count("Name:  ") == 3  # the unchanged second poll drew nothing
    assert result.sleeps == [5.0, 5.0, 5.0]
    assert result.out.rstrip().split("\n\n")[-1].startswith("Decisions")  # ends on the Succeeded drawing
    assert "Succeeded" in result.out.split("Name:  ")[-1]


def test_ctrl_c_ends_a_watch_quietly(cluster):
    cluster.add(rollout_object(phase=Phase.PROGRESSING))

    def interrupt(seconds: float) -> None:
        raise KeyboardInterrupt

    result = flywheel("status", "fraud-v2-canary", "-w", sleep=interrupt)

    assert result.code == 0
    assert result.err == ""


# ----------------------------------------------------------------------------------------------- intents


def intent_of(patch_argv: list[str]) -> dict:
    assert "--subresource=status" in patch_argv and "--type=merge" in patch_argv
    body = json.loads(patch_argv[patch_argv.index("-p") + 1])
    assert list(body) == ["status"] and list(body["status"]) == ["intent"]
    return body["status"]["intent"]


def test_promote_writes_an_intent_to_the_status_subresource_and_reports_what_the_controller_did(cluster):
    cluster.add(rollout_object(phase=Phase.PAUSED, candidate_weight=10))
    cluster.set(controller={
        "phase": "Progressing", "candidateWeight": 50,
        "decisions": [DecisionRecord(time=datetime(2025, 5, 1, tzinfo=timezone.utc), action="Promote", weight=50,
                                     message="promoted by a person: step 3/3, 50% to v2").model_dump(mode="json", by_alias=True, exclude_none=True)],
    })

    result = flywheel("promote", "fraud-v2-canary")

    assert result.code == 0, result.err
    assert result.out == "promote fraud-v2-canary: handled; Progressing, 50% to v2: promoted by a person: step 3/3, 50% to v2\n"
    [patch] = cluster.patches
    assert patch[:3] == ["patch", RESOURCE, "fraud-v2-canary"]
    intent = intent_of(patch)
    assert re.fullmatch(r"[0-9a-f]{12}", intent["id"])
    assert (intent["action"], intent["full"]) == ("promote", False)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", intent["requestedAt"])
    assert cluster.object()["status"]["intentHandled"] == intent["id"]


def test_a_request_the_controller_refuses_exits_2_with_its_reason(cluster):
    cluster.add(rollout_object(phase=Phase.PROGRESSING))
    # The fake controller records the refusal the way the real one does: an Ignored decision naming the id.
    cluster.set(controller={"decisions": [{
        "time": "2025-05-01T12:00:00Z", "action": "Ignored", "message": "pause ({id}) ignored: the rollout already ended",
    }]})

    result = flywheel("pause", "fraud-v2-canary")

    assert result.code == 2
    intent_id = cluster.object()["status"]["intentHandled"]
    assert result.err == (
        f"error: the controller refused to pause fraud-v2-canary: pause ({intent_id}) ignored: the rollout already ended\n"
    )


def test_promote_full_asks_to_skip_the_remaining_steps(cluster):
    cluster.add(rollout_object(phase=Phase.PROGRESSING))

    result = flywheel("promote", "fraud-v2-canary", "--full", "--no-wait")

    assert result.code == 0
    assert intent_of(cluster.patches[0])["full"] is True
    assert "promote --full" in result.out


def test_no_wait_returns_once_the_intent_is_written(cluster):
    cluster.add(rollout_object(phase=Phase.PROGRESSING))

    result = flywheel("abort", "fraud-v2-canary", "--no-wait")

    assert result.code == 0
    assert [c["argv"][0] for c in cluster.calls] == ["get", "patch"]
    assert "kubectl flywheel status fraud-v2-canary" in result.out


def test_a_controller_that_never_answers_times_out_with_a_hint(cluster):
    cluster.add(rollout_object(phase=Phase.PROGRESSING))

    result = flywheel("pause", "fraud-v2-canary", "--timeout", "0.01")

    assert result.code == 1
    assert "the controller has not picked it up within 0.01 s" in result.err
    assert "is it running? kubectl get pods -A -l app.kubernetes.io/component=controller" in result.err
    assert all(s <= 0.01 for s in result.sleeps)
    assert "Traceback" not in result.err


@pytest.mark.parametrize("action, allowed", [
    ("promote", {"Progressing", "Paused"}),
    ("abort", {"Pending", "Progressing", "Paused"}),
    ("retry", {"RolledBack", "Aborted", "Failed"}),
    ("undo", {"Succeeded"}),
    ("pause", {"Progressing"}),
    ("resume", {"Paused"}),
])
def test_each_request_is_sent_only_in_the_phases_that_allow_it(cluster, action, allowed):
    for phase in Phase:
        cluster.add(rollout_object(phase.value.lower(), phase=phase, previous_stable_version="v0"))

        result = flywheel(action, phase.value.lower(), "--no-wait")

        assert result.code == (0 if phase.value in allowed else 2), (phase, result.err)
    assert len(cluster.patches) == len(allowed)


def test_the_wrong_phase_is_refused_in_words(cluster):
    cluster.add(rollout_object(phase=Phase.SUCCEEDED))

    result = flywheel("promote", "fraud-v2-canary")

    assert result.code == 2
    assert result.err == "error: cannot promote fraud-v2-canary: it is Succeeded (promote needs Progressing or Paused)\n"
    assert cluster.patches == []


def test_undo_needs_a_previous_stable_to_return_to(cluster):
    cluster.add(rollout_object(phase=Phase.SUCCEEDED))

    result = flywheel("undo", "fraud-v2-canary")

    assert result.code == 2
    assert "no previous stable version" in result.err
    assert cluster.patches == []


def test_replacing_an_unhandled_intent_is_mentioned(cluster):
    pending = {"id": "abc123", "action": "pause"}
    cluster.add(rollout_object(phase=Phase.PROGRESSING, intent=pending))

    result = flywheel("abort", "fraud-v2-canary", "--no-wait")

    assert result.code == 0
    assert "replacing an earlier pause the controller has not handled yet" in result.err


# ------------------------------------------------------------------------------------------------ errors


def test_a_missing_rollout_names_the_namespace_kubectl_uses(cluster):
    cluster.set(context_namespace="ml")

    result = flywheel("status", "nope")

    assert result.code == 1
    assert result.err == "error: no ModelRollout 'nope' in namespace 'ml' (kubectl flywheel list shows the rollouts)\n"


def test_a_missing_crd_says_how_to_install_it(cluster):
    cluster.set(fail={"get": 'error: the server doesn\'t have a resource type "modelrollouts"\n'})

    result = flywheel("list")

    assert result.code == 1
    assert result.err == "error: the cluster has no ModelRollout CRD: install the chart or kubectl apply -f manifests/crds/\n"


def test_an_unreachable_cluster_shows_kubectls_message_without_the_klog_noise(cluster):
    noise = 'E0501 12:00:00.267893   23818 memcache.go:265] "Unhandled Error" err="couldn\'t get current server API group list"\n'
    cluster.set(fail={"*": noise * 3 + "The connection to the server localhost:8080 was refused - did you specify the right host or port?\n"})

    result = flywheel("status", "fraud-v2-canary")

    assert result.code == 1
    assert result.err == (
        "error: cannot reach the cluster: The connection to the server localhost:8080 was refused - "
        "did you specify the right host or port?\n"
    )


def test_a_bad_kubeconfig_or_context_reads_as_unreachable_without_a_doubled_error_prefix(cluster):
    cluster.set(fail={"*": 'error: context "prod" does not exist\n'})

    result = flywheel("--context", "prod", "list")

    assert result.err == 'error: cannot reach the cluster: context "prod" does not exist\n'


def test_forbidden_names_the_verb_and_the_resource(cluster):
    cluster.add(rollout_object(phase=Phase.PROGRESSING))
    cluster.set(fail={"patch": (
        'Error from server (Forbidden): modelrollouts.flywheel.dev "fraud-v2-canary" is forbidden: User "dev" cannot '
        'patch resource "modelrollouts/status" in API group "flywheel.dev" in the namespace "default"\n'
    )})

    result = flywheel("abort", "fraud-v2-canary")

    assert result.code == 1
    assert result.err.startswith(
        "error: forbidden: you may not patch modelrollouts/status (API group flywheel.dev) in namespace 'default'"
    )


def test_a_missing_kubectl_is_said_plainly(cluster, monkeypatch):
    monkeypatch.setenv("KUBECTL", str(cluster.bin / "no-such-kubectl"))

    result = flywheel("list")

    assert result.code == 1
    assert result.err.startswith("error: cannot find $KUBECTL")


def test_an_object_this_plugin_cannot_read_is_an_error_not_a_crash(cluster):
    broken = rollout_object()
    broken["spec"]["strategy"] = {"type": "Canary"}  # no steps
    cluster.add(broken)

    result = flywheel("status", "fraud-v2-canary")

    assert result.code == 1
    assert "does not read as flywheel.dev/v1alpha1" in result.err


def test_an_unexpected_failure_is_one_line_not_a_traceback(cluster):
    cluster.add(rollout_object())
    cluster.set(raw="[]")  # JSON, but not an object

    result = flywheel("status", "fraud-v2-canary")

    assert result.code == 1
    assert result.err.startswith("error: unexpected AttributeError")
    assert "Traceback" not in result.err and len(result.err.splitlines()) == 1


@pytest.mark.parametrize("setup", [
    {"raw": "not json"},
    {"raw": "[]"},
    {"fail": {"*": "Unable to connect to the server: dial tcp 10.0.0.1:443: i/o timeout\n"}},
    {"fail": {"*": "something nobody has seen before\n"}},
])
def test_the_installed_script_never_prints_a_traceback(cluster, setup):
    cluster.add(rollout_object(phase=Phase.PROGRESSING))
    cluster.set(**setup)
    script = Path(sys.executable).parent / "kubectl-flywheel"

    for argv in (["status", "fraud-v2-canary"], ["promote", "fraud-v2-canary"], ["list"]):
        done = subprocess.run([str(script), *argv], capture_output=True, text=True, env=os.environ.copy(), check=False)

        assert done.returncode == 1, done
        assert "Traceback" not in done.stderr
        assert done.stderr.startswith("error: ") and len(done.stderr.splitlines()) == 1


# -------------------------------------------------------------------------------------------------- usage


@pytest.mark.parametrize("command", [
    [], ["list"], ["status"], ["promote"], ["abort"], ["retry"], ["undo"], ["pause"], ["resume"], ["version"],
])
def test_every_command_has_help(command, capsys):
    assert main([*command, "--help"]) == 0
    assert capsys.readouterr().out.startswith("usage: kubectl flywheel")


def test_a_usage_error_exits_2(capsys):
    assert main(["promote"]) == 2
    assert "the following arguments are required: name" in capsys.readouterr().err


def test_version_needs_no_cluster(cluster):
    result = flywheel("version")

    assert result.code == 0
    assert re.fullmatch(r"kubectl-flywheel \S+ \(ModelRollout flywheel.dev/v1alpha1\)\n", result.out)
    assert cluster.calls == []
