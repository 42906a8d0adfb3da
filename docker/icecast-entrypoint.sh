#!/bin/sh
# Icecast in its container: renders its config, then runs the command
# ("icecast2 -c /tmp/icecast.xml") as the icecast2 user.
#
# First start: the config directory (compose mounts $PUSHSOURCE_CONFIG_DIR at
# /config) gets the image's default icecast.xml and stations.toml, owned by
# whoever owns the directory, for the operator to edit; a file already there
# is never touched, so `git pull` and a rebuild change nothing of yours.
#
# Each start, from $ICECAST_TEMPLATE (/config/icecast.xml) to $ICECAST_CONFIG:
#   - every mount of $PUSHSOURCE_STATIONS (/config/stations.toml) gets its
#     crash fallback, a file of silence in the mount's format in the webroot
#     ($ICECAST_WEBROOT, else the template's), with fallback-override
#     (python3 -m pushsource.ops.icecastconf: README "Listeners through a restart");
#   - it listens on every address: 127.0.0.1 would be out of reach of the
#     pushsource container and of the published port;
#   - it logs to stderr, for `docker compose logs`;
#   - its passwords come from the secret files $ICECAST_SECRETS/icecast_source_password
#     and icecast_admin_password (or ICECAST_SOURCE_PASSWORD and
#     ICECAST_ADMIN_PASSWORD, when set);
#   - with ICECAST_RELAY_MASTER (host:port), it relays each mount of
#     ICECAST_RELAY_MOUNTS ("/stream", space-separated) from that server: one
#     per-mount <relay> each, pulled at once with its in-stream titles. A pull
#     that fails (the station not on the air yet) is tried again after
#     ICECAST_RELAY_INTERVAL seconds (<master-update-interval>; 10, where
#     Icecast's own default is 120).
# Started as root (to read the secrets and write the webroot), it runs the
# command as $ICECAST_USER (icecast2; empty: as it is).
set -eu
umask 077  # the copy holds the passwords

template=${ICECAST_TEMPLATE:-/config/icecast.xml}
stations=${PUSHSOURCE_STATIONS-/config/stations.toml}
config=${ICECAST_CONFIG:-/tmp/icecast.xml}
defaults=${PUSHSOURCE_DEFAULTS:-/usr/local/share/pushsource}
secrets=${ICECAST_SECRETS:-/run/secrets}
library=${PUSHSOURCE_LIBRARY:-/usr/local/lib/pushsource}
user=${ICECAST_USER-icecast2}

say() {
    echo "icecast-entrypoint: $*" >&2
}

# The image's default for a config file missing on the first start; the
# operator's own file otherwise. Where it cannot be written (a read-only
# mount), the default is used as it is.
first_start() {  # FILE DEFAULT
    [ ! -e "$1" ] || return 0
    if [ ! -r "$2" ]; then
        say "$1 is missing and there is no default ($2)"
        exit 2
    fi
    if (umask 022 && cp "$2" "$1") 2>/dev/null; then
        chown "$(stat -c %u:%g "$(dirname "$1")")" "$1" 2>/dev/null || :
        say "first start: wrote the default $1, yours to edit"
    else
        say "$1 is missing and cannot be written: using the image's default"
        echo "$2"
        return 0
    fi
}
chosen=$(first_start "$template" "$defaults/icecast.xml")
template=${chosen:-$template}
if [ -n "$stations" ]; then
    chosen=$(first_start "$stations" "$defaults/stations.toml")
    stations=${chosen:-$stations}
fi

# A password from the environment, else from its secret file (first line).
secret() {  # VARIABLE FILE
    eval "value=\${$1:-}"
    if [ -z "$value" ] && [ -r "$secrets/$2" ]; then
        value=$(head -n 1 "$secrets/$2")
    fi
    printf '%s' "$value"
}
source_password=$(secret ICECAST_SOURCE_PASSWORD icecast_source_password)
admin_password=$(secret ICECAST_ADMIN_PASSWORD icecast_admin_password)

# A sed command that sets the text of every <$1> to $2, escaped for XML and
# then for the replacement part of s|||. Nothing when $2 is empty.
set_tag() {
    [ -n "$2" ] || return 0
    if [ "$(printf '%s' "$2" | wc -l)" -ne 0 ]; then
        say "the value for <$1> must be one line"
        exit 2
    fi
    value=$(printf '%s' "$2" | sed -e 's/&/\&amp;/g; s/</\&lt;/g; s/>/\&gt;/g' \
        -e 's/[\\|&]/\\&/g')
    printf 's|<%s>[^<]*<|<%s>%s<|\n' "$1" "$1" "$value"
}

# $template (and $stations) rendered into $config, whole or not at all. Exits
# 2 with a line saying why.
render() {
    if [ ! -r "$template" ]; then
        say "$template is missing: put an icecast.xml there (the repository's is the default)"
        exit 2
    fi
    script=$(
        set_tag bind-address 0.0.0.0
        set_tag accesslog -
        set_tag errorlog -
        set_tag source-password "$source_password"
        set_tag admin-password "$admin_password"
    )

    relays=
    if [ -n "${ICECAST_RELAY_MASTER:-}" ]; then
        # Checked, so that nothing here needs escaping for XML or for sed.
        master_host=${ICECAST_RELAY_MASTER%:*}
        master_port=${ICECAST_RELAY_MASTER##*:}
        interval=${ICECAST_RELAY_INTERVAL:-10}
        if ! printf '%s' "$master_host" | grep -Eqx '[A-Za-z0-9.-]+' \
            || ! printf '%s' "$master_port" | grep -Eqx '[0-9]{1,5}'; then
            say "ICECAST_RELAY_MASTER must be host:port, such as icecast:8000"
            exit 2
        fi
        if ! printf '%s' "$interval" | grep -Eqx '[1-9][0-9]*'; then
            say "ICECAST_RELAY_INTERVAL must be a number of seconds"
            exit 2
        fi
        relays="<master-update-interval>$interval</master-update-interval>"
        set -f  # split the list on spaces, expand no * in it
        for mount in ${ICECAST_RELAY_MOUNTS:-/stream}; do
            if ! printf '%s' "$mount" | grep -Eqx '/[A-Za-z0-9._/-]*'; then
                say "relay mount \"$mount\" must be a path such as /stream (letters, digits, . _ - /)"
                exit 2
            fi
            relays="$relays<relay><server>$master_host</server><port>$master_port</port>"
            relays="$relays<mount>$mount</mount><local-mount>$mount</local-mount>"
            relays="$relays<on-demand>0</on-demand>"
            relays="$relays<relay-shoutcast-metadata>1</relay-shoutcast-metadata></relay>"
        done
        set +f
    fi

    source=$template
    if [ -n "$stations" ]; then
        # The stations' mounts with their fallbacks, the silence files in the webroot.
        source=$config.fallback
        if ! PYTHONPATH=$library python3 -m pushsource.ops.icecastconf --stations "$stations" \
            --template "$template" --out "$source" ${ICECAST_WEBROOT:+--webroot "$ICECAST_WEBROOT"} >&2
        then
            say "no crash fallback: see the line above (fix $stations, then restart this container or send it HUP)"
            exit 2
        fi
    fi
    sed -e "$script" -e "s|</icecast>|$relays</icecast>|" "$source" >"$config.new"
    [ "$source" = "$template" ] || rm -f "$source"
    if [ -n "$user" ] && [ "$(id -u)" -eq 0 ]; then
        chown "$user" "$config.new"
    fi
    mv "$config.new" "$config"
}

render
if [ -n "$user" ] && [ "$(id -u)" -eq 0 ]; then
    set -- setpriv --reuid="$user" --regid="$(id -g "$user")" --init-groups "$@"
fi

# HUP (docker compose kill -s HUP icecast, after an edit of stations.toml or
# icecast.xml): rendered again, then passed on; Icecast re-reads its config
# without dropping anyone, so a new station's mount gets its fallback. A config
# that does not render leaves Icecast as it was.
child=
hup() {
    if (render); then
        [ -z "$child" ] || kill -HUP "$child" 2>/dev/null || :
        say "config rendered again and Icecast told (HUP)"
    else
        say "kept the running config"
    fi
}
trap hup HUP
trap '[ -z "$child" ] || kill -TERM "$child" 2>/dev/null' TERM INT
"$@" &
child=$!
# wait returns early (above 128) each time a trapped signal arrives.
while :; do
    status=0
    wait "$child" || status=$?
    kill -0 "$child" 2>/dev/null || break
done
exit "$status"
