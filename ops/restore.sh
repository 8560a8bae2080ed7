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
# After a restore, read docs/operations.md: the projectors and downstream consumers must be
# told (positions after the target will be written again by new events).
set -euo pipefail

backup=""
archive=""
data=""
target_time=""
latest=""
owner=""
while [ $# -gt 0 ]; do
  case "$1" in
    --backup) backup="$2"; shift 2 ;;
    --archive) archive="$2"; shift 2 ;;
    --data) data="$2"; shift 2 ;;
    --time) target_time="$2"; shift 2 ;;
    --latest) latest=1; shift ;;
    --owner) owner="$2"; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "restore: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

fail() { echo "restore: $*" >&2; exit 2; }
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
echo "restore: $data is ready; start PostgreSQL on it to replay WAL up to ${target_time:-the end of the archive}"
