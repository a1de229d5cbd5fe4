/* runtime/ — listening on a Unix domain socket path (HANDOFF listeners
 * with iol_listen_config.path): the socket, a stale file left by a
 * crashed predecessor, and removing the file at stop. */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "runtime/runtime_impl.h"

int iol__unix_address(const char *path, struct sockaddr_un *sun, socklen_t *len)
{
    size_t n = strlen(path);
    if (n == 0)
        return -EINVAL;
    if (n >= sizeof(sun->sun_path))
        return -ENAMETOOLONG;
    memset(sun, 0, sizeof(*sun));
    sun->sun_family = AF_UNIX;
    memcpy(sun->sun_path, path, n + 1);
    *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
    return 0;
}

/* A socket file nobody listens on (connect refused) is a leftover: the
 * listener that made it is gone without removing it. A live one, or a
 * file that is not a socket, is the caller's -EADDRINUSE. */
static bool stale_socket_file(const char *path, const struct sockaddr_un *sun, socklen_t len)
{
    struct stat st;
    if (lstat(path, &st) < 0 || !S_ISSOCK(st.st_mode))
        return false;
    /* Non-blocking: a live listener with a full backlog says EAGAIN
     * instead of keeping us waiting for room. */
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    bool stale = connect(fd, (const struct sockaddr *)sun, len) < 0 && errno == ECONNREFUSED;
    close(fd);
    return stale;
}

int iol__unix_listen(const char *path, int backlog, int *out)
{
    struct sockaddr_un sun;
    socklen_t len;
    int r = iol__unix_address(path, &sun, &len);
    if (r < 0)
        return r;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    r = bind(fd, (const struct sockaddr *)&sun, len);
    int err = r < 0 ? -errno : 0; /* the probe below may change errno */
    if (r < 0 && err == -EADDRINUSE && stale_socket_file(path, &sun, len) && unlink(path) == 0) {
        r = bind(fd, (const struct sockaddr *)&sun, len);
        err = r < 0 ? -errno : 0;
    }
    if (r == 0 && listen(fd, backlog) < 0) {
        err = -errno;
        (void)unlink(path); /* the file our bind made */
    }
    if (err < 0) {
        close(fd);
        return err;
    }
    *out = fd;
    return 0;
}
