"""The merge-method registry: every method, built-in and from plugins, by name.

Its own module, below everything else of :mod:`steph.merging` that looks a method up
(:mod:`~steph.merging.inputs`, :mod:`~steph.merging.loading`), so nothing imports the package
while it initialises. The built-in methods are added on first use
(:func:`steph.merging.builtin.register`), each as its spec (:mod:`steph.merging.catalog`) until
its model is needed; plugins through the ``stephctl.merge_methods`` entry-point group. Planning
and listing use :func:`method_spec` / :func:`method_specs`, which import no torch;
``MERGE_METHODS.get(name)`` returns the method with its model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..registry import Registry, describe_item
from .settings import describe_settings
from .spec import MethodSpec

if TYPE_CHECKING:
    from .base import MergeMethod

MERGE_METHODS: Registry[MergeMethod] = Registry(
    "merge method",
    "stephctl.merge_methods",
    builtin="steph.merging.builtin:register",
    list_hint=" (`stephctl merge --list-methods`)",
)
"""Every merge method, built-in and from plugins, by name."""


def method_spec(name: str) -> MethodSpec:
    """The method ``name`` as planning needs it (settings, ``check``, ``run_name``): a built-in's
    spec while its model is not loaded, else the method itself (a method is a spec).

    Raises:
        UnknownNameError: an unknown method (lists the registered ones).
        TypeError: a plugin registered something that is not a merge method.
    """
    spec = MERGE_METHODS.light(name)
    if not isinstance(spec, MethodSpec):
        raise TypeError(f"merge method {name!r} is a {type(spec).__name__}, not a MergeMethod")
    return spec


def method_specs() -> list[MethodSpec]:
    """:func:`method_spec` of every registered method, by name."""
    return [method_spec(name) for name in MERGE_METHODS.names()]


def list_methods() -> list[dict[str, Any]]:
    """Name, one-line description, reference, settings (:func:`describe_settings`) and origin of
    every registered method."""
    rows = []
    for name in MERGE_METHODS.names():
        method = method_spec(name)
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
