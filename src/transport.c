/*-------------------------------------------------------------------------
 *
 * transport.c
 *	  Transport: libcurl's multi interface, driven from the sender's loop.
 *
 * libcurl tells us which sockets to watch (CURLMOPT_SOCKETFUNCTION) and
 * when to call it back (CURLMOPT_TIMERFUNCTION).  The sockets go into an
 * epoll set of our own whose single descriptor the sender adds to its
 * WaitEventSet beside its latch, so one wait covers a wake-up, postmaster
 * death, any response and libcurl's timers.  The multi handle keeps
 * connections alive between requests and never opens more than
 * journey.max_concurrency of them, so the sender cannot run out of
 * descriptors however long the queue.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sys/epoll.h>
#include <unistd.h>

#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "journey.h"
#include "sender.h"

/* Most of a response body we keep: enough for an id or an error. */
#define MAX_RESPONSE_BYTES 8192

static CURLM *multi = NULL;
static int	epoll_fd = -1;
static int	in_flight = 0;
static TimestampTz timer_deadline = 0;	/* 0: no timer */

/* Idle easy handles, reset and reused (their buffers survive). */
static CURL **idle_handles = NULL;
static int	n_idle = 0;
static int	max_idle = 0;

static int
socket_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
	struct epoll_event ev;

	if (what == CURL_POLL_REMOVE)
	{
		/* The socket may be closed already, which removed it; ignore. */
		(void) epoll_ctl(epoll_fd, EPOLL_CTL_DEL, s, NULL);
		return 0;
	}
	memset(&ev, 0, sizeof(ev));
	ev.events = ((what & CURL_POLL_IN) ? EPOLLIN : 0) |
		((what & CURL_POLL_OUT) ? EPOLLOUT : 0);
	ev.data.fd = s;
	if (epoll_ctl(epoll_fd, EPOLL_CTL_MOD, s, &ev) < 0 &&
		(errno != ENOENT || epoll_ctl(epoll_fd, EPOLL_CTL_ADD, s, &ev) < 0))
		return -1;
	return 0;
}

static int
timer_cb(CURLM *m, long timeout_ms, void *userp)
{
	if (timeout_ms < 0)
		timer_deadline = 0;
	else
		timer_deadline = GetCurrentTimestamp() + (TimestampTz) timeout_ms * 1000;
	return 0;
}

void
journey_transport_init(void)
{
	if (curl_global_init(CURL_GLOBAL_ALL) != CURLE_OK)
		ereport(ERROR,
				(errcode(ERRCODE_SYSTEM_ERROR),
				 errmsg("could not initialize libcurl")));
	epoll_fd = epoll_create1(EPOLL_CLOEXEC);
	if (epoll_fd < 0)
		ereport(ERROR,
				(errcode_for_socket_access(),
				 errmsg("could not create epoll descriptor: %m")));
	multi = curl_multi_init();
	if (multi == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("could not create a libcurl multi handle")));
	curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
	curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, timer_cb);
	journey_transport_configure();
}

/* Applies settings that may change at reload. */
void
journey_transport_configure(void)
{
	curl_multi_setopt(multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long) journey_max_concurrency);
	curl_multi_setopt(multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long) journey_max_concurrency);
	curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, (long) journey_max_concurrency);
	if (max_idle < journey_max_concurrency)
	{
		idle_handles = idle_handles == NULL
			? MemoryContextAlloc(TopMemoryContext, sizeof(CURL *) * journey_max_concurrency)
			: repalloc(idle_handles, sizeof(CURL *) * journey_max_concurrency);
		max_idle = journey_max_concurrency;
	}
}

int
journey_transport_fd(void)
{
	return epoll_fd;
}

int
journey_transport_in_flight(void)
{
	return in_flight;
}

static size_t
write_cb(char *data, size_t size, size_t nmemb, void *userp)
{
	JourneyRequest *req = userp;
	size_t		n = size * nmemb;
	size_t		keep = Min(n, (size_t) Max(0, MAX_RESPONSE_BYTES - req->response.len));

	if (keep > 0)
	{
		MemoryContext old = MemoryContextSwitchTo(req->cxt);

		appendBinaryStringInfo(&req->response, data, keep);
		MemoryContextSwitchTo(old);
	}
	return n;
}

/* Picks Retry-After (delta-seconds or an HTTP date) out of the headers. */
static size_t
header_cb(char *data, size_t size, size_t nmemb, void *userp)
{
	JourneyRequest *req = userp;
	size_t		n = size * nmemb;
	char		line[256];
	size_t		len = Min(n, sizeof(line) - 1);

	memcpy(line, data, len);
	line[len] = '\0';
	if (pg_strncasecmp(line, "HTTP/", 5) == 0)
		req->retry_after_ms = -1;	/* a new response (after 1xx) */
	else if (pg_strncasecmp(line, "Retry-After:", 12) == 0)
	{
		char	   *v = line + 12;
		char	   *end;
		long		secs;

		while (*v == ' ' || *v == '\t')
			v++;
		secs = strtol(v, &end, 10);
		if (end != v && secs >= 0)
			req->retry_after_ms = (int64) Min(secs, 86400L) * 1000;
		else
		{
			time_t		t = curl_getdate(v, NULL);

			if (t > 0)
				req->retry_after_ms = Max(0, Min((int64) (t - time(NULL)), 86400)) * 1000;
		}
	}
	return n;
}

static size_t
read_cb(char *buffer, size_t size, size_t nitems, void *userp)
{
	JourneyRequest *req = userp;
	size_t		n = Min(size * nitems, req->payload_len - req->payload_sent);

	memcpy(buffer, req->payload + req->payload_sent, n);
	req->payload_sent += n;
	return n;
}

/* Starts a request; its result comes back from journey_transport_next_done. */
void
journey_transport_start(JourneyRequest *req)
{
	CURL	   *e;

	if (n_idle > 0)
	{
		e = idle_handles[--n_idle];
		curl_easy_reset(e);
	}
	else if ((e = curl_easy_init()) == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("could not create a libcurl handle")));
	req->easy = e;

	curl_easy_setopt(e, CURLOPT_PRIVATE, req);
	curl_easy_setopt(e, CURLOPT_URL, req->url);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long) journey_http_timeout_ms);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https,smtp,smtps");
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, req->errbuf);
	curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, req);
	if (req->username)
	{
		curl_easy_setopt(e, CURLOPT_USERNAME, req->username);
		curl_easy_setopt(e, CURLOPT_PASSWORD, req->password);
	}

	if (req->is_smtp)
	{
		curl_easy_setopt(e, CURLOPT_MAIL_FROM, req->mail_from);
		curl_easy_setopt(e, CURLOPT_MAIL_RCPT, req->rcpt);
		curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
		curl_easy_setopt(e, CURLOPT_READFUNCTION, read_cb);
		curl_easy_setopt(e, CURLOPT_READDATA, req);
		curl_easy_setopt(e, CURLOPT_INFILESIZE_LARGE, (curl_off_t) req->payload_len);
		/*
		 * STARTTLS whenever the server offers it (smtps:// is TLS anyway);
		 * required when there are credentials, which must never go out in
		 * clear text.
		 */
		curl_easy_setopt(e, CURLOPT_USE_SSL,
						 (long) (req->username ? CURLUSESSL_ALL : CURLUSESSL_TRY));
	}
	else
	{
		curl_easy_setopt(e, CURLOPT_USERAGENT, "journey/" JOURNEY_VERSION);
		curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_cb);
		curl_easy_setopt(e, CURLOPT_HEADERDATA, req);
		curl_easy_setopt(e, CURLOPT_HTTPHEADER, req->headers);
		curl_easy_setopt(e, CURLOPT_POST, 1L);
		curl_easy_setopt(e, CURLOPT_POSTFIELDS, req->payload);
		curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) req->payload_len);
		if (req->username)
			curl_easy_setopt(e, CURLOPT_HTTPAUTH, (long) CURLAUTH_BASIC);
	}

	if (curl_multi_add_handle(multi, e) != CURLM_OK)
	{
		curl_easy_cleanup(e);
		req->easy = NULL;
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not add a request to the libcurl multi handle")));
	}
	in_flight++;
}

/* Lets libcurl act on ready sockets and an expired timer; never blocks. */
void
journey_transport_drive(void)
{
	struct epoll_event evs[64];
	int			running;
	int			n;
	int			i;

	if (timer_deadline != 0 && GetCurrentTimestamp() >= timer_deadline)
	{
		timer_deadline = 0;
		curl_multi_socket_action(multi, CURL_SOCKET_TIMEOUT, 0, &running);
	}
	do
	{
		n = epoll_wait(epoll_fd, evs, lengthof(evs), 0);
		for (i = 0; i < n; i++)
		{
			int			flags = 0;

			if (evs[i].events & EPOLLIN)
				flags |= CURL_CSELECT_IN;
			if (evs[i].events & EPOLLOUT)
				flags |= CURL_CSELECT_OUT;
			if (evs[i].events & (EPOLLERR | EPOLLHUP))
				flags |= CURL_CSELECT_ERR;
			curl_multi_socket_action(multi, evs[i].data.fd, flags, &running);
		}
	} while (n == lengthof(evs));
}

/* Milliseconds until libcurl's timer is due; -1 when it set none. */
long
journey_transport_timeout_ms(void)
{
	TimestampTz now;

	if (timer_deadline == 0)
		return -1;
	now = GetCurrentTimestamp();
	if (now >= timer_deadline)
		return 0;
	/* Round up: waking early would just spin. */
	return (long) ((timer_deadline - now + 999) / 1000);
}

/* The next finished request, detached from the multi handle; NULL if none. */
JourneyRequest *
journey_transport_next_done(CURLcode *rc, long *status)
{
	CURLMsg    *msg;
	int			left;

	while ((msg = curl_multi_info_read(multi, &left)) != NULL)
	{
		JourneyRequest *req = NULL;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **) &req);
		*rc = msg->data.result;
		*status = 0;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, status);
		curl_multi_remove_handle(multi, req->easy);
		in_flight--;
		return req;
	}
	return NULL;
}

/* Frees a finished request: libcurl's lists, its memory; keeps the handle. */
void
journey_transport_release(JourneyRequest *req)
{
	if (req->easy)
	{
		if (n_idle < max_idle)
			idle_handles[n_idle++] = req->easy;
		else
			curl_easy_cleanup(req->easy);
	}
	curl_slist_free_all(req->headers);
	curl_slist_free_all(req->rcpt);
	MemoryContextDelete(req->cxt);
}
