"""The OpenAI-compatible door: programs started by the shell call the model as aiosh processes.

`Door` (service.py) is the kernel service: the HTTP server on the kernel loop, per-job tokens (tokens.py) and the
host processes; app.py holds the routes, translate.py the request checks and the response bodies.
"""

from .service import HOST_SPEC, Door, HostAttachment

__all__ = ["HOST_SPEC", "Door", "HostAttachment"]
