"""Issue 19, point 5: one plugin loader (steph/plugins.py) for commands, encoders, merge methods and
feature stores. The end-to-end behaviour with installed packages is in test_plugins.py."""

from __future__ import annotations

import logging
from importlib import metadata

import pytest

from steph import plugins
from steph.registry import Registry


def test_every_group_is_discovered_with_stephctls_own_entry_points_first() -> None:
    for kind, group in plugins.GROUPS.items():
        eps = plugins.discover(group)
        assert eps, kind
        assert plugins.origin_of(eps[0]).package == "stephctl", kind
    commands = [ep.name for ep in plugins.discover(plugins.GROUPS["command"])]
    assert {"init", "extract", "merge", "plugins"} <= set(commands)


def test_a_broken_entry_point_is_reported_once_in_one_format(caplog: pytest.LogCaptureFixture) -> None:
    missing = metadata.EntryPoint("gone", "no_such_module_19:register", "stephctl.encoders")
    with caplog.at_level(logging.WARNING, logger="steph.plugins"):
        plugin = plugins.load(missing, "encoder")
    assert (plugin.status, plugin.name, plugin.ok) == ("broken", "gone", False)
    assert plugin.reason.startswith("ModuleNotFoundError") and "no_such_module_19" in plugin.reason
    assert caplog.messages == [f"encoder plugin 'gone' from ? failed to load: {plugin.reason}"]
    assert plugin.to_dict()["status"] == "broken" and plugin.broken().reason == plugin.reason


def test_an_exception_in_use_makes_the_plugin_broken_too() -> None:
    ep = metadata.EntryPoint("json", "json:dumps", "stephctl.commands")
    seen: list[object] = []

    def use(obj: object, origin: plugins.Origin) -> None:
        seen.append(obj)
        raise TypeError("not a command")

    plugin = plugins.load(ep, "command", use, level=logging.DEBUG)
    assert seen and plugin.status == "broken" and plugin.reason == "TypeError: not a command"
    assert plugins.load(ep, "command").obj is __import__("json").dumps


def test_commands_and_registries_come_from_the_same_loader(monkeypatch: pytest.MonkeyPatch) -> None:
    from steph.extractors import ENCODERS
    from stephctl.main import LOADED_COMMANDS

    assert all(isinstance(p, plugins.Plugin) and p.kind == "command" for p in LOADED_COMMANDS)
    assert {p.name for p in LOADED_COMMANDS if p.ok} >= {"init", "merge", "plugins"}
    calls: list[str] = []
    real = plugins.load_group

    def spy(group: str, kind: str, *args: object, **kwargs: object) -> list[plugins.Plugin]:
        calls.append(group)
        return real(group, kind, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr("steph.registry.load_group", spy)
    fresh: Registry[object] = Registry("encoder", "stephctl.encoders", builtin=ENCODERS.builtin)
    assert "tiny-cnn" in fresh.names() and calls == ["stephctl.encoders"]
    assert fresh.origin("tiny-cnn").package == "stephctl"
    fresh.names()
    assert calls == ["stephctl.encoders"]  # loaded once


def test_did_you_mean_is_kept() -> None:
    from steph.errors import UnknownNameError
    from steph.extractors import ENCODERS

    with pytest.raises(UnknownNameError, match="did you mean 'tiny-cnn'"):
        ENCODERS.get("tiny-cn")
