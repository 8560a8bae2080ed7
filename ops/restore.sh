#!/usr/bin/env bash
# Point-in-time restore of the event store's cluster from a base backup of ops/backup.sh and
# the WAL archive (docs/operations.md, "Backup and restore").
#
#   ops/restore.sh --backup DIR/base/<stamp> --archive ARCHIVE --data NEWDATA
#                  (--time 'YYYY-MM-DD HH:MM:SS.ffffff+00' | --latest) [--owner USER]
#
# Copies the base backup into NEWDATA (which must not exist or be empty), and sets up recovery:
# restore_command reading ARCHIVE, the target (a time, or the end of the archive), and promotion
# when it is reached. Start PostgreSQL on NEWDATA afterwards: it replays the archived WAL up to
# the target, then opens for writes (select pg_is_in_recovery() turns false). Every transaction
# that committed before the target time is there; none that committed after.
# --owner: the user PostgreSQL runs as (the copy is given to it; needed when run as root).
#
#   ops/restore.sh --finish --admin-database-url URL [--ledger PATH]
#
# Run once PostgreSQL is up on NEWDATA, before serve starts: waits for the promotion, then gives
# the event store a new incarnation (`ledger migrate new-incarnation`, as the schema owner).
# Positions after the target will be taken again by new events while Kafka still holds the
# lost timeline's messages under them; the new incarnation is how the relay, the projectors and
# downstream consumers tell them apart (docs/operations.md, docs/consumers.md).
set -euo pipefail

backup=""
archive=""
data=""
target_time=""
latest=""
owner=""
finish=""
admin_url=""
ledger="${LEDGER_BINARY:-ledger}"
while [ $# -gt 0 ]; do
  case "$1" in
    --backup) backup="$2"; shift 2 ;;
    --archive) archive="$2"; shift 2 ;;
    --data) data="$2"; shift 2 ;;
    --time) target_time="$2"; shift 2 ;;
    --latest) latest=1; shift ;;
    --owner) owner="$2"; shift 2 ;;
    --finish) finish=1; shift ;;
    --admin-database-url) admin_url="$2"; shift 2 ;;
    --ledger) ledger="$2"; shift 2 ;;
    -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
    *) echo "restore: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

fail() { echo "restore: $*" >&2; exit 2; }
if [ -n "$finish" ]; then
  [ -n "$admin_url" ] || fail "--finish needs --admin-database-url (the schema owner's URL of the restored cluster)"
  # Recovery replays WAL up to the target, then promotes: only then may anything write.
  for _ in $(seq 1 600); do
    if [ "$(psql "$admin_url" -XAtc 'SELECT NOT pg_is_in_recovery()' 2>/dev/null)" = "t" ]; then
      exec "$ledger" --admin-database-url "$admin_url" migrate new-incarnation
    fi
    sleep 1
  done
  fail "the cluster at --admin-database-url did not finish recovery within 600 s"
fi
[ -n "$backup" ] && [ -n "$archive" ] && [ -n "$data" ] || fail "--backup, --archive and --data are required (see --help)"
[ -f "$backup/backup_label" ] || fail "$backup is not a base backup of ops/backup.sh (no backup_label)"
[ -d "$archive" ] || fail "the WAL archive $archive does not exist"
if [ -n "$target_time" ] && [ -n "$latest" ]; then fail "give --time or --latest, not both"; fi
[ -n "$target_time" ] || [ -n "$latest" ] || fail "give --time T or --latest"
if [ -e "$data" ] && [ -n "$(ls -A "$data")" ]; then fail "$data is not empty: restore into a new directory"; fi
pg_bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
"$pg_bin/pg_verifybackup" --quiet --no-parse-wal "$backup" || fail "$backup does not verify against its manifest"

mkdir -p "$data"
cp -a "$backup/." "$data/"
rm -f "$data/backup_manifest"
{
  echo "# ops/restore.sh $(date -u +%FT%TZ) from $backup"
  echo "restore_command = 'cp $archive/%f %p'"
  if [ -n "$target_time" ]; then
    echo "recovery_target_time = '$target_time'"
    echo "recovery_target_inclusive = false"
  fi
  echo "recovery_target_action = 'promote'"
  # The archive settings of the old primary would make the restored cluster archive into
  # the same directory as the old timeline; an operator turns archiving on again knowingly.
  echo "archive_mode = off"
} >>"$data/postgresql.auto.conf"
touch "$data/recovery.signal"
chmod 700 "$data"
if [ -n "$owner" ]; then chown -R "$owner" "$data"; fi
echo "restore: $data is ready; start PostgreSQL on it to replay WAL up to ${target_time:-the end of the archive}," \
  "then run ops/restore.sh --finish --admin-database-url URL before serve"
