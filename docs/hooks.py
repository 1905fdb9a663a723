"""MkDocs hooks: the reference tables generated from the code, and the screenshots in ``assets/``.

A page that says ``<!-- reference: NAME -->`` gets :data:`agent_studio.reference.REFERENCES`'
table NAME in its place; ``assets/*.png`` (the README's screenshots, kept in the design's
top-level ``assets/``) are published at ``assets/`` of the site.
"""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parent.parent
MARKER = re.compile(r"<!-- reference: (\w+) -->")


def on_page_markdown(markdown, page, config, files):  # noqa: ANN001, ANN201 - MkDocs' hook signature
    from agent_studio.reference import REFERENCES

    def table(match: re.Match) -> str:
        name = match.group(1)
        if name not in REFERENCES:
            raise ValueError(f"{page.file.src_path}: no reference called {name!r} (known: {', '.join(REFERENCES)})")
        return REFERENCES[name]()

    return MARKER.sub(table, markdown)


def on_files(files, config):  # noqa: ANN001, ANN201
    for image in sorted((ROOT / "assets").glob("*.png")):
        files.append(File(f"assets/{image.name}", str(ROOT), config["site_dir"], config["use_directory_urls"]))
    return files
