/*-------------------------------------------------------------------------
 *
 * providers.c
 *	  Providers: building each provider kind's request from a message.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "journey.h"
