#define MFKERN_ISA avx2
#include "mfkern/activation_kernels.inc"
