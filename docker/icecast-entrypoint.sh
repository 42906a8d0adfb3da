#!/bin/sh
# Renders the repository's icecast.xml (read-only at $ICECAST_TEMPLATE) into
# $ICECAST_CONFIG, then runs the command ("icecast2 -c /tmp/icecast.xml").
# The copy differs in what only matters in a container:
#   - it listens on every address: 127.0.0.1 would be out of reach of the
#     pushsource container and of the published port;
#   - it logs to stderr, for `docker compose logs`;
#   - its passwords come from ICECAST_SOURCE_PASSWORD and ICECAST_ADMIN_PASSWORD
#     when they are set;
#   - with ICECAST_RELAY_MASTER (host:port), it relays each mount of
#     ICECAST_RELAY_MOUNTS ("/stream", space-separated) from that server: one
#     per-mount <relay> each, pulled at once with its in-stream titles. A pull
#     that fails (the station not on the air yet) is tried again after
#     ICECAST_RELAY_INTERVAL seconds (<master-update-interval>; 10, where
#     Icecast's own default is 120).
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

relays=
if [ -n "${ICECAST_RELAY_MASTER:-}" ]; then
    # Checked, so that nothing here needs escaping for XML or for sed.
    master_host=${ICECAST_RELAY_MASTER%:*}
    master_port=${ICECAST_RELAY_MASTER##*:}
    interval=${ICECAST_RELAY_INTERVAL:-10}
    if ! printf '%s' "$master_host" | grep -Eqx '[A-Za-z0-9.-]+' \
        || ! printf '%s' "$master_port" | grep -Eqx '[0-9]{1,5}'; then
        echo "icecast-entrypoint: ICECAST_RELAY_MASTER must be host:port, such as icecast:8000" >&2
        exit 2
    fi
    if ! printf '%s' "$interval" | grep -Eqx '[1-9][0-9]*'; then
        echo "icecast-entrypoint: ICECAST_RELAY_INTERVAL must be a number of seconds" >&2
        exit 2
    fi
    relays="<master-update-interval>$interval</master-update-interval>"
    set -f  # split the list on spaces, expand no * in it
    for mount in ${ICECAST_RELAY_MOUNTS:-/stream}; do
        if ! printf '%s' "$mount" | grep -Eqx '/[A-Za-z0-9._/-]*'; then
            echo "icecast-entrypoint: relay mount \"$mount\" must be a path such as /stream (letters, digits, . _ - /)" >&2
            exit 2
        fi
        relays="$relays<relay><server>$master_host</server><port>$master_port</port>"
        relays="$relays<mount>$mount</mount><local-mount>$mount</local-mount>"
        relays="$relays<on-demand>0</on-demand>"
        relays="$relays<relay-shoutcast-metadata>1</relay-shoutcast-metadata></relay>"
    done
fi
sed -e "$script" -e "s|</icecast>|$relays</icecast>|" "$template" >"$config"

exec "$@"
