#!/usr/bin/env bash
# Runs as the first process of one lab host: inside the host's network namespace and a new,
# private mount namespace (`nsenter --net=... unshare --mount --propagation private`).
# Gives the host its own /sys view, /run, /tmp, /dev/shm, /var/lib/docker,
# /var/lib/containers, /etc/criu, /root/.ssh, /root/.bashrc and scratch space, then starts
# its dockerd and sshd and stays as the anchor that keeps the namespace alive. Usage: host-init.sh HOST_DIR
set -euo pipefail
H=$1

# Own sysfs (so /sys/class/net shows this host's interfaces) but keep the cgroup mounts:
# dockerd dies with "Devices cgroup isn't mounted" without them.
mkdir -p "$H/.cgroup"
mount --rbind /sys/fs/cgroup "$H/.cgroup"
mount -t sysfs sysfs /sys
mount --move "$H/.cgroup" /sys/fs/cgroup

mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p /run/sshd /run/lock
chmod 0755 /run/sshd
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount --bind "$H/docker" /var/lib/docker
mount --bind "$H/containers" /var/lib/containers  # podman's, for the benchmark's comparison
mount --bind "$H/criu" /etc/criu
mount --bind "$H/migrator" /var/lib/migrator
mount --bind "$H/root-ssh" /root/.ssh
# A fresh server's root shell profile, not this machine's: sshd runs ~/.bashrc for every
# command, and a developer's (pyenv init and the like) costs ~80 ms each time.
if [ -e /root/.bashrc ]; then
  cp /etc/skel/.bashrc "$H/bashrc" 2>/dev/null || : >"$H/bashrc"
  mount --bind "$H/bashrc" /root/.bashrc
fi

# This host's Docker engine: the system's, or a newer one's binaries bind-mounted over it.
bash "$(dirname "$0")/engine.sh" "$H"

# In a subshell, so that dockerd's parent is init, which reaps it: a killed dockerd must not
# stay a zombie child of the anchor below (the next dockerd would refuse its pid file).
( dockerd --config-file "$H/daemon.json" >"$H/dockerd.log" 2>&1 & echo $! >"$H/dockerd.pid" )
/usr/sbin/sshd -f "$H/sshd_config" -E "$H/sshd.log"
echo ready >"$H/ready"
exec sleep infinity
