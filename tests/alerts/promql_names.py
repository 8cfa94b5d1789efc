"""Metric names in PromQL, and the names the controller's registry really exposes.

The alert rules and the dashboard must only query series the controller exports, so a
renamed metric fails a test instead of leaving a silent alert or an empty panel. No PromQL
parser ships for Python, so names are found lexically: strings, label matchers, ranges,
label lists and Grafana variables are removed first, then every identifier that is not a
keyword and is not called like a function is a metric name. Syntax itself is promtool's
job (``promtool check rules``).
"""

from __future__ import annotations

import re

from prometheus_client import CollectorRegistry

__all__ = ["SCRAPE_SERIES", "exposed_names", "metric_names"]

# Series Prometheus writes itself for every target: never in a client registry.
SCRAPE_SERIES = frozenset({"up"})

_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
}
_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "by", "without", "on", "ignoring", "group_left",
     "group_right", "offset", "atan2", "inf", "nan"}
)  # fmt: skip
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GRAFANA_VARIABLES = re.compile(r"\$\{[^}]*\}|\$\w+|\[\[\w+\]\]")
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGES = re.compile(r"\[[^\[\]]*\]")
_LABEL_LISTS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_AT_MODIFIER = re.compile(r"@\s*(?:start|end)\s*\(\s*\)|@\s*[\d.]+")
_IDENTIFIER = re.compile(r"(?<![\w:.])([A-Za-z_:][\w:]*)(\s*\()?")


def exposed_names(registry: CollectorRegistry) -> frozenset[str]:
    """Every series name a scrape of ``registry`` can return, labelled children or not.

    A family with labels and no children yet has no samples, so names are derived from
    each family's name and type (a counter ``x`` is exposed as ``x_total``, a histogram
    as ``x_bucket``/``x_count``/``x_sum``), plus whatever samples exist.
    """
    names: set[str] = set()
    for family in registry.collect():
        suffixes = _SUFFIXES.get(family.type, ("",))
        names.update(family.name + suffix for suffix in suffixes)
        names.update(sample.name for sample in family.samples)
    return frozenset(names)


def metric_names(expr: str) -> frozenset[str]:
    """Metric names selected by a PromQL expression (Grafana variables allowed).

    Raises ValueError on a ``__name__`` matcher, which would hide a name from this check.
    """
    if "__name__" in expr:
        raise ValueError(f"select metrics by name, not through __name__: {expr}")
    text = _STRINGS.sub('""', expr)
    text = _GRAFANA_VARIABLES.sub(" ", text)
    text = _MATCHERS.sub(" ", text)
    text = _RANGES.sub(" ", text)
    text = _LABEL_LISTS.sub(" ", text)
    text = _AT_MODIFIER.sub(" ", text)
    found = set()
    for match in _IDENTIFIER.finditer(text):
        name, call = match.group(1), match.group(2)
        if call is None and name.lower() not in _KEYWORDS:
            found.add(name)
    return frozenset(found)
