"""Tests of mfkern.analysis: exact cases recover their known rates, the coupling is right, slope fits and
their intervals are right on synthetic data, bad configurations are rejected, sweeps resume and reproduce,
and the command-line entry works. Sizes are small: the whole file runs in well under a minute."""
from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest
from scipy import special, stats

import mfkern.analysis.particle as particle_module
import mfkern.analysis.timestep as timestep_module
from mfkern import core
from mfkern.analysis import (
    CACHE_NAME,
    DiscretizationConfig,
    add_cli_arguments,
    bootstrap_loglog,
    coupled_paths,
    derive_seed,
    erf_kernel,
    fit_loglog,
    initial_particles,
    mean_interval,
    mean_statistic,
    ou_stationary_variance,
    ou_variance_at_step,
    particle_error,
    run_cli,
    seed_slope,
    time_error,
)

OU = DiscretizationConfig(task="ou", n=4, d=3, n_probe=4, lam=0.5, lam_a=1.0, lam_w=0.5, eta=0.1, n_steps=0)
ERF = DiscretizationConfig(task="ou", activation="erf", n=4, d=15, n_probe=16, lam=1.0, lam_a=1.0, lam_w=1.0,
                           eta=0.1, n_steps=5)
PRODUCT = DiscretizationConfig(task="product", n=16, d=15, n_probe=6, lam=0.02, lam_a=1.0, lam_w=1.0, eta=1.0,
                               n_steps=12, record_every=3)


def covers(interval, value):
    return interval[0] <= value <= interval[1]


def same(sweep_a, sweep_b):
    """Equal sweeps, NaN == NaN (through JSON text)."""
    return json.dumps(sweep_a.to_dict(), sort_keys=True) == json.dumps(sweep_b.to_dict(), sort_keys=True)


# ---------------------------------------------------------------------------------------------- exact formulas

def test_ou_variance_matches_the_chain_recursion():
    lam, lam_w, eta = 0.7, 1.3, 0.4
    rate = lam * lam_w
    v = 1.0 / lam_w  # the prior
    recursion = [v]
    for _ in range(200):
        v = (1 - eta * rate) ** 2 * v + 2 * eta * lam  # Var of (1 - eta a) w + sqrt(2 eta lam) xi
        recursion.append(v)
    np.testing.assert_allclose(ou_variance_at_step(np.arange(201), eta, lam, lam_w), recursion, rtol=1e-12)
    assert ou_stationary_variance(eta, lam, lam_w) == pytest.approx(recursion[-1], rel=1e-10)
    # O(eta) bias against the continuous answer 1/lam_w, with the exact constant.
    bias = ou_stationary_variance(1e-4, lam, lam_w) * lam_w - 1
    assert bias == pytest.approx(1e-4 * rate / 2, rel=1e-3)


def test_ou_variance_rejects_unstable_step():
    with pytest.raises(ValueError, match="eta"):
        ou_stationary_variance(eta=5.0, lam=1.0, lam_w=1.0)


def test_erf_kernel_matches_monte_carlo():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((5, 4)) / 2
    s2, n_mc = 0.8, 400_000
    U = rng.standard_normal((n_mc, 5)) * math.sqrt(s2)  # (u, b) ~ N(0, s2 I)
    H = special.erf(np.hstack([X, np.ones((5, 1))]) @ U.T)
    mc = H @ H.T / n_mc
    # Each entry is a mean of n_mc terms in [-1, 1]: standard error <= 1/sqrt(n_mc); 5 sigma.
    np.testing.assert_allclose(erf_kernel(X, variance=s2), mc, atol=5 / math.sqrt(n_mc))


# ---------------------------------------------------------------------------------------------- slope fitting

def test_fit_loglog_recovers_an_exact_power_law():
    x = np.array([8.0, 16, 32, 64, 128])
    fit = fit_loglog(x, 3.0 * x ** -1.3)
    assert fit["slope"] == pytest.approx(-1.3, abs=1e-12)
    assert fit["intercept"] == pytest.approx(math.log(3.0), abs=1e-12)
    assert fit["ci_ols"][1] - fit["ci_ols"][0] == pytest.approx(0, abs=1e-9)


def test_fit_loglog_agrees_with_polyfit_and_scipy():
    rng = np.random.default_rng(0)
    x = np.geomspace(0.01, 1, 6)
    y = 2 * x * np.exp(0.1 * rng.standard_normal(6))
    fit = fit_loglog(x, y)
    slope, intercept = np.polyfit(np.log(x), np.log(y), 1)
    assert fit["slope"] == pytest.approx(slope, rel=1e-12)
    reg = stats.linregress(np.log(x), np.log(y))
    half = stats.t.ppf(0.975, 4) * reg.stderr
    np.testing.assert_allclose(fit["ci_ols"], (reg.slope - half, reg.slope + half), rtol=1e-10)


def test_slope_intervals_cover_the_true_slope_at_their_level():
    # Synthetic sweeps with a known slope and skewed per-seed noise (chi-square, like squared errors).
    rng = np.random.default_rng(11)
    x = np.array([16.0, 32, 64, 128, 256])
    hits, repeats = 0, 300
    slopes = []
    for i in range(repeats):
        groups = [2.0 * xx ** -1.0 * rng.chisquare(4, 8) / 4 for xx in x]
        fit = seed_slope(x, groups, "mean", n_boot=200, seed=i)
        hits += covers(fit["ci"], -1.0)
        slopes.append(fit["slope"])
    # Nominal 95%; binomial sd over 300 repeats is 0.013, so [0.90, 0.99] is a 4-sigma band.
    assert 0.90 <= hits / repeats <= 0.99
    assert np.mean(slopes) == pytest.approx(-1.0, abs=0.02)


def test_seed_slope_statistics_match_their_definitions():
    rng = np.random.default_rng(5)
    x = np.array([1.0, 2, 4, 8])
    gaps = [xx ** 1.0 * (1 + 0.05 * rng.standard_normal(6)) for xx in x]  # signed gaps, positive here
    squares = [xx ** 2.0 * (1 + 0.05 * rng.standard_normal(6)) for xx in x]
    assert seed_slope(x, [-g for g in gaps], "abs_mean")["slope"] == pytest.approx(
        np.polyfit(np.log(x), np.log([abs(np.mean(g)) for g in gaps]), 1)[0])
    root = seed_slope(x, squares, "root_mean")
    assert root["slope"] == pytest.approx(np.polyfit(np.log(x), np.log([np.sqrt(np.mean(s)) for s in squares]),
                                                     1)[0])
    assert covers(root["ci"], 1.0)


def test_bootstrap_is_reproducible_and_needs_two_values_per_point():
    x = np.array([1.0, 2, 4])
    groups = [np.array([1.0, 1.2, 0.9]), np.array([0.5, 0.55, 0.45]), np.array([0.26, 0.24, 0.25])]
    a = bootstrap_loglog(x, groups, mean_statistic, n_boot=300, seed=4)
    b = bootstrap_loglog(x, groups, mean_statistic, n_boot=300, seed=4)
    assert a["ci"] == b["ci"] and covers(a["ci"], a["slope"])
    single = bootstrap_loglog(x, [g[:1] for g in groups], mean_statistic, n_boot=50)
    assert all(math.isnan(v) for v in single["ci"])


def test_mean_interval_matches_scipy_and_folds_for_abs():
    values = np.array([0.3, -0.1, 0.25, 0.05, 0.2])
    mean, ci = mean_interval(values)
    expected = stats.t.interval(0.95, 4, loc=values.mean(), scale=stats.sem(values))
    assert mean == pytest.approx(values.mean())
    np.testing.assert_allclose(ci, expected)
    abs_mean, abs_ci = mean_interval(-values, absolute=True)
    assert abs_mean == pytest.approx(abs(values.mean()))
    assert abs_ci == pytest.approx((0.0, max(-expected[0], expected[1])))  # the interval contains 0


@pytest.mark.parametrize("x, y, match", [
    ([1.0], [1.0], "at least 2"),
    ([1.0, 2.0], [1.0, 0.0], "y must be positive"),
    ([0.0, 2.0], [1.0, 1.0], "x must be positive"),
    ([2.0, 2.0], [1.0, 3.0], "distinct"),
])
def test_fit_loglog_rejects_bad_input(x, y, match):
    with pytest.raises(ValueError, match=match):
        fit_loglog(x, y)


# ---------------------------------------------------------------------------------------------- exact rates

def test_erf_kernel_particle_error_recovers_slope_minus_one():
    sweep = particle_error(ERF, Ns=[64, 128, 256, 512, 1024], seeds=8)
    assert sweep.reference["kind"] == "exact"
    fit = sweep.slopes["kernel_sq_sup"]
    assert covers(fit["ci"], -1.0), fit
    assert fit["theory"] == -1.0
    # Independent route: refit from the tidy table with numpy.
    rows = sweep.rows("kernel_sq_sup")
    refit = np.polyfit(np.log([r["N"] for r in rows]), np.log([r["error"] for r in rows]), 1)[0]
    assert refit == pytest.approx(fit["slope"], rel=1e-10)


def test_erf_exact_reference_is_the_closed_form_at_the_last_step():
    # A single run with many particles: its kernel must sit close to the closed form of the OU variance.
    spec = {"config": ERF.to_dict(), "n_particles": 20000, "seed": 7}
    result = particle_module.particle_run(spec, n_threads=1)
    _, _, probe = ERF.data()
    exact = erf_kernel(probe, variance=ou_variance_at_step(ERF.n_steps, ERF.eta, ERF.lam, ERF.lam_w))
    # Entries are means of 20000 terms in [-1, 1]: 5 standard errors at most.
    np.testing.assert_allclose(result["kernel_final"], exact, atol=5 / math.sqrt(20000))
    # ... and not to the prior's kernel: the test can tell the variance apart.
    prior = erf_kernel(probe, variance=1 / ERF.lam_w)
    assert np.abs(np.asarray(result["kernel_final"]) - prior).max() > np.abs(
        np.asarray(result["kernel_final"]) - exact).max()


def test_ou_time_error_recovers_the_exact_weak_rate():
    sweep = time_error(OU, etas=[0.05, 0.1, 0.2, 0.4], seeds=4, n_particles=300, horizon=12.0)
    for metric in ("G_weak", "variance_weak_exact"):
        fit = sweep.slopes[metric]
        assert fit["exact_slope"] == pytest.approx(1.0, abs=0.1)  # the theory's +1, up to O(eta^2) terms
        assert covers(fit["ci"], fit["exact_slope"]), (metric, fit)
        for row in sweep.rows(metric):
            assert row["error"] == pytest.approx(row["exact"], rel=0.1)
    # Euler-Maruyama with additive noise has strong order 1.
    assert sweep.slopes["strong"]["slope"] == pytest.approx(1.0, abs=0.1)


def test_particle_run_objective_matches_the_core_objective():
    # G and U recorded by a run are the core's reduced objective at the same particles.
    spec = {"config": PRODUCT.replace(n_steps=0).to_dict(), "n_particles": 9, "seed": 3}
    result = particle_module.particle_run(spec)
    X, Y, probe = PRODUCT.data()
    W = initial_particles(3, 9, PRODUCT.d, PRODUCT.lam_w)
    expected = core.objective(W, X, Y, lam=PRODUCT.lam, lam_a=PRODUCT.lam_a, lam_w=PRODUCT.lam_w)
    assert result["G"] == pytest.approx(expected["G"], rel=1e-10)
    assert result["U"] == pytest.approx(expected["U"], rel=1e-10)
    np.testing.assert_allclose(result["kernel_final"], core.gram(W, probe), rtol=1e-12)
    # The predictor is kernel ridge regression with the particles' kernel (numpy reference).
    K = np.tanh(np.hstack([X, np.ones((X.shape[0], 1))]) @ W.T)
    H_probe = np.tanh(np.hstack([probe, np.ones((probe.shape[0], 1))]) @ W.T)
    A = np.linalg.solve(K @ K.T / 9 + X.shape[0] * PRODUCT.lam * PRODUCT.lam_a * np.eye(X.shape[0]), Y)
    np.testing.assert_allclose(result["predictor_final"], H_probe @ K.T @ A / 9, rtol=1e-8, atol=1e-10)


def test_ou_time_error_rejects_an_unstable_step_before_running():
    with pytest.raises(ValueError, match="eta"):
        time_error(OU, etas=[4.0, 8.0], seeds=1, n_particles=2, horizon=8.0)


# ---------------------------------------------------------------------------------------------- coupling

def test_coarse_increment_is_the_sum_of_the_fine_increments():
    cfg = PRODUCT
    X, Y, _ = cfg.data()
    N, seed, eta_fine, ratio = 7, 123, 0.05, 4
    eta = ratio * eta_fine
    paths = coupled_paths(cfg, n_particles=N, seed=seed, etas=[eta], reference_eta=eta_fine,
                          n_fine_steps=2 * ratio)
    W = initial_particles(seed, N, cfg.d, cfg.lam_w)
    for coarse_step in range(2):
        fine = [math.sqrt(eta_fine) * core.particle_noise(seed, j, N, cfg.d + 1)
                for j in range(coarse_step * ratio, (coarse_step + 1) * ratio)]
        W = W - eta * core.drift(W, X, Y, **cfg.hyper) + math.sqrt(2 * cfg.lam) * np.sum(fine, axis=0)
    np.testing.assert_allclose(paths[eta], W, rtol=0, atol=1e-12)
    # The increment backed out of one coarse step is exactly the sum (not, e.g., one rescaled fine draw).
    first = coupled_paths(cfg, n_particles=N, seed=seed, etas=[eta], reference_eta=eta_fine, n_fine_steps=ratio)
    W0 = initial_particles(seed, N, cfg.d, cfg.lam_w)
    increment = (first[eta] - W0 + eta * core.drift(W0, X, Y, **cfg.hyper)) / math.sqrt(2 * cfg.lam)
    fine_sum = sum(math.sqrt(eta_fine) * core.particle_noise(seed, j, N, cfg.d + 1) for j in range(ratio))
    np.testing.assert_allclose(increment, fine_sum, rtol=0, atol=1e-12)
    assert np.abs(increment - 2 * math.sqrt(eta_fine) * core.particle_noise(seed, 0, N, cfg.d + 1)).max() > 0.1


def test_reference_path_is_the_library_langevin_step():
    cfg = PRODUCT
    X, Y, _ = cfg.data()
    N, seed, eta_fine = 5, 9, 0.1
    paths = coupled_paths(cfg, n_particles=N, seed=seed, etas=[0.2, 0.3], reference_eta=eta_fine,
                          n_fine_steps=6)
    W = initial_particles(seed, N, cfg.d, cfg.lam_w)
    for step in range(6):
        W = core.langevin_step(W, X, Y, eta=eta_fine, seed=seed, step=step, **cfg.hyper)
    np.testing.assert_array_equal(paths["reference"], W)


def test_product_time_sweep_reports_weak_and_strong_errors():
    sweep = time_error(PRODUCT, etas=[0.25, 0.5, 1.0], seeds=2, n_particles=16, horizon=4.0)
    assert [row["eta"] for row in sweep.rows("G_weak")] == [0.25, 0.5, 1.0]
    assert set(sweep.slopes) == {"G_weak", "strong"}
    strong = [row["error"] for row in sweep.rows("strong")]
    assert all(e > 0 for e in strong) and strong[-1] > strong[0]
    assert sweep.reference["reference_eta"] == pytest.approx(0.25 / 8)
    assert sweep.reference["checkpoint_times"][-1] == pytest.approx(4.0)


# ---------------------------------------------------------------------------------------------- validation

@pytest.mark.parametrize("changes, name", [
    ({"task": "regression"}, "task"),
    ({"n": 0}, "n"),
    ({"d": 1}, "d"),
    ({"eta": 0.0}, "eta"),
    ({"eta": -0.1}, "eta"),
    ({"lam": 0}, "lam"),
    ({"n_steps": -1}, "n_steps"),
    ({"average_from": 1.0}, "average_from"),
    ({"record_every": 0}, "record_every"),
    ({"activation": "relu"}, "activation"),
    ({"seed": -1}, "seed"),
])
def test_config_rejects_bad_values(changes, name):
    with pytest.raises(ValueError, match=name):
        PRODUCT.replace(**changes)


@pytest.mark.parametrize("kwargs, name", [
    ({"Ns": []}, "Ns"),
    ({"Ns": [0, 4]}, "Ns"),
    ({"Ns": [4, 4]}, "Ns"),
    ({"seeds": []}, "seeds"),
    ({"seeds": 0}, "seeds"),
    ({"seeds": [1, 1]}, "seeds"),
    ({"reference": 4}, "reference"),
    ({"reference": "exact"}, "reference"),
    ({"n_jobs": 0}, "n_jobs"),
])
def test_particle_error_rejects_bad_arguments(kwargs, name):
    arguments = {"Ns": [2, 4], "seeds": 2}
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=name):
        particle_error(PRODUCT, **arguments)


@pytest.mark.parametrize("kwargs, name", [
    ({"etas": []}, "etas"),
    ({"etas": [0.5, -1.0]}, "etas"),
    ({"etas": [0.5, 0.0]}, "etas"),
    ({"seeds": []}, "seeds"),
    ({"n_particles": 0}, "n_particles"),
    ({"reference_eta": 0.3}, "eta"),          # 0.5 is not an integer multiple of 0.3
    ({"reference_eta": 0.5}, "reference_eta"),  # not smaller than min(etas)
    ({"horizon": 1.3}, "horizon"),
])
def test_time_error_rejects_bad_arguments(kwargs, name):
    arguments = {"etas": [0.5, 1.0], "seeds": 1, "n_particles": 4, "horizon": 2.0}
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=name):
        time_error(PRODUCT, **arguments)


def test_sweeps_reject_a_config_of_the_wrong_type():
    with pytest.raises(TypeError, match="config"):
        particle_error({"task": "product"}, Ns=[2, 4])


# ---------------------------------------------------------------------------------------------- sweeps

def _counting(monkeypatch, module, name):
    calls = []
    original = getattr(module, name)

    def counted(spec, n_threads=None):
        calls.append(spec)
        return original(spec, n_threads)

    monkeypatch.setattr(module, name, counted)
    return calls


def test_particle_sweep_resumes_from_its_cache(tmp_path, monkeypatch):
    calls = _counting(monkeypatch, particle_module, "particle_run")
    arguments = {"Ns": [4, 8], "seeds": 2, "reference": 32, "reference_seeds": 1, "out_dir": tmp_path}
    first = particle_error(PRODUCT, **arguments)
    assert len(calls) == 2 * 2 + 1  # every (N, seed) run and the reference run
    assert (tmp_path / CACHE_NAME).exists()
    second = particle_error(PRODUCT, **arguments)
    assert len(calls) == 5  # nothing rerun ...
    assert same(second, first)  # ... and the same answer
    # A larger grid runs only the new points; a line cut short by an interruption is redone.
    with open(tmp_path / CACHE_NAME, "a") as handle:
        handle.write('{"key": "truncated')
    particle_error(PRODUCT, **{**arguments, "Ns": [4, 8, 16]})
    assert len(calls) == 7
    assert [spec["n_particles"] for spec in calls[5:]] == [16, 16]


def test_time_sweep_resumes_from_its_cache(tmp_path, monkeypatch):
    calls = _counting(monkeypatch, timestep_module, "time_run")
    arguments = {"etas": [0.5, 1.0], "seeds": 2, "n_particles": 4, "horizon": 2.0, "out_dir": tmp_path}
    first = time_error(PRODUCT, **arguments)
    assert len(calls) == 2
    second = time_error(PRODUCT, **{**arguments, "seeds": 3})
    assert len(calls) == 3 and calls[-1]["replicate"] == 2
    assert second.runs[:4] == first.runs


def test_run_seeds_are_derived_from_base_seed_and_key():
    seeds = {derive_seed(0, 0, N, r) for N in (4, 8) for r in range(3)}
    assert len(seeds) == 6 and all(0 <= s < 2**64 for s in seeds)
    assert derive_seed(0, 0, 4, 1) == derive_seed(0, 0, 4, 1) != derive_seed(1, 0, 4, 1)
    sweep = particle_error(PRODUCT, Ns=[4, 8], seeds=[1, 2], reference=16, reference_seeds=1)
    assert [run["seed"] for run in sweep.runs] == [derive_seed(0, 0, N, r) for N in (4, 8) for r in (1, 2)]


def test_parallel_sweep_reproduces_the_serial_one():
    arguments = {"Ns": [4, 8], "seeds": 2, "reference": 16, "reference_seeds": 1}
    serial = particle_error(PRODUCT, n_jobs=1, **arguments)
    parallel = particle_error(PRODUCT, n_jobs=2, **arguments)
    assert same(parallel, serial)


def test_particle_sweep_on_the_product_task_has_all_metrics():
    sweep = particle_error(PRODUCT, Ns=[4, 8, 16], seeds=3, reference_factor=4, reference_seeds=1)
    assert set(sweep.slopes) == {"G_gap", "U_gap", "kernel_sq_sup", "predictor_sq_sup"}
    assert sweep.reference["n_particles"] == 64
    for metric in sweep.slopes:
        assert len(sweep.rows(metric)) == 3
    json.dumps(sweep.to_dict(), allow_nan=True)  # JSON-ready
    assert "slope kernel_sq_sup" in sweep.format_table()


# ---------------------------------------------------------------------------------------------- command line

def test_cli_runs_a_small_suite_and_writes_json_and_plots(tmp_path, capsys):
    parser = add_cli_arguments(argparse.ArgumentParser(prog="mfkern discretization"))
    args = parser.parse_args(["--quick", "--out", str(tmp_path), "--cases", "particle_erf,time_ou", "--seeds", "3",
                              "--n-jobs", "1", "--no-progress"])
    assert run_cli(args) == 0
    out = capsys.readouterr().out
    assert "slope kernel_sq_sup" in out and "slope variance_weak_exact" in out
    document = json.loads((tmp_path / "discretization.json").read_text())
    assert set(document["cases"]) == {"particle_erf", "time_ou"}
    fit = document["cases"]["time_ou"]["slopes"]["variance_weak_exact"]
    assert fit["theory"] == 1.0 and fit["exact_slope"] == pytest.approx(1.0, abs=0.1)
    for case in ("particle_erf", "time_ou"):
        assert (tmp_path / f"discretization_{case}.png").stat().st_size > 1000
    # Rerunning resumes: same numbers from the cache.
    assert run_cli(args) == 0
    again = json.loads((tmp_path / "discretization.json").read_text())
    assert again["cases"]["time_ou"]["slopes"] == document["cases"]["time_ou"]["slopes"]


@pytest.mark.parametrize("argv", [["--seeds", "0"], ["--n-jobs", "0"], ["--cases", "nope"], ["--seed", "-3"]])
def test_cli_rejects_bad_options(argv, capsys):
    parser = add_cli_arguments(argparse.ArgumentParser(prog="mfkern discretization"))
    with pytest.raises(SystemExit):
        parser.parse_args(argv)
    assert "expected" in capsys.readouterr().err
