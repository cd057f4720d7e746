"""Fail in seconds, not a minute, when a Hub model cannot be fetched.

Without HF_HUB_OFFLINE, an unreachable Hub makes `from_pretrained` retry every file five
times with back-off: about a minute and two dozen warning lines before its own error. One
short connection attempt decides first: a model already in the Hugging Face cache is then
read from the cache (offline mode for the rest of the process); anything else is refused in
one line. With a reachable Hub, or HF_HUB_OFFLINE set, nothing changes.
"""

from __future__ import annotations

import functools
import os
import socket
import urllib.parse
import urllib.request

from smora_cli.errors import UserInputError

CONNECT_TIMEOUT_S = 3.0


def checked_hub_id(repo_id: str) -> str:
    """`repo_id` unchanged, once the Hub is reachable or the model is cached.

    Raises:
        UserInputError: the Hub cannot be reached and the model is not in the cache.
    """
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return repo_id
    reason = hub_unreachable()
    if reason is None:
        return repo_id
    if _cached(repo_id):
        constants.HF_HUB_OFFLINE = True  # read by huggingface_hub and transformers per call
        os.environ["HF_HUB_OFFLINE"] = "1"
        return repo_id
    raise UserInputError(
        f"cannot reach {constants.ENDPOINT} ({reason}) to download {repo_id!r}, and it is "
        f"neither a local folder nor in the Hugging Face cache ({constants.HF_HUB_CACHE}); "
        f"give a local model directory, or download it where there is a network "
        f"(hf download {repo_id})"
    )


@functools.cache
def hub_unreachable() -> str | None:
    """Why one connection to the Hub (or the proxy that reaches it) fails, or None."""
    from huggingface_hub import constants

    endpoint = urllib.parse.urlsplit(constants.ENDPOINT)
    target = endpoint
    proxy = urllib.request.getproxies().get(endpoint.scheme)
    if proxy and not urllib.request.proxy_bypass(endpoint.hostname or ""):
        target = urllib.parse.urlsplit(proxy)
    port = target.port or (443 if target.scheme == "https" else 80)
    try:
        socket.create_connection((target.hostname, port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as e:
        return e.strerror or str(e) or type(e).__name__
    return None


def _cached(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except ValueError:  # not a valid repo id (HFValidationError)
        return False
