"""serial: one request at a time, to completion, in arrival order: what AIOS's FIFO scheduler does. The baseline."""

from aiosh.api import Policy


class Serial(Policy):
    name = "serial"
    description = "one request at a time, to completion, in arrival order (AIOS's FIFO; the baseline to beat)"
    serial = True
