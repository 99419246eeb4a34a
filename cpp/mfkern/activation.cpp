#include "mfkern/activation.hpp"

#include <cmath>
#include <cstdlib>
#include <string>

namespace mfkern {

// One copy of the loops per instruction set (activation_<isa>.cpp); the running CPU picks one.
#define MFKERN_DECLARE_KERNELS(isa)                                    \
    namespace isa {                                                    \
    void tanh_inplace(double* z, long count);                          \
    void tanh_derivative(const double* h, double* deriv, long count);  \
    void erf_derivative(const double* z, double* deriv, long count);   \
    void tanh_inplace(float* z, long count);                           \
    void tanh_derivative(const float* h, float* deriv, long count);    \
    void erf_derivative(const float* z, float* deriv, long count);     \
    }
MFKERN_DECLARE_KERNELS(generic)
#if defined(MFKERN_HAVE_X86_KERNELS)
MFKERN_DECLARE_KERNELS(avx2)
MFKERN_DECLARE_KERNELS(avx512)
#endif

namespace {

struct Kernels {
    void (*tanh_inplace)(double*, long);
    void (*tanh_derivative)(const double*, double*, long);
    void (*erf_derivative)(const double*, double*, long);
    void (*tanh_inplace_f)(float*, long);
    void (*tanh_derivative_f)(const float*, float*, long);
    void (*erf_derivative_f)(const float*, float*, long);
    const char* name;
};

#define MFKERN_KERNELS(isa)                                                                              \
    Kernels {                                                                                            \
        isa::tanh_inplace, isa::tanh_derivative, isa::erf_derivative, isa::tanh_inplace,                 \
            isa::tanh_derivative, isa::erf_derivative, #isa                                              \
    }

Kernels select_kernels() {
    // MFKERN_ACTIVATION_ISA=generic|avx2 forces a narrower variant (to test each one on a wide CPU).
    const char* forced = std::getenv("MFKERN_ACTIVATION_ISA");
    const std::string want = forced ? forced : "";
#if defined(MFKERN_HAVE_X86_KERNELS)
    __builtin_cpu_init();
    if (want == "avx2" && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return MFKERN_KERNELS(avx2);
    if (want != "generic" && want != "avx2" && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw"))
        return MFKERN_KERNELS(avx512);
    if (want != "generic" && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return MFKERN_KERNELS(avx2);
#endif
    return MFKERN_KERNELS(generic);
}

const Kernels& kernels() {
    static const Kernels k = select_kernels();
    return k;
}

}  // namespace

const char* activation_isa() { return kernels().name; }

void activate(Activation act, double* z, double* deriv, long count) {
    const Kernels& k = kernels();
    if (act == Activation::Tanh) {
        k.tanh_inplace(z, count);
        if (deriv) k.tanh_derivative(z, deriv, count);
    } else {
        if (deriv) k.erf_derivative(z, deriv, count);
        for (long i = 0; i < count; ++i) z[i] = std::erf(z[i]);
    }
}

void activate(Activation act, float* z, float* deriv, long count) {
    const Kernels& k = kernels();
    if (act == Activation::Tanh) {
        k.tanh_inplace_f(z, count);
        if (deriv) k.tanh_derivative_f(z, deriv, count);
    } else {
        if (deriv) k.erf_derivative_f(z, deriv, count);
        for (long i = 0; i < count; ++i) z[i] = std::erf(z[i]);
    }
}

}  // namespace mfkern
