#define MFKERN_ISA generic
#include "mfkern/skinny_kernels.inc"
