"""
The C{gateway} command: declarative configuration through the admin API.

A resource file holds the lists of a gateway config file
(C{certificates:}, C{servers:}, C{clusters:}, C{apis:}, C{routings:}, in
the REST form; a certificate may name PEM files), so
a gateway's own config file can be used as it is; its other keys
(C{proxy:}, C{admin:}, C{store:}, C{resolver:}, C{tracing:}, C{limits:}) are
ignored with a note::

    gateway validate gateway.yaml            # offline checks, no network
    gateway apply gateway.yaml --dry-run     # what would change, as a diff
    gateway apply gateway.yaml --prune       # make the admin match the file
    gateway export -o gateway.yaml           # the admin's state, as a file
    gateway cache purge users                # drop the API's cached answers

C{apply} reads the admin's resources in one request (C{GET /api/v1/config})
and sends its whole plan as one batch (C{POST /api/v1/batch}): the admin
applies it as one revision, all or none, provided nothing changed since the
read; 10,000 APIs take seconds, not the quarter of an hour that one request
per resource took.  (To an older admin without them, one request per
resource, as before.)

C{apply}, C{export} and C{cache purge} only speak the admin REST API (C{--admin URL},
default C{$GATEWAY_ADMIN} or C{http://127.0.0.1:9090}, with the bearer
token C{--token}, default C{$GATEWAY_TOKEN}), so they work the same
whatever store the gateway uses.

The command is short-lived and synchronous, so it talks HTTP with
L{urllib.request} rather than a reactor.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from typing import (
    List,
    Mapping,
    Optional,
    Sequence,
    TextIO,
)

import attrs

from gateway.cli.checks import checkResources
from gateway.cli.client import DEFAULT_ADMIN, DEFAULT_TIMEOUT, AdminClient, normaliseAdminURL
from gateway.cli.export import exportDocument
from gateway.cli.plan import (
    _unmanagedNote,
    applyBatch,
    applyPlan,
    batchTimeout,
    computePlan,
    renderPlan,
)
from gateway.cli.problems import CLIError, FileError, Problem
from gateway.cli.resources import JSONResources, ResourceFile, keptCredentials, loadResourceFile
from gateway.store import KINDS

# Exit statuses: success, invalid input or a failed request, usage error.
OK, FAILED, USAGE = 0, 1, 2


@attrs.define
class _Output:
    out: TextIO
    err: TextIO

    def say(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()

    def warn(self, line: str) -> None:
        self.err.write(line + "\n")
        self.err.flush()


def _noteIgnored(resourceFile: ResourceFile, output: _Output) -> None:
    if resourceFile.ignored:
        output.warn(
            f"note: {resourceFile.source}: ignoring {', '.join(resourceFile.ignored)}"
            " (they configure a gateway process, not its resources)"
        )


def _warnAll(source: str, warnings: Sequence[Problem], output: _Output) -> None:
    for warning in warnings:
        output.warn(f"warning: {source}: {warning}")


def cmdValidate(args: argparse.Namespace, output: _Output, stdin: Optional[TextIO]) -> int:
    """
    C{gateway validate FILE}: check a resource file offline.
    """
    # Every problem at once: those of single resources, then the
    # references and the compilation of the others.
    resourceFile = loadResourceFile(args.file, stdin, lenient=True)
    _noteIgnored(resourceFile, output)
    errors, warnings = checkResources(
        resourceFile.resources,
        resourceFile.label,
        resourceFile.parsed,
        resourceFile.invalid,
        now=time.time(),
    )
    errors = [*resourceFile.problems, *errors]
    for name, value in sorted(resourceFile.resources["consumers"].items()):
        for i, kind, credentialId in keptCredentials(value):
            warnings.append(
                Problem(
                    f"{resourceFile.label('consumers', name)}.credentials[{i}]",
                    f"has no secret: apply keeps the {kind} credential {credentialId!r} the"
                    " gateway has (a gateway without it refuses the file)",
                )
            )
    _warnAll(resourceFile.source, warnings, output)
    if errors:
        raise FileError(resourceFile.source, errors)
    output.say(f"{resourceFile.source}: OK ({resourceFile.counts()})")
    return OK


def _client(args: argparse.Namespace) -> AdminClient:
    return AdminClient(args.admin, args.token or None, args.timeout)


def missingSecrets(current: JSONResources, resourceFile: ResourceFile) -> List[Problem]:
    """
    @return: a problem for each certificate of the file without its key
        that the admin does not have, and for each credential of the
        file's consumers that holds no secret and that the admin's consumer
        does not have (of that id and type) to keep: such a file came from
        another gateway's export, and needs its keys and secrets again.
    """
    problems = []
    for name, value in sorted(resourceFile.resources["certificates"].items()):
        if value.get("key") is None and name not in current["certificates"]:
            problems.append(
                Problem(
                    f"{resourceFile.label('certificates', name)}.key",
                    f"is left out, and the admin has no certificate {name!r} whose key to"
                    " keep: add key or keyFile to the file (an export holds no key)",
                )
            )
    for name, value in sorted(resourceFile.resources["consumers"].items()):
        have = current["consumers"].get(name) or {}
        stored = {(c.get("type"), c.get("id")) for c in have.get("credentials") or ()}
        for i, kind, credentialId in keptCredentials(value):
            if (kind, credentialId) not in stored:
                secret = {"key": "key", "basic": "password"}.get(kind, "secret or publicKey")
                problems.append(
                    Problem(
                        f"{resourceFile.label('consumers', name)}.credentials[{i}]",
                        f"has no {secret}, and the admin's consumer {name!r} has no {kind}"
                        f" credential {credentialId!r} to keep: add its {secret} to the file"
                        " (an export holds no secret)",
                    )
                )
    return problems


def cmdApply(args: argparse.Namespace, output: _Output, stdin: Optional[TextIO]) -> int:
    """
    C{gateway apply FILE}: make the admin's state match a resource file.
    """
    resourceFile = loadResourceFile(args.file, stdin)
    _noteIgnored(resourceFile, output)
    client = _client(args)
    current, revision = client.config()
    if args.prune:
        target: JSONResources = resourceFile.resources
    else:
        target = {kind: {**current[kind], **resourceFile.resources[kind]} for kind in KINDS}
    errors, warnings = checkResources(target, resourceFile.label, resourceFile.parsed)
    errors.extend(missingSecrets(current, resourceFile))
    _warnAll(resourceFile.source, warnings, output)
    if errors:
        raise CLIError(
            str(FileError(resourceFile.source, errors)) + f"\nnothing was changed on {client.url}"
        )
    plan = computePlan(current, resourceFile.resources, args.prune, desiredNormalised=True)
    if args.dry_run:
        for line in renderPlan(plan):
            output.say(line)
        output.say(f"dry run: nothing was changed on {client.url}")
        return OK
    if not plan.steps:
        output.say(f"no changes ({plan.unchanged} resources up to date)")
    else:
        served = True
        if revision is None:
            # An older admin: no batch, no revision.
            applyPlan(client, plan, output.say)
        else:
            timeout = batchTimeout(args.timeout, plan)
            served = applyBatch(client, plan, revision, timeout, output.say)
        output.say(
            f"applied {len(plan.steps)} change(s) to {client.url}: {plan.count('create')}"
            f" created, {plan.count('update')} updated, {plan.count('delete')} deleted"
            f" ({plan.unchanged} unchanged)"
        )
        if not served:
            output.say(
                "note: the admin answered before every proxy process served the change;"
                " it reaches them shortly"
            )
    for line in _unmanagedNote(plan):
        output.say(line)
    return OK


def cmdExport(args: argparse.Namespace, output: _Output, stdin: Optional[TextIO]) -> int:
    """
    C{gateway export}: the admin's resources as a resource file.
    """
    client = _client(args)
    state = client.state()
    document = exportDocument(state, client.url)
    if args.output in (None, "-"):
        output.out.write(document)
        output.out.flush()
        return OK
    try:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(document)
    except OSError as e:
        raise CLIError(f"cannot write {args.output}: {e.strerror or e}")
    counts = ", ".join(f"{len(state[kind])} {kind}" for kind in KINDS)
    output.warn(f"wrote {args.output} ({counts})")
    return OK


def cmdCachePurge(args: argparse.Namespace, output: _Output, stdin: Optional[TextIO]) -> int:
    """
    C{gateway cache purge API}: drop an API's cached answers, in every
    proxy process of the gateway and, with Redis, of the fleet.
    """
    client = _client(args)
    answer = client.purgeCache(args.api)
    processes = answer.get("processes", 0)
    line = (
        f"purged the cache of API {args.api!r}: {answer.get('entries', 0)} entries in memory"
        f" in {processes} proxy process{'es' if processes != 1 else ''} of {client.url}"
    )
    if not answer.get("complete", True):
        line += " (not every proxy process confirmed in time)"
    output.say(line)
    if answer.get("redis"):
        output.say(
            f"and in Redis, for every gateway (generation {answer.get('generation')}); the"
            " memory of the other gateways follows within proxy.cache.purgePoll seconds"
        )
    else:
        output.say("no Redis (limits.store): other gateways were not reached")
    return OK


def _adminURL(value: str) -> str:
    try:
        return normaliseAdminURL(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e))


def _timeout(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"{value!r} is not a positive number of seconds")
    return seconds


def makeParser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    """
    @param environ: the environment, for the defaults of C{--admin} and
        C{--token}.
    @return: the parser of the command line.
    """
    parser = argparse.ArgumentParser(
        prog="gateway",
        description="Validate, apply and export the gateway's resources (certificates,"
        " servers, clusters, consumers, apis, routings) as a YAML file, and purge the"
        " response cache of an API, through the admin REST API.",
        epilog="Run 'gateway COMMAND --help' for a command's options. Exit status: 0"
        " done (a dry run too), 1 an invalid file or a refused or failed request (errors"
        " on stderr), 2 a usage error. The gateway itself runs with: twistd -n gateway"
        " --config gateway.yaml",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    admin = argparse.ArgumentParser(add_help=False)
    group = admin.add_argument_group("admin API")
    group.add_argument(
        "--admin",
        metavar="URL",
        type=_adminURL,
        default=environ.get("GATEWAY_ADMIN") or DEFAULT_ADMIN,
        help="the admin's base URL (default: $GATEWAY_ADMIN or %(default)s)",
    )
    group.add_argument(
        "--token",
        default=environ.get("GATEWAY_TOKEN") or None,
        help="the admin's bearer token (default: $GATEWAY_TOKEN)",
    )
    group.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=_timeout,
        default=DEFAULT_TIMEOUT,
        help="how long to wait for each answer (default: %(default)g; apply's batch waits"
        " a second more per 200 changes)",
    )

    validate = commands.add_parser(
        "validate",
        help="check a resource file offline",
        description="Check a resource file without contacting the gateway: every resource"
        " against the model, unique names, references between resources, route"
        " conflicts and URL rewrites.",
    )
    validate.add_argument("file", metavar="FILE", help="YAML resource file (- for stdin)")
    validate.set_defaults(run=cmdValidate)

    apply = commands.add_parser(
        "apply",
        parents=[admin],
        help="make the admin's resources match a file",
        description="Create and update (and with --prune delete) resources through the"
        " admin API until its state matches the file: the whole plan in one request"
        " (POST /api/v1/batch), which the admin checks and applies as one revision, all"
        " or none, provided nothing changed since the plan was made.",
    )
    apply.add_argument("file", metavar="FILE", help="YAML resource file (- for stdin)")
    apply.add_argument(
        "--dry-run", action="store_true", help="show the changes as a diff, change nothing"
    )
    apply.add_argument(
        "--prune", action="store_true", help="also delete resources that are not in the file"
    )
    apply.set_defaults(run=cmdApply)

    export = commands.add_parser(
        "export",
        parents=[admin],
        help="write the admin's resources as a file",
        description="Write the admin's resources as YAML that apply reads, sorted by"
        " name, default values left out.",
    )
    export.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    export.set_defaults(run=cmdExport)

    cache = commands.add_parser(
        "cache",
        help="act on the response cache",
        description="Act on the response cache of the gateway's APIs.",
    )
    cacheCommands = cache.add_subparsers(dest="cacheCommand", metavar="ACTION")
    cacheCommands.required = True
    purge = cacheCommands.add_parser(
        "purge",
        parents=[admin],
        help="drop an API's cached answers",
        description="Drop an API's cached answers: in the memory of every proxy process of"
        " the gateway and, when the gateways share a Redis (limits.store), in Redis and in"
        " every other gateway's memory too.",
    )
    purge.add_argument("api", metavar="API", help="the API's name")
    purge.set_defaults(run=cmdCachePurge)
    return parser


def run(
    argv: Optional[Sequence[str]] = None,
    stdout: Optional[TextIO] = None,
    stderr: Optional[TextIO] = None,
    environ: Optional[Mapping[str, str]] = None,
    stdin: Optional[TextIO] = None,
) -> int:
    """
    Run the command.

    @param argv: the arguments (without the program name); by default
        C{sys.argv[1:]}.
    @return: the exit status: 0 on success, 1 for invalid input or a failed
        request, 2 for a usage error.
    """
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    output = _Output(out, err)
    parser = makeParser(os.environ if environ is None else environ)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            args = parser.parse_args(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else USAGE
    try:
        return args.run(args, output, stdin)
    except CLIError as e:
        output.warn(f"error: {e.message}")
        return FAILED
    except KeyboardInterrupt:
        output.warn("interrupted")
        return 130


def main(argv: Optional[Sequence[str]] = None) -> int:
    """
    The C{gateway} console script.
    """
    try:
        return run(argv)
    except BrokenPipeError:
        # "gateway export | head": the reader left.  Point stdout at
        # /dev/null so that flushing it at exit does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return FAILED


if __name__ == "__main__":
    sys.exit(main())
