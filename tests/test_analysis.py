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
    path_separation,
    seed_slope,
    stationarity,
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
    """Equal sweeps, NaN == NaN (through JSON text), apart from the CPU time the runs took and the name of
    the backend that ran them."""
    def text(sweep):
        document = sweep.to_dict()
        document["diagnostics"].pop("cpu_s_total", None)
        document["settings"].pop("backend", None)
        return json.dumps(document, sort_keys=True)

    return text(sweep_a) == text(sweep_b)


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
    final = np.asarray(result["report"]["kernel"][-1])
    assert result["report_steps"][-1] == ERF.n_steps
    np.testing.assert_allclose(final, exact, atol=5 / math.sqrt(20000))
    # ... and not to the prior's kernel: the test can tell the variance apart.
    prior = erf_kernel(probe, variance=1 / ERF.lam_w)
    assert np.abs(final - prior).max() > np.abs(final - exact).max()


def test_ou_time_error_recovers_the_exact_weak_rate():
    sweep = time_error(OU, etas=[0.05, 0.1, 0.2, 0.4], seeds=4, n_particles=300, horizon=12.0)
    for metric in ("G_weak", "variance_weak_exact"):
        fit = sweep.slopes[metric]
        assert fit["exact_slope"] == pytest.approx(1.0, abs=0.1)  # the theory's +1, up to O(eta^2) terms
        assert covers(fit["ci"], fit["exact_slope"]), (metric, fit)
        for row in sweep.rows(metric):
            assert row["error"] == pytest.approx(row["exact"], rel=0.1)
    # Euler-Maruyama with additive noise has strong order 1, and the OU drift contracts, so the strong error
    # stays first order at every time (no saturation).
    assert sweep.slopes["strong"]["slope"] == pytest.approx(1.0, abs=0.1)
    assert sweep.slopes["strong"]["theory"] is None
    for entry in sweep.by_time["strong_at_t"]:
        assert entry["slope"]["slope"] == pytest.approx(1.0, abs=0.15), entry["t"]


def test_particle_run_objective_matches_the_core_objective():
    # G and U recorded by a run are the core's reduced objective at the same particles.
    spec = {"config": PRODUCT.replace(n_steps=0).to_dict(), "n_particles": 9, "seed": 3}
    result = particle_module.particle_run(spec)
    X, Y, probe = PRODUCT.data()
    W = initial_particles(3, 9, PRODUCT.d, PRODUCT.lam_w)
    expected = core.objective(W, X, Y, lam=PRODUCT.lam, lam_a=PRODUCT.lam_a, lam_w=PRODUCT.lam_w)
    assert result["G"] == pytest.approx(expected["G"], rel=1e-10)
    assert result["U"] == pytest.approx(expected["U"], rel=1e-10)
    np.testing.assert_allclose(result["report"]["kernel"][-1], core.gram(W, probe), rtol=1e-12)
    # The predictor is kernel ridge regression with the particles' kernel (numpy reference).
    K = np.tanh(np.hstack([X, np.ones((X.shape[0], 1))]) @ W.T)
    H_probe = np.tanh(np.hstack([probe, np.ones((probe.shape[0], 1))]) @ W.T)
    A = np.linalg.solve(K @ K.T / 9 + X.shape[0] * PRODUCT.lam * PRODUCT.lam_a * np.eye(X.shape[0]), Y)
    np.testing.assert_allclose(result["report"]["predictor"][-1], H_probe @ K.T @ A / 9, rtol=1e-8, atol=1e-10)


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
    assert sweep.reference["report_times"][-1] == pytest.approx(4.0)
    assert sweep.reference["window_checkpoint_times"][-1] == pytest.approx(4.0)
    assert set(sweep.by_time) == {"G_weak_at_t", "strong_at_t", "median_distance_at_t", "far_fraction_at_t"}
    assert sweep.diagnostics["curvature_initial"] > 0


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
    arguments = {"Ns": [4, 8], "seeds": 2, "reference": 32, "reference_seeds": 1, "out_dir": tmp_path,
                 "backend": "engine"}
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
    arguments = {"etas": [0.5, 1.0], "seeds": 2, "n_particles": 4, "horizon": 2.0, "out_dir": tmp_path,
                 "backend": "engine"}
    first = time_error(PRODUCT, **arguments)
    assert len(calls) == 2
    second = time_error(PRODUCT, **{**arguments, "seeds": 3})
    assert len(calls) == 3 and calls[-1]["replicate"] == 2
    assert second.runs[:4] == first.runs


def _counting_batches(monkeypatch, module, name):
    batches = []
    original = getattr(module, name)

    def counted(specs, n_threads=1, **kwargs):
        batches.append([(spec.get("n_particles"), spec["replicate"]) for spec in specs])
        return original(specs, n_threads, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return batches


def test_ensemble_runs_the_uncached_runs_as_one_batch_and_shares_the_cache(tmp_path, monkeypatch):
    batches = _counting_batches(monkeypatch, particle_module, "particle_runs")
    arguments = {"Ns": [4, 8], "seeds": 2, "reference": 32, "reference_seeds": 1, "out_dir": tmp_path}
    first = particle_error(PRODUCT, **arguments)
    assert [sorted(batch) for batch in batches] == [[(4, 0), (4, 1), (8, 0), (8, 1), (32, 0)]]
    assert first.diagnostics["cpu_s_total"] > 0  # the batch's CPU time, counted once
    # The engine backend reads the ensemble's runs back from the same cache (the same keys) ...
    calls = _counting(monkeypatch, particle_module, "particle_run")
    assert same(particle_error(PRODUCT, **{**arguments, "backend": "engine"}), first) and not calls
    # ... and a larger grid batches only the new runs.
    particle_error(PRODUCT, **{**arguments, "Ns": [4, 8, 16]})
    assert [sorted(batch) for batch in batches[1:]] == [[(16, 0), (16, 1)]]

    time_batches = _counting_batches(monkeypatch, timestep_module, "time_runs")
    time_arguments = {"etas": [0.5, 1.0], "n_particles": 4, "horizon": 2.0, "out_dir": tmp_path}
    time_error(PRODUCT, seeds=2, **time_arguments)
    time_error(PRODUCT, seeds=3, **time_arguments)
    assert time_batches == [[(4, 0), (4, 1)], [(4, 2)]]


def test_ensemble_batches_are_bounded_and_each_is_cached_when_it_finishes(tmp_path, monkeypatch):
    import mfkern.analysis._ensemble as ensemble_module

    arguments = {"Ns": [4, 8], "seeds": 2, "reference": 32, "reference_seeds": 1}
    whole = particle_error(PRODUCT, out_dir=tmp_path / "whole", **arguments)
    monkeypatch.setattr(ensemble_module, "MAX_BATCH", 2)
    batches = _counting_batches(monkeypatch, particle_module, "particle_runs")
    split = particle_error(PRODUCT, out_dir=tmp_path / "split", **arguments)
    assert [len(batch) for batch in batches] == [2, 2, 1]
    assert same(split, whole)  # batching changes nothing but when the cache is written

    # A failure in the second batch keeps the first batch's runs: a rerun does only the rest.
    original = particle_module.particle_runs
    calls = []

    def failing_second(specs, n_threads=1, **kwargs):
        calls.append(len(specs))
        if len(calls) == 2:
            raise FloatingPointError("diverged")
        return original(specs, n_threads, **kwargs)

    monkeypatch.setattr(particle_module, "particle_runs", failing_second)
    with pytest.raises(FloatingPointError):
        particle_error(PRODUCT, out_dir=tmp_path / "failing", **arguments)
    monkeypatch.setattr(particle_module, "particle_runs", original)
    batches = _counting_batches(monkeypatch, particle_module, "particle_runs")
    resumed = particle_error(PRODUCT, out_dir=tmp_path / "failing", **arguments)
    assert sum(len(batch) for batch in batches) == 3 and same(resumed, whole)


def test_cpu_total_counts_each_runs_share_of_its_batch():
    from mfkern.analysis._ensemble import cpu_total

    batch = [dict(cpu_s=None, batch_cpu_s=6.0, batch_id="b", batch_size=3)] * 3
    assert cpu_total(batch) == pytest.approx(6.0)
    assert cpu_total(batch[:2] + [dict(cpu_s=1.5)]) == pytest.approx(5.5)  # two thirds of the batch, one own run
    assert cpu_total([dict(cpu_s=None)]) is None


def _ensemble_cases():
    """Tiny sweeps with systems on both sides of N = n (woodbury and dense solvers)."""
    return {
        "particle": lambda **kw: particle_error(PRODUCT, Ns=[4, 8, 32], seeds=2, reference=64, reference_seeds=1,
                                                **kw),
        "time": lambda **kw: time_error(PRODUCT, etas=[0.5, 1.0], seeds=3, n_particles=20, horizon=4.0,
                                        reference_ratio=4, **kw),
    }


@pytest.mark.parametrize("case", ["particle", "time"])
def test_ensemble_backend_is_bitwise_the_per_system_path(case):
    # The same sweep through one engine ensemble (1 or 2 threads), one engine per run (2 processes) and a
    # Python loop of core.langevin_step per run: every number the same, to the last bit.
    sweep = _ensemble_cases()[case]
    per_system = sweep(backend="engine", n_jobs=2)
    assert per_system.settings["backend"] == "engine"
    for n_jobs in (1, 2):
        ensemble = sweep(backend="ensemble", n_jobs=n_jobs)
        assert ensemble.settings["backend"] == "ensemble"
        assert same(ensemble, per_system)
    assert same(sweep(backend="core_loop", n_jobs=1), per_system)


def test_ensemble_runs_return_the_per_system_results_bitwise():
    # The run-level results (every recorded value), not only the sweep's summaries.
    from mfkern import runner

    base = PRODUCT.to_dict()
    specs = [{"config": base, "n_particles": N, "replicate": 0, "seed": runner.derive_seed(9, N)} for N in (40, 3, 16)]
    alone = [particle_module.particle_run(spec, 1) for spec in specs]
    together = particle_module.particle_runs(specs, 2)
    for one, batch in zip(alone, together):
        assert json.dumps({k: v for k, v in one.items() if k != "cpu_s"}, sort_keys=True) == json.dumps(
            batch, sort_keys=True)
    time_specs = [{"config": base, "n_particles": 6, "replicate": r, "seed": runner.derive_seed(9, 100 + r),
                   "etas": [0.5, 1.0], "reference_eta": 0.25, "n_fine": 16, "checkpoint_every": 4,
                   "report_steps": [4, 16]} for r in range(3)]
    alone = [timestep_module.time_run(spec, 1) for spec in time_specs]
    together = timestep_module.time_runs(time_specs, 2)
    for one, batch in zip(alone, together):
        assert json.dumps({k: v for k, v in one.items() if k != "cpu_s"}, sort_keys=True) == json.dumps(
            batch, sort_keys=True)


def test_path_separation_is_the_same_for_every_backend():
    curves = [path_separation(PRODUCT, n_particles=20, eta=0.5, horizon=5.0, seed=3, backend=backend)
              for backend in ("ensemble", "engine", "core_loop")]
    assert curves[0] == curves[1] == curves[2]
    assert curves[0]["growth"][0] > 0


@pytest.mark.parametrize("function", [particle_error, time_error])
def test_sweeps_reject_an_unknown_backend(function):
    with pytest.raises(ValueError, match="backend must be one of"):
        function(PRODUCT, backend="threads")


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
    assert set(sweep.slopes) == {"G_gap", "U_gap", "kernel_sq_sup", "predictor_sq_sup", "kernel_sq_sup_window",
                                 "predictor_sq_sup_window"}
    assert set(sweep.by_time) == {"G_gap_at_t", "kernel_sq_sup", "predictor_sq_sup"}
    assert sweep.reference["n_particles"] == 64
    for metric in sweep.slopes:
        assert len(sweep.rows(metric)) == 3
    json.dumps(sweep.to_dict(), allow_nan=True)  # JSON-ready
    assert "slope kernel_sq_sup" in sweep.format_table()


# ---------------------------------------------------------------------------------------------- command line

def test_cli_runs_a_small_suite_and_writes_json_and_plots(tmp_path, capsys):
    parser = add_cli_arguments(argparse.ArgumentParser(prog="mfkern discretization"))
    args = parser.parse_args(["--quick", "--out", str(tmp_path), "--cases", "particle_erf,time_ou", "--seeds", "3",
                              "--n-jobs", "1", "--no-progress"])  # --quick: the fast suite
    assert run_cli(args) == 0
    out = capsys.readouterr().out
    assert "slope kernel_sq_sup" in out and "slope variance_weak_exact" in out
    document = json.loads((tmp_path / "discretization_fast.json").read_text())
    assert document["suite"] == "fast"
    assert set(document["cases"]) == {"particle_erf", "time_ou"}
    fit = document["cases"]["time_ou"]["slopes"]["variance_weak_exact"]
    assert fit["theory"] == 1.0 and fit["exact_slope"] == pytest.approx(1.0, abs=0.1)
    for case in ("particle_erf", "time_ou"):
        assert (tmp_path / f"discretization_fast_{case}.png").stat().st_size > 1000
        assert (tmp_path / f"discretization_fast_{case}_time.png").stat().st_size > 1000
    # Rerunning resumes: same numbers from the cache.
    assert run_cli(args) == 0
    again = json.loads((tmp_path / "discretization_fast.json").read_text())
    assert again["cases"]["time_ou"]["slopes"] == document["cases"]["time_ou"]["slopes"]


@pytest.mark.parametrize("argv", [["--seeds", "0"], ["--n-jobs", "0"], ["--cases", "nope"], ["--seed", "-3"]])
def test_cli_rejects_bad_options(argv, capsys):
    parser = add_cli_arguments(argparse.ArgumentParser(prog="mfkern discretization"))
    with pytest.raises(SystemExit):
        parser.parse_args(argv)
    assert "expected" in capsys.readouterr().err


def test_cli_backend_option_is_recorded_and_checked(tmp_path, capsys):
    parser = add_cli_arguments(argparse.ArgumentParser(prog="mfkern discretization"))
    args = parser.parse_args(["--quick", "--out", str(tmp_path), "--cases", "particle_erf", "--seeds", "2",
                              "--n-jobs", "1", "--no-progress", "--no-plots", "--backend", "engine"])
    assert run_cli(args) == 0
    document = json.loads((tmp_path / "discretization_fast.json").read_text())
    assert document["backend"] == "engine" and document["cases"]["particle_erf"]["settings"]["backend"] == "engine"
    with pytest.raises(SystemExit):
        parser.parse_args(["--backend", "threads"])
    assert "--backend" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- stationarity

def test_stationarity_check_passes_stationary_runs_at_its_level():
    # AR(1) runs around a fixed mean (correlated snapshots, as in a Langevin window): the check must pass
    # about 95% x 95% of the time (two intervals), and fail a clear trend.
    rng = np.random.default_rng(2)
    passes, repeats = 0, 200
    for _ in range(repeats):
        noise = rng.standard_normal((8, 60))
        series = np.empty_like(noise)
        series[:, 0] = noise[:, 0]
        for k in range(1, 60):
            series[:, k] = 0.8 * series[:, k - 1] + 0.6 * noise[:, k]
        passes += stationarity(series + 5.0)["stationary"]
    assert 0.83 <= passes / repeats <= 0.99  # nominal about 0.90-0.95; sd over 200 repeats about 0.02
    drifting = 5.0 + 0.5 * rng.standard_normal((8, 60)) + np.linspace(0, 1, 60)
    check = stationarity(drifting, times=np.linspace(100, 200, 60))
    assert check["stationary"] is False
    assert check["half_difference"] == pytest.approx(0.5, abs=0.1)  # second-half minus first-half mean
    assert check["trend_change"] == pytest.approx(1.0, abs=0.15)     # slope x window length
    assert stationarity(drifting[:1])["stationary"] is None  # one run: no interval, no verdict
    with pytest.raises(ValueError, match="snapshots"):
        stationarity(drifting[:, :3])


def test_stationarity_check_matches_a_plain_numpy_computation():
    rng = np.random.default_rng(8)
    series = rng.standard_normal((5, 10)).cumsum(axis=1)
    check = stationarity(series)
    differences = series[:, 5:].mean(axis=1) - series[:, :5].mean(axis=1)
    expected = stats.t.interval(0.95, 4, loc=differences.mean(), scale=stats.sem(differences))
    assert check["half_difference"] == pytest.approx(differences.mean())
    np.testing.assert_allclose(check["ci"], expected)
    slopes = [np.polyfit(np.arange(10.0), row, 1)[0] * 9 for row in series]
    assert check["trend_change"] == pytest.approx(np.mean(slopes))


# Data-free OU chain far from its stationary law: eta lam_w_bar = 1.8 takes the variance from 1 (prior) to
# 2 / (2 - 1.8) = 10 at a rate 0.64 per step, so G and the erf kernel move throughout a window of steps 0..8.
TRANSIENT = DiscretizationConfig(task="ou", activation="erf", n=4, d=3, n_probe=8, lam=1.0, lam_a=1.0, lam_w=1.0,
                                 eta=1.8, n_steps=8, record_every=1, average_from=0.0)


def test_stationarity_check_flags_a_window_in_a_transient_and_passes_a_settled_one():
    moving = particle_error(TRANSIENT, Ns=[512, 1024], seeds=4)
    assert moving.stationarity["all_stationary"] is False
    for N in (512, 1024):
        check = moving.stationarity["by_N"][N]["G"]
        assert check["stationary"] is False and check["half_difference"] > 0  # the variance grows
    # The same chain 40 steps on, window in its second half: settled (contraction 0.64^20 ~ 1e-4).
    settled = particle_error(TRANSIENT.replace(n_steps=40, average_from=0.5), Ns=[512, 1024], seeds=4)
    assert settled.stationarity["all_stationary"] is True


# ---------------------------------------------------------------------------------------------- matched errors

def test_particle_errors_compare_last_step_with_last_step_and_window_with_window():
    cfg = TRANSIENT
    sweep = particle_error(cfg, Ns=[256, 1024, 4096], seeds=6)
    _, _, probe = cfg.data()
    variances = ou_variance_at_step(np.arange(cfg.n_steps + 1), cfg.eta, cfg.lam, cfg.lam_w)
    last_exact = erf_kernel(probe, variance=variances[-1])
    window_exact = np.mean([erf_kernel(probe, variance=v) for v in variances], axis=0)
    assert np.max((last_exact - window_exact) ** 2) > 1e-3  # the window is far from stationary here
    # Per-run values recomputed here from the run itself against the closed forms (independent route).
    mismatched = []
    for run in sweep.runs:
        if run["N"] != 4096:
            continue
        result = particle_module.particle_run({"config": cfg.to_dict(), "n_particles": 4096, "seed": run["seed"]})
        last, window = np.asarray(result["report"]["kernel"][-1]), np.asarray(result["kernel_mean"])
        assert run["kernel_sq_sup"] == pytest.approx(np.max((last - last_exact) ** 2), rel=1e-12)
        assert run["kernel_sq_sup_window"] == pytest.approx(np.max((window - window_exact) ** 2), rel=1e-12)
        mismatched.append(np.max((last - window_exact) ** 2))  # last step against a window average
    # Like with like: the O(1/N) rate; the mismatched comparison has a floor far above the matched error.
    for metric in ("kernel_sq_sup", "kernel_sq_sup_window"):
        assert covers(sweep.slopes[metric]["ci"], -1.0), (metric, sweep.slopes[metric])
    matched = sweep.rows("kernel_sq_sup")[-1]["error"]
    assert np.mean(mismatched) > 3 * matched


def test_particle_reference_is_compared_at_the_same_report_step(monkeypatch):
    # With reference runs, each report step's reference is the mean over reference replicates at that step.
    sweep = particle_error(PRODUCT, Ns=[4, 8], seeds=2, reference=32, reference_seeds=2)
    refs = [particle_module.particle_run({"config": PRODUCT.to_dict(), "n_particles": 32, "seed": seed}, 1)
            for seed in sweep.reference["seeds"]]
    run = sweep.runs[0]
    mine = particle_module.particle_run({"config": PRODUCT.to_dict(), "n_particles": run["N"], "seed": run["seed"]})
    for j, entry in enumerate(sweep.by_time["kernel_sq_sup"]):
        reference = np.mean([r["report"]["kernel"][j] for r in refs], axis=0)
        expected = np.max((np.asarray(mine["report"]["kernel"][j]) - reference) ** 2)
        row = next(r for r in entry["table"] if r["N"] == run["N"])
        # The table's error is the mean over the 2 seeds; check the seed we recomputed is part of it.
        other = particle_module.particle_run({"config": PRODUCT.to_dict(), "n_particles": run["N"],
                                              "seed": sweep.runs[1]["seed"]})
        expected_other = np.max((np.asarray(other["report"]["kernel"][j]) - reference) ** 2)
        assert row["error"] == pytest.approx((expected + expected_other) / 2, rel=1e-10)
    assert sweep.by_time["kernel_sq_sup"][-1]["step"] == PRODUCT.n_steps


# ---------------------------------------------------------------------------------------------- strong error

def test_strong_error_is_first_order_at_a_short_horizon():
    # Euler-Maruyama with additive noise and a smooth drift has strong order 1 at a fixed horizon: on the
    # product task (no contraction) that is what the coupled paths show at t = 1. (Over long horizons the
    # rate is lost; the suite reports it with no theory slope.)
    cfg = DiscretizationConfig(task="product", n=32, d=15, n_probe=4, lam=0.02, lam_a=1.0, lam_w=1.0, n_times=3)
    short = time_error(cfg, etas=[0.0625, 0.125, 0.25], seeds=3, n_particles=32, reference_ratio=4, horizon=1.0)
    entry = short.by_time["strong_at_t"][-1]
    assert entry["t"] == pytest.approx(1.0) and entry["slope"]["theory"] is None
    assert covers(entry["slope"]["ci"], 1.0) and entry["slope"]["slope"] == pytest.approx(1.0, abs=0.15), entry


def test_distance_records_match_the_coupled_paths():
    # strong_at_t, median_distance_at_t and far_fraction_at_t at the last time, recomputed from the paths.
    sweep = time_error(PRODUCT, etas=[0.5, 1.0], seeds=1, n_particles=16, horizon=4.0, reference_ratio=4)
    paths = coupled_paths(PRODUCT, n_particles=16, seed=sweep.runs[0]["seed"], etas=[0.5, 1.0],
                          reference_eta=0.125, n_fine_steps=32)
    reference = paths["reference"]
    far = 0.25 * np.sqrt(np.mean(np.sum(reference ** 2, axis=1)))
    for eta in (0.5, 1.0):
        distance = np.linalg.norm(paths[eta] - reference, axis=1)
        values = {metric: next(r["error"] for r in sweep.by_time[metric][-1]["table"] if r["eta"] == eta)
                  for metric in ("strong_at_t", "median_distance_at_t", "far_fraction_at_t")}
        assert values["strong_at_t"] == pytest.approx(np.sqrt(np.mean(distance ** 2)), rel=1e-10)
        assert values["median_distance_at_t"] == pytest.approx(np.median(distance), rel=1e-10)
        assert values["far_fraction_at_t"] == pytest.approx(np.mean(distance > far), abs=1e-12)
    assert sweep.by_time["strong_at_t"][-1]["t"] == pytest.approx(4.0)


def test_path_separation_is_the_exact_contraction_in_the_ou_case():
    ou = path_separation(OU, n_particles=32, eta=0.1, horizon=20.0, seed=1)
    contraction = (1 - 0.1 * OU.lam_w_bar) ** np.asarray(ou["steps"], dtype=float)
    np.testing.assert_allclose(ou["growth"], contraction, rtol=1e-6)
    assert ou["t"][-1] == pytest.approx(20.0)


# ---------------------------------------------------------------------------------------------- system layer

def test_advance_equals_single_library_steps_whatever_the_grouping():
    from mfkern.analysis import advance, make_system

    X, Y, _ = PRODUCT.data()
    W0 = initial_particles(5, 6, PRODUCT.d, PRODUCT.lam_w)
    grouped = make_system(PRODUCT, X, Y, W0, eta=0.5, seed=5)
    for k in (0, 3, 1, 4):
        advance(grouped, k)
    W = W0
    for step in range(8):
        W = core.langevin_step(W, X, Y, eta=0.5, seed=5, step=step, **PRODUCT.hyper)
    assert grouped.step == 8
    np.testing.assert_array_equal(grouped.particles, W)
    with pytest.raises(ValueError, match="k"):
        advance(grouped, -1)


@pytest.mark.parametrize("backend", ["ensemble", "engine"])
def test_sweeps_step_only_through_advance(monkeypatch, backend):
    # Every Langevin step of a sweep happens in a system's run(k) called by advance, or in an ensemble
    # called by advance_ensemble (no other stepping path: core.langevin_step is never called).
    import mfkern.analysis._system as system_module
    from mfkern.engine import Engine

    inside, counts = [False], {"steps_in_advance": 0, "runs_outside": 0, "core_steps": 0}
    original_advance, original_run, original_step = system_module.advance, Engine.run, core.langevin_step
    original_ensemble, original_advance_ensemble = system_module.run_ensemble, system_module.advance_ensemble

    def advance(system, k):
        inside[0] = True
        try:
            return original_advance(system, k)
        finally:
            inside[0] = False

    def advance_ensemble(systems, k, **kwargs):
        inside[0] = True
        try:
            return original_advance_ensemble(systems, k, **kwargs)
        finally:
            inside[0] = False

    def run(self, k, stop=None):
        result = original_run(self, k, stop)
        if inside[0]:
            counts["steps_in_advance"] += result.steps
        else:
            counts["runs_outside"] += 1
        return result

    def run_ensemble(engines, k, **kwargs):
        results = original_ensemble(engines, k, **kwargs)
        if inside[0]:
            counts["steps_in_advance"] += sum(result.steps for result in results)
        else:
            counts["runs_outside"] += 1
        return results

    def step(*args, **kwargs):
        counts["core_steps"] += 1
        return original_step(*args, **kwargs)

    import mfkern.analysis._ensemble as ensemble_module
    import mfkern.analysis.particle as particle_module
    import mfkern.analysis.timestep as timestep_module

    for module in (system_module, particle_module, timestep_module, ensemble_module):
        for name, function in (("advance", advance), ("advance_ensemble", advance_ensemble)):
            if hasattr(module, name):  # wherever a sweep takes them from
                monkeypatch.setattr(module, name, function)
    monkeypatch.setattr(system_module, "run_ensemble", run_ensemble)
    monkeypatch.setattr(Engine, "run", run)
    monkeypatch.setattr(core, "langevin_step", step)
    particle_error(PRODUCT, Ns=[4], seeds=1, reference=8, reference_seeds=1, backend=backend)
    assert counts == {"steps_in_advance": 2 * PRODUCT.n_steps, "runs_outside": 0, "core_steps": 0}
    time_error(PRODUCT, etas=[0.5, 1.0], seeds=1, n_particles=4, horizon=2.0, reference_ratio=4, backend=backend)
    # the reference path: 2 / 0.125 steps
    assert counts == {"steps_in_advance": 2 * PRODUCT.n_steps + 16, "runs_outside": 0, "core_steps": 0}


def test_a_diverging_system_raises_and_stays_at_its_last_good_step():
    from mfkern.analysis import advance, make_system

    X, Y, _ = PRODUCT.data()
    system = make_system(PRODUCT, X, Y, initial_particles(5, 6, PRODUCT.d, PRODUCT.lam_w), eta=1e150, seed=5)
    with pytest.raises(FloatingPointError, match="diverged at step"):
        advance(system, 50)
    assert np.isfinite(system.particles).all() and system.step < 50


def test_a_diverging_system_stops_alone_in_an_ensemble():
    from mfkern.analysis import advance_ensemble, make_system

    X, Y, _ = PRODUCT.data()
    good = make_system(PRODUCT, X, Y, initial_particles(5, 6, PRODUCT.d, PRODUCT.lam_w), eta=0.5, seed=5)
    bad = make_system(PRODUCT, X, Y, initial_particles(5, 6, PRODUCT.d, PRODUCT.lam_w), eta=1e150, seed=5)
    with pytest.raises(FloatingPointError, match=r"systems\[1\].*diverged at step"):
        advance_ensemble([good, bad], 50)
    assert good.step == 50 and bad.step < 50 and np.isfinite(bad.particles).all()


def test_core_loop_system_is_the_engine_bitwise():
    from mfkern.analysis import advance, make_system

    X, Y, _ = PRODUCT.data()
    for N in (6, 40):  # woodbury (N < n) and dense
        W0 = initial_particles(5, N, PRODUCT.d, PRODUCT.lam_w)
        engine = advance(make_system(PRODUCT, X, Y, W0, eta=0.5, seed=5), 7)
        loop = make_system(PRODUCT, X, Y, W0, eta=0.5, seed=5, kind="core_loop")
        advance(advance(loop, 3), 4)
        assert loop.step == engine.step == 7
        np.testing.assert_array_equal(loop.particles, engine.particles)
    diverging = make_system(PRODUCT, X, Y, W0, eta=1e150, seed=5, kind="core_loop")
    with pytest.raises(FloatingPointError, match="diverged at step"):
        advance(diverging, 50)
    assert diverging.step < 50 and np.isfinite(diverging.particles).all()
    with pytest.raises(ValueError, match="kind must be one of"):
        make_system(PRODUCT, X, Y, W0, eta=0.5, seed=5, kind="numpy")


def test_derive_seed_is_the_runner_one():
    from mfkern import runner

    assert derive_seed is runner.derive_seed
    lo, hi = np.random.SeedSequence(3, spawn_key=(0, 16, 2)).generate_state(2, dtype=np.uint32)
    assert derive_seed(3, 0, 16, 2) == int(lo) | (int(hi) << 32)


def test_benchmark_api_returns_errors_slopes_and_figures(tmp_path):
    from mfkern.analysis import discretization_benchmark

    result = discretization_benchmark(PRODUCT, Ns=[4, 8], etas=[0.5, 1.0], seeds=2, horizon=4.0,
                                      figure_dir=tmp_path)
    assert set(result.slopes()) == {"particle", "time"}
    slope, ci, theory = result.slopes()["particle"]["kernel_sq_sup"]
    assert theory == -1.0 and math.isfinite(slope)
    assert result.slopes()["time"]["strong"][2] is None
    assert len(result.figures) == 4 and all((tmp_path / p.split("/")[-1]).stat().st_size > 1000
                                            for p in result.figures)
    json.dumps(result.to_dict(), allow_nan=True)
    with pytest.raises(ValueError, match="Ns"):
        discretization_benchmark(PRODUCT)


def test_timing_script_compares_results_but_not_timings(tmp_path):
    # bench/discretization_timing.py checks its full run against the committed results: a changed number
    # must show, a different timing or backend must not.
    import pathlib
    import sys

    root = pathlib.Path(__file__).resolve().parents[1]
    if str(root) not in sys.path:  # bench/ is a folder of the repository, not part of the package
        sys.path.insert(0, str(root))
    from bench import discretization_timing as timing

    committed = {"cases": {"a": {"table": [{"error": 0.5}], "elapsed_s": 3.0, "settings": {"backend": "engine"},
                                 "diagnostics": {"cpu_s_total": 9.0, "L": 2.0}},
                           "b": {"curves": {"ou": {"growth": [1.0, 0.5]}}, "elapsed_s": 1.0}}}
    path = tmp_path / "committed.json"
    path.write_text(json.dumps(committed))
    rerun = json.loads(json.dumps(committed))
    rerun["cases"]["a"].update(elapsed_s=1.0, settings={"backend": "ensemble"},
                               diagnostics={"cpu_s_total": 4.0, "L": 2.0})
    assert timing._compare_with_committed(rerun, path) == {"a": True, "b": True}
    rerun["cases"]["b"]["curves"]["ou"]["growth"][1] = 0.5000000001
    assert timing._compare_with_committed(rerun, path) == {"a": True, "b": False}
    subset = timing._subset_cases("paper", 2)
    assert subset["particle_product"][2]["seeds"] == 2 and subset["particle_product"][2]["reference_seeds"] == 1
    assert subset["time_product"][2]["seeds"] == 2 and "seeds" not in subset["separation"][2]
