#!/usr/bin/env bash
# Makes the base image localhost/trixie-python:local (or the image named as the first
# argument) from Debian's own packages, for machines that can reach Debian's archive but
# no container registry: a minimal Debian trixie with python3 (3.13), venv, pip, the CA
# certificates and the openssl program (OpenSSL 3.5, whose TLS 1.3 offers the hybrid
# post-quantum group X25519MLKEM768). Build the node on it with
#
#   podman build --format docker --build-arg BASE_IMAGE=localhost/trixie-python:local .
#
# Does nothing when the image is present. Needs root (debootstrap), debootstrap and
# podman; takes about a minute and a half. DEBIAN_MIRROR overrides the archive.
set -euo pipefail

image="${1:-localhost/trixie-python:local}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

if podman image exists "$image"; then
    echo "$image is present"
    exit 0
fi
for program in debootstrap podman tar; do
    if ! command -v "$program" >/dev/null; then
        echo "$0: $program is missing (Debian: apt-get install $program)" >&2
        exit 1
    fi
done
if [ "$(id -u)" -ne 0 ]; then
    echo "$0: debootstrap needs root" >&2
    exit 1
fi

rootfs="$(mktemp -d)"
trap 'rm -rf --one-file-system "$rootfs"' EXIT
echo "building $image from $mirror"
debootstrap --variant=minbase \
    --include=python3,python3-venv,python3-pip,ca-certificates,openssl \
    trixie "$rootfs" "$mirror"
# Downloaded packages and package lists only make the image bigger.
rm -rf "${rootfs:?}"/var/cache/apt/archives/*.deb "${rootfs:?}"/var/lib/apt/lists/*
tar -C "$rootfs" -c . | podman import - "$image"
echo "$image is built"
