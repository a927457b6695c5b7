# Varnish in front of the wheelwright origin (nginx/wheelwright.conf): the edge a CDN would be.
#
# Install (Debian: varnish, varnish-modules): edit the lines marked DEPLOY (the origin, who may purge),
# then varnishd -f /etc/varnish/wheelwright.vcl. The tests run this very file with only those lines
# replaced.
#
# What it does:
# * PURGE with an "xkey-purge: k1 k2 ..." header, from an address in the purgers ACL, drops every
#   object tagged with one of the keys (the origin's xkey header); the publisher sends those after
#   each publish (wheelwright.publish.cdn.VarnishPurger). A hard purge: the next request is fresh.
#   "xkey-softpurge" expires them instead (served stale while revalidating, or while the origin is down).
# * Accept is normalised on /simple/ pages to the one the origin would choose (the rule of
#   wheelwright.publish.negotiation, as nginx's maps write it): two cache entries per page, HTML and
#   JSON, not one per spelling of the header; 406 here when nothing fits.
# * A URL that no URL of the index looks like is refused here (400: control characters, backslashes,
#   non-ASCII, dot segments, raw or percent-encoded; 414 past 2048 bytes), the rule of
#   wheelwright.publish.request_paths; the query is dropped and the cache key is the URL alone (not
#   Host). /simple/<Name>/ and /project/<Name>/ that are not canonical get the origin's 301, cached.
# * The origin's Cache-Control decides lifetimes (s-maxage for the edge); pages are served stale for a
#   minute while revalidating (stale-while-revalidate), and for a day while the origin's health probe
#   fails (stale-if-error).
# * X-Cache: HIT or MISS on every response (and X-Cache-Hits).

vcl 4.1;

import std;
import xkey;

backend origin {
    .host = "127.0.0.1";                   # DEPLOY: the nginx origin
    .port = "8080";                        # DEPLOY
    .probe = {                             # is the origin up? (decides how stale a page may be served)
        .request = "HEAD /simple/ HTTP/1.1"   # HEAD: the root page of a whole index is megabytes
                   "Host: wheelwright"
                   "Connection: close";
        .interval = 2s;
        .timeout = 2s;
        .window = 3;
        .threshold = 1;                    # down only after three failed probes in a row ...
        .initial = 1;                      # ... and up from the start
    }
}

acl purgers {
    "127.0.0.1";                           # DEPLOY: who may purge (the index host)
    "::1";
}

sub vcl_recv {
    if (req.method == "PURGE") {
        if (client.ip !~ purgers) {
            return (synth(403, "Forbidden"));
        }
        if (req.http.xkey-purge) {
            set req.http.x-purged = xkey.purge(req.http.xkey-purge);
        } elsif (req.http.xkey-softpurge) {
            # Expired but kept for grace: served stale while one fetch revalidates (Fastly's soft purge).
            set req.http.x-purged = xkey.softpurge(req.http.xkey-softpurge);
        } else {
            return (synth(400, "PURGE needs an xkey-purge or xkey-softpurge header"));
        }
        return (synth(200, "Purged " + req.http.x-purged + " objects"));
    }
    if (req.method != "GET" && req.method != "HEAD") {
        return (synth(405, "Method Not Allowed"));
    }
    unset req.http.Cookie;
    unset req.http.Authorization;
    # stale-while-revalidate: an expired page is served for a minute while one fetch revalidates it;
    # stale-if-error: while the origin is down, for as long as the object is kept (a day).
    if (std.healthy(req.backend_hint)) {
        set req.grace = 60s;
    }

    # The rule of wheelwright.publish.request_paths, on the URL as sent (Varnish does not decode it):
    # 414 past 2048 bytes; 400 for a malformed escape, a byte no URL of the index has, raw or
    # percent-encoded (controls, DEL, backslash, non-ASCII), and a . or .. segment (%2e, %2f too).
    # The origin answers the rest, PEP 503's redirect of a non-canonical name included (the 301 is
    # cached here like a page).
    if (req.url ~ "^.{2049}") {
        return (synth(414, "URI Too Long"));
    }
    if (req.url ~ "%(?![0-9A-Fa-f]{2})" || req.url ~ "(?i)%(?:[01][0-9a-f]|7f|[89a-f][0-9a-f]|5c)" ||
        req.url ~ "[\x00-\x20\x7f-\xff\x5c]" || req.url ~ "(?i)^[^?]*(?:/|%2f)(?:\.|%2e){1,2}(?:/|%2f|\?|$)") {
        return (synth(400, "Bad Request"));
    }
    # The origin serves no query: one cache entry per page, whatever a client appends.
    set req.url = regsub(req.url, "\?.*$", "");

    if (req.url ~ "^/simple/([^/]+/)?$") {
        call wheelwright_negotiate;
        if (req.http.x-format == "") {
            return (synth(406, "Not Acceptable"));
        } elsif (req.http.x-format == "json") {
            set req.http.Accept = "application/vnd.pypi.simple.v1+json";
        } else {
            set req.http.Accept = "text/html";
        }
        unset req.http.x-format;
    } else {
        unset req.http.Accept;      # nothing else varies on it
    }
    return (hash);
}

# Each format's quality as a 4-digit string ("1000" for q=1, "0500" for q=0.5) followed by how it was
# named (e explicitly, w by a wildcard, n not at all); then compare, exactly as nginx's maps do.
sub wheelwright_negotiate {
    if (!req.http.Accept || req.http.Accept ~ "^\s*$") {
        set req.http.x-format = "html";
        return;
    }
    if (req.http.Accept ~ "(?i)(?:^|,)\s*+application/vnd\.pypi\.simple\.(?:v1|latest)\+json\s*+(?:;\s*+q\s*+=\s*+[0-9.]*+)?\s*+(?:;[^,]*+)?(?:,|$)") {
        set req.http.x-jraw = "e" + regsub(req.http.Accept, "(?i)^.*?(?:^|,)\s*+application/vnd\.pypi\.simple\.(?:v1|latest)\+json\s*+(?:;\s*+q\s*+=\s*+([0-9.]*+))?\s*+(?:;[^,]*+)?(?:,|$).*$", "\1");
    } elsif (req.http.Accept ~ "(?i)(?:^|,)\s*+(?:application|\*)/\*\s*+(?:;\s*+q\s*+=\s*+[0-9.]*+)?\s*+(?:;[^,]*+)?(?:,|$)") {
        set req.http.x-jraw = "w" + regsub(req.http.Accept, "(?i)^.*?(?:^|,)\s*+(?:application|\*)/\*\s*+(?:;\s*+q\s*+=\s*+([0-9.]*+))?\s*+(?:;[^,]*+)?(?:,|$).*$", "\1");
    } else {
        set req.http.x-jraw = "n";
    }
    if (req.http.Accept ~ "(?i)(?:^|,)\s*+(?:text/html|application/vnd\.pypi\.simple\.(?:v1|latest)\+html)\s*+(?:;\s*+q\s*+=\s*+[0-9.]*+)?\s*+(?:;[^,]*+)?(?:,|$)") {
        set req.http.x-hraw = "e" + regsub(req.http.Accept, "(?i)^.*?(?:^|,)\s*+(?:text/html|application/vnd\.pypi\.simple\.(?:v1|latest)\+html)\s*+(?:;\s*+q\s*+=\s*+([0-9.]*+))?\s*+(?:;[^,]*+)?(?:,|$).*$", "\1");
    } elsif (req.http.Accept ~ "(?i)(?:^|,)\s*+(?:text|\*)/\*\s*+(?:;\s*+q\s*+=\s*+[0-9.]*+)?\s*+(?:;[^,]*+)?(?:,|$)") {
        set req.http.x-hraw = "w" + regsub(req.http.Accept, "(?i)^.*?(?:^|,)\s*+(?:text|\*)/\*\s*+(?:;\s*+q\s*+=\s*+([0-9.]*+))?\s*+(?:;[^,]*+)?(?:,|$).*$", "\1");
    } else {
        set req.http.x-hraw = "n";
    }
    set req.http.x-raw = req.http.x-jraw;
    call wheelwright_quality;
    set req.http.x-jq = req.http.x-q;
    set req.http.x-raw = req.http.x-hraw;
    call wheelwright_quality;
    set req.http.x-hq = req.http.x-q;
    # req.http.x-jq / x-hq: "NNNNh" (four digits, how)
    set req.http.x-pair = req.http.x-jq + ":" + req.http.x-hq;
    if (req.http.x-pair ~ "^0000.:0000.$") {
        set req.http.x-format = "";
    } elsif (req.http.x-pair ~ "^(\d{4})e:\1.$") {
        set req.http.x-format = "json";
    } elsif (req.http.x-pair ~ "^(\d{4}).:\1.$") {
        set req.http.x-format = "html";
    } elsif (std.integer(regsub(req.http.x-jq, "^(\d{4}).$", "\1"), 0) > std.integer(regsub(req.http.x-hq, "^(\d{4}).$", "\1"), 0)) {
        set req.http.x-format = "json";
    } else {
        set req.http.x-format = "html";
    }
    unset req.http.x-jraw;
    unset req.http.x-hraw;
    unset req.http.x-jq;
    unset req.http.x-hq;
    unset req.http.x-q;
    unset req.http.x-raw;
    unset req.http.x-pair;
}

# req.http.x-raw ("e0.5", "w", "n", ...) -> req.http.x-q ("0500e", "1000w", "0000n", ...)
sub wheelwright_quality {
    if (req.http.x-raw ~ "^[ew]$" || req.http.x-raw ~ "^[ew]1(?:\.0{0,3})?$") {
        set req.http.x-q = "1000" + regsub(req.http.x-raw, "^([ew]).*$", "\1");
    } elsif (req.http.x-raw ~ "^[ew]0?\.?0{0,3}$") {
        set req.http.x-q = "0000" + regsub(req.http.x-raw, "^([ew]).*$", "\1");
    } elsif (req.http.x-raw ~ "^[ew]0?\.\d$") {
        set req.http.x-q = regsub(req.http.x-raw, "^([ew])0?\.(\d)$", "0\200\1");
    } elsif (req.http.x-raw ~ "^[ew]0?\.\d\d$") {
        set req.http.x-q = regsub(req.http.x-raw, "^([ew])0?\.(\d)(\d)$", "0\2\30\1");
    } elsif (req.http.x-raw ~ "^[ew]0?\.\d\d\d$") {
        set req.http.x-q = regsub(req.http.x-raw, "^([ew])0?\.(\d\d\d)$", "0\2\1");
    } else {
        set req.http.x-q = "0000n";
    }
}

# One site: the cache key is the URL alone (the builtin adds the Host header, which lets any client
# split a page into as many cache entries, each fetched from the origin, as Host values it invents).
sub vcl_hash {
    hash_data(req.url);
    return (lookup);
}

sub vcl_backend_response {
    # The origin's Cache-Control (s-maxage) sets the TTL. Pages: served stale for a minute while one
    # fetch revalidates them, and for a day when the origin fails.
    if (beresp.http.Cache-Control ~ "stale-while-revalidate") {
        set beresp.grace = 60s;
    }
    if (beresp.http.Cache-Control ~ "stale-if-error") {
        set beresp.grace = 1d;       # vcl_recv limits it to a minute while the origin is healthy
    }
    if (beresp.status >= 500 && bereq.is_bgfetch) {
        return (abandon);            # keep serving the stale object
    }
    return (deliver);
}

sub vcl_backend_error {
    # The origin is down and nothing stale was there to serve.
    set beresp.http.Cache-Control = "no-store";
}

sub vcl_deliver {
    if (obj.hits > 0) {
        set resp.http.X-Cache = "HIT";
    } else {
        set resp.http.X-Cache = "MISS";
    }
    set resp.http.X-Cache-Hits = obj.hits;
    unset resp.http.xkey;            # the edge's business, not the client's
}
