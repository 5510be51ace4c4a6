"""The commands and paths the docs give people name things that exist (no cluster needed).

Every `kubectl`/`helm` command in README.md, docs/*.md, the chart's README, the services' READMEs and the
chart's NOTES.txt (rendered) is read for the objects it names (`cronjob/NAME`, `svc/NAME`, `get secret NAME`,
`-n NAMESPACE`, the release of `helm install|test`), and each must be in `helm template` of the chart as the
docs install it (release and namespace `flywheel`), or be made by a command of the docs themselves
(`create job`, `create secret`, `apply -f`). Names written with `<release>` / `<fullname>` are checked against
a render under another release name. Every relative markdown link and every repository path in backticks
(`docs/...`, `bench/...`, `scripts/...`, `services/{a,b}/...`; from the root or the README's directory) must
exist, and the number of images the docs give is skaffold's.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from chart_fixtures import CHART, KUBE_VERSION, THIRD_PARTY_API_VERSIONS
from conftest import REPO, USE_EXISTING, controlplane

RELEASE = NAMESPACE = "flywheel"  # README.md and docs/kubernetes.md: helm install flywheel ... -n flywheel
OTHER_RELEASE = "fw"  # renders `<release>-flywheel-x` / `<fullname>-x` (fullname fw-flywheel)
DOCS = sorted([REPO / "README.md", *(REPO / "docs").glob("*.md"), CHART / "README.md",
               *(REPO / "services").glob("*/README.md")])
# What the docs turn on beyond the defaults when they name its objects (kserve mode, the drift service).
OPTIONAL = ("mode=kserve", "drift.enabled=true")

KINDS = {  # kubectl's names for a resource type -> kind
    **dict.fromkeys(["cronjob", "cronjobs", "cj"], "CronJob"),
    **dict.fromkeys(["svc", "service", "services"], "Service"),
    **dict.fromkeys(["deploy", "deployment", "deployments"], "Deployment"),
    **dict.fromkeys(["job", "jobs"], "Job"),
    **dict.fromkeys(["secret", "secrets"], "Secret"),
    **dict.fromkeys(["cm", "configmap", "configmaps"], "ConfigMap"),
    **dict.fromkeys(["sts", "statefulset", "statefulsets"], "StatefulSet"),
    **dict.fromkeys(["pvc", "persistentvolumeclaim", "persistentvolumeclaims"], "PersistentVolumeClaim"),
    **dict.fromkeys(["sa", "serviceaccount", "serviceaccounts"], "ServiceAccount"),
    **dict.fromkeys(["role", "roles"], "Role"),
    **dict.fromkeys(["rolebinding", "rolebindings"], "RoleBinding"),
    **dict.fromkeys(["po", "pod", "pods"], "Pod"),
    **dict.fromkeys(["isvc", "inferenceservice", "inferenceservices"], "InferenceService"),
    **dict.fromkeys(["mro", "modelrollout", "modelrollouts"], "ModelRollout"),
    **dict.fromkeys(["netpol", "networkpolicy", "networkpolicies"], "NetworkPolicy"),
    **dict.fromkeys(["pdb", "poddisruptionbudget", "poddisruptionbudgets"], "PodDisruptionBudget"),
    **dict.fromkeys(["hpa", "horizontalpodautoscaler", "horizontalpodautoscalers"], "HorizontalPodAutoscaler"),
    **dict.fromkeys(["crd", "crds", "customresourcedefinition", "customresourcedefinitions"],
                    "CustomResourceDefinition"),
}
_KIND = "|".join(sorted(KINDS, key=len, reverse=True))
NAME = r"[a-z0-9<$][-a-z0-9.<>${}]*"
SLASHED = re.compile(rf"(?<![\w/-])(?P<kind>{_KIND})/(?P<name>{NAME})")
VERB_KIND_NAME = re.compile(rf"\b(?:get|describe|delete|edit|logs|rollout \w+|wait)\s+(?P<kind>{_KIND})\s+"
                            rf"(?P<name>{NAME})(?=[\s)`]|$)")
CREATE = re.compile(rf"\bcreate\s+(?P<kind>job|secret\s+generic|secret\s+tls)\s+(?:--from=\S+\s+)?(?P<name>{NAME})")
APPLY = re.compile(r"\bapply\s+(?:\S+\s+)*?-f\s+(?P<file>manifests/\S+\.ya?ml)")
NAMESPACE_FLAG = re.compile(r"(?:\s-n\s+|\s--namespace[=\s]+)(?P<ns>\S+)")
HELM_RELEASE = re.compile(r"\bhelm\s+(?:install|upgrade|test|uninstall|status|rollback)\s+(?P<release>[^\s-]\S*)")
PLUGIN = re.compile(r"\bkubectl flywheel\s+(?:-n\s+\S+\s+)?(?:status|promote|abort|retry|undo|pause|resume)\s+"
                    rf"(?P<name>{NAME})")
FOR_LOOP = re.compile(r"^\s*for (?P<var>\w+) in (?P<values>[^;]+); do\s*$")
LINK = re.compile(r"(?<!!)\[[^\]]*\]\((?P<target>[^)\s]+)\)")
PATH_IN_BACKTICKS = re.compile(
    r"`(?P<path>(?:docs|bench|scripts|services|libs|charts|manifests|hack|tests|feature_repo|src)/[^`\s]*)`")
NUMBERS = {"five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10}


@dataclass(frozen=True)
class Command:
    where: str  # file:line
    text: str


def _code_blocks_and_spans(text: str) -> Iterator[tuple[int, str]]:
    """(line number, text) of every shell line in fenced blocks (continuations joined, `for` loops
    expanded) and of every inline code span."""
    lines = text.splitlines()
    fenced, block = False, []
    for number, line in enumerate(lines, 1):
        if line.lstrip().startswith("```"):
            if fenced:
                yield from _expand(block)
                block = []
            fenced = not fenced
            continue
        if fenced:
            block.append((number, line))
        else:
            for span in re.findall(r"`([^`]+)`", line):
                yield number, span
    yield from _expand(block)


def _expand(block: list[tuple[int, str]]) -> Iterator[tuple[int, str]]:
    joined: list[tuple[int, str]] = []
    for number, line in block:
        if joined and joined[-1][1].endswith("\\"):
            joined[-1] = (joined[-1][0], joined[-1][1][:-1] + " " + line.strip())
        else:
            joined.append((number, line))
    loop = None
    for number, line in joined:
        if m := FOR_LOOP.match(line):
            loop = (m["var"], m["values"].split())
        elif loop and line.strip() == "done":
            loop = None
        elif loop:
            var, values = loop
            for value in values:
                yield number, re.sub(rf"\$\{{?{var}\}}?", value, line)
        else:
            yield number, line


def commands(path: Path, text: str | None = None) -> list[Command]:
    text = path.read_text() if text is None else text
    rel = path.relative_to(REPO) if path.is_relative_to(REPO) else path.name
    return [Command(f"{rel}:{n}", line.split(" # ")[0]) for n, line in _code_blocks_and_spans(text)
            if re.search(r"\b(kubectl|helm)\s", line)]


@dataclass
class Rendered:
    helm_bin: str
    env: dict[str, str]

    def template(self, chart: Path, release: str, *sets: str, show: str | None = None) -> list[dict]:
        argv = [self.helm_bin, "template", release, str(chart), "--namespace", NAMESPACE, "--kube-version",
                KUBE_VERSION, "--include-crds", *(f"--api-versions={v}" for v in THIRD_PARTY_API_VERSIONS),
                *(f"--set={s}" for s in sets), *(["--show-only", show] if show else [])]
        done = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, f"{' '.join(argv)} failed:\n{done.stderr}"
        return [d for d in yaml.safe_load_all(done.stdout) if d]

    def names(self, release: str) -> set[tuple[str, str]]:
        docs = self.template(CHART, release) + self.template(CHART, release, *OPTIONAL)
        return {(d["kind"], d["metadata"]["name"]) for d in docs}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Rendered:
    if USE_EXISTING:
        helm_bin = shutil.which("helm") or pytest.skip("helm is not on PATH")
    else:
        helm_bin = str(controlplane.build() / "helm")  # the pinned helm, built once and cached
    home = tmp_path_factory.mktemp("helm")
    env = {**os.environ, "HELM_CACHE_HOME": str(home / "cache"), "HELM_CONFIG_HOME": str(home / "config"),
           "HELM_DATA_HOME": str(home / "data"), "KUBECONFIG": os.devnull}
    return Rendered(helm_bin, env)


@pytest.fixture(scope="module")
def notes(rendered, tmp_path_factory) -> dict[str, str]:
    """NOTES.txt as `helm install` prints it, for the defaults and for kserve mode with drift: `helm template`
    leaves NOTES.txt out, so a copy of the chart renders it as a template's field."""
    chart = tmp_path_factory.mktemp("chart") / "flywheel"
    shutil.copytree(CHART, chart)
    source = (chart / "templates" / "NOTES.txt").read_text()
    (chart / "templates" / "NOTES.txt").unlink()
    (chart / "templates" / "_docs_notes.tpl").write_text(
        '{{- define "flywheel.docsNotes" -}}\n' + source + "\n{{- end -}}\n")
    (chart / "templates" / "docs-notes.yaml").write_text(
        'kind: DocsNotes\nnotes: {{ include "flywheel.docsNotes" . | toJson }}\n')
    return {label: rendered.template(chart, RELEASE, *sets, show="templates/docs-notes.yaml")[0]["notes"]
            for label, sets in {"default": (), "kserve+drift": OPTIONAL}.items()}


def _all_commands(notes: dict[str, str]) -> list[Command]:
    found = [c for doc in DOCS for c in commands(doc)]
    for label, text in notes.items():
        found += [Command(f"NOTES.txt ({label}):{n}", line.split(" # ")[0])
                  for n, line in enumerate(text.splitlines(), 1) if re.search(r"\b(kubectl|helm)\s", line)]
    return found


def _created(cmds: list[Command]) -> set[tuple[str, str]]:
    """Objects the docs' own commands create: `create job|secret NAME`, `apply -f manifests/...`."""
    made = set()
    for c in cmds:
        if "--dry-run" in c.text:
            continue  # `create ... --dry-run=client -o yaml | kubectl apply -f -` replaces an existing object
        for m in CREATE.finditer(c.text):
            made.add(("Job" if m["kind"] == "job" else "Secret", m["name"]))
        for m in APPLY.finditer(c.text):
            for d in yaml.safe_load_all((REPO / m["file"]).read_text()):
                if d:
                    made.add((d["kind"], d["metadata"]["name"]))
    return made


def test_every_object_a_command_names_is_rendered_or_created_by_the_docs(rendered, notes):
    cmds = _all_commands(notes)
    have = {RELEASE: rendered.names(RELEASE) | _created(cmds), OTHER_RELEASE: rendered.names(OTHER_RELEASE)}
    fullname = f"{OTHER_RELEASE}-flywheel"
    wrong, checked = [], 0
    for c in cmds:
        refs = [(KINDS[m["kind"]], m["name"])
                for pattern in (SLASHED, VERB_KIND_NAME) for m in pattern.finditer(c.text)]
        refs += [("ModelRollout", m["name"]) for m in PLUGIN.finditer(c.text)]
        if "--dry-run" in c.text:  # an update of an object that must exist
            refs += [("Job" if m["kind"] == "job" else "Secret", m["name"]) for m in CREATE.finditer(c.text)]
        for kind, name in refs:
            release = RELEASE
            if "<release>" in name or "<fullname>" in name:
                release, name = OTHER_RELEASE, name.replace("<fullname>", fullname).replace("<release>", OTHER_RELEASE)
            if re.search(r"[<>${}]", name):
                continue  # a placeholder the reader fills in (`<name>`, `$NAME`)
            checked += 1
            if (kind, name) not in have[release]:
                near = sorted(n for k, n in have[release] if k == kind)
                wrong.append(f"{c.where}: {kind} {name!r} is not rendered (release {release}); "
                             f"{kind}s there: {near}\n    {c.text.strip()}")
    assert checked > 10, f"only {checked} object names found: is the parsing broken?"
    assert not wrong, "docs name objects the chart does not make:\n" + "\n".join(wrong)


def test_every_namespace_and_release_in_a_command_is_the_documented_one(notes):
    wrong = []
    for c in _all_commands(notes):
        for m in NAMESPACE_FLAG.finditer(c.text):
            if m["ns"] != NAMESPACE and not re.search(r"[<$]", m["ns"]):
                wrong.append(f"{c.where}: namespace {m['ns']!r}, not {NAMESPACE!r}: {c.text.strip()}")
        for m in HELM_RELEASE.finditer(c.text):
            if m["release"] != RELEASE and not re.search(r"[<$]", m["release"]):
                wrong.append(f"{c.where}: release {m['release']!r}, not {RELEASE!r}: {c.text.strip()}")
    assert not wrong, "\n".join(wrong)


def _secret_references(docs: list[dict]) -> set[str]:
    found: set[str] = set()

    def walk(node: object, key: str = "") -> None:
        if isinstance(node, dict):
            if key in ("secretKeyRef", "secret") and isinstance(node.get("name"), str):
                found.add(node["name"])
            if isinstance(node.get("secretName"), str):
                found.add(node["secretName"])
            for k, v in node.items():
                walk(v, k)
        elif isinstance(node, list):
            for v in node:
                walk(v, key)

    walk(docs)
    return found


def test_the_secrets_the_docs_create_are_the_ones_manifests_flywheel_yaml_reads(rendered, notes):
    """docs/kubernetes.md has kubectl-apply users create every Secret manifests/flywheel.yaml mounts and does
    not define; a Secret the docs create must be one the chart or that file reads."""
    manifest = [d for d in yaml.safe_load_all((REPO / "manifests" / "flywheel.yaml").read_text()) if d]
    defined = {d["metadata"]["name"] for d in manifest if d["kind"] == "Secret"}
    needed = _secret_references(manifest) - defined
    created = {name for kind, name in _created(_all_commands(notes)) if kind == "Secret"}
    chart_secrets = {n for k, n in rendered.names(RELEASE) if k == "Secret"}
    assert needed <= created, f"docs/kubernetes.md does not tell users to create {sorted(needed - created)}"
    unused = created - needed - chart_secrets
    assert not unused, f"the docs create Secrets nothing reads: {sorted(unused)}"


def test_relative_links_and_repository_paths_in_the_docs_exist():
    missing = []
    for doc in DOCS:
        for number, line in enumerate(doc.read_text().splitlines(), 1):
            where = f"{doc.relative_to(REPO)}:{number}"
            for m in LINK.finditer(line):
                target = m["target"].split("#")[0]
                if target and not re.match(r"[a-z][a-z0-9+.-]*:", target) and not (doc.parent / target).exists():
                    missing.append(f"{where}: link {m['target']}")
            for m in PATH_IN_BACKTICKS.finditer(line):
                for path in _braces(m["path"].rstrip(".,;:")):
                    if "<" in path:
                        continue  # `bench/results/<name>.json`: a pattern, not a file
                    if not any(list(base.glob(path)) if "*" in path else (base / path).exists()
                               for base in (REPO, doc.parent)):  # a service's README may cite its own tests/
                        missing.append(f"{where}: path {path}")
    assert not missing, "docs point at files that do not exist:\n" + "\n".join(missing)


def _braces(path: str) -> list[str]:
    """`services/{a,b}/README.md` -> both paths, as a shell expands it."""
    m = re.search(r"\{([^{}]*)\}", path)
    if not m:
        return [path]
    return [p for part in m[1].split(",") for p in _braces(path[:m.start()] + part + path[m.end():])]


def test_the_image_count_the_docs_give_is_skaffolds():
    artifacts = yaml.safe_load((REPO / "skaffold.yaml").read_text())["build"]["artifacts"]
    wrong = []
    for doc in DOCS:
        for number, line in enumerate(doc.read_text().splitlines(), 1):
            for word in re.findall(r"\b(\w+) images\b", line):
                if NUMBERS.get(word.lower(), len(artifacts)) != len(artifacts):
                    wrong.append(f"{doc.relative_to(REPO)}:{number}: {word} images")
    assert not wrong, f"skaffold.yaml builds {len(artifacts)} images:\n" + "\n".join(wrong)


def test_the_command_parser_finds_what_a_shell_would_run(tmp_path):
    """The parsing above, on a known snippet: a continued line, a loop, an inline span."""
    doc = tmp_path / "x.md"
    doc.write_text("Run `kubectl -n a create job --from=cronjob/b c`.\n\n```sh\nhelm install r chart \\\n  -n ns\n"
                   "for s in x y; do\n  kubectl create secret generic p-$s\ndone\n```\n")
    texts = [c.text.strip() for c in commands(doc)]
    assert texts == ["kubectl -n a create job --from=cronjob/b c", "helm install r chart  -n ns",
                     "kubectl create secret generic p-x", "kubectl create secret generic p-y"]
    assert _created(commands(doc)) == {("Job", "c"), ("Secret", "p-x"), ("Secret", "p-y")}
    assert [m["name"] for m in SLASHED.finditer(texts[0])] == ["b"]
    assert _braces("services/{a,b}/x") == ["services/a/x", "services/b/x"]
    dry = tmp_path / "y.md"
    dry.write_text("```\nkubectl create secret generic s --dry-run=client -o yaml | kubectl apply -f -\n```\n")
    assert _created(commands(dry)) == set()
