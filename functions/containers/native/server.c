/*
 * native: an example container function for Wisp that a WebAssembly component cannot be today.
 *
 * A small HTTP/1.1 server that uses POSIX threads (a fixed pool of worker threads, all calling
 * accept() on one listening socket; each connection is served on the thread that accepted it,
 * with keep-alive) and a native C library (zlib). It follows the Knative container contract:
 * listens on 0.0.0.0:$PORT (default 8080), reads K_SERVICE/K_REVISION/K_CONFIGURATION, and exits 0
 * promptly on SIGTERM.
 *
 *   GET  /          200 text/plain: worker thread count, zlib version, K_* environment
 *   POST /compress  200 application/octet-stream: the request body compressed with zlib
 *                   compress2() (zlib/RFC 1950 stream), header X-Original-Length: <body bytes>
 *   GET  /crash     abort(): the process dies under the request (no response is sent)
 *   anything else   404
 *
 * Limits: request line + headers at most 16 KiB (else 431), body at most 8 MiB (else 413), no
 * chunked request bodies (501), idle keep-alive connections are closed after IDLE_TIMEOUT_S.
 * A worker serves one connection at a time, so at most THREADS connections are served at once;
 * further connections wait in the listen backlog until a worker frees up.
 *
 * Build: gcc -O2 -static -pthread server.c -lz -o server
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>
#include <zlib.h>

#define MAX_HEADER (16 * 1024)       /* request line + headers, including the blank line */
#define MAX_BODY (8 * 1024 * 1024)   /* request body */
#define DEFAULT_THREADS 8
#define MAX_THREADS 256
#define IDLE_TIMEOUT_S 30            /* receive/send timeout on a connection */
#define THREAD_STACK (256 * 1024)

static int listen_fd = -1;
static int n_threads = DEFAULT_THREADS;

/* --- signals ------------------------------------------------------------------------------- */

/* As PID 1 in its PID namespace the server gets no default signal actions: SIGTERM is ignored
 * unless a handler is installed. The platform sends SIGTERM, then SIGKILL after a grace period;
 * there is no state to flush, so exit at once. Only async-signal-safe calls here. */
static void on_term(int sig) {
    static const char msg[] = "native: signal received, exiting\n";
    (void)sig;
    ssize_t r = write(STDERR_FILENO, msg, sizeof msg - 1);
    (void)r;
    _exit(0);
}

static void install_signals(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_term;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
}

/* --- I/O helpers ---------------------------------------------------------------------------- */

/* Writes all iovecs; returns 0 on success, -1 if the peer went away or timed out. */
static int write_all_v(int fd, struct iovec *iov, int n) {
    while (n > 0) {
        struct msghdr mh;
        memset(&mh, 0, sizeof mh);
        mh.msg_iov = iov;
        mh.msg_iovlen = (size_t)n;
        ssize_t w = sendmsg(fd, &mh, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        size_t left = (size_t)w;
        while (n > 0 && left >= iov->iov_len) {
            left -= iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            iov->iov_base = (char *)iov->iov_base + left;
            iov->iov_len -= left;
        }
    }
    return 0;
}

static const char *reason(int status) {
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}

/* Sends one complete response. extra_headers is "" or lines each ending in "\r\n". */
static int send_response(int fd, int status, const char *ctype, const char *extra_headers,
                         const void *body, size_t body_len, int keep_alive) {
    char head[512];
    int hl = snprintf(head, sizeof head,
                      "HTTP/1.1 %d %s\r\n"
                      "Content-Type: %s\r\n"
                      "Content-Length: %zu\r\n"
                      "%s"
                      "Connection: %s\r\n"
                      "\r\n",
                      status, reason(status), ctype, body_len, extra_headers,
                      keep_alive ? "keep-alive" : "close");
    if (hl < 0 || (size_t)hl >= sizeof head) return -1;
    struct iovec iov[2] = {{head, (size_t)hl}, {(void *)body, body_len}};
    return write_all_v(fd, iov, body_len ? 2 : 1);
}

static int send_text(int fd, int status, const char *text, int keep_alive) {
    return send_response(fd, status, "text/plain; charset=utf-8", "", text, strlen(text),
                         keep_alive);
}

/* --- request parsing ------------------------------------------------------------------------ */

struct request {
    char method[16];
    char path[1024];          /* without the query string */
    int minor;                /* HTTP/1.<minor> */
    long long content_length; /* -1 if absent */
    int chunked;
    int conn_close;
    int conn_keep_alive;
    int expect_continue;
};

static void trim(const char **s, const char **e) {
    while (*s < *e && (**s == ' ' || **s == '\t')) (*s)++;
    while (*e > *s && ((*e)[-1] == ' ' || (*e)[-1] == '\t')) (*e)--;
}

/* Case-insensitive: does the comma-separated list [s,e) contain token? */
static int has_token(const char *s, const char *e, const char *token) {
    size_t tl = strlen(token);
    while (s < e) {
        const char *c = memchr(s, ',', (size_t)(e - s));
        const char *te = c ? c : e;
        const char *ts = s;
        trim(&ts, &te);
        if ((size_t)(te - ts) == tl && strncasecmp(ts, token, tl) == 0) return 1;
        s = c ? c + 1 : e;
    }
    return 0;
}

static int name_is(const char *s, const char *e, const char *name) {
    size_t n = strlen(name);
    return (size_t)(e - s) == n && strncasecmp(s, name, n) == 0;
}

/* Parses [buf, buf+len) = request line + headers (the final "\r\n\r\n" excluded).
 * Returns 0, or an HTTP status to answer with (the connection is then closed). */
static int parse_request(const char *buf, size_t len, struct request *rq) {
    memset(rq, 0, sizeof *rq);
    rq->content_length = -1;
    const char *end = buf + len;
    const char *eol = memmem(buf, len, "\r\n", 2);
    if (!eol) eol = end;

    /* request line: METHOD SP target SP HTTP/1.x */
    const char *sp1 = memchr(buf, ' ', (size_t)(eol - buf));
    if (!sp1 || sp1 == buf || (size_t)(sp1 - buf) >= sizeof rq->method) return 400;
    const char *sp2 = memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1));
    if (!sp2 || sp2 == sp1 + 1) return 400;
    memcpy(rq->method, buf, (size_t)(sp1 - buf));
    const char *t = sp1 + 1, *te = sp2;
    const char *q = memchr(t, '?', (size_t)(te - t));
    if (q) te = q;
    if ((size_t)(te - t) >= sizeof rq->path) return 414;
    memcpy(rq->path, t, (size_t)(te - t));
    const char *v = sp2 + 1;
    if (eol - v != 8 || memcmp(v, "HTTP/1.", 7) != 0) {
        if (eol - v >= 5 && memcmp(v, "HTTP/", 5) == 0) return 505;
        return 400;
    }
    if (v[7] < '0' || v[7] > '9') return 400;
    rq->minor = v[7] - '0';

    /* header fields */
    const char *line = eol + 2;
    while (line < end) {
        const char *le = memmem(line, (size_t)(end - line), "\r\n", 2);
        if (!le) le = end;
        const char *colon = memchr(line, ':', (size_t)(le - line));
        if (!colon || colon == line) return 400;
        const char *ns = line, *ne = colon;
        if (ne[-1] == ' ' || ne[-1] == '\t') return 400; /* no space before the colon */
        const char *vs = colon + 1, *ve = le;
        trim(&vs, &ve);
        if (name_is(ns, ne, "Content-Length")) {
            if (vs == ve) return 400;
            long long n = 0;
            for (const char *p = vs; p < ve; p++) {
                if (*p < '0' || *p > '9') return 400;
                if (n > MAX_BODY) { n = MAX_BODY + 1LL; continue; } /* saturate, no overflow */
                n = n * 10 + (*p - '0');
            }
            if (rq->content_length >= 0 && rq->content_length != n) return 400;
            rq->content_length = n;
        } else if (name_is(ns, ne, "Transfer-Encoding")) {
            rq->chunked = 1; /* any transfer coding: not supported for requests */
        } else if (name_is(ns, ne, "Connection")) {
            if (has_token(vs, ve, "close")) rq->conn_close = 1;
            if (has_token(vs, ve, "keep-alive")) rq->conn_keep_alive = 1;
        } else if (name_is(ns, ne, "Expect")) {
            if (has_token(vs, ve, "100-continue")) rq->expect_continue = 1;
        }
        line = le + 2;
    }
    if (rq->chunked && rq->content_length >= 0) return 400; /* request smuggling shape */
    return 0;
}

/* --- handlers ------------------------------------------------------------------------------- */

static const char *env_or(const char *name, const char *dflt) {
    const char *v = getenv(name);
    return v ? v : dflt;
}

static int handle_root(int fd, int keep_alive) {
    char text[1024];
    snprintf(text, sizeof text,
             "hello from a native container function\n"
             "threads: %d\n"
             "zlib: %s\n"
             "K_SERVICE: %s\n"
             "K_REVISION: %s\n"
             "K_CONFIGURATION: %s\n",
             n_threads, zlibVersion(), env_or("K_SERVICE", ""), env_or("K_REVISION", ""),
             env_or("K_CONFIGURATION", ""));
    return send_text(fd, 200, text, keep_alive);
}

static int handle_compress(int fd, const unsigned char *body, size_t len, int keep_alive) {
    uLongf out_len = compressBound((uLong)len);
    unsigned char *out = malloc(out_len ? out_len : 1);
    if (!out) return send_text(fd, 500, "out of memory\n", 0);
    int zr = compress2(out, &out_len, body, (uLong)len, Z_DEFAULT_COMPRESSION);
    if (zr != Z_OK) {
        free(out);
        return send_text(fd, 500, "compression failed\n", keep_alive);
    }
    char extra[64];
    snprintf(extra, sizeof extra, "X-Original-Length: %zu\r\n", len);
    int r = send_response(fd, 200, "application/octet-stream", extra, out, out_len, keep_alive);
    free(out);
    return r;
}

/* --- connection loop ------------------------------------------------------------------------ */

/* Reads into buf[*have .. cap). Returns bytes read, 0 on EOF, -1 on error/timeout. */
static ssize_t read_some(int fd, char *buf, size_t *have, size_t cap) {
    for (;;) {
        ssize_t r = recv(fd, buf + *have, cap - *have, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r > 0) *have += (size_t)r;
        return r;
    }
}

static void serve_connection(int fd) {
    char *buf = malloc(MAX_HEADER);
    if (!buf) return;
    size_t have = 0; /* bytes in buf not yet consumed (pipelined requests carry over) */

    for (;;) {
        /* 1. read until the end of the header block */
        char *hend = NULL;
        size_t scanned = 0;
        for (;;) {
            size_t from = scanned > 3 ? scanned - 3 : 0;
            hend = have ? memmem(buf + from, have - from, "\r\n\r\n", 4) : NULL;
            if (hend) break;
            scanned = have;
            if (have == MAX_HEADER) {
                send_text(fd, 431, "request header too large (limit 16 KiB)\n", 0);
                goto done;
            }
            ssize_t r = read_some(fd, buf, &have, MAX_HEADER);
            if (r <= 0) goto done; /* client closed, error or idle timeout */
        }
        size_t head_len = (size_t)(hend - buf);
        size_t consumed = head_len + 4;

        /* 2. parse */
        struct request rq;
        int st = parse_request(buf, head_len, &rq);
        if (st) {
            send_text(fd, st, reason(st), 0);
            goto done;
        }
        if (rq.chunked) {
            send_text(fd, 501, "chunked request bodies are not supported\n", 0);
            goto done;
        }
        int keep_alive = rq.minor >= 1 ? !rq.conn_close : (rq.conn_keep_alive && !rq.conn_close);
        size_t body_len = rq.content_length > 0 ? (size_t)rq.content_length : 0;
        if (rq.content_length > MAX_BODY) {
            send_text(fd, 413, "request body too large (limit 8 MiB)\n", 0);
            goto done;
        }

        /* 3. read the body: part may already be in buf, the rest straight from the socket */
        unsigned char *body = NULL;
        if (body_len) {
            body = malloc(body_len);
            if (!body) {
                send_text(fd, 500, "out of memory\n", 0);
                goto done;
            }
            size_t in_buf = have - consumed;
            size_t take = in_buf < body_len ? in_buf : body_len;
            memcpy(body, buf + consumed, take);
            consumed += take;
            size_t got = take;
            if (got < body_len && rq.expect_continue && rq.minor >= 1) {
                static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
                struct iovec iov = {(void *)cont, sizeof cont - 1};
                if (write_all_v(fd, &iov, 1) < 0) { free(body); goto done; }
            }
            while (got < body_len) {
                ssize_t r = recv(fd, body + got, body_len - got, 0);
                if (r < 0 && errno == EINTR) continue;
                if (r <= 0) { free(body); goto done; }
                got += (size_t)r;
            }
        }
        /* keep any pipelined bytes for the next request */
        memmove(buf, buf + consumed, have - consumed);
        have -= consumed;

        /* 4. route */
        int r;
        if (strcmp(rq.path, "/") == 0 && strcmp(rq.method, "GET") == 0) {
            r = handle_root(fd, keep_alive);
        } else if (strcmp(rq.path, "/compress") == 0 && strcmp(rq.method, "POST") == 0) {
            r = handle_compress(fd, body, body_len, keep_alive);
        } else if (strcmp(rq.path, "/crash") == 0 && strcmp(rq.method, "GET") == 0) {
            fprintf(stderr, "native: GET /crash, calling abort()\n");
            abort();
        } else {
            r = send_text(fd, 404, "not found\n", keep_alive);
        }
        free(body);
        if (r < 0 || !keep_alive) goto done;
    }
done:
    free(buf);
}

static void *worker(void *arg) {
    (void)arg;
    for (;;) {
        int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO) continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                perror("native: accept");
                usleep(10000);
                continue;
            }
            perror("native: accept");
            exit(1);
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct timeval tv = {IDLE_TIMEOUT_S, 0};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        serve_connection(fd);
        close(fd);
    }
    return NULL;
}

/* --- main ----------------------------------------------------------------------------------- */

static long parse_env_long(const char *name, long dflt, long lo, long hi) {
    const char *v = getenv(name);
    if (!v || !*v) return dflt;
    char *end;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (errno || *end || n < lo || n > hi) {
        fprintf(stderr, "native: invalid %s=%s (want %ld..%ld)\n", name, v, lo, hi);
        exit(2);
    }
    return n;
}

int main(void) {
    setvbuf(stderr, NULL, _IOLBF, 0);
    install_signals();
    int port = (int)parse_env_long("PORT", 8080, 1, 65535);
    n_threads = (int)parse_env_long("THREADS", DEFAULT_THREADS, 1, MAX_THREADS);

    listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (listen_fd < 0) { perror("native: socket"); return 1; }
    int one = 1;
    setsockopt(listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_ANY);
    addr.sin_port = htons((uint16_t)port);
    if (bind(listen_fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
        perror("native: bind");
        return 1;
    }
    if (listen(listen_fd, 1024) < 0) { perror("native: listen"); return 1; }

    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, THREAD_STACK);
    for (int i = 0; i < n_threads; i++) {
        pthread_t th;
        int e = pthread_create(&th, &attr, worker, NULL);
        if (e) {
            fprintf(stderr, "native: pthread_create: %s\n", strerror(e));
            return 1;
        }
        pthread_detach(th);
    }
    pthread_attr_destroy(&attr);
    fprintf(stderr, "native: listening on 0.0.0.0:%d, %d worker threads, zlib %s, K_SERVICE=%s\n",
            port, n_threads, zlibVersion(), env_or("K_SERVICE", ""));

    /* The main thread only waits for signals; the handler exits the process. */
    for (;;) pause();
}
