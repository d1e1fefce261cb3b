#!/bin/sh
# Lasso container entrypoint: prepare the /data volume, seed chains.yml on first boot, then exec the command.
#
#   docker-entrypoint.sh                  -> lasso
#   docker-entrypoint.sh --workers 2      -> lasso --workers 2
#   docker-entrypoint.sh check-config F   -> lasso check-config F
#   docker-entrypoint.sh sh -c '...'      -> runs that instead (debugging)
#
# Every path can be overridden by env, so the script also runs outside the image (tests/deployment_files.rs):
#   LASSO_DATA_DIR             volume mount point                     (default /data)
#   LASSO_CHAINS_PATH          live config, seeded when missing       (default $LASSO_DATA_DIR/chains.yml)
#   LASSO_DEFAULT_CHAINS_PATH  the image's config                     (default /app/config/chains.yml)
#   LASSO_SNAPSHOTS_DIR        routing benchmark snapshots            (default $LASSO_DATA_DIR/benchmark_snapshots)
#   LASSO_BACKUP_DIR           config backups                         (default $LASSO_DATA_DIR/config_backups)
#   LASSO_RUN_AS               user to drop to when started as root   (default lasso; empty = stay root)
# The state on the volume is re-creatable: the config re-seeds from the image, snapshots rebuild from live traffic.
set -eu

data_dir="${LASSO_DATA_DIR:-/data}"
chains_path="${LASSO_CHAINS_PATH:-$data_dir/chains.yml}"
default_chains="${LASSO_DEFAULT_CHAINS_PATH:-/app/config/chains.yml}"
snapshots_dir="${LASSO_SNAPSHOTS_DIR:-$data_dir/benchmark_snapshots}"
backup_dir="${LASSO_BACKUP_DIR:-$data_dir/config_backups}"
run_as="${LASSO_RUN_AS-lasso}"

log() { printf 'docker-entrypoint: %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

for dir in "$data_dir" "$(dirname "$chains_path")" "$snapshots_dir" "$backup_dir"; do
	mkdir -p "$dir" 2>/dev/null || die "cannot create $dir as uid $(id -u): is the volume mounted and writable?"
done

if [ ! -e "$chains_path" ]; then
	if [ -f "$default_chains" ]; then
		# Copy then rename, so a crash mid-copy never leaves a truncated config behind.
		tmp="$chains_path.seeding.$$"
		cp "$default_chains" "$tmp" || die "cannot write $tmp"
		mv -f "$tmp" "$chains_path"
		log "seeded $chains_path from $default_chains"
	else
		log "warning: $chains_path is missing and there is no image default at $default_chains"
	fi
fi

export LASSO_CHAINS_PATH="$chains_path" LASSO_SNAPSHOTS_DIR="$snapshots_dir" LASSO_BACKUP_DIR="$backup_dir"

case "${1:-}" in
'' | -* | check-config) set -- lasso "$@" ;;
esac

if [ "$(id -u)" = 0 ] && [ -n "$run_as" ]; then
	# Started as root (docker run --user 0, or a root-owned bind mount): hand the volume to the service user
	# and drop privileges. Fly mounts volumes owned by the image's USER, so this branch is not taken there.
	group="$(id -gn "$run_as")" || die "unknown LASSO_RUN_AS user: $run_as"
	for path in "$data_dir" "$snapshots_dir" "$backup_dir" "$chains_path"; do
		[ "$path" != / ] || die "refusing to chown /"
		[ -e "$path" ] || continue
		find "$path" \( ! -user "$run_as" -o ! -group "$group" \) -exec chown "$run_as:$group" {} +
	done
	exec setpriv --reuid="$run_as" --regid="$group" --init-groups -- "$@"
fi

exec "$@"
