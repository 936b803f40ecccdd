/* C harness for the cyrvault C ABI: links libcyrvault.a exactly as a Cyrus service
 * skeleton would, includes the committed header, and drives the three entry points.
 *
 *   harness session   child: fds 0/1 = one end of a socketpair, service_init,
 *                     service_main, service_abort(42); parent: speaks the protocol on
 *                     the other end and checks the bytes, the EOF after the session,
 *                     and the exit status 42.
 *   harness badinit   service_init with a malformed option must return EX_USAGE (64)
 *                     without exiting; service_main before a good init returns 70.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cyrvault.h"

static int send_all(int fd, const char *s)
{
    size_t len = strlen(s);
    while (len > 0) {
        ssize_t n = write(fd, s, len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) { perror("write"); return -1; }
        s += n;
        len -= (size_t) n;
    }
    return 0;
}

/* Read exactly strlen(want) bytes and compare. */
static int expect(int fd, const char *want)
{
    char buf[256];
    size_t want_len = strlen(want), got = 0;
    while (got < want_len) {
        ssize_t n = read(fd, buf + got, want_len - got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            fprintf(stderr, "harness: EOF/error after %zu of %zu bytes\n", got, want_len);
            return -1;
        }
        got += (size_t) n;
    }
    if (memcmp(buf, want, want_len) != 0) {
        fprintf(stderr, "harness: got %.*s, want %s\n", (int) got, buf, want);
        return -1;
    }
    return 0;
}

static int session(int argc, char **argv, char **envp)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) { perror("socketpair"); return 2; }
    pid_t pid = fork();
    if (pid < 0) { perror("fork"); return 2; }
    if (pid == 0) {
        close(sv[0]);
        if (dup2(sv[1], 0) < 0 || dup2(sv[1], 1) < 0) _exit(89);
        close(sv[1]);
        if (service_init(argc, argv, envp) != 0) _exit(90);
        if (service_main(argc, argv, envp) != 0) _exit(91);
        service_abort(42);
    }
    close(sv[1]);
    if (send_all(sv[0], "PING\n") || expect(sv[0], "OK\nDONE PING\n")) return 1;
    if (send_all(sv[0], "ping extra words\n") || expect(sv[0], "OK\nDONE PING\n")) return 1;
    if (send_all(sv[0], "QUIT\n") || expect(sv[0], "OK\n")) return 1;
    /* service_main must hand fds 0/1 back (to /dev/null): we see EOF. */
    char c;
    ssize_t n = read(sv[0], &c, 1);
    if (n != 0) { fprintf(stderr, "harness: expected EOF after QUIT, read %zd\n", n); return 1; }
    int status = 0;
    if (waitpid(pid, &status, 0) != pid) { perror("waitpid"); return 2; }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 42) {
        fprintf(stderr, "harness: child status %#x, want exit 42\n", status);
        return 1;
    }
    printf("session ok\n");
    return 0;
}

static int badinit(char **envp)
{
    char prog[] = "harness", bad[] = "-C/attached/value";
    char *bad_argv[] = { prog, bad, NULL };
    int r = service_init(2, bad_argv, envp);
    if (r != 64) { fprintf(stderr, "harness: service_init returned %d, want 64\n", r); return 1; }
    r = service_main(2, bad_argv, envp);
    if (r != 70) { fprintf(stderr, "harness: service_main returned %d, want 70\n", r); return 1; }
    printf("badinit ok\n");
    return 0;
}

int main(int argc, char **argv, char **envp)
{
    if (argc >= 2 && strcmp(argv[1], "session") == 0) return session(1, argv, envp);
    if (argc >= 2 && strcmp(argv[1], "badinit") == 0) return badinit(envp);
    fprintf(stderr, "usage: harness session|badinit\n");
    return 2;
}
