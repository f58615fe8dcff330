/*-------------------------------------------------------------------------
 *
 * executor.c
 *	  The executor: journey.advance_due_enrollments(p_batch_size, p_as_of),
 *	  which pg_cron runs every minute.  This file takes the decisions;
 *	  executor_sql.c runs the statements.
 *
 * One call is set-based from end to end:
 *
 *	 1. claim: up to p_batch_size due enrollments, shared fairly across
 *		businesses (round-robin, each business's oldest first: a backlog,
 *		back-dated or not, gets its share and no more), locked FOR UPDATE
 *		SKIP LOCKED, so concurrent callers take disjoint sets and never
 *		wait on each other, with everything a step needs: addresses,
 *		suppression flags, the recipient's zone and the columns of the
 *		template context.  The rows their writes will reference are held
 *		FOR KEY SHARE SKIP LOCKED: no wait on a tenant's locks;
 *	 2. load: one statement loads the steps of the sequences involved; each
 *		step is compiled once per call (definition.c: its templates, its
 *		branch condition);
 *	 3. for sequences with rate limits, one statement locks them (in id
 *		order, SKIP LOCKED: concurrent callers serialize per sequence and
 *		never wait; the enrollments of a sequence another transaction holds,
 *		a tenant's included, are left for the next call) and one reads
 *		their rolling windows from journey.messages; for branches on
 *		events, one statement finds the events of the batch;
 *	 4. the state machine runs in memory, enrollment by enrollment (oldest
 *		due first), through as many zero-delay steps as it can, building
 *		an enrollment's template context only when a step needs it;
 *	 5. three statements over arrays apply the results: the queued
 *		messages, the log and the enrollments' new state.
 *
 * Every statement is a prepared plan kept for the life of the backend.
 * A call is one transaction (the caller's): a crash loses nothing, since
 * either all of a call's decisions commit or none do, and enrollments
 * resume from current_step_index.  p_batch_size bounds that transaction.
 *
 * Enrollments of a sequence that is not active (paused) are not claimed:
 * they wait, and run when the sequence is active again.  A step the
 * definition grammar refuses (possible only by writing the tables
 * directly; create_sequence reads definitions with the same grammar) stops
 * the enrollment with a logged reason (invalid_step:N) rather than failing
 * the whole batch call after call.
 *
 * Steps 4 and 5 run in one subtransaction.  Should anything fail in it (a
 * value that cannot be handled, a render past a limit, a refused write),
 * it is rolled back and each enrollment runs again in its own
 * subtransaction: the one at fault stops (error:<SQLSTATE>, logged with
 * the message) and the others go on.  The common path pays for one
 * subtransaction per call, not one per enrollment.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "executor/spi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "pgtime.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/resowner.h"

#include "executor_private.h"
#include "optout.h"

PG_FUNCTION_INFO_V1(journey_advance_due_enrollments);

bool		journey_executor_left_locked = false;

/* ---------- column batches: the rows a call's statements apply ---------- */

static void
batch_init(Batch *b, int ncols, const Oid *types)
{
	b->ncols = ncols;
	memcpy(b->types, types, sizeof(Oid) * ncols);
	b->n = 0;
	b->capacity = 0;
}

/* Adds a row of nulls and returns its index. */
static int
batch_add(Batch *b)
{
	if (b->n == b->capacity)
	{
		int			cap = b->capacity ? b->capacity * 2 : 256;

		for (int c = 0; c < b->ncols; c++)
		{
			if (b->capacity == 0)
			{
				b->values[c] = palloc(sizeof(Datum) * cap);
				b->nulls[c] = palloc(sizeof(bool) * cap);
			}
			else
			{
				b->values[c] = repalloc(b->values[c], sizeof(Datum) * cap);
				b->nulls[c] = repalloc(b->nulls[c], sizeof(bool) * cap);
			}
		}
		b->capacity = cap;
	}
	for (int c = 0; c < b->ncols; c++)
		b->nulls[c][b->n] = true;
	return b->n++;
}

static Datum
batch_array(Batch *b, int col)
{
	int16		typlen;
	bool		typbyval;
	char		typalign;
	int			dims[1];
	int			lbs[1] = {1};

	get_typlenbyvalalign(b->types[col], &typlen, &typbyval, &typalign);
	dims[0] = b->n;
	return PointerGetDatum(construct_md_array(b->values[col], b->nulls[col], 1,
											  dims, lbs, b->types[col],
											  typlen, typbyval, typalign));
}

static inline void
batch_set(Batch *b, int row, int col, Datum value)
{
	b->values[col][row] = value;
	b->nulls[col][row] = false;
}

/* Array datums of all columns into values. */
static void
batch_args(Batch *b, Datum *values, char *nulls)
{
	for (int c = 0; c < b->ncols; c++)
	{
		values[c] = batch_array(b, c);
		nulls[c] = ' ';
	}
}

/*
 * Reorders a batch's rows by the uuid in column key_col, keeping the order
 * of rows with equal keys (an enrollment's log rows stay in decision order).
 * Rows in key order reach the uuid-keyed indexes, and the foreign-key checks
 * on the enrollments' primary key, in index order.
 */
static int
compare_rows(const void *a, const void *b, void *arg)
{
	const Datum *keys = arg;
	int			x = *(const int *) a;
	int			y = *(const int *) b;
	int			r = memcmp(DatumGetUUIDP(keys[x]), DatumGetUUIDP(keys[y]), UUID_LEN);

	if (r != 0)
		return r;
	return (x > y) - (x < y);
}

static void
batch_sort(Batch *b, int key_col)
{
	int		   *order;
	Datum	   *values;
	bool	   *nulls;

	if (b->n < 2)
		return;
	order = palloc(sizeof(int) * b->n);
	for (int i = 0; i < b->n; i++)
		order[i] = i;
	qsort_arg(order, b->n, sizeof(int), compare_rows, b->values[key_col]);
	values = palloc(sizeof(Datum) * b->n);
	nulls = palloc(sizeof(bool) * b->n);
	for (int c = 0; c < b->ncols; c++)
	{
		for (int i = 0; i < b->n; i++)
		{
			values[i] = b->values[c][order[i]];
			nulls[i] = b->nulls[c][order[i]];
		}
		memcpy(b->values[c], values, sizeof(Datum) * b->n);
		memcpy(b->nulls[c], nulls, sizeof(bool) * b->n);
	}
}

void
exec_batch_arrays(Batch *b, int key_col, Datum *values, char *nulls)
{
	batch_sort(b, key_col);
	batch_args(b, values, nulls);
}

/* ---------- decisions ---------- */

static void
log_decision(ExecState *st, ExecEnrollment *en, int32 step, const char *outcome,
			 const char *detail)
{
	int			row = batch_add(&st->log);

	if (strncmp(outcome, "skipped_", 8) == 0)
		exec_stats_count(st, en, step, COUNT_SKIPPED);
	else if (strncmp(outcome, "deferred_", 9) == 0)
		exec_stats_count(st, en, step, COUNT_DEFERRED);
	batch_set(&st->log, row, LOG_BUSINESS_ID, en->business_id);
	batch_set(&st->log, row, LOG_ENROLLMENT_ID, en->id);
	if (step > 0)
		batch_set(&st->log, row, LOG_STEP_INDEX, Int32GetDatum(step));
	batch_set(&st->log, row, LOG_OUTCOME, CStringGetTextDatum(outcome));
	batch_set(&st->log, row, LOG_DETAIL,
				   PointerGetDatum(cstring_to_text_with_len(detail, strlen(detail))));
	batch_set(&st->log, row, LOG_SEQUENCE_VERSION, Int32GetDatum(en->version));
}

/* The enrollment's new state: waits at step until next_run_at. */
static void
set_waiting(ExecState *st, ExecEnrollment *en, int32 step, TimestampTz next_run_at)
{
	int			row = batch_add(&st->updates);

	batch_set(&st->updates, row, UPD_ID, en->id);
	batch_set(&st->updates, row, UPD_STEP, Int32GetDatum(step));
	batch_set(&st->updates, row, UPD_NEXT_RUN_AT, TimestampTzGetDatum(next_run_at));
	batch_set(&st->updates, row, UPD_STATUS, st->t_active);
}

static void
set_finished(ExecState *st, ExecEnrollment *en, int32 step, const char *detail)
{
	int			row = batch_add(&st->updates);

	batch_set(&st->updates, row, UPD_ID, en->id);
	batch_set(&st->updates, row, UPD_STEP, Int32GetDatum(Max(step, 1)));
	batch_set(&st->updates, row, UPD_STATUS, st->t_finished);
	batch_set(&st->updates, row, UPD_FINISHED_AT, TimestampTzGetDatum(st->as_of));
	log_decision(st, en, step, "finished", detail);
}

static void
set_stopped(ExecState *st, ExecEnrollment *en, int32 step, const char *why)
{
	int			row = batch_add(&st->updates);
	char	   *detail = psprintf("stopped: step %d cannot run: %s", step, why);

	batch_set(&st->updates, row, UPD_ID, en->id);
	batch_set(&st->updates, row, UPD_STEP, Int32GetDatum(step));
	batch_set(&st->updates, row, UPD_STATUS, st->t_stopped);
	batch_set(&st->updates, row, UPD_FINISHED_AT, TimestampTzGetDatum(st->as_of));
	batch_set(&st->updates, row, UPD_STOP_REASON,
				   CStringGetTextDatum(psprintf("invalid_step:%d", step)));
	log_decision(st, en, step, "stopped", detail);
}

static JourneyStep *
find_step(ExecVersion *seq, int32 index, int *pos)
{
	int			lo = 0;
	int			hi = seq->nsteps - 1;

	while (lo <= hi)
	{
		int			mid = lo + (hi - lo) / 2;

		if (seq->steps[mid].step_index == index)
		{
			*pos = mid;
			return &seq->steps[mid];
		}
		if (seq->steps[mid].step_index < index)
			lo = mid + 1;
		else
			hi = mid - 1;
	}
	return NULL;
}


static void
push_key(JsonbParseState **ps, const char *key)
{
	JsonbValue	k;

	k.type = jbvString;
	k.val.string.val = (char *) key;
	k.val.string.len = strlen(key);
	pushJsonbValue(ps, WJB_KEY, &k);
}

static void
push_cstring(JsonbParseState **ps, const char *key, const char *value)
{
	JsonbValue	v;

	push_key(ps, key);
	if (value == NULL)
		v.type = jbvNull;
	else
	{
		v.type = jbvString;
		v.val.string.val = (char *) value;
		v.val.string.len = strlen(value);
	}
	pushJsonbValue(ps, WJB_VALUE, &v);
}

/* A text column of the claim row, without copying it. */
static void
push_column(JsonbParseState **ps, const char *key, HeapTuple tup, TupleDesc desc,
			int col)
{
	bool		isnull;
	Datum		d = SPI_getbinval(tup, desc, col, &isnull);
	JsonbValue	v;

	push_key(ps, key);
	if (isnull)
		v.type = jbvNull;
	else
	{
		text	   *t = DatumGetTextPP(d);

		v.type = jbvString;
		v.val.string.val = VARDATA_ANY(t);
		v.val.string.len = VARSIZE_ANY_EXHDR(t);
	}
	pushJsonbValue(ps, WJB_VALUE, &v);
}

static void
push_jsonb(JsonbParseState **ps, const char *key, Jsonb *j)
{
	JsonbValue	v;

	push_key(ps, key);
	v.type = jbvBinary;
	v.val.binary.data = &j->root;
	v.val.binary.len = VARSIZE(j) - VARHDRSZ;
	pushJsonbValue(ps, WJB_VALUE, &v);
}

/*
 * The template context (the shape render_template documents), built from
 * the claim row the first time a step of this enrollment renders or
 * branches:
 * {"customer": {id, full_name, email, phone, timezone, external_id,
 * attributes}, "business": {name, email, phone, google_review_url,
 * timezone}, "review_link": ..., "enrollment": {"meta": ...},
 * "event": meta.event}.
 */
static Jsonb *
enrollment_ctx(ExecState *st, ExecEnrollment *en)
{
	TupleDesc	desc = st->claim_desc;
	HeapTuple	tup = en->tup;
	JsonbParseState *ps = NULL;
	JsonbValue *result;
	JsonbValue *event;
	JsonbValue	null_value;
	Jsonb	   *meta;
	bool		isnull;

	MemoryContext old;

	if (en->ctx != NULL)
		return en->ctx;
	old = MemoryContextSwitchTo(st->scratch);
	meta = DatumGetJsonbP(SPI_getbinval(tup, desc, CLAIM_META, &isnull));

	pushJsonbValue(&ps, WJB_BEGIN_OBJECT, NULL);
	push_key(&ps, "customer");
	pushJsonbValue(&ps, WJB_BEGIN_OBJECT, NULL);
	push_cstring(&ps, "id", DatumGetCString(DirectFunctionCall1(uuid_out, en->customer_id)));
	push_column(&ps, "full_name", tup, desc, CLAIM_FULL_NAME);
	push_cstring(&ps, "email", en->email);
	push_cstring(&ps, "phone", en->phone);
	push_column(&ps, "timezone", tup, desc, CLAIM_CUSTOMER_TZ);
	push_column(&ps, "external_id", tup, desc, CLAIM_EXTERNAL_ID);
	push_jsonb(&ps, "attributes",
			   DatumGetJsonbP(SPI_getbinval(tup, desc, CLAIM_ATTRIBUTES, &isnull)));
	pushJsonbValue(&ps, WJB_END_OBJECT, NULL);

	push_key(&ps, "business");
	pushJsonbValue(&ps, WJB_BEGIN_OBJECT, NULL);
	push_column(&ps, "name", tup, desc, CLAIM_BUSINESS_NAME);
	push_column(&ps, "email", tup, desc, CLAIM_BUSINESS_EMAIL);
	push_column(&ps, "phone", tup, desc, CLAIM_BUSINESS_PHONE);
	push_column(&ps, "google_review_url", tup, desc, CLAIM_BUSINESS_REVIEW_URL);
	push_column(&ps, "timezone", tup, desc, CLAIM_BUSINESS_TZ);
	pushJsonbValue(&ps, WJB_END_OBJECT, NULL);
	push_column(&ps, "review_link", tup, desc, CLAIM_BUSINESS_REVIEW_URL);
	/* null while journey.unsubscribe_url is empty: a missing value */
	push_cstring(&ps, "unsubscribe_url",
				 journey_unsubscribe_url_for(en->business_id, "email", en->email));

	push_key(&ps, "enrollment");
	pushJsonbValue(&ps, WJB_BEGIN_OBJECT, NULL);
	push_jsonb(&ps, "meta", meta);
	pushJsonbValue(&ps, WJB_END_OBJECT, NULL);

	push_key(&ps, "event");
	event = journey_jsonb_get(meta, "event");
	if (event == NULL)
	{
		null_value.type = jbvNull;
		event = &null_value;
	}
	pushJsonbValue(&ps, WJB_VALUE, event);
	result = pushJsonbValue(&ps, WJB_END_OBJECT, NULL);

	en->ctx = JsonbValueToJsonb(result);
	MemoryContextSwitchTo(old);
	return en->ctx;
}

static pg_tz *
recipient_zone(ExecEnrollment *en)
{
	pg_tz	   *tz = en->zone ? pg_tzset(en->zone) : NULL;

	/* Both zone columns are CHECKed valid; UTC is only a safety net. */
	return tz ? tz : pg_tzset("UTC");
}

typedef enum SendResult
{
	SEND_GO_ON,
	SEND_DEFERRED
} SendResult;

/*
 * One send step at as_of, its checks in this order: address and
 * suppression, quiet hours, rate limits, render; then the message.
 */
static SendResult
run_send(ExecState *st, ExecEnrollment *en, JourneyStep *step)
{
	ExecSequence *seq = en->seq;
	bool		email = step->kind == STEP_EMAIL;
	const char *channel = email ? "email" : "sms";
	const char *address = email ? en->email : en->phone;
	TimestampTz run_at;
	StringInfo	subject = &st->subject;
	StringInfo	body = &st->body;
	const char *missing = NULL;
	char	   *detail = NULL;
	int			row;

	/* 1. address and suppression */
	if (address == NULL || address[0] == '\0')
	{
		log_decision(st, en, step->step_index, "skipped_no_address",
					 email ? "customer has no email address" :
					 "customer has no phone number");
		return SEND_GO_ON;
	}
	if (email ? en->email_suppressed : en->phone_suppressed)
	{
		log_decision(st, en, step->step_index, "skipped_suppressed",
					 psprintf("%s is suppressed for %s", address, channel));
		return SEND_GO_ON;
	}

	/* 1b. frequency caps, across the business's journeys (optout.h) */
	if (journey_frequency_cap_hit(en->business_id, en->customer_id, step->purpose,
								  st->as_of, &detail))
	{
		log_decision(st, en, step->step_index, "skipped_frequency_cap", detail);
		return SEND_GO_ON;
	}

	/* 2. quiet hours, in the recipient's local time */
	if (seq->has_quiet &&
		journey_quiet_hours_end(st->as_of, recipient_zone(en),
								seq->quiet_start, seq->quiet_end, &run_at))
	{
		resetStringInfo(&st->buf);
		appendStringInfoString(&st->buf, "deferred to ");
		journey_format_local(&st->buf, run_at, recipient_zone(en));
		appendStringInfo(&st->buf, " %s: quiet hours ", en->zone);
		journey_format_time(&st->buf, seq->quiet_start);
		appendStringInfoChar(&st->buf, '-');
		journey_format_time(&st->buf, seq->quiet_end);
		set_waiting(st, en, step->step_index, run_at);
		log_decision(st, en, step->step_index, "deferred_quiet_hours", st->buf.data);
		return SEND_DEFERRED;
	}

	/* 2b. the SMS window, on top of quiet hours (optout.h) */
	if (!email && journey_sms_window_defer(st->as_of, recipient_zone(en), &run_at))
	{
		resetStringInfo(&st->buf);
		appendStringInfoString(&st->buf, "deferred to ");
		journey_format_local(&st->buf, run_at, recipient_zone(en));
		appendStringInfo(&st->buf, " %s: outside the SMS window %s", en->zone,
						 journey_sms_window);
		set_waiting(st, en, step->step_index, run_at);
		log_decision(st, en, step->step_index, "deferred_sms_window", st->buf.data);
		return SEND_DEFERRED;
	}

	/* 3. rolling rate limits of the sequence */
	if (seq->limited)
	{
		JourneyRateHit hit;

		if (journey_rate_defer(&seq->rate, st->as_of, &run_at, &hit))
		{
			/*
			 * Hold the slot it will use, so the next deferral of this call
			 * goes to the slot after: a backlog spreads out over the window
			 * instead of retrying all at once.
			 */
			journey_rate_add(&seq->rate, run_at);
			resetStringInfo(&st->buf);
			appendStringInfoString(&st->buf, "deferred to ");
			journey_format_local(&st->buf, run_at, recipient_zone(en));
			appendStringInfo(&st->buf, " %s: ", en->zone);
			if (hit.hour)
				appendStringInfo(&st->buf, "%d %s in the last hour (rate_per_hour %d)",
								 hit.hour_count,
								 hit.hour_count == 1 ? "message" : "messages",
								 seq->rate_per_hour);
			if (hit.hour && hit.day)
				appendStringInfoString(&st->buf, ", then ");
			if (hit.day)
				appendStringInfo(&st->buf, "%d %s in the last 24 hours (rate_per_day %d)",
								 hit.day_count,
								 hit.day_count == 1 ? "message" : "messages",
								 seq->rate_per_day);
			set_waiting(st, en, step->step_index, run_at);
			log_decision(st, en, step->step_index, "deferred_rate_limit", st->buf.data);
			return SEND_DEFERRED;
		}
	}

	/* 4. render */
	resetStringInfo(body);
	if (email)
	{
		resetStringInfo(subject);
		if (!journey_template_render(step->subject, enrollment_ctx(st, en), subject, &missing))
		{
			log_decision(st, en, step->step_index, "skipped_render_error",
						 psprintf("missing value for {{%s}} in the subject", missing));
			return SEND_GO_ON;
		}
	}
	if (!journey_template_render(step->body, enrollment_ctx(st, en), body, &missing))
	{
		log_decision(st, en, step->step_index, "skipped_render_error",
					 psprintf("missing value for {{%s}} in the body", missing));
		return SEND_GO_ON;
	}

	/* 5. the message */
	row = batch_add(&st->messages);
	batch_set(&st->messages, row, MSG_BUSINESS_ID, en->business_id);
	batch_set(&st->messages, row, MSG_ENROLLMENT_ID, en->id);
	batch_set(&st->messages, row, MSG_SEQUENCE_ID, en->sequence_id);
	batch_set(&st->messages, row, MSG_STEP_INDEX, Int32GetDatum(step->step_index));
	batch_set(&st->messages, row, MSG_SEQUENCE_VERSION, Int32GetDatum(en->version));
	batch_set(&st->messages, row, MSG_CUSTOMER_ID, en->customer_id);
	batch_set(&st->messages, row, MSG_CHANNEL, email ? st->t_email : st->t_sms);
	if (step->purpose)
		batch_set(&st->messages, row, MSG_PURPOSE, CStringGetTextDatum(step->purpose));
	batch_set(&st->messages, row, MSG_TO_ADDRESS, CStringGetTextDatum(address));
	if (email)
		batch_set(&st->messages, row, MSG_SUBJECT,
					   PointerGetDatum(cstring_to_text_with_len(subject->data,
																subject->len)));
	batch_set(&st->messages, row, MSG_BODY,
				   PointerGetDatum(cstring_to_text_with_len(body->data, body->len)));
	if (seq->limited)
		journey_rate_add(&seq->rate, st->as_of);
	journey_frequency_cap_note(en->business_id, en->customer_id, step->purpose, st->as_of);
	resetStringInfo(&st->buf);
	appendStringInfo(&st->buf, "%s to %s", channel, address);
	log_decision(st, en, step->step_index, "queued", st->buf.data);
	return SEND_GO_ON;
}

/*
 * A wait_until step that has come due: the events trigger marked the
 * enrollment (meta.wait_until) when the awaited event arrived while it
 * waited here, with the event's time and the deadline it had to beat; no
 * mark, or an event after the deadline, is a timeout.  Returns the target.
 */
static int32
run_wait_until(ExecState *st, ExecEnrollment *en, JourneyStep *step)
{
	bool		isnull;
	Jsonb	   *meta = DatumGetJsonbP(SPI_getbinval(en->tup, st->claim_desc, CLAIM_META,
													&isnull));
	JsonbValue *mark = journey_jsonb_get(meta, "wait_until");
	JsonbValue	v;
	char	   *occurred = NULL;
	char	   *deadline = NULL;
	char	   *event_id = NULL;
	bool		arrived = false;
	int32		target;

	if (mark != NULL && mark->type == jbvBinary &&
		journey_container_get(mark->val.binary.data, "step", &v) && v.type == jbvNumeric &&
		DatumGetInt32(DirectFunctionCall1(numeric_int4, NumericGetDatum(v.val.numeric))) ==
		step->step_index)
	{
		if (journey_container_get(mark->val.binary.data, "occurred_at", &v) &&
			v.type == jbvString)
			occurred = pnstrdup(v.val.string.val, v.val.string.len);
		if (journey_container_get(mark->val.binary.data, "timeout_at", &v) &&
			v.type == jbvString)
			deadline = pnstrdup(v.val.string.val, v.val.string.len);
		if (journey_container_get(mark->val.binary.data, "event_id", &v) &&
			v.type == jbvNumeric)
			event_id = DatumGetCString(DirectFunctionCall1(numeric_out,
														   NumericGetDatum(v.val.numeric)));
		/* Both were written by the trigger from timestamptz values. */
		arrived = occurred != NULL && deadline != NULL &&
			DatumGetTimestampTz(DirectFunctionCall3(timestamptz_in, CStringGetDatum(occurred),
													ObjectIdGetDatum(InvalidOid),
													Int32GetDatum(-1))) <=
			DatumGetTimestampTz(DirectFunctionCall3(timestamptz_in, CStringGetDatum(deadline),
													ObjectIdGetDatum(InvalidOid),
													Int32GetDatum(-1)));
	}
	target = arrived ? step->then_step : step->else_step;
	resetStringInfo(&st->buf);
	if (arrived)
		appendStringInfo(&st->buf, "%s #%s arrived: ", step->await_event,
						 event_id ? event_id : "?");
	else
		appendStringInfo(&st->buf, "no %s within %lld ms: ", step->await_event,
						 (long long) step->wait_ms);
	if (target == 0)
		appendStringInfoString(&st->buf, "finish");
	else
		appendStringInfo(&st->buf, "go to step %d", target);
	log_decision(st, en, step->step_index, arrived ? "event_arrived" : "timed_out",
				 st->buf.data);
	return target;
}

/*
 * Runs one enrollment from its current step as far as it goes at as_of,
 * recording its new state and every decision.
 */
static void
run_enrollment(ExecState *st, ExecEnrollment *en)
{
	/* The steps of its own version: an update moves it only explicitly. */
	ExecVersion *seq = exec_find_version(en->seq, en->version);
	int32		index = en->step;

	for (;;)
	{
		int			pos;
		JourneyStep *step = find_step(seq, index, &pos);
		int32		target;

		st->running_step = index;

		if (step == NULL)
		{
			set_finished(st, en, index,
						 psprintf("finished: step %d does not exist", index));
			return;
		}
		if (step->invalid)
		{
			set_stopped(st, en, index, step->invalid);
			return;
		}

		target = step->next_step;
		switch (step->kind)
		{
			case STEP_WAIT:
				break;
			case STEP_EMAIL:
			case STEP_SMS:
				if (run_send(st, en, step) == SEND_DEFERRED)
					return;
				break;
			case STEP_WAIT_UNTIL:
				target = run_wait_until(st, en, step);
				break;
			case STEP_BRANCH:
				{
					JourneyBranchInput in;
					JsonbValue *customer;
					bool		taken;

					customer = journey_jsonb_get(enrollment_ctx(st, en), "customer");
					in.customer = (customer && customer->type == jbvBinary) ?
						customer->val.binary.data : NULL;
					in.enrollment_id = DatumGetUUIDP(en->id);
					in.step_index = index;
					in.nevents = en->nevents;
					in.events = en->events;
					taken = journey_condition_eval(step->cond, &in);
					target = taken ? step->then_step : step->else_step;
					log_decision(st, en, index, taken ? "branch_then" : "branch_else",
								 target == 0 ?
								 psprintf("%s is %s: finish", step->cond_text,
										  taken ? "true" : "false") :
								 psprintf("%s is %s: go to step %d", step->cond_text,
										  taken ? "true" : "false", target));
					break;
				}
		}

		if (target == STEP_FOLLOWING)
		{
			if (pos + 1 >= seq->nsteps)
			{
				set_finished(st, en, index,
							 psprintf("finished after step %d, the last step", index));
				return;
			}
			target = seq->steps[pos + 1].step_index;
		}
		else if (target == 0)
		{
			set_finished(st, en, index,
						 psprintf("finished: step %d leads to the end", index));
			return;
		}
		else if (target <= index)
		{
			/* Journeys are acyclic; a backward jump could loop forever. */
			set_stopped(st, en, index,
						psprintf("it leads back to step %d; journeys only go forward",
								 target));
			return;
		}

		/* Arrive at target: its delay counts from as_of. */
		step = find_step(seq, target, &pos);
		if (step == NULL)
		{
			set_finished(st, en, target,
						 psprintf("finished: step %d does not exist", target));
			return;
		}
		exec_stats_count(st, en, target, COUNT_REACHED);
		if (step->wait_ms > 0)
		{
			TimestampTz next_run_at;

			/*
			 * A delay past the end of time would fail every call that claims
			 * this enrollment: stop it instead.
			 */
			if (step->wait_ms > (END_TIMESTAMP - st->as_of) / 1000)
			{
				set_stopped(st, en, target,
							psprintf("its wait_ms %lld leaves the range of timestamps",
									 (long long) step->wait_ms));
				return;
			}
			next_run_at = journey_timestamp_add_ms(st->as_of, step->wait_ms);
			set_waiting(st, en, target, next_run_at);
			return;
		}
		index = target;
	}
}

/* ---------- isolation of enrollments ---------- */

/*
 * Errors that say nothing about one enrollment: the call fails with them
 * rather than stopping enrollments that did nothing wrong (a cancel or
 * shutdown, serialization failures and deadlocks, a read-only transaction,
 * lock timeouts, lack of memory or disk, corruption).
 */
static bool
error_is_call_level(int sqlerrcode)
{
	switch (ERRCODE_TO_CATEGORY(sqlerrcode))
	{
		case ERRCODE_INVALID_TRANSACTION_STATE:
		case ERRCODE_TRANSACTION_ROLLBACK:
		case ERRCODE_INSUFFICIENT_RESOURCES:
		case ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE:
		case ERRCODE_OPERATOR_INTERVENTION:
		case ERRCODE_SYSTEM_ERROR:
			return true;
	}
	return sqlerrcode == ERRCODE_DATA_CORRUPTED || sqlerrcode == ERRCODE_INDEX_CORRUPTED;
}

static void
run_one(ExecState *st, ExecEnrollment *en)
{
	CHECK_FOR_INTERRUPTS();
	run_enrollment(st, en);
	en->ctx = NULL;
	MemoryContextReset(st->scratch);
}

static void
clear_batches(ExecState *st)
{
	st->updates.n = 0;
	st->messages.n = 0;
	st->log.n = 0;
	exec_stats_discard(st);
}

/*
 * Runs the enrollments from..to-1 and applies their results in a
 * subtransaction.  Returns NULL when it committed; else rolls it back and
 * returns the error, unless the error is one of the whole call, which it
 * raises.
 */
static ErrorData *
run_guarded(ExecState *st, ExecEnrollment *ens, uint64 from, uint64 to)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	ErrorData  *edata = NULL;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		for (uint64 i = from; i < to; i++)
			run_one(st, &ens[i]);
		st->running_step = 0;
		exec_apply(st);
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		if (error_is_call_level(edata->sqlerrcode))
			PG_RE_THROW();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	CurrentResourceOwner = owner;
	clear_batches(st);
	return edata;
}

/* A copy of a sequence's rate window, to undo what a failed enrollment took. */
static void
rate_save(JourneyRateWindow *saved, const JourneyRateWindow *w)
{
	*saved = *w;
	saved->times = palloc(sizeof(TimestampTz) * Max(w->capacity, 1));
	memcpy(saved->times, w->times, sizeof(TimestampTz) * w->ntimes);
}

/*
 * The slow path, after an error in the batch: each enrollment in its own
 * subtransaction, with its own statements.  One that fails is stopped with
 * stop_reason "error:<SQLSTATE>" and the error's message in the log.
 */
static void
run_isolated(ExecState *st, ExecEnrollment *ens, uint64 n)
{
	int		   *failed = palloc(sizeof(int) * n);
	int32	   *failed_step = palloc(sizeof(int32) * n);
	ErrorData **errors = palloc(sizeof(ErrorData *) * n);
	int			nfailed = 0;

	for (uint64 i = 0; i < n; i++)
	{
		ExecSequence *seq = ens[i].seq;
		JourneyRateWindow saved;
		ErrorData  *edata;

		if (seq->limited)
			rate_save(&saved, &seq->rate);
		edata = run_guarded(st, ens, i, i + 1);
		if (edata == NULL)
		{
			if (seq->limited)
				pfree(saved.times);
			continue;
		}
		if (seq->limited)
			seq->rate = saved;
		failed[nfailed] = (int) i;
		failed_step[nfailed] = st->running_step;
		errors[nfailed++] = edata;
	}
	for (int f = 0; f < nfailed; f++)
	{
		ExecEnrollment *en = &ens[failed[f]];
		int			row = batch_add(&st->updates);
		char	   *message = errors[f]->message ? errors[f]->message : "unknown error";

		/* It stays where it stood: what it did in this call was undone. */
		batch_set(&st->updates, row, UPD_ID, en->id);
		batch_set(&st->updates, row, UPD_STEP, Int32GetDatum(en->step));
		batch_set(&st->updates, row, UPD_STATUS, st->t_stopped);
		batch_set(&st->updates, row, UPD_FINISHED_AT, TimestampTzGetDatum(st->as_of));
		batch_set(&st->updates, row, UPD_STOP_REASON,
					   CStringGetTextDatum(psprintf("error:%s",
													unpack_sql_state(errors[f]->sqlerrcode))));
		message = pnstrdup(message, pg_mbcliplen(message, strlen(message), 1000));
		if (failed_step[f] > 0)
			log_decision(st, en, failed_step[f], "stopped",
						 psprintf("stopped: step %d failed: %s", failed_step[f], message));
		else
			log_decision(st, en, en->step, "stopped",
						 psprintf("stopped: writing its results failed: %s", message));
	}
	exec_apply(st);
}

/*
 * Leaves out the enrollments of sequences another transaction holds (their
 * rate windows could not be read safely): they stay as they are, locked by
 * this call until it ends and due for the next.  Keeps the order; returns
 * how many remain.
 */
static uint64
drop_busy(ExecEnrollment *ens, uint64 n)
{
	uint64		kept = 0;

	for (uint64 i = 0; i < n; i++)
		if (!ens[i].seq->busy)
			ens[kept++] = ens[i];
	if (kept < n)
		journey_executor_left_locked = true;
	return kept;
}

/* ---------- the SQL function ---------- */

Datum
journey_advance_due_enrollments(PG_FUNCTION_ARGS)
{
	int32		batch_size;
	TimestampTz as_of;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be null", PG_ARGISNULL(0) ? "p_batch_size" : "p_as_of"),
				 errhint("Omit the argument to use its default.")));
	batch_size = PG_GETARG_INT32(0);
	as_of = PG_GETARG_TIMESTAMPTZ(1);
	if (batch_size <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("p_batch_size must be positive"),
				 errdetail("p_batch_size was %d.", batch_size),
				 errhint("Pass the most enrollments one call may handle, such as 1000.")));
	if (TIMESTAMP_NOT_FINITE(as_of))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("p_as_of must be a finite timestamp"),
				 errhint("Pass the time the steps run at, such as now().")));

	PG_RETURN_INT32(journey_executor_run(batch_size, as_of, (Datum) 0));
}

int32
journey_executor_run(int32 batch_size, TimestampTz as_of, Datum only_enrollment)
{
	MemoryContext callcxt;
	MemoryContext oldcxt;
	ExecState	st;
	HASHCTL		hctl;
	uint64		nclaimed;
	ExecEnrollment *ens;
	static const Oid update_cols[UPD_NCOLS] = {UUIDOID, INT4OID, TIMESTAMPTZOID, TEXTOID,
	TIMESTAMPTZOID, TEXTOID};
	static const Oid message_cols[MSG_NCOLS] = {UUIDOID, UUIDOID, UUIDOID, INT4OID, UUIDOID,
	TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, INT4OID};
	static const Oid log_cols[LOG_NCOLS] = {UUIDOID, UUIDOID, INT4OID, TEXTOID, TEXTOID, INT4OID};

	callcxt = AllocSetContextCreate(CurrentMemoryContext, "journey executor call",
									ALLOCSET_DEFAULT_SIZES);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	oldcxt = MemoryContextSwitchTo(callcxt);

	memset(&st, 0, sizeof(st));
	journey_executor_left_locked = false;
	st.as_of = as_of;
	st.only_enrollment = only_enrollment;
	hctl.keysize = UUID_LEN;
	hctl.entrysize = sizeof(ExecSequence);
	hctl.hcxt = callcxt;
	st.sequences = hash_create("journey executor sequences", 16, &hctl,
							   HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);

	/* 1. claim */
	nclaimed = exec_claim(&st, batch_size, &ens);
	if (nclaimed == 0)
	{
		MemoryContextSwitchTo(oldcxt);
		SPI_finish();
		MemoryContextDelete(callcxt);
		return 0;
	}

	st.t_active = CStringGetTextDatum("active");
	st.t_finished = CStringGetTextDatum("finished");
	st.t_stopped = CStringGetTextDatum("stopped");
	st.t_email = CStringGetTextDatum("email");
	st.t_sms = CStringGetTextDatum("sms");
	initStringInfo(&st.buf);
	initStringInfo(&st.subject);
	initStringInfo(&st.body);
	st.scratch = AllocSetContextCreate(callcxt, "journey executor enrollment",
									   ALLOCSET_DEFAULT_SIZES);
	batch_init(&st.updates, UPD_NCOLS, update_cols);
	batch_init(&st.messages, MSG_NCOLS, message_cols);
	batch_init(&st.log, LOG_NCOLS, log_cols);

	/* 2, 3: steps, rate windows, events */
	exec_load_sequences(&st);
	exec_load_rate_windows(&st);
	nclaimed = drop_busy(ens, nclaimed);
	if (nclaimed == 0)
	{
		MemoryContextSwitchTo(oldcxt);
		SPI_finish();
		MemoryContextDelete(callcxt);
		return 0;
	}
	exec_load_events(&st, ens, (int) nclaimed);

	/*
	 * 4, 5: the state machine in memory, then three set-based statements,
	 * in one subtransaction.  If anything fails in it, undo it and run each
	 * enrollment in its own, so that only the one at fault stops.
	 */
	if (run_guarded(&st, ens, 0, nclaimed) != NULL)
	{
		exec_load_rate_windows(&st);
		run_isolated(&st, ens, nclaimed);
	}

	/* The sender's executor learns the new next_run_at values at commit. */
	journey_note_enrollment_due();

	MemoryContextSwitchTo(oldcxt);
	SPI_finish();
	MemoryContextDelete(callcxt);
	return (int32) nclaimed;
}

