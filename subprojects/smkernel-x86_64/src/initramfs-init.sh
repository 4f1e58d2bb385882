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
#   smk.rootfstype=ext4|squashfs  its type (default: autodetect)
#
# The initramfs has no applet links, and every fork costs time under TCG: call
# /bin/busybox explicitly, use shell builtins where possible. busybox
# switch_root is not used because it empties the initramfs first, and here the
# initramfs is the lower layer.

B=/bin/busybox
R=/run/root

fail() {
	msg="smk-init: fatal: $*; rebooting"
	{ echo "<2>$msg" >/dev/kmsg; } 2>/dev/null || echo "$msg" >&2
	$B sync
	$B reboot -f
	while :; do $B sleep 1; done # PID 1 must never exit
}

m() { $B mount "$@" || fail "mount $*"; }

m -t proc -o nosuid,nodev,noexec proc /proc
m -t sysfs -o nosuid,nodev,noexec sysfs /sys
# devtmpfs.mount does not apply to an initramfs root; EBUSY would mean it did.
$B mount -t devtmpfs -o nosuid,mode=0755 devtmpfs /dev 2>/dev/null ||
	[ -c /dev/null ] || fail "mount devtmpfs on /dev"
m -t tmpfs -o nosuid,nodev,mode=0755 tmpfs /run

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

lower=/
if [ -n "$root" ]; then
	$B mkdir /run/upper /run/work $R /run/lower || fail "mkdir in /run"
	# virtio-blk normally probes before init runs; allow a slow host 3 s.
	n=0
	until [ -b "$root" ]; do
		n=$((n + 1))
		[ $n -lt 150 ] || fail "smk.root=$root: no such block device"
		$B usleep 20000
	done
	$B mount -o ro ${fstype:+-t "$fstype"} "$root" /run/lower ||
		fail "cannot mount smk.root=$root${fstype:+ ($fstype)} read-only"
	lower=/run/lower
else
	$B mkdir /run/upper /run/work $R || fail "mkdir in /run"
fi
# overlayfs reads the lower layer from the filesystem underneath and never
# descends into mounts, so "/" is the initramfs as archived: no bind needed.
m -t overlay -o "lowerdir=$lower,upperdir=/run/upper,workdir=/run/work" overlay $R

if [ -n "$root" ]; then
	# The image lacks what the initramfs ships: bind it in at the same paths,
	# resolving the image's own (relative) symlinks such as /bin -> usr/bin.
	$B mkdir -p $R/dev $R/proc $R/sys $R/bin $R/sbin $R/root || fail "mkdir in the new root"
	: >>$R/sbin/supermachine-agent || fail "cannot create $R/sbin/supermachine-agent"
	m -o bind /sbin/supermachine-agent $R/sbin/supermachine-agent
	if ! [ -e $R/bin/busybox ]; then
		: >$R/bin/busybox || fail "cannot create $R/bin/busybox"
		m -o bind $B $R/bin/busybox
	fi
fi

# Applet links for exec'd commands (uname, cat, sh, ...), in the upper layer.
# Existing names (an image's own tools) are left alone.
$B --install -s $R/bin 2>/dev/null

m --move /dev $R/dev
m --move /proc $R/proc # from here on /proc/self/exe is gone: $B for every applet
m --move /sys $R/sys
$B mkdir -p $R/dev/pts $R/dev/shm &&
	$B mount -t devpts -o nosuid,noexec,gid=5,mode=620,ptmxmode=666 devpts $R/dev/pts &&
	$B mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs $R/dev/shm ||
	echo "smk-init: warning: no /dev/pts or /dev/shm" >&2

[ -n "$ep" ] || ep=/sbin/supermachine-agent
prog=${ep%% *}
[ -e "$R$prog" ] || [ -L "$R$prog" ] || fail "$prog does not exist in the new root"

# switch_root without the cleanup: the moved mount becomes /, chroot "." picks it up.
cd $R || fail "cd $R"
$B mount --move . / || fail "cannot move the new root onto /"
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TERM=linux
# $ep is split into words on purpose (set -f is still on: no globbing).
exec $B chroot . $ep
