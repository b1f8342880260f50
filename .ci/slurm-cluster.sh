#!/usr/bin/env bash
# A real single-node Slurm for the `slurm`-marked tests (and for developers), without systemd.
#
#   bash .ci/slurm-cluster.sh install      # apt-get the Debian packages (root; CI does this)
#   bash .ci/slurm-cluster.sh up [DIR]     # start munged, slurmctld and slurmd; wait for an idle node
#   bash .ci/slurm-cluster.sh down [DIR]   # stop the daemons started by `up`, by their pids
#   bash .ci/slurm-cluster.sh conf [DIR]   # print the slurm.conf path (export SLURM_CONF=...)
#
# DIR (default $STEPH_SLURM_DIR, else /tmp/stephctl-slurm) holds slurm.conf, the daemons' state,
# spool, logs and pid files, and jobcomp.txt (the job completion records `sacct -c` reads). The
# client commands find this cluster through SLURM_CONF=DIR/slurm.conf; nothing under /etc/slurm
# is touched. `up` reuses daemons it started earlier that are still alive. Ports:
# $STEPH_SLURM_PORT (slurmctld, default 6817) and that + 1 (slurmd).
#
# The settings are the ones a single-node Slurm needs to run arrays side by side:
# select/cons_tres with CR_Core_Memory (cores and memory are consumable, so several one-core
# tasks run at once), DefMemPerCPU (without it one job takes the node's whole memory),
# proctrack/linuxproc and task/none (no cgroups, no systemd), ReturnToService=1 (a node set down
# and resumed comes back), cred_expire=30 (a requeued job may start again after 30 s instead of
# the default 120; it must not start sooner, its old credential is revoked), and one node with this machine's CPUs and memory (`slurmd -C`).
# Needs root: munged runs as the munge user and slurmd starts jobs as their user.
set -euo pipefail

cmd=${1:-}
dir=${2:-${STEPH_SLURM_DIR:-/tmp/stephctl-slurm}}
port=${STEPH_SLURM_PORT:-6817}
packages=(munge slurmctld slurmd slurm-client)

die() { echo "slurm-cluster: $*" >&2; exit 1; }

install_packages() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
        && command -v munged >/dev/null; then
        return 0
    fi
    [ "$(id -u)" = 0 ] || die "the Slurm packages are not installed and installing them needs root"
    command -v apt-get >/dev/null || die "no apt-get to install ${packages[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
}

alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

start_munge() {
    # one munged per machine, at the socket path the Slurm packages were built with
    if [ -S /run/munge/munge.socket.2 ] && munge -n </dev/null >/dev/null 2>&1; then
        return 0
    fi
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    chmod 0755 /run/munge
    if [ ! -s /etc/munge/munge.key ]; then
        mkdir -p /etc/munge
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
        chown munge:munge /etc/munge/munge.key
        chmod 0400 /etc/munge/munge.key
    fi
    runuser -u munge -- /usr/sbin/munged
    for _ in $(seq 50); do
        if munge -n </dev/null >/dev/null 2>&1; then
            cp /run/munge/munged.pid "$dir/munged.pid" 2>/dev/null || true   # ours: `down` stops it
            return 0
        fi
        sleep 0.1
    done
    die "munged did not start (see /var/log/munge/munged.log)"
}

write_conf() {
    local node cpus memory host
    host=$(hostname -s)
    node=$(slurmd -C | head -n1)   # NodeName=<host> CPUs=.. Boards=.. ... RealMemory=..
    cpus=$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$node")
    memory=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$node")
    mkdir -p "$dir/state" "$dir/spool"
    cat >"$dir/slurm.conf" <<EOF
# written by .ci/slurm-cluster.sh
ClusterName=stephci
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
AuthType=auth/munge
AuthInfo=cred_expire=30
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$((memory / cpus / 2))
ReturnToService=1
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
MessageTimeout=30
SlurmdTimeout=60
MinJobAge=600
JobRequeue=1
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$dir/jobcomp.txt
MpiDefault=none
$node
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    # the node line names this host; slurmd is started with -N so the two always agree
    sed -i "s/^NodeName=[^ ]*/NodeName=$host NodeAddr=127.0.0.1/" "$dir/slurm.conf"
}

up() {
    [ "$(id -u)" = 0 ] || die "starting munged and slurmd needs root"
    for daemon in munged slurmctld slurmd sinfo; do
        command -v "$daemon" >/dev/null || die "$daemon is not installed (bash $0 install)"
    done
    export SLURM_CONF=$dir/slurm.conf
    if alive "$dir/slurmctld.pid" && alive "$dir/slurmd.pid"; then
        echo "$SLURM_CONF"
        return 0
    fi
    down >/dev/null 2>&1 || true
    mkdir -p "$dir"
    start_munge
    write_conf
    rm -f "$dir/jobcomp.txt"
    slurmctld -f "$SLURM_CONF" -i   # -i: ignore state left by an earlier cluster in DIR
    slurmd -f "$SLURM_CONF" -N "$(hostname -s)"
    local state=""
    for _ in $(seq 120); do
        state=$(sinfo -h -N -o '%T' 2>/dev/null | head -n1 || true)
        if [ "$state" = idle ]; then
            echo "$SLURM_CONF"
            return 0
        fi
        sleep 0.5
    done
    die "the node did not become idle within 60 s (state '${state:-none}'; logs in $dir)"
}

stop_pid() {
    local file=$1 pid
    alive "$file" || { rm -f "$file"; return 0; }
    pid=$(cat "$file")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || { rm -f "$file"; return 0; }
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$file"
}

down() {
    stop_pid "$dir/slurmd.pid"
    stop_pid "$dir/slurmctld.pid"
    stop_pid "$dir/munged.pid"   # only a munged that `up` started
}

case "$cmd" in
    install) install_packages ;;
    up) up ;;
    down) down ;;
    conf) echo "$dir/slurm.conf" ;;
    *) die "usage: $0 install | up [DIR] | down [DIR] | conf [DIR]" ;;
esac
