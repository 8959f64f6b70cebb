#!/bin/sh
# Entrypoint of the qudag-node image: run the command (by default `qudag-node run`)
# as the unprivileged user qudag (uid and gid 10001), never as root.
#
# Fly mounts its volume at /data owned by root, so a container started as root first
# hands /data, and anything in it not yet owned by qudag (say, a backup restored as
# root), over to qudag; then it drops root for good with setpriv, which replaces this
# shell, so the daemon runs as PID 1 and receives SIGTERM itself. Started as any other
# user (`--user 10001`, or a platform that never runs containers as root) there is
# nothing to change and the command runs as it is.
#
# Only /data is handed over, the image's data directory and Fly's mount point; a
# QUDAG_DATA_DIR elsewhere must be writable by uid 10001 already.
set -eu

data_dir=/data
user=qudag

if [ "$(id -u)" -eq 0 ]; then
    mkdir -p "$data_dir"
    find "$data_dir" -xdev \( ! -user "$user" -o ! -group "$user" \) \
        -exec chown -h "$user:$user" {} +
    exec setpriv --reuid="$user" --regid="$user" --init-groups -- "$@"
fi
exec "$@"
