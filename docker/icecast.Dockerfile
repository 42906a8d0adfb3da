# Icecast 2.4.4, Debian 12's icecast2: the server pushsource is tested against.
# Run with the repository's icecast.xml mounted at /etc/icecast/icecast.xml;
# icecast-entrypoint.sh makes a copy fit for a container.
FROM debian:bookworm-slim

RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends icecast2 \
    && rm -rf /var/lib/apt/lists/*

COPY docker/icecast-entrypoint.sh /usr/local/bin/icecast-entrypoint

# As root icecast2 refuses to start without <changeowner>: run as the
# package's own user from the start.
USER icecast2
EXPOSE 8000
ENTRYPOINT ["/bin/sh", "/usr/local/bin/icecast-entrypoint"]
CMD ["icecast2", "-c", "/tmp/icecast.xml"]
