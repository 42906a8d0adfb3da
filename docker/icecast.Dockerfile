# Icecast 2.4.4, Debian 12's icecast2: the server pushsource is tested against.
# Run with the repository's icecast.xml mounted at /etc/icecast/icecast.xml;
# icecast-entrypoint.sh makes a copy fit for a container.

# The fallback mount's file (icecast.xml's /silence.mp3): a second of silence
# at 44.1 kHz stereo, the stations' default format, made as `pushsource
# silence` makes it (pure frame code: no dependency needed).
FROM python:3.11-slim-bookworm AS silence
COPY pushsource /src/pushsource
RUN python -c "import sys; sys.path.insert(0, '/src'); \
from pushsource.core.frames import header_for, silent_frame; \
h = header_for(44100, 2, 320); \
open('/silence.mp3', 'wb').write(silent_frame(h) * -(-h.sample_rate // h.samples))"

FROM debian:bookworm-slim

RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends icecast2 \
    && rm -rf /var/lib/apt/lists/*

COPY docker/icecast-entrypoint.sh /usr/local/bin/icecast-entrypoint
COPY --from=silence /silence.mp3 /usr/share/icecast2/web/silence.mp3

# As root icecast2 refuses to start without <changeowner>: run as the
# package's own user from the start.
USER icecast2
EXPOSE 8000
ENTRYPOINT ["/bin/sh", "/usr/local/bin/icecast-entrypoint"]
CMD ["icecast2", "-c", "/tmp/icecast.xml"]
