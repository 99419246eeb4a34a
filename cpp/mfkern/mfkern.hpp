// The whole C++ core of mfkern: plain C++17 with Eigen and OpenMP, no Python.
#pragma once
#include "mfkern/activation.hpp"
#include "mfkern/blas.hpp"
#include "mfkern/drift.hpp"
#include "mfkern/engine.hpp"
#include "mfkern/features.hpp"
#include "mfkern/gram.hpp"
#include "mfkern/langevin.hpp"
#include "mfkern/rng.hpp"
#include "mfkern/skinny.hpp"
#include "mfkern/solve.hpp"
#include "mfkern/woodbury.hpp"
