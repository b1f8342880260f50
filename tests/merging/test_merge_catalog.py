"""Built-in merge methods as spec + model (steph.merging.catalog) and the registry's lazy items:
planning and listing read the specs; the model's module is imported when a model is needed."""

from __future__ import annotations

import pytest

from steph.config.merge import MergeConfig
from steph.errors import PluginError, UnknownNameError
from steph.merging import MERGE_METHODS
from steph.merging.base import MergeMethod
from steph.merging.builtin import implementation
from steph.merging.catalog import BUILTIN
from steph.merging.registry import method_spec
from steph.merging.spec import MethodSpec
from steph.registry import Registry

SPEC_PARTS = ("name", "description", "reference", "settings_class", "files", "check", "run_name")


@pytest.mark.parametrize(("spec", "target"), BUILTIN, ids=[spec.name for spec, _ in BUILTIN])
def test_each_model_is_its_spec_plus_the_work(spec: type[MethodSpec], target: str) -> None:
    cls = implementation(target)
    assert issubclass(cls, spec) and issubclass(cls, MergeMethod)
    # the spec's parts are declared once, in the spec (or a spec above it), never again in the model
    for klass in cls.__mro__:
        if klass.__module__ in ("steph.merging.catalog", "steph.merging.spec"):
            continue
        assert not set(SPEC_PARTS) & set(vars(klass)), (klass, set(SPEC_PARTS) & set(vars(klass)))
    method = MERGE_METHODS.get(spec.name)
    assert type(method) is cls
    assert method_spec(spec.name).run_name(MergeConfig()) == spec().run_name(MergeConfig())


def test_every_builtin_is_registered_under_its_spec_name() -> None:
    names = [spec.name for spec, _ in BUILTIN]
    assert len(set(names)) == len(names)
    assert set(names) <= set(MERGE_METHODS.names())
    assert all(isinstance(method_spec(name), MethodSpec) for name in MERGE_METHODS.names())


class _Light:
    pass


class _Heavy(_Light):
    pass


def test_a_lazy_item_loads_once_when_get_needs_it() -> None:
    loads: list[str] = []

    def load() -> _Heavy:
        loads.append("x")
        return _Heavy()

    registry: Registry[_Light] = Registry("thing")
    stand_in = _Light()
    registry.add_lazy("a", load, stand_in)
    assert registry.names() == ["a"] and "a" in registry and registry.origin("a").package == "stephctl"
    assert registry.light("a") is stand_in and loads == []
    item = registry.get("a")
    assert isinstance(item, _Heavy) and registry.get("a") is item and registry.light("a") is item
    assert loads == ["x"]
    assert registry.items() == [("a", item)]
    with pytest.raises(UnknownNameError, match="did you mean 'a'"):
        registry.light("aa")


def test_a_lazy_item_must_be_what_its_stand_in_promises() -> None:
    registry: Registry[object] = Registry("thing")
    registry.add_lazy("a", _Light, _Heavy())  # loads a _Light where a _Heavy was promised
    with pytest.raises(TypeError, match="not a _Heavy"):
        registry.get("a")


def test_a_name_held_lazily_is_not_taken_twice() -> None:
    registry: Registry[object] = Registry("thing")
    registry.add_lazy("a", _Heavy, _Light())
    with pytest.raises(PluginError, match="two plugins register the thing 'a'"):
        registry.add("a", _Heavy())
    with pytest.raises(PluginError):
        registry.add_lazy("a", _Heavy, _Light())
