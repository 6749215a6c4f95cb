"""
The OpenAPI 3.0 document of the admin API, served at
C{GET /api/v1/openapi.json}.

The resource schemas are not written here: they are generated from the
model (L{gateway.model.schema.jsonSchema} of the classes of
L{gateway.model.resources}: C{Certificate}, C{Server}, C{Cluster},
C{Consumer}, C{API}, C{Routing}), the same field specs that parse and
validate the admin's input, so the document cannot drift from what the API
accepts.  What this module adds is
the shape of the API around them (see L{gateway.admin.api}): the routes,
their statuses and the error shape.

Each kind has three generated schemas:

  - C{Server} (and C{Cluster}, C{API}, C{Routing}): a resource as the admin
    answers it, every field present, defaults filled in;
  - C{ServerCreate}: the body of a C{POST}: as above, but a field with a
    default may be left out or sent as C{null} (the default is taken);
  - C{ServerReplace}: the body of a C{PUT} to C{/servers/{name}}: the same,
    and C{name} may be left out (it must match the URL when given).
"""

from __future__ import annotations

import copy
import json
from typing import Any, Dict, List, Optional

from twisted.web.resource import IResource, Resource

import gateway
from gateway.cache.engine import RESULTS as CACHE_RESULTS
from gateway.model.resources import RESOURCE_CLASSES
from gateway.model.schema import jsonSchema
from gateway.telemetry.stats import ERROR_KINDS, HTTP2_COUNTS, REJECT_REASONS

#: OpenAPI version of the document.
OPENAPI_VERSION = "3.0.3"
PREFIX = "/api/v1"

#: kind (URL segment) -> (schema name, singular for summaries, tag).
KIND_NAMES: Dict[str, Any] = {
    "certificates": ("Certificate", "certificate", "Certificates"),
    "servers": ("Server", "server", "Servers"),
    "clusters": ("Cluster", "cluster", "Clusters"),
    "consumers": ("Consumer", "consumer", "Consumers"),
    "apis": ("API", "API", "APIs"),
    "routings": ("Routing", "routing", "Routings"),
}

_JSON = "application/json"

#: The headers of the store revision and of a write's propagation.
REVISION = {
    "description": (
        "The store revision the answer read, or the one the write made. On /proxies and"
        " /stats: the revision every proxy process of this gateway serves (absent while"
        " none serves)."
    ),
    "schema": {"type": "integer", "minimum": 0},
}
PROPAGATION = {
    "description": (
        "Whether the change serves on every proxy the write waited for: every proxy"
        " process (worker) of this gateway, or with ?wait=proxies every live proxy"
        " registered in a shared (etcd) store. The write waits at most"
        " admin.propagationTimeout seconds (2 by default), then answers `incomplete`: the"
        " change is committed and reaches the rest shortly. Absent when the write changed"
        " nothing."
    ),
    "schema": {"type": "string", "enum": ["complete", "incomplete"]},
}


def _headers(
    revision: Optional[bool] = True, propagation: Optional[bool] = False
) -> Dict[str, Any]:
    """
    @return: the C{headers} of a response: C{X-Gateway-Revision} (and
        C{X-Gateway-Propagation}), required when C{True}, optional when
        L{None}, absent when L{False}.
    """
    headers: Dict[str, Any] = {}
    for name, value, spec in (
        ("X-Gateway-Revision", revision, REVISION),
        ("X-Gateway-Propagation", propagation, PROPAGATION),
    ):
        if value is not False:
            headers[name] = dict(spec, required=bool(value))
    return headers


#: The 400 of a query parameter, which every operation may get.
BAD_QUERY = (
    "a query parameter the operation does not take (field names it; an operation takes"
    " only the parameters it lists), or a bad value of one it takes."
)

#: The C{wait} query parameter of the writes.
WAIT_PARAMETER = {
    "name": "wait",
    "in": "query",
    "required": False,
    "description": (
        "What the write waits for before it answers (at most admin.propagationTimeout"
        " seconds): `workers` (the default), every proxy process of this gateway; `proxies`,"
        " every live proxy registered in a shared (etcd) store too."
    ),
    "schema": {"type": "string", "enum": ["workers", "proxies"], "default": "workers"},
}

#: A valid body for each kind, shown in the document (and sent to a real
#: admin by the tests, so an example that stops being valid fails them).
EXAMPLES: Dict[str, Dict[str, Any]] = {
    # A self-signed example made for this document (P-256, valid to 2125):
    # its key guards nothing.
    "certificates": {
        "name": "example",
        "cert": (
            "-----BEGIN CERTIFICATE-----\n"
            "MIIBZTCCAQugAwIBAgIUXywWBR+ULKeBTipn7jMwSU2z7W0wCgYIKoZIzj0EAwIw\n"
            "GjEYMBYGA1UEAwwPYXBpLmV4YW1wbGUuY29tMCAXDTI2MDEwMTAwMDAwMFoYDzIx\n"
            "MjUxMjA4MDAwMDAwWjAaMRgwFgYDVQQDDA9hcGkuZXhhbXBsZS5jb20wWTATBgcq\n"
            "hkjOPQIBBggqhkjOPQMBBwNCAATwEOuAVhPaXY6191kNiSk3HgJLDmr+qwvXrLHB\n"
            "7KBs5xgERWpT9j9HdETaV/knkbs35A4Tp7xpe2wm7r+8AxmCoy0wKzApBgNVHREE\n"
            "IjAggg9hcGkuZXhhbXBsZS5jb22CDSouZXhhbXBsZS5vcmcwCgYIKoZIzj0EAwID\n"
            "SAAwRQIgZWf56IRhxhWGkBNinalkfa8Hj9DJApEqjCS+KBqcs0YCIQCcuGtSA5JK\n"
            "tQDtHDL92Ok5TOkmcHfvBgJ8h0A/5HsCfg==\n"
            "-----END CERTIFICATE-----\n"
        ),
        "key": (
            "-----BEGIN PRIVATE KEY-----\n"
            "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg6NpUSV7J0HcZkRSb\n"
            "RkW2vnW3zv2/WqneV7WLlBH+VrahRANCAATwEOuAVhPaXY6191kNiSk3HgJLDmr+\n"
            "qwvXrLHB7KBs5xgERWpT9j9HdETaV/knkbs35A4Tp7xpe2wm7r+8AxmC\n"
            "-----END PRIVATE KEY-----\n"
        ),
        "snis": ["api.example.com", "*.example.org"],
    },
    "servers": {
        "name": "users-1",
        "addr": "10.0.0.11:8080",
        "weight": 2,
        "maxQPS": 500,
        "healthCheck": {"path": "/health", "interval": 5, "timeout": 2},
        "circuitBreaker": {"failureRateToOpen": 50, "minRequests": 20, "openTimeout": 30},
        "tls": {"verify": True, "serverName": "users.internal"},
    },
    "clusters": {"name": "users", "servers": ["users-1"], "loadBalance": "least-connections"},
    "consumers": {
        "name": "mobile-app",
        "customId": "c-1042",
        "groups": ["gold"],
        "credentials": [{"type": "key", "key": "k7Rj2Qw9Lx4Pz8Vn3Ts6Ym1B"}],
    },
    "apis": {
        "name": "get-user",
        "urlPattern": "/users/{id:int}",
        "method": "GET",
        "nodes": [{"cluster": "users", "urlRewrite": "/v2/users/{id}", "timeout": 5}],
        "rateLimit": {"rate": 100, "burst": 200, "key": "ip"},
    },
    "routings": {
        "name": "users-canary",
        "api": "get-user",
        "cluster": "users",
        "conditions": [{"source": "header", "name": "X-Canary", "op": "eq", "value": "1"}],
        "strategy": "split",
        "trafficRate": 10,
    },
}


def toOpenAPI30(schema: Any) -> Any:
    """
    Turn a JSON Schema as L{gateway.model.schema.jsonSchema} writes it into an
    OpenAPI 3.0 Schema Object: a numeric C{exclusiveMinimum} (or
    C{exclusiveMaximum}), as newer JSON Schema drafts write it, becomes the
    boolean form OpenAPI 3.0 wants, with the bound in C{minimum}.

    @return: a converted copy.
    """
    if isinstance(schema, list):
        return [toOpenAPI30(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: toOpenAPI30(value) for key, value in schema.items()}
    for exclusive, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        value = out.get(exclusive)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[bound] = value
            out[exclusive] = True
    return out


def acceptNulls(schema: Dict[str, Any]) -> Dict[str, Any]:
    """
    @return: a copy of an object schema in which every optional property
        (in nested objects too) may also be C{null}: the admin reads a
        C{null} for a field that has a default as the default.  An
        enumeration lists C{null} among its values (OpenAPI 3.0.3: a
        nullable enum must).  The rules of an object (its C{allOf}) are
        left as they are: where they require a property, C{null} is not
        the property.
    """
    schema = copy.deepcopy(schema)

    def visit(s: Any) -> None:
        if not isinstance(s, dict):
            return
        properties = s.get("properties")
        if isinstance(properties, dict):
            required = set(s.get("required", ()))
            for name, prop in properties.items():
                visit(prop)
                if name not in required:
                    prop["nullable"] = True
                    if "enum" in prop and None not in prop["enum"]:
                        prop["enum"] = prop["enum"] + [None]
        if "items" in s:
            visit(s["items"])

    visit(schema)
    return schema


def _withoutRequired(schema: Dict[str, Any], name: str) -> Dict[str, Any]:
    schema = copy.deepcopy(schema)
    required = [r for r in schema.get("required", ()) if r != name]
    if required:
        schema["required"] = required
    else:
        schema.pop("required", None)
    return schema


def resourceSchemas() -> Dict[str, Dict[str, Any]]:
    """
    @return: the generated component schemas of every kind: C{Server},
        C{ServerCreate}, C{ServerReplace}, and so on.
    """
    schemas: Dict[str, Dict[str, Any]] = {}
    for kind, cls in RESOURCE_CLASSES.items():
        schemaName = KIND_NAMES[kind][0]
        resource = toOpenAPI30(jsonSchema(cls))
        schemas[schemaName] = resource
        create = acceptNulls(resource)
        schemas[schemaName + "Create"] = create
        replace = _withoutRequired(create, "name")
        replace["description"] = (
            resource.get("description", "") + " The name may be left out: it is the URL's."
        ).strip()
        schemas[schemaName + "Replace"] = replace
    return schemas


def _ref(name: str) -> Dict[str, str]:
    return {"$ref": "#/components/schemas/" + name}


def _counts(keys: Any) -> Dict[str, Any]:
    return {
        "type": "object",
        "properties": {k: {"type": "integer", "minimum": 0} for k in keys},
        "required": list(keys),
        "additionalProperties": {"type": "integer", "minimum": 0},
    }


def certificateStats() -> Dict[str, Any]:
    """
    @return: the schema of a certificate in the stats: what the admin shows
        of it (L{gateway.model.resources.Certificate.derived}), its SNIs,
        and the seconds left until it expires.
    """
    from gateway.model.resources import Certificate

    properties: Dict[str, Any] = {
        name: copy.deepcopy(dict(schema)) for name, schema in Certificate.derived.items()
    }
    properties["snis"] = {"type": "array", "items": {"type": "string"}}
    properties["expiresIn"] = {
        "type": "number",
        "description": "seconds until notAfter (negative once expired)",
    }
    return {
        "type": "object",
        "properties": properties,
        "required": ["subject", "sans", "snis", "notAfter", "fingerprint", "expiresIn"],
    }


def _statsSchemas() -> Dict[str, Dict[str, Any]]:
    anything: Dict[str, Any] = {"type": "object", "additionalProperties": True}
    latency = {
        "type": "object",
        "description": "Time from arrival to the answer's status, in milliseconds.",
        "properties": {
            "count": {"type": "integer", "minimum": 0},
            "sumMs": {"type": "number"},
            "p50": {"type": "number", "nullable": True, "description": "estimated, ms"},
            "p99": {"type": "number", "nullable": True, "description": "estimated, ms"},
            "buckets": {
                "type": "array",
                "description": 'cumulative [le, count] pairs, le in ms, "+Inf" last',
                "items": {
                    "type": "array",
                    "minItems": 2,
                    "maxItems": 2,
                    "items": {"oneOf": [{"type": "number"}, {"type": "string", "enum": ["+Inf"]}]},
                },
            },
        },
        "required": ["count", "sumMs", "p50", "p99", "buckets"],
    }
    breaker = {
        "type": "object",
        "nullable": True,
        "description": "A circuit breaker's state (null: the server has none).",
        "properties": {
            "state": {"type": "string", "enum": ["closed", "open", "half-open"]},
            "since": {"type": "number"},
            "failureRate": {"type": "number"},
            "requests": {"type": "integer"},
            "retryAfter": {"type": "number"},
            "transitions": {"type": "array", "items": anything},
            "counters": anything,
            "trials": anything,
        },
        "required": ["state"],
    }
    counted = {
        "requests": {"type": "integer", "minimum": 0},
        "errors": _ref("ErrorCounts"),
        "rejects": _ref("RejectCounts"),
        "latency": _ref("Latency"),
    }
    apiStats = {
        "type": "object",
        "properties": dict(counted, breaker=_ref("BreakerState"), cache=_ref("CacheCounts")),
        "required": ["requests", "errors", "rejects", "latency"],
    }
    count = {"type": "integer", "minimum": 0}
    cacheCounts = {
        "type": "object",
        "description": (
            "An API's response cache (when it has one): its answers by what the cache did:"
            " hit (from the cache), collapsed (from another request's forward), stale"
            " (forwarded to revalidate a stale entry), revalidated (of those, refreshed by a"
            " 304), miss (forwarded), bypass (not looked up: a method that is not cached,"
            " Redis away); stored: answers stored; hitRatio: (hit + collapsed) / (hit +"
            " collapsed + stale + miss), null before any."
        ),
        "properties": {
            **{key: count for key in CACHE_RESULTS},
            "stored": count,
            "hitRatio": {"type": "number", "nullable": True, "minimum": 0, "maximum": 1},
        },
        "required": list(CACHE_RESULTS) + ["stored", "hitRatio"],
    }
    cacheMemory = {
        "type": "object",
        "description": (
            "The memory stores of the response cache (one per proxy process, summed): bytes"
            " held, their limit (proxy.cache.memoryBytes each), entries, evictions (entries"
            " dropped to make room)."
        ),
        "properties": {key: count for key in ("bytes", "limit", "entries", "evictions")},
        "required": ["bytes", "limit", "entries", "evictions"],
    }
    serverStats = {
        "type": "object",
        "properties": dict(
            counted,
            addr={"type": "string"},
            active={"type": "integer"},
            latencyEWMA={
                "type": "number",
                "description": "moving average of the response time, seconds",
            },
            healthy={"type": "boolean"},
            ejected={"type": "boolean"},
            upstreamRequests={"type": "integer", "minimum": 0},
            upstreamFailures={"type": "integer", "minimum": 0},
            health=dict(anything, nullable=True, description="the active health check"),
            breaker=_ref("BreakerState"),
            discovered={
                "type": "object",
                "description": (
                    "how DNS discovery found this server (absent for a configured one):"
                    " type A (an address of the host name of server) or SRV (a record of"
                    " the discovery of cluster), the name looked up (dns), the address;"
                    " for SRV the record's target, priority and weight"
                ),
                "properties": {
                    "type": {"type": "string", "enum": ["A", "SRV"]},
                    "server": {"type": "string"},
                    "cluster": {"type": "string"},
                    "dns": {"type": "string"},
                    "address": {"type": "string"},
                    "target": {"type": "string"},
                    "priority": {"type": "integer"},
                    "weight": {"type": "integer"},
                },
                "required": ["type", "dns", "address"],
            },
        ),
        "required": ["requests", "errors", "rejects", "latency"],
    }
    stats = {
        "type": "object",
        "description": (
            "Statistics of the proxies: per API and per server requests, errors"
            " by kind, rejects by reason, latency, breaker and health state."
            " With several proxies, the sum, and each proxy's under proxies."
        ),
        "properties": {
            "totals": {
                "type": "object",
                "properties": {
                    "requests": {"type": "integer", "minimum": 0},
                    "errors": {"type": "integer", "minimum": 0},
                    "rejects": {"type": "integer", "minimum": 0},
                    "latency": _ref("Latency"),
                },
                "required": ["requests", "errors", "rejects"],
            },
            "apis": {"type": "object", "additionalProperties": _ref("APIStats")},
            "servers": {"type": "object", "additionalProperties": _ref("ServerStats")},
            "certificates": {
                "type": "object",
                "description": "The certificates this gateway serves (never their keys).",
                "additionalProperties": _ref("CertificateStats"),
            },
            "sendTimeouts": {
                "type": "integer",
                "minimum": 0,
                "description": "Clients cut off for taking nothing of their answer",
            },
            "http2": {
                "type": "object",
                "description": (
                    "HTTP/2 to clients: connections made, streams opened (one request"
                    " each), streams the clients reset, connections ended for a flood"
                    " (GOAWAY ENHANCE_YOUR_CALM)."
                ),
                "properties": {key: {"type": "integer", "minimum": 0} for key in HTTP2_COUNTS},
            },
            "revision": {"type": "integer", "nullable": True},
            "at": {"type": "number", "nullable": True},
            "proxies": {"type": "object", "additionalProperties": _ref("Stats")},
            "discovery": {
                "type": "object",
                "description": (
                    "DNS discovery: each host name (hosts) and SRV name (services) looked"
                    " up, with what it gives (values), its TTL, when it was last answered"
                    " and is looked up next, and since when its lookups fail (null: they"
                    " do not), how many times, why"
                ),
                "properties": {
                    "hosts": {"type": "object", "additionalProperties": _ref("DiscoveredName")},
                    "services": {
                        "type": "object",
                        "additionalProperties": _ref("DiscoveredName"),
                    },
                },
            },
            "tracing": {
                "type": "object",
                "description": (
                    "Spans of the tracing: section (absent without it): exported, dropped"
                    " (the export queue was full), failed (the collector did not take"
                    " them), queued."
                ),
                "properties": {
                    key: {"type": "integer", "minimum": 0}
                    for key in ("exported", "dropped", "failed", "queued")
                },
            },
            "limits": _ref("FleetLimits"),
            "cache": _ref("CacheMemory"),
        },
    }
    discoveredName = {
        "type": "object",
        "properties": {
            "type": {"type": "string", "enum": ["A", "SRV"]},
            "values": {
                "type": "array",
                "description": "IP addresses (A), or SRV records (priority, weight, port, target)",
                "items": {},
            },
            "ttl": {"type": "number", "nullable": True},
            "lastAnswer": {"type": "number", "nullable": True},
            "nextLookup": {"type": "number", "nullable": True},
            "failingSince": {"type": "number", "nullable": True},
            "failures": {"type": "integer", "minimum": 0},
            "error": {"type": "string", "nullable": True},
        },
        "required": ["type", "values"],
    }
    # -- cluster-wide limits (limits.store) ---
    modeCounts = {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0}}
    fleetLimits = {
        "type": "object",
        "description": (
            "The fleet's limits on Redis (limits.store), when configured: who decides now"
            " (shared: Redis; else limits.onFailure's local, open or closed while Redis is"
            " away), the proxy processes in each mode, the switches to each mode, the live"
            " gateways a limit is divided by in local mode, and the calls to Redis."
        ),
        "properties": {
            "store": {"type": "string"},
            "onFailure": {"type": "string", "enum": ["local", "open", "closed"]},
            "mode": {"type": "string", "enum": ["shared", "local", "open", "closed"]},
            "modes": modeCounts,
            "switches": modeCounts,
            "since": {"type": "number"},
            "gateways": {"type": "integer", "minimum": 1},
            "redis": {"type": "string", "enum": ["up", "down"]},
            "calls": {"type": "integer", "minimum": 0},
            "timeouts": {"type": "integer", "minimum": 0},
            "errors": {"type": "integer", "minimum": 0},
            "leases": {"type": "integer", "minimum": 0},
        },
        "required": ["mode", "modes", "switches", "gateways", "redis"],
    }
    # -- end cluster-wide limits ---
    return {
        "CacheCounts": cacheCounts,
        "CacheMemory": cacheMemory,
        "FleetLimits": fleetLimits,
        "ErrorCounts": _counts(ERROR_KINDS),
        "RejectCounts": _counts(REJECT_REASONS),
        "Latency": latency,
        "BreakerState": breaker,
        "APIStats": apiStats,
        "ServerStats": serverStats,
        "CertificateStats": certificateStats(),
        "Stats": stats,
        "DiscoveredName": discoveredName,
    }


def _otherSchemas() -> Dict[str, Dict[str, Any]]:
    count = {"type": "integer", "minimum": 0}
    return {
        "CachePurge": {
            "type": "object",
            "description": (
                "What a purge did: the memory entries this gateway's proxy processes dropped,"
                " how many of them confirmed, whether all did, whether Redis (the fleet's"
                " entries) was purged, and then the API's new generation there."
            ),
            "properties": {
                "api": {"type": "string"},
                "entries": count,
                "processes": count,
                "complete": {"type": "boolean"},
                "redis": {"type": "boolean"},
                "generation": {"type": "integer", "minimum": 1},
            },
            "required": ["api", "entries", "processes", "complete", "redis"],
        },
        "Error": {
            "type": "object",
            "description": "Every error answer.",
            "properties": {
                "error": {"type": "string", "description": "what went wrong, for a human"},
                "field": {
                    "type": "string",
                    "minLength": 1,
                    "description": "the field at fault (dotted path); absent when no field is",
                },
                "errors": {
                    "type": "array",
                    "description": (
                        "on 400: every error of the body, the first one being error and"
                        " field; those that break a rule the schema states in words only"
                        " (not the schema itself) are marked rule: true. On a refused"
                        " batch or configuration (409): every reference it breaks"
                    ),
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "properties": {
                            "error": {"type": "string"},
                            "field": {"type": "string", "minLength": 1},
                            "rule": {
                                "type": "boolean",
                                "enum": [True],
                                "description": "the body fits the schema but breaks a rule"
                                " the schema states in words only",
                            },
                        },
                        "required": ["error"],
                        "additionalProperties": False,
                    },
                },
                "users": {
                    "type": "array",
                    "description": "on a refused delete: the resources that still use it",
                    "items": {
                        "type": "object",
                        "properties": {
                            "kind": {"type": "string"},
                            "name": {"type": "string"},
                            "field": {"type": "string"},
                        },
                    },
                },
            },
            "required": ["error"],
        },
        "Proxy": {
            "type": "object",
            "properties": {
                "addr": {"type": "string"},
                "version": {"type": "string"},
                "startedAt": {"type": "string"},
                "revision": {
                    "type": "integer",
                    "nullable": True,
                    "description": "the store revision every proxy process of it serves",
                },
                "ready": {
                    "type": "boolean",
                    "description": (
                        "it serves its configuration: with workers, every worker once it"
                        " started, then one at least (see each worker's own)"
                    ),
                },
                "workers": {
                    "type": "array",
                    "description": (
                        "with proxy workers: each configured one, and the revision it serves"
                    ),
                    "items": {
                        "type": "object",
                        "properties": {
                            "worker": {"type": "integer"},
                            "pid": {
                                "type": "integer",
                                "nullable": True,
                                "description": "null while it is restarted",
                            },
                            "revision": {"type": "integer", "nullable": True},
                            "ready": {
                                "type": "boolean",
                                "description": (
                                    "it listens and serves (false while it starts, is"
                                    " restarted or cannot start)"
                                ),
                            },
                        },
                    },
                },
            },
        },
        "Health": {
            "type": "object",
            "properties": {"status": {"type": "string", "enum": ["ok"]}},
            "required": ["status"],
        },
        "Readiness": {
            "type": "object",
            "properties": {
                "status": {"type": "string", "enum": ["ready", "starting", "unavailable"]}
            },
            "required": ["status"],
        },
    }


def _error(description: str, headers: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    response: Dict[str, Any] = {
        "description": description,
        "content": {_JSON: {"schema": _ref("Error")}},
    }
    if headers:
        response["headers"] = headers
    return response


def _responses() -> Dict[str, Dict[str, Any]]:
    return {
        "BadRequest": _error(
            "Invalid (every error in errors): not JSON, not an object, fields that the"
            " schema refuses, or a body that fits the schema but breaks a rule it states in"
            " words only (such errors marked rule: true): a name other than the URL's, a URL"
            " pattern naming a parameter twice or holding a regular expression the linear"
            " engine refuses, a rewrite naming a parameter the pattern lacks or a variable it"
            " does not know, two nodes with one attrName, a filter that refuses its config...;"
            " or " + BAD_QUERY
        ),
        "BadPath": _error(
            "A path the server refuses before any operation: an encoded slash or backslash,"
            " a dot segment, an empty segment (a name cannot hold them); or " + BAD_QUERY
        ),
        "BadQuery": _error(BAD_QUERY[0].upper() + BAD_QUERY[1:]),
        "UnsupportedMediaType": _error("The body is not sent as JSON (Content-Type)."),
        "InternalError": _error(
            "The store holds a resource this gateway cannot read, or a provider of the"
            " proxies or statistics failed."
        ),
        "Unauthorized": _error(
            "No or bad admin token.",
            {"WWW-Authenticate": {"required": True, "schema": {"type": "string"}}},
        ),
        "NotFound": _error("No such resource.", _headers(revision=None)),
        "MethodNotAllowed": _error(
            "A method the path does not take (any path of the API).",
            {"Allow": {"required": True, "schema": {"type": "string"}}},
        ),
        "Conflict": _error(
            "Refused: a name already taken, a reference to a missing resource, a resource"
            " still in use, a change the proxies cannot compile, or a race lost too often.",
            _headers(revision=None),
        ),
        "TooLarge": _error("The request body is too large."),
        "StoreUnavailable": _error("The store cannot be reached."),
    }


def _use(name: str) -> Dict[str, str]:
    return {"$ref": "#/components/responses/" + name}


def _ok(description: str, schema: Dict[str, Any], headers: Any = None) -> Dict[str, Any]:
    response: Dict[str, Any] = {
        "description": description,
        "content": {_JSON: {"schema": schema}},
    }
    if headers:
        response["headers"] = headers
    return response


WRITE_DESCRIPTION = (
    "Answers once the change serves on every proxy process (worker) of this gateway, or"
    " with `?wait=proxies` on every live proxy registered in a shared (etcd) store; after"
    " admin.propagationTimeout seconds (2 by default) it answers anyway, with"
    " `X-Gateway-Propagation: incomplete`. `X-Gateway-Revision` names the store revision"
    " the write made (or read, when it changed nothing)."
)


def _writeErrors() -> Dict[str, Any]:
    # Every error a POST or a PUT can get.
    return {
        "400": _use("BadRequest"),
        "401": _use("Unauthorized"),
        "409": _use("Conflict"),
        "413": _use("TooLarge"),
        "415": _use("UnsupportedMediaType"),
        "500": _use("InternalError"),
        "503": _use("StoreUnavailable"),
    }


def _kindPaths(kind: str) -> Dict[str, Dict[str, Any]]:
    schemaName, singular, tag = KIND_NAMES[kind]
    title = schemaName
    location = {
        "Location": {
            "required": True,
            "description": "the URL of the new resource",
            "schema": {"type": "string"},
        }
    }
    nameParameter = {
        "name": "name",
        "in": "path",
        "required": True,
        "description": f"the {singular}'s name",
        "schema": toOpenAPI30(jsonSchema(RESOURCE_CLASSES[kind]))["properties"]["name"],
    }
    collection = {
        "get": {
            "tags": [tag],
            "operationId": f"list{title}s",
            "summary": f"List the {kind}, sorted by name",
            "responses": {
                "200": _ok(
                    f"Every {singular}.",
                    {"type": "array", "items": _ref(schemaName)},
                    _headers(),
                ),
                "401": _use("Unauthorized"),
                "503": _use("StoreUnavailable"),
            },
        },
        "post": {
            "tags": [tag],
            "operationId": f"create{title}",
            "summary": f"Create a {singular}",
            "description": WRITE_DESCRIPTION,
            "parameters": [WAIT_PARAMETER],
            "requestBody": {
                "required": True,
                "content": {
                    _JSON: {"schema": _ref(schemaName + "Create"), "example": EXAMPLES[kind]}
                },
            },
            "responses": {
                "201": _ok(
                    f"Created; the {singular} as stored.",
                    _ref(schemaName),
                    dict(location, **_headers(propagation=True)),
                ),
                **_writeErrors(),
            },
        },
    }
    item = {
        "parameters": [nameParameter],
        "get": {
            "tags": [tag],
            "operationId": f"get{title}",
            "summary": f"Read a {singular}",
            "responses": {
                "200": _ok(f"The {singular}.", _ref(schemaName), _headers()),
                "400": _use("BadPath"),
                "401": _use("Unauthorized"),
                "404": _use("NotFound"),
                "503": _use("StoreUnavailable"),
            },
        },
        "put": {
            "tags": [tag],
            "operationId": f"replace{title}",
            "summary": f"Create or replace a {singular}",
            "description": WRITE_DESCRIPTION,
            "parameters": [WAIT_PARAMETER],
            "requestBody": {
                "required": True,
                "content": {
                    _JSON: {
                        "schema": _ref(schemaName + "Replace"),
                        "example": {k: v for k, v in EXAMPLES[kind].items() if k != "name"},
                    }
                },
            },
            "responses": {
                "200": _ok(
                    f"Replaced (or unchanged); the {singular} as stored.",
                    _ref(schemaName),
                    _headers(propagation=None),
                ),
                "201": _ok(
                    f"Created; the {singular} as stored.",
                    _ref(schemaName),
                    dict(location, **_headers(propagation=True)),
                ),
                **_writeErrors(),
            },
        },
        "delete": {
            "tags": [tag],
            "operationId": f"delete{title}",
            "summary": f"Delete a {singular} that nothing uses",
            "description": WRITE_DESCRIPTION,
            "parameters": [WAIT_PARAMETER],
            "responses": {
                "204": {"description": "Deleted.", "headers": _headers(propagation=True)},
                "400": _use("BadRequest"),
                "401": _use("Unauthorized"),
                "404": _use("NotFound"),
                "409": _use("Conflict"),
                "500": _use("InternalError"),
                "503": _use("StoreUnavailable"),
            },
        },
    }
    return {f"{PREFIX}/{kind}": collection, f"{PREFIX}/{kind}/{{name}}": item}


def _paths() -> Dict[str, Dict[str, Any]]:
    public: List[Dict[str, List[str]]] = []
    paths: Dict[str, Dict[str, Any]] = {
        "/healthz": {
            "get": {
                "tags": ["Status"],
                "operationId": "healthz",
                "summary": "The admin site is up",
                "security": public,
                "responses": {"200": _ok("Up.", _ref("Health"))},
            }
        },
        "/readyz": {
            "get": {
                "tags": ["Status"],
                "operationId": "readyz",
                "summary": "The gateway has loaded its configuration and serves it",
                "security": public,
                "responses": {
                    "200": _ok("Ready.", _ref("Readiness")),
                    "503": _ok(
                        "Still starting (with workers: until every worker serves), or no"
                        " proxy worker serves (all restarting, or unable to start).",
                        _ref("Readiness"),
                    ),
                },
            }
        },
        "/metrics": {
            "get": {
                "tags": ["Status"],
                "operationId": "metrics",
                "summary": "Prometheus metrics",
                "responses": {
                    "200": {
                        "description": "The Prometheus text exposition format.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    "401": _use("Unauthorized"),
                    "404": _use("NotFound"),
                },
            }
        },
        PREFIX + "/openapi.json": {
            "get": {
                "tags": ["Status"],
                "operationId": "openapi",
                "summary": "This document",
                "security": public,
                "responses": {"200": _ok("The OpenAPI document.", {"type": "object"})},
            }
        },
    }
    for kind in KIND_NAMES:
        paths.update(_kindPaths(kind))
    paths[PREFIX + "/apis/{name}/cache"] = {
        "parameters": [
            {
                "name": "name",
                "in": "path",
                "required": True,
                "description": "the API's name",
                "schema": toOpenAPI30(jsonSchema(RESOURCE_CLASSES["apis"]))["properties"]["name"],
            }
        ],
        "delete": {
            "tags": [KIND_NAMES["apis"][2]],
            "operationId": "purgeAPICache",
            "summary": "Purge an API's response cache",
            "description": (
                "Drops the API's cache entries: in the memory of every proxy process of this"
                " gateway (the answer waits for each, at most admin.propagationTimeout"
                " seconds: complete says whether all confirmed), and, when the gateways"
                " share a Redis (limits.store), in Redis for every gateway at once (a new"
                " generation of the API's entries) and in the memory of the other gateways'"
                " proxy processes within proxy.cache.purgePoll seconds."
            ),
            "responses": {
                "200": _ok("Purged.", _ref("CachePurge"), _headers(revision=None)),
                "400": _use("BadPath"),
                "401": _use("Unauthorized"),
                "404": _use("NotFound"),
                "500": _use("InternalError"),
                "503": _error(
                    "The store cannot be reached, or Redis did not take the purge (this"
                    " gateway's memory entries are purged, the fleet's are not)."
                ),
            },
        },
    }
    paths[PREFIX + "/proxies"] = {
        "get": {
            "tags": ["Status"],
            "operationId": "listProxies",
            "summary": "The live proxies, their address, version and the revision they serve",
            "responses": {
                "200": _ok(
                    "The proxies: this gateway's, or with a shared (etcd) store every"
                    " registered one; each with the store revision all its proxy processes"
                    " serve and, with workers, each worker's.",
                    {"type": "array", "items": _ref("Proxy")},
                    _headers(revision=None),
                ),
                "401": _use("Unauthorized"),
                "500": _use("InternalError"),
                "503": _use("StoreUnavailable"),
            },
        }
    }
    paths[PREFIX + "/stats"] = {
        "get": {
            "tags": ["Status"],
            "operationId": "stats",
            "summary": "Per API and per server statistics, breaker and health state",
            "responses": {
                "200": _ok("The statistics.", _ref("Stats"), _headers(revision=None)),
                "401": _use("Unauthorized"),
                "500": _use("InternalError"),
                "503": _use("StoreUnavailable"),
            },
        }
    }
    return paths


_DESCRIPTION = """\
The admin API of the gateway: certificates, servers, clusters, consumers,
APIs and routings, and the live state of the proxies.  Secrets are
write-only (writeOnly in the schemas): a certificate's private key is never
answered (a write without it keeps the stored one), and consumers' answers
show each credential's type, id and fingerprint, never a key, password,
secret or hash.

Every request under /api/v1 carries the admin token:
`Authorization: Bearer TOKEN` (401 otherwise).  Bodies are JSON objects
(`Content-Type: application/json`; another media type is answered 415);
unknown fields are refused; a field that has a default may be sent as
`null` to take it.  Every error is JSON `{"error": "...", "field": "..."}`
where `field` names the field at fault (e.g. `nodes[0].cluster`), and is
left out when no field is.  An invalid body gets every one of its errors at
once in `errors` (`[{"field": ..., "error": ...}, ...]`, the first being
`error` and `field`), with 400: first the errors against this document's
schemas, then those against a rule they state in words only (the
descriptions say which), each marked `"rule": true`.  A path that exists
answers a method it does not take with 405 and an `Allow` header; any other
path, 404.  A refused write
changes nothing.  Before any operation, the HTTP server refuses a request
it cannot take with 400 (malformed), 408 (too slow), 413 (body over 1 MB,
64 MB for /batch and /config), 414 (request line too long) or 431 (headers
too large).

Many resources at once: `POST /api/v1/batch` puts and deletes resources
of any kinds, `PUT /api/v1/config` replaces them all (the way Kong's
declarative `/config` does), each as one revision, all or none, checked in
proportion to what it changes; `GET /api/v1/config` reads them all at one
revision.  `gateway apply` sends its plan as one batch.

A write answers once its change serves on every proxy process of this
gateway (`?wait=proxies`: on every proxy of a shared etcd store too), or
after `admin.propagationTimeout` seconds with
`X-Gateway-Propagation: incomplete`.  Every answer that read or wrote the
store carries `X-Gateway-Revision`, the revision it read or made.
"""


# -- many resources at once: POST /api/v1/batch, GET and PUT /api/v1/config --------

MANY_DESCRIPTION = (
    "One revision, all or none: every resource is parsed, then the whole proposed"
    " configuration is checked once (references, credentials, route conflicts, what the"
    " proxies compile), then every change is committed at once (on etcd, in as many"
    " transactions as its limits need, readers seeing all of them or none). Errors name"
    " the fields as the body does: `changes[3].value.urlPattern`, `apis[12].urlPattern`."
    " Bodies may be up to 64 MB (10,000 APIs with their clusters and servers are about"
    " 5 MB). "
)


def _manySchemas() -> Dict[str, Dict[str, Any]]:
    name = toOpenAPI30(jsonSchema(RESOURCE_CLASSES["servers"]))["properties"]["name"]
    puts = [
        {
            "type": "object",
            "description": f"Create or replace a {singular} (its name may be left out of value).",
            "properties": {
                "op": {"type": "string", "enum": ["put"]},
                "kind": {"type": "string", "enum": [kind]},
                "name": name,
                "value": _ref(schemaName + "Replace"),
            },
            "required": ["op", "kind", "name", "value"],
            "additionalProperties": False,
        }
        for kind, (schemaName, singular, _) in KIND_NAMES.items()
    ]
    delete = {
        "type": "object",
        "description": "Delete a resource (404 when it does not exist).",
        "properties": {
            "op": {"type": "string", "enum": ["delete"]},
            "kind": {"type": "string", "enum": list(KIND_NAMES)},
            "name": name,
        },
        "required": ["op", "kind", "name"],
        "additionalProperties": False,
    }
    count = {"type": "integer", "minimum": 0}
    return {
        "Batch": {
            "type": "object",
            "description": "Changes of any kinds, made as one revision, in any order.",
            "properties": {
                "changes": {"type": "array", "items": _ref("BatchChange")},
                "revision": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "the store revision the changes were worked out from"
                    " (X-Gateway-Revision of GET /api/v1/config): when another write was"
                    " committed since, nothing is changed and the answer is 409 (field"
                    " revision)",
                },
            },
            "required": ["changes"],
            "additionalProperties": False,
        },
        "BatchChange": {"oneOf": puts + [delete]},
        "Config": {
            "type": "object",
            "description": "Every resource, a list per kind sorted by name, as the lists of"
            " a resource file, each as its own GET answers it (certificates without their keys,"
            " consumers without their secrets).",
            "properties": {
                kind: {"type": "array", "items": _ref(schemaName)}
                for kind, (schemaName, _, _) in KIND_NAMES.items()
            },
            "required": list(KIND_NAMES),
        },
        "ConfigReplace": {
            "type": "object",
            "description": "The whole configuration: a list per kind; a kind left out has no"
            " resources. A certificate sent without its key, or a consumer's credential"
            " without its secret, keeps the stored one (the round trip of GET"
            " /api/v1/config).",
            "properties": {
                kind: {"type": "array", "items": _ref(schemaName + "Create")}
                for kind, (schemaName, _, _) in KIND_NAMES.items()
            },
            "additionalProperties": False,
        },
        "ManyResult": {
            "type": "object",
            "description": "What the write changed.",
            "properties": {
                "created": count,
                "updated": count,
                "deleted": count,
                "unchanged": dict(count, description="puts that changed nothing"),
                "changes": {
                    "type": "array",
                    "description": "each resource changed (unchanged ones left out)",
                    "items": {
                        "type": "object",
                        "properties": {
                            "kind": {"type": "string", "enum": list(KIND_NAMES)},
                            "name": {"type": "string"},
                            "action": {"type": "string", "enum": ["created", "updated", "deleted"]},
                        },
                        "required": ["kind", "name", "action"],
                    },
                },
            },
            "required": ["created", "updated", "deleted", "unchanged", "changes"],
        },
    }


def _manyPaths() -> Dict[str, Dict[str, Any]]:
    errors = _writeErrors()
    written = _ok(
        "Done (or nothing to do: no X-Gateway-Propagation then).",
        _ref("ManyResult"),
        _headers(propagation=None),
    )
    return {
        PREFIX + "/batch": {
            "post": {
                "tags": ["Configuration"],
                "operationId": "batch",
                "summary": "Put and delete many resources of any kinds in one revision",
                "description": MANY_DESCRIPTION + WRITE_DESCRIPTION,
                "parameters": [WAIT_PARAMETER],
                "requestBody": {"required": True, "content": {_JSON: {"schema": _ref("Batch")}}},
                "responses": {"200": written, "404": _use("NotFound"), **errors},
            }
        },
        PREFIX + "/config": {
            "get": {
                "tags": ["Configuration"],
                "operationId": "getConfig",
                "summary": "Every resource, at one revision",
                "responses": {
                    "200": _ok("The configuration.", _ref("Config"), _headers()),
                    "401": _use("Unauthorized"),
                    "503": _use("StoreUnavailable"),
                },
            },
            "put": {
                "tags": ["Configuration"],
                "operationId": "replaceConfig",
                "summary": "Replace every resource in one revision (declarative)",
                "description": MANY_DESCRIPTION
                + "What the body leaves out is deleted. "
                + WRITE_DESCRIPTION,
                "parameters": [WAIT_PARAMETER],
                "requestBody": {
                    "required": True,
                    "content": {_JSON: {"schema": _ref("ConfigReplace")}},
                },
                "responses": {"200": written, **errors},
            },
        },
    }


def _badQueries(paths: Dict[str, Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """
    @return: C{paths}, every operation that documents no 400 given the one
        of a query parameter it does not take (those that do say so in
        theirs).
    """
    for item in paths.values():
        for method, operation in item.items():
            if method in ("get", "put", "post", "delete"):
                operation["responses"].setdefault("400", _use("BadQuery"))
    return paths


def openAPIDocument() -> Dict[str, Any]:
    """
    @return: the OpenAPI 3.0.3 document of the admin API, as JSON.
    """
    schemas: Dict[str, Any] = {}
    schemas.update(resourceSchemas())
    schemas.update(_statsSchemas())
    schemas.update(_otherSchemas())
    schemas.update(_manySchemas())
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "Gateway admin API",
            "version": gateway.__version__,
            "description": _DESCRIPTION,
        },
        "tags": [
            {"name": tag, "description": f"The {kind}."} for kind, (_, _, tag) in KIND_NAMES.items()
        ]
        + [
            {"name": "Status", "description": "Health, proxies, statistics and metrics."},
            {"name": "Configuration", "description": "Many resources of any kinds at once."},
        ],
        "paths": _badQueries(dict(_paths(), **_manyPaths())),
        "components": {
            "schemas": schemas,
            "responses": _responses(),
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "the admin token of the gateway's config file",
                }
            },
        },
        "security": [{"bearerAuth": []}],
    }


class OpenAPIResource(Resource):
    """
    Serves the document as JSON.  It is built once: it only changes with
    the code.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self._body = json.dumps(openAPIDocument(), sort_keys=True).encode("utf-8")

    def render_GET(self, request: Any) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"content-length", b"%d" % (len(self._body),))
        return self._body


def openAPIResource() -> IResource:
    """
    @return: a resource that serves L{openAPIDocument} at any path.
    """
    return OpenAPIResource()
