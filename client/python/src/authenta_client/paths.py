"""Where the daemon's socket is, when the caller does not say (as the CLI finds it).

1. the path given to the client;
2. else ``AUTHENTA_SOCKET``;
3. else ``/run/authenta/keyd.sock`` when running as root;
4. else ``$XDG_RUNTIME_DIR/authenta/keyd.sock``;
5. else ``$TMPDIR/authenta-<euid>/keyd.sock`` (``/tmp`` without ``TMPDIR``).

The last one lies in a directory every user can write to. Like the CLI, the client then
refuses a socket directory that is not this user's alone (owned by it, mode 0700): another
user could have made it and put a socket there that collects the tokens apps send.
"""

from __future__ import annotations

import os
import stat
from typing import Optional, Union

from .errors import UnsafeSocketPath

PathLike = Union[str, "os.PathLike[str]"]


def fallback_socket_dir() -> str:
    """``$TMPDIR/authenta-<euid>``: the socket directory of a non-root daemon without
    ``XDG_RUNTIME_DIR``."""
    return os.path.join(os.environ.get("TMPDIR") or "/tmp", f"authenta-{os.geteuid()}")


def default_socket_path() -> str:
    """The socket when neither the caller nor ``AUTHENTA_SOCKET`` names one."""
    if os.geteuid() == 0:
        return "/run/authenta/keyd.sock"
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return os.path.join(runtime, "authenta", "keyd.sock")
    return os.path.join(fallback_socket_dir(), "keyd.sock")


def resolve_socket_path(path: Optional[PathLike] = None) -> str:
    """The socket to use: ``path``, else ``AUTHENTA_SOCKET``, else the default."""
    if path is not None:
        return os.fspath(path)
    return os.environ.get("AUTHENTA_SOCKET") or default_socket_path()


def check_socket_dir(socket_path: str) -> None:
    """Raises :class:`UnsafeSocketPath` when ``socket_path`` is in the fallback directory
    and that directory exists but is not this user's alone."""
    directory = os.path.dirname(socket_path)
    if os.path.normpath(directory) != os.path.normpath(fallback_socket_dir()):
        return
    try:
        info = os.lstat(directory)
    except FileNotFoundError:
        return  # connecting will fail and say so
    euid = os.geteuid()
    problem = None
    if not stat.S_ISDIR(info.st_mode):
        problem = "is not a directory"
    elif info.st_uid != euid:
        problem = f"belongs to uid {info.st_uid}, not {euid}"
    elif info.st_mode & 0o077:
        problem = f"has mode {stat.S_IMODE(info.st_mode):04o}, not 0700"
    if problem:
        raise UnsafeSocketPath(
            socket_path,
            f"the socket directory {directory} {problem}",
            "in the shared temporary directory another user could put their own socket "
            "there; remove the directory (the daemon makes it 0700), or set "
            "XDG_RUNTIME_DIR or AUTHENTA_SOCKET",
        )
