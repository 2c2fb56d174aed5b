"""Griffe extension (``mkdocs.yml``): the docstrings' Sphinx roles become links on the site.

The docstrings use Sphinx roles (``:class:`~synprune_jax.types.Population```, ``:func:`run```),
which read well in ``help()`` but show up as raw text on the site. Once the package is loaded,
every role in its docstrings (in griffe's copy, not in the source) is rewritten: the target is
resolved (a relative name against the docstring's own class, then its module, then each enclosing
package); if the API page renders that object (the exported names and their public members), the
role becomes an autorefs link to the identifier it is rendered under, with its text as code
(``~a.b.C`` -> [`C`][synprune_jax.C]); otherwise it becomes plain code (`` `check_choice` ``), so
the strict build has no unresolved reference. Roles inside code are left alone.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

# the Python-domain roles (optionally ``:py:``-prefixed); the content may wrap onto the next line
_ROLE = r":(?:py:)?(?:class|func|meth|mod|attr|data|exc|obj|const|type):`(?P<content>[^`]+)`"
# code that keeps its text: a fenced block, a doctest line, a ``double backtick`` span
_CODE = (
    r"(?ms:^[ \t]*(?P<fence>```|~~~).*?^[ \t]*(?P=fence))"
    r"|(?m:^[ \t]*(?:>>>|\.\.\.) .*$)"
    r"|(?s:``[^`].*?``)"
)
_PATTERN = re.compile(rf"(?<![\w`]){_ROLE}|{_CODE}")
_EXPLICIT_TITLE = re.compile(r"^(?P<title>.+?)\s*<(?P<target>[^<>]+)>$", re.S)


class SphinxRoles(griffe.Extension):
    """Rewrites the Sphinx roles of every docstring of a loaded package (see the module)."""

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        rendered = _rendered_identifiers(pkg)
        for obj in _objects(pkg):
            docstring = obj.docstring
            if docstring is None or ":" not in docstring.value:
                continue
            docstring.value = _rewrite(docstring.value, obj, loader.modules_collection, rendered)
            docstring.__dict__.pop("parsed", None)  # parsed lazily; drop a stale parse if any


def _objects(obj: griffe.Object):
    """The objects defined in ``obj`` (itself included), not the names it imports."""
    yield obj
    for member in obj.members.values():
        if not member.is_alias:
            yield from _objects(member)  # type: ignore[arg-type]


def _rendered_identifiers(pkg: griffe.Module) -> dict[str, str]:
    """Path of each object rendered on the API page (``::: pkg``) -> its identifier there.

    The same selection as mkdocstrings-python with this site's options (``filters: ["!^_"]``,
    no inherited members, no submodules): a module's imported names only when exported, no name
    starting with ``_``; members of classes are rendered recursively.
    """
    identifiers: dict[str, str] = {}

    def visit(obj: griffe.Object, identifier: str) -> None:
        identifiers.setdefault(obj.path, identifier)
        if not (obj.is_module or obj.is_class):
            return
        for name, member in obj.members.items():
            if name.startswith("_") or member.is_module or member.inherited:
                continue
            if member.is_imported and not member.is_public:
                continue
            target = _final(member)
            if target is not None and not target.is_module:
                visit(target, f"{identifier}.{name}")

    visit(pkg, pkg.path)
    del identifiers[pkg.path]  # the page shows no heading for the package itself: no anchor
    return identifiers


def _final(obj: griffe.Object | griffe.Alias) -> griffe.Object | None:
    """The object itself, or what an alias finally points to (``None``: outside the package)."""
    if not obj.is_alias:
        return obj  # type: ignore[return-value]
    try:
        return obj.final_target  # type: ignore[union-attr]
    except (griffe.AliasResolutionError, griffe.CyclicAliasError):
        return None


def _lookup(start: griffe.Object, parts: list[str]) -> griffe.Object | None:
    """Follows ``parts`` from ``start`` through declared members (and, in a class, inherited
    ones); ``None`` where a part is missing."""
    current: griffe.Object | None = start
    for part in parts:
        if current is None:
            return None
        member = current.members.get(part)
        if member is None and current.is_class:
            try:
                bases = current.mro()  # type: ignore[attr-defined]
            except Exception:  # an unresolvable base: only the declared members
                bases = []
            member = next((base.members[part] for base in bases if part in base.members), None)
        current = None if member is None else _final(member)
    return current


def _scopes(obj: griffe.Object):
    """Where a relative name in ``obj``'s docstring is looked up, innermost first."""
    scope = obj if (obj.is_class or obj.is_module) else obj.parent
    while scope is not None:
        yield scope
        scope = scope.parent


def _resolve(
    target: str, obj: griffe.Object, collection: griffe.ModulesCollection
) -> griffe.Object | None:
    parts = target.lstrip(".").split(".")
    for scope in _scopes(obj):
        if (found := _lookup(scope, parts)) is not None:
            return found
    top = collection.members.get(parts[0])
    return None if top is None else _lookup(top, parts[1:])


def _rewrite(
    text: str,
    obj: griffe.Object,
    collection: griffe.ModulesCollection,
    rendered: dict[str, str],
) -> str:
    def replace(match: re.Match[str]) -> str:
        content = match.group("content")
        if content is None:  # code: kept as it is
            return match.group(0)
        title = None
        if explicit := _EXPLICIT_TITLE.match(content):
            title, content = " ".join(explicit.group("title").split()), explicit.group("target")
        target = "".join(content.split())  # a role may wrap onto the next line
        link = not target.startswith("!")
        short = target.lstrip("!").startswith("~")
        target = target.lstrip("!~")
        if title is None:
            title = target.rsplit(".", 1)[-1] if short else target
        identifier = None
        if link:
            found = _resolve(target.removesuffix("()"), obj, collection)
            identifier = None if found is None else rendered.get(found.path)
        return f"[`{title}`][{identifier}]" if identifier else f"`{title}`"

    return _PATTERN.sub(replace, text)
