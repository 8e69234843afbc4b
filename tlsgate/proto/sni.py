"""SNI normalisation: the host name from a ClientHello -> the canonical name routing uses, or None.

Pure. The worker calls `normalise_sni(hello.server_name)` once per connection and
routes, evaluates policy and logs with the result; None means "no usable SNI"
(no extension, or a name that is not a valid host name), which the gateway
handles as a client without SNI (ngrok does not serve those; the route table's
no-SNI handling decides). Route patterns are normalised by the config loader, not
here.

Rules, in order:

1. Only ASCII is accepted. Internationalised names travel as A-labels
   ("xn--..."); a raw U-label or any other non-ASCII text is invalid.
2. Upper case becomes lower case (DNS names compare case-insensitively).
3. One trailing dot is removed ("example.com." names the same host as
   "example.com"); a second one leaves an empty label, which is invalid.
4. Only letters, digits, "-", "_" and dots; every label 1-63 bytes and the whole
   name at most 253 bytes (RFC 1035 §2.3.4, in presentation form). "_" is allowed
   because real service names use it (e.g. "_acme-challenge", some internal
   hosts); hyphens at the ends of a label are not rejected, as most SNI routers
   (HAProxy, Envoy, sniproxy) do not reject them either.
5. IP literals are invalid: RFC 6066 §3 says "Literal IPv4 and IPv6 addresses
   are not permitted in HostName". IPv6 literals already fail rule 4 (":");
   a name whose last label is all digits is taken as an IPv4 literal in one of
   the forms inet_aton accepts ("1.2.3.4", "10.1", "3232235777"), since no
   top-level domain is numeric (RFC 3696 §2).
"""

from __future__ import annotations

import re

MAX_NAME_LENGTH = 253
MAX_LABEL_LENGTH = 63

_HOST_NAME = re.compile(r"[a-z0-9_-]{1,63}(?:\.[a-z0-9_-]{1,63})*")


def normalise_sni(name: str | None) -> str | None:
    """Return the lower-case host name without its trailing dot, or None if it is not valid."""
    if not name or not name.isascii():
        return None
    name = name.lower()
    if name.endswith("."):
        name = name[:-1]
    if len(name) > MAX_NAME_LENGTH or not _HOST_NAME.fullmatch(name):
        return None
    if name.rpartition(".")[2].isdigit():
        return None
    return name
