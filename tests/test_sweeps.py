"""mfkern.sweeps: picklable run configs, derived seeds, mergeable results files, fan-out backends."""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import pickle
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from mfkern import MeanFieldRegressor
from mfkern.sweeps import (
    RunConfig,
    derive_seed,
    execute_run,
    fit_and_score,
    job_array_index,
    make_data,
    make_sweep,
    merge_results,
    read_results,
    results_table,
    run_job_array_task,
    run_sweep,
)

TINY = dict(n_steps=15, log_every=5)
DATA = dict(n=16, n_test=12, d=3, noise=0.1)


def _sweep(name="demo", **kwargs):
    return make_sweep(name, {"n_particles": [8, 16], "lam": [0.01, 0.02]}, base_seed=2024, fixed=TINY, data=DATA,
                      **kwargs)


def _results(records):
    """What must not depend on where or how a run ran: everything but the timing."""
    return [{k: v for k, v in r.items() if k != "timing"} for r in records]


def quick_run(config):
    """A fast run function: a few numbers from the config's seeds (module level, so workers can unpickle it)."""
    rng = np.random.default_rng(config.seed)
    return {"draw": float(rng.standard_normal()), "data_seed": config.data_seed % 1000,
            "n_particles": config.param_dict.get("n_particles")}


def exploding_run(config):
    raise AssertionError(f"run {config.run_index} should not have been run again")


# ------------------------------------------------------------------------------------------- configs and seeds
def test_config_pickles_hashes_and_round_trips():
    config = RunConfig("s", 3, 99, params={"lam": 0.01, "n_particles": 8, "activation": "erf"},
                       data={"n": 10, "shape": [2, 3]})
    for copy in (pickle.loads(pickle.dumps(config)), RunConfig.from_dict(json.loads(json.dumps(config.to_dict())))):
        assert copy == config and hash(copy) == hash(config) and copy.key == config.key
        assert copy.seed == config.seed
    assert config.param_dict == {"activation": "erf", "lam": 0.01, "n_particles": 8}
    assert config.data_dict == {"n": 10, "shape": [2, 3]}
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.run_index = 4
    # The key changes with anything that changes the run.
    assert RunConfig("s", 3, 99, params={"lam": 0.02, "n_particles": 8, "activation": "erf"},
                     data={"n": 10, "shape": [2, 3]}).key != config.key
    assert RunConfig("s", 4, 99, params=config.param_dict, data=config.data_dict).key != config.key


def test_config_bad_input():
    with pytest.raises(ValueError, match="random_state"):
        RunConfig("s", 0, 1, params={"random_state": 3})
    with pytest.raises(TypeError, match="params\\['f'\\]"):
        RunConfig("s", 0, 1, params={"f": object()})
    with pytest.raises(ValueError, match="run_index"):
        RunConfig("s", -1, 1)
    with pytest.raises(ValueError, match="base_seed"):
        RunConfig("s", 0, 2**64)
    with pytest.raises(TypeError, match="sweep"):
        RunConfig("", 0, 1)


def test_seed_is_numpys_spawned_child():
    """derive_seed(base, i, stream) is the child SeedSequence(base).spawn(..)[i].spawn(..)[stream], reduced to
    64 bits: checked through numpy's spawn API (a different route from the spawn_key the module uses)."""
    base = 123456789
    for index in (0, 1, 7, 1000):
        for stream in (0, 1):
            child = np.random.SeedSequence(base).spawn(index + 1)[index].spawn(stream + 1)[stream]
            lo, hi = child.generate_state(2, dtype=np.uint32)
            assert derive_seed(base, index, stream) == int(lo) + int(hi) * 2**32
    seeds = {derive_seed(base, i, s) for i in range(2000) for s in (0, 1)}
    assert len(seeds) == 4000 and all(0 <= s < 2**64 for s in seeds)
    assert RunConfig("x", 5, base).seed == derive_seed(base, 5)
    assert RunConfig("x", 5, base).data_seed == derive_seed(base, 5, 1)
    assert RunConfig("x", 5, base, data={"seed": 42}).data_seed == 42  # shared data, own model seed


def test_sweep_seeds_are_the_runner_seeds_of_the_key_run_index_stream():
    """runner.derive_seed(base, run_index, stream) and sweeps.derive_seed(base, run_index, stream) are both
    SeedSequence(base, spawn_key=(run_index, stream)) reduced to 64 bits (lo | hi << 32), written out here."""
    from mfkern import runner

    for base in (0, 1, 123456789, 2**63 + 5, 2**64 - 1):
        for index in (0, 3, 2**31 + 1):
            for stream in (0, 1, 7):
                lo, hi = np.random.SeedSequence(base, spawn_key=(index, stream)).generate_state(2, dtype=np.uint32)
                expect = int(lo) | (int(hi) << 32)
                assert derive_seed(base, index, stream) == expect
                assert runner.derive_seed(base, index, stream) == expect
    with pytest.raises(ValueError, match="run_index"):
        derive_seed(1, -1)
    with pytest.raises(ValueError, match="stream"):
        derive_seed(1, 0, -1)


def test_make_sweep_grid_repeats_and_extension():
    configs = make_sweep("g", {"a": [1, 2], "b": ["x", "y", "z"]}, base_seed=5, repeats=2, fixed={"a": 0, "c": 1.5})
    assert [c.run_index for c in configs] == list(range(12))
    assert [(c.param_dict["a"], c.param_dict["b"]) for c in configs[::2]] == \
        [(1, "x"), (1, "y"), (1, "z"), (2, "x"), (2, "y"), (2, "z")]
    assert all(c.param_dict["c"] == 1.5 for c in configs)
    assert len({c.seed for c in configs}) == 12  # repeats get their own seeds
    more = make_sweep("g", [{"a": 3, "b": "x"}], base_seed=5, start_index=12)
    assert more[0].run_index == 12 and more[0].seed == derive_seed(5, 12)
    assert make_sweep("g", {"a": [1, 2], "b": ["x", "y", "z"]}, base_seed=5, repeats=2, fixed={"a": 0, "c": 1.5}) \
        == configs  # deterministic
    with pytest.raises(TypeError, match="grid\\['a'\\]"):
        make_sweep("g", {"a": 3}, base_seed=1)
    with pytest.raises(TypeError, match="grid must be"):
        make_sweep("g", 3, base_seed=1)


def test_make_data_kinds():
    X, y, X_test, y_test = make_data("product", n=30, n_test=5, d=4, seed=3)
    assert X.shape == (30, 4) and X_test.shape == (5, 4) and y.shape == (30,)
    np.testing.assert_allclose(y, 4 * X[:, 0] * X[:, 1])
    X, y, _, _ = make_data("single_index", n=30, d=4, seed=3)
    np.testing.assert_allclose(y, np.tanh(4 * X[:, 0]))
    with pytest.raises(ValueError, match="kind"):
        make_data("spiral")


def test_fit_and_score_is_the_documented_fit():
    config = _sweep()[1]
    got = fit_and_score(config)
    X, y, X_test, y_test = make_data(**DATA, seed=config.data_seed)
    model = MeanFieldRegressor(random_state=config.seed, n_threads=1, **config.param_dict).fit(X, y)
    assert got["test_mse"] == pytest.approx(np.mean((model.predict(X_test) - y_test) ** 2), rel=1e-12)
    assert got["n_steps_done"] == TINY["n_steps"] and got["U"] == model.history_["U"][-1]


def test_execute_run_checks_the_result():
    with pytest.raises(TypeError, match="mapping"):
        execute_run(lambda c: 3.0, _sweep()[0])
    with pytest.raises(TypeError, match="result\\['x'\\]"):
        execute_run(lambda c: {"x": object()}, _sweep()[0])
    record = execute_run(lambda c: {"x": float("nan")}, _sweep()[0])  # NaN results are allowed
    assert np.isnan(record["result"]["x"])


# ------------------------------------------------------------------------------------------- results files
def test_job_array_files_merge_into_the_serial_results(tmp_path):
    configs = _sweep()
    serial = run_sweep(configs, quick_run, out=tmp_path / "serial.jsonl")
    assert _results(read_results(tmp_path / "serial.jsonl")) == _results(serial)
    for index in range(3):  # three array tasks sharing four runs
        run_job_array_task(configs, tmp_path / "array", quick_run, index=index, task_count=3)
    assert len(list((tmp_path / "array").glob("demo-task*.jsonl"))) == 3
    merged = merge_results([str(tmp_path / "array" / "*.jsonl"), tmp_path / "serial.jsonl"],
                           out=tmp_path / "merged.jsonl")
    assert _results(merged) == _results(serial)  # duplicates (same key) kept once, sorted by run index
    assert _results(read_results(tmp_path / "merged.jsonl")) == _results(serial)
    table = results_table(merged)
    assert table["run_index"] == [0, 1, 2, 3] and table["param.n_particles"] == [8, 8, 16, 16]
    assert table["draw"] == [r["result"]["draw"] for r in serial]
    # Two different configs under the same (sweep, run_index) cannot be merged.
    other = run_sweep(make_sweep("demo", {"n_particles": [32]}, base_seed=1, fixed=TINY), quick_run)
    with pytest.raises(ValueError, match="two different configs"):
        merge_results([merged, other])


def test_read_results_tolerates_only_a_truncated_last_line(tmp_path):
    records = run_sweep(_sweep()[:2], quick_run)
    path = tmp_path / "r.jsonl"
    lines = [json.dumps(r) for r in records]
    path.write_text(lines[0] + "\n" + lines[1][:40])
    assert _results(read_results(path)) == _results(records[:1])
    path.write_text(lines[0] + "\n" + lines[1][:lines[1].index("}") + 1])  # cut right after an inner "}"
    assert _results(read_results(path)) == _results(records[:1])
    path.write_text(lines[0][:40] + "\n" + lines[1] + "\n")
    with pytest.raises(ValueError, match="r.jsonl:1"):
        read_results(path)


def test_resume_runs_only_what_is_missing(tmp_path):
    configs = _sweep()
    out = tmp_path / "out.jsonl"
    first = run_sweep(configs[:2], quick_run, out=out)
    with pytest.raises(AssertionError, match="should not have been run"):
        run_sweep(configs, exploding_run, out=out)  # runs 2 and 3 are missing: it tries them
    again = run_sweep(configs[:2], exploding_run, out=out)  # nothing missing: nothing runs
    assert _results(again) == _results(first)


def test_job_array_index_from_the_environment(monkeypatch):
    for name in ("SLURM_ARRAY_TASK_ID", "PBS_ARRAY_INDEX", "PBS_ARRAYID", "SGE_TASK_ID", "LSB_JOBINDEX"):
        monkeypatch.delenv(name, raising=False)
    assert job_array_index() is None
    monkeypatch.setenv("PBS_ARRAY_INDEX", "4")
    assert job_array_index() == 4
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "7")
    assert job_array_index() == 7
    assert job_array_index({"SGE_TASK_ID": "undefined"}) is None
    assert job_array_index({"SGE_TASK_ID": "1"}) == 0 and job_array_index({"LSB_JOBINDEX": "3"}) == 2  # 1-based
    with pytest.raises(ValueError, match="SGE_TASK_ID"):
        job_array_index({"SGE_TASK_ID": "x"})


# ------------------------------------------------------------------------------------------- backends
def test_backends_give_the_same_results():
    configs = _sweep()
    serial = run_sweep(configs)  # the real default run: MeanFieldRegressor fits
    with ThreadPoolExecutor(max_workers=2) as executor:
        assert _results(run_sweep(configs, backend="futures", executor=executor)) == _results(serial)
    assert _results(run_sweep(configs, backend="joblib", n_jobs=2)) == _results(serial)
    assert len({r["result"]["test_mse"] for r in serial}) == 4  # the runs really differ
    with pytest.raises(ValueError, match="backend"):
        run_sweep(configs, backend="ray")
    with pytest.raises(ValueError, match="executor"):
        run_sweep(configs, backend="futures")
    with pytest.raises(TypeError, match="configs\\[0\\]"):
        run_sweep([{"n_particles": 3}])


@pytest.mark.skipif(importlib.util.find_spec("distributed") is None,
                    reason='needs dask.distributed: pip install "dask[distributed]"')
def test_dask_local_cluster(tmp_path):
    """The docs' LocalCluster example at tiny size: two worker processes, results as in one process."""
    from dask.distributed import Client, LocalCluster

    configs = _sweep()
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        records = run_sweep(configs, backend="dask", client=client, out=tmp_path / "dask.jsonl")
    assert _results(records) == _results(run_sweep(configs))
    assert _results(read_results(tmp_path / "dask.jsonl")) != []
    assert {r["timing"]["pid"] for r in records} - {__import__("os").getpid()}  # ran in the workers
