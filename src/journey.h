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
#include "utils/numeric.h"
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
extern bool journey_executor_in_worker;
extern int	journey_executor_batch_size;

/* ---------- util.c: small shared helpers ---------- */

/* The journey schema's OID, looked up once per backend. */
extern Oid	journey_schema_oid(void);
extern bool journey_schema_has_versions(void);

/*
 * Text of a top-level key of a jsonb object, or NULL when the key is
 * missing or JSON null.  Non-string scalars are returned as their JSON text.
 */
extern char *journey_jsonb_get_text(Jsonb *obj, const char *key);

/*
 * Appends the text of a jsonb value: a string as it is, a number, boolean or
 * null as JSON writes it, an array or object as JSON.  The one conversion of
 * a value to text (template output, text fields of jsonb arguments).
 */
extern void journey_append_value_text(StringInfo out, JsonbValue *v);

/*
 * An error reported into a struct instead of raised, so a caller can either
 * raise it (create_sequence) or record it and go on (the executor marking a
 * step it cannot run), without a subtransaction.
 */
typedef struct JourneyError
{
	int			sqlstate;
	char	   *message;		/* the full primary message, as raised */
	char	   *reason;			/* the same without where it is, for a log */
	const char *hint;
} JourneyError;

/* Raises the error *err describes. */
extern void journey_error_raise(const JourneyError *err);

/* Looks a key up in a jsonb object container; false when missing. */
extern bool journey_container_get(JsonbContainer *container, const char *key,
								  JsonbValue *result);

/* The jsonb value of a top-level key, or NULL when missing. */
extern JsonbValue *journey_jsonb_get(Jsonb *obj, const char *key);

/*
 * A numeric as a double, never raising: beyond the range of doubles it is
 * +-infinity, below it 0.
 */
extern double journey_numeric_to_double(Numeric n);

/* True when name is a time zone the tz database knows. */
extern bool journey_timezone_is_valid(const char *name);

/* Bounds of sequences.exit_event_types (its CHECK constraint). */
#define JOURNEY_EXIT_EVENT_TYPES_MAX 50
#define JOURNEY_EVENT_TYPE_MAX 200
/*
 * The search_path every journey query runs with.  Every SQL-callable
 * function that runs queries pins it in its declaration (SET search_path);
 * the two entry points that have no declaration pin it in C: the sender
 * worker for its whole life, the DROP EXTENSION hook with
 * journey_pin_search_path.  It is journey's one defence against a schema
 * of the caller's capturing an unqualified name, so queries are written
 * plainly.
 */
#define JOURNEY_SEARCH_PATH "pg_catalog, pg_temp"

/* Pins JOURNEY_SEARCH_PATH until journey_unpin_search_path(the result). */
extern int	journey_pin_search_path(void);
extern void journey_unpin_search_path(int nestlevel);

/* Adds milliseconds to a timestamp, raising 22008 on overflow. */
extern TimestampTz journey_timestamp_add_ms(TimestampTz ts, int64 ms);

/* ---------- outbound.c: what may leave the database ---------- */

/* True when s holds a C0 or C1 control character or DEL. */
extern bool journey_has_control_char(const char *s);

/* Raises 22023 naming field when value holds a control character. */
extern void journey_check_address(const char *field, const char *value);
/* Argument checks of the API functions: each raises with the hint given. */
extern void journey_require_arg(FunctionCallInfo fcinfo, int argno, const char *name,
								const char *hint);
extern void journey_require_finite(TimestampTz ts, const char *name);
extern void journey_require_object(Jsonb *value, const char *name, const char *hint);

/* A uuid Datum as text, for messages. */
extern char *journey_uuid_text(Datum id);

/* Copies a by-reference SPI result out of the SPI memory context into cxt. */
extern Datum journey_spi_get_copy(int row, int col, Oid type, bool *isnull,
								  MemoryContext cxt);

/* A plan prepared once per backend and kept in *plan. */
extern SPIPlanPtr journey_keep_plan(SPIPlanPtr *plan, const char *sql, int nargs, Oid *argtypes);
extern SPIPlanPtr journey_keep_plan_opts(SPIPlanPtr *plan, const char *sql, int nargs,
										 Oid *argtypes, int cursor_options);

/* Plans kept by this backend are made again once a busy table doubled. */
extern void journey_replan_if_grown(void);
/* SPI_execute_with_args with the plan prepared once and kept in *plan. */
extern int	journey_spi_kept(SPIPlanPtr *plan, const char *sql, int nargs, Oid *argtypes,
							 Datum *values, const char *nulls, bool read_only, long count);

/* ---------- template.c: the template engine ---------- */

typedef struct JourneyTemplate JourneyTemplate;

/* Longest rendered text (bytes); rendering past it raises 54000. */
#define JOURNEY_RENDER_MAX (1024 * 1024)

/*
 * Parses a template once so it can be rendered many times.  A malformed
 * template returns NULL with *err a 22023 naming the 1-based character
 * position; "where", when not NULL, says which template it was (e.g.
 * "step 2 field \"message.body\"").
 */
extern JourneyTemplate *journey_template_compile(const char *source, const char *where,
												 JourneyError *err);

/* journey_template_compile, raising the error. */
extern JourneyTemplate *journey_template_parse(const char *source, const char *where);

/*
 * False, with *err a 22023, when a tag's path is not one the executor
 * provides: customer.<field or attribute>, business.<field>, review_link,
 * enrollment.meta.<key> or event.<key>.
 */
extern bool journey_template_paths_ok(const JourneyTemplate *tmpl, const char *where,
									  JourneyError *err);

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
} JourneyUserSwitch;

/* The role owning the journey tables. */
extern Oid	journey_tables_owner(void);

/*
 * Runs what follows as the tables' owner (row-level security does not bind
 * it) until journey_restore_user; an error in between restores the caller through
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
/* Raises 23503 unless the business exists; call inside SPI or not. */
extern void journey_require_business_exists(Datum business_id);

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

/* definition.c (the definition grammar) and branch.c: see definition.h */

/* ---------- shmem.c, launcher.c, worker.c: the sender (more in sender.h) ---------- */

/*
 * shmem.c: notes that this transaction queued messages; the sender's latch
 * is set when (and only if) the transaction commits.
 */
extern void journey_sender_wake_at_commit(void);
/*
 * worker_executor.c: notes that this transaction made enrollments due, or
 * moved when they are due (an enrollment, an event a wait_until step
 * waits for, a journey update that moves enrollments).  When (and only
 * if) it commits, the sender of this database runs the executor.
 */
extern void journey_note_enrollment_due(void);
/*
 * executor.c: whether the last executor call in this backend left due
 * enrollments of a sequence another transaction held (the sender's
 * executor tries again shortly rather than at the next poll).
 */
extern bool journey_executor_left_locked;
/*
 * The sender's claim on what its own executor pass enqueues (worker.c sets
 * it around the pass, worker_executor.c): the pass's due messages go in
 * already 'sending', claimed for that sender, as far as its lanes have
 * room, so they need no claim of their own before they leave.  NULL in
 * every other caller of the executor (pg_cron, a session).
 */
typedef struct JourneyPreclaim
{
	Datum		token;			/* text: claimed_by */
	int32		lease_ms;
	Datum		room_providers; /* text[] of provider ids with a lane */
	Datum		rooms;			/* int[]: how many more each may take */
	int32		default_room;	/* any other provider's */
	int32		total_room;		/* the most the pass may claim */
	int64	   *ids;			/* what it claimed (a rolled back subtransaction's too);
								 * set by the one statement of a pass that claims */
	int			n_ids;
	bool		left_queued;	/* the pass queued messages it did not claim */
	MemoryContext cxt;			/* where ids live */
} JourneyPreclaim;
extern JourneyPreclaim *journey_preclaim;
/* launcher.c: shared memory, the launcher worker, the DROP DATABASE hook. */
extern void journey_sender_register(void);
/* worker.c: the sender's main loop. */
extern PGDLLEXPORT void journey_sender_main(Datum main_arg);

/* ---------- backup.c: logical backups ---------- */

/* Whether this session is loading a dump (its rows replay nothing). */
extern bool journey_loading_dump(void);

#endif							/* JOURNEY_H */
