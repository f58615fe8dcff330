/*-------------------------------------------------------------------------
 *
 * transport.c
 *	  Transport: libcurl multi for HTTP and SMTP delivery.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "journey.h"
