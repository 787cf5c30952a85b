"""Write ``docs/asyncapi.json`` from the event models (``make asyncapi``).

``tests/test_asyncapi.py`` fails while the checked-in document differs from
``happ_common.asyncapi.render()``; this brings it up to date.
"""

from __future__ import annotations

import sys
from pathlib import Path

from happ_common.asyncapi import render

DEFAULT_PATH = Path("docs/asyncapi.json")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0]) if args else DEFAULT_PATH
    text = render()
    if path.exists() and path.read_text(encoding="utf-8") == text:
        print(f"{path} is up to date")
        return 0
    path.write_text(text, encoding="utf-8")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
