#!/usr/bin/env bash
# Base backups of the event store's PostgreSQL cluster, for point-in-time restore with
# ops/restore.sh (docs/operations.md, "Backup and restore").
#
#   ops/backup.sh --target DIR [--keep N]        take a base backup into DIR/base/<UTC time>
#   ops/backup.sh --archive-settings ARCHIVE      print the postgresql.conf lines that archive
#                                                 every WAL segment into ARCHIVE
#
# The connection comes from libpq's environment (PGHOST, PGPORT, PGUSER, PGPASSWORD or
# PGPASSFILE): a role with REPLICATION (or a superuser). The base backup is plain format with
# its WAL (-X stream) and a manifest that pg_verifybackup checks before this script reports
# success, so a backup that would not restore fails here, not on the day it is needed.
# Retention: the newest N base backups are kept (default 7); WAL segments in the archive
# older than the oldest kept backup are removed with pg_archivecleanup when --archive is given.
set -euo pipefail

target=""
keep=7
archive=""
print_settings=""
while [ $# -gt 0 ]; do
  case "$1" in
    --target) target="$2"; shift 2 ;;
    --keep) keep="$2"; shift 2 ;;
    --archive) archive="$2"; shift 2 ;;
    --archive-settings) print_settings="$2"; shift 2 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "backup: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

if [ -n "$print_settings" ]; then
  # archive_timeout bounds the RPO of a quiet system: a segment is archived at least this often.
  cat <<EOF
wal_level = replica
archive_mode = on
archive_command = 'test ! -f $print_settings/%f && cp %p $print_settings/%f.partial && mv $print_settings/%f.partial $print_settings/%f'
archive_timeout = 60
EOF
  exit 0
fi

[ -n "$target" ] || { echo "backup: --target DIR is required (see --help)" >&2; exit 2; }
[[ "$keep" =~ ^[1-9][0-9]*$ ]] || { echo "backup: --keep must be a positive integer" >&2; exit 2; }
pg_bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
export PATH="$pg_bin:$PATH"

stamp="$(date -u +%Y%m%dT%H%M%SZ)"
destination="$target/base/$stamp"
mkdir -p "$target/base"
partial="$destination.partial"
rm -rf "$partial"
started=$(date +%s)
# --checkpoint=fast: start now rather than at the next scheduled checkpoint.
pg_basebackup --pgdata="$partial" --format=plain --wal-method=stream --checkpoint=fast \
  --label="ledger $stamp" --no-password
pg_verifybackup --quiet "$partial"
mv "$partial" "$destination"
echo "backup: base backup $destination ($(du -sh "$destination" | cut -f1), $(( $(date +%s) - started )) s), verified"

# Retention: the newest $keep base backups stay.
mapfile -t backups < <(find "$target/base" -mindepth 1 -maxdepth 1 -type d ! -name '*.partial' | sort)
while [ "${#backups[@]}" -gt "$keep" ]; do
  echo "backup: removing old base backup ${backups[0]}"
  rm -rf "${backups[0]}"
  backups=("${backups[@]:1}")
done
if [ -n "$archive" ]; then
  # The oldest kept backup names the first WAL segment it needs in backup_label.
  oldest_segment="$(sed -n 's/^START WAL LOCATION: .* (file \(.*\))$/\1/p' "${backups[0]}/backup_label")"
  if [ -n "$oldest_segment" ]; then
    pg_archivecleanup "$archive" "$oldest_segment"
    echo "backup: WAL older than $oldest_segment removed from $archive"
  fi
fi
