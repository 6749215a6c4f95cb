"""
What the CLI reports: L{Problem}s found in a file, and the errors that end
a command.
"""

from __future__ import annotations

from typing import (
    Optional,
    Sequence,
)

import attrs


class CLIError(Exception):
    """
    An error the command reports on stderr before it exits with status 1.

    @ivar message: what went wrong, for a human.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@attrs.frozen
class Problem:
    """
    One thing wrong (or worth a warning) in a resource file.

    @ivar where: the resource and field at fault, e.g.
        C{"apis[2] (users).nodes[0].cluster"}; empty for the whole file.
    @ivar message: what is wrong.
    """

    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}" if self.where else self.message


class FileError(CLIError):
    """
    A resource file cannot be used.

    @ivar source: the file.
    @ivar problems: every L{Problem} found.
    """

    def __init__(self, source: str, problems: Sequence[Problem]) -> None:
        self.source = source
        self.problems = list(problems)
        count = len(self.problems)
        lines = [f"{source}: {count} error{'s' if count != 1 else ''}"]
        lines += [f"  {problem}" for problem in self.problems]
        super().__init__("\n".join(lines))


class AdminError(CLIError):
    """
    The admin could not be reached, or answered with an error.

    @ivar status: the HTTP status, or L{None} when there was no answer.
    @ivar field: the field the admin named as at fault, if any.
    @ivar errors: every error of an invalid resource, as L{Problem}s (the
        admin's C{errors}); empty for other errors.
    @ivar error: the admin's own C{error} text, when it answered one.
    """

    def __init__(
        self,
        message: str,
        status: Optional[int] = None,
        field: str = "",
        errors: Sequence[Problem] = (),
        error: str = "",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.field = field
        self.errors = list(errors)
        self.error = error
