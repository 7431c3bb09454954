/* Storage element types of activations (config store.activation_dtype, the activation store). */
#ifndef RESAE_DTYPE_H
#define RESAE_DTYPE_H
enum rs_dtype { RS_DTYPE_F32 = 0, RS_DTYPE_F16 = 1 };
#endif
