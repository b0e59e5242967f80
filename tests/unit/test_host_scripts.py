"""The host-side scripts' logic, run here on fake trees and files: no root, no lab.
(The lab's integration tests run the same scripts for real.)"""

from __future__ import annotations

import io
import os
import re
import shlex
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from migrator import hostscripts, shell
from migrator.transport import wait_for

HERE = Path(hostscripts.local_dir())
DEAD_PID = "999999999"  # no such process: nsenter into it fails, /proc has nothing of it


def script(name: str, *args: str | int, env: dict[str, str] | None = None, timeout: float = 30,
           **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(HERE / name), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})}, **kw)  # type: ignore[call-overload]


def lib(call: str, *args: str | int, env: dict[str, str] | None = None,
        timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """One lib.sh function, called with args."""
    return subprocess.run(["bash", "-c", f'. "$0"; {call} "$@"', str(HERE / "lib.sh"), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})


# --- the scripts' argument parser -------------------------------------------------------------
PARSE = ('a='' b_c='' f=0 r=() name=''; parse a b-c f! r+ name -- "$@"; '
         'printf "a=%s b_c=%s f=%s r=%s name=%s rest=%s\\n" "$a" "$b_c" "$f" "${r[*]}" "$name" "${REST[*]}"')


def test_parse_sets_values_flags_repeats_and_keeps_the_rest() -> None:
    r = subprocess.run(["bash", "-c", f'. "$0"; {PARSE}', str(HERE / "lib.sh"), "--a", "x y", "--f", "--r", "1",
                        "--b-c", "$(z)", "--r", "2", "--name", "n", "--", "--a", "rest"], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "a=x y b_c=$(z) f=1 r=1 2 name=n rest=--a rest\n"
    for bad, why in ((["--nope"], "unknown argument --nope"), (["--a"], "--a needs a value")):
        r = subprocess.run(["bash", "-c", f'. "$0"; {PARSE}', str(HERE / "lib.sh"), *bad], capture_output=True,
                           text=True)
        assert r.returncode == 1 and why in r.stderr


# --- manifest ---------------------------------------------------------------------------
def test_manifest_verifies_and_catches_a_changed_or_missing_file(tmp_path: Path) -> None:
    d = tmp_path / "img dir"
    d.mkdir()
    (d / "core-1.img").write_bytes(os.urandom(5000))
    (d / "a name; $(x)").write_text("odd name")
    assert script("manifest.sh", "--dir", d).returncode == 0
    assert len((d / "MANIFEST").read_text().splitlines()) == 2
    assert script("manifest.sh", "--dir", d, "--verify").returncode == 0

    data = bytearray((d / "core-1.img").read_bytes())
    data[100] ^= 1
    (d / "core-1.img").write_bytes(bytes(data))
    r = script("manifest.sh", "--dir", d, "--verify")
    assert r.returncode == 1 and "does not match its checksums" in r.stderr

    (d / "core-1.img").unlink()
    assert script("manifest.sh", "--dir", d, "--verify").returncode == 1
    (d / "MANIFEST").write_text("")  # an empty manifest proves nothing
    assert script("manifest.sh", "--dir", d, "--verify").returncode == 1


def test_pages_must_have_the_size_their_pagemap_says(tmp_path: Path) -> None:
    (tmp_path / "pages-1.img").write_bytes(b"\0" * 8192)
    (tmp_path / "pages-2.img").write_bytes(b"\0" * 4096)
    assert lib("check_pages", tmp_path, "pages-1.img:8192 pages-2.img:4096").returncode == 0
    r = lib("check_pages", tmp_path, "pages-1.img:16384")
    assert r.returncode == 1 and "pages-1.img in" in r.stderr and "has 8192 bytes, its pagemap says 16384" in r.stderr
    assert lib("check_pages", tmp_path, "pages-3.img:4096").returncode == 1  # missing: 0 bytes
    assert lib("check_pages", tmp_path, "").returncode == 0


# --- the runc.conf lock (criu-run.sh) ---------------------------------------------------
def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_criu_run_adds_options_for_the_command_only(tmp_path: Path) -> None:
    lock, conf = tmp_path / "locks" / "runc-conf", tmp_path / "criu" / "runc.conf"
    r = script("criu-run.sh", "--lock", lock, "--conf", conf, "--opt", "tcp-close", "--opt", "skip-in-flight",
               "--", "bash", "-c", 'cat "$1"; ls "$2/holders"; echo "$CRIU_RUN_PID"', "_", conf, lock)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[:2] == ["tcp-close", "skip-in-flight"]
    assert lines[2] == lines[3]  # the holder is criu-run.sh, as the command is told
    assert not conf.exists() and not lock.exists()  # it had no runc.conf: none again

    conf.write_text("log-level 4\n")
    conf.chmod(0o640)
    r = script("criu-run.sh", "--lock", lock, "--conf", conf, "--opt", "tcp-close", "--", "cat", conf)
    assert r.stdout == "log-level 4\ntcp-close\n"
    assert conf.read_text() == "log-level 4\n" and oct(conf.stat().st_mode & 0o777) == "0o640"
    r = script("criu-run.sh", "--lock", lock, "--conf", conf, "--opt", "tcp-close", "--", "false")
    assert r.returncode == 1 and conf.read_text() == "log-level 4\n"  # the command's status, the file back


def _criu_run_bg(lock: Path, conf: Path, opt: str, out: Path, seconds: float) -> subprocess.Popen[str]:
    """criu-run.sh of a command that says when it starts and ends, `seconds` apart."""
    cmd = (f'echo "start $(date +%s.%N) $(cat "$1" | tr "\\n" " ")" >> "$2"; sleep {seconds}; '
           'echo "end $(date +%s.%N)" >> "$2"')
    return subprocess.Popen(["bash", str(HERE / "criu-run.sh"), "--lock", str(lock), "--conf", str(conf),
                             "--opt", opt, "--", "bash", "-c", cmd, "_", str(conf), str(out)], text=True,
                            stderr=subprocess.PIPE)


def test_commands_wanting_the_same_options_share_one_change_and_the_last_puts_it_back(tmp_path: Path) -> None:
    lock, conf = tmp_path / "runc-conf", tmp_path / "runc.conf"
    conf.write_text("mine\n")
    outs = [tmp_path / f"out{i}" for i in range(3)]
    procs = [_criu_run_bg(lock, conf, "tcp-close", o, s) for o, s in zip(outs, (1.5, 0.5, 1.0), strict=True)]
    assert all(p.wait(20) == 0 for p in procs), [p.stderr.read() for p in procs if p.stderr]
    runs = [o.read_text().split("\n") for o in outs]
    starts = [float(r[0].split()[1]) for r in runs]
    ends = [float(r[1].split()[1]) for r in runs]
    assert max(starts) < min(ends)  # all three ran at once
    assert all(r[0].split(maxsplit=2)[2] == "mine tcp-close " for r in runs)  # the options added once
    assert conf.read_text() == "mine\n" and not lock.exists()


def test_other_options_wait_for_the_holders_to_leave(tmp_path: Path) -> None:
    lock, conf = tmp_path / "runc-conf", tmp_path / "runc.conf"
    a, b = tmp_path / "a", tmp_path / "b"
    first = _criu_run_bg(lock, conf, "tcp-close", a, 1.0)
    deadline = time.monotonic() + 10
    while not a.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    second = _criu_run_bg(lock, conf, "tcp-established", b, 0.1)
    assert first.wait(20) == 0 and second.wait(20) == 0
    assert float(b.read_text().split()[1]) >= float(a.read_text().split("\n")[1].split()[1])
    assert b.read_text().split("\n")[0].split(maxsplit=2)[2] == "tcp-established "
    assert not conf.exists() and not lock.exists()


@pytest.mark.parametrize("older", [False, True])
def test_criu_run_drops_a_dead_holder_and_puts_its_file_back(tmp_path: Path, older: bool) -> None:
    """A holder that died (also one of an older migrator, whose lock named one owner):
    runc.conf goes back as it was before, then the command gets its own options."""
    lock, conf = tmp_path / "runc-conf", tmp_path / "runc.conf"
    if older:
        lock.mkdir()
        (lock / "owner").write_text(str(_dead_pid()))
    else:
        (lock / "holders").mkdir(parents=True)
        (lock / "holders" / str(_dead_pid())).write_text("")
        (lock / "options").write_text("tcp-established\n")
    (lock / "runc.conf.orig").write_text("mine\n")
    conf.write_text("mine\nleft by the dead one\n")
    r = script("criu-run.sh", "--lock", lock, "--conf", conf, "--opt", "tcp-close", "--", "cat", conf)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "mine\ntcp-close\n"
    assert conf.read_text() == "mine\n" and not lock.exists()


@pytest.mark.parametrize("older", [False, True])
def test_criu_run_waits_for_a_live_holder_then_says_who(tmp_path: Path, older: bool) -> None:
    lock, conf = tmp_path / "runc-conf", tmp_path / "runc.conf"
    lock.mkdir()
    if older:
        (lock / "owner").write_text(str(os.getpid()))
    else:
        (lock / "holders").mkdir()
        (lock / "holders" / str(os.getpid())).write_text("")
        (lock / "options").write_text("tcp-established\n")
    t0 = time.monotonic()
    r = script("criu-run.sh", "--lock", lock, "--conf", conf, "--wait", 2, "--opt", "tcp-close", "--", "true")
    assert r.returncode == 75 and f"is held by pid {os.getpid()}" in r.stderr
    assert time.monotonic() - t0 >= 1  # bash counts whole seconds: 2 of them last at least 1
    assert not conf.exists() and lock.is_dir()  # not touched


def test_the_container_lock_is_taken_over_only_from_the_owner_named(tmp_path: Path) -> None:
    d = tmp_path / "locks" / "abc"
    assert script("lock.sh", "take", "--dir", d, "--owner", "one").returncode == 0
    r = script("lock.sh", "take", "--dir", d, "--owner", "two")
    assert r.returncode == 1 and r.stdout == "one"
    assert script("lock.sh", "take", "--dir", d, "--owner", "two", "--from", "someone else").returncode == 1
    assert script("lock.sh", "take", "--dir", d, "--owner", "two", "--from", "one").returncode == 0
    assert (d / "owner").read_text() == "two"
    assert script("lock.sh", "release", "--dir", d).returncode == 0 and not d.exists()


# --- the held dump: held.sh, post-dump.sh, release.sh -------------------------------------
# What CRIU does with a held dump's action script, on fake images: pre-dump, write the
# images, post-dump (waits for the verdict); a failed post-dump resumes the processes.
FAKE_DUMP = r"""
hold=$1 img=$2 pid=$3
CRTOOLS_SCRIPT_ACTION=pre-dump CRTOOLS_INIT_PID=$pid "$hold/post-dump" || exit 1
[ "$4" = fail ] && { echo "Error (criu/cr-dump.c): boom" >&2; exit 7; }
mkdir -p "$img"; echo core > "$img/core-1.img"
CRTOOLS_SCRIPT_ACTION=post-dump CRTOOLS_INIT_PID=$pid "$hold/post-dump" || { echo resumed; exit 1; }
echo killed
"""


def _held(tmp_path: Path, how: str = "ok") -> tuple[Path, Path, Path, Path, subprocess.CompletedProcess[str]]:
    hold, img = tmp_path / "hold", tmp_path / "img"
    lock, conf = tmp_path / "runc-conf", tmp_path / "runc.conf"
    fake = tmp_path / "fake-criu"
    fake.write_text(FAKE_DUMP)
    dump = ["bash", str(HERE / "criu-run.sh"), "--lock", str(lock), "--conf", str(conf),
            "--opt", f"action-script {hold}/post-dump", "--", "bash", str(fake), str(hold), str(img), DEAD_PID, how]
    r = script("held.sh", "--hold", hold, "--pid", DEAD_PID, "--img", img, "--lock", lock, "--conf", conf,
               "--", *dump)
    return hold, img, lock, conf, r


@pytest.mark.parametrize("verdict, status, said", [("commit", "0", "killed"), ("abort", "1", "resumed")])
def test_a_held_dump_waits_for_its_verdict(tmp_path: Path, verdict: str, status: str, said: str) -> None:
    hold, img, lock, conf, r = _held(tmp_path)
    assert r.returncode == 0, r.stderr
    # images complete: MANIFEST written, runc.conf put back and its lock free while it is held
    assert (hold / "dumped").exists() and not (hold / "rc").exists()
    assert (img / "MANIFEST").exists() and script("manifest.sh", "--dir", img, "--verify").returncode == 0
    assert not conf.exists() and not lock.exists()
    time.sleep(0.2)
    assert not (hold / "rc").exists()  # still held
    r = script("release.sh", "--hold", hold, "--verdict", verdict)
    assert r.returncode == 0 and r.stdout.strip() == status
    assert (hold / "out").read_text().strip() == said
    r = script("release.sh", "--hold", hold, "--verdict", "commit")  # again: the same status
    assert r.stdout.strip() == status


def test_a_dump_that_fails_before_its_images_are_complete_says_why(tmp_path: Path) -> None:
    hold, _, lock, conf, r = _held(tmp_path, "fail")
    assert r.returncode == 7 and "boom" in r.stderr
    assert not (hold / "dumped").exists()
    assert not conf.exists() and not lock.exists()  # criu-run put it back when the dump ended


def test_release_without_a_held_dump_says_nothing(tmp_path: Path) -> None:
    r = script("release.sh", "--hold", tmp_path / "none", "--verdict", "abort")
    assert r.returncode == 0 and r.stdout == ""


def test_post_dump_acts_only_for_the_process_it_was_made_for(tmp_path: Path) -> None:
    hold = tmp_path / "hold"
    hold.mkdir()
    (hold / "pid").write_text("123\n")
    for action, pid in (("post-dump", "456"), ("post-restore", "123"), ("", "123")):
        r = script("post-dump.sh", "--hold", hold, "--lock", tmp_path / "l", "--conf", tmp_path / "c",
                   env={"CRTOOLS_SCRIPT_ACTION": action, "CRTOOLS_INIT_PID": pid}, timeout=5)
        assert r.returncode == 0 and not (hold / "dumped").exists()


# --- the freeze helper on fake cgroup trees ------------------------------------------------
def _freeze(tmp_path: Path, cgroup_line: str) -> tuple[float, subprocess.CompletedProcess[str]]:
    proc = tmp_path / "proc" / "42"
    proc.mkdir(parents=True)
    (proc / "cgroup").write_text(f"{cgroup_line}\n3:cpu,cpuacct:/other\n")
    tick = tmp_path / "tick"
    os.mkfifo(tick)
    t0 = time.monotonic()
    r = lib("freeze", tick, 42, env={"PROC_ROOT": str(tmp_path / "proc"), "CGROUP_ROOT": str(tmp_path / "cg")})
    return time.monotonic() - t0, r


def test_freeze_v1_writes_the_freezer_state(tmp_path: Path) -> None:
    state = tmp_path / "cg" / "freezer" / "docker" / "abc" / "freezer.state"
    state.parent.mkdir(parents=True)
    state.write_text("THAWED\n")
    took, r = _freeze(tmp_path, "12:freezer:/docker/abc")
    assert r.returncode == 0 and state.read_text() == "FROZEN\n" and took < 1.5


def test_freeze_v2_writes_cgroup_freeze_and_waits_for_the_event(tmp_path: Path) -> None:
    group = tmp_path / "cg" / "docker" / "abc"
    group.mkdir(parents=True)
    (group / "cgroup.freeze").write_text("0\n")
    (group / "cgroup.events").write_text("populated 1\nfrozen 1\n")
    took, r = _freeze(tmp_path, "0::/docker/abc")
    assert r.returncode == 0 and (group / "cgroup.freeze").read_text() == "1\n" and took < 1.5


def test_freeze_v2_that_never_freezes_is_thawed_back(tmp_path: Path) -> None:
    group = tmp_path / "cg" / "docker" / "abc"
    group.mkdir(parents=True)
    (group / "cgroup.freeze").write_text("0\n")
    (group / "cgroup.events").write_text("populated 1\nfrozen 0\n")
    took, r = _freeze(tmp_path, "0::/docker/abc")
    assert r.returncode == 0 and (group / "cgroup.freeze").read_text() == "0\n" and took >= 2


def test_freeze_without_a_freezer_changes_nothing(tmp_path: Path) -> None:
    (tmp_path / "cg").mkdir()
    took, r = _freeze(tmp_path, "4:memory:/docker/abc")
    assert r.returncode == 0 and list((tmp_path / "cg").iterdir()) == [] and took < 1.5


# --- transfer.sh, with `bash -c` standing in for ssh to the target ----------------------------
def _key(tmp_path: Path, *places: tuple[str, Path]) -> str:
    """A stand-in for ssh with a transfer key: its last word, the request, goes to receive.sh
    as the key's forced command, which may write at `places`. The --ssh words for it."""
    allow = tmp_path / "transfer" / "op.allow"
    allow.parent.mkdir(exist_ok=True)
    allow.write_text("".join(f"{kind} {path}\n" for kind, path in places))
    fake = tmp_path / "fake-ssh"
    fake.write_text(f'SSH_ORIGINAL_COMMAND="${{*: -1}}" exec bash {shlex.quote(str(HERE / "receive.sh"))} '
                    f'--allow {shlex.quote(str(allow))}\n')
    return shell.join(["bash", fake])


def _transfer(ssh: str, *args: str | int) -> subprocess.CompletedProcess[str]:
    return script("transfer.sh", "--ssh", ssh, "--zstd", shell.join(shell.ZSTD), *args)


def test_transfer_jobs_arrive_compressed_or_raw(tmp_path: Path) -> None:
    src, out = tmp_path / "src", tmp_path / "out dir %41"
    src.mkdir()
    out.mkdir()
    (src / "a").write_bytes(os.urandom(300_000))
    ssh = _key(tmp_path, ("tree", out))
    r = _transfer(ssh, "--job", "j0", "--producer", shell.join(["cat", src / "a"]),
                  "--remote", shell.request(["write", 1, f"{out}/a.z"]), "--compress", 1,
                  "--job", "j1", "--producer", shell.join(["cat", src / "a"]),
                  "--remote", shell.request(["write", 0, f"{out}/a.raw"]), "--compress", 0)
    assert r.returncode == 0, r.stderr
    assert (out / "a.z").read_bytes() == (out / "a.raw").read_bytes() == (src / "a").read_bytes()
    counts = {m[1]: int(m[2]) for m in re.finditer(r"^J(\w+) (\d+) bytes", r.stderr, re.M)}
    assert counts["j1"] == 300_000 and 0 < counts["j0"]
    r = _transfer(ssh, "--job", "j0", "--producer", "false", "--remote", "sink", "--compress", 0)
    assert r.returncode == 1  # a failing producer fails the transfer
    r = _transfer(ssh, "--job", "j0", "--producer", "true", "--compress", 0)
    assert r.returncode == 1 and "each --job needs" in r.stderr
    r = _transfer(ssh, "--job", "j0", "--bogus", "x")
    assert r.returncode == 1 and "unknown argument --bogus" in r.stderr


FAKE_PAGES_DUMP = r"""
img=$1
head -c 3000000 /dev/urandom > "$img/pages-2.img.tmp"; mv "$img/pages-2.img.tmp" "$img/pages-2.img"
cat "$2" > "$img/pages-1.img"   # CRIU writing the first process's pages into the pipe
printf 'pm' > "$img/pagemap-1.img"; echo core > "$img/core-1.img"
[ "$3" = fail ] && exit 9
exit 0
"""


@pytest.mark.parametrize("raw", [False, True])
def test_transfer_follows_a_dump_streaming_its_pages(tmp_path: Path, raw: bool) -> None:
    src_img, dst_img = tmp_path / "src" / "img", tmp_path / "dst" / "img"
    dst_img.mkdir(parents=True)
    (dst_img / "pages-1.img").write_bytes(b"\0" * 5_000_000)  # set aside, larger than what comes
    pages = tmp_path / "pages"
    pages.write_bytes(os.urandom(2_000_000))
    fake = tmp_path / "fake-dump"
    fake.write_text(FAKE_PAGES_DUMP)
    z = 0 if raw else 1
    small = ["--job", "small", "--producer", shell.join([*shell.TAR, "-C", src_img, "--exclude=pages-*.img",
                                                         "-cf", "-", "."]),
             "--remote", shell.request(["untar", z, dst_img]), "--compress", z]
    r = _transfer(_key(tmp_path, ("tree", dst_img)), *small, "--follow-img", src_img,
                  "--follow-dst", shell.request([dst_img]),
                  "--pages-writer", shell.request(["pages", z, dst_img / "pages-1.img", *(["p1"] if raw else [])]),
                  *(["--raw-pages"] if raw else []), "--dumped", "DUMPED", "--pagemap", "PM ",
                  "--", "bash", fake, src_img, pages)
    assert r.returncode == 0, r.stderr
    assert (dst_img / "pages-1.img").read_bytes() == pages.read_bytes()  # overwritten in place, cut
    assert (dst_img / "pages-2.img").read_bytes() == (src_img / "pages-2.img").read_bytes()
    assert (dst_img / "core-1.img").read_text() == "core\n"
    lines = r.stderr.splitlines()
    assert "DUMPED" in lines and "PM cG0=" in lines and lines.index("PM cG0=") < lines.index("DUMPED")
    assert not (src_img / "pages-1.img").is_file()  # a pipe: never written on the source


def test_transfer_of_a_failed_dump_stops_with_its_status(tmp_path: Path) -> None:
    src_img, dst_img = tmp_path / "src" / "img", tmp_path / "dst" / "img"
    dst_img.mkdir(parents=True)
    pages = tmp_path / "pages"
    pages.write_bytes(os.urandom(100_000))
    fake = tmp_path / "fake-dump"
    fake.write_text(FAKE_PAGES_DUMP)
    r = _transfer(_key(tmp_path, ("tree", dst_img)), "--job", "small", "--producer", "echo never",
                  "--remote", shell.request(["write", 0, dst_img / "never"]), "--compress", 0,
                  "--follow-img", src_img, "--follow-dst", shell.request([dst_img]),
                  "--pages-writer", shell.request(["pages", 1, dst_img / "pages-1.img"]), "--dumped", "DUMPED",
                  "--pagemap", "PM ", "--", "bash", fake, src_img, pages, "fail")
    assert r.returncode == 9 and "DUMPED" not in r.stderr
    assert not (dst_img / "never").exists()


# --- installing them on a host ----------------------------------------------------------------
def test_the_bundle_is_every_script_and_its_version_their_content() -> None:
    version, tar = hostscripts.bundle()
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        names = sorted(t.getnames())
    assert names == sorted(p.name for p in HERE.glob("*.sh")) and "lib.sh" in names
    assert len(version) == 16 and hostscripts.bundle() == (version, tar)


def test_install_puts_them_in_place_once(tmp_path: Path) -> None:
    from migrator.hostscripts import _INSTALL

    _, tar = hostscripts.bundle()
    where = tmp_path / "scripts" / "v1"
    for _ in range(2):  # the second finds it complete
        r = subprocess.run(["bash", "-c", _INSTALL, "install", str(where)], input=tar, capture_output=True)
        assert r.returncode == 0, r.stderr
    assert (where / ".complete").exists() and (where / "lib.sh").read_bytes() == (HERE / "lib.sh").read_bytes()
    assert oct(where.stat().st_mode & 0o777) == "0o700"
    assert [p.name for p in where.parent.iterdir()] == ["v1"]  # no temporaries left


# --- authorized_keys, edited under a lock, whole ----------------------------------------------
def _keys(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return script("authorized-keys.sh", *args, env={"HOME": str(home)})


def test_authorized_keys_edits_keep_a_symlink_its_mode_and_every_concurrent_key(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    real = tmp_path / "keys" / "root"
    real.parent.mkdir()
    real.write_text("ssh-ed25519 AAAA operator@laptop")  # no newline at its end
    real.chmod(0o640)
    (home / ".ssh" / "authorized_keys").symlink_to(real)
    procs = [subprocess.Popen(["bash", str(HERE / "authorized-keys.sh"), "add", "--line",
                               f'restrict,from="10.0.0.{i}" ssh-ed25519 K{i} migrator-transfer-m{i}'],
                              env={**os.environ, "HOME": str(home)}) for i in range(12)]
    assert all(p.wait(30) == 0 for p in procs)
    lines = real.read_text().splitlines()
    assert lines[0] == "ssh-ed25519 AAAA operator@laptop" and len(lines) == 13
    assert {ln.rsplit(" ", 1)[1] for ln in lines[1:]} == {f"migrator-transfer-m{i}" for i in range(12)}
    assert (home / ".ssh" / "authorized_keys").is_symlink() and oct(real.stat().st_mode & 0o777) == "0o640"
    assert _keys(home, "remove", "--comment", "migrator-transfer-m3").returncode == 0
    lines = real.read_text().splitlines()
    assert len(lines) == 12 and not any(ln.endswith("migrator-transfer-m3") for ln in lines)
    assert (home / ".ssh" / "authorized_keys").is_symlink() and oct(real.stat().st_mode & 0o777) == "0o640"
    assert sorted(p.name for p in real.parent.iterdir()) == ["root"]  # no temporaries left


def test_authorized_keys_made_when_missing_and_removing_from_none_is_fine(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert _keys(home, "remove", "--comment", "migrator-transfer-x").returncode == 0
    assert not (home / ".ssh" / "authorized_keys").exists()
    assert _keys(home, "add", "--line", "ssh-ed25519 K migrator-transfer-x").returncode == 0
    keys = home / ".ssh" / "authorized_keys"
    assert keys.read_text() == "ssh-ed25519 K migrator-transfer-x\n" and oct(keys.stat().st_mode & 0o777) == "0o600"


# --- dump.sh: its CRIU options in a file of its own, runc.conf untouched ------------------------
def test_a_dump_through_runc_gives_criu_its_own_options_file(tmp_path: Path) -> None:
    bin_dir, img, work = tmp_path / "bin", tmp_path / "img", tmp_path / "work"
    bin_dir.mkdir()
    fake = bin_dir / "runc"  # stands in for runc: CRIU would read CRIU_CONFIG_FILE
    fake.write_text('#!/bin/bash\nimg=$5\ncp "$CRIU_CONFIG_FILE" "$img/core-1.img"\necho "$*" > "$img/args"\n')
    fake.chmod(0o755)
    r = script("dump.sh", "--img", img, "--work", work, "--container", "abc", "--root", "/run/x",
               "--opt", "tcp-close", "--opt", "action-script /h/post-dump",
               env={"PATH": f"{bin_dir}:{os.environ['PATH']}"})
    assert r.returncode == 0, r.stderr
    assert (img / "core-1.img").read_text() == "tcp-close\naction-script /h/post-dump\n"
    assert (img / "args").read_text().split() == ["--root", "/run/x", "checkpoint", "--image-path", str(img),
                                                 "--work-path", str(work), "abc"]
    assert oct((work / "criu.conf").stat().st_mode & 0o777) == "0o600"
    assert script("manifest.sh", "--dir", img, "--verify").returncode == 0


def test_a_dump_keeping_connections_asks_runc_for_them(tmp_path: Path) -> None:
    """runc's own request to CRIU says tcp-established (false unless its flag is given),
    and it outranks the options file: kept connections need runc's flag."""
    bin_dir, img, work = tmp_path / "bin", tmp_path / "img", tmp_path / "work"
    bin_dir.mkdir()
    fake = bin_dir / "runc"
    fake.write_text('#!/bin/bash\nimg=$5\necho "$*" > "$img/args"\n')
    fake.chmod(0o755)
    r = script("dump.sh", "--img", img, "--work", work, "--container", "abc", "--root", "/run/x",
               "--opt", "tcp-established", "--opt", "skip-in-flight", env={"PATH": f"{bin_dir}:{os.environ['PATH']}"})
    assert r.returncode == 0, r.stderr
    assert "--tcp-established" in (img / "args").read_text().split()
    assert (work / "criu.conf").read_text() == "tcp-established\nskip-in-flight\n"

def test_restore_action_acts_only_in_migrators_restores(tmp_path: Path) -> None:
    """Every restore on the host runs it while runc.conf names it: one whose images lack
    migrator-restore (not ours) is left alone, as is every step but two of ours."""
    imgs, bin_dir, calls = tmp_path / "img", tmp_path / "bin", tmp_path / "calls"
    imgs.mkdir()
    bin_dir.mkdir()
    for tool in ("nsenter", "iptables", "ip"):  # what its two steps run: here they only say so
        (bin_dir / tool).write_text(f'#!/bin/bash\necho "{tool} $*" >> {shlex.quote(str(calls))}\n')
        (bin_dir / tool).chmod(0o755)
    env = {"CRTOOLS_INIT_PID": DEAD_PID, "CRTOOLS_IMAGE_DIR": str(imgs), "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    for ours in (False, True):
        if ours:
            (imgs / "migrator-restore").write_text("8080 8443\n")
        for action in ("post-setup-namespaces", "network-unlock", "post-restore", "pre-restore"):
            r = script("restore-action.sh", env={**env, "CRTOOLS_SCRIPT_ACTION": action}, timeout=5)
            assert r.returncode == 0, r.stderr
        assert calls.exists() == ours
    assert "8443" in calls.read_text()  # the published ports' guard lifted at network-unlock


def test_dumpable_names_another_users_processes_whose_rlimits_criu_cannot_read(tmp_path: Path) -> None:
    """A process of uid 1000: where prlimit() of it is refused (root lacks
    CAP_SYS_RESOURCE, as on this sandbox), a CRIU without the /proc fallback is named as
    failing before any freeze; with the fallback (its binary has the message), nothing."""
    other = subprocess.Popen(["setpriv", "--reuid", "1000", "--regid", "1000", "--clear-groups", "sleep", "30"])
    try:  # until it is sleep, of uid 1000 (a fixed pause was too short on a busy machine)
        assert wait_for(lambda: Path(f"/proc/{other.pid}/comm").read_text().strip() == "sleep", 10)
        refused = subprocess.run(["prlimit", "--pid", str(other.pid), "--nofile"], capture_output=True).returncode != 0
        plain = tmp_path / "criu-plain"
        plain.write_text("#!/bin/sh\n")
        patched = tmp_path / "criu-patched"
        patched.write_text("#!/bin/sh\n# rlimit %d of %d read from /proc/%d/limits (prlimit refused)\n")
        plain.chmod(0o755)
        patched.chmod(0o755)
        r = script("dumpable.sh", "--pid", other.pid, env={"CRIU": str(plain)})
        assert r.returncode == 0, r.stderr
        assert r.stdout == (f"rlimits 1000 {other.pid}\n" if refused else "")
        r = script("dumpable.sh", "--pid", other.pid, env={"CRIU": str(patched)})
        assert r.returncode == 0 and r.stdout == ""
        r = script("dumpable.sh", "--pid", os.getpid(), env={"CRIU": str(plain)})
        assert f" {os.getpid()}\n" not in r.stdout  # our own (root's) limits: readable
    finally:
        other.kill()
        other.wait()


def test_dumpable_names_deleted_files_held_open_over_criu_s_ghost_limit(tmp_path: Path) -> None:
    big, small = tmp_path / "big", tmp_path / "small"
    hold = subprocess.Popen(["bash", "-c", 'head -c 2097152 /dev/zero > "$1"; head -c 4096 /dev/zero > "$2"; '
                             'exec 3<"$1" 4<"$2"; rm "$1" "$2"; exec sleep 30', "_", str(big), str(small)])
    try:
        deadline = time.monotonic() + 5
        while (big.exists() or not os.path.exists(f"/proc/{hold.pid}/fd/3")) and time.monotonic() < deadline:
            time.sleep(0.05)
        r = script("dumpable.sh", "--pid", hold.pid)
        assert r.returncode == 0, r.stderr
        assert f"ghost {hold.pid} 2097152 {big}\n" in r.stdout  # over 1 MiB: named
        assert str(small) not in r.stdout  # under it: CRIU copies it
    finally:
        hold.kill()
        hold.wait()


def test_criu_failed_shows_the_error_lines_of_the_restored_tasks_too_and_keeps_the_log(tmp_path: Path) -> None:
    """A restore's cause is in a restored task's own lines ("1: Error ..."), before CRIU's
    "Restoring FAILED": both kinds are shown, the timestamps and pids left out, and the log
    is kept 0600 under the name given."""
    log = tmp_path / "restore.log"
    log.write_text("(00.001489) Error (criu/util.c:1534): rlimit: noise\n(00.002000) Collected [data/held]\n"
                   + "(00.100000) info\n" * 50
                   + "(00.247680)      1: Error (criu/files-reg.c:2353): Can't open file data/held on restore\n"
                   "(00.248744) Error (criu/cr-restore.c:2331): Restoring FAILED.\n")
    r = lib("criu_failed", log, "restore-abc", env={"MIGRATOR_LOG_DIR": str(tmp_path / "logs")})
    assert r.returncode == 0
    lines = r.stderr.splitlines()
    assert lines[-3:-1] == ["Error (criu/files-reg.c:2353): Can't open file data/held on restore",
                            "Error (criu/cr-restore.c:2331): Restoring FAILED."], r.stderr
    kept = Path(lines[-1].removeprefix("CRIU's log: "))
    assert kept.parent == tmp_path / "logs" and kept.name.endswith("-restore-abc.log")
    assert kept.read_text() == log.read_text() and kept.stat().st_mode & 0o777 == 0o600


# --- receive.sh: what a transfer key can do on its target ------------------------------------
def _receive(ssh: str, request: str, data: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*shlex.split(ssh), request], input=data, capture_output=True, timeout=30)


def test_a_transfer_key_writes_only_at_its_places(tmp_path: Path) -> None:
    work, upper, outside = tmp_path / "work", tmp_path / "upper", tmp_path / "outside"
    for d in (work, upper, outside):
        d.mkdir()
    ssh = _key(tmp_path, ("tree", work), ("dir", upper))
    tar = subprocess.run(["tar", "-C", tmp_path, "-cf", "-", "fake-ssh"], capture_output=True, check=True).stdout
    assert _receive(ssh, shell.request(["write", 0, work / "a b" / "f%"]), b"x").returncode == 1  # no such dir
    (work / "a b").mkdir()
    assert _receive(ssh, shell.request(["write", 0, work / "a b" / "f%"]), b"data").returncode == 0
    assert (work / "a b" / "f%").read_bytes() == b"data"
    assert _receive(ssh, shell.request(["untar", 0, upper]), tar).returncode == 0
    assert (upper / "fake-ssh").is_file()
    assert _receive(ssh, "true").returncode == 0
    (work / "out").symlink_to(outside)  # what a hostile sender could have made in its work dir
    (work / "shadow").symlink_to(outside / "shadow")
    refused = [["write", 0, outside / "f"], ["untar", 0, outside], ["untar", 0, work / "out"],
               ["write", 0, work / "out" / "f"], ["untar", 0, upper / ".."], ["write", 0, upper / "f"],
               ["write", 0, "relative/f"], ["untar", 0, work, "then-rm"], ["bash", "-c", "id"],
               ["rsync", "--server", "--sender", "-logDtpr", ".", str(outside)]]
    for words in refused:
        r = _receive(ssh, shell.request(words), tar)
        assert r.returncode != 0 and b"refused" in r.stderr, (words, r.stderr)
    r = _receive(ssh, shell.request(["write", 0, work / "shadow"]), b"x")  # never through a link
    assert r.returncode != 0 and not (outside / "shadow").exists()
    r = _receive(ssh, shell.request(["pages", 0, work / "shadow"]), b"x")
    assert r.returncode != 0 and not (outside / "shadow").exists()
    assert list(outside.iterdir()) == []
    (tmp_path / "transfer" / "op.allow").unlink()  # the link closed
    r = _receive(ssh, "true")
    assert r.returncode == 1 and b"this transfer is over" in r.stderr
