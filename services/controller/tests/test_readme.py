"""The README's settings table is the Settings class, field for field."""

from __future__ import annotations

from pathlib import Path

from flywheel_controller._config import ENV_PREFIX, Settings

README = Path(__file__).resolve().parents[1] / "README.md"


def settings_table() -> str:
    lines = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        default = "(host name)" if field.default_factory is not None else field.default
        lines.append(f"| `{ENV_PREFIX}{name.upper()}` | `{default}` | {field.description} |")
    return "\n".join(lines)


def test_the_readme_lists_every_setting_with_its_default_and_meaning() -> None:
    assert settings_table() in README.read_text(), "regenerate the README's settings table from Settings"


if __name__ == "__main__":  # python tests/test_readme.py prints the table
    print(settings_table())
