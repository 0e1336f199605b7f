"""Rewrites README.md's settings table from `tap-stripe-dd --about --format markdown`.

`python scripts/update_readme_settings.py` writes it; `--check` exits 1 when README is stale.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
START, END = "<!-- settings:start -->", "<!-- settings:end -->"
SDK_SETTINGS = ("stream_maps", "stream_map_config", "faker_config", "flattening_", "batch_config")


def settings_table() -> str:
    """The tap's own rows of `--about`, leaving out the SDK's generic ones (linked instead)."""
    about = subprocess.run(
        [str(Path(sys.executable).parent / "tap-stripe-dd"), "--about", "--format", "markdown"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = [line for line in about.splitlines() if line.startswith("|")]
    own = [row for row in rows[2:] if not row.split("|")[1].strip().startswith(SDK_SETTINGS)]
    return "\n".join(rows[:2] + own)


def updated(readme: str) -> str:
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{settings_table()}\n{END}{tail}"


def main() -> int:
    current = README.read_text()
    fresh = updated(current)
    if "--check" in sys.argv[1:]:
        if fresh != current:
            print("README.md settings table is stale: run scripts/update_readme_settings.py")
            return 1
        return 0
    README.write_text(fresh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
