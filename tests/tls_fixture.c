/* See tls_fixture.h. */
#include "tls_fixture.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char dir[64];

const char *tls_fixture_path(const char *name)
{
    static char buf[8][160];
    static int next;
    char *p = buf[next++ % 8];
    snprintf(p, sizeof(buf[0]), "%s/%s", dir, name);
    return p;
}

static int sh(const char *body)
{
    char cmd[4096];
    snprintf(cmd, sizeof(cmd), "cd %s && { %s ; } >/dev/null 2>&1", dir, body);
    return system(cmd);
}

#define EC "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"

bool tls_fixture_make_certs(void)
{
    strcpy(dir, "/tmp/iol-tlsfx-XXXXXX");
    if (!mkdtemp(dir))
        return false;
    static const char *cmds[] = {
        "openssl req -x509 " EC " -keyout ca.key -out ca.pem -subj /CN=iol-test-ca -days 2",
        "openssl req -x509 " EC " -keyout other-ca.key -out other-ca.pem -subj /CN=iol-other-ca -days 2",
        "printf 'subjectAltName=DNS:a.test,DNS:localhost,IP:127.0.0.1\\n' > a.ext && "
        "printf 'subjectAltName=email:client-1@a.test\\n' > client.ext && "
        "printf '[ca]\\ndefault_ca=d\\n[d]\\ndatabase=index.txt\\nnew_certs_dir=.\\ndefault_md=sha256\\n"
        "policy=p\\nserial=serial\\ncopy_extensions=copy\\n[p]\\ncommonName=supplied\\n' > ca.cnf && "
        "touch index.txt && echo 01 > serial",
        /* name, CA, days, extensions */
        "for spec in a:ca:2:a expired:ca:-1:a client:ca:2:client rogue:other-ca:2:none; do "
        "set -- $(echo $spec | tr : ' '); n=$1 ca=$2 days=$3 ext=$4; "
        "cn=a.test; [ $n = client ] && cn=client-1; [ $n = rogue ] && cn=rogue; "
        "openssl req " EC " -keyout $n.key -out $n.csr -subj /CN=$cn || exit 1; "
        "x=''; [ $ext != none ] && x=\"-extfile $ext.ext\"; "
        "openssl x509 -req -in $n.csr -CA $ca.pem -CAkey $ca.key -CAcreateserial -days $days $x -out $n.pem || exit 1; "
        "done",
        "openssl req " EC " -keyout future.key -out future.csr -subj /CN=a.test "
        "-addext subjectAltName=DNS:a.test && "
        "openssl ca -batch -config ca.cnf -cert ca.pem -keyfile ca.key -in future.csr -out future.pem "
        "-startdate 20990101000000Z -enddate 20990102000000Z -notext",
        "openssl req -x509 " EC " -keyout self.key -out self.pem -subj /CN=a.test -days 2 "
        "-addext subjectAltName=DNS:a.test",
    };
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
        if (sh(cmds[i]) != 0) {
            fprintf(stderr, "tls fixture: failed: %s\n", cmds[i]);
            return false;
        }
    return true;
}

char *tls_fixture_read(const char *name, size_t *len)
{
    FILE *f = fopen(tls_fixture_path(name), "rb");
    if (!f)
        return NULL;
    char *buf = malloc(65536);
    size_t n = buf ? fread(buf, 1, 65535, f) : 0;
    fclose(f);
    if (buf)
        buf[n] = '\0';
    if (len)
        *len = n;
    return buf;
}

void tls_fixture_remove(void)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    if (dir[0] && system(cmd) != 0)
        fprintf(stderr, "tls fixture: could not remove %s\n", dir);
}

bool tls_fixture_have(const char *name)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "command -v %s >/dev/null 2>&1", name);
    return system(cmd) == 0;
}
