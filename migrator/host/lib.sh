# shellcheck shell=bash
# lib.sh: the functions migrator's host-side scripts share. Sourced by each of them, never
# run on its own. Every function takes what it works on as arguments (no globals).

# die MESSAGE...: the message on stderr, exit 1.
die() { printf '%s\n' "$*" >&2; exit 1; }

# need NAME VALUE: fail unless an argument was given.
need() { [ -n "$2" ] || die "${0##*/}: --$1 is required"; }

# parse SPEC... -- ARGS...: the scripts' named arguments. Each SPEC names an option: NAME
# takes a value (--NAME VALUE), NAME! is a flag (set to 1), NAME+ may repeat (appended to
# the array NAME). Values land in variables of those names, dashes as underscores, which
# the script sets to their defaults first. What follows a "--" in ARGS is left in the
# array REST. Anything else is an error.
parse() {
  # Its own variables are prefixed: an option may be called --name or --spec.
  local _p_spec=() _p_s _p_opt _p_arg _p_found
  while [ $# -gt 0 ] && [ "$1" != -- ]; do _p_spec+=("$1"); shift; done
  shift
  REST=()
  while [ $# -gt 0 ]; do
    _p_arg=$1; shift
    [ "$_p_arg" != -- ] || { REST=("$@"); return 0; }
    _p_found=0
    for _p_s in "${_p_spec[@]}"; do
      _p_opt=${_p_s%[+!]}
      [ "$_p_arg" = "--$_p_opt" ] || continue
      _p_found=1
      case ${_p_s#"$_p_opt"} in
        '!') printf -v "${_p_opt//-/_}" 1 ;;
        *) [ $# -gt 0 ] || die "${0##*/}: --$_p_opt needs a value"
           if [ "${_p_s#"$_p_opt"}" = + ]; then eval "${_p_opt//-/_}+=(\"\$1\")"
           else printf -v "${_p_opt//-/_}" '%s' "$1"; fi
           shift ;;
      esac
      break
    done
    [ "$_p_found" = 1 ] || die "${0##*/}: unknown argument $_p_arg"
  done
}

# lock_take DIR OWNER: take the lock DIR (mkdir is atomic: whoever makes it holds it) and
# name its owner in DIR/owner. Fails when someone holds it.
lock_take() {
  (umask 077; mkdir -p "$(dirname "$1")" && mkdir "$1" 2>/dev/null && printf '%s' "$2" > "$1/owner")
}

# lock_owner DIR: who holds the lock DIR ('' while it is being taken, or when free).
lock_owner() { cat "$1/owner" 2>/dev/null || true; }

# put_back LOCK CONF: runc.conf (CONF) as it was before the holders of LOCK changed it, and
# the lock released.
put_back() {
  if [ -e "$1/runc.conf.orig" ]; then mv -f "$1/runc.conf.orig" "$2"
  elif [ -e "$1/runc.conf.absent" ]; then rm -f "$2"; fi
  rm -rf "$1"
}

# The runc.conf hold. runc.conf is changed once for every holder that wants the same
# options (LOCK/options, their text): each holder is a file LOCK/holders/PID, and the file
# goes back when the last one leaves or is found dead. Joins and leaves are ordered by a
# flock on LOCK's parent directory; a holder of other options is waited for.
#
# hold_join LOCK CONF PID OPTIONS: 0 when PID holds it with OPTIONS (runc.conf has them
# after what it had), 1 when it is held with other options (their holders on stdout).
hold_join() {
  local lock=$1 conf=$2 pid=$3 want=$4 h live=0 rc=1
  (umask 077; mkdir -p "${lock%/*}")
  exec {_hold_fd}<"${lock%/*}"; flock "$_hold_fd"
  for h in "$lock"/holders/*; do
    [ -e "$h" ] || continue
    if kill -0 "${h##*/}" 2>/dev/null; then live=1; else rm -f "$h"; fi
  done
  if [ -d "$lock" ] && [ "$live" = 0 ] && [ -d "$lock/holders" ]; then put_back "$lock" "$conf"; fi
  if [ -d "$lock" ] && [ ! -d "$lock/holders" ]; then  # a migrator before shared holds: its owner
    h=$(cat "$lock/owner" 2>/dev/null || true)
    if [[ $h =~ ^[0-9]+$ ]] && ! kill -0 "$h" 2>/dev/null; then put_back "$lock" "$conf"; fi
  fi
  if [ ! -d "$lock" ]; then
    (umask 077; mkdir -p "$lock/holders")
    if [ -e "$conf" ]; then cp -p "$conf" "$lock/runc.conf.orig"; else : > "$lock/runc.conf.absent"; fi
    printf '%s' "$want" > "$lock/options"
    mkdir -p "${conf%/*}"
    { [ ! -e "$lock/runc.conf.orig" ] || cat "$lock/runc.conf.orig"; printf '%s' "$want"; } > "$conf.new"
    mv "$conf.new" "$conf"
  fi
  if [ -d "$lock/holders" ] && [ "$(cat "$lock/options" 2>/dev/null)" = "$(printf '%s' "$want")" ]; then
    : > "$lock/holders/$pid"; rc=0
  else
    if [ -d "$lock/holders" ]; then (cd "$lock/holders" && printf '%s ' *); else cat "$lock/owner" 2>/dev/null || :; fi
  fi
  exec {_hold_fd}>&-
  return "$rc"
}

# hold_leave LOCK CONF PID: PID holds it no more; runc.conf back when no holder is left.
hold_leave() {
  local lock=$1 conf=$2 pid=$3 h
  [ -d "$lock/holders" ] || return 0
  exec {_hold_fd}<"${lock%/*}"; flock "$_hold_fd"
  rm -f "$lock/holders/$pid"
  for h in "$lock"/holders/*; do
    if [ -e "$h" ] && kill -0 "${h##*/}" 2>/dev/null; then exec {_hold_fd}>&-; return 0; fi
  done
  [ ! -d "$lock/holders" ] || put_back "$lock" "$conf"
  exec {_hold_fd}>&-
}

# criu_failed LOG WHAT: say why CRIU failed, from its LOG: its Error lines (the cause; the
# last lines say only "Dumping FAILED"), on stderr, and keep the log (0600, the ten latest
# kept) where the message says. WHAT names it (e.g. dump-CONTAINER).
criu_failed() {
  local log=$1 keep=${MIGRATOR_LOG_DIR:-/var/lib/migrator/logs}
  [ -f "$log" ] || { echo "CRIU failed and left no log ($log)" >&2; return 0; }
  (umask 077; mkdir -p "$keep")
  local kept
  kept=$keep/$(date -u +%Y%m%dT%H%M%SZ)-$2.log
  cp "$log" "$kept" && chmod 0600 "$kept"
  # shellcheck disable=SC2012  # our own file names, made just above: no odd characters
  ls -1t "$keep" | tail -n +11 | while read -r old; do rm -f "$keep/$old"; done
  local errors
  # "(00.247680)      1: Error (...)": a restored task's own lines carry its pid
  errors=$(grep -E '^\([0-9. ]+\) +([0-9]+: +)?Error' "$log" | sed -E 's/^\([0-9. ]+\) +([0-9]+: +)?//' | tail -5)
  { if [ -n "$errors" ]; then printf '%s\n' "$errors"; else tail -3 "$log"; fi
    echo "CRIU's log: $kept"; } >&2
}

# manifest DIR: a CRC line per regular file of DIR, on stdout (pages CRIU wrote into a pipe
# are not files there: SSH's MAC covered them on the wire).
manifest() { (cd "$1" && find . -type f ! -name MANIFEST -print0 | sort -z | xargs -0 -r cksum -a crc); }

# verify_manifest DIR: every file DIR/MANIFEST names is there with that CRC, or say not.
verify_manifest() {
  diff <(cd "$1" && sed 's/^[0-9]* [0-9]* //' MANIFEST | tr '\n' '\0' | xargs -0 -r cksum -a crc 2>&1) \
    "$1/MANIFEST" >/dev/null && [ -s "$1/MANIFEST" ] && return
  echo "checkpoint in $1 does not match its checksums; not restoring from it" >&2; return 1
}

# check_pages DIR "FILE:SIZE ...": each pages file in DIR has the size CRIU's pagemap gives
# it. A pages file cut short makes CRIU's restore spin instead of failing.
check_pages() {
  local dir=$1 p n
  for p in $2; do
    n=$(stat -c %s "$dir/${p%:*}" 2>/dev/null || echo 0)
    [ "$n" = "${p##*:}" ] || {
      echo "${p%:*} in $dir has $n bytes, its pagemap says ${p##*:}; not restoring from it" >&2; return 1; }
  done
}

# accepts PID IP PORT: a TCP connect to the container's own address succeeds (a leftover
# network lock fails it); with no IP (host or no network), from inside PID's namespace.
accepts() {
  # shellcheck disable=SC2016  # the inner scripts' own arguments
  if [ -n "$2" ]; then timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$2" "$3" 2>/dev/null
  else timeout 2 nsenter -t "$1" -n bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$3" 2>/dev/null; fi
}

# refuse PID: inside CRIU's network lock of PID's network namespace (its CRIU chain, whose
# first rule lets CRIU's own packets through), answer TCP with a reset instead of dropping
# it, so that clients turn away at once instead of waiting out a SYN retransmit. Flushed
# with the lock's chain; nothing happens where there is no lock.
refuse() {
  local t
  for t in iptables ip6tables; do
    nsenter -t "$1" -n "$t" -w -I CRIU 2 -p tcp --tcp-flags RST RST -j ACCEPT 2>/dev/null &&
      nsenter -t "$1" -n "$t" -w -I CRIU 3 -p tcp -j REJECT --reject-with tcp-reset 2>/dev/null
  done
  return 0
}

# silence PID: the address moves with the container (macvlan, ipvlan): its network
# namespace (PID's) stops answering ARP for it, so that once the target brings the same
# address up, one host answers for it. CRIU's lock already drops its IP packets both
# ways. The interfaces it silenced on stdout, for speak.
silence() {
  local i
  for i in $(links "$1" | grep -v ' NOARP$'); do
    nsenter -t "$1" -n ip link set dev "$i" arp off && echo "$i"
  done
  return 0
}

# links PID: the interfaces of PID's network namespace but lo, a line each ("NAME" or
# "NAME NOARP").
links() {
  nsenter -t "$1" -n ip -o link show |
    awk -F': ' '$2 != "lo" { sub(/@.*/, "", $2); print $2 ($0 ~ /NOARP/ ? " NOARP" : "") }'
}

# speak PID [IFACE...]: PID's network namespace answers ARP again on IFACE (all of its
# interfaces but lo when none are named) and tells its neighbours (and the switches between
# them) where its addresses are now: an unsolicited ARP for each IPv4 address (arping,
# where it is installed).
speak() {
  local pid=$1 i a; shift
  if [ $# -eq 0 ]; then local all; mapfile -t all < <(links "$pid" | cut -d' ' -f1); set -- "${all[@]}"; fi
  for i; do
    nsenter -t "$pid" -n ip link set dev "$i" arp on 2>/dev/null || continue
    for a in $(nsenter -t "$pid" -n ip -o -4 addr show dev "$i" scope global | awk '{ print $4 }'); do
      # two, a second apart (not waited for: nothing here is slowed by them)
      ! command -v arping >/dev/null ||
        nsenter -t "$pid" -n arping -q -U -c 2 -I "$i" "${a%/*}" </dev/null >/dev/null 2>&1 &
    done
  done
  return 0
}

# hold_inbound TABLE "IP ..." IFACE...: until the nftables table TABLE (netdev) is deleted,
# this host drops the TCP packets for these addresses as they arrive on each IFACE (the
# parent of the container's macvlan/ipvlan interface; netdev ingress runs ahead of those
# drivers): between Docker bringing the restored container's interface up and CRIU
# restoring its connections, the kernel there would answer a client's packet with a
# reset. The client's TCP sends it again. Without nft, nothing is held.
hold_inbound() {
  local table=$1 addrs=$2 i n=0 a; shift 2
  command -v nft >/dev/null && nft add table netdev "$table" || return 0
  for i; do
    nft add chain netdev "$table" "in$n" "{ type filter hook ingress device \"$i\" priority -500; }" || continue
    for a in $addrs; do nft add rule netdev "$table" "in$n" ip daddr "$a" ip protocol tcp drop; done
    n=$((n + 1))
  done
}

# release_inbound TABLE: what hold_inbound held goes (nothing when there is none).
release_inbound() { ! command -v nft >/dev/null || nft delete table netdev "$1" 2>/dev/null || :; }

# STAND_IN: the interface stand_in makes.
STAND_IN=mgkeep0

# stand_in PID ADDRESS...: PID's network namespace, which Docker networks only after the
# restore (Docker 28 and newer, restoring at `runc create`), gets the container's
# addresses on a stand-in interface (one end of a veth pair whose other end is there too,
# with a default route of its own at the lowest priority) for CRIU to reconnect the
# restored connections to; Docker's interface takes over when it comes (restore.sh then
# removes the stand-in, and with it its peer).
stand_in() {
  local pid=$1 a; shift
  nsenter -t "$pid" -n ip link add "$STAND_IN" type veth peer name "$STAND_IN-p" || return 1
  nsenter -t "$pid" -n ip link set "$STAND_IN-p" up
  nsenter -t "$pid" -n ip link set "$STAND_IN" up
  for a; do nsenter -t "$pid" -n ip addr add "$a/32" dev "$STAND_IN" noprefixroute; done
  nsenter -t "$pid" -n ip route add default dev "$STAND_IN" metric 4294967295
}

# guard -I|-D PORT...: on the host, refuse (TCP reset), or stop refusing, the new connections
# Docker forwards from these published ports to a container. Between Docker publishing them
# and the container's network being up they would be dropped.
guard() {
  local op=$1 p t; shift
  for p; do for t in iptables ip6tables; do
    "$t" -w "$op" DOCKER-USER -p tcp --syn -m conntrack --ctstate DNAT --ctorigdstport "$p" \
      -j REJECT --reject-with tcp-reset 2>/dev/null || :
  done; done
}

# await_file TICK SECONDS FILE...: until one of the FILEs exists (SECONDS 0: no bound;
# returns 1 when they ran out). Sleeps on TICK, a pipe nobody writes: `read -t` on it waits
# without starting a process.
await_file() {
  local tick=$1 bound=$2 end=$((SECONDS + $2)) f; shift 2
  exec 3<>"$tick"
  while :; do
    for f; do [ -e "$f" ] && return 0; done
    [ "$bound" = 0 ] || [ "$SECONDS" -lt "$end" ] || return 1
    read -r -t 0.01 _ <&3 || :
  done
}

# freeze TICK PID: freeze the cgroup of PID (its v1 freezer or its v2 cgroup.freeze) and
# return once it is frozen, looking every millisecond for up to 2 s; then thaw it back and
# let CRIU freeze it its own way. CRIU finding it frozen goes straight on, where it would
# check its own freezing only every 100 ms. PROC_ROOT and CGROUP_ROOT (default /proc and
# /sys/fs/cgroup) are for tests on fake trees.
freeze() {
  local proc=${PROC_ROOT:-/proc} root=${CGROUP_ROOT:-/sys/fs/cgroup} cg f want on off i
  exec 3<>"$1"
  if cg=$(sed -n 's/^[0-9]*:freezer:\(.*\)$/\1/p' "$proc/$2/cgroup" 2>/dev/null) && [ -n "$cg" ]; then
    f=$root/freezer$cg/freezer.state want=FROZEN on=FROZEN off=THAWED
  elif cg=$(sed -n 's/^0::\(.*\)$/\1/p' "$proc/$2/cgroup" 2>/dev/null) && [ -n "$cg" ]; then
    f=$root$cg/cgroup.freeze want=1 on=1 off=0
  else return 0; fi
  [ -w "$f" ] && echo "$on" > "$f" 2>/dev/null || return 0
  for ((i = 0; i < 2000; i++)); do
    if [ "$want" = FROZEN ]; then [ "$(< "$f")" = FROZEN ] && return 0
    else grep -qx 'frozen 1' "${f%/*}/cgroup.events" 2>/dev/null && return 0; fi
    read -r -t 0.001 _ <&3 || :
  done
  echo "$off" > "$f"
  return 0
}

# The perl that makes a pipe 1 MiB deep instead of 64 KiB (fewer switches between the
# processes on its two ends): the one on stdin ("-"), or a FIFO, opened read-write and then
# held open until the process is killed. Without perl a pipe keeps its default size.
# shellcheck disable=SC2016  # perl code, not shell
DEEPEN_PIPE='my $f = \*STDIN; if ($ARGV[0] ne "-") { open($f, "+<", $ARGV[0]) or die }
             fcntl($f, 1031, 1 << 20) or die; if ($ARGV[0] ne "-") { sleep }'

# deepen_stdin: the pipe on stdin 1 MiB deep.
deepen_stdin() { perl -e "$DEEPEN_PIPE" - 2>/dev/null; }

# hold_deep FIFO: FIFO 1 MiB deep, held open by this (background) process, which becomes
# the perl process, until it is killed.
hold_deep() { exec perl -e "$DEEPEN_PIPE" "$1" 2>/dev/null; }
