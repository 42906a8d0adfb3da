import os as _os

if _os.environ.get("PUSHSOURCE_HANDOVER"):
    # A restart in place (ops.handover): the connections handed over are fed
    # from now on, while the rest of the package loads.
    from pushsource.ops import handover as _handover

    _handover.take()
