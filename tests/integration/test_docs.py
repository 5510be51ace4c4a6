"""Each service's README lists its settings as the code has them, and each pyproject (and Dockerfile) names
code that exists.

The services conflict with each other (and with this environment), so nothing here imports them: each
service's own interpreter prints its settings class as JSON, and imports what its pyproject.toml names. A
setting is listed when its README writes the whole variable (`FLYWHEEL_ROUTER_HTTP_PORT`) anywhere, or its
name without the service's prefix (`HTTP_PORT`) under the README's "## Settings" heading, which is how they
are written; a table with a default column must show the code's default. Every FLYWHEEL_* variable any doc
mentions must be read by some settings class, or be one of the few read elsewhere (EXTERNAL).
services/controller and services/router also compare their whole settings table in their own tests.
"""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICES = sorted(p.parent.name for p in (ROOT / "services").glob("*/pyproject.toml"))
LIBS = sorted(p.parent.name for p in (ROOT / "libs").glob("*/pyproject.toml"))
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md"), ROOT / "charts" / "flywheel" / "README.md",
               *(ROOT / "services").glob("*/README.md")])
# FLYWHEEL_* variables read by something other than a service's settings class: name -> the file reading it.
EXTERNAL = {
    "FLYWHEEL_TEST_EXISTING_CLUSTER": "tests/cluster/conftest.py",
    "FLYWHEEL_REGISTRY_PATH": "feature_repo/feature_store.cluster.yaml",
    "FLYWHEEL_MODEL_SIGNING_KEY_FILE": "libs/flywheel-core/src/flywheel_core/model_repo.py",
    "FLYWHEEL_TLS_CERT_FILE": "libs/flywheel-contracts/src/flywheel_contracts/tls.py",
    "FLYWHEEL_TLS_KEY_FILE": "libs/flywheel-contracts/src/flywheel_contracts/tls.py",
    "FLYWHEEL_TLS_CA_FILE": "libs/flywheel-contracts/src/flywheel_contracts/tls.py",
    "FLYWHEEL_TLS_CLIENT_AUTH": "libs/flywheel-contracts/src/flywheel_contracts/tls.py",
}

# Run by each service's own interpreter: its one BaseSettings class in flywheel_<service>._config, as JSON.
DUMP = """
import enum, importlib, json, pathlib, sys
from pydantic import AliasChoices
from pydantic_settings import BaseSettings
module = importlib.import_module(sys.argv[1])
classes = [c for c in vars(module).values()
           if isinstance(c, type) and issubclass(c, BaseSettings) and c.__module__ == module.__name__]
assert len(classes) == 1, f"{sys.argv[1]} defines {len(classes)} settings classes: {classes}"
settings = classes[0]
prefix = settings.model_config.get("env_prefix", "")

def plain(value):
    if isinstance(value, enum.Enum):
        return plain(value.value)
    if isinstance(value, (list, tuple, set, frozenset)):
        return [plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)

fields = []
for name, field in settings.model_fields.items():
    aliases = [a for a in (field.alias, field.validation_alias) if isinstance(a, str)]
    for a in (field.alias, field.validation_alias):
        if isinstance(a, AliasChoices):
            aliases += [c for c in a.choices if isinstance(c, str)]
    fields.append({"env": (prefix + name).upper(), "aliases": sorted({a.upper() for a in aliases}),
                   "factory": field.default_factory is not None, "default": plain(field.default),
                   "description": field.description or ""})
print(json.dumps({"prefix": prefix.upper(), "fields": fields}))
"""

# Run by a project's interpreter: every module a pyproject names is importable, every script's attribute exists.
IMPORTS = """
import importlib, importlib.util, json, sys
problems = []
for module in json.loads(sys.argv[1]):
    if importlib.util.find_spec(module) is None:
        problems.append(f"module {module} does not exist")
for script, target in json.loads(sys.argv[2]).items():
    module, _, attr = target.partition(":")
    try:
        obj = importlib.import_module(module)
        for part in filter(None, attr.split(".")):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        problems.append(f"script {script} = {target!r}: {e!r}")
    else:
        if not callable(obj):
            problems.append(f"script {script} = {target!r} is not callable")
print(json.dumps(problems))
"""


def python(project: Path) -> str:
    py = project / ".venv" / "bin" / "python"
    if not py.exists():
        pytest.fail(f"{py} is missing: run `make install` first")
    return str(py)


@cache
def settings_of(service: str) -> dict:
    done = subprocess.run([python(ROOT / "services" / service), "-c", DUMP, f"flywheel_{service}._config"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, f"services/{service}: could not read its settings:\n{done.stderr[-3000:]}"
    return json.loads(done.stdout)


def readme(service: str) -> str:
    path = ROOT / "services" / service / "README.md"
    assert path.exists(), f"services/{service} has no README.md listing its settings"
    return path.read_text()


def settings_section(text: str) -> str:
    """From the '## Settings' heading to the next '## ' heading."""
    m = re.search(r"^## Settings\b.*?(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    return m.group(0) if m else ""


def listed(text: str, section: str, env: str, prefix: str) -> bool:
    short = env.removeprefix(prefix)
    return f"`{env}`" in text or re.search(rf"`{re.escape(short)}`", section) is not None


def default_spellings(default: object) -> set[str]:
    """How a README may write a default: `5` or `5.0` for 5.0, `true` for True, `unset` / `None` for None."""
    if default is None:
        return {"None", "unset", "(unset)", "none", "-", ""}
    if isinstance(default, bool):
        return {str(default).lower(), str(default)}
    if isinstance(default, float):
        text = {repr(default), str(default), f"{default:g}"}
        return text | ({str(int(default))} if default.is_integer() else set())
    if isinstance(default, list):
        empty = {"", "[]", "()"} if not default else set()
        return {",".join(map(str, default)), ", ".join(map(str, default))} | empty
    text = str(default)
    return {text, f"./{text}", text.rstrip("/")} | ({'""', "(empty)"} if text == "" else set())


def table_defaults(section: str) -> dict[str, str]:
    """name -> default cell of every row of a `| variable | default | ... |` table in the section."""
    found: dict[str, str] = {}
    header = None
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.lstrip().startswith("|") else None
        if cells is None:
            header = None
        elif header is None:
            header = [c.lower() for c in cells]
        elif "variable" in header and "default" in header and not set(cells[0]) <= {"-", " "}:
            names = re.findall(r"`([A-Z0-9_]+)`", cells[header.index("variable")])
            defaults = [d.strip().strip("`") for d in cells[header.index("default")].split(" / ")]
            if len(defaults) != len(names):
                defaults = [cells[header.index("default")].strip("`")] * len(names)
            found.update(zip(names, defaults, strict=True))
    return found


@pytest.mark.parametrize("service", SERVICES)
def test_the_readme_lists_every_setting(service):
    text = readme(service)
    section, settings = settings_section(text), settings_of(service)
    missing = [f["env"] for f in settings["fields"] if not listed(text, section, f["env"], settings["prefix"])]
    assert not missing, (f"services/{service}/README.md does not list these settings (add them under "
                         f"'## Settings', as the others are written): {missing}")


@pytest.mark.parametrize("service", SERVICES)
def test_the_readme_settings_table_shows_the_code_defaults(service):
    settings = settings_of(service)
    rows = table_defaults(settings_section(readme(service)))
    wrong, compared = [], 0
    for f in settings["fields"]:
        cell = rows.get(f["env"], rows.get(f["env"].removeprefix(settings["prefix"])))
        if cell is None or f["factory"]:
            continue  # not in a table (a list written in prose), or computed at start (the host name)
        compared += 1
        if cell not in default_spellings(f["default"]):
            wrong.append(f"{f['env']}: README says {cell!r}, the code {f['default']!r}")
    assert compared or not rows, f"services/{service}/README.md: its settings table names no setting the code has"
    assert not wrong, f"services/{service}/README.md: wrong defaults:\n" + "\n".join(wrong)


def test_every_flywheel_variable_the_docs_mention_is_read_somewhere():
    known: set[str] = set()
    prefixes: set[str] = set()
    for service in SERVICES:
        settings = settings_of(service)
        prefixes.add(settings["prefix"])
        for f in settings["fields"]:
            known |= {f["env"], *f["aliases"]}
    for name, reader in EXTERNAL.items():
        assert name in (ROOT / reader).read_text(), f"{reader} no longer reads {name}: drop it from EXTERNAL"
    stale = []
    for doc in DOCS:
        for number, line in enumerate(doc.read_text().splitlines(), 1):
            for name in re.findall(r"\bFLYWHEEL_[A-Z0-9_]*[A-Z0-9]", line):
                if name in known or name in EXTERNAL or f"{name}_" in prefixes or name[:-1] in prefixes:
                    continue  # FLYWHEEL_DRIFT_* and FLYWHEEL_DRIFT_X name the family, not a variable
                stale.append(f"{doc.relative_to(ROOT)}:{number}: {name}")
    assert not stale, "docs name variables nothing reads (renamed or removed?):\n" + "\n".join(stale)


def named_code(pyproject: dict) -> tuple[list[str], dict[str, str], list[str]]:
    """(modules, console scripts, package directories) a pyproject.toml names."""
    packages = pyproject.get("tool", {}).get("hatch", {}).get("build", {}).get("targets", {}).get(
        "wheel", {}).get("packages", [])
    modules = [Path(p).name for p in packages]
    linter = pyproject.get("tool", {}).get("importlinter", {})
    root = linter.get("root_package")
    if root:
        modules.append(root)
        for contract in linter.get("contracts", []):
            for key in ("layers", "source_modules", "modules", "containers"):
                for entry in contract.get(key, []):
                    modules += [m.strip() for m in entry.split("|")
                                if m.strip() == root or m.strip().startswith(f"{root}.")]
            for key in ("forbidden_modules",):
                modules += [m for m in contract.get(key, []) if m.startswith(f"{root}.")]
    return sorted(set(modules)), pyproject.get("project", {}).get("scripts", {}), packages


@pytest.mark.parametrize("project", [f"services/{s}" for s in SERVICES] + [f"libs/{lib}" for lib in LIBS])
def test_every_module_and_script_the_pyproject_names_exists(project):
    path = ROOT / project
    pyproject = tomllib.loads((path / "pyproject.toml").read_text())
    modules, scripts, packages = named_code(pyproject)
    dockerfile = path / "Dockerfile"  # `python -m <package>` needs the package's __main__
    if dockerfile.exists():
        modules += [f"{m}.__main__" for m in re.findall(r'"-m",\s*"([\w.]+)"', dockerfile.read_text())]
    problems = [f"package directory {p} does not exist" for p in packages if not (path / p).is_dir()]
    done = subprocess.run([python(path), "-c", IMPORTS, json.dumps(modules), json.dumps(scripts)],
                          cwd=path, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    problems += json.loads(done.stdout)
    assert not problems, f"{project}/pyproject.toml names code that does not exist:\n" + "\n".join(problems)


def test_the_checks_above_can_fail():
    """The matching rules on known text: a missing setting, a wrong default, a pyproject with a typo."""
    section = ("## Settings\n\n| variable | default | meaning |\n| --- | --- | --- |\n"
               "| `HTTP_HOST` / `HTTP_PORT` | `0.0.0.0` / `8080` | where |\n| `FLYWHEEL_X_DEBUG` | `false` | x |\n")
    assert listed(section, section, "FLYWHEEL_X_HTTP_PORT", "FLYWHEEL_X_")
    assert not listed(section, section, "FLYWHEEL_X_PORT", "FLYWHEEL_X_")
    assert table_defaults(section) == {"HTTP_HOST": "0.0.0.0", "HTTP_PORT": "8080", "FLYWHEEL_X_DEBUG": "false"}
    assert "8080" not in default_spellings(8081) and "5" in default_spellings(5.0)
    modules, scripts, packages = named_code({
        "project": {"scripts": {"x": "pkg._cli:main"}},
        "tool": {"hatch": {"build": {"targets": {"wheel": {"packages": ["src/pkg"]}}}},
                 "importlinter": {"root_package": "pkg", "contracts": [
                     {"layers": ["pkg._a | pkg._b", "pkg._c"], "forbidden_modules": ["httpx", "pkg._d"]}]}}})
    assert modules == ["pkg", "pkg._a", "pkg._b", "pkg._c", "pkg._d"]
    assert scripts == {"x": "pkg._cli:main"} and packages == ["src/pkg"]
