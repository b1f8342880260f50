"""Every `stephctl` command in a code block of README.md and docs/*.md runs on the demo project.

The demo project (`stephctl demo --quick`) is built once per test session; the commands run in
the order the documents give them, in one working folder, against that project (`-p` is set to
it; `$P`, `$T`, `$C`, `$K` and the README's `slide1.svs slide2.svs` are filled from it). Usage
synopses (`stephctl merge --target BRCA [-p DIR] [--method steph ...]`) are checked against the
command's --help instead. A command the demo cannot run (real weights, GPUs, a Slurm cluster,
a published download, another lab's slides) is listed in :data:`EXCLUDED` with the reason; a
command that is neither run nor excluded fails the test, so a new documented command needs one
or the other.
"""

from __future__ import annotations

import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

EXCLUDED: dict[str, str] = {
    "uv run stephctl demo": "the full demo (minutes of CPU); the session runs `demo --quick`, test_demo runs it end to end",
    "--weights /models/": "needs the real UNI2-h weights (a gated download)",
    "--encoder uni2-h": "needs the real UNI2-h weights (a gated download)",
    "--device cuda": "needs a GPU",
    "--devices 0,1,2,3": "needs four GPUs",
    "--submit": "submits jobs to a Slurm cluster",
    "/data/": "a published download (UNI2-h-DSS features, the authors' checkpoints) the demo does not have",
    "import-reference": "the authors' released checkpoints (tests/pipeline/test_train_source_import.py imports made ones)",
    "count-patches": "comes from examples/stephctl-plugin-example, not installed in the test environment",
    "--encoder color-histogram": "comes from examples/stephctl-plugin-example, not installed in the test environment",
    "--method cosine-topk": "comes from examples/stephctl-plugin-example, not installed in the test environment",
    "merge --target BRCA --paper": "trains the paper's whole comparison set (16 runs x 5 folds); test_merge_paper runs it",
    "labB": "a second lab's project with its own slides (tests/bundles/test_bundles_sources.py runs the exchange)",
    "LUAD": "LUAD is not a cancer of the demo",
    "TCGA-A1-A0SB": "names TCGA patients of a real cohort; the demo's patients are synthetic",
    "--manifest new_patients.csv": "a lab's own manifest of new slides",
    "stephctl view": "serves the viewer until stopped; tests/view/test_view.py drives it in a headless browser",
    "--sources auto:5": "picks 5 measured sources; the demo has 3 (tests/transfer/test_transfer.py covers auto:K)",
    "--sign ~/.ssh/": "signs with the lab's own SSH key (tests/bundles/test_sharing_signing.py signs with made keys)",
}
"""Substring of the command -> why the demo project cannot run it."""

SUBSTITUTIONS = {"$T": "BRCA", "$C": "BLCA", "$K": "0", '"$SLURM_ARRAY_TASK_ID"': "0"}


@dataclass(frozen=True)
class Documented:
    source: str
    line: int
    text: str

    @property
    def id(self) -> str:
        return f"{self.source}:{self.line}"


def _commands() -> list[Documented]:
    """`stephctl ...` lines of fenced code blocks (``$ `` prompts, ``uv run``, ``\\`` continuations)."""
    found = []
    for path in DOCUMENTS:
        lines = path.read_text(encoding="utf-8").splitlines()
        fenced = False
        i = 0
        while i < len(lines):
            line = lines[i].strip()
            i += 1
            if line.startswith("```"):
                fenced = not fenced
                continue
            if not fenced:
                continue
            start = i
            line = line.removeprefix("$ ")
            if not re.match(r"(uv run )?stephctl( |$)", line):
                continue
            while line.endswith("\\") and i < len(lines):
                line = line[:-1] + " " + lines[i].strip()
                i += 1
            for part in line.split(" && "):  # `stephctl train-source && stephctl task-vector`
                found.append(Documented(path.relative_to(ROOT).as_posix(), start, part.strip()))
    return found


COMMANDS = _commands()


def _is_synopsis(text: str) -> bool:
    return bool(re.search(r"\[|\(SLIDE|\bSTAGE\b|\.\.\.\]", text))


def _words(text: str) -> list[str]:
    """The command's words without its comment, pipes and redirections."""
    text = re.split(r"\s+#\s", text, maxsplit=1)[0]
    text = re.split(r"\s(\|\||\||>)\s", text, maxsplit=1)[0]
    for old, new in SUBSTITUTIONS.items():
        text = text.replace(old, new)
    words = shlex.split(text)
    return words[words.index("stephctl") + 1 :]


def _without_project(words: list[str]) -> list[str]:
    out, skip = [], False
    for word in words:
        if skip:
            skip = False
        elif word in ("-p", "--project"):
            skip = True
        else:
            out.append(word)
    return out


@pytest.fixture(scope="session")
def demo_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`stephctl demo --quick`, once per session."""
    from typer.testing import CliRunner

    from stephctl.main import app

    root = tmp_path_factory.mktemp("documented") / "demo"
    result = CliRunner().invoke(app, ["-q", "demo", str(root), "--quick"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return root


@pytest.fixture(scope="session")
def workdir(demo_project: Path) -> Path:
    """The working folder every documented command runs in (bundles land here)."""
    folder = demo_project.parent / "work"
    folder.mkdir(exist_ok=True)
    return folder


def test_every_documented_command_names_a_command() -> None:
    """Fast: each documented command (excluded ones too) starts with a command stephctl has."""
    from stephctl.main import app

    names = {info.name for info in app.registered_commands} | {g.name for g in app.registered_groups}
    assert len(COMMANDS) > 40 and {c.source for c in COMMANDS} >= {"README.md", "docs/sharing.md"}
    plugin_example = ("count-patches",)  # examples/stephctl-plugin-example (see EXCLUDED)
    for command in COMMANDS:
        words = [w for w in _without_project(_words(command.text)) if not w.startswith("-")]
        if words and words[0] not in plugin_example and not words[0].startswith(("[", "(")):
            assert words[0] in names, f"{command.id}: `stephctl {words[0]}` is not a command"


@pytest.mark.slow
@pytest.mark.parametrize("command", COMMANDS, ids=[c.id for c in COMMANDS])
def test_documented_command_runs_on_the_demo(
    command: Documented, demo_project: Path, workdir: Path, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    reason = next((why for part, why in EXCLUDED.items() if part in command.text), None)
    if reason is not None:
        pytest.skip(f"excluded: {reason}")
    monkeypatch.chdir(workdir)
    words = _words(command.text.replace("$P", str(demo_project)))
    if _is_synopsis(command.text):
        from stephctl.main import app

        commands = {info.name for info in app.registered_commands} | {g.name for g in app.registered_groups}
        name = [w for w in words if w in commands][:1]  # none: the root synopsis
        shown = cli(*name, "--help", env={"COLUMNS": "400"})
        assert shown.exit_code == 0, shown.output
        for option in re.findall(r"(?<![\w-])(--[a-z][\w-]*)", command.text):
            assert option in shown.output, (
                f"{command.id}: {option} is not an option of `stephctl {' '.join(name)}`"
            )
        return
    if words and words[0] == "init":
        target = workdir / Path(words[1]).name
        shutil.rmtree(target, ignore_errors=True)
        words = ["init", str(target), *words[2:]]
    elif words and words[0] == "splits":  # on a copy holding the demo's labels, not its splits
        fresh = workdir / "fresh"
        shutil.rmtree(fresh, ignore_errors=True)
        (fresh / "labels").mkdir(parents=True)
        shutil.copy(demo_project / "stephctl.yaml", fresh / "stephctl.yaml")
        for labels in (demo_project / "labels").glob("*.csv"):
            shutil.copy(labels, fresh / "labels" / labels.name)
        words = ["-p", str(fresh), *_without_project(words)]
    else:
        words = ["-p", str(demo_project), *_without_project(words)]
    slides = sorted((demo_project / "slides" / "BRCA").glob("SYN-BRCA-*"))[:2]
    for placeholder, slide in zip(("slide1.svs", "slide2.svs"), slides, strict=False):
        words = [str(slide) if w == placeholder else w for w in words]
    # the demo's STEPH run is steph-top2 (merge.options top_k 2): its bundle carries that name
    bundle = demo_project / "exports" / "BRCA-steph-top2-fold_0.safetensors"
    words = [str(bundle) if w == "BRCA-steph-fold_0.safetensors" else w for w in words]
    if "slides/*.svs" in words:
        at = words.index("slides/*.svs")
        words[at : at + 1] = [str(s) for s in slides]
    result = cli(
        *words, env={"COLUMNS": "200", "SLURM_ARRAY_TASK_ID": "0"} if "SLURM" in command.text else None
    )
    assert result.exit_code == 0, f"{command.id}: stephctl {' '.join(words)}\n{result.output}"


RECORD_FILES = {
    # record class name -> where it lies in a project (and in the work folder: predictions, splits)
    "ModelRecord": ["models/*/fold_*/meta.json"],
    "Theta0Record": ["models/null.json"],
    "TaskVectorRecord": ["task_vectors/*/fold_*.json"],
    "MergeRecord": ["merged/*/*/fold_*/meta.json"],
    "MetricsRecord": ["results/*/*/fold_*/metrics.json", "models/*/fold_*/metrics.json"],
    "SplitsRecord": ["splits/*/*_splits.json"],
    "TransferRecord": ["transfer/targets/*.json"],
    "PredictionRecord": ["predictions/*/meta.json"],
    "ExplainRecord": ["reports/*/patients/*/*/explain.json"],
    "CohortRecord": ["synthetic/cohort.json"],
}


@pytest.mark.slow
def test_every_record_of_the_demo_reads_back(demo_project: Path, workdir: Path) -> None:
    """Every record the demo wrote (and the documented commands, when they ran before this test)
    reads back through its class, with the type checks of ``from_json``, and writes back the same
    JSON, key order included."""
    import json

    from steph import records

    seen: dict[str, int] = {}
    for name, patterns in RECORD_FILES.items():
        cls = getattr(records, name)
        for root in (demo_project, workdir, workdir / "fresh"):
            for pattern in patterns:
                for path in sorted(root.glob(pattern)):
                    data = json.loads(path.read_text())
                    assert list(cls.read(path).to_json().items()) == list(data.items()), path
                    seen[name] = seen.get(name, 0) + 1
    always = {
        "ModelRecord",
        "Theta0Record",
        "TaskVectorRecord",
        "MergeRecord",
        "MetricsRecord",
        "CohortRecord",
    }
    assert always <= set(seen), f"the demo wrote none of {sorted(always - set(seen))}"
