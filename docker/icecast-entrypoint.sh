#!/bin/sh
# Renders the repository's icecast.xml (read-only at $ICECAST_TEMPLATE) into
# $ICECAST_CONFIG, then runs the command ("icecast2 -c /tmp/icecast.xml").
# The copy differs in what only matters in a container:
#   - it listens on every address: 127.0.0.1 would be out of reach of the
#     pushsource container and of the published port;
#   - it logs to stderr, for `docker compose logs`;
#   - its passwords come from ICECAST_SOURCE_PASSWORD and ICECAST_ADMIN_PASSWORD
#     when they are set.
set -eu
umask 077  # the copy holds the passwords

template=${ICECAST_TEMPLATE:-/etc/icecast/icecast.xml}
config=${ICECAST_CONFIG:-/tmp/icecast.xml}

# A sed command that sets the text of every <$1> to $2, escaped for XML and
# then for the replacement part of s|||. Nothing when $2 is empty.
set_tag() {
    [ -n "$2" ] || return 0
    if [ "$(printf '%s' "$2" | wc -l)" -ne 0 ]; then
        echo "icecast-entrypoint: the value for <$1> must be one line" >&2
        exit 2
    fi
    value=$(printf '%s' "$2" | sed -e 's/&/\&amp;/g; s/</\&lt;/g; s/>/\&gt;/g' \
        -e 's/[\\|&]/\\&/g')
    printf 's|<%s>[^<]*<|<%s>%s<|\n' "$1" "$1" "$value"
}

if [ ! -r "$template" ]; then
    echo "icecast-entrypoint: $template is missing: mount the repository's icecast.xml there" >&2
    exit 2
fi
script=$(
    set_tag bind-address 0.0.0.0
    set_tag accesslog -
    set_tag errorlog -
    set_tag source-password "${ICECAST_SOURCE_PASSWORD:-}"
    set_tag admin-password "${ICECAST_ADMIN_PASSWORD:-}"
)
sed -e "$script" "$template" >"$config"

exec "$@"
