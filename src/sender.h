/*-------------------------------------------------------------------------
 *
 * sender.h
 *	  Declarations private to the sender: its shared memory (shmem.c), the
 *	  launcher (launcher.c), the sender loop (worker.c), the libcurl transport (transport.c) and the
 *	  provider kinds (providers.c).
 *
 * The launcher is a static background worker connected to no database; it
 * starts one dynamic "journey sender" per database named in
 * journey.database_name.  Each sender claims messages, hands them to the
 * transport and writes back what the provider answered.
 *
 *-------------------------------------------------------------------------
 */
#ifndef JOURNEY_SENDER_H
#define JOURNEY_SENDER_H

#include "postgres.h"

#include <curl/curl.h>

#include "lib/stringinfo.h"
#include "storage/latch.h"
#include "storage/spin.h"
#include "utils/timestamp.h"

/* Databases one server can serve at once (entries of journey.database_name). */
#define JOURNEY_MAX_SENDERS 16

/* One sender's place in shared memory. */
typedef struct JourneySenderSlot
{
	Oid			dboid;			/* database served; InvalidOid when free */
	Latch	   *latch;			/* its latch, set to wake it */
	bool		stop_requested; /* leave the database (it is being dropped) */
	TimestampTz stop_requested_at;
	/* What journey.sender_status() shows (health.c), since the start. */
	int			pid;
	TimestampTz started_at;
	TimestampTz last_claim_at;
	TimestampTz last_result_at;
	int			in_flight;
	int64		sent;
	int64		failed;
	int64		retried;
	/* The executor in the sender (worker_executor.c), counted since it started. */
	bool		messages_queued;	/* a commit queued messages (the sender claims) */
	bool		enrollments_due;	/* a commit made enrollments due */
	bool		executor_enabled;	/* journey.executor_in_worker as it sees it */
	uint64		executor_wakeups;	/* commits that set enrollments_due */
	uint64		executor_passes;
	uint64		executor_advanced;	/* enrollments its passes handled */
	TimestampTz executor_last_pass_at;
	TimestampTz executor_next_pass_at;	/* 0: at the loop's next turn */
} JourneySenderSlot;

typedef struct JourneySenderShmem
{
	slock_t		mutex;
	JourneySenderSlot slots[JOURNEY_MAX_SENDERS];
} JourneySenderShmem;

/* shmem.c: NULL unless the library was preloaded (no worker, nothing to wake). */
extern JourneySenderShmem *journey_sender_shmem;

/* shmem.c: asks for the shared memory; from _PG_init only. */
extern void journey_sender_shmem_register(void);

/*
 * shmem.c: publishes this sender's latch in its slot until it
 * exits; a sender never wakes itself at commit.
 */
extern void journey_sender_attach(int slot);

/* What the launcher passes a sender in bgw_extra. */
typedef struct JourneySenderArgs
{
	int			slot;
	Oid			roleoid;
	char		dbname[NAMEDATALEN];
} JourneySenderArgs;

extern PGDLLEXPORT void journey_launcher_main(Datum main_arg);
/* worker.c: connects a sender or its helper (bgw_extra holds the args) */
extern void journey_worker_connect(Datum main_arg, JourneySenderArgs *args,
								   const char *appname);

/* A claimed message with the provider that delivers it. */
typedef struct JourneyMessage
{
	Oid			relid;			/* journey.messages it was claimed from */
	int64		id;
	int			attempts;		/* including the one under way */
	char	   *business_id;
	char	   *customer_id;	/* NULL when none */
	char	   *enrollment_id;
	char	   *sequence_id;
	char	   *step_index;
	char	   *channel;
	char	   *purpose;
	char	   *to_address;
	char	   *subject;
	char	   *body;
	char	   *kind;			/* provider kind */
	char	   *endpoint;
	char	   *from_address;
	char	   *credentials;	/* never logged, never in last_error */
	char	   *settings;		/* provider settings, jsonb as text */
	char	   *provider_id;	/* the journey.providers row, for its cap */
	/* <installation id>-<id>: unique across databases and reinstalls */
	char	   *idempotency_key;
	char	   *unsubscribe_url;	/* List-Unsubscribe target, NULL when none */
	TimestampTz claimed_at;		/* no later than its lease began */
	TimestampTz started_at;		/* its request started; 0 before */
} JourneyMessage;

typedef enum JourneyOutcome
{
	JOURNEY_SENT,
	JOURNEY_RETRY,
	JOURNEY_FAILED
} JourneyOutcome;

/* A request to one provider, built by providers.c, run by transport.c. */
typedef struct JourneyRequest
{
	MemoryContext cxt;			/* holds this struct and all it points to */
	JourneyMessage *msg;
	CURL	   *easy;
	bool		is_smtp;
	char	   *url;
	char	   *payload;		/* HTTP body or the RFC 5322 message */
	size_t		payload_len;
	size_t		payload_sent;	/* SMTP upload position */
	struct curl_slist *headers; /* HTTP headers (libcurl-allocated) */
	struct curl_slist *rcpt;	/* SMTP recipients (libcurl-allocated) */
	char	   *username;
	char	   *password;
	char	   *mail_from;
	const char *id_key;			/* response JSON key of the provider's id */
	char	   *provider_message_id;	/* known before sending (SMTP) */
	StringInfoData response;	/* response body, truncated */
	int64		retry_after_ms; /* from Retry-After, -1 when absent */
	char		errbuf[CURL_ERROR_SIZE];
} JourneyRequest;

/* What became of one attempt. */
typedef struct JourneyResult
{
	Oid			relid;			/* journey.messages it belongs to */
	int64		id;
	int			attempts;
	JourneyOutcome outcome;
	char	   *error;			/* why it was retried or failed */
	char	   *provider_message_id;
	int64		retry_after_ms; /* -1: use the backoff */
	bool		held;			/* its row was locked by another transaction */
	const char *suppress_reason;	/* the provider refuses the address for good */
} JourneyResult;

/* worker_executor.c: the executor's step in the sender's loop */
extern void journey_worker_executor_init(int slot);
/* Runs a pass when one is due; true when it advanced enrollments. */
extern bool journey_worker_executor_step(bool sender_busy);
/* Milliseconds until a pass is due, -1 for none. */
extern long journey_worker_executor_wait_ms(bool sender_busy);
/* A pass's transaction and its one advance_due_enrollments call (the helper's too). */
extern bool journey_executor_begin_pass(void);
extern int	journey_executor_advance_batch(TimestampTz as_of);
extern void journey_executor_end_pass(void);
/* executor_helper.c: a second process for a burst of due enrollments */
extern void journey_executor_helper_start(void);
extern bool journey_executor_helper_running(void);
extern PGDLLEXPORT void journey_executor_helper_main(Datum main_arg);
/* worker.c: the claim on what the sender's own pass enqueues (journey.h). */
extern bool journey_sender_preclaim_begin(JourneyPreclaim *pc);
extern void journey_sender_preclaim_fetch(JourneyPreclaim *pc);
extern void journey_sender_preclaim_start(void);
extern void journey_sender_preclaim_discard(void);

/* providers.c */
/* Builds msg's request in cxt (which holds msg); NULL and *error if it can't. */
extern JourneyRequest *journey_request_build(JourneyMessage *msg, MemoryContext cxt,
											 char **error);
extern void journey_request_classify(JourneyRequest *req, CURLcode rc, long status,
									 JourneyResult *res);

/* outbound.c */
/* A copy of s, valid UTF-8, no control characters, at most max_bytes. */
extern char *journey_clean_text(const char *s, int max_bytes);
/* text with every encoding of the request's secrets replaced. */
extern char *journey_scrub_secrets(JourneyRequest *req, char *text);
extern void journey_append_base64(StringInfo buf, const char *data, size_t len, bool wrap);
/* "Name: value" folded to 78 characters, encoded-words where needed. */
extern void journey_append_header(StringInfo b, const char *name, const char *value);
extern void journey_append_address_header(StringInfo b, const char *name, const char *value);
/* The addr-spec of "Name <addr>" or of a bare address. */
extern char *journey_addr_spec(const char *s);
/* health.c: the sender's counters in its shared-memory slot */
extern void journey_health_started(int slot);
extern void journey_health_claimed(int slot, int in_flight);
extern void journey_health_results(int slot, int in_flight, int64 sent,
								   int64 failed, int64 retried);

/* transport.c */
extern void journey_lanes_add(JourneyMessage *msg, TimestampTz claimed_at);
extern JourneyMessage *journey_lanes_next(bool *too_late);
extern bool journey_lanes_done(JourneyMessage *msg, bool requested);
extern int	journey_lanes_claim_room(void);
extern void journey_lanes_room_args(Datum *args);

extern void journey_transport_init(void);
extern void journey_transport_configure(void);
extern int	journey_transport_fd(void);
extern void journey_transport_start(JourneyRequest *req);
extern void journey_transport_drive(void);
extern long journey_transport_timeout_ms(void);
extern JourneyRequest *journey_transport_next_done(CURLcode *rc, long *status);
extern void journey_transport_release(JourneyRequest *req);
extern int	journey_transport_in_flight(void);

#endif							/* JOURNEY_SENDER_H */
