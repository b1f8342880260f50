"""The merge-method registry: every method, built-in and from plugins, by name.

Its own module, below everything else of :mod:`steph.merging` that looks a method up
(:mod:`~steph.merging.inputs`, :mod:`~steph.merging.loading`), so nothing imports the package
while it initialises. The built-in methods are added on first use
(:func:`steph.merging.builtin.register`); plugins through the ``stephctl.merge_methods``
entry-point group.
"""

from __future__ import annotations

from typing import Any

from ..registry import Registry, describe_item
from .base import MergeMethod
from .settings import describe_settings

MERGE_METHODS: Registry[MergeMethod] = Registry(
    "merge method",
    "stephctl.merge_methods",
    builtin="steph.merging.builtin:register",
    list_hint=" (`stephctl merge --list-methods`)",
)
"""Every merge method, built-in and from plugins, by name."""


def list_methods() -> list[dict[str, Any]]:
    """Name, one-line description, reference, settings (:func:`describe_settings`) and origin of
    every registered method."""
    rows = []
    for name, method in MERGE_METHODS.items():
        rows.append(
            {
                "name": name,
                "description": describe_item(method),
                "reference": method.reference,
                "fields": describe_settings(method.settings_class, name),
                "package": MERGE_METHODS.origin(name).describe() or "stephctl",
            }
        )
    return rows
