"""
Consumers (who calls the gateway) and how an API authenticates them: the
C{consumers} resource, its credentials, and an API's C{auth} and C{acl}.

A credential's secret is write-only.  Parsing one keeps what can verify it
and drops the rest (L{gateway.model.secrets}): an API key becomes its
digest (C{keyHash}), a password its bcrypt hash (C{passwordHash}); a JWT
secret or public key is kept as it is (a token cannot be verified
otherwise).  Every credential gets an C{id} and a C{fingerprint}; what the
admin answers (L{publicConsumer}) holds those and never a secret or a
hash.

A credential given without its secret (C{{"type": "key", "id": "k1"}}, as
C{gateway export} writes it) keeps the consumer's stored credential of that
id: L{keepCredentials} resolves it against what the store holds.
"""

from __future__ import annotations

from typing import Any, ClassVar, Dict, Iterator, List, Mapping, Optional, Tuple

import attrs

from gateway.model import secrets
from gateway.model.schema import (
    CONTROLS,
    Bool,
    Enum,
    Name,
    Nullable,
    Num,
    Obj,
    Rule,
    Str,
    ValidationError,
    field,
    fromJSON,
    toJSON,
)
from gateway.model.schema import List as ListOf

CREDENTIAL_TYPES = ("key", "basic", "jwt")

#: What a consumer's JWT credential may sign with.
JWT_ALGORITHMS = ("HS256", "RS256", "ES256", "EdDSA")

#: The methods of an API's C{auth}.
AUTH_METHODS = ("key", "jwt", "basic")

#: The fields that hold a secret (or what verifies one): never answered.
SECRET_FIELDS = ("key", "keyHash", "password", "passwordHash", "secret", "publicKey")

_FIELDS_OF = {
    "key": ("key", "keyHash"),
    "basic": ("username", "password", "passwordHash"),
    "jwt": ("issuer", "algorithm", "secret", "publicKey"),
}

_HEADER_TOKEN = "[A-Za-z0-9!#$%&'*+.^_`|~-]+"


def _checkPasswordLength(value: str) -> None:
    if len(value.encode("utf-8")) > secrets.MAX_PASSWORD_BYTES:
        raise ValueError(f"must be at most {secrets.MAX_PASSWORD_BYTES} bytes in UTF-8")


def checkPublicKey(algorithm: str, pem: str) -> Any:
    """
    @return: the public key of a PEM document, for C{algorithm}.
    @raise ValueError: when it is not a public key that C{algorithm} uses
        (an RSA key of 2048 bits or more, an EC key on P-256, an Ed25519
        key).
    """
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    text = pem.strip()
    if not (text.startswith("-----BEGIN PUBLIC KEY-----") and text.endswith("-----")):
        raise ValueError("is not a PEM public key (-----BEGIN PUBLIC KEY----- ... -----END ...)")
    try:
        key = load_pem_public_key(text.encode("ascii"))
    except (ValueError, TypeError, UnicodeEncodeError) as e:
        raise ValueError(f"is not a PEM public key ({e})")
    if algorithm == "RS256":
        if not isinstance(key, rsa.RSAPublicKey) or key.key_size < 2048:
            raise ValueError("RS256 needs an RSA public key of 2048 bits or more")
    elif algorithm == "ES256":
        if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
            raise ValueError("ES256 needs an EC public key on P-256")
    elif algorithm == "EdDSA":
        if not isinstance(key, ed25519.Ed25519PublicKey):
            raise ValueError("EdDSA needs an Ed25519 public key")
    else:
        raise ValueError(f"{algorithm} takes a secret, not a public key")
    return key


def _credentialFields(values: Mapping[str, Any]) -> Iterator[Tuple[str, str]]:
    kind = values["type"]

    for other, names in _FIELDS_OF.items():
        if other == kind:
            continue
        for name in names:
            if values[name] is not None:
                yield name, f"is not a field of a {kind} credential"
    if kind == "key":
        if values["key"] is not None and values["keyHash"] is not None:
            yield "keyHash", "give key or keyHash, not both"
        if values["key"] is None and values["keyHash"] is None and values["id"] is None:
            yield "key", "is required (or, to keep a stored key, its id alone)"
    elif kind == "basic":
        if values["username"] is None:
            yield "username", "is required for a basic credential"
        if values["password"] is not None and values["passwordHash"] is not None:
            yield "passwordHash", "give password or passwordHash, not both"
    else:
        secret, publicKey, algorithm = values["secret"], values["publicKey"], values["algorithm"]
        if secret is not None and publicKey is not None:
            yield "publicKey", "give secret or publicKey, not both"
        elif (secret is not None or publicKey is not None) and algorithm is None:
            yield "algorithm", "is required with a secret or a public key"
        elif algorithm == "HS256" and publicKey is not None:
            yield "publicKey", "HS256 verifies with a secret, not a public key"
        elif algorithm not in (None, "HS256") and secret is not None:
            yield "secret", f"{algorithm} verifies with a publicKey, not a secret"
        elif publicKey is not None:
            try:
                checkPublicKey(algorithm, publicKey)
            except ValueError as e:
                yield "publicKey", str(e)
        if (
            secret is None
            and publicKey is None
            and values["id"] is None
            and values["issuer"] is None
        ):
            yield "secret", "is required, or publicKey (or, to keep a stored one, the id alone)"


@attrs.frozen
class Credential:
    """
    One way a consumer proves who it is: an API key (C{key}), a user name
    and password (C{basic}), or JWTs signed with a secret or a private key
    (C{jwt}: tokens whose C{iss} is C{issuer}, or whose C{kid} is the
    credential's C{id}).  Secrets are write-only: answers show the type,
    the id, the fingerprint and the user name or issuer, never a key, a
    password, a secret or a hash.  Without its secret, a credential keeps
    the stored one of the same id.
    """

    type: str = field(Enum(CREDENTIAL_TYPES))
    id: Optional[str] = field(
        Nullable(Name()),
        None,
        doc="unique within the consumer (a JWT's kid may name it); default: made from the"
        " key, the user name or the issuer",
    )
    key: Optional[str] = field(
        Nullable(
            Str(
                pattern=r"^[!-~]+$",
                minLength=16,
                maxLength=512,
                patternHint="must be 16 to 512 visible ASCII characters",
            )
        ),
        None,
        doc="key: the API key (a random string of 16 characters or more); stored as its"
        " SHA-256 only",
        access="writeOnly",
    )
    keyHash: Optional[str] = field(
        Nullable(Str(pattern=secrets.KEY_HASH_PATTERN, patternHint="must be 64 hex digits")),
        None,
        doc="key: the key's SHA-256 in hex, instead of the key (to import a key you do not have)",
        access="writeOnly",
    )
    username: Optional[str] = field(
        Nullable(
            Str(
                pattern="^[^:" + CONTROLS + "]+$",
                maxLength=256,
                patternHint="must not be empty nor hold a colon or control characters",
            )
        ),
        None,
        doc="basic: the user name",
    )
    password: Optional[str] = field(
        Nullable(Str(minLength=1, maxLength=72, check=_checkPasswordLength)),
        None,
        doc="basic: the password (at most 72 bytes); stored as a bcrypt hash only",
        access="writeOnly",
    )
    passwordHash: Optional[str] = field(
        Nullable(
            Str(pattern=secrets.PASSWORD_HASH_PATTERN, patternHint="must be a bcrypt hash ($2b$)")
        ),
        None,
        doc="basic: a bcrypt hash, instead of the password",
        access="writeOnly",
    )
    issuer: Optional[str] = field(
        Nullable(Str(minLength=1, maxLength=1024)),
        None,
        doc="jwt: the iss of the tokens this credential verifies",
    )
    algorithm: Optional[str] = field(
        Nullable(Enum(JWT_ALGORITHMS)), None, doc="jwt: what the tokens are signed with"
    )
    secret: Optional[str] = field(
        Nullable(Str(minLength=32, maxLength=4096)),
        None,
        doc="jwt, HS256: the shared secret (32 characters or more)",
        access="writeOnly",
    )
    publicKey: Optional[str] = field(
        Nullable(Str(minLength=1, maxLength=16384, controls=True)),
        None,
        doc="jwt, RS256/ES256/EdDSA: the PEM public key",
        access="writeOnly",
    )
    fingerprint: Optional[str] = field(
        Nullable(Str(pattern="^[0-9a-f]{12}$", patternHint="must be 12 hex digits")),
        None,
        doc="a short fingerprint of what the credential keeps (worked out by the gateway)",
        access="readOnly",
    )

    rules: ClassVar[Tuple[Rule, ...]] = (
        Rule(
            ("type", "id") + tuple(n for names in _FIELDS_OF.values() for n in names),
            _credentialFields,
            doc="Each type takes its own fields: key takes key or keyHash; basic takes"
            " username and password or passwordHash; jwt takes algorithm and secret (HS256)"
            " or publicKey (a PEM public key of the algorithm's kind), and issuer."
            " Without its secret, a credential keeps the consumer's stored one of the"
            " same id.",
        ),
    )

    @property
    def material(self) -> Optional[str]:
        """
        What verifies this credential (a key's digest, a password's hash, a
        JWT secret or public key), or L{None} for a credential kept
        without its secret.
        """
        return self.keyHash or self.passwordHash or self.secret or self.publicKey

    @property
    def kept(self) -> bool:
        """
        Whether it was given without its secret, to keep a stored one.
        """
        return self.material is None


def sealCredential(credential: Credential) -> Credential:
    """
    @return: the credential as it is stored: a key replaced by its digest,
        a password by its bcrypt hash, its fingerprint worked out, an id
        given when it has none.
    """
    changes: Dict[str, Any] = {}
    if credential.key is not None:
        changes["key"] = None
        changes["keyHash"] = secrets.keyHash(credential.key)
    if credential.password is not None:
        changes["password"] = None
        changes["passwordHash"] = secrets.hashPassword(credential.password)
    if changes:
        credential = attrs.evolve(credential, **changes)
    material = credential.material
    # (A credential kept without its secret keeps the fingerprint given,
    # as an export shows it; the stored one replaces it when written.)
    fingerprint = secrets.fingerprint(material) if material is not None else credential.fingerprint
    credentialId = credential.id
    if credentialId is None:
        if credential.type == "key":
            credentialId = secrets.shortId("key", credential.keyHash or "")
        elif credential.type == "basic":
            credentialId = secrets.shortId("basic", credential.username or "")
        else:
            credentialId = secrets.shortId("jwt", credential.issuer or material or "")
    if fingerprint != credential.fingerprint or credentialId != credential.id:
        credential = attrs.evolve(credential, fingerprint=fingerprint, id=credentialId)
    return credential


@attrs.frozen
class CredentialSpec(Obj):
    """
    A credential: parsed, then sealed (L{sealCredential}); written out
    without the fields it does not hold.
    """

    cls: type = Credential

    def parse(self, value: Any, path: str) -> Any:
        return sealCredential(fromJSON(Credential, value, path))

    def dump(self, value: Any) -> Any:
        return {k: v for k, v in toJSON(value).items() if v is not None}


def _credentialIdsUnique(values: Mapping[str, Any]) -> Iterator[Tuple[str, str]]:
    seen: Dict[str, int] = {}
    for i, credential in enumerate(values["credentials"]):
        if credential.id in seen:
            yield (
                f"credentials[{i}].id",
                f"duplicate {credential.id!r} (as credentials[{seen[credential.id]}])",
            )
        else:
            seen[credential.id] = i


@attrs.frozen
class Consumer:
    """
    Who calls the gateway's APIs: a name, an optional id of the caller's
    own system, groups (for ACLs) and credentials.  After authentication
    the backend receives X-Consumer-Name, X-Consumer-Id (customId) and
    X-Consumer-Groups.
    """

    name: str = field(Name())
    customId: Optional[str] = field(
        Nullable(Str(minLength=1, maxLength=256)),
        None,
        doc="the consumer's id in your own systems (X-Consumer-Id)",
    )
    groups: Tuple[str, ...] = field(ListOf(Name(), maxItems=256, unique=True), ())
    credentials: Tuple[Credential, ...] = field(ListOf(CredentialSpec(), maxItems=256), ())

    rules: ClassVar[Tuple[Rule, ...]] = (
        Rule(
            ("credentials",),
            _credentialIdsUnique,
            doc="Credential ids are unique within a consumer.",
        ),
    )

    @staticmethod
    def publicJSON(value: Mapping[str, Any]) -> Dict[str, Any]:
        """
        @return: a consumer's JSON as the admin answers it (see
            L{publicConsumer}).
        """
        return publicConsumer(value)


def publicCredential(value: Mapping[str, Any]) -> Dict[str, Any]:
    """
    @return: a stored credential's JSON as answers show it: without its
        secret or hash.
    """
    return {k: v for k, v in value.items() if k not in SECRET_FIELDS}


def publicConsumer(value: Mapping[str, Any]) -> Dict[str, Any]:
    """
    @return: a stored consumer's JSON as the admin answers it (and the
        CLI exports it): every credential without its secret.
    """
    out = dict(value)
    credentials = value.get("credentials")
    if isinstance(credentials, list):
        out["credentials"] = [
            publicCredential(c) if isinstance(c, dict) else c for c in credentials
        ]
    return out


def keepCredentials(consumer: Consumer, stored: Optional[Consumer]) -> Consumer:
    """
    Resolve the credentials given without their secret against the
    consumer's stored ones: each keeps the stored credential of its id and
    type, with the fields given (a new user name, issuer or algorithm)
    taking their place.

    @param stored: the consumer as the store holds it, or L{None}.
    @raise ValidationError: for a credential with no stored one to keep
        (semantic: the body fits the schema), naming it.
    """
    if not any(c.kept for c in consumer.credentials):
        return consumer
    storedById = {c.id: c for c in stored.credentials} if stored is not None else {}
    errors: List[ValidationError] = []
    resolved: List[Credential] = []
    for i, credential in enumerate(consumer.credentials):
        if not credential.kept:
            resolved.append(credential)
            continue
        old = storedById.get(credential.id)
        if old is None or old.type != credential.type:
            secret = {"key": "key", "basic": "password", "jwt": "secret or publicKey"}
            errors.append(
                ValidationError(
                    f"credentials[{i}]",
                    f"has no {secret[credential.type]}, and consumer {consumer.name!r} has no"
                    f" stored {credential.type} credential {credential.id!r} to keep: give"
                    f" its {secret[credential.type]} (an export holds no secret)",
                    semantic=True,
                )
            )
            continue
        given = {
            k: v
            for k, v in toJSON(credential).items()
            if v is not None and k not in ("fingerprint",)
        }
        merged = dict(CredentialSpec().dump(old), **given)
        merged.pop("fingerprint", None)
        try:
            resolved.append(CredentialSpec().parse(merged, f"credentials[{i}]"))
        except ValidationError as e:
            errors.append(
                ValidationError.collect(
                    [type(leaf)(leaf.field, leaf.message, True) for leaf in e.errors]
                )
            )
    if errors:
        raise ValidationError.collect(errors)
    return attrs.evolve(consumer, credentials=tuple(resolved))


# -- an API's auth and acl ------------------------------------------------------


@attrs.frozen
class JWTSettings:
    """
    How an API checks JWTs: tokens of an OpenID Connect provider verified
    against its JWKS (C{jwksUrl}), the consumer named by C{consumerClaim};
    C{issuer} and C{audiences} checked on every token (consumers' own JWT
    credentials too), C{exp} and C{nbf} with C{leeway} seconds.
    """

    jwksUrl: Optional[str] = field(
        Nullable(
            Str(
                pattern=r"^https?://[!-~]+$",
                maxLength=2048,
                patternHint="must be an http:// or https:// URL",
            )
        ),
        None,
        doc="the provider's JWKS (fetched off the request path, cached, refreshed on an"
        " unknown kid at most once a minute)",
    )
    issuer: Optional[str] = field(
        Nullable(Str(minLength=1, maxLength=1024)),
        None,
        doc="the iss every token must carry (and the JWKS tokens' issuer)",
    )
    audiences: Tuple[str, ...] = field(
        ListOf(Str(minLength=1, maxLength=1024), maxItems=64),
        (),
        doc="a token's aud must name one of these (none: aud not checked)",
    )
    consumerClaim: str = field(
        Str(pattern=r"^[A-Za-z0-9_.:-]{1,128}$", patternHint="must be a claim name"),
        "sub",
        doc="the claim of a JWKS token that names its consumer (by name, else customId)",
    )
    leeway: float = field(Num(0, 3600), 30.0, doc="seconds of clock skew allowed on exp and nbf")


def _authRules(values: Mapping[str, Any]) -> Iterator[Tuple[str, str]]:
    if values["jwt"] is not None and "jwt" not in values["methods"]:
        yield "jwt", "is set, but methods has no jwt"


@attrs.frozen
class Auth:
    """
    Who may call an API: the methods tried in order (the first that finds a
    credential in the request decides), where API keys are looked for,
    the consumer to act as when none is given (else 401), and whether the
    credential is removed before the request goes upstream.
    """

    methods: Tuple[str, ...] = field(
        ListOf(Enum(AUTH_METHODS), minItems=1, maxItems=3, unique=True),
        doc="key, jwt, basic: in the order they are tried",
    )
    keyNames: Tuple[str, ...] = field(
        ListOf(
            Str(
                pattern=rf"^(header|query):{_HEADER_TOKEN}$",
                maxLength=256,
                patternHint="must be header:NAME or query:NAME",
            ),
            minItems=1,
            maxItems=16,
            unique=True,
        ),
        ("header:apikey", "query:apikey"),
        doc="where an API key is looked for, in order",
    )
    anonymous: Optional[str] = field(
        Nullable(Name()),
        None,
        doc="the consumer a request without any credential acts as (null: 401)",
    )
    hideCredentials: bool = field(
        Bool(), True, doc="remove the credential before the request goes upstream"
    )
    jwt: Optional[JWTSettings] = field(Nullable(Obj(JWTSettings)), None)

    rules: ClassVar[Tuple[Rule, ...]] = (
        Rule(("methods", "jwt"), _authRules, doc="jwt settings need jwt among the methods."),
    )


@attrs.frozen
class ACL:
    """
    Which consumers may call an API, by their groups: C{deny} wins, and an
    empty C{allow} lets in every consumer not denied; others get 403.
    """

    allow: Tuple[str, ...] = field(ListOf(Name(), maxItems=256, unique=True), ())
    deny: Tuple[str, ...] = field(ListOf(Name(), maxItems=256, unique=True), ())


def consumerConflicts(
    consumers: Mapping[str, Consumer], last: Optional[str] = None
) -> List[Tuple[str, str, str]]:
    """
    @param last: the consumer to look at last (the one being written), so
        that a conflict is reported on it.
    @return: C{(name, field, message)} for each credential that another
        consumer's claims as well: the same API key, the same user name,
        or the same JWT issuer and id.  Each such pair is reported once,
        on the consumer looked at last (C{last}, else the one whose name
        sorts last).
    """
    seen: Dict[Tuple[str, Any], Tuple[str, str]] = {}
    conflicts: List[Tuple[str, str, str]] = []
    for name in sorted(consumers, key=lambda n: (n == last, n)):
        for i, credential in enumerate(consumers[name].credentials):
            if credential.type == "key":
                key: Any = ("key", credential.keyHash)
                what = "API key"
            elif credential.type == "basic":
                key = ("basic", credential.username)
                what = f"user name {credential.username!r}"
            else:
                key = ("jwt", (credential.issuer, credential.id))
                what = f"JWT issuer {credential.issuer!r} with id {credential.id!r}"
            if credential.kept:
                continue
            owner = seen.get(key)
            if owner is not None and owner[0] != name:
                conflicts.append(
                    (
                        name,
                        f"credentials[{i}]",
                        f"the {what} is already a credential of consumer {owner[0]!r}",
                    )
                )
            else:
                seen[key] = (name, f"credentials[{i}]")
    return conflicts
