"""Exceptions that carry a message meant for people; the CLI prints them without a traceback."""

from __future__ import annotations


class HvtnasError(Exception):
    """Base class of every error hvtnas raises on purpose (bad input, not bugs)."""

    exit_code = 2  # of the command line: 2 bad input, 1 a fault of the machine (a full disk)


class ConfigError(HvtnasError, ValueError):
    """A configuration file or object is invalid.

    ``problems`` holds one line per problem, each naming the field path (and the file and line
    where the config came from a YAML file), e.g. ``swin.yaml:14: stages[2].heads: 5 does not
    divide width 256``.
    """

    def __init__(
        self, problems: list[str], source: str | None = None, what: str = "architecture config"
    ) -> None:
        self.problems = problems
        self.source = source
        where = f"invalid {what} {source}" if source else f"invalid {what}"
        body = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"{where}:\n{body}")


class RegistryError(HvtnasError, KeyError):
    """Unknown or duplicate name in a registry."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])
