"""The README's settings table is the Settings class, field for field (names, defaults, descriptions, order)."""

from pathlib import Path

from flywheel_trainer import TrainerSettings

README = Path(__file__).resolve().parents[1] / "README.md"


def _default(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if value == "":
        return '""'
    return str(value)


def settings_table() -> str:
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for name, field in TrainerSettings.model_fields.items():
        rows.append(f"| `FLYWHEEL_TRAINER_{name.upper()}` | `{_default(field.default)}` | {field.description} |")
    return "\n".join(rows)


def test_the_readme_settings_table_is_the_settings_class():
    assert settings_table() in README.read_text(), "regenerate the README's settings table: python tests/test_readme.py"


if __name__ == "__main__":  # python tests/test_readme.py prints the table
    print(settings_table())
