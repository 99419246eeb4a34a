// The only file that knows Python: array plumbing, GIL release and exception translation for mfkern._core.
// Arguments are validated (and converted to C-contiguous float64) by python/mfkern/core.py; the array
// arguments here refuse anything else (noconvert) so that nothing is copied silently per call.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "mfkern/mfkern.hpp"

namespace py = pybind11;
using namespace mfkern;

namespace {

using Array = py::array_t<double, py::array::c_style>;

py::array_t<double> empty(long rows, long cols) { return py::array_t<double>({rows, cols}); }

Particles particles(const Array& w) { return {w.data(), static_cast<long>(w.shape(0)), static_cast<long>(w.shape(1))}; }

Inputs inputs(const Array& x) { return Inputs(x.data(), static_cast<long>(x.shape(0)), static_cast<long>(x.shape(1))); }

Targets targets(const Array& y) { return {y.data(), static_cast<long>(y.shape(0)), static_cast<long>(y.shape(1))}; }

Options options(long block_size, std::size_t cache_bytes, int n_threads, const std::string& solver = "dense",
                const std::string& precision = "float64") {
    Options o;
    if (precision == "float32") o.single_precision = true;
    else if (precision != "float64")
        throw std::invalid_argument("precision must be 'float64' or 'float32', got '" + precision + "'");
    if (solver == "dense") o.solver = Solver::Dense;
    else if (solver == "woodbury") o.solver = Solver::Woodbury;
    else throw std::invalid_argument("solver must be 'dense' or 'woodbury', got '" + solver + "'");
    o.block_size = block_size;
    o.cache_bytes = cache_bytes;
    o.n_threads = n_threads;
    return o;
}

// Run body() in the core: with the GIL released (a run() in another thread holds the core's lock and takes
// the GIL between steps, so waiting for the lock with the GIL would deadlock), under the core's lock with
// BLAS pinned to one thread (blas::Session).
template <class Body>
auto in_core(Body&& body) {
    py::gil_scoped_release release;
    const blas::Session session;
    return body();
}

// rows_dot(a, x) = (a @ x.T).T and rows_axpy(a, g) = (a.T @ g.T).T for a (rows, cols), x (m, cols), g (m, rows):
// each vector of x or g is a contiguous row, and so is each output vector. Both float64 or both float32,
// C-contiguous (nothing is converted).
template <class T>
py::array skinny_product(const py::array& a_in, const py::array& v_in, int n_threads, bool transposed) {
    using Matrix = py::array_t<T, py::array::c_style>;
    if (!py::isinstance<Matrix>(a_in) || !py::isinstance<Matrix>(v_in))
        throw std::invalid_argument("a and its vectors must both be C-contiguous float64 or both float32");
    const Matrix a = py::reinterpret_borrow<Matrix>(a_in), v = py::reinterpret_borrow<Matrix>(v_in);
    if (a.ndim() != 2 || v.ndim() != 2 || v.shape(1) != (transposed ? a.shape(0) : a.shape(1)))
        throw std::invalid_argument(transposed ? "rows_axpy: a must be (rows, cols) and g (m, rows)"
                                               : "rows_dot: a must be (rows, cols) and x (m, cols)");
    const long rows = a.shape(0), cols = a.shape(1), k = v.shape(0);
    py::array_t<T> out({k, transposed ? cols : rows});
    T* o = out.mutable_data();
    {
        py::gil_scoped_release release;  // reacquired before the result is built (its reference count)
        if (transposed) multi_axpy(a.data(), rows, cols, cols, v.data(), rows, k, o, cols, false, n_threads);
        else multi_dot(a.data(), rows, cols, cols, v.data(), cols, k, o, rows, n_threads);
    }
    return std::move(out);
}

py::array skinny(const py::array& a, const py::array& v, int n_threads, bool transposed) {
    if (py::isinstance<py::array_t<float>>(a)) return skinny_product<float>(a, v, n_threads, transposed);
    return skinny_product<double>(a, v, n_threads, transposed);
}

// Take BLAS/LAPACK from scipy when it is importable: tuned and CPU-dispatched, with no link-time BLAS.
bool register_scipy_blas() {
    try {
        py::dict blas = py::module_::import("scipy.linalg.cython_blas").attr("__pyx_capi__");
        py::dict lapack = py::module_::import("scipy.linalg.cython_lapack").attr("__pyx_capi__");
        auto get = [](py::dict& d, const char* name) {
            py::capsule c = d[name];
            return c.get_pointer<void>();
        };
        blas::Routines r;
        r.dgemm = reinterpret_cast<blas::dgemm_t*>(get(blas, "dgemm"));
        r.dsyrk = reinterpret_cast<blas::dsyrk_t*>(get(blas, "dsyrk"));
        r.dpotrf = reinterpret_cast<blas::dpotrf_t*>(get(lapack, "dpotrf"));
        r.dpotrs = reinterpret_cast<blas::dpotrs_t*>(get(lapack, "dpotrs"));
        r.dpotri = reinterpret_cast<blas::dpotri_t*>(get(lapack, "dpotri"));
        r.dtrsm = reinterpret_cast<blas::dtrsm_t*>(get(blas, "dtrsm"));
        r.sgemm = reinterpret_cast<blas::sgemm_t*>(get(blas, "sgemm"));
        r.ssyrk = reinterpret_cast<blas::ssyrk_t*>(get(blas, "ssyrk"));
        r.dgemv = reinterpret_cast<blas::dgemv_t*>(get(blas, "dgemv"));
        r.sgemv = reinterpret_cast<blas::sgemv_t*>(get(blas, "sgemv"));
        blas::set_routines(r);
        return true;
    } catch (py::error_already_set&) {
        return false;
    }
}

}  // namespace

PYBIND11_MODULE(_core, m) {
    m.doc() = "mfkern's compiled core (private: use mfkern.core).";
    static py::exception<NotPositiveDefinite> not_pd(m, "NotPositiveDefiniteError",
                                                     py::module_::import("numpy.linalg").attr("LinAlgError").ptr());
    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const NotPositiveDefinite& e) {
            py::set_error(not_pd, e.what());
        }
    });
    m.attr("scipy_blas") = register_scipy_blas();
    m.attr("activation_isa") = activation_isa();
    m.attr("blas_thread_control") = blas::has_thread_control();

    m.def("use_eigen_fallback", [](bool on) {
        if (on) blas::set_routines(blas::Routines{});
        else register_scipy_blas();
        return !blas::using_external();
    }, "Switch between scipy's BLAS/LAPACK and the Eigen fallback (for tests and benchmarks).");

    // Skinny products for the iterative second-layer solvers (mfkern.losses): both dtypes, no copies.
    // They touch no BLAS and no shared state, so they run with the GIL released but outside the core's lock.
    m.def("rows_dot", [](const py::array& a, const py::array& x, int n_threads) { return skinny(a, x, n_threads, false); },
          py::arg("a"), py::arg("x"), py::arg("n_threads"), "(a @ x.T).T for a (rows, cols) and x (m, cols).");
    m.def("rows_axpy", [](const py::array& a, const py::array& g, int n_threads) { return skinny(a, g, n_threads, true); },
          py::arg("a"), py::arg("g"), py::arg("n_threads"), "(a.T @ g.T).T for a (rows, cols) and g (m, rows).");

    m.def("features", [](const Array& w, const Array& x, const std::string& act, int n_threads) {
        const Activation a = parse_activation(act);
        auto out = empty(x.shape(0), w.shape(0));
        double* o = out.mutable_data();
        in_core([&] {
            features(particles(w), inputs(x), a, o, n_threads);
        });
        return out;
    }, py::arg("w").noconvert(), py::arg("x").noconvert(), py::arg("activation"), py::arg("n_threads"));

    m.def("gram", [](const Array& w, const Array& x, std::optional<Array> x2, const std::string& act,
                     long block_size, int n_threads) {
        const Activation a = parse_activation(act);
        const long n1 = x.shape(0), n2 = x2 ? x2->shape(0) : n1;
        auto out = empty(n1, n2);
        double* o = out.mutable_data();
        in_core([&] {
            const Particles p = particles(w);
            const Inputs xa = inputs(x);
            if (x2) {
                gram_cross(p, xa, inputs(*x2), a, block_size, o, n_threads);
            } else {
                gram_symmetric<double>(p, xa, a, block_size, nullptr, o, n_threads);
            }
        });
        return out;
    }, py::arg("w").noconvert(), py::arg("x").noconvert(), py::arg("x2").noconvert().none(true),
       py::arg("activation"), py::arg("block_size"), py::arg("n_threads"));

    m.def("second_layer", [](const Array& k, const Array& y, double ridge, int n_threads) {
        const long n = k.shape(0), t = y.shape(1);
        auto out = empty(n, t);
        double* o = out.mutable_data();
        in_core([&] {
            const RidgeFactor factor(k.data(), n, ridge, n_threads);
            std::vector<double> cols(static_cast<std::size_t>(n * t));
            for (long j = 0; j < n; ++j)
                for (long i = 0; i < t; ++i) cols[i * n + j] = y.data()[j * t + i];
            factor.solve_in_place(cols.data(), t);
            for (long j = 0; j < n; ++j)
                for (long i = 0; i < t; ++i) o[j * t + i] = cols[i * n + j];
        });
        return out;
    }, py::arg("k").noconvert(), py::arg("y").noconvert(), py::arg("ridge"), py::arg("n_threads"));

    m.def("ridge_inverse_stats", [](const Array& k, double ridge, int n_threads) {
        const RidgeFactor::InverseStats s = in_core([&] { return RidgeFactor(k.data(), k.shape(0), ridge, n_threads).inverse_stats(); });
        return py::make_tuple(s.trace, s.condition);
    }, py::arg("k").noconvert(), py::arg("ridge"), py::arg("n_threads"),
       "(trace of (K + ridge I)^{-1}, 1-norm condition number of K + ridge I)");

    m.def("objective", [](const Array& w, const Array& x, const Array& y, double lam, double lam_a, double lam_w,
                          const std::string& act, long block_size, int n_threads, const std::string& solver,
                          const std::string& precision) {
        const Activation a = parse_activation(act);
        const Options opt = options(block_size, 0, n_threads, solver, precision);
        auto dual = empty(y.shape(0), y.shape(1));
        double* du = dual.mutable_data();
        const Diagnostics d = in_core([&] {
            return objective(particles(w), inputs(x), targets(y), Hyper{lam, lam_a, lam_w}, a, opt, du);
        });
        py::dict r;
        r["dual"] = dual;
        r["U"] = d.U;
        r["G"] = d.G;
        r["dof"] = d.dof;
        r["condition"] = d.condition;
        r["mean_sq_norm"] = d.mean_sq_norm;
        return r;
    }, py::arg("w").noconvert(), py::arg("x").noconvert(), py::arg("y").noconvert(), py::arg("lam"),
       py::arg("lam_a"), py::arg("lam_w"), py::arg("activation"), py::arg("block_size"), py::arg("n_threads"),
       py::arg("solver"), py::arg("precision"));

    m.def("drift", [](const Array& w, const Array& x, const Array& y, double lam, double lam_a, double lam_w,
                      const std::string& act, std::optional<Array> e, long block_size, std::size_t cache_bytes,
                      int n_threads, const std::string& solver, const std::string& precision) {
        const Activation a = parse_activation(act);
        const Options opt = options(block_size, cache_bytes, n_threads, solver, precision);
        auto grad = empty(w.shape(0), w.shape(1));
        auto dual = empty(y.shape(0), y.shape(1));
        double *g = grad.mutable_data(), *du = dual.mutable_data();
        const DriftResult r = in_core([&] {
            return drift(particles(w), inputs(x), targets(y), Hyper{lam, lam_a, lam_w}, a, e ? e->data() : nullptr,
                         g, du, opt);
        });
        return py::make_tuple(grad, dual, r.U);
    }, py::arg("w").noconvert(), py::arg("x").noconvert(), py::arg("y").noconvert(), py::arg("lam"),
       py::arg("lam_a"), py::arg("lam_w"), py::arg("activation"), py::arg("label_noise").noconvert().none(true),
       py::arg("block_size"), py::arg("cache_bytes"), py::arg("n_threads"), py::arg("solver"),
       py::arg("precision"));

    m.def("langevin_step", [](const Array& w, const Array& x, const Array& y, double eta, double lam, double lam_a,
                              double lam_w, std::uint64_t seed, std::uint32_t step, const std::string& act,
                              double level, long first_index, long block_size, std::size_t cache_bytes,
                              int n_threads, const std::string& solver, const std::string& precision) {
        const Activation a = parse_activation(act);
        const Options opt = options(block_size, cache_bytes, n_threads, solver, precision);
        auto w_out = empty(w.shape(0), w.shape(1));
        auto dual = empty(y.shape(0), y.shape(1));
        double *wo = w_out.mutable_data(), *du = dual.mutable_data();
        const DriftResult r = in_core([&] {
            return langevin_step(particles(w), inputs(x), targets(y), Hyper{lam, lam_a, lam_w}, a, eta, seed, step,
                                 level, first_index, wo, du, opt);
        });
        return py::make_tuple(w_out, dual, r.U);
    }, py::arg("w").noconvert(), py::arg("x").noconvert(), py::arg("y").noconvert(), py::arg("eta"), py::arg("lam"),
       py::arg("lam_a"), py::arg("lam_w"), py::arg("seed"), py::arg("step"), py::arg("activation"),
       py::arg("label_noise_level"), py::arg("first_index"), py::arg("block_size"), py::arg("cache_bytes"),
       py::arg("n_threads"), py::arg("solver"), py::arg("precision"));

    m.def("drift_given_dual", [](const Array& w, const Array& x, const Array& a, std::optional<Array> b, double lam,
                                 double lam_a, double lam_w, const std::string& act, int n_threads,
                                 const std::string& precision) {
        const Activation ac = parse_activation(act);
        auto grad = empty(w.shape(0), w.shape(1));
        double* g = grad.mutable_data();
        in_core([&] {
            drift_given_dual(particles(w), inputs(x), ac, a.data(), b ? b->data() : nullptr, a.shape(1),
                             Hyper{lam, lam_a, lam_w}, g, options(0, 0, n_threads, "dense", precision));
        });
        return grad;
    }, py::arg("w").noconvert(), py::arg("x").noconvert(), py::arg("a").noconvert(), py::arg("b").noconvert().none(true),
       py::arg("lam"), py::arg("lam_a"), py::arg("lam_w"), py::arg("activation"), py::arg("n_threads"),
       py::arg("precision"));

    m.def("langevin_step_given_dual", [](const Array& w, const Array& x, const Array& a, std::optional<Array> b,
                                         double eta, double lam, double lam_a, double lam_w, std::uint64_t seed,
                                         std::uint32_t step, long first_index, const std::string& act,
                                         int n_threads, const std::string& precision) {
        const Activation ac = parse_activation(act);
        auto w_out = empty(w.shape(0), w.shape(1));
        double* wo = w_out.mutable_data();
        in_core([&] {
            langevin_step_given_dual(particles(w), inputs(x), ac, a.data(), b ? b->data() : nullptr, a.shape(1),
                                     Hyper{lam, lam_a, lam_w}, eta, seed, step, first_index, wo,
                                     options(0, 0, n_threads, "dense", precision));
        });
        return w_out;
    }, py::arg("w").noconvert(), py::arg("x").noconvert(), py::arg("a").noconvert(), py::arg("b").noconvert().none(true),
       py::arg("eta"), py::arg("lam"), py::arg("lam_a"), py::arg("lam_w"), py::arg("seed"), py::arg("step"),
       py::arg("first_index"), py::arg("activation"), py::arg("n_threads"), py::arg("precision"));

    m.def("output_weights", [](const Array& w, const Array& x, const Array& dual, const std::string& act,
                               int n_threads) {
        const Activation a = parse_activation(act);
        const long t = dual.shape(1);
        auto out = empty(w.shape(0), t);
        double* o = out.mutable_data();
        in_core([&] {
            const Inputs xi = inputs(x);
            std::vector<double> cols(static_cast<std::size_t>(xi.n * t));
            for (long j = 0; j < xi.n; ++j)
                for (long i = 0; i < t; ++i) cols[i * xi.n + j] = dual.data()[j * t + i];
            output_weights(particles(w), xi, a, cols.data(), t, o, n_threads);
        });
        return out;
    }, py::arg("w").noconvert(), py::arg("x").noconvert(), py::arg("dual").noconvert(), py::arg("activation"),
       py::arg("n_threads"));

    m.def("network_output", [](const Array& w, const Array& weights, const Array& x, const std::string& act,
                               long block_size, int n_threads) {
        const Activation a = parse_activation(act);
        auto out = empty(x.shape(0), weights.shape(1));
        double* o = out.mutable_data();
        in_core([&] {
            network_output(particles(w), weights.data(), weights.shape(1), x.data(), x.shape(0), x.shape(1), a,
                           block_size, o, n_threads);
        });
        return out;
    }, py::arg("w").noconvert(), py::arg("weights").noconvert(), py::arg("x").noconvert(), py::arg("activation"),
       py::arg("block_size"), py::arg("n_threads"));

    m.def("particle_noise", [](std::uint64_t seed, std::uint32_t step, long first_index, long count, long dim,
                               int n_threads) {
        auto out = empty(count, dim);
        double* o = out.mutable_data();
        {
            py::gil_scoped_release release;
            particle_noise(seed, step, first_index, count, dim, o, n_threads);
        }
        return out;
    }, py::arg("seed"), py::arg("step"), py::arg("first_index"), py::arg("count"), py::arg("dim"),
       py::arg("n_threads"));

    m.def("label_noise", [](std::uint64_t seed, std::uint32_t step, long n, long tasks, double level) {
        auto out = empty(n, tasks);
        double* o = out.mutable_data();
        {
            py::gil_scoped_release release;
            label_noise(seed, step, n, tasks, level, o);
        }
        return out;
    }, py::arg("seed"), py::arg("step"), py::arg("n"), py::arg("tasks"), py::arg("level"));

    // The stateful engine: data, particles and second-layer state held in C++; GIL released while it works.
    py::class_<Engine>(m, "Engine", "Stateful MFLD trainer (private: use mfkern.engine.Engine).")
        .def(py::init([](const Array& x, const Array& y, const Array& w, double lam, double lam_a, double lam_w,
                         const std::string& act, double eta, std::uint64_t seed, std::uint32_t step, double level,
                         const std::string& second_layer, const std::string& precision, int n_threads,
                         long block_size, double tol, long max_iterations, long first_index) {
                 EngineOptions o;
                 if (second_layer == "dense") o.second_layer = SecondLayer::Dense;
                 else if (second_layer == "woodbury") o.second_layer = SecondLayer::Woodbury;
                 else if (second_layer == "cg") o.second_layer = SecondLayer::Pcg;
                 else throw std::invalid_argument("second_layer must be 'dense', 'woodbury' or 'cg', got '" +
                                                  second_layer + "'");
                 if (precision == "float32") o.single_precision = true;
                 else if (precision != "float64")
                     throw std::invalid_argument("precision must be 'float64' or 'float32', got '" + precision + "'");
                 o.n_threads = n_threads;
                 o.block_size = block_size;
                 o.tol = tol;
                 o.max_iterations = max_iterations;
                 o.first_index = first_index;
                 const Activation a = parse_activation(act);
                 py::gil_scoped_release release;
                 return std::make_unique<Engine>(x.data(), x.shape(0), x.shape(1), y.data(), y.shape(1), w.data(),
                                                 w.shape(0), Hyper{lam, lam_a, lam_w}, a, eta, seed, step, level, o);
             }),
             py::arg("x").noconvert(), py::arg("y").noconvert(), py::arg("w").noconvert(), py::arg("lam"),
             py::arg("lam_a"), py::arg("lam_w"), py::arg("activation"), py::arg("eta"), py::arg("seed"),
             py::arg("step"), py::arg("label_noise_level"), py::arg("second_layer"), py::arg("precision"),
             py::arg("n_threads"), py::arg("block_size"), py::arg("tol"), py::arg("max_iterations"),
             py::arg("first_index"))
        .def("run", [](Engine& e, long k, const py::object& stop) {
            RunResult r;
            bool signalled = false;
            in_core([&] {
                // Before each step: pending signals (Ctrl-C) and the caller's stop flag, with the GIL.
                const std::function<bool()> stop_requested = [&]() {
                    py::gil_scoped_acquire acquire;
                    if (PyErr_CheckSignals() != 0) {
                        signalled = true;
                        return true;
                    }
                    return !stop.is_none() && stop().cast<bool>();
                };
                r = e.run(k, stop_requested);
            });
            if (signalled) throw py::error_already_set();  // e.g. KeyboardInterrupt, at a step boundary
            static const char* names[] = {"completed", "stopped", "nonfinite", "not_positive_definite"};
            py::dict out;
            out["steps"] = r.steps;
            out["status"] = names[static_cast<int>(r.status)];
            out["message"] = r.message;
            return out;
        }, py::arg("k"), py::arg("stop") = py::none(),
           "Advance up to k steps; returns {'steps', 'status', 'message'}.")
        .def("diagnostics", [](Engine& e) {
            const EngineDiagnostics d = in_core([&] { return e.diagnostics(); });
            py::dict out;
            out["U"] = d.U;
            out["G"] = d.G;
            out["dof"] = d.dof;
            out["condition"] = d.condition;
            out["mean_sq_norm"] = d.mean_sq_norm;
            out["train_mse"] = d.train_mse;
            out["kernel_alignment"] = d.kernel_alignment;
            return out;
        })
        .def("gram", [](Engine& e) {
            auto out = empty(e.n(), e.n());
            double* o = out.mutable_data();
            in_core([&] {
                e.gram(o);
            });
            return out;
        }, "The Gram K (n, n) of the current particles (their features stay stored for step_given_dual).")
        .def("features", [](Engine& e, double divisor, bool single) -> py::object {
            auto out = empty(e.n(), e.n_particles());
            double* o = out.mutable_data();
            if (!single) {
                in_core([&] { e.features(o, divisor); });
                return std::move(out);
            }
            py::array_t<float> out32({e.n(), e.n_particles()});
            float* o32 = out32.mutable_data();
            in_core([&] { e.features(o, divisor, o32); });
            return py::make_tuple(out, out32);
        }, py::arg("divisor"), py::arg("single") = false,
           "The features H (n, N) of the current particles divided by divisor (kept stored for the step); "
           "with single=True also their float32 copy, as a pair.")
        .def("step_given_dual", [](Engine& e, const Array& a, std::optional<Array> b) {
            const long n = e.n(), t = e.n_tasks();
            if (a.shape(0) != n || a.shape(1) != t || (b && (b->shape(0) != n || b->shape(1) != t)))
                throw std::invalid_argument("the dual coefficients must have shape (n, T) of the engine's targets");
            std::vector<double> a_cols(static_cast<std::size_t>(n * t)), b_cols(b ? a_cols.size() : 0);
            for (long j = 0; j < n; ++j)
                for (long i = 0; i < t; ++i) {
                    a_cols[i * n + j] = a.data()[j * t + i];
                    if (b) b_cols[i * n + j] = b->data()[j * t + i];
                }
            const RunStatus status = in_core([&] { return e.step_given_dual(a_cols.data(), b ? b_cols.data() : nullptr); });
            return status == RunStatus::Completed;
        }, py::arg("a").noconvert(), py::arg("b").noconvert().none(true),
           "One step with the given dual coefficients; False (and no step) when the new particles are not finite.")
        .def("output_weights", [](Engine& e) {
            auto out = empty(e.n_particles(), e.n_tasks());
            double* o = out.mutable_data();
            in_core([&] {
                e.output_weights(o);
            });
            return out;
        }, "Second-layer weights H^T A (N, T) for the dual coefficients held.")
        .def("set_particles", [](Engine& e, const Array& w, std::uint32_t step) {
            in_core([&] { e.set_particles(w.data(), step); });
        }, py::arg("w").noconvert(), py::arg("step"))
        .def("set_reducer", [](Engine& e, const py::object& reduce, long total_particles) {
            // reduce(buffer) sums a float64 array in place over the shards (called with the GIL, from run
            // and diagnostics); the engine keeps a reference to it.
            e.set_reducer([reduce](double* data, long count) {
                py::gil_scoped_acquire acquire;
                py::array_t<double> view({count}, {static_cast<long>(sizeof(double))}, data, py::none());
                reduce(view);
            }, total_particles);
        }, py::arg("reduce"), py::arg("total_particles"))
        .def("set_alignment_target", [](Engine& e, const Array& target) {
            if (target.shape(0) != e.n()) throw std::invalid_argument("alignment target must have n rows");
            e.set_alignment_target(target.data(), target.shape(1));
        }, py::arg("target").noconvert())
        .def("roll_back", [](Engine& e) {
            return in_core([&] { return e.roll_back(); });
        })
        .def_property_readonly("particles", [](const Engine& e) {
            auto out = empty(e.n_particles(), e.dim());
            double* o = out.mutable_data();
            in_core([&] { std::copy(e.particles(), e.particles() + e.n_particles() * e.dim(), o); });
            return out;
        })
        .def_property_readonly("dual", [](const Engine& e) {
            auto out = empty(e.n(), e.n_tasks());
            double* o = out.mutable_data();
            in_core([&] {
                const long n = e.n(), t = e.n_tasks();
                for (long j = 0; j < n; ++j)
                    for (long i = 0; i < t; ++i) o[j * t + i] = e.dual()[i * n + j];
            });
            return out;
        }, "Dual coefficients A (n, T) of the last second-layer solve.")
        .def_property_readonly("has_current_dual", &Engine::has_current_dual)
        .def_property_readonly("step", &Engine::step)
        .def_property_readonly("last_U", &Engine::last_U)
        .def_property_readonly("stats", [](const Engine& e) {
            const SolverStats& s = e.stats();
            py::dict out;
            out["solves"] = s.solves;
            out["factorizations"] = s.factorizations;
            out["cg_solves"] = s.cg_solves;
            out["cg_iterations"] = s.cg_iterations;
            out["cg_fallbacks"] = s.cg_fallbacks;
            out["max_cg_iterations"] = s.max_cg_iterations;
            return out;
        });

    m.def("run_ensemble", [](const std::vector<Engine*>& engines, long k, int n_threads) {
        for (const Engine* e : engines)
            if (e == nullptr) throw std::invalid_argument("engines must not contain None");
        const std::vector<RunResult> results = in_core([&] { return run_ensemble(engines, k, n_threads); });
        static const char* names[] = {"completed", "stopped", "nonfinite", "not_positive_definite"};
        py::list out;
        for (const RunResult& r : results) {
            py::dict d;
            d["steps"] = r.steps;
            d["status"] = names[static_cast<int>(r.status)];
            d["message"] = r.message;
            out.append(d);
        }
        return out;
    }, py::arg("engines"), py::arg("k"), py::arg("n_threads"),
       "Advance independent engines k steps each, in parallel across engines (GIL released).");
}
