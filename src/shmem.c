/*-------------------------------------------------------------------------
 *
 * shmem.c
 *	  The sender's shared memory: one slot per database served, and what
 *	  touches it from outside the sender: the wake-up any backend sends at
 *	  commit when it queued messages, and a sender taking and leaving its
 *	  slot.
 *
 * A backend that queues messages (the executor, or a plain INSERT through
 * the messages trigger) sets the latch of its database's sender when, and
 * only if, its transaction commits, so a message goes out at once rather
 * than at the next poll, and never before it is visible.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/trigger.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"

#include "journey.h"
#include "sender.h"

PG_FUNCTION_INFO_V1(journey_wake_sender);

JourneySenderShmem *journey_sender_shmem = NULL;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static void
journey_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(JourneySenderShmem)));
}

static void
journey_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	journey_sender_shmem = ShmemInitStruct("journey sender", sizeof(JourneySenderShmem), &found);
	if (!found)
	{
		memset(journey_sender_shmem, 0, sizeof(JourneySenderShmem));
		SpinLockInit(&journey_sender_shmem->mutex);
	}
	LWLockRelease(AddinShmemInitLock);
}

void
journey_sender_shmem_register(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = journey_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = journey_shmem_startup;
}

/* ---------- a sender's slot ---------- */

static int	attached_slot = -1;
static bool am_sender = false;	/* a sender never wakes itself */

static void
sender_detach(int code, Datum arg)
{
	SpinLockAcquire(&journey_sender_shmem->mutex);
	journey_sender_shmem->slots[attached_slot].latch = NULL;
	SpinLockRelease(&journey_sender_shmem->mutex);
}

void
journey_sender_attach(int slot)
{
	attached_slot = slot;
	am_sender = true;
	SpinLockAcquire(&journey_sender_shmem->mutex);
	journey_sender_shmem->slots[slot].latch = MyLatch;
	SpinLockRelease(&journey_sender_shmem->mutex);
	before_shmem_exit(sender_detach, (Datum) 0);
}

/* ---------- waking the sender at commit (any backend) ---------- */

static bool wake_callback_registered = false;
static bool wake_pending = false;	/* this transaction queued messages */
static bool due_pending = false;	/* it made enrollments due */

/*
 * One commit callback for both wake-ups of a database's sender: messages to
 * send, and enrollments for the executor it runs (worker_executor.c), which
 * it learns from enrollments_due in its slot.  A rolled-back transaction
 * wakes nothing.
 */
static void
wake_xact_callback(XactEvent event, void *arg)
{
	bool		wake_sender;
	bool		wake_executor;
	int			i;

	if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT)
	{
		wake_pending = due_pending = false;
		return;
	}
	if (event == XACT_EVENT_PREPARE)
	{
		/* COMMIT PREPARED is left to the executor's poll. */
		due_pending = false;
		return;
	}
	if (event != XACT_EVENT_COMMIT && event != XACT_EVENT_PARALLEL_COMMIT)
		return;
	wake_sender = wake_pending;
	wake_executor = due_pending;
	wake_pending = due_pending = false;
	if ((!wake_sender && !wake_executor) || journey_sender_shmem == NULL)
		return;
	for (i = 0; i < JOURNEY_MAX_SENDERS; i++)
	{
		JourneySenderSlot *s = &journey_sender_shmem->slots[i];
		Latch	   *latch = NULL;

		SpinLockAcquire(&journey_sender_shmem->mutex);
		if (s->dboid == MyDatabaseId)
		{
			if (wake_executor && s->pid != 0)
			{
				s->enrollments_due = true;
				s->executor_wakeups++;
				/* With its executor off, the flag waits for it to be on. */
				if (s->executor_enabled)
					latch = s->latch;
			}
			if (wake_sender)
			{
				s->messages_queued = true;
				latch = s->latch;
			}
		}
		SpinLockRelease(&journey_sender_shmem->mutex);
		/* A stale latch is harmless: SetLatch checks its owner. */
		if (latch != NULL)
		{
			if (wake_sender)
				/* What a test waits for: the wake-up was sent, and when. */
				elog(DEBUG1, "journey wakes the sender of this database at commit");
			SetLatch(latch);
		}
	}
}

static void
register_wake_callback(void)
{
	if (!wake_callback_registered)
	{
		RegisterXactCallback(wake_xact_callback, NULL);
		wake_callback_registered = true;
	}
}

void
journey_sender_wake_at_commit(void)
{
	if (journey_sender_shmem == NULL || am_sender)
		return;
	register_wake_callback();
	wake_pending = true;
}

void
journey_note_enrollment_due(void)
{
	/* The sender's own passes plan their next one themselves. */
	if (journey_sender_shmem == NULL || am_sender)
		return;
	register_wake_callback();
	due_pending = true;
}

/* Statement-level trigger on journey.messages: a plain INSERT wakes too. */
Datum
journey_wake_sender(PG_FUNCTION_ARGS)
{
	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("journey.wake_sender() must be called as a trigger")));
	journey_sender_wake_at_commit();
	return PointerGetDatum(NULL);
}
