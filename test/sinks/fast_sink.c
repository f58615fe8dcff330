/*
 * fast_sink.c
 *	  The benchmark's HTTP sink: one epoll thread, HTTP/1.1 keep-alive,
 *	  answers every POST with 200 {"id":"<Idempotency-Key>"}, and records
 *	  "<key> <receipt time in microseconds since the epoch>" per request.
 *
 *	  fast_sink PORT OUTFILE [close]    listens on 127.0.0.1:PORT only
 *
 * With "close", every response says "Connection: close" and the socket is
 * closed after it, so each request pays a new TCP connection: the cost a
 * provider that does not keep connections alive imposes on the sender.
 *
 * The records are kept in memory and written to OUTFILE on SIGTERM or
 * SIGINT, so recording costs the hot path nothing.  Prints "ready" once
 * listening.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define BUFSZ 65536
#define MAXFD 65536

typedef struct Conn
{
	char	   *buf;
	size_t		len;
} Conn;

static Conn conns[MAXFD];
static volatile sig_atomic_t stop = 0;
static int	close_after = 0;
static char *rec;
static size_t rec_len, rec_cap;

static void
on_signal(int s)
{
	stop = 1;
}

static void
record(const char *key, size_t klen)
{
	struct timeval tv;

	if (rec_len + klen + 32 > rec_cap)
	{
		rec_cap = rec_cap ? rec_cap * 2 : (1 << 22);
		rec = realloc(rec, rec_cap);
	}
	gettimeofday(&tv, NULL);
	memcpy(rec + rec_len, key, klen);
	rec_len += klen;
	rec_len += sprintf(rec + rec_len, " %lld\n", (long long) tv.tv_sec * 1000000 + tv.tv_usec);
}

/*
 * Handles every complete request in the buffer; returns bytes consumed, or
 * (size_t) -1 once the connection is to be closed (close mode, or the peer
 * went away).
 */
static size_t
serve(int fd, char *buf, size_t len)
{
	size_t		done = 0;

	for (;;)
	{
		char	   *start = buf + done;
		char	   *end;
		char	   *p;
		long		clen = 0;
		const char *key = "";
		size_t		klen = 0;
		char		out[256];
		int			n;

		buf[len] = '\0';
		end = strstr(start, "\r\n\r\n");
		if (end == NULL)
			return done;
		for (p = start; p < end; p = strstr(p, "\r\n") + 2)
		{
			if (strncasecmp(p, "Content-Length:", 15) == 0)
				clen = atol(p + 15);
			else if (strncasecmp(p, "Idempotency-Key:", 16) == 0)
			{
				key = p + 16;
				while (*key == ' ')
					key++;
				klen = strcspn(key, "\r");
			}
		}
		if ((size_t) (end + 4 - buf) + clen > len)
			return done;		/* body not all here yet */
		record(key, klen);
		n = snprintf(out, sizeof(out),
					 "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
					 "%sContent-Length: %d\r\n\r\n{\"id\":\"%.*s\"}",
					 close_after ? "Connection: close\r\n" : "",
					 (int) klen + 9, (int) klen, key);
		if (write(fd, out, n) != n || close_after)
			return (size_t) -1;
		done = (end + 4 - buf) + clen;
	}
}

int
main(int argc, char **argv)
{
	int			lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	int			one = 1;
	int			ep = epoll_create1(0);
	struct sockaddr_in addr;
	struct epoll_event ev, evs[256];
	FILE	   *f;

	if (argc < 3 || argc > 4 || (argc == 4 && strcmp(argv[3], "close") != 0))
	{
		fprintf(stderr, "usage: fast_sink PORT OUTFILE [close]\n");
		return 2;
	}
	close_after = (argc == 4);
	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);
	signal(SIGPIPE, SIG_IGN);
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	memset(&addr, 0, sizeof(addr));
	addr.sin_family = AF_INET;
	addr.sin_port = htons(atoi(argv[1]));
	addr.sin_addr.s_addr = inet_addr("127.0.0.1");
	if (bind(lfd, (struct sockaddr *) &addr, sizeof(addr)) < 0 || listen(lfd, 1024) < 0)
	{
		perror("bind/listen");
		return 1;
	}
	ev.events = EPOLLIN;
	ev.data.fd = lfd;
	epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
	printf("ready\n");
	fflush(stdout);

	while (!stop)
	{
		int			n = epoll_wait(ep, evs, 256, 200);
		int			i;

		for (i = 0; i < n; i++)
		{
			int			fd = evs[i].data.fd;

			if (fd == lfd)
			{
				int			c;

				while ((c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK)) >= 0)
				{
					if (c >= MAXFD)
					{
						close(c);
						continue;
					}
					setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
					conns[c].buf = malloc(BUFSZ + 1);
					conns[c].len = 0;
					ev.events = EPOLLIN;
					ev.data.fd = c;
					epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev);
				}
				continue;
			}
			for (;;)
			{
				Conn	   *cn = &conns[fd];
				ssize_t		r = read(fd, cn->buf + cn->len, BUFSZ - cn->len);
				size_t		used;

				if (r > 0)
				{
					cn->len += r;
					used = serve(fd, cn->buf, cn->len);
					if (used != (size_t) -1)
					{
						memmove(cn->buf, cn->buf + used, cn->len - used);
						cn->len -= used;
						continue;
					}
				}
				else if (r < 0 && (errno == EAGAIN || errno == EINTR))
					break;
				/* EOF, error, a full buffer, or a response that closes. */
				close(fd);
				free(cn->buf);
				cn->buf = NULL;
				break;
			}
		}
	}
	f = fopen(argv[2], "w");
	if (f == NULL || fwrite(rec, 1, rec_len, f) != rec_len || fclose(f) != 0)
	{
		perror("writing records");
		return 1;
	}
	return 0;
}
