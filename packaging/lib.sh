# Shared by packaging/build-deb and packaging/build-tarball (sourced, run
# from the repository's root).

# The crate's version, from Cargo.toml through cargo (no TOML parsing here).
crate_version() {
    local id
    id=$(cargo pkgid --offline 2>/dev/null || cargo pkgid)
    echo "${id##*[@#]}"
}

# The unit as the .deb installs it: systemd/parlor.service with ExecStart's
# path, and nothing else, changed to $1. Fails if that line is not there
# exactly once, so the two can never drift apart silently.
unit_with_exec_path() {
    local n
    n=$(grep -c '^ExecStart=/usr/local/bin/parlor ' systemd/parlor.service || true)
    if [ "$n" != 1 ]; then
        echo "systemd/parlor.service: expected one 'ExecStart=/usr/local/bin/parlor ' line, found $n" >&2
        return 1
    fi
    sed "s|^ExecStart=/usr/local/bin/parlor |ExecStart=$1 |" systemd/parlor.service
}

# The highest GLIBC_x.y symbol version a binary needs (empty if none: static).
min_glibc() {
    objdump -T "$1" 2>/dev/null | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1
}

# Copies binary $1 to $2, mode 0755, without its debug information (the
# release profile keeps line tables for local profiling; the symbol table
# stays, so panics still name functions).
install_stripped() {
    install -m 0755 "$1" "$2"
    strip --strip-debug "$2"
}
