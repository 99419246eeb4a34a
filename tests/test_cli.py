"""Tests of the ``mfkern`` command line (mfkern.cli and ``python -m mfkern``): help, exit codes, wiring.

The runs use tiny sizes (the experiments' size tables are monkeypatched), so each takes seconds.
"""
import json
import os
import re
import subprocess
import sys

import pytest

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

from mfkern import cli  # noqa: E402
from mfkern.experiments import demo, single_index  # noqa: E402

TINY = dict(n_test=40, n_particles=12, n_steps=4, log_every=2)


def _python_m(*args, cwd):
    return subprocess.run([sys.executable, "-m", "mfkern", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def test_python_m_help(tmp_path):
    result = _python_m("--help", cwd=tmp_path)
    assert result.returncode == 0
    for command in ("demo", "reproduce", "discretization"):
        assert command in result.stdout


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0
    assert re.search(r"^mfkern \d+\.\d+", capsys.readouterr().out, re.MULTILINE)


@pytest.mark.parametrize("command", [["demo"], ["reproduce"]])
def test_subcommand_help_exits_zero(command, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(command + ["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--out" in out
    if command == ["reproduce"]:
        for option in ("--quick", "--seeds", "fig1", "single-index", "all", "--n-jobs", "--setting"):
            assert option in out


def test_no_command_prints_help_and_returns_2(capsys):
    assert cli.main([]) == 2
    assert "usage: mfkern" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [
    ["reproduce"],                              # experiment missing
    ["reproduce", "fig3"],                      # unknown experiment
    ["reproduce", "fig1", "--seeds", "0"],      # seeds must be positive
    ["reproduce", "fig1", "--seeds", "two"],
    ["reproduce", "fig1", "--setting", "other"],
    ["demo", "--seed", "-1"],
    ["demo", "--bogus"],
    ["nonsense"],
])
def test_bad_usage_exits_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    assert "error" in capsys.readouterr().err


def test_discretization_help_comes_from_the_analysis_module(capsys):
    pytest.importorskip("mfkern.analysis")
    with pytest.raises(SystemExit) as exc:
        cli.main(["discretization", "--help"])
    assert exc.value.code == 0
    assert "usage: mfkern discretization" in capsys.readouterr().out


def test_discretization_without_the_analysis_module_exits_2(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "mfkern.analysis", None)  # makes `import mfkern.analysis` raise ImportError
    assert cli.main(["discretization", "--quick"]) == 2
    err = capsys.readouterr().err
    assert "mfkern.analysis" in err and "not available" in err


def test_other_commands_do_not_import_the_analysis_module(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "mfkern.analysis", None)
    with pytest.raises(SystemExit) as exc:
        cli.main(["demo", "--help"])
    assert exc.value.code == 0


def test_demo_command_writes_results(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(demo, "QUICK_SETTINGS", dict(demo.QUICK_SETTINGS, n=25, **TINY))
    out = tmp_path / "res"
    assert cli.main(["demo", "--quick", "--out", str(out), "--seed", "2", "--n-threads", "1"]) == 0
    assert "| MFLD (two-timescale) |" in capsys.readouterr().out
    for name in ("demo.json", "demo.md", "demo_training.png", "demo_comparison.png"):
        assert (out / name).stat().st_size > 0
    with open(out / "demo.json") as fh:
        assert json.load(fh)["seeds"]["base"] == 2


def test_demo_into_a_file_path_exits_2(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert cli.main(["demo", "--quick", "--out", str(blocker)]) == 2
    assert "mfkern demo: error" in capsys.readouterr().err


def test_reproduce_single_index_quick_writes_results(tmp_path, monkeypatch):
    monkeypatch.setattr(single_index, "QUICK", dict(single_index.QUICK, ds=(3, 5), n_per_d=5, **TINY))
    assert cli.main(["reproduce", "single-index", "--quick", "--seeds", "1", "--out", str(tmp_path),
                     "--setting", "paper", "--seed", "7"]) == 0
    for ext in ("json", "md", "png"):
        assert os.path.getsize(tmp_path / f"single-index.{ext}") > 0
    with open(tmp_path / "single-index.json") as fh:
        data = json.load(fh)
    assert data["setting"] == "paper" and data["base_seed"] == 7 and data["n_seeds"] == 1
    assert all(run["config"]["lam_w"] == 0.25 and run["config"]["input_scale"] == 1.0 for run in data["runs"])


def test_reproduce_all_runs_every_experiment_with_the_options(monkeypatch):
    import mfkern.experiments as experiments

    calls = []
    monkeypatch.setattr(experiments, "run_experiment", lambda name, out, **kw: calls.append((name, out, kw)))
    assert cli.main(["reproduce", "all", "--quick", "--seeds", "3", "--out", "somewhere", "--n-jobs", "2"]) == 0
    assert [c[0] for c in calls] == ["fig1", "fig2", "separation", "single-index", "parity"]
    for _, out, kw in calls:
        assert out == "somewhere"
        assert kw == dict(quick=True, seeds=3, n_jobs=2, setting="normalised", base_seed=0)


def test_run_experiment_passes_only_the_options_an_experiment_accepts(monkeypatch, tmp_path):
    """`parity` (another module's experiment) takes no `setting`/`base_seed`; the dispatcher must not pass them."""
    import types

    import mfkern.experiments as experiments

    seen = {}

    def run_parity(out_dir, *, quick=False, seeds=None, n_jobs=1, verbose=True):
        seen.update(out_dir=out_dir, quick=quick, seeds=seeds, n_jobs=n_jobs, verbose=verbose)

    monkeypatch.setitem(sys.modules, "mfkern.experiments.parity", types.SimpleNamespace(run_parity=run_parity))
    experiments.run_experiment("parity", tmp_path, quick=True, seeds=2, n_jobs=1, setting="paper", base_seed=3)
    assert seen == dict(out_dir=tmp_path, quick=True, seeds=2, n_jobs=1, verbose=True)
    with pytest.raises(ValueError, match="name"):
        experiments.run_experiment("fig9", tmp_path)
    with pytest.raises(ValueError, match="setting"):
        experiments.run_experiment("fig1", tmp_path, setting="other")


def test_reproduce_with_a_missing_component_exits_2(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "mfkern.experiments.parity", None)  # import raises ImportError
    assert cli.main(["reproduce", "parity", "--quick"]) == 2
    assert "missing" in capsys.readouterr().err
