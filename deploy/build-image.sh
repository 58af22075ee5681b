#!/bin/sh
# Builds deploy/Dockerfile here, without a container registry, and checks the image serves:
#   1. a base image made locally: debootstrap of Debian bookworm (python3, python3-venv) from Debian's
#      packages, imported into podman (kept; delete it with `podman --storage-driver=vfs rmi $BASE`);
#   2. `podman build` of deploy/Dockerfile on it (storage driver vfs: no overlay mounts needed);
#   3. the server run from the image (`podman run`; where podman cannot run containers, from the
#      image's exported filesystem in a chroot, as the image's user) answering /readyz and REST.
# Run as root from anywhere: sh deploy/build-image.sh   (prints the time each step took and the size)
set -eu
cd "$(dirname "$0")/.."
IMAGE=${IMAGE:-localhost/sync-server:latest}
BASE=${BASE:-localhost/sync-server-base:bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
PORT=${PORT:-18080}
WORK=${WORK:-deploy/.build}
SID=AC00000000000000000000000000000000 TOKEN=build-image-check
pm() { podman --storage-driver=vfs "$@"; }
now() { date +%s; }
step() { echo "== $*"; }

for tool in debootstrap podman; do
  command -v "$tool" >/dev/null || { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$tool" >/dev/null; }
done
mkdir -p "$WORK"
t0=$(now)

if ! pm image exists "$BASE"; then
  step "base image $BASE (debootstrap)"
  root="$WORK/rootfs"; rm -rf "$root"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$root" "$MIRROR" >"$WORK/debootstrap.log"
  # The base trusts what this machine trusts (its local CAs) and pip uses the system's CA bundle, so
  # pip inside the build reaches PyPI through the same network as the host's pip.
  if ls /usr/local/share/ca-certificates/*.crt >/dev/null 2>&1; then
    cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
    chroot "$root" update-ca-certificates >/dev/null
  fi
  printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$root/etc/pip.conf"
  rm -rf "$root/var/cache/apt/archives/"*.deb "$root/var/lib/apt/lists/"*
  tar -C "$root" -c . | pm import - "$BASE" >/dev/null
  rm -rf "$root"
fi
t1=$(now)

step "image $IMAGE (podman build)"
pm build --quiet --format docker --isolation chroot --network host --build-arg BASE_IMAGE="$BASE" -f deploy/Dockerfile -t "$IMAGE" . >/dev/null
t2=$(now)

check() {  # the server answers /readyz, then creates and reads a Service over REST
  for _ in $(seq 300); do  # a minute at most (a loaded machine)
    curl -fsS "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break
    sleep 0.2
  done
  curl -fsS "http://127.0.0.1:$PORT/readyz"; echo
  sid=$(curl -fsS -u "$SID:$TOKEN" -d FriendlyName=image-check "http://127.0.0.1:$PORT/v1/Services" | python3 -c 'import json,sys; print(json.load(sys.stdin)["sid"])')
  curl -fsS -u "$SID:$TOKEN" "http://127.0.0.1:$PORT/v1/Services/$sid" | python3 -c 'import json,sys; s=json.load(sys.stdin); assert s["friendly_name"] == "image-check", s; print("REST ok:", s["sid"])'
}

step "run from the image"
name=sync-server-image-check
pm rm -f "$name" >/dev/null 2>&1 || true
if pm run -d --name "$name" --cgroups disabled --network host -e SYNC_PORT="$PORT" -e TWILIO_ACCOUNT_SID="$SID" -e TWILIO_AUTH_TOKEN="$TOKEN" \
    "$IMAGE" >"$WORK/run.log" 2>&1; then
  how="podman run"
  trap 'pm rm -f "$name" >/dev/null 2>&1 || true' EXIT
  check || { pm logs "$name"; exit 1; }
else
  # podman cannot run containers here (no user namespaces / cgroups): run the image's filesystem.
  how="chroot of the exported image ($(grep -m1 '^Error' "$WORK/run.log" || true))"
  pm rm -f "$name" >/dev/null 2>&1 || true
  fs="$WORK/image-fs"; rm -rf --one-file-system "$fs"; mkdir -p "$fs"
  pm create --name "$name" "$IMAGE" >/dev/null
  pm export "$name" | tar -C "$fs" -x
  pm rm -f "$name" >/dev/null
  # the image's own /dev (null, zero, urandom, ...) is used as it is: the host's /dev is never mounted
  # here, and nothing below removes files across a mount point (rm --one-file-system)
  mount -t proc proc "$fs/proc"
  cleanup() {
    if [ -n "${pid:-}" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    umount "$fs/proc" 2>/dev/null || true
    if grep -q " $(realpath "$fs")/" /proc/mounts; then echo "still mounted under $fs: left in place" >&2
    else rm -rf --one-file-system "$fs"; fi
  }
  trap cleanup EXIT
  # the image's user, environment and entrypoint (as the Dockerfile sets them)
  env -i PATH=/opt/sync-server/bin:/usr/bin:/bin SYNC_HOST=127.0.0.1 SYNC_PORT="$PORT" SYNC_DATA_DIR=/data \
    SYNC_DRAIN_S=0 TWILIO_ACCOUNT_SID="$SID" TWILIO_AUTH_TOKEN="$TOKEN" \
    /usr/sbin/chroot --userspec=10001:10001 "$fs" /bin/sh -c 'cd /data && exec sync-server' >"$WORK/server.log" 2>&1 &
  pid=$!
  check || { cat "$WORK/server.log"; exit 1; }
fi
t3=$(now)
size=$(pm image inspect --format '{{.Size}}' "$IMAGE")
echo "base: $((t1 - t0)) s, build: $((t2 - t1)) s, run+check: $((t3 - t2)) s ($how); image $IMAGE: $((size / 1000000)) MB"
