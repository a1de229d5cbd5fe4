/* loop/ — the library's own status codes: their messages (iol_strerror),
 * and the 0.1 entry points that keep the old codes for programs built
 * against the old header (include/ioloop.h, "Binary compatibility of the
 * status codes"). */
#include "loop/status.h"

#include <errno.h>
#include <string.h>

#include "loop/loop_impl.h"

static const struct {
    int code;
    int legacy; /* what a 0.1 program got instead */
    const char *text;
} own_codes[] = {
    {IOL_EOF, -EPIPE, "connection closed by peer"},
    {IOL_ENONAME, -EHOSTUNREACH, "host name not found"},
    {IOL_ETLS_VERIFY, -EKEYREJECTED, "certificate verify failed"},
    {IOL_ETLS_HOSTNAME, -EKEYREJECTED, "certificate verify failed: hostname mismatch"},
    {IOL_ETLS_UNTRUSTED, -EKEYREJECTED, "certificate verify failed: unable to get local issuer certificate"},
    {IOL_ETLS_SELF_SIGNED, -EKEYREJECTED, "certificate verify failed: self-signed certificate"},
    {IOL_ETLS_EXPIRED, -EKEYREJECTED, "certificate verify failed: certificate has expired"},
    {IOL_ETLS_NOT_YET_VALID, -EKEYREJECTED, "certificate verify failed: certificate is not yet valid"},
    {IOL_ETLS_NO_PEER_CERT, -EKEYREJECTED, "peer did not return a certificate"},
    {IOL_ETLS_PEER_REJECTED, -EKEYREJECTED, "the peer rejected our certificate"},
};

enum { N_OWN = sizeof own_codes / sizeof own_codes[0] };

const char *iol_strerror(int err)
{
    if (err >= 0)
        return "success";
    for (unsigned i = 0; i < N_OWN; i++)
        if (own_codes[i].code == err)
            return own_codes[i].text;
    /* strerrordesc_np: glibc's static table, thread-safe (strerror may
     * format "Unknown error N" into a shared buffer). */
    const char *text = err > -4096 ? strerrordesc_np(-err) : NULL;
    return text ? text : "unknown error";
}

int iol__loop_status(const iol_loop *loop, int status)
{
    if (status > IOL_EOF - 1 && status < -4000 && loop && loop->legacy_status)
        for (unsigned i = 0; i < N_OWN; i++)
            if (own_codes[i].code == status)
                return own_codes[i].legacy;
    return status;
}

void iol__loop_set_legacy_status(iol_loop *loop, bool legacy)
{
    loop->legacy_status = legacy;
}

/* The 0.1 entry point of iol_loop_new (declared in loop/status.h). */
int iol__loop_new_0_1(iol_loop **out, const iol_loop_config *cfg)
{
    int err = iol_loop_new(out, cfg);
    if (err == 0)
        iol__loop_set_legacy_status(*out, true);
    return err;
}
