#define MFKERN_ISA generic
#include "mfkern/activation_kernels.inc"
