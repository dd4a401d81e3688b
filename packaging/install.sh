#!/bin/sh
# Installs parlor from this directory the way the .deb does, on any Linux
# with systemd:
#   sudo ./install.sh             install, or upgrade an earlier install
#   sudo ./install.sh --remove    stop and remove parlor; the data in
#                                 /var/lib/parlor and /etc/default/parlor stay
#   ./install.sh --root DIR       the same into DIR (an image, a chroot): the
#                                 unit is enabled there, nothing is started
#
# Puts the binary in /usr/local/bin/parlor, the unit in
# /etc/systemd/system/parlor.service and the README in
# /usr/local/share/doc/parlor/; creates /etc/default/parlor (PARLOR_*
# settings) unless it exists. A first install enables and starts the
# service; an upgrade restarts it only if it was running. Take a backup
# before an upgrade: parlor backup FILE (README.md, "Installing offline").
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=""
remove=false
while [ $# -gt 0 ]; do
    case "$1" in
    --root)
        [ $# -ge 2 ] || { echo "install.sh: --root needs a directory" >&2; exit 2; }
        root=$(cd "$2" && pwd)
        shift 2
        ;;
    --remove) remove=true; shift ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

unit=parlor.service
bin="$root/usr/local/bin/parlor"
unit_file="$root/etc/systemd/system/$unit"
doc="$root/usr/local/share/doc/parlor"
defaults="$root/etc/default/parlor"

# Live: systemd runs this system (not --root, not a chroot or container
# without systemd).
live=false
if [ -z "$root" ] && [ -d /run/systemd/system ]; then
    live=true
fi
if [ -z "$root" ] && [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: run as root (sudo ./install.sh), or with --root DIR" >&2
    exit 1
fi

# systemctl's enable/disable work without a running systemd given --root.
offline_systemctl() {
    if command -v systemctl >/dev/null 2>&1; then
        systemctl --root="${root:-/}" "$@" >/dev/null 2>&1 || true
    else
        echo "install.sh: no systemctl here; run 'systemctl $*' on the target" >&2
    fi
}

if [ "$remove" = true ]; then
    if [ "$live" = true ]; then
        systemctl disable --now "$unit" >/dev/null 2>&1 || true
    else
        offline_systemctl disable "$unit"
    fi
    rm -f "$bin" "$unit_file"
    rm -rf "$doc"
    if [ "$live" = true ]; then
        systemctl daemon-reload
    fi
    echo "parlor removed; kept the data in /var/lib/parlor and /etc/default/parlor"
    exit 0
fi

upgrade=false
if [ -e "$bin" ]; then
    upgrade=true
    echo "upgrading $("$bin" --version 2>/dev/null || echo 'an unknown parlor') to $("$here/parlor" --version)"
else
    echo "installing $("$here/parlor" --version)"
fi

mkdir -p "$(dirname "$bin")" "$(dirname "$unit_file")" "$doc" "$(dirname "$defaults")"
# Copy, then rename: a running daemon keeps its old binary until restarted.
cp "$here/parlor" "$bin.new"
chmod 0755 "$bin.new"
mv -f "$bin.new" "$bin"
cp "$here/parlor.service" "$unit_file.new"
chmod 0644 "$unit_file.new"
mv -f "$unit_file.new" "$unit_file"
cp "$here/README.md" "$here/copyright" "$doc/"
chmod 0644 "$doc/README.md" "$doc/copyright"
if [ ! -e "$defaults" ]; then
    cp "$here/parlor.default" "$defaults"
    chmod 0644 "$defaults"
fi

if [ "$live" = true ]; then
    systemctl daemon-reload
    if [ "$upgrade" = true ]; then
        systemctl try-restart "$unit" || echo "install.sh: restart failed; see: journalctl -u $unit" >&2
    else
        systemctl enable --now "$unit" || echo "install.sh: start failed; see: journalctl -u $unit" >&2
    fi
elif [ "$upgrade" = false ]; then
    offline_systemctl enable "$unit"
fi
echo "done: $("$bin" --version); data in /var/lib/parlor; settings in /etc/default/parlor"
