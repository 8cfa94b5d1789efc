"""Custom import-linter contracts (registered in pyproject's ``[tool.importlinter]``).

import-linter's ``forbidden`` contract cannot name a sub-module of an external package
(``redis._parsers``): the graph holds ``redis`` as one node. The import *lines* are kept,
though, so this contract reads them: no module but the allowed ones may import a private
module (a dotted part starting with ``_``) of the given external packages.
"""

from __future__ import annotations

import re

from grimp import ImportGraph
from importlinter.application import output
from importlinter.domain import fields
from importlinter.domain.contract import Contract, ContractCheck

__all__ = ["ForbiddenSubmodulesContract", "PrivateModulesContract"]


def _matching_lines(
    graph: ImportGraph, importers: list[str], packages: list[str], pattern: re.Pattern[str]
) -> list[str]:
    """``module:line: text`` of every import of ``packages`` by ``importers`` whose line
    matches ``pattern`` (grimp keeps an external package as one node, but keeps lines)."""
    found: list[str] = []
    for importer in importers:
        for package in packages:
            for detail in graph.get_import_details(importer=importer, imported=package):
                line = str(detail["line_contents"])
                if pattern.search(line):
                    found.append(f"{importer}:{detail['line_number']}: {line}")
    return found


class _LineContract(Contract):
    def render_broken_contract(self, check: ContractCheck) -> None:
        for line in check.metadata["found"]:
            output.print_error(line)
            output.new_line()


class PrivateModulesContract(_LineContract):
    """``packages``: external packages whose private modules are off limits;
    ``allowed``: the modules that may import them anyway."""

    type_name = "private_modules"

    packages = fields.SetField(subfield=fields.StringField())
    allowed = fields.SetField(subfield=fields.StringField(), required=False)

    def check(self, graph: ImportGraph, verbose: bool) -> ContractCheck:
        allowed = set(self.allowed or ())  # type: ignore[arg-type]
        packages = sorted(self.packages)  # type: ignore[arg-type]
        names = "|".join(re.escape(p) for p in packages)
        private = re.compile(
            rf"\b(?:{names})(?:\.\w+)*\._\w+|\bfrom\s+(?:{names})(?:\.\w+)*\s+import\b.*\b_\w+"
        )
        importers = [m for m in sorted(graph.modules)
                     if m not in allowed and m.split(".")[0] not in packages]  # fmt: skip
        found = _matching_lines(graph, importers, packages, private)
        return ContractCheck(kept=not found, metadata={"found": found})


class ForbiddenSubmodulesContract(_LineContract):
    """``source``: a package of ours; ``forbidden``: sub-modules of external packages
    (``redis.connection``) that no module of it may import, by either import form."""

    type_name = "forbidden_submodules"

    source = fields.StringField()
    forbidden = fields.SetField(subfield=fields.StringField())

    def check(self, graph: ImportGraph, verbose: bool) -> ContractCheck:
        source = str(self.source)
        found: list[str] = []
        for name in sorted(self.forbidden):  # type: ignore[arg-type]
            package, _, rest = name.partition(".")
            first = rest.split(".")[0]
            pattern = re.compile(
                rf"\bimport\s+{re.escape(name)}\b|\bfrom\s+{re.escape(name)}\b"
                rf"|\bfrom\s+{re.escape(package)}\s+import\b.*\b{re.escape(first)}\b"
            )
            importers = [m for m in sorted(graph.modules)
                         if m == source or m.startswith(source + ".")]  # fmt: skip
            found += _matching_lines(graph, importers, [package], pattern)
        return ContractCheck(kept=not found, metadata={"found": found})
