#define MFKERN_ISA avx512
#include "mfkern/activation_kernels.inc"
