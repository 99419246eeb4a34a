#define MFKERN_ISA avx2
#include "mfkern/skinny_kernels.inc"
