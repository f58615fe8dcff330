/*
 * fuzz_shim.h
 *	  The backend services the fuzz targets provide themselves (see
 *	  fuzz_shim.c).
 */
#ifndef FUZZ_SHIM_H
#define FUZZ_SHIM_H

#include <setjmp.h>

/* Where ereport(ERROR) returns to. */
extern sigjmp_buf fuzz_error_jump;

extern void *fuzz_alloc(size_t size);
/* Frees every allocation since the last call: one input's memory. */
extern void fuzz_free_all(void);

#endif
