"""``python -m imocha_pipeline.settings [--write | --check] [README.md]``: the README's settings tables.

Without an option it prints the generated tables; ``--write`` rewrites them in the README in place; ``--check``
exits 1 when the README's tables differ from the catalogue.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from imocha_pipeline.settings.readme import render_all, update_readme


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m imocha_pipeline.settings", description=__doc__.splitlines()[0])
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--write", action="store_true", help="rewrite the tables in the README in place")
    action.add_argument("--check", action="store_true", help="exit 1 when the README's tables are not current")
    parser.add_argument("readme", nargs="?", default="README.md", help="the README (default: ./README.md)")
    args = parser.parse_args(argv)
    if not (args.write or args.check):
        print(render_all())
        return 0
    path = Path(args.readme)
    text = path.read_text(encoding="utf-8")
    updated = update_readme(text)
    if args.check:
        if updated != text:
            print(f"{path}: the settings tables are not current; run python -m imocha_pipeline.settings --write",
                  file=sys.stderr)
            return 1
        return 0
    if updated != text:
        path.write_text(updated, encoding="utf-8")
        print(f"{path}: settings tables rewritten")
    else:
        print(f"{path}: settings tables already current")
    return 0


if __name__ == "__main__":
    sys.exit(main())
