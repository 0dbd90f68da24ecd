"""Serving the dashboard to a team: who may log in, where it may listen without a login, whose jobs are whose.

Light on purpose (standard library only): ``app.py`` refuses a bad launch with it before gradio or
torch load. docs/serving.md is the user's side of this module.

- Logins: :func:`read_auth_file` (``--auth-file PATH``: ``user:password[:admin]`` lines, a file
  only its owner may read), :func:`parse_auth_env` (``CRM_LAB_AUTH``: the same entries separated
  by commas) and :func:`parse_auth_arg` (``--auth user:pass``, one user). Every refusal is a
  :class:`ServingRefused` whose message is one line and never holds a password.
- Where: :func:`is_loopback`; :func:`check_bind` refuses a non-loopback host without a login
  unless ``--insecure-no-auth`` says so, as Jupyter refuses to serve without its token.
- Jobs: :class:`Access` (what :func:`demo.layout.build_app` is told about the logins) and
  :class:`JobBook`, the fine-tune jobs of one served app in order of arrival, each with its owner:
  a per-user limit on running plus queued jobs, and who may stop a job.
"""
from __future__ import annotations

import ipaddress
import os
import stat
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

__all__ = ["AUTH_ENV", "Access", "Job", "JobBook", "JobLimit", "Logins", "ServingRefused", "check_bind",
           "is_loopback", "parse_auth_arg", "parse_auth_env", "read_auth_file", "resolve_logins"]

#: The environment variable that may hold the logins (``user:password[,user2:password2...]``).
AUTH_ENV = "CRM_LAB_AUTH"
ADMIN_FLAG = ":admin"


class ServingRefused(ValueError):
    """The launch is refused; the message is one line for the user and never holds a password."""


@dataclass(frozen=True)
class Logins:
    """Who may log in: user -> password (never in a repr or a log line), and the admins among them."""

    passwords: dict[str, str] = field(repr=False)
    admins: frozenset[str] = frozenset()
    source: str = ""  # where they came from: "--auth-file PATH", "CRM_LAB_AUTH" or "--auth"

    @property
    def users(self) -> list[str]:
        return sorted(self.passwords)

    def gradio_auth(self) -> list[tuple[str, str]]:
        """What ``Blocks.launch(auth=...)`` takes: a list of (user, password) tuples."""
        return sorted(self.passwords.items())


def is_loopback(host: str) -> bool:
    """True for a host that only this machine can reach: ``localhost``, 127.0.0.0/8, ``::1`` (also
    written ``[::1]`` or as the IPv4-mapped ``::ffff:127.x.y.z``). Anything else, ``0.0.0.0``, ``::``,
    ``""`` and every other host name included, counts as reachable from the network."""
    name = host.strip().lower()
    if name == "localhost":
        return True
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return bool(address.is_loopback or (mapped is not None and mapped.is_loopback))


def _entry(text: str, where: str, allow_admin: bool = True) -> tuple[str, str, bool]:
    """(user, password, admin) of ``user:password`` or ``user:password:admin``; the error names
    ``where`` (a line number, an entry number) and never the password."""
    user, sep, password = text.partition(":")
    user = user.strip()
    admin = False
    if allow_admin and password.endswith(ADMIN_FLAG):
        password, admin = password[: -len(ADMIN_FLAG)], True
    if not sep or not user or not password:
        expected = "user:password or user:password:admin" if allow_admin else "user:password"
        raise ServingRefused(f"{where}: expected {expected}")
    return user, password, admin


def _logins(entries: list[tuple[str, str, bool, str]], source: str) -> Logins:
    passwords: dict[str, str] = {}
    admins = set()
    for user, password, admin, where in entries:
        if user in passwords:
            raise ServingRefused(f"{where}: user {user!r} is given twice")
        passwords[user] = password
        if admin:
            admins.add(user)
    if not passwords:
        raise ServingRefused(f"{source}: no user:password in it")
    return Logins(passwords, frozenset(admins), source)


def read_auth_file(path: str | Path) -> Logins:
    """The logins of an auth file: one ``user:password`` per line, ``:admin`` after the password for an
    admin; blank lines and lines starting with ``#`` are skipped. Refused (:class:`ServingRefused`):
    a missing file, a file whose mode gives group or others any permission (``chmod 600`` it), a
    malformed line (its number is named, its text is not) or a user given twice."""
    path = Path(path)
    where = f"--auth-file {path}"
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise ServingRefused(f"{where}: no such file") from None
    except OSError as exc:
        raise ServingRefused(f"{where}: cannot read it ({exc.strerror})") from None
    if not stat.S_ISREG(mode):
        raise ServingRefused(f"{where}: not a regular file")
    if os.name == "posix" and mode & 0o077:
        raise ServingRefused(f"{where}: its mode {stat.S_IMODE(mode):04o} lets group or others read it; "
                             f"run chmod 600 {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ServingRefused(f"{where}: cannot read it ({reason})") from None
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        entries.append((*_entry(line, f"{where} line {number}"), f"{where} line {number}"))
    return _logins(entries, where)


def parse_auth_env(value: str) -> Logins:
    """The logins of ``CRM_LAB_AUTH``: ``user:password`` entries (``:admin`` allowed) separated by commas."""
    entries = []
    for number, item in enumerate(value.split(","), start=1):
        item = item.strip()
        if not item:
            continue
        where = f"{AUTH_ENV} entry {number}"
        entries.append((*_entry(item, where), where))
    return _logins(entries, AUTH_ENV)


def parse_auth_arg(value: str) -> tuple[str, str]:
    """``--auth user:password``: one user, the password is everything after the first colon."""
    user, password, _ = _entry(value, "--auth", allow_admin=False)
    return user, password


def resolve_logins(auth_file: str | None, auth: str | None,
                   environ: Mapping[str, str] | None = None) -> tuple[Logins | None, list[str]]:
    """(the logins, warnings to log) from ``--auth-file``, ``--auth`` or ``CRM_LAB_AUTH`` (at most one
    of them; an empty ``CRM_LAB_AUTH`` counts as unset); (None, []) when none is given."""
    environ = os.environ if environ is None else environ
    env_value = environ.get(AUTH_ENV) or None  # set but empty: not given
    if env_value is not None and not env_value.strip():
        env_value = None
    given = [name for name, value in (("--auth-file", auth_file), ("--auth", auth), (AUTH_ENV, env_value))
             if value is not None]
    if len(given) > 1:
        raise ServingRefused(f"logins given by both {' and '.join(given)}: give them one way "
                             f"(--auth-file PATH, {AUTH_ENV} or --auth)")
    if auth_file is not None:
        return read_auth_file(auth_file), []
    if env_value is not None:
        return parse_auth_env(env_value), []
    if auth is not None:
        user, password = parse_auth_arg(auth)
        return Logins({user: password}, source="--auth"), [
            "--auth puts the password on the command line, where every user of this machine can read it "
            "(ps, /proc/PID/cmdline); prefer --auth-file PATH or the CRM_LAB_AUTH environment variable"]
    return None, []


def check_bind(host: str, port: int, logins: Logins | None, insecure: bool) -> tuple[str | None, list[str]]:
    """(the page's banner, warnings to log) for serving on ``host``, or :class:`ServingRefused`: a
    host other machines can reach needs a login, or ``--insecure-no-auth`` to say it needs none."""
    if logins is not None:
        if insecure:
            raise ServingRefused(f"--insecure-no-auth contradicts the logins of {logins.source}: drop one of them")
        return None, []
    if is_loopback(host):
        return None, []
    if not insecure:
        raise ServingRefused(
            f"refusing to serve on {host or '(all interfaces)'} without a login: anyone who can reach it could run "
            f"models and start trainings; give --auth-file PATH (user:password lines, chmod 600) or set {AUTH_ENV}, "
            "or pass --insecure-no-auth to serve without a login anyway")
    where = f"{host or '(all interfaces)'}:{port}"
    return (f"served without login to {where}: anyone who can reach this address can use this dashboard "
            "and start trainings (--insecure-no-auth)",
            [f"serving on {where} without a login (--insecure-no-auth): anyone who can reach it can run models "
             "and start trainings"])


# -- who may do what in the served app --------------------------------------------------
@dataclass(frozen=True)
class Access:
    """What the UI is told about its logins. ``logins`` False (loopback, or --insecure-no-auth):
    no owner is recorded, no limit applies and anyone may stop any job, as before logins existed."""

    logins: bool = False
    admins: frozenset[str] = frozenset()
    jobs_per_user: int = 2  # running plus queued fine-tunes of one user
    banner: str | None = None  # shown at the top of the page (served without login to the network)

    def is_admin(self, user: str | None) -> bool:
        return user is not None and user in self.admins


class JobLimit(ValueError):
    """A user asked for more fine-tune jobs than the per-user limit allows."""


@dataclass(eq=False)
class Job:
    """One fine-tune of the book: its name, its owner (None: no login), whether it got its turn."""

    name: str
    owner: str | None
    stop: threading.Event = field(default_factory=threading.Event)
    started: bool = False


class JobBook:
    """The fine-tune jobs of one served app, first come first served: the first has the turn, the
    others wait for it. ``per_user`` (None: no limit) bounds each owner's jobs, running plus queued;
    jobs without an owner are never limited.

    State: ``_jobs``, in order of arrival, under ``_turn`` (a condition on its own lock, taken for
    a few list operations only: never while training or waiting on the engine's locks).
    """

    def __init__(self, per_user: int | None = None) -> None:
        if per_user is not None and per_user < 1:
            raise ValueError("jobs per user must be >= 1")
        self.per_user = per_user
        self._turn = threading.Condition(threading.Lock())
        self._jobs: list[Job] = []

    def admit(self, name: str, owner: str | None) -> Job:
        """Book a job at the end of the queue; :class:`JobLimit` when ``owner`` already has
        ``per_user`` jobs, ValueError when a job of that name is running or queued."""
        with self._turn:
            if any(job.name == name for job in self._jobs):
                raise ValueError(f"a training job named {name!r} is already running or queued; choose a new name")
            if owner is not None and self.per_user is not None:
                mine = [job.name for job in self._jobs if job.owner == owner]
                if len(mine) >= self.per_user:
                    raise JobLimit(f"{owner} already has {len(mine)} training job(s) (fine-tunes, stage-2 trainings) running or queued "
                                   f"({', '.join(mine)}); at most {self.per_user} per user: wait for one to "
                                   "finish or stop one")
            job = Job(name, owner)
            self._jobs.append(job)
            return job

    def ahead(self, job: Job) -> int:
        """How many jobs come before ``job`` (0: its turn)."""
        with self._turn:
            return self._jobs.index(job)

    def wait_turn(self, job: Job, timeout: float) -> int:
        """Wait up to ``timeout`` s for ``job``'s turn (or its stop); returns the jobs still ahead of it.
        A job that gets its turn is marked started."""
        with self._turn:
            self._turn.wait_for(lambda: self._jobs.index(job) == 0 or job.stop.is_set(), timeout)
            ahead = self._jobs.index(job)
            if ahead == 0 and not job.stop.is_set():
                job.started = True
            return ahead

    def done(self, job: Job) -> None:
        """The job ended (finished, failed, stopped, or its page closed): the next one gets the turn."""
        with self._turn:
            if job in self._jobs:
                self._jobs.remove(job)
            self._turn.notify_all()

    def find(self, name: str) -> Job | None:
        with self._turn:
            return next((job for job in self._jobs if job.name == name), None)

    def jobs(self) -> list[Job]:
        """The booked jobs, the running one first."""
        with self._turn:
            return list(self._jobs)

    def cancel(self, job: Job) -> bool:
        """Set ``job.stop``: a queued job never starts (its generator sees it and ends), a running one
        stops at its next step. Returns whether it had started."""
        with self._turn:
            job.stop.set()
            self._turn.notify_all()
            return job.started
