"""Where migrator keeps things on a host. Everything is root's, 0600 files in 0700 dirs:
work dirs and images hold process memory."""

from __future__ import annotations

STATE_DIR = "/var/lib/migrator"
SHM_DIR = "/dev/shm/migrator"  # CRIU images in tmpfs, when they fit
RUNC_CONF = "/etc/criu/runc.conf"
RUNC_LOCK = f"{STATE_DIR}/locks/runc-conf"
SCRIPTS_DIR = f"{STATE_DIR}/scripts"  # the host-side scripts, one dir per version


def workdir(operation: str) -> str:
    return f"{STATE_DIR}/work/{operation}"


def shm_dir(operation: str) -> str:
    return f"{SHM_DIR}/{operation}"


def transfer_places(operation: str) -> str:
    """Where a transfer's key may write on its target (receive.sh --allow): outside them all."""
    return f"{STATE_DIR}/transfer/{operation}.allow"


def hold_dir(operation: str) -> str:
    """A held dump's files (held.sh): its verdict, status and CRIU action script."""
    return f"{workdir(operation)}/hold"


def lock_path(container_id: str) -> str:
    return f"{STATE_DIR}/locks/{container_id}"
