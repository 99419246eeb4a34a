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
TINY_DEMO = dict(TINY, n=25, n_test=50, n_steps=4, log_every=2)


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
        for option in ("--quick", "--seeds", "fig1", "single-index", "all", "--n-jobs", "--list-claims", "CLAIM"):
            assert option in out


def test_no_command_prints_help_and_returns_2(capsys):
    assert cli.main([]) == 2
    assert "usage: mfkern" in capsys.readouterr().out


def test_reproduce_without_or_with_an_unknown_target_returns_2(capsys):
    assert cli.main(["reproduce"]) == 2
    assert cli.main(["reproduce", "fig3"]) == 2
    assert "unknown experiment or claim 'fig3'" in capsys.readouterr().err


def test_reproduce_lists_the_claims(capsys):
    assert cli.main(["reproduce", "--list-claims"]) == 0
    out = capsys.readouterr().out
    for cid in ("separation-parity2-exponent", "single-index-param-omega1", "fig1-paper-dof-rises",
                "parity-k3-d16", "demo-mfld-beats-every-kernel"):
        assert cid in out


@pytest.mark.parametrize("argv", [
    ["reproduce", "fig1", "--seeds", "0"],      # seeds must be positive
    ["reproduce", "fig1", "--seeds", "two"],
    ["reproduce", "fig1", "--setting", "paper"],  # no such option any more: fig1 runs both settings
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
    monkeypatch.setattr(demo, "QUICK_SETTINGS", dict(demo.QUICK_SETTINGS, **TINY_DEMO))
    out = tmp_path / "res"
    assert cli.main(["demo", "--quick", "--out", str(out), "--seed", "2", "--n-threads", "1"]) == 0
    assert "| MFLD (two-timescale) |" in capsys.readouterr().out
    for name in ("demo.json", "demo.md", "demo_training.png", "demo_comparison.png", "cache/demo.jsonl"):
        assert (out / name).stat().st_size > 0
    with open(out / "demo.json") as fh:
        assert json.load(fh)["base_seed"] == 2


def test_demo_into_a_file_path_exits_2(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert cli.main(["demo", "--quick", "--out", str(blocker)]) == 2
    assert "mfkern demo: error" in capsys.readouterr().err


def test_reproduce_single_index_quick_writes_results(tmp_path, monkeypatch):
    monkeypatch.setattr(single_index, "QUICK", dict(single_index.QUICK, ds=(3, 5), c_n=3, n_fresh=20, **TINY))
    assert cli.main(["reproduce", "single-index", "--quick", "--seeds", "2", "--out", str(tmp_path),
                     "--seed", "7"]) == 0
    for ext in ("json", "md", "png"):
        assert os.path.getsize(tmp_path / f"single-index.{ext}") > 0
    with open(tmp_path / "single-index.json") as fh:
        data = json.load(fh)
    assert data["base_seed"] == 7 and len(data["evaluation_seeds"]) == 2


def test_reproduce_one_claim_reuses_the_cache_and_gives_the_same_verdict(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(single_index, "QUICK", dict(single_index.QUICK, ds=(3, 5), c_n=3, n_fresh=20, **TINY))
    assert cli.main(["reproduce", "single-index", "--quick", "--out", str(tmp_path)]) == 0
    with open(tmp_path / "single-index.json") as fh:
        verdict = {c["id"]: c["verdict"] for c in json.load(fh)["claims"]}["single-index-param-rises"]
    lines = (tmp_path / "cache" / "single-index.jsonl").read_text().count("\n")
    capsys.readouterr()
    assert cli.main(["reproduce", "single-index-param-rises", "--quick", "--out", str(tmp_path)]) == 0
    assert f"**{verdict}** `single-index-param-rises`" in capsys.readouterr().out
    assert (tmp_path / "cache" / "single-index.jsonl").read_text().count("\n") == lines  # nothing rerun
    assert (tmp_path / "claims" / "single-index-param-rises" / "single-index.json").exists()


def test_reproduce_all_runs_every_experiment_with_the_options(monkeypatch):
    import mfkern.experiments as experiments

    calls = []
    monkeypatch.setattr(experiments, "run_experiment", lambda name, out, **kw: calls.append((name, out, kw)))
    assert cli.main(["reproduce", "all", "--quick", "--seeds", "3", "--out", "somewhere", "--n-jobs", "2"]) == 0
    assert [c[0] for c in calls] == ["fig1", "fig2", "separation", "single-index", "parity"]
    for _, out, kw in calls:
        assert out == "somewhere"
        assert kw == dict(quick=True, seeds=3, n_jobs=2, base_seed=0)


def test_run_experiment_refuses_unknown_names_and_options(tmp_path):
    import mfkern.experiments as experiments

    with pytest.raises(ValueError, match="name"):
        experiments.run_experiment("fig9", tmp_path)
    with pytest.raises(ValueError, match="does not take"):
        experiments.run_experiment("fig1", tmp_path, tasks=("parity2",))
    with pytest.raises(ValueError, match="unknown claim"):
        experiments.experiment_of_claim("nope")
    assert experiments.experiment_of_claim("separation-product-dmax") == ("separation", {"tasks": ("product",)})
    assert experiments.experiment_of_claim("parity-k3-d16") == ("parity", {"cells": ((3, 16),)})


def test_reproduce_with_a_missing_component_exits_2(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "mfkern.experiments.parity", None)  # import raises ImportError
    assert cli.main(["reproduce", "parity", "--quick"]) == 2
    assert "missing" in capsys.readouterr().err
