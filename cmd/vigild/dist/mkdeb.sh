#!/bin/sh
# mkdeb.sh GO VERSION DEB_VERSION OUT_DIR: builds the vigil node package, OUT_DIR/vigil_DEB_VERSION_ARCH.deb,
# with static vigild and vigil binaries, the systemd unit, /etc/default/vigild, the example
# configuration and the README. Run by `make deb` from the repository root.
set -eu
go=$1 version=$2 debversion=$3 out=$4
dist=cmd/vigild/dist
arch=$("$go" env GOARCH)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
chmod 0755 "$stage"

mkdir -p "$stage/DEBIAN" "$stage/usr/sbin" "$stage/usr/bin" "$stage/usr/lib/systemd/system" \
	"$stage/etc/default" "$stage/usr/share/doc/vigil/examples"
CGO_ENABLED=0 "$go" build -trimpath -ldflags "-X vigil/internal/buildinfo.version=$version" \
	-o "$stage/usr/sbin/vigild" ./cmd/vigild
CGO_ENABLED=0 "$go" build -trimpath -ldflags "-X vigil/internal/buildinfo.version=$version" \
	-o "$stage/usr/bin/vigil" ./cmd/vigil
install -m 0644 "$dist/vigild.service" "$stage/usr/lib/systemd/system/vigild.service"
install -m 0644 "$dist/vigild.default" "$stage/etc/default/vigild"
install -m 0644 "$dist/node.yaml" "$stage/usr/share/doc/vigil/examples/node.yaml"
install -m 0644 README.md "$stage/usr/share/doc/vigil/README.md"
install -m 0755 "$dist/deb/postinst" "$dist/deb/prerm" "$dist/deb/postrm" "$stage/DEBIAN/"
echo /etc/default/vigild >"$stage/DEBIAN/conffiles"
size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
cat >"$stage/DEBIAN/control" <<CONTROL
Package: vigil
Version: $debversion
Architecture: $arch
Maintainer: Vigil developers <vigil@localhost>
Installed-Size: $size
Section: admin
Priority: optional
Recommends: iproute2, nftables
Description: high-availability cluster with eBPF liveness
 Vigil keeps services running on a group of Linux nodes and moves them to a
 surviving node within milliseconds when a node, a link or a service fails.
 Heartbeats, link-failure detection and interconnect failover run in eBPF/XDP;
 membership, quorum and the cluster configuration are replicated with raft.
 .
 This package holds the node daemon vigild (with its systemd unit) and the
 admin command vigil.
CONTROL
mkdir -p "$out"
deb="$out/vigil_${debversion}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
echo "$deb"
