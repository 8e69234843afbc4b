"""Running workers unprivileged: `[gateway] user` / `group`.

The master starts as root so it can bind port 443, read private keys and create the
state directory, events file, connection table and control socket; `hand_over` then
gives those to the configured user, and every worker calls `drop_privileges` right
after fork, before it touches anything else. The master itself stays root: a reload
may need to bind a new privileged port. Called by tlsgate/master/arbiter.py and
tlsgate/worker/process.py.
"""

from __future__ import annotations

import grp
import os
import pwd
from pathlib import Path


def resolve_ids(user: str, group: str | None) -> tuple[int, int]:
    """(uid, gid) for names or numbers; the group defaults to the user's primary group."""
    entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    if group is None:
        return entry.pw_uid, entry.pw_gid
    gid = grp.getgrgid(int(group)).gr_gid if group.isdigit() else grp.getgrnam(group).gr_gid
    return entry.pw_uid, gid


def hand_over(paths: list[Path], uid: int, gid: int) -> None:
    """chown every path (directories recursively) to the workers' user; missing ones are skipped."""
    for path in paths:
        if not path.exists():
            continue
        os.chown(path, uid, gid, follow_symlinks=False)
        if path.is_dir() and not path.is_symlink():
            for root, dirs, files in os.walk(path):
                for name in dirs + files:
                    os.chown(os.path.join(root, name), uid, gid, follow_symlinks=False)


def drop_privileges(uid: int, gid: int) -> None:
    """Become uid/gid for good (no supplementary groups, no way back)."""
    if os.getuid() == uid and os.getgid() == gid:
        return
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    if os.geteuid() == 0 and uid != 0:
        raise PermissionError("still root after setuid")
