/*-------------------------------------------------------------------------
 *
 * tenant.c
 *	  Tenancy: who the caller is, which businesses it belongs to, and the
 *	  check every API function makes before touching a business's rows.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"

#include "journey.h"

/*
 * TEMPORARY (replaced by the tenancy work): only roles that bypass RLS pass.
 */
void
journey_require_member(Datum business_id)
{
	if (superuser())
		return;
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("permission denied for business")));
}
