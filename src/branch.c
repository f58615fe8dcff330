/*-------------------------------------------------------------------------
 *
 * branch.c
 *	  Branch conditions: evaluation of a branch step's condition tree.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "journey.h"
