# Icecast 2.4.4, Debian 12's icecast2: the server pushsource is tested against.
# compose mounts the config directory at /config: icecast-entrypoint.sh writes
# the defaults below there on the first start, then renders a copy fit for a
# container, with the crash fallback of every station's mount.
FROM debian:bookworm-slim

# python3: the entrypoint writes the stations' fallback blocks and silence
# files with pushsource's own code (standard library only), and the
# healthcheck asks the status page with it.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        icecast2 python3 \
    && rm -rf /var/lib/apt/lists/*

COPY pushsource /usr/local/lib/pushsource/pushsource
COPY icecast.xml docker/stations.toml /usr/local/share/pushsource/
COPY docker/icecast-entrypoint.sh /usr/local/bin/icecast-entrypoint

# The entrypoint starts as root, to read the secrets and write the silence
# files into the webroot, and runs icecast2 as the package's icecast2 user
# (setpriv): as root icecast2 refuses to start without <changeowner>.
EXPOSE 8000
VOLUME ["/config"]
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python3", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8000/status-json.xsl', timeout=4)"]
ENTRYPOINT ["/bin/sh", "/usr/local/bin/icecast-entrypoint"]
CMD ["icecast2", "-c", "/tmp/icecast.xml"]
