"""MkDocs hook: links from a docs page to a repository file outside ``docs/``.

The pages are also read on GitHub, where ``../benchmarks/RESULTS.md`` is a working relative link;
the site has no such file. At build time such a link is checked (the file must exist in the
repository: a missing one fails the build like any broken link) and pointed at the file in the
repository on GitHub (``repo_url`` in ``mkdocs.yml``).
"""

from __future__ import annotations

import os
import re

# a Markdown link whose target leaves docs/: [text](../path) or [text](../path#anchor)
_OUTSIDE = re.compile(r"\]\((\.\./[^)#\s]+)(#[^)\s]*)?\)")


def on_page_markdown(markdown, page, config, files):
    root = os.path.dirname(config["docs_dir"].rstrip(os.sep))
    page_dir = os.path.dirname(os.path.join(config["docs_dir"], page.file.src_path))
    base = config["repo_url"].rstrip("/") + "/blob/main/"

    def point(match):
        target = os.path.normpath(os.path.join(page_dir, match.group(1)))
        relative = os.path.relpath(target, root)
        if relative.startswith("..") or not os.path.exists(target):
            raise ValueError(f"{page.file.src_path}: broken link to {match.group(1)}")
        return f"]({base}{relative}{match.group(2) or ''})"

    return _OUTSIDE.sub(point, markdown)
