#!/usr/bin/env bash
# local_slurm.sh start|stop|status - a real one-node SLURM cluster on this machine, for the
# sweep integration test, CI and trying `biopost sweep submit` on a laptop-sized box.
#
# Debian 12 packages (munge, slurmctld, slurmd, slurm-client; installed with apt on first use),
# no systemd and no cgroups. Must run as root. Idempotent: `start` on a running cluster is a
# no-op (it restarts the daemons only when the generated config changed).
# Everything (config, munge key, sockets, spool, logs, pid files) lives in the state dir;
# clients need SLURM_CONF:
#     source "$SLURM_LOCAL_DIR/slurm.env"        # exports SLURM_CONF
#
# Knobs (environment):
#   SLURM_LOCAL_DIR   state dir                                   (${TMPDIR:-/tmp}/biopost-slurm)
#   SLURM_PARTITION   partition name                              (debug)
#   SLURM_CPUS        advertise this many CPUs instead of the real count, so that more tasks
#                     run at once on a small box (oversubscription; 2-core CI: try 8)   (unset)
#   SLURM_GRES_GPUS   advertise N fake GPUs (char-device clones of /dev/null)           (unset)
#   SLURM_CTLD_PORT / SLURM_SLURMD_PORT                           (6817 / 6818)
#   SLURM_WAIT_S      seconds to wait for the node to become idle (60)
#   SLURM_PURGE=1     `stop` also deletes the state dir
# Exit status of `status`: 0 when slurmctld and slurmd both run, 1 otherwise.
set -euo pipefail

D=${SLURM_LOCAL_DIR:-${TMPDIR:-/tmp}/biopost-slurm}
PARTITION=${SLURM_PARTITION:-debug}
CTLD_PORT=${SLURM_CTLD_PORT:-6817}
SLURMD_PORT=${SLURM_SLURMD_PORT:-6818}
WAIT_S=${SLURM_WAIT_S:-60}
export SLURM_CONF=$D/etc/slurm.conf
MKEY=$D/munge/etc/munge.key
MSOCK=$D/munge/run/munge.socket.2

log() { printf '[local_slurm +%ss] %s\n' "$SECONDS" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
alive() {  # alive PIDFILE NAME -> 0 if the pid in PIDFILE runs a process called NAME
  local pid; [ -s "$1" ] || return 1; pid=$(cat "$1")
  [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm")" = "$2" ]
}
wait_for() {  # wait_for SECONDS CMD...
  local end=$(( $(date +%s) + $1 )); shift
  until "$@" >/dev/null 2>&1; do [ "$(date +%s)" -ge "$end" ] && return 1; sleep 0.2; done
}

install_packages() {
  local p missing=""
  for p in munge slurmctld slurmd slurm-client; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
  done
  [ -z "$missing" ] && return 0
  command -v apt-get >/dev/null || die "missing packages:$missing and no apt-get to install them"
  log "installing:$missing"
  # No init system here: a policy-rc.d that says "no" keeps maintainer scripts from starting
  # daemons; it is removed again unless it was there before.
  local policy_created=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d
    policy_created=1
  fi
  local opts=(-y -q --no-install-recommends -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
  local ok=1
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive apt-get install "${opts[@]}" $missing >"$D/log/apt.log" 2>&1 \
    || { apt-get update -q >>"$D/log/apt.log" 2>&1 \
         && DEBIAN_FRONTEND=noninteractive apt-get install "${opts[@]}" $missing >>"$D/log/apt.log" 2>&1; } \
    || ok=0
  [ "$policy_created" = 1 ] && rm -f /usr/sbin/policy-rc.d
  [ "$ok" = 1 ] || { tail -20 "$D/log/apt.log" >&2; die "apt-get install failed (log: $D/log/apt.log)"; }
  log "packages installed"
}

start_munge() {
  # munge is picky: its dirs must not be group/other-writable and must be owned by root or
  # the munge user; the socket dir must be world-traversable.
  mkdir -p "$D"/{etc,log,run,spool/ctld,spool/d} "$D"/munge/{etc,lib,log,run}
  chmod 755 "$D" "$D"/etc "$D"/log "$D"/run "$D"/spool "$D/munge"
  chown -R munge:munge "$D/munge"
  chmod 700 "$D/munge/etc" "$D/munge/log"; chmod 711 "$D/munge/lib"; chmod 755 "$D/munge/run"
  if [ ! -s "$MKEY" ]; then
    runuser -u munge -- mungekey --create --keyfile="$MKEY" --bits=1024
    log "created munge key $MKEY"
  fi
  chown munge:munge "$MKEY"; chmod 400 "$MKEY"
  if alive "$D/munge/run/munged.pid" munged; then
    log "munged already running (pid $(cat "$D/munge/run/munged.pid"))"
    return 0
  fi
  rm -f "$MSOCK" "$MSOCK.lock"
  runuser -u munge -- munged --key-file="$MKEY" --socket="$MSOCK" \
    --pid-file="$D/munge/run/munged.pid" --log-file="$D/munge/log/munged.log" \
    --seed-file="$D/munge/lib/munged.seed" --num-threads=2
  # shellcheck disable=SC2016  # $1 expands in the inner sh: the socket path is passed, not spliced
  wait_for 10 sh -c 'munge -n --socket="$1" | unmunge --socket="$1"' _ "$MSOCK" \
    || die "munged did not come up: $(tail -5 "$D/munge/log/munged.log")"
  log "munged started (pid $(cat "$D/munge/run/munged.pid"))"
}

write_config() {  # sets CHANGED=1 when slurm.conf or gres.conf differ from the running ones
  local node hw extra_params="" gres_line="" node_gres="" mem cpus
  node=$(hostname -s)
  # e.g. "NodeName=vm CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory=24049"
  hw=$(slurmd -C 2>/dev/null | grep -m1 '^NodeName=') || die "slurmd -C failed"
  hw=$(echo "$hw" | sed -E 's/^NodeName=[^ ]+ //; s/ UpTime=.*//')
  if [ -n "${SLURM_CPUS:-}" ]; then
    # A flat topology with more CPUs than present; slurmd accepts it with config_overrides.
    mem=$(echo "$hw" | grep -o 'RealMemory=[0-9]*')
    hw="CPUs=$SLURM_CPUS Boards=1 SocketsPerBoard=1 CoresPerSocket=$SLURM_CPUS ThreadsPerCore=1 $mem"
    extra_params="SlurmdParameters=config_overrides"
  fi
  if [ -n "${SLURM_GRES_GPUS:-}" ] && [ "$SLURM_GRES_GPUS" -gt 0 ]; then
    gres_line="GresTypes=gpu"; node_gres="Gres=gpu:$SLURM_GRES_GPUS"
    # Slurm 22.05 drops file-less GPUs, so each fake GPU is a clone of /dev/null (c 1 3).
    mkdir -p "$D/dev"; local i last=$((SLURM_GRES_GPUS - 1))
    for i in $(seq 0 "$last"); do
      [ -c "$D/dev/fakegpu$i" ] || mknod "$D/dev/fakegpu$i" c 1 3 2>/dev/null || touch "$D/dev/fakegpu$i"
    done
    echo "NodeName=$node Name=gpu File=$D/dev/fakegpu[0-$last]" > "$D/etc/gres.conf.new"
  else
    : > "$D/etc/gres.conf.new"
  fi
  mem=$(echo "$hw" | sed -E 's/.*RealMemory=([0-9]+).*/\1/')
  cpus=$(echo "$hw" | sed -E 's/.*CPUs=([0-9]+).*/\1/')
  cat > "$D/etc/slurm.conf.new" <<CONF
# generated by scripts/local_slurm.sh
ClusterName=biopostlocal
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MSOCK
StateSaveLocation=$D/spool/ctld
SlurmdSpoolDir=$D/spool/d
SlurmctldPidFile=$D/run/slurmctld.pid
SlurmdPidFile=$D/run/slurmd.pid
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# no cgroups and no systemd here
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$D/log/jobcomp.txt
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
KillWait=5
MinJobAge=600
Waittime=0
MailProg=/bin/true
$extra_params
$gres_line
NodeName=$node NodeAddr=127.0.0.1 $hw $node_gres State=UNKNOWN
PartitionName=$PARTITION Nodes=$node Default=YES MaxTime=INFINITE State=UP DefMemPerCPU=$(( mem / cpus ))
CONF
  CHANGED=0
  local f
  for f in slurm.conf gres.conf; do
    if ! cmp -s "$D/etc/$f.new" "$D/etc/$f"; then mv "$D/etc/$f.new" "$D/etc/$f"; CHANGED=1
    else rm -f "$D/etc/$f.new"; fi
  done
  echo "export SLURM_CONF=$SLURM_CONF" > "$D/slurm.env"
}

stop_pid() {  # stop_pid PIDFILE NAME
  if ! alive "$1" "$2"; then echo "$2: not running"; return 0; fi
  local pid; pid=$(cat "$1"); kill "$pid"
  for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid"; echo "$2: killed -9 (pid $pid)"
  else echo "$2: stopped (pid $pid)"; fi
}

cmd_start() {
  [ "$(id -u)" = 0 ] || die "must run as root"
  mkdir -p "$D/log"
  install_packages
  start_munge
  write_config
  if [ "$CHANGED" = 1 ] && { alive "$D/run/slurmctld.pid" slurmctld || alive "$D/run/slurmd.pid" slurmd; }; then
    log "config changed: restarting the slurm daemons"
    stop_pid "$D/run/slurmd.pid" slurmd >&2
    stop_pid "$D/run/slurmctld.pid" slurmctld >&2
  fi
  if alive "$D/run/slurmctld.pid" slurmctld; then
    log "slurmctld already running (pid $(cat "$D/run/slurmctld.pid"))"
  else
    slurmctld -f "$SLURM_CONF" || die "slurmctld failed: $(tail -5 "$D/log/slurmctld.log")"
    wait_for 30 scontrol ping || die "slurmctld not responding: $(tail -5 "$D/log/slurmctld.log")"
    log "slurmctld started (pid $(cat "$D/run/slurmctld.pid"))"
  fi
  if alive "$D/run/slurmd.pid" slurmd; then
    log "slurmd already running (pid $(cat "$D/run/slurmd.pid"))"
  else
    slurmd -f "$SLURM_CONF" || die "slurmd failed: $(tail -5 "$D/log/slurmd.log")"
    wait_for 10 test -s "$D/run/slurmd.pid" || true
    log "slurmd started (pid $(cat "$D/run/slurmd.pid" 2>/dev/null))"
  fi
  local node st end
  node=$(hostname -s); end=$(( $(date +%s) + WAIT_S ))
  while :; do
    st=$(sinfo -h -n "$node" -o %t 2>/dev/null | head -1)
    case "$st" in
      idle|mix|alloc|comp) break ;;
      down*|drain*|drng*|fail*|inval*)   # e.g. left DOWN by an earlier run or config
        scontrol update NodeName="$node" State=RESUME >/dev/null 2>&1 || true ;;
    esac
    if [ "$(date +%s)" -ge "$end" ]; then
      sinfo -N -l >&2 || true; tail -20 "$D/log/slurmd.log" >&2 || true
      die "node $node not idle after ${WAIT_S}s (state '$st')"
    fi
    sleep 0.5
  done
  log "node $node is $st - cluster ready. source $D/slurm.env  (SLURM_CONF=$SLURM_CONF)"
}

cmd_stop() {
  # Cancel every job first so that no slurmstepd or job process outlives slurmd.
  if alive "$D/run/slurmctld.pid" slurmctld && alive "$D/run/slurmd.pid" slurmd; then
    local p
    for p in $(sinfo -h -o %R 2>/dev/null | sort -u); do scancel --partition="$p" 2>/dev/null || true; done
    for _ in $(seq 1 60); do   # wait (<= 30 s) until no job is running or completing
      [ -z "$(squeue -h -t R,CG,S,CF -o %i 2>/dev/null)" ] && break; sleep 0.5
    done
  fi
  stop_pid "$D/run/slurmd.pid" slurmd
  stop_pid "$D/run/slurmctld.pid" slurmctld
  stop_pid "$D/munge/run/munged.pid" munged
  if [ "${SLURM_PURGE:-0}" = 1 ]; then rm -rf "$D"; echo "removed $D"; fi
}

cmd_status() {
  local rc=0 n
  for n in munged slurmctld slurmd; do
    local pidfile=$D/run/$n.pid
    [ "$n" = munged ] && pidfile=$D/munge/run/munged.pid
    if alive "$pidfile" "$n"; then echo "$n: running (pid $(cat "$pidfile"))"; else echo "$n: not running"; rc=1; fi
  done
  if [ "$rc" = 0 ]; then echo "SLURM_CONF=$SLURM_CONF"; sinfo 2>/dev/null || true; fi
  return "$rc"
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  *) echo "usage: $0 start|stop|status   (state dir: $D; see the header of this script)" >&2; exit 2 ;;
esac
