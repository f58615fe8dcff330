/*-------------------------------------------------------------------------
 *
 * tenant.c
 *	  Tenancy: who the caller is, which businesses it belongs to, and the
 *	  check every API function makes before touching a business's rows.
 *
 * The member is the "sub" claim of request.jwt.claims on connections whose
 * session_user is listed in journey.trusted_claim_roles (PostgREST and
 * Supabase log in as such a role and then SET ROLE), and current_user
 * everywhere else, so a client with its own SQL login cannot forge claims.
 *
 * API functions are SECURITY INVOKER: they resolve the member as the
 * caller, check the membership, and only then switch to the owner of the
 * journey tables for their own reads and writes, so a tenant needs no table
 * privileges to use them and row-level security cannot hide another
 * tenant's object from the check (which must answer 42501, not "not found").
 * search_path is pinned by each function's declaration, not here.
 *
 * create_business is how a tenant signs up: the one way a member gains a
 * membership by itself.  Privileges and row-level policies are declared in
 * the install script's "Tenancy and security" section.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <ctype.h>

#include "access/htup_details.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_class.h"
#include "executor/spi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"
#include "utils/uuid.h"
#include "utils/varlena.h"

#include "journey.h"

/* Membership look-ups, planned once per backend (journey_spi_kept). */
static SPIPlanPtr plan_member_businesses = NULL;
static SPIPlanPtr plan_is_member = NULL;
static SPIPlanPtr plan_business_exists = NULL;

PG_FUNCTION_INFO_V1(journey_current_member);
PG_FUNCTION_INFO_V1(journey_member_business_ids);
PG_FUNCTION_INFO_V1(journey_create_business);

/* Longest business name create_business accepts, in characters. */
#define JOURNEY_BUSINESS_NAME_MAX 200

/* The role owning the journey tables; row-level security does not bind it. */
Oid
journey_tables_owner(void)
{
	Oid			relid = get_relname_relid("business_members", journey_schema_oid());
	HeapTuple	tuple;
	Oid			owner;

	if (!OidIsValid(relid))
		elog(ERROR, "journey.business_members does not exist");
	tuple = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	if (!HeapTupleIsValid(tuple))
		elog(ERROR, "cache lookup failed for relation %u", relid);
	owner = ((Form_pg_class) GETSTRUCT(tuple))->relowner;
	ReleaseSysCache(tuple);
	return owner;
}

void
journey_become_owner(JourneyUserSwitch *saved)
{
	Oid			owner = journey_tables_owner();

	GetUserIdAndSecContext(&saved->userid, &saved->sec_context);
	SetUserIdAndSecContext(owner,
						   saved->sec_context |
						   SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
}

void
journey_restore_user(JourneyUserSwitch *saved)
{
	/* An error in between is undone by (sub)transaction abort instead. */
	SetUserIdAndSecContext(saved->userid, saved->sec_context);
}

/* True when the current user is not bound by the tables' policies. */
bool
journey_caller_bypasses_rls(void)
{
	Oid			user = GetUserId();

	return superuser_arg(user) ||
		has_bypassrls_privilege(user) ||
		has_privs_of_role(user, journey_tables_owner());
}

static bool
session_user_is_trusted(void)
{
	char	   *session_name = GetUserNameFromId(GetSessionUserId(), true);
	char	   *list;
	List	   *names;
	ListCell   *lc;
	bool		trusted = false;

	if (session_name == NULL || journey_trusted_claim_roles == NULL)
		return false;
	list = pstrdup(journey_trusted_claim_roles);
	if (!SplitIdentifierString(list, ',', &names))
		return false;
	foreach(lc, names)
	{
		if (strcmp((char *) lfirst(lc), session_name) == 0)
		{
			trusted = true;
			break;
		}
	}
	return trusted;
}

/*
 * The member acting now, or NULL when a trusted connection carries no "sub"
 * claim (PostgREST's anonymous role: it belongs to no business).
 */
char *
journey_member_name(void)
{
	const char *claims;

	if (!session_user_is_trusted())
		return GetUserNameFromId(GetUserId(), false);

	claims = GetConfigOption("request.jwt.claims", true, false);
	if (claims != NULL && claims[0] != '\0')
	{
		Jsonb	   *parsed;
		char	   *sub;

		parsed = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(claims)));
		sub = journey_jsonb_get_text(parsed, "sub");
		return (sub != NULL && sub[0] != '\0') ? sub : NULL;
	}
	/* PostgREST before 9.0 set one setting per claim. */
	claims = GetConfigOption("request.jwt.claim.sub", true, false);
	if (claims != NULL && claims[0] != '\0')
		return pstrdup(claims);
	return NULL;
}

Datum
journey_current_member(PG_FUNCTION_ARGS)
{
	char	   *member = journey_member_name();

	if (member == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(member));
}

/*
 * The businesses the member belongs to.  Row-level policies compare
 * business_id against this array; it is computed once per query and kept
 * in fn_extra, so a policy costs one look-up per statement, not per row.
 */
Datum
journey_member_business_ids(PG_FUNCTION_ARGS)
{
	ArrayType  *result = (ArrayType *) fcinfo->flinfo->fn_extra;

	if (result == NULL)
	{
		char	   *member = journey_member_name();
		JourneyUserSwitch saved;
		Datum	   *ids = NULL;
		int			nids = 0;
		MemoryContext caller_cxt = CurrentMemoryContext;

		if (member != NULL)
		{
			Oid			argtypes[1] = {TEXTOID};
			Datum		values[1];

			values[0] = CStringGetTextDatum(member);
			journey_become_owner(&saved);
			if (SPI_connect() != SPI_OK_CONNECT)
				elog(ERROR, "SPI_connect failed");
			if (journey_spi_kept(&plan_member_businesses, "SELECT business_id FROM journey.business_members "
									  "WHERE member = $1",
									  1, argtypes, values, NULL, true, 0) != SPI_OK_SELECT)
				elog(ERROR, "membership look-up failed");
			nids = SPI_processed;
			if (nids > 0)
			{
				MemoryContext spi_cxt = MemoryContextSwitchTo(caller_cxt);

				ids = palloc(sizeof(Datum) * nids);
				for (int i = 0; i < nids; i++)
				{
					bool		isnull;
					Datum		id = SPI_getbinval(SPI_tuptable->vals[i],
												   SPI_tuptable->tupdesc, 1, &isnull);
					pg_uuid_t  *copy = palloc(sizeof(pg_uuid_t));

					memcpy(copy, DatumGetUUIDP(id), sizeof(pg_uuid_t));
					ids[i] = UUIDPGetDatum(copy);
				}
				MemoryContextSwitchTo(spi_cxt);
			}
			SPI_finish();
			journey_restore_user(&saved);
		}
		{
			MemoryContext old = MemoryContextSwitchTo(fcinfo->flinfo->fn_mcxt);

			result = construct_array(ids, nids, UUIDOID, UUID_LEN, false, TYPALIGN_CHAR);
			MemoryContextSwitchTo(old);
		}
		fcinfo->flinfo->fn_extra = result;
	}
	PG_RETURN_ARRAYTYPE_P(result);
}

/* Whether the caller may see the business's objects (RLS bypassed, or a member). */
static bool
caller_is_member(Datum business_id, char **member_out)
{
	char	   *member;
	bool		is_member = false;

	*member_out = NULL;
	if (journey_caller_bypasses_rls())
		return true;

	member = journey_member_name();
	*member_out = member;
	if (member != NULL)
	{
		Oid			argtypes[2] = {UUIDOID, TEXTOID};
		Datum		values[2];
		JourneyUserSwitch saved;

		values[0] = business_id;
		values[1] = CStringGetTextDatum(member);
		journey_become_owner(&saved);
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		if (journey_spi_kept(&plan_is_member, "SELECT 1 FROM journey.business_members "
								  "WHERE business_id = $1 "
								  "AND member = $2",
								  2, argtypes, values, NULL, true, 1) != SPI_OK_SELECT)
			elog(ERROR, "membership look-up failed");
		is_member = SPI_processed > 0;
		SPI_finish();
		journey_restore_user(&saved);
	}
	return is_member;
}

void
journey_require_member(Datum business_id)
{
	char	   *member;

	if (!caller_is_member(business_id, &member))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for business %s",
						DatumGetCString(DirectFunctionCall1(uuid_out, business_id))),
				 member == NULL ?
				 errdetail("The connection carries no journey member (no \"sub\" claim in request.jwt.claims).") :
				 errdetail("\"%s\" is not a member of that business.", member),
				 errhint("An administrator adds members with INSERT INTO journey.business_members.")));
}

void
journey_raise_missing(const char *kind, Datum id, const char *hint)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("%s %s does not exist", kind,
					DatumGetCString(DirectFunctionCall1(uuid_out, id))),
			 errhint("%s", hint)));
}

void
journey_require_visible(Datum business_id, const char *kind, Datum id, const char *hint)
{
	char	   *member;

	if (!caller_is_member(business_id, &member))
		journey_raise_missing(kind, id, hint);
}

void
journey_require_business_exists(Datum business_id)
{
	Oid			types[1] = {UUIDOID};
	Datum		values[1] = {business_id};
	bool		exists;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (journey_spi_kept(&plan_business_exists, "SELECT 1 FROM journey.businesses WHERE id = $1",
							  1, types, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "business look-up failed");
	exists = SPI_processed > 0;
	SPI_finish();
	if (!exists)
		ereport(ERROR,
				(errcode(ERRCODE_FOREIGN_KEY_VIOLATION),
				 errmsg("business %s does not exist", journey_uuid_text(business_id)),
				 errhint("Create it with journey.create_business, or pass the id it returned.")));
}

/*
 * journey.create_business(p_name, p_timezone, p_google_review_url): how a
 * tenant signs up.  The caller needs no privilege on the tables: the member
 * is resolved as the caller, and only then are the business and its one
 * membership written as the owner, in the caller's transaction.  This is
 * the only way a tenant gains a membership by itself; every other
 * membership is an administrator's INSERT.
 */
Datum
journey_create_business(PG_FUNCTION_ARGS)
{
	char	   *name;
	char	   *timezone;
	char	   *review_url = NULL;
	char	   *member;
	const char *p;
	Oid			argtypes[4] = {TEXTOID, TEXTOID, TEXTOID, TEXTOID};
	Datum		values[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};
	Oid			member_argtypes[2] = {UUIDOID, TEXTOID};
	Datum		member_values[2];
	JourneyUserSwitch saved;
	pg_uuid_t  *id;
	bool		isnull;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("business name must not be null"),
				 errhint("Pass the name the business's customers know it by.")));
	name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	for (p = name; *p != '\0' && isspace((unsigned char) *p); p++)
		;
	if (*p == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("business name must not be empty"),
				 errhint("Pass the name the business's customers know it by.")));
	if (pg_mbstrlen(name) > JOURNEY_BUSINESS_NAME_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("business name is too long"),
				 errdetail("The name has %d characters; at most %d are allowed.",
						   pg_mbstrlen(name), JOURNEY_BUSINESS_NAME_MAX)));

	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("time zone must not be null"),
				 errhint("Omit p_timezone for 'UTC', or pass an IANA time zone name such as 'America/New_York'.")));
	timezone = text_to_cstring(PG_GETARG_TEXT_PP(1));
	if (!journey_timezone_is_valid(timezone))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown time zone \"%s\"", timezone),
				 errhint("Use an IANA time zone name such as 'America/New_York' or 'UTC'; "
						 "SELECT name FROM pg_timezone_names lists them.")));

	if (!PG_ARGISNULL(2))
	{
		review_url = text_to_cstring(PG_GETARG_TEXT_PP(2));
		if ((strncmp(review_url, "https://", 8) != 0 &&
			 strncmp(review_url, "http://", 7) != 0) ||
			strpbrk(review_url, " \t\r\n") != NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("google_review_url must be an http or https URL"),
					 errdetail("The value given was \"%s\".", review_url),
					 errhint("Use the review link Google Business Profile gives, such as https://g.page/r/<id>/review, or NULL.")));
	}

	member = journey_member_name();
	if (member == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to create a business"),
				 errdetail("The connection carries no journey member (no \"sub\" claim in request.jwt.claims)."),
				 errhint("Sign in first: PostgREST and Supabase set request.jwt.claims from the user's token.")));

	values[0] = CStringGetTextDatum(name);
	values[1] = CStringGetTextDatum(timezone);
	if (review_url != NULL)
		values[2] = CStringGetTextDatum(review_url);
	else
		nulls[2] = 'n';
	values[3] = CStringGetTextDatum(member);

	journey_become_owner(&saved);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute_with_args("INSERT INTO journey.businesses "
							  "(name, timezone, google_review_url, created_by) "
							  "VALUES ($1, $2, $3, $4) RETURNING id",
							  4, argtypes, values, nulls, false, 0) != SPI_OK_INSERT_RETURNING ||
		SPI_processed != 1)
		elog(ERROR, "inserting the business failed");
	/* Copied into the caller's context: it outlives SPI_finish. */
	id = (pg_uuid_t *) SPI_palloc(sizeof(pg_uuid_t));
	memcpy(id, DatumGetUUIDP(SPI_getbinval(SPI_tuptable->vals[0],
										   SPI_tuptable->tupdesc, 1, &isnull)),
		   sizeof(pg_uuid_t));
	member_values[0] = UUIDPGetDatum(id);
	member_values[1] = values[3];
	if (SPI_execute_with_args("INSERT INTO journey.business_members (business_id, member) "
							  "VALUES ($1, $2)",
							  2, member_argtypes, member_values, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "inserting the membership failed");
	SPI_finish();
	journey_restore_user(&saved);

	PG_RETURN_UUID_P(id);
}
