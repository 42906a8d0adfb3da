#!/bin/sh
# pushsource in its container: runs `pushsource "$@"` and passes signals on
# (TERM/INT stop it cleanly, HUP reloads the config, USR1 skips, USR2
# restarts it in place).
#
# Secrets: each file in $PUSHSOURCE_SECRETS (/run/secrets, where compose puts
# its secrets:) becomes the environment variable of its name in capitals, for
# stations.toml's ${NAME}: icecast_source_password is ${ICECAST_SOURCE_PASSWORD},
# pushsource_token ${PUSHSOURCE_TOKEN}. A variable already set is kept. Only
# pushsource's process sees them (`docker inspect` shows no password).
#
# Exit status 2 means a config error or a wrong password: restarting cannot
# help, and compose's restart policies cannot leave out one exit status
# (on-failure and unless-stopped would both restart it for ever). So on 2 the
# container stays up without pushsource, its HEALTHCHECK failing and the
# reason in its log, until it is fixed and recreated. Any other exit ends the
# container with that status, for the restart policy to judge.
set -u

for file in "${PUSHSOURCE_SECRETS:-/run/secrets}"/*; do
    [ -f "$file" ] && [ -r "$file" ] || continue
    name=$(basename "$file" | tr 'a-z' 'A-Z')
    case $name in
        [A-Z_]*) ;;
        *) continue ;;
    esac
    case $name in
        *[!A-Z0-9_]*) continue ;;  # not a variable's name: left as a file
    esac
    eval "set_already=\${$name+x}"
    if [ -z "$set_already" ]; then
        value=$(head -n 1 "$file")
        export "$name=$value"
    fi
done
unset file name value set_already

uid=$(id -u)
if [ -d /music ] && ! [ -w /music ]; then
    echo "pushsource-entrypoint: /music is not writable by uid $uid: uploads from the" \
         "control page will fail (on the host: chown -R $uid the music folder, or mount" \
         "it :ro to turn uploads off)" >&2
fi

# The traps come first: a signal that arrived between the start of pushsource
# and the traps would end this shell (HUP's default), not reach pushsource.
# One that comes before pushsource has started is passed on once it has.
child=
pending=
forward() {
    if [ -n "$child" ]; then
        kill -"$1" "$child" 2>/dev/null
    else
        pending=$1
    fi
}
for sig in TERM INT HUP USR1 USR2; do
    # shellcheck disable=SC2064  # the signal's name is known now
    trap "forward $sig" "$sig"
done
pushsource "$@" &
child=$!
if [ -n "$pending" ]; then
    kill -"$pending" "$child" 2>/dev/null
fi
# wait returns early (above 128) each time a trapped signal arrives.
while :; do
    wait "$child"
    status=$?
    kill -0 "$child" 2>/dev/null || break
done
trap - HUP USR1 USR2
if [ "$status" -ne 2 ]; then
    exit "$status"
fi
echo "pushsource-entrypoint: pushsource exited 2 (a config error or a wrong password," \
     "see above); not restarting it: fix the secrets, docker/.env or stations.toml, then run" \
     "'docker compose -f docker/compose.yml up -d --force-recreate pushsource'" >&2
pause=
trap 'kill $pause 2>/dev/null; exit 2' TERM INT
while :; do
    sleep 3600 >/dev/null 2>&1 &
    pause=$!
    wait $pause
done
