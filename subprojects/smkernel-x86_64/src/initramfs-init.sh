#!/bin/busybox sh
# /init of the x86_64 guest, run by /bin/busybox sh as PID 1. SPDX-License-Identifier: MIT
#
# Builds the container root the same way init-oci does on aarch64: an overlayfs
# whose lower layer is the initramfs itself (or the smk.root device, read-only)
# with upper and work dirs on a tmpfs, then moves /dev, /proc and /sys into it,
# moves it over / and execs the agent (or smk.entrypoint) as PID 1 in it.
#
# Kernel command line knobs:
#   smk.entrypoint=/path        run this instead of /sbin/supermachine-agent;
#                               smk.entrypoint="/path arg..." passes arguments
#   smk.root=/dev/vda           read-only lower layer instead of the initramfs
#   smk.rootfstype=ext4|squashfs  its type (default: busybox mount autodetects)
#
# Every fork+exec of busybox costs 5-16 ms under TCG, so: shell builtins where
# possible, and mounts in batches through "mount -a" with a here-document as
# fstab (one exec for several mounts). The initramfs has no applet links, so
# applets run as "$B applet" (fork + exec), except mkdir and rm: Debian's
# busybox-static is built with FEATURE_SH_STANDALONE, where the shell runs these
# NOEXEC applets by name in a forked child without an exec (half the cost).
# busybox switch_root is not used: it empties the initramfs first, and here the
# initramfs is the lower layer.

B=/bin/busybox
R=/run/root

fail() {
	msg="smk-init: fatal: $*; rebooting"
	# kmsg reaches every console even with "quiet"; once /dev has moved away,
	# ">/dev/kmsg" would just create a file, so test for the device.
	if [ -c /dev/kmsg ]; then echo "<2>$msg" >/dev/kmsg; else echo "$msg" >&2; fi
	$B sync
	$B reboot -f
	while :; do $B sleep 1; done # PID 1 must never exit
}

m() { $B mount "$@" || fail "mount $*"; }

# The API filesystems in one exec: without /proc there is no /proc/self/fd/3
# for a here-document, so this fstab is written (shell builtins) into the
# initramfs's own /proc directory, which the proc mount then covers (in the
# new root too). devtmpfs.mount does not apply to an initramfs root.
echo "proc /proc proc nosuid,nodev,noexec 0 0
sysfs /sys sysfs nosuid,nodev,noexec 0 0
devtmpfs /dev devtmpfs nosuid,mode=0755 0 0
tmpfs /run tmpfs nosuid,nodev,mode=0755 0 0" >/proc/.smk-fstab || fail "cannot write /proc/.smk-fstab"
$B mount -a -T /proc/.smk-fstab || fail "mount /proc, /sys, /dev or /run"

# Parse the command line with builtins only. Quotes group words as the kernel
# does, which matters only for smk.entrypoint.
read -r cmdline </proc/cmdline
set -f
ep= root= fstype= inq=
for w in $cmdline; do
	if [ -n "$inq" ]; then
		ep="$ep $w"
		case $w in *\"*) inq= ;; esac
		continue
	fi
	case $w in
	smk.entrypoint=\"*\"*) ep=${w#*=} ;;
	smk.entrypoint=\"*) ep=${w#*=} inq=1 ;;
	smk.entrypoint=*) ep=${w#*=} ;;
	smk.root=*) root=${w#*=} ;;
	smk.rootfstype=*) fstype=${w#*=} ;;
	esac
done
ep=${ep#\"}
ep=${ep%\"}

if [ -n "$root" ]; then dirs=/run/lower; else dirs=/run/upper/bin; fi
mkdir /run/upper /run/work $R /dev/pts /dev/shm $dirs || fail "mkdir in /run or /dev"
# Applet links for exec'd commands (uname, cat, sh, ...). The initramfs has a
# real /bin, so they can go straight into the upper layer's bin/: much cheaper
# than ~300 creates through overlayfs. The link named "busybox" would point at
# itself and hide the real one underneath: drop it.
if [ -z "$root" ]; then
	$B --install -s /run/upper/bin && rm /run/upper/bin/busybox || fail "busybox --install"
fi

# overlayfs reads the lower layer from the filesystem underneath and never
# descends into mounts, so "/" is the initramfs as archived: no bind needed.
overlay="overlay $R overlay lowerdir=/,upperdir=/run/upper,workdir=/run/work 0 0"
if [ -n "$root" ]; then
	# virtio-blk normally probes before init runs; allow a slow host 3 s.
	n=0
	until [ -b "$root" ]; do
		n=$((n + 1))
		[ $n -lt 150 ] || fail "smk.root=$root: no such block device"
		$B usleep 20000
	done
	$B mount -o ro ${fstype:+-t "$fstype"} "$root" /run/lower ||
		fail "cannot mount smk.root=$root${fstype:+ ($fstype)} read-only"
	m -t overlay -o lowerdir=/run/lower,upperdir=/run/upper,workdir=/run/work overlay $R
	overlay=
	# The image lacks what the initramfs ships: bind it in at the same paths,
	# resolving the image's own (relative) symlinks such as /bin -> usr/bin.
	$B mkdir -p $R/dev $R/proc $R/sys $R/bin $R/sbin $R/root || fail "mkdir in the new root"
	: >>$R/sbin/supermachine-agent || fail "cannot create $R/sbin/supermachine-agent"
	m -o bind /sbin/supermachine-agent $R/sbin/supermachine-agent
	if ! [ -e $R/bin/busybox ]; then
		: >$R/bin/busybox || fail "cannot create $R/bin/busybox"
		m -o bind $B $R/bin/busybox
	fi
	# Applet links through the overlay, so that an image's /bin -> usr/bin is
	# followed; existing names (the image's own tools) are left alone.
	$B --install -s $R/bin 2>/dev/null
fi

# The new root and the API filesystems moved into it. /dev/pts and /dev/shm
# are extras: mount prints their errors, the check below ignores them.
$B mount -a -T /proc/self/fd/3 3<<FSTAB
$overlay
/dev $R/dev none move 0 0
/proc $R/proc none move 0 0
/sys $R/sys none move 0 0
devpts $R/dev/pts devpts nosuid,noexec,gid=5,mode=620,ptmxmode=666 0 0
tmpfs $R/dev/shm tmpfs nosuid,nodev,mode=1777 0 0
FSTAB
[ -d $R/proc/self ] && [ -c $R/dev/null ] && [ -d $R/sys/kernel ] ||
	fail "could not set up the new root (see the mount errors above)"
# /proc/self/exe is gone from the old root now: applets only as "$B applet".

[ -n "$ep" ] || ep=/sbin/supermachine-agent
prog=${ep%% *}
[ -e "$R$prog" ] || [ -L "$R$prog" ] || fail "$prog does not exist in the new root"

# switch_root without the cleanup: the moved mount becomes /, chroot "." picks it up.
cd $R || fail "cd $R"
$B mount --move . / || fail "cannot move the new root onto /"
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TERM=linux
# $ep is split into words on purpose (set -f is still on: no globbing).
exec $B chroot . $ep
