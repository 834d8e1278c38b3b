#!/bin/sh
# Renders an envoy-configs/ template: every ${NAME} is replaced by the
# environment variable NAME (unset is an error), then the remaining arguments
# are run (normally Envoy on the rendered file). docker-compose and the
# integration harness (envoy.rs: render) both render with this script.
#
#   render.sh <template> <output> [command...]
set -eu
[ "$#" -ge 2 ] || { echo "usage: render.sh <template> <output> [command...]" >&2; exit 2; }
template=$1
output=$2
shift 2
awk '{
    line = $0
    out = ""
    while (match(line, /\$\{[A-Za-z_][A-Za-z0-9_]*\}/)) {
        name = substr(line, RSTART + 2, RLENGTH - 3)
        if (!(name in ENVIRON)) {
            printf "render.sh: %s is not set (used in %s)\n", name, FILENAME > "/dev/stderr"
            exit 3
        }
        out = out substr(line, 1, RSTART - 1) ENVIRON[name]
        line = substr(line, RSTART + RLENGTH)
    }
    print out line
}' "$template" >"$output"
if [ "$#" -gt 0 ]; then
    exec "$@"
fi
