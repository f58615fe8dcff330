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
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_class.h"
#include "executor/spi.h"
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

PG_FUNCTION_INFO_V1(journey_current_member);
PG_FUNCTION_INFO_V1(journey_member_business_ids);

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
	GetUserIdAndSecContext(&saved->userid, &saved->sec_context);
	SetUserIdAndSecContext(journey_tables_owner(),
						   saved->sec_context |
						   SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
}

void
journey_restore_user(JourneyUserSwitch *saved)
{
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
			if (SPI_execute_with_args("SELECT business_id FROM journey.business_members "
									  "WHERE member OPERATOR(pg_catalog.=) $1",
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

void
journey_require_member(Datum business_id)
{
	char	   *member;
	bool		is_member = false;

	if (journey_caller_bypasses_rls())
		return;

	member = journey_member_name();
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
		if (SPI_execute_with_args("SELECT 1 FROM journey.business_members "
								  "WHERE business_id OPERATOR(pg_catalog.=) $1 "
								  "AND member OPERATOR(pg_catalog.=) $2",
								  2, argtypes, values, NULL, true, 1) != SPI_OK_SELECT)
			elog(ERROR, "membership look-up failed");
		is_member = SPI_processed > 0;
		SPI_finish();
		journey_restore_user(&saved);
	}

	if (!is_member)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for business %s",
						DatumGetCString(DirectFunctionCall1(uuid_out, business_id))),
				 member == NULL ?
				 errdetail("The connection carries no journey member (no \"sub\" claim in request.jwt.claims).") :
				 errdetail("\"%s\" is not a member of that business.", member),
				 errhint("An administrator adds members with INSERT INTO journey.business_members.")));
}
