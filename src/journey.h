/*-------------------------------------------------------------------------
 *
 * journey.h
 *	  Declarations shared by the modules of the journey extension.
 *
 * Each section names the file that implements it.  Keep a module's private
 * helpers static in its own file; only what another module calls belongs
 * here.
 *
 *-------------------------------------------------------------------------
 */
#ifndef JOURNEY_H
#define JOURNEY_H

#include "postgres.h"

#include "fmgr.h"
#include "lib/stringinfo.h"
#include "nodes/pg_list.h"
#include "utils/date.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"
#include "executor/spi.h"
#include "utils/uuid.h"

/* ---------- journey.c: settings (all journey.* GUCs) ---------- */

extern char *journey_database_name;
extern char *journey_worker_role;
extern char *journey_trusted_claim_roles;
extern int	journey_max_concurrency;
extern int	journey_max_concurrency_per_provider;
extern int	journey_http_timeout_ms;
extern int	journey_max_attempts;
extern int	journey_batch_size;
extern int	journey_retry_base_ms;
extern int	journey_retry_max_ms;
extern int	journey_lease_ms;
extern int	journey_poll_interval_ms;

/* ---------- util.c: small shared helpers ---------- */

/* The journey schema's OID, looked up once per backend. */
extern Oid	journey_schema_oid(void);

/*
 * Text of a top-level key of a jsonb object, or NULL when the key is
 * missing or JSON null.  Non-string scalars are returned as their JSON text.
 */
extern char *journey_jsonb_get_text(Jsonb *obj, const char *key);

/* Looks a key up in a jsonb object container; false when missing. */
extern bool journey_container_get(JsonbContainer *container, const char *key,
								  JsonbValue *result);

/* The jsonb value of a top-level key, or NULL when missing. */
extern JsonbValue *journey_jsonb_get(Jsonb *obj, const char *key);

/* True when name is a time zone the tz database knows. */
extern bool journey_timezone_is_valid(const char *name);

/* Bounds of sequences.exit_event_types (its CHECK constraint). */
#define JOURNEY_EXIT_EVENT_TYPES_MAX 50
#define JOURNEY_EVENT_TYPE_MAX 200

/* Adds milliseconds to a timestamp, raising 22008 on overflow. */
extern TimestampTz journey_timestamp_add_ms(TimestampTz ts, int64 ms);

/* ---------- outbound.c: what may leave the database ---------- */

/* True when s holds a C0 or C1 control character or DEL. */
extern bool journey_has_control_char(const char *s);

/* Raises 22023 naming field when value holds a control character. */
extern void journey_check_address(const char *field, const char *value);

/* ---------- template.c: the template engine ---------- */

typedef struct JourneyTemplate JourneyTemplate;

/* Longest rendered text (bytes); rendering past it raises 54000. */
#define JOURNEY_RENDER_MAX (1024 * 1024)

/*
 * Parses a template once so it can be rendered many times.  A malformed
 * template raises 22023 naming the 1-based character position; "where",
 * when not NULL, says which template it was (e.g. "step 2 message.body").
 */
extern JourneyTemplate *journey_template_parse(const char *source, const char *where);

/*
 * Raises 22023 when a tag's path is not one the executor provides:
 * customer.<field or attribute>, business.<field>, review_link,
 * enrollment.meta.<key> or event.<key>.
 */
extern void journey_template_check_paths(const JourneyTemplate *tmpl, const char *where);

/*
 * Renders a parsed template against a jsonb context shaped as
 * render_template documents, appending to out.  Returns false, with
 * *missing_path set, when a value with no default is missing.
 */
extern bool journey_template_render(const JourneyTemplate *tmpl, Jsonb *context,
									StringInfo out, const char **missing_path);

/* ---------- tenant.c: membership and privilege checks ---------- */

typedef struct JourneyUserSwitch
{
	Oid			userid;
	int			sec_context;
	int			guc_nestlevel;	/* search_path is pinned while the owner acts */
} JourneyUserSwitch;

/* The role owning the journey tables. */
extern Oid	journey_tables_owner(void);

/*
 * Runs what follows as the tables' owner (row-level security does not bind
 * it), with search_path pinned to "pg_catalog, pg_temp", until
 * journey_restore_user; an error in between restores the caller through
 * (sub)transaction abort.  Check membership before switching, and restore
 * in the reverse order of switching.
 */
extern void journey_become_owner(JourneyUserSwitch *saved);
extern void journey_restore_user(JourneyUserSwitch *saved);

/* True for superusers, BYPASSRLS roles and members of the tables' owner. */
extern bool journey_caller_bypasses_rls(void);

/* The journey member acting now (see tenant.c), or NULL for none. */
extern char *journey_member_name(void);

/*
 * Raises 42501 unless the caller may act for business_id: a member of it,
 * or a role that bypasses row-level security.  Writes nothing.
 */
extern void journey_require_member(Datum business_id);

/*
 * For an object (kind, id) found in business_id: unless the caller may
 * see that business, answers exactly as a missing object does (22023
 * "<kind> <id> does not exist" with hint), so that an id tells nobody
 * whether another tenant has it.  journey_raise_missing is that answer.
 */
extern void journey_require_visible(Datum business_id, const char *kind, Datum id,
									const char *hint);
extern void journey_raise_missing(const char *kind, Datum id, const char *hint) pg_attribute_noreturn();

/* ---------- enroll.c: enrollment shared with the trigger and executor ---------- */

/*
 * Aggregates the RETURNING rows (id, business_id, current_step_index,
 * stop_reason, finished_at) of an UPDATE that stopped enrollments, in a CTE
 * named "stopped", into one row of five arrays for
 * journey_cancel_and_log_stops.
 */
#define JOURNEY_STOPPED_ARRAYS_SELECT \
	"SELECT pg_catalog.array_agg(id), pg_catalog.array_agg(business_id)," \
	" pg_catalog.array_agg(current_step_index), pg_catalog.array_agg(stop_reason)," \
	" pg_catalog.array_agg(finished_at) FROM stopped"

/*
 * Given the one-row result of JOURNEY_STOPPED_ARRAYS_SELECT, cancels the
 * stopped enrollments' queued messages and logs each stop.  Must run in a
 * statement after the stopping one; the caller is connected to SPI.
 */
extern void journey_cancel_and_log_stops(SPITupleTable *stopped);

/* A plan prepared once per backend and kept in *plan. */
extern SPIPlanPtr journey_keep_plan(SPIPlanPtr *plan, const char *sql, int nargs, Oid *argtypes);

/* SPI_execute_with_args with the plan prepared once and kept in *plan. */
extern int	journey_spi_kept(SPIPlanPtr *plan, const char *sql, int nargs, Oid *argtypes,
							 Datum *values, const char *nulls, bool read_only, long count);

/* Raises 23503 unless the business exists; call inside SPI or not. */
extern void journey_require_business_exists(Datum business_id);

/* Appends a row to journey.enrollment_log; the caller is connected to SPI. */
extern void journey_log_decision(Datum business_id, Datum enrollment_id,
								 int step_index, bool step_is_null,
								 const char *outcome, const char *detail,
								 TimestampTz at);

/* ---------- cron.c: pg_cron scheduling ---------- */

/* Installs the hook that removes the executor job when journey is dropped. */
extern void journey_cron_init(void);

/* ---------- timewindow.c: quiet hours and rate limits (executor) ---------- */

/*
 * When t falls inside the daily quiet window [start, end) of local time in
 * tz (crossing midnight when start > end; none when equal), returns true
 * with *window_end the instant the window ends.
 */
extern bool journey_quiet_hours_end(TimestampTz t, struct pg_tz *tz,
									TimeADT start, TimeADT end,
									TimestampTz *window_end);

/* Appends t as local "YYYY-MM-DD HH:MM[:SS]" in tz. */
extern void journey_format_local(StringInfo out, TimestampTz t, struct pg_tz *tz);

/* Appends a time of day as "HH:MM[:SS]". */
extern void journey_format_time(StringInfo out, TimeADT t);

/* The send times of one sequence that its rolling limits count. */
typedef struct JourneyRateWindow
{
	int32		per_hour;		/* 0: unlimited */
	int32		per_day;		/* 0: unlimited */
	int			ntimes;
	int			capacity;
	TimestampTz *times;			/* sorted ascending */
} JourneyRateWindow;

extern void journey_rate_init(JourneyRateWindow *w, int32 per_hour, int32 per_day);
extern void journey_rate_add(JourneyRateWindow *w, TimestampTz t);

/* Which windows were full on the way to a deferral, and how full. */
typedef struct JourneyRateHit
{
	bool		hour;
	bool		day;
	int			hour_count;		/* sends in the hour window when first full */
	int			day_count;
} JourneyRateHit;

/*
 * When a send at t would exceed a limit, returns true with *run_at the
 * first later moment both windows have a free slot and *hit saying which
 * limits moved it there.
 */
extern bool journey_rate_defer(const JourneyRateWindow *w, TimestampTz t,
							   TimestampTz *run_at, JourneyRateHit *hit);

/* ---------- branch.c: branch conditions (executor) ---------- */

typedef struct JourneyCondition JourneyCondition;

typedef struct JourneyBranchTargets
{
	int32		then_step;		/* 0: finish */
	int32		else_step;
} JourneyBranchTargets;

/* What a condition is evaluated against for one enrollment. */
typedef struct JourneyBranchInput
{
	JsonbContainer *customer;	/* the context's "customer" object */
	const pg_uuid_t *enrollment_id;
	int32		step_index;
	int			nevents;
	char	  **events;			/* event types seen since enrollment */
} JourneyBranchInput;

/*
 * Parses {"if": COND, "then": N, "else": N}.  Returns NULL with *error set
 * when it is malformed; may raise for numbers out of range.
 */
extern JourneyCondition *journey_condition_parse(Jsonb *branch_config,
												 JourneyBranchTargets *targets,
												 const char **error);

/* Adds the event types the condition tests (char *) to *types, once each. */
extern void journey_condition_event_types(const JourneyCondition *cond, List **types);

extern bool journey_condition_eval(const JourneyCondition *cond,
								   const JourneyBranchInput *in);

/* ---------- worker.c, launcher.c: the sender (more in sender.h) ---------- */

/*
 * Notes that this transaction queued messages; the sender's latch is set
 * when (and only if) the transaction commits.
 */
extern void journey_sender_wake_at_commit(void);
/* launcher.c: shared memory, the launcher worker, the DROP DATABASE hook. */
extern void journey_sender_register(void);
extern PGDLLEXPORT void journey_sender_main(Datum main_arg);

#endif							/* JOURNEY_H */
