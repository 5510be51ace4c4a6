"""`kubectl flywheel`: list, inspect and steer ModelRollouts, and ask a RetrainPolicy for a run (`retrain`), from a
terminal (the `kubectl-flywheel` script).

It shells out to `kubectl` rather than speaking to the API server itself: kubectl already understands every
kubeconfig form and auth plugin (exec, OIDC, cloud CLIs), and a person's --kubeconfig/--context/-n (and
KUBECONFIG) mean exactly what they mean to kubectl. Reads are `kubectl get -o json`; a person's request
(promote, abort, ...) is a merge patch of `status.intent` on the status subresource, which a GitOps sync of an
unchanged spec never touches (see flywheel_contracts.rollout). The controller handles an intent once and
records its id in `status.intentHandled`; this command waits for that and says what happened.

Exit codes: 0 done, 1 an error (cluster, RBAC, no such rollout, the controller did not answer in time),
2 a usage error or a request the rollout's phase does not allow (checked here, or refused by the controller).
Every failure is one sentence on stderr, never a traceback (FLYWHEEL_DEBUG=1 shows one for an unexpected error).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
import traceback
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from importlib import metadata
from typing import TextIO

import yaml
from pydantic import ValidationError

from flywheel_contracts import Intent, IntentAction, ModelRollout, Phase
from flywheel_contracts.retrain import MANUAL_REQUEST_ANNOTATION, RetrainPolicy
from flywheel_contracts.retrain import PLURAL as POLICY_PLURAL
from flywheel_contracts.rollout import GROUP, PLURAL, VERSION

from ._cli_render import render_list, render_outcome, render_status

RESOURCE = f"{PLURAL}.{GROUP}"
"""Fully qualified, so another group's `modelrollouts` (or a short name clash) can never be meant."""
POLICY_RESOURCE = f"{POLICY_PLURAL}.{GROUP}"
WAIT_POLL_S = 0.5
KUBECTL_TIMEOUT_S = 60.0
"""Longest one kubectl call may take before the cluster counts as unreachable."""
CONTROLLER_HINT = "kubectl get pods -A -l app.kubernetes.io/component=controller"

_ALLOWED: dict[IntentAction, tuple[frozenset[Phase], str]] = {
    IntentAction.PROMOTE: (frozenset({Phase.PROGRESSING, Phase.PAUSED}), "Progressing or Paused"),
    IntentAction.ABORT: (frozenset(p for p in Phase if not p.is_terminal()), "Pending, Progressing or Paused"),
    IntentAction.RETRY: (frozenset({Phase.ROLLED_BACK, Phase.ABORTED, Phase.FAILED}), "RolledBack, Aborted or Failed"),
    IntentAction.UNDO: (frozenset({Phase.SUCCEEDED}), "Succeeded"),
    IntentAction.PAUSE: (frozenset({Phase.PROGRESSING}), "Progressing"),
    IntentAction.RESUME: (frozenset({Phase.PAUSED}), "Paused"),
}
_KLOG = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+\s+\d+ [^\]]*\] ")
_UNREACHABLE = (
    "connection refused", "unable to connect to the server", "no such host", "i/o timeout", "timeout",
    "did you specify the right host", "no configuration has been provided", "invalid configuration",
    "does not exist", "error loading config", "no such file or directory", "certificate", "x509",
    "unauthorized", "must be logged in", "getting credentials", "tls:", "context was not found",
    "error in configuration",
)
_CRD_MISSING = ("doesn't have a resource type", "could not find the requested resource", "no matches for kind")


class CliError(Exception):
    """A failure said in one sentence to a person; `code` is the exit status."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------------------------------------- kubectl


def _first_error_line(stderr: str) -> str:
    """kubectl's own message, skipping klog's repeated "E1130 12:00:00.1 123 memcache.go:265]" noise."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    plain = [line for line in lines if not _KLOG.match(line)]
    first = plain[0] if plain else _KLOG.sub("", lines[0]) if lines else "kubectl failed without a message"
    return first.removeprefix("error: ")  # ours says "error: " already


class Kubectl:
    """Runs kubectl with the person's global flags; turns its failures into CliErrors a person understands."""

    def __init__(self, exe: str, kubeconfig: str | None, context: str | None, namespace: str | None) -> None:
        self.exe = exe
        self.namespace = namespace
        self.flags: list[str] = []
        for flag, value in (("--kubeconfig", kubeconfig), ("--context", context), ("--namespace", namespace)):
            if value:
                self.flags += [flag, value]

    @classmethod
    def find(cls, kubeconfig: str | None, context: str | None, namespace: str | None) -> Kubectl:
        wanted = os.environ.get("KUBECTL") or "kubectl"
        exe = shutil.which(wanted)
        if exe is None:
            where = f"$KUBECTL ({wanted})" if os.environ.get("KUBECTL") else "kubectl on PATH"
            raise CliError(f"cannot find {where}: install kubectl, or set KUBECTL to its path")
        return cls(exe, kubeconfig, context, namespace)

    def _run(self, args: list[str]) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                [self.exe, *self.flags, *args], capture_output=True, text=True, timeout=KUBECTL_TIMEOUT_S, check=False
            )
        except subprocess.TimeoutExpired as e:
            raise CliError(f"cannot reach the cluster: kubectl did not answer within {KUBECTL_TIMEOUT_S:.0f} s") from e
        except OSError as e:
            raise CliError(f"cannot run {self.exe}: {e.strerror or e}") from e

    def current_namespace(self) -> str:
        """The namespace kubectl would use (for messages): -n, else the context's, else default."""
        if self.namespace:
            return self.namespace
        try:
            done = self._run(["config", "view", "--minify", "-o", "jsonpath={..namespace}"])
        except CliError:
            return "default"
        return (done.stdout.strip() if done.returncode == 0 else "") or "default"

    def _fail(self, stderr: str, verb: str, name: str | None, kind: str = "ModelRollout") -> CliError:
        first = _first_error_line(stderr)
        low = stderr.lower()
        if any(s in low for s in _CRD_MISSING):
            return CliError(
                f"the cluster has no {kind} CRD: install the chart or kubectl apply -f manifests/crds/"
            )
        if "(notfound)" in low and name:
            listing = "kubectl flywheel list shows the rollouts" if kind == "ModelRollout" else (
                "kubectl get retrainpolicies lists them")
            return CliError(f"no {kind} '{name}' in namespace '{self.current_namespace()}' ({listing})")
        if "forbidden" in low:
            denied = re.search(r'cannot (\w+) resource "([^"]+)"', stderr)
            what = f"{denied.group(1)} {denied.group(2)}" if denied else f"{verb} {RESOURCE}"
            return CliError(
                f"forbidden: you may not {what} (API group {GROUP}) in namespace '{self.current_namespace()}'; "
                f"ask for a Role that allows it. kubectl said: {first}"
            )
        if "unknown flag: --subresource" in low:
            return CliError("this kubectl is too old for --subresource: kubectl flywheel needs kubectl 1.24 or newer")
        if any(s in low for s in _UNREACHABLE):
            return CliError(f"cannot reach the cluster: {first}")
        return CliError(f"kubectl {verb} failed: {first}")

    def _json(self, args: list[str], verb: str, name: str | None, kind: str = "ModelRollout") -> dict:
        done = self._run(args)
        if done.returncode != 0:
            raise self._fail(done.stderr, verb, name, kind)
        try:
            return json.loads(done.stdout)
        except json.JSONDecodeError as e:
            raise CliError(f"kubectl {verb} answered with something that is not JSON: {done.stdout[:80]!r}") from e

    def get(self, name: str) -> dict:
        return self._json(["get", RESOURCE, name, "-o", "json"], "get", name)

    def list(self, all_namespaces: bool) -> list[dict]:
        scope = ["--all-namespaces"] if all_namespaces else []
        return list(self._json(["get", RESOURCE, *scope, "-o", "json"], "list", None).get("items") or [])

    def patch_status(self, name: str, body: dict) -> None:
        patch = ["--subresource=status", "--type=merge", "-p", json.dumps(body, separators=(",", ":"))]
        self._json(["patch", RESOURCE, name, *patch, "-o", "json"], "patch", name)

    def get_policy(self, name: str) -> dict:
        return self._json(["get", POLICY_RESOURCE, name, "-o", "json"], "get", name, "RetrainPolicy")

    def annotate_policy(self, name: str, annotations: dict[str, str]) -> dict:
        body = json.dumps({"metadata": {"annotations": annotations}}, separators=(",", ":"))
        return self._json(["patch", POLICY_RESOURCE, name, "--type=merge", "-p", body, "-o", "json"], "patch", name,
                          "RetrainPolicy")


def _parse(obj: dict) -> ModelRollout:
    try:
        return ModelRollout.from_object(obj)
    except ValidationError as e:
        name = (obj.get("metadata") or {}).get("name", "?")
        problem = e.errors()[0]
        where = ".".join(str(p) for p in problem["loc"])
        raise CliError(
            f"ModelRollout '{name}' does not read as {GROUP}/{VERSION} ({where}: {problem['msg']}); "
            "is this plugin older than the CRD in the cluster?"
        ) from e


# --------------------------------------------------------------------------------------------- commands


class _Io:
    """Where output goes and how time passes: real in main(), replaced in tests (no real sleeps there)."""

    def __init__(self, out: TextIO, err: TextIO, sleep: Callable[[float], None], clock: Callable[[], float]):
        self.out, self.err, self.sleep, self.clock = out, err, sleep, clock
        self.tty = out.isatty() and os.environ.get("TERM") != "dumb"
        self.color = self.tty and not os.environ.get("NO_COLOR")

    def print(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _dump(obj: dict, output: str) -> str:
    if output == "yaml":
        return yaml.safe_dump(obj, sort_keys=False).rstrip("\n")
    return json.dumps(obj, indent=2)


def _list(args: argparse.Namespace, kubectl: Kubectl, io: _Io) -> int:
    items = kubectl.list(args.all_namespaces)
    if args.output:
        io.print(_dump({"apiVersion": "v1", "kind": "List", "items": items}, args.output))
        return 0
    rollouts = []
    for item in items:
        try:
            rollouts.append(_parse(item))
        except CliError as e:  # one unreadable rollout should not hide the others
            io.err.write(f"warning: {e}\n")
    io.print(render_list(rollouts, _now(), color=io.color, namespaces=args.all_namespaces))
    return 0


def _status(args: argparse.Namespace, kubectl: Kubectl, io: _Io) -> int:
    if not args.watch:
        obj = kubectl.get(args.name)
        io.print(_dump(obj, args.output) if args.output else render_status(_parse(obj), _now(), color=io.color))
        return 0
    shown = None
    try:
        while True:
            obj = kubectl.get(args.name)
            rollout = _parse(obj)
            # Redraw on a change of the object, not of the text: the relative times alone change every poll.
            seen = json.dumps([obj.get("spec"), obj.get("status")], sort_keys=True)
            if seen != shown:
                text = _dump(obj, args.output) if args.output else render_status(rollout, _now(), color=io.color)
                # A terminal is cleared and redrawn; a pipe or file gets each new state appended.
                io.print(("\x1b[H\x1b[2J" if io.tty else ("" if shown is None else "\n")) + text)
                shown = seen
            if rollout.status.phase.is_terminal():
                return 0
            io.sleep(args.interval)
    except KeyboardInterrupt:
        return 0


def _intent(args: argparse.Namespace, kubectl: Kubectl, io: _Io) -> int:
    action = IntentAction(args.command)
    rollout = _parse(kubectl.get(args.name))
    phases, needs = _ALLOWED[action]
    phase = rollout.status.phase
    if phase not in phases:
        raise CliError(f"cannot {action.value} {rollout.name}: it is {phase.value} ({action.value} needs {needs})", 2)
    if action is IntentAction.UNDO and not rollout.status.previous_stable_version:
        raise CliError(f"cannot undo {rollout.name}: it records no previous stable version to return to", 2)
    pending = rollout.status.intent
    if pending is not None and pending.id != rollout.status.intent_handled:
        io.err.write(f"note: replacing an earlier {pending.action.value} the controller has not handled yet\n")

    intent = Intent(
        id=uuid.uuid4().hex[:12],
        action=action,
        full=bool(getattr(args, "full", False)),
        requested_at=_now().replace(microsecond=0),
    )
    kubectl.patch_status(rollout.name, {"status": {"intent": intent.model_dump(mode="json", by_alias=True)}})
    what = f"{action.value}{' --full' if intent.full else ''}"
    if args.no_wait:
        io.print(f"asked {rollout.name} to {what} (intent {intent.id}); kubectl flywheel status {rollout.name} "
                 "shows when the controller has acted")
        return 0

    deadline = io.clock() + args.timeout
    while True:
        current = _parse(kubectl.get(rollout.name))
        if current.status.intent_handled == intent.id:
            # The controller checks the phase again (it may have moved since we read it) and records a
            # refusal as an "Ignored" decision naming the intent.
            newest = current.status.decisions[-1] if current.status.decisions else None
            if newest is not None and newest.action == "Ignored" and intent.id in newest.message:
                raise CliError(f"the controller refused to {what} {rollout.name}: {newest.message}", 2)
            io.print(render_outcome(current, action, color=io.color))
            return 0
        remaining = deadline - io.clock()
        if remaining <= 0:
            raise CliError(
                f"asked {rollout.name} to {what}, but the controller has not picked it up within "
                f"{args.timeout:g} s (is it running? {CONTROLLER_HINT}); the request stays in "
                f"status.intent and is handled when the controller runs"
            )
        io.sleep(min(WAIT_POLL_S, remaining))


def _retrain(args: argparse.Namespace, kubectl: Kubectl, io: _Io) -> int:
    """Ask for a retraining now: the RetrainPolicy's retrain-requested-at annotation, then wait until the controller
    starts the run (or says why it does not)."""
    policy = _parse_policy(kubectl.get_policy(args.name))
    if not policy.spec.triggers.manual:
        raise CliError(f"cannot retrain {policy.name}: its triggers.manual is false", 2)
    if policy.status.phase.busy():
        run = policy.status.last_run
        raise CliError(f"cannot retrain {policy.name}: a run is under way ({policy.status.phase.value}"
                       f"{', ' + run.job if run and run.job else ''}); one at a time", 2)
    requested = _now().replace(microsecond=0)
    kubectl.annotate_policy(policy.name, {MANUAL_REQUEST_ANNOTATION: requested.isoformat().replace("+00:00", "Z")})
    if args.no_wait:
        io.print(f"asked {policy.name} to retrain at {requested.isoformat()}; kubectl get retrainpolicy {policy.name} "
                 "shows when the controller has started the run")
        return 0
    deadline = io.clock() + args.timeout
    while True:
        current = _parse_policy(kubectl.get_policy(policy.name))
        run = current.status.last_run
        if run is not None and run.started_at is not None and run.started_at >= requested:
            io.print(f"{current.name}: started {run.job} ({run.trigger.value if run.trigger else 'Manual'}: "
                     f"{run.reason}); phase {current.status.phase.value}")
            return 0
        remaining = deadline - io.clock()
        if remaining <= 0:
            raise CliError(
                f"asked {current.name} to retrain, but no run started within {args.timeout:g} s: "
                f"{current.status.message or 'the controller has not answered'} (is it running? {CONTROLLER_HINT}); "
                "the request stays in the annotation and is handled when the controller runs")
        io.sleep(min(WAIT_POLL_S, remaining))


def _parse_policy(obj: dict) -> RetrainPolicy:
    try:
        return RetrainPolicy.model_validate(obj)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        name = (obj.get("metadata") or {}).get("name")
        raise CliError(f"RetrainPolicy {name} is not valid ({where}: {first['msg']})") from e


def _version(args: argparse.Namespace, kubectl: Kubectl | None, io: _Io) -> int:
    try:
        version = metadata.version("flywheel-controller")
    except metadata.PackageNotFoundError:
        version = "unknown"
    io.print(f"kubectl-flywheel {version} (ModelRollout {GROUP}/{VERSION})")
    return 0


# ------------------------------------------------------------------------------------------------ parser


def _globals(p: argparse.ArgumentParser, default: object) -> None:
    # Added to the top parser (default None) and to every command (default SUPPRESS), so the flags work
    # before or after the command, as `kubectl flywheel -n x status y` and `... status y -n x` both do.
    g = p.add_argument_group("kubectl options (passed through to kubectl)")
    g.add_argument("--kubeconfig", default=default, help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config)")
    g.add_argument("--context", default=default, help="kubeconfig context to use")
    g.add_argument("-n", "--namespace", default=default, help="namespace (default: the context's)")


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number of seconds above 0")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kubectl flywheel",
        description="List, inspect and steer ModelRollouts (flywheel.dev).\n\nRequests (promote, abort, ...) go to "
        "the rollout's status subresource, so an\nArgo CD or Flux sync does not undo them; the controller acts on "
        "them once.",
        epilog="examples:\n  kubectl flywheel list\n  kubectl flywheel status fraud-v2-canary --watch\n"
        "  kubectl flywheel promote fraud-v2-canary --full\n  kubectl flywheel -n ml abort fraud-v2-canary",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _globals(p, None)
    commands = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, summary: str, run: Callable[..., int]) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=summary, description=summary)
        _globals(sub, argparse.SUPPRESS)
        sub.set_defaults(run=run)
        return sub

    listing = command("list", "list the ModelRollouts in the namespace", _list)
    listing.add_argument("-A", "--all-namespaces", action="store_true", help="list them in every namespace")
    listing.add_argument("-o", "--output", choices=["json", "yaml"], help="print the objects instead of a table")

    status = command("status", "show a rollout: phase, steps, last analysis, decisions, conditions", _status)
    status.add_argument("name", help="the ModelRollout")
    status.add_argument("-w", "--watch", action="store_true", help="redraw on change until the phase is terminal")
    status.add_argument("--interval", type=_positive, default=2.0, help="seconds between polls with --watch (2)")
    status.add_argument("-o", "--output", choices=["json", "yaml"], help="print the object instead of the summary")

    intents = {
        IntentAction.PROMOTE: "leave an open pause; with --full, skip every remaining step and analysis",
        IntentAction.ABORT: "send all traffic back to the stable now (phase Aborted)",
        IntentAction.RETRY: "start an ended (RolledBack, Aborted, Failed) rollout again from its first step",
        IntentAction.UNDO: "after a success, make the previous stable the stable again",
        IntentAction.PAUSE: "hold the current weight until resume",
        IntentAction.RESUME: "go on after a pause",
    }
    for action, summary in intents.items():
        sub = command(action.value, summary, _intent)
        sub.add_argument("name", help="the ModelRollout")
        if action is IntentAction.PROMOTE:
            sub.add_argument("--full", action="store_true", help="skip every remaining step and analysis")
        sub.add_argument("--no-wait", action="store_true", help="return once the request is written")
        sub.add_argument("--timeout", type=_positive, default=30.0,
                         help="seconds to wait for the controller to act (30)")

    retrain = command("retrain", "ask a RetrainPolicy for a training run now (its manual trigger)", _retrain)
    retrain.add_argument("name", help="the RetrainPolicy")
    retrain.add_argument("--no-wait", action="store_true", help="return once the request is written")
    retrain.add_argument("--timeout", type=_positive, default=30.0,
                         help="seconds to wait for the controller to start the run (30)")

    command("version", "print the plugin's version", _version)
    return p


def main(
    argv: list[str] | None = None,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """The `kubectl-flywheel` entry point; returns the exit status (argparse's exits included)."""
    io = _Io(stdout or sys.stdout, stderr or sys.stderr, sleep, clock)
    try:
        try:
            args = parser().parse_args(argv)
        except SystemExit as e:  # --help (0) or a usage error (2, already printed)
            return e.code if isinstance(e.code, int) else 1
        kubectl = None if args.command == "version" else Kubectl.find(args.kubeconfig, args.context, args.namespace)
        return args.run(args, kubectl, io)
    except CliError as e:
        io.err.write(f"error: {e}\n")
        return e.code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `kubectl flywheel list | head`: the reader left; nothing more to say
        if io.out is sys.stdout:
            # Python would complain again when it flushes stdout at exit; point it at /dev/null first.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as e:  # the promise is one sentence, never a traceback; FLYWHEEL_DEBUG shows it
        if os.environ.get("FLYWHEEL_DEBUG"):
            traceback.print_exc(file=io.err)
        io.err.write(f"error: unexpected {type(e).__name__}: {e} (FLYWHEEL_DEBUG=1 shows the traceback)\n")
        return 1
