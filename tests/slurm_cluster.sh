#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, on loopback only, for the `slurm` tests.
#
#   tests/slurm_cluster.sh install      apt-get install slurm-wlm and munge (Debian; needs root)
#   tests/slurm_cluster.sh start DIR    write DIR/slurm.conf, start munged (unless one answers),
#                                       slurmctld and slurmd, wait until the node is idle
#   tests/slurm_cluster.sh stop DIR     stop what `start` started, by process id, in reverse order
#
# Clients need SLURM_CONF=DIR/slurm.conf. No accounting storage: job status comes from squeue
# (the Snakemake profile sets slurm-status-command: squeue), which needs MinJobAge well above
# the plugin's first wait, so finished jobs stay visible long enough.
set -euo pipefail

command=${1:?usage: slurm_cluster.sh install|start DIR|stop DIR}

case "$command" in
install)
    if command -v slurmctld >/dev/null && command -v munged >/dev/null; then
        echo "slurm: already installed"
        exit 0
    fi
    command -v apt-get >/dev/null || { echo "slurm: no apt-get here: cannot install slurm-wlm" >&2; exit 1; }
    [ "$(id -u)" = 0 ] || { echo "slurm: installing slurm-wlm needs root" >&2; exit 1; }
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
    echo "slurm: installed $(slurmctld -V)"
    ;;
start)
    dir=$(realpath -m "${2:?usage: slurm_cluster.sh start DIR}")
    mkdir -p "$dir"/{state,spool,log}
    host=$(hostname -s)
    cpus=$(nproc)
    memory=$(( $(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo) - 1024 ))
    if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
        if [ ! -s /etc/munge/munge.key ]; then
            mungekey -c -f -k /etc/munge/munge.key
        fi
        mkdir -p /run/munge /var/log/munge /var/lib/munge
        chown -R munge:munge /etc/munge /run/munge /var/log/munge /var/lib/munge 2>/dev/null || true
        chmod 400 /etc/munge/munge.key
        /usr/sbin/munged --force --pid-file "$dir/munged.pid"
        sleep 0.5
        cat "$dir/munged.pid" > "$dir/started-munged"
    fi
    cat > "$dir/slurm.conf" <<EOF
ClusterName=rewarm-test
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
ReturnToService=2
MinJobAge=300
KillWait=10
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    export SLURM_CONF="$dir/slurm.conf"
    # Snakemake's SLURM plugin drops SLURM_* variables from the jobs' environment, so `srun`
    # inside a job reads the default path: point it at this cluster's file (unless a real one is there).
    mkdir -p /etc/slurm
    if [ ! -e /etc/slurm/slurm.conf ] || [ -L /etc/slurm/slurm.conf ]; then
        ln -sfn "$SLURM_CONF" /etc/slurm/slurm.conf
        echo "$SLURM_CONF" > "$dir/linked-conf"
    fi
    /usr/sbin/slurmctld -D -c -f "$SLURM_CONF" >"$dir/log/slurmctld.out" 2>&1 &
    echo $! > "$dir/started-slurmctld"
    /usr/sbin/slurmd -D -f "$SLURM_CONF" >"$dir/log/slurmd.out" 2>&1 &
    echo $! > "$dir/started-slurmd"
    for _ in $(seq 1 120); do
        if sinfo -h -o "%T" 2>/dev/null | grep -qx "idle"; then
            echo "slurm: node $host idle ($cpus CPUs, $memory MiB); SLURM_CONF=$SLURM_CONF"
            exit 0
        fi
        sleep 0.5
    done
    echo "slurm: the node did not become idle; logs in $dir/log" >&2
    tail -n 20 "$dir"/log/*.log "$dir"/log/*.out >&2 || true
    exit 1
    ;;
stop)
    dir=$(realpath -m "${2:?usage: slurm_cluster.sh stop DIR}")
    for daemon in slurmd slurmctld munged; do
        if [ -s "$dir/started-$daemon" ]; then
            pid=$(cat "$dir/started-$daemon")
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
            kill -9 "$pid" 2>/dev/null || true
            rm -f "$dir/started-$daemon"
        fi
    done
    if [ -f "$dir/linked-conf" ] && [ "$(readlink /etc/slurm/slurm.conf)" = "$(cat "$dir/linked-conf")" ]; then
        rm -f /etc/slurm/slurm.conf "$dir/linked-conf"
    fi
    echo "slurm: stopped"
    ;;
*)
    echo "usage: slurm_cluster.sh install|start DIR|stop DIR" >&2
    exit 2
    ;;
esac
