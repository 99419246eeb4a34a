#define MFKERN_ISA avx512
#include "mfkern/skinny_kernels.inc"
