/*
 * fuzz_shim.c
 *	  Just enough of the backend for fuzzing journey's parsers outside a
 *	  server: palloc and friends over malloc with every chunk freed after
 *	  each input, ereport(ERROR) as a siglongjmp to the target, and
 *	  aborting stubs for what the parsers never reach (rendering's jsonb
 *	  look-ups, the SQL-callable wrappers).
 */
#include "postgres.h"

#include <setjmp.h>
#include <stdlib.h>

#include "mb/pg_wchar.h"
#include "miscadmin.h"

#include "journey.h"
#include "fuzz_shim.h"

sigjmp_buf	fuzz_error_jump;
volatile sig_atomic_t InterruptPending = false;

/* A chunk: its size then the data; all chunks in one list. */
typedef struct Chunk
{
	struct Chunk *next;
	struct Chunk *prev;
	size_t		size;
	max_align_t data[];
} Chunk;

static Chunk *chunks = NULL;

#define MAX_ALLOC ((size_t) 1 << 30)

static Chunk *
chunk_of(void *p)
{
	return (Chunk *) ((char *) p - offsetof(Chunk, data));
}

void *
fuzz_alloc(size_t size)
{
	Chunk	   *c;

	if (size >= MAX_ALLOC)
		abort();				/* the backend would raise; a bug here */
	c = malloc(offsetof(Chunk, data) + size);
	if (c == NULL)
		abort();
	c->size = size;
	c->prev = NULL;
	c->next = chunks;
	if (chunks)
		chunks->prev = c;
	chunks = c;
	return c->data;
}

void
fuzz_free_all(void)
{
	while (chunks)
	{
		Chunk	   *n = chunks->next;

		free(chunks);
		chunks = n;
	}
}

void *
palloc(Size size)
{
	return fuzz_alloc(size);
}

void *
palloc0(Size size)
{
	void	   *p = fuzz_alloc(size);

	memset(p, 0, size);
	return p;
}

void *
palloc_extended(Size size, int flags)
{
	return palloc0(size);
}

void
pfree(void *p)
{
	Chunk	   *c = chunk_of(p);

	if (c->prev)
		c->prev->next = c->next;
	else
		chunks = c->next;
	if (c->next)
		c->next->prev = c->prev;
	free(c);
}

void *
repalloc(void *p, Size size)
{
	Chunk	   *c = chunk_of(p);
	void	   *n = fuzz_alloc(size);

	memcpy(n, p, Min(c->size, size));
	pfree(p);
	return n;
}

char *
pstrdup(const char *s)
{
	return pnstrdup(s, strlen(s));
}

char *
pnstrdup(const char *s, Size len)
{
	char	   *r;

	len = strnlen(s, len);
	r = palloc(len + 1);
	memcpy(r, s, len);
	r[len] = '\0';
	return r;
}

void
ProcessInterrupts(void)
{
}

int
pg_mbstrlen_with_len(const char *mbstr, int limit)
{
	int			len = 0;

	while (limit > 0 && *mbstr)
	{
		int			l = pg_utf_mblen((const unsigned char *) mbstr);

		limit -= l;
		mbstr += l;
		len++;
	}
	return len;
}

/* ---------- ereport: only ERROR is raised by the parsers ---------- */

static int	pending_level;

bool
errstart(int elevel, const char *domain)
{
	pending_level = elevel;
	return elevel >= ERROR;
}

bool
errstart_cold(int elevel, const char *domain)
{
	return errstart(elevel, domain);
}

void
errfinish(const char *filename, int lineno, const char *funcname)
{
	if (pending_level >= ERROR)
		siglongjmp(fuzz_error_jump, 1);
}

int
errcode(int sqlerrcode)
{
	return 0;
}

int
errmsg(const char *fmt,...)
{
	return 0;
}

int
errdetail(const char *fmt,...)
{
	return 0;
}

int
errhint(const char *fmt,...)
{
	return 0;
}

int
errposition(int cursorpos)
{
	return 0;
}

/* util.c's, which needs the server: journey_template_parse raises with it. */
void
journey_error_raise(const JourneyError *err)
{
	ereport(ERROR, (errcode(err->sqlstate), errmsg("%s", err->message)));
}
