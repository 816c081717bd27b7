#!/usr/bin/env bash
# nix-infra format-volume: put a file system on a volume only when it is blank; never reformat.
#
#   format-volume.sh DEVICE ext4|xfs [WAIT_SECONDS]
#
# Waits (default 60 s) for DEVICE (/dev/disk/by-id/scsi-0HC_Volume_<id>) to appear, then:
#   - a file system (or any signature blkid knows: LUKS, RAID, a partition table) is there:
#     nothing is done, whatever its type (a mismatch is the mount's error, not a reason to format);
#   - blkid finds nothing and the first MiB is all zeros (a new Hetzner volume): mkfs;
#   - blkid finds nothing but the device holds data: refuse (exit 1), never format.
# The NixOS volumes module (modules/volumes.nix) runs it in a oneshot the volume's
# mount requires (x-systemd.requires=); the tests run it on image files.
set -euo pipefail

die() { echo "format-volume: $*" >&2; exit 1; }
[ $# -ge 2 ] && [ $# -le 3 ] || die "usage: format-volume.sh DEVICE ext4|xfs [WAIT_SECONDS]"
device=$1 fs=$2 wait=${3:-60}
case "$fs" in ext4 | xfs) ;; *) die "file system must be ext4 or xfs (got '$fs')" ;; esac
[[ $wait =~ ^[0-9]+$ ]] || die "WAIT_SECONDS must be a number"

for ((i = 0; i < wait * 5; i++)); do [ -e "$device" ] && break; sleep 0.2; done
[ -e "$device" ] || die "$device did not appear in $wait s (is the volume attached?)"

rc=0
blkid -p -- "$device" >/dev/null 2>&1 || rc=$?
case "$rc" in
  0) echo "format-volume: $device already holds a file system; left as it is" >&2; exit 0 ;;
  2) ;; # nothing found
  *) die "blkid -p $device failed (exit $rc); not formatting" ;;
esac
if ! cmp -s -n 1048576 -- "$device" /dev/zero; then
  die "$device holds data blkid does not recognise; refusing to format it (wipe it by hand if it is really unused)"
fi
echo "format-volume: $device is blank; creating $fs" >&2
case "$fs" in
  ext4) mkfs.ext4 -q -- "$device" ;;
  xfs) mkfs.xfs -q -- "$device" ;;
esac
