/* Certificates for the TLS suites, made at run time with the openssl CLI
 * in a temporary directory (no key is committed), and a Python ssl
 * client for checks against another implementation. */
#ifndef IOL_TLS_FIXTURE_H
#define IOL_TLS_FIXTURE_H

#include <stdbool.h>
#include <stddef.h>

/* Makes, in a new temporary directory (EC P-256 keys, quick):
 *   ca.pem/.key         the test CA; other-ca.pem/.key an unrelated one
 *   a.pem/.key          CN=a.test, SAN DNS:a.test,DNS:localhost,IP:127.0.0.1 (by ca)
 *   expired.pem/.key    a.test, expired a day ago (by ca)
 *   future.pem/.key     a.test, valid from 2099 (by ca)
 *   self.pem/.key       a.test, self-signed
 *   client.pem/.key     CN=client-1, SAN email:client-1@a.test (by ca)
 *   rogue.pem/.key      CN=rogue (by other-ca)
 * false if the openssl CLI failed. */
bool tls_fixture_make_certs(void);
/* dir/name (a rotating static buffer: 8 in use at once). */
const char *tls_fixture_path(const char *name);
/* The file's bytes, NUL-ended (malloc'd; NULL if unreadable). */
char *tls_fixture_read(const char *name, size_t *len);
/* Removes the directory. */
void tls_fixture_remove(void);
/* Whether `command -v name` finds it. */
bool tls_fixture_have(const char *name);

#endif
