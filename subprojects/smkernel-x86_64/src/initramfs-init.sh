#!/bin/busybox sh
# shellcheck shell=dash
# /init of the x86_64 guest, run by /bin/busybox sh as PID 1. SPDX-License-Identifier: MIT
#
# Implements the guest contract in assets/GUEST.md, as init-oci does on aarch64:
# an overlayfs root whose lower layer is the initramfs itself or the smk.root
# image (read-only, never modified), upper and work dirs on a tmpfs; API file
# systems, /dev links, cgroup2, lo up, the hostname; then the agent (or
# smk.entrypoint) is exec'd as PID 1 in it with a clean environment.
#
# Every fork+exec of busybox costs 5-16 ms under TCG, so: shell builtins where
# possible, and mounts in batches through "mount -a" with a here-document as
# fstab (one exec for several mounts). The initramfs has no applet links, so
# applets run as "$B applet" (fork + exec), except mkdir, ln and rm: Debian's
# busybox-static is built with FEATURE_SH_STANDALONE, where the shell runs these
# NOEXEC applets by name in a forked child without an exec (half the cost).
# busybox switch_root is not used: it empties the initramfs first, and here the
# initramfs is the lower layer (or holds what the container root receives).

B=/bin/busybox
R=/run/root

fail() {
	msg="smk-init: fatal: $*; shutting down"
	# kmsg reaches every console even with "quiet"; once /dev has moved away,
	# ">/dev/kmsg" would just create a file, so test for the device.
	if [ -c /dev/kmsg ]; then echo "<2>$msg" >/dev/kmsg; else echo "$msg" >&2; fi
	$B sync
	# reboot=t on the command line and the VMM's -no-reboot end the machine.
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
ep='' root='' fstype='' hn=supermachine inq=''
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
	smk.hostname=?*) hn=${w#*=} ;;
	esac
done
ep=${ep#\"}
ep=${ep%\"}

echo "$hn" >/proc/sys/kernel/hostname || fail "cannot set the hostname to '$hn'"
$B ip link set lo up || fail "cannot bring lo up"

# probe DEV: reads the superblock area and sets ptype (ext4, squashfs, erofs),
# puuid (8-4-4-4-12 lowercase hex) and plabel (the label's bytes as hex words,
# as od prints them). Offsets: ext4 magic 0xEF53 at 1080, uuid 1128, label
# 1144; erofs magic 0xE0F5E1E2 at 1024, uuid 1072, volume name 1088; squashfs
# "hsqs" at 0, no uuid or label. $N below is byte N-1 (positional parameters
# count from 1).
probe() {
	ptype='' puuid='' plabel='' h=''
	# shellcheck disable=SC2046 # one positional parameter per byte
	set -- $($B od -A n -t x1 -v -N 1160 "$1" 2>/dev/null)
	[ $# -eq 1160 ] || return 1
	if [ "$1$2$3$4" = 68737173 ]; then
		ptype=squashfs
		return 0
	elif [ "${1025}${1026}${1027}${1028}" = e2e1f5e0 ]; then
		ptype=erofs u=1073
	elif [ "${1081}${1082}" = 53ef ]; then
		ptype=ext4 u=1129
	else
		return 1
	fi
	i=0
	while [ $i -lt 16 ]; do
		eval "h=\${$((u + i))}"
		case $i in 4 | 6 | 8 | 10) puuid=$puuid- ;; esac
		puuid=$puuid$h
		i=$((i + 1))
	done
	while [ $i -lt 32 ]; do
		eval "h=\${$((u + i))}"
		[ "$h" != 00 ] || break
		plabel="$plabel${plabel:+ }$h"
		i=$((i + 1))
	done
}

# find_root: sets dev to the block device smk.root names, or returns 1.
find_root() {
	dev=
	case $root in
	/dev/*)
		[ -b "$root" ] && dev=$root
		return
		;;
	esac
	set +f # globbing is off for the rest of the script
	set -- /sys/class/block/*
	set -f
	for p; do
		bn=${p##*/}
		read -r size 2>/dev/null <"$p/size" && [ "$size" != 0 ] && [ -b "/dev/$bn" ] || continue
		case $root in
		SERIAL=*)
			# no newline at the end of this file: read fails but sets s
			s=
			read -r s 2>/dev/null <"$p/serial"
			[ "$s" = "${root#SERIAL=}" ] || continue ;;
		UUID=*)
			probe "/dev/$bn" && [ -n "$puuid" ] && [ "$puuid" = "$want" ] || continue ;;
		LABEL=*)
			probe "/dev/$bn" && [ -n "$plabel" ] && [ "$plabel" = "$want" ] || continue ;;
		esac
		dev=/dev/$bn
		return 0
	done
	return 1
}

mkdir /run/upper /run/work /run/lower $R /dev/pts /dev/shm || fail "mkdir in /run or /dev"
lower=/
if [ -n "$root" ]; then
	case $root in
	/dev/?* | SERIAL=?*) ;;
	UUID=?*)
		want=${root#UUID=}
		case $want in *[A-F]*) want=$(echo "$want" | $B tr A-F a-f) ;; esac
		;;
	LABEL=?*)
		# shellcheck disable=SC2046 # one positional parameter per byte
		set -- $(printf %s "${root#LABEL=}" | $B od -A n -t x1 -v)
		want="$*"
		;;
	*) fail "smk.root=$root: expected /dev/NAME, LABEL=, UUID= or SERIAL=" ;;
	esac
	# virtio-blk normally probes before init runs; allow a slow host 3 s
	# of guest uptime.
	read -r t0 _ </proc/uptime
	t0=${t0%.*}
	until find_root; do
		read -r t _ </proc/uptime
		[ $((${t%.*} - t0)) -lt 3 ] || fail "smk.root=$root: no such block device"
		$B usleep 20000
	done
	if [ -z "$fstype" ]; then
		probe "$dev" || fail "smk.root=$root ($dev): not ext4, squashfs or erofs (set smk.rootfstype=)"
		fstype=$ptype
	fi
	$B mount -o ro -t "$fstype" "$dev" /run/lower 2>/dev/null ||
		fail "cannot mount smk.root=$root ($dev, $fstype) read-only"
	lower=/run/lower
fi

# overlayfs reads the lower layer from the filesystem underneath and never
# descends into mounts, so "/" is the initramfs as archived: no bind needed.
# /dev links are made in devtmpfs before it moves (it is the same mount).
ln -s /proc/self/fd /dev/fd && ln -s /proc/self/fd/0 /dev/stdin &&
	ln -s /proc/self/fd/1 /dev/stdout && ln -s /proc/self/fd/2 /dev/stderr ||
	fail "cannot create the /dev/fd and /dev/std* links"
$B mount -a -T /proc/self/fd/3 3<<FSTAB || fail "could not set up the new root (see the mount errors above)"
overlay $R overlay lowerdir=$lower,upperdir=/run/upper,workdir=/run/work 0 0
/dev $R/dev none move 0 0
/proc $R/proc none move 0 0
/sys $R/sys none move 0 0
devpts $R/dev/pts devpts nosuid,noexec,gid=5,mode=620,ptmxmode=666 0 0
tmpfs $R/dev/shm tmpfs nosuid,nodev,mode=1777 0 0
cgroup2 $R/sys/fs/cgroup cgroup2 nosuid,nodev,noexec 0 0
FSTAB
# Every controller the kernel has, for child cgroups (the root has no
# no-internal-process rule). One write each: a refused one leaves the rest.
read -r ctl <$R/sys/fs/cgroup/cgroup.controllers
for c in $ctl; do echo "+$c" >$R/sys/fs/cgroup/cgroup.subtree_control; done 2>/dev/null
# /proc/self/exe is gone from the old root now: exec'd applets only as
# "$B applet" (the NOEXEC ones by name still work: no exec).

if [ -n "$root" ]; then
	# The image lacks what the initramfs adds to it: the agent, and every
	# regular file the caller put in the initramfs, at the same paths. They are
	# extracted inside the new root (so the image's symlinks, e.g. /sbin ->
	# usr/sbin, resolve as the container sees them) by busybox reached through
	# PID 1's root. Nothing else of the initramfs (busybox, /init) goes in.
	set --
	for f in $($B find / -xdev -type f); do
		case $f in
		/init | /bin/busybox | /sbin/supermachine-agent | /proc/* | /sys/* | /dev/* | /run/*) ;;
		*) set -- "$@" "${f#/}" ;;
		esac
	done
	if [ $# -gt 0 ]; then
		$B tar -cf - -C / -- "$@" | $B chroot $R /proc/1/root$B tar -xf - -C / ||
			fail "cannot copy the initramfs's extra files into the new root"
	fi
	mkdir -p $R/sbin && : >>$R/sbin/supermachine-agent || fail "cannot create $R/sbin/supermachine-agent"
	m -o bind /sbin/supermachine-agent $R/sbin/supermachine-agent
else
	# The initramfs is the image: busybox is its toolset. The applet links go
	# straight into the upper layer's bin/ (the initramfs has a real /bin):
	# much cheaper than ~300 creates through overlayfs. The link named
	# "busybox" would point at itself and hide the real one underneath.
	mkdir /run/upper/bin && $B --install -s /run/upper/bin && rm /run/upper/bin/busybox ||
		fail "busybox --install"
fi

[ -n "$ep" ] || ep=/sbin/supermachine-agent
prog=${ep%% *}
[ -e "$R$prog" ] || [ -L "$R$prog" ] || fail "$prog does not exist in the new root"

# switch_root without the cleanup: the moved mount becomes /, chroot "." picks
# it up. The workload's environment is exactly PATH, HOME and TERM; its cwd is /.
cd $R || fail "cd $R"
$B mount --move . / || fail "cannot move the new root onto /"
# $ep is split into words on purpose (set -f is still on: no globbing).
exec $B env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TERM=linux \
	$B chroot . $ep
