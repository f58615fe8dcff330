/*-------------------------------------------------------------------------
 *
 * timewindow.c
 *	  Time windows and rate limits: quiet hours in the recipient's zone and rolling send limits.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "journey.h"
