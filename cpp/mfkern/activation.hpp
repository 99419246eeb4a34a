// Neuron activations h(z) and their derivatives h'(z), applied in place over contiguous arrays.
#pragma once
#include <stdexcept>
#include <string>

namespace mfkern {

enum class Activation { Tanh, Erf };

inline Activation parse_activation(const std::string& name) {
    if (name == "tanh") return Activation::Tanh;
    if (name == "erf") return Activation::Erf;
    throw std::invalid_argument("activation must be 'tanh' or 'erf', got '" + name + "'");
}

// z <- h(z) over z[0..count); if deriv is non-null, deriv <- h'(z) (read before z is overwritten).
// Vectorised for the running CPU (AVX-512, AVX2 or SSE2, chosen at load time); absolute error < 1e-15.
void activate(Activation act, double* z, double* deriv, long count);
// Single precision (for the float32 option: about 1e-7 relative error).
void activate(Activation act, float* z, float* deriv, long count);

// The instruction set the activation loops run with on this CPU: "avx512", "avx2" or "generic".
const char* activation_isa();

// h'(z) from h(z) alone, where that is possible (tanh: 1 - h^2).
inline bool derivative_from_value(Activation act) { return act == Activation::Tanh; }

}  // namespace mfkern
