/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  The sender background worker: claims due messages and hands them to
 *	  the transport.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "journey.h"

/* TEMPORARY (replaced by the sender work). */
void
journey_sender_wake_at_commit(void)
{
}

void
journey_sender_register(void)
{
}

void
journey_sender_main(Datum main_arg)
{
}
