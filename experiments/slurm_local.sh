#!/usr/bin/env bash
# A throwaway single-node SLURM on this machine, to try the cluster recipe of docs/scaling.md
# (hydra/launcher=slurm) without a cluster; the SLURM end-to-end tests run against it.
#
#   sudo bash experiments/slurm_local.sh CMD [ARGS...]   # up, run CMD (SLURM_CONF set), down; CMD's exit code
#   sudo bash experiments/slurm_local.sh                 # up, print the SLURM_CONF to export, down on Ctrl-C,
#                                                        # Enter or end of stdin (how the tests hold it)
#   sudo bash experiments/slurm_local.sh install         # only install the packages
#
# Needs root: it installs Debian's SLURM, munge and MariaDB packages (PACKAGES below) when missing
# (apt-get), and runs the daemons as root. Everything else lives in a fresh temporary folder
# (SLURM_LOCAL_DIR=<new or empty folder> to choose it; SLURM_LOCAL_KEEP=1 keeps the temporary one,
# logs included): keys, configs, state, logs, and the pid files by which exactly the daemons
# started here are stopped on exit. They listen on free ports of 127.0.0.1 and on a munge socket
# of their own, so a SLURM already running on the machine is neither used nor touched; jobs still
# queued here are cancelled first.
#
# Accounting runs too (slurmdbd on a private MariaDB): submitit follows its jobs with `sacct`,
# and without it a cancelled or failed task would never be seen to end (submitit waits on its
# state, which stays UNKNOWN), besides a warning at every poll.
#
# Nobody else gets in while it runs: MariaDB listens on no TCP port (skip-networking), only on a
# unix socket in a root-only folder of the cluster's own, and its only login is root by socket
# authentication (the OS user must be root: no password exists to leak); secure_file_priv confines
# its file reads and writes to an empty folder of the cluster's. The munge key is created with
# mode 0400 (umask 377), never readable by others for an instant. Every trap is set before what it
# undoes: the install's policy-rc.d (which stops every package from starting services) and the
# cluster folder are removed however the script ends.
#
# Exit codes: 3 when the packages are missing and cannot be installed (not root, no apt-get, the
# registry refused), with one line "slurm_local: cannot install ...: <reason>"; 1 when a daemon
# does not come up (its log's tail is printed).
set -euo pipefail

say() { echo "slurm_local: $*" >&2; }
PACKAGES=(slurmctld slurmd slurmdbd slurm-client munge mariadb-server-core mariadb-client-core)
COMMANDS=(slurmctld slurmd slurmdbd sinfo sbatch sacct sacctmgr munged mariadbd mariadb-install-db my_print_defaults)

install_packages() {
  local missing=() c
  for c in "${COMMANDS[@]}"; do
    command -v "$c" >/dev/null || PATH=$PATH:/usr/sbin command -v "$c" >/dev/null || missing+=("$c")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local why=""
  if [ "$(id -u)" -ne 0 ]; then why="not root (missing: ${missing[*]})"
  elif ! command -v apt-get >/dev/null; then why="no apt-get (missing: ${missing[*]})"
  fi
  if [ -n "$why" ]; then say "cannot install ${PACKAGES[*]}: $why"; exit 3; fi
  say "installing ${PACKAGES[*]} (apt-get)"
  local t0=$SECONDS
  policy=/usr/sbin/policy-rc.d made_policy=0
  apt_log=$(mktemp /tmp/slurm_local-apt.XXXXXX)
  # the packages' scripts would start the system's own munge and SLURM services: forbid it for
  # the install (the standard policy-rc.d veto), unless the machine already has a policy. The trap
  # comes first: an interrupted install must not leave a veto on every service of the machine.
  trap undo_install EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM HUP
  if [ ! -e $policy ]; then made_policy=1; printf '#!/bin/sh\nexit 101\n' > $policy && chmod 755 $policy; fi
  local ok=1
  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${PACKAGES[@]}"; } \
    >"$apt_log" 2>&1 || ok=0
  if [ $made_policy -eq 1 ]; then rm -f $policy; made_policy=0; fi
  trap - EXIT INT TERM HUP
  local log=$apt_log
  if [ $ok -eq 0 ]; then
    say "cannot install ${PACKAGES[*]}: apt-get failed: $(grep -E '^(E|Err):' "$log" | head -1 | cut -c1-200)"
    exit 3
  fi
  rm -f "$log"
  say "installed in $((SECONDS - t0)) s"
}

undo_install() {  # an interrupted install: the policy-rc.d veto it wrote goes, and its log
  if [ "${made_policy:-0}" -eq 1 ]; then rm -f "$policy"; fi
  rm -f "${apt_log:-}"
}

if [ "${1:-}" = install ]; then install_packages; exit 0; fi
install_packages
export PATH=$PATH:/usr/sbin

dir=${SLURM_LOCAL_DIR:-}                 # set by the time anything is started in it
if [ -n "$dir" ] && [ -n "$(ls -A "$dir" 2>/dev/null)" ]; then
  say "SLURM_LOCAL_DIR=$dir is not empty: give a new or empty folder (a former cluster's state would be reused)"
  exit 1
fi
made_dir=0
started=()                              # "name pidfile", in start order

# stop every daemon started here, newest first, by its pid file; the pid must still be that daemon
down() {
  trap - EXIT INT TERM HUP
  if [ -z "$dir" ]; then return 0; fi   # nothing made yet (and no pid file to follow elsewhere)
  if [ -n "$(pidof_file "$dir/run/slurmctld.pid" slurmctld)" ]; then
    scancel --quiet --full --user="$(id -un)" 2>/dev/null || true   # this cluster's jobs only (SLURM_CONF)
    for _ in $(seq 30); do [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break; sleep 1; done
  fi
  local i name pidfile pid
  for ((i = ${#started[@]} - 1; i >= 0; i--)); do
    read -r name pidfile <<<"${started[i]}"
    pid=$(pidof_file "$pidfile" "$name")
    [ -z "$pid" ] && continue
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then say "$name ($pid) ignored SIGTERM: SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; fi
  done
  started=()
  # only a folder this script made (mktemp), never one it was given
  if [ "${made_dir:-0}" -eq 1 ] && [ "${SLURM_LOCAL_KEEP:-0}" != 1 ]; then rm -rf "$dir"; fi
  say "stopped"
}

pidof_file() {  # pid in $1 if that process is still a $2 (a recycled pid is someone else's)
  local pid
  pid=$(cat "$1" 2>/dev/null) || return 0
  [[ $pid =~ ^[0-9]+$ ]] && [ "$(cat /proc/"$pid"/comm 2>/dev/null)" = "$2" ] && echo "$pid"
  return 0
}

fail() {  # a daemon did not come up: say which, with its log's tail
  say "$1"
  [ -f "$2" ] && tail -n 15 "$2" | sed 's/^/  /' >&2
  down
  exit 1
}

wait_for() {  # seconds, description, log, test command...
  local n=$1 what=$2 log=$3 end=$((SECONDS + $1)); shift 3
  while [ $SECONDS -lt $end ]; do timeout 5 "$@" >/dev/null 2>&1 && return 0; sleep 0.25; done
  fail "$what did not come up within $n s" "$log"
}

# the trap before the folder: whatever happens from here on, the folder and the daemons go
trap down EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP
if [ -z "$dir" ]; then dir=$(mktemp -d /tmp/slurm_local.XXXXXX); made_dir=1; fi
mkdir -p "$dir"/{munge,db,state,spool,log,run,db-run,db-files}
chmod 755 "$dir"                        # munged refuses folders others may write to
chmod 700 "$dir/db-run" "$dir/db-files" # MariaDB's socket and its only file folder: root's alone
export SLURM_CONF=$dir/slurm.conf

free_ports() {  # n distinct free TCP ports on 127.0.0.1
  python3 - "$1" <<'EOF'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])
EOF
}
read -r dbd_port ctld_port slurmd_port < <(free_ports 3)
host=$(hostname -s)
cpus=$(getconf _NPROCESSORS_ONLN)   # not nproc: it follows OMP_NUM_THREADS
mem_mb=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
t0=$SECONDS

# --- munge: its own key (mode 0400 from its creation: umask 377) and socket ------------------------
(umask 377 && dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none)
munged --force --key-file="$dir/munge/munge.key" --socket="$dir/munge/munge.socket" \
  --pid-file="$dir/run/munged.pid" --log-file="$dir/log/munged.log" --seed-file="$dir/munge/munged.seed"
started+=("munged $dir/run/munged.pid")
wait_for 10 munged "$dir/log/munged.log" bash -c "munge -n -S '$dir/munge/munge.socket' | unmunge -S '$dir/munge/munge.socket'"

# --- MariaDB for slurmdbd: a unix socket in a root-only folder, no TCP, root by socket auth -------
db_sock=$dir/db-run/mariadb.sock
mariadb-install-db --no-defaults --datadir="$dir/db" --user=root --auth-root-authentication-method=socket \
  --skip-test-db --innodb-log-file-size=4M >"$dir/log/mariadb-install.log" 2>&1 \
  || fail "mariadb-install-db failed" "$dir/log/mariadb-install.log"
mariadbd --no-defaults --datadir="$dir/db" --user=root --skip-networking --socket="$db_sock" \
  --secure-file-priv="$dir/db-files" --pid-file="$dir/run/mariadbd.pid" --log-error="$dir/log/mariadbd.log" \
  --skip-name-resolve --innodb-log-file-size=4M --innodb-buffer-pool-size=32M >>"$dir/log/mariadbd.log" 2>&1 &
started+=("mariadbd $dir/run/mariadbd.pid")
wait_for 30 mariadbd "$dir/log/mariadbd.log" test -S "$db_sock"

# --- configs ---------------------------------------------------------------------------------------
auth="AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket"
# a requeued job may start again only once its credential expired: 10 s here, 120 s by default
cred="AuthInfo=socket=$dir/munge/munge.socket,cred_expire=10"
cat >"$dir/slurmdbd.conf" <<EOF
$auth
DbdHost=$host
DbdAddr=127.0.0.1
DbdPort=$dbd_port
SlurmUser=root
PidFile=$dir/run/slurmdbd.pid
LogFile=$dir/log/slurmdbd.log
StorageType=accounting_storage/mysql
# localhost: MariaDB's client library takes the unix socket named by MYSQL_UNIX_PORT (set below)
StorageHost=localhost
StorageUser=root
StorageLoc=slurm_acct_db
EOF
chmod 600 "$dir/slurmdbd.conf"
cat >"$SLURM_CONF" <<EOF
ClusterName=layerprobe-local
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
$cred
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
# a job that asks no memory takes 1 GB, not the whole node
DefMemPerCPU=1024
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$dbd_port
# for slurmdbd connections this names the munge socket (AuthInfo's is not used for them)
AccountingStoragePass=$dir/munge/munge.socket
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
# a killed (cancelled, requeued) job gets SIGKILL 2 s after SIGTERM, not 30
KillWait=2
# seconds, not minutes, before a finished job leaves squeue
MinJobAge=30
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=local Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF

# --- slurmdbd, the cluster's record, slurmctld, slurmd ------------------------------------------------
wait_for 30 "MariaDB's root login" "$dir/log/mariadbd.log" \
  mariadb --no-defaults --socket="$db_sock" -u root -e 'select 1'
MYSQL_UNIX_PORT=$db_sock slurmdbd
started+=("slurmdbd $dir/run/slurmdbd.pid")
wait_for 30 slurmdbd "$dir/log/slurmdbd.log" sacctmgr -n list cluster
sacctmgr -i -Q add cluster layerprobe-local >/dev/null
slurmctld -f "$SLURM_CONF"
started+=("slurmctld $dir/run/slurmctld.pid")
wait_for 30 slurmctld "$dir/log/slurmctld.log" scontrol ping
slurmd -f "$SLURM_CONF" -N "$host"
started+=("slurmd $dir/run/slurmd.pid")
wait_for 60 "node $host (idle in sinfo)" "$dir/log/slurmd.log" bash -c "sinfo -h -n '$host' -o %t | grep -qx idle"
say "up in $((SECONDS - t0)) s: node $host, $cpus CPUs, ${mem_mb} MB, partition local; folder $dir"
echo "export SLURM_CONF=$SLURM_CONF"

if [ $# -gt 0 ]; then
  set +e
  "$@"
  rc=$?
  set -e
  exit $rc
fi
say "press Enter (or Ctrl-C) to stop"
read -r _ || true
