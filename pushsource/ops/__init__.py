import os as _os

if _os.environ.get("PUSHSOURCE_HANDOVER"):
    # A restart in place (ops.handover): the hand-over read first thing, and
    # a SIGUSR2 from now on kept for when the command line's handler is up.
    from pushsource.ops import handover as _handover

    _handover.take()
