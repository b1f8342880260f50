"""The stage contract: the one unit loop (`steph.units.run_units`), typed units, a list of units
run in one process (`Stage.run_units`), and `open_project` with the CLI's `--config`."""

from __future__ import annotations

import errno
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from _cohorts import make_feature_project

from steph.errors import ConfigError, DataError
from steph.locks import lock_path_for
from steph.report import StageReport, Status
from steph.units import Outcome, StopRun, UnitLock, WorkUnit, run_units


@dataclass(frozen=True)
class _Unit(WorkUnit):
    name: str = ""


class _Worker:
    """Fails, refuses or writes its unit's output, as the unit's name says."""

    def __init__(self) -> None:
        self.ran: list[str] = []

    def refuse(self, unit: _Unit) -> str | None:
        return "refused: no input" if unit.name == "refused" else None

    def skipped(self, unit: _Unit, *, by_other: bool) -> Outcome:
        return Outcome(Status.SKIPPED, "by another process" if by_other else "exists")

    def lock(self, unit: _Unit) -> UnitLock:
        return UnitLock(unit.outputs[0], f"unit {unit.key}")

    def run(self, unit: _Unit) -> Outcome:
        self.ran.append(unit.key)
        if unit.name == "bad":
            raise DataError("bad input", hint="fix it")
        if unit.name == "full":
            raise OSError(errno.ENOSPC, "No space left on device", str(unit.outputs[0]))
        unit.outputs[0].write_text("done")
        return Outcome(Status.DONE, "written", {"size": 4})


class _Progress:
    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    def start(self, label: str, total: int, unit: str = "") -> None:
        self.calls.append(("start", label, str(total), unit))

    def advance(self, label: str, n: int = 1, **info: object) -> None:
        self.calls.append(("advance", label, str(info.get("item"))))

    def finish(self, label: str) -> None:
        self.calls.append(("finish", label))


def test_the_unit_loop_skips_locks_runs_and_reports_every_unit(tmp_path: Path) -> None:
    def unit(name: str) -> _Unit:
        return _Unit("toy", name, (tmp_path / f"{name}.txt",), name=name)

    units = [unit(n) for n in ("ok", "done", "refused", "bad", "full", "locked")]
    (tmp_path / "done.txt").write_text("done")
    lock = lock_path_for(tmp_path / "locked.txt")  # a live process of this host holds it
    lock.write_text(f'{{"host": "{socket.gethostname()}", "pid": {os.getpid()}, "started": {time.time()}}}')
    worker, progress = _Worker(), _Progress()
    report = run_units("toy", units, worker, progress=progress, label="toys", unit_name="toys")
    got = [(i.key, i.status, i.message) for i in report.items]
    assert got[:4] == [
        ("ok", Status.DONE, "written"),
        ("done", Status.SKIPPED, "exists"),
        ("refused", Status.FAILED, "refused: no input"),
        ("bad", Status.FAILED, "bad input (hint: fix it)"),
    ]
    assert got[4][1] is Status.FAILED and got[4][2].startswith("unit full: No space left on device")
    assert got[5][1] is Status.LOCKED and "stephctl toy --clear-stale-locks" in got[5][2]
    assert report.items[0].details == {"size": 4} and not report.ok
    assert worker.ran == ["ok", "bad", "full"]  # never a done, refused or locked unit
    assert progress.calls[0] == ("start", "toys", "6", "toys") and progress.calls[-1] == ("finish", "toys")
    assert [c[2] for c in progress.calls if c[0] == "advance"] == [u.key for u in units]
    assert lock.exists() and not lock_path_for(tmp_path / "ok.txt").exists()  # locks released
    again = run_units("toy", units[:1], worker, overwrite=True)
    assert [(i.key, i.status) for i in again.items] == [("ok", Status.DONE)]


class _AheadWorker(_Worker):
    """Sees the units to come, runs "free" units without a lock and stops the run on "stop"."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[list[str]] = []

    def look_ahead(self, upcoming: list[_Unit]) -> None:
        self.seen.append([u.key for u in upcoming])

    def lock(self, unit: _Unit) -> UnitLock | None:
        return None if unit.name == "free" else super().lock(unit)

    def run(self, unit: _Unit) -> Outcome:
        if unit.name == "stop":
            raise StopRun(ConfigError("no encoder weights"))
        if unit.name == "free":
            self.ran.append(unit.key)
            assert not lock_path_for(unit.outputs[0]).exists()
            return Outcome(Status.DONE, "read only")
        return super().run(unit)


def test_the_unit_loop_looks_ahead_runs_lockless_units_and_stops_on_a_run_level_error(tmp_path: Path) -> None:
    units = [_Unit("toy", n, (tmp_path / f"{n}.txt",), name=n) for n in ("ok", "free", "stop", "after")]
    worker = _AheadWorker()
    report = StageReport("toy")
    with pytest.raises(ConfigError, match="no encoder weights"):
        run_units("toy", units, worker, look_ahead=worker.look_ahead, into=report)
    assert worker.seen == [["free", "stop", "after"], ["stop", "after"], ["after"]]
    assert [(i.key, i.status) for i in report.items] == [("ok", Status.DONE), ("free", Status.DONE)]
    assert worker.ran == ["ok", "free"] and not lock_path_for(tmp_path / "stop.txt").exists()


def test_typed_units_list_their_fields_as_params(tmp_path: Path) -> None:
    unit = _Unit("toy", "k", (tmp_path / "a",), name="n")
    assert unit.params == {"name": "n"}
    assert unit.to_dict() == {
        "stage": "toy",
        "key": "k",
        "done": False,
        "outputs": [str(tmp_path / "a")],
        "params": {"name": "n"},
    }


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_feature_project(tmp_path_factory.mktemp("contract") / "p", n_patients=10, folds=2)


def test_one_process_runs_a_list_of_units_of_the_plan(project: Path) -> None:
    """What `--units-per-task N` and many-units-per-GPU need: any units of the one plan, one call."""
    from steph.pipeline.merge import MergeUnit
    from steph.stages import (
        MergeSelection,
        TaskVectorSelection,
        TrainSourceSelection,
        open_project,
        plan,
        run_units,
    )
    from steph.units import ModelUnit

    p = open_project(project, {"train.epochs": 1, "train.device": "cpu"})
    models = plan(p, TrainSourceSelection())
    assert all(isinstance(u, ModelUnit) for u in models)
    assert [(u.cancer, u.fold) for u in models] == [("BRCA", 0), ("BRCA", 1), ("BLCA", 0), ("BLCA", 1)]
    chosen = [models[1], models[2]]
    report = run_units(p, chosen)
    assert [(i.key, i.status) for i in report.items] == [
        ("BRCA/fold_1", Status.DONE),
        ("BLCA/fold_0", Status.DONE),
    ]
    assert [u.done for u in models] == [False, True, True, False]
    again = run_units(p, chosen)
    assert {i.status for i in again.items} == {Status.SKIPPED}
    vectors = plan(p, TaskVectorSelection())
    with pytest.raises(ValueError, match="several stages"):
        run_units(p, [models[0], vectors[0]])
    done = run_units(p, [v for v in vectors if v.key in ("BRCA/fold_1", "BLCA/fold_0")])
    assert done.ok and len(done.items) == 2
    merges = plan(p, MergeSelection(target="BRCA", methods=["model-avg"], folds=[1]))
    assert [type(u) for u in merges] == [MergeUnit] and merges[0].run == "model-avg"
    assert set(merges[0].params) == {
        "target",
        "method",
        "label",
        "overrides",
        "run",
        "fold",
        "sources",
        "source_fold",
        "paper",
        "source_choice",
    }


def test_open_project_takes_the_clis_config_file(project: Path, tmp_path: Path) -> None:
    import yaml

    from steph.stages import open_project

    data = yaml.safe_load((project / "stephctl.yaml").read_text(encoding="utf-8"))
    data.setdefault("train", {})["epochs"] = 7
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(data), encoding="utf-8")
    assert open_project(project).config.train.epochs != 7
    assert open_project(project, config_file=other).config.train.epochs == 7
    assert open_project(project, {"train.epochs": 3}, config_file=other).config.train.epochs == 3


class _GroupWorker(_Worker):
    """Groups units by the first letter of their name; a group's runnable units run in one call,
    under every one's lock (each must be locked when the group runs)."""

    def __init__(self) -> None:
        super().__init__()
        self.groups: list[list[str]] = []

    def together(self, units: list[_Unit]) -> list[list[_Unit]]:
        groups: dict[str, list[_Unit]] = {}
        for u in units:
            groups.setdefault(u.name[0], []).append(u)
        return list(groups.values())

    def run_group(self, units: list[_Unit]) -> list[Outcome]:
        assert all(lock_path_for(u.outputs[0]).exists() for u in units)  # held while the group runs
        self.groups.append([u.key for u in units])
        if any(u.name.endswith("bad") for u in units):
            raise DataError("shared input unreadable", hint="fix it")
        for u in units:
            u.outputs[0].write_text("done")
        return [Outcome(Status.DONE, f"with {len(units) - 1} others") for _ in units]


def test_grouped_units_run_together_each_under_its_lock_and_reported_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A group's done, refused and locked units, and one whose lock cannot be written, are
    reported as the unit loop reports them; the others run in one call, under all their locks;
    a failure of that call fails each of them; a group of one runs alone (its worker's ``run``)."""
    import steph.units

    def unit(name: str) -> _Unit:
        return _Unit("toy", name, (tmp_path / f"{name}.txt",), name=name)

    real_hold = steph.units.hold

    def hold(path: Path, **kwargs: object) -> object:
        if path.name == "a-full.txt":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_hold(path, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(steph.units, "hold", hold)
    names = ("a1", "a2", "a-done", "a-locked", "b1", "b-bad", "c1", "arefused", "a-full")
    units = [unit(n) for n in names]
    (tmp_path / "a-done.txt").write_text("done")
    lock = lock_path_for(tmp_path / "a-locked.txt")  # a live process of this host holds it
    lock.write_text(f'{{"host": "{socket.gethostname()}", "pid": {os.getpid()}, "started": {time.time()}}}')
    worker = _GroupWorker()
    worker.refuse = lambda u: "refused: no input" if u.name == "arefused" else None  # type: ignore[method-assign]
    report = run_units("toy", units, worker, progress=_Progress())
    status = {i.key: (i.status, i.message) for i in report.items}
    assert [i.key for i in report.items] == [
        "a1", "a2", "a-done", "a-locked", "arefused", "a-full", "b1", "b-bad", "c1"
    ]  # fmt: skip
    assert status["a-full"][0] is Status.FAILED and "No space left on device" in status["a-full"][1]
    assert status["a1"] == status["a2"] == (Status.DONE, "with 1 others")
    assert status["a-done"] == (Status.SKIPPED, "exists") and status["a-locked"][0] is Status.LOCKED
    assert status["arefused"] == (Status.FAILED, "refused: no input")
    assert status["b1"] == status["b-bad"] == (Status.FAILED, "shared input unreadable (hint: fix it)")
    assert status["c1"] == (Status.DONE, "written") and worker.ran == ["c1"]
    assert worker.groups == [["a1", "a2"], ["b1", "b-bad"]]
    assert not lock_path_for(tmp_path / "a1.txt").exists() and lock.exists()  # released; not theirs
