"""A vendor that rejects a connected account's access token before the gateway expected: renew
it on the next call.

The gateway renews a token ahead of the expiry the vendor announced. RFC 6749 §5.1 only
recommends ``expires_in``: a vendor that omits it (Salesforce does) gives the gateway no expiry
to renew ahead of, and any vendor may end a session early (a password change, an admin revoking
sessions). The upstream then answers the agent's call 401, and without more the connection
would stay stuck: the stored refresh token never used, the connection never marked broken.

When the proxy sees that 401 it tells the accounts (:meth:`ConnectionRejections.rejected`). If
the stored connection still holds the very access token that was rejected (compared in
constant time), its expiry is set to now by compare-and-set on its ``version``: the next call
renews it first, under the usual single flight, and a renewal the vendor refuses with
``invalid_grant`` (or a connection without a refresh token) is broken and refused
``connection_broken`` as usual. The rejected call itself is still answered 502
``upstream_rejected_credential``: the agent's request is not retried (its body may not be
replayable).

An endpoint that answers 401 for other reasons must not turn every call into a renewal at the
vendor (with the gateway's one client registration, which the vendor could then rate-limit for
every user): a (service, user) is marked at most once per :data:`REJECTION_INTERVAL`, per
process. A vendor that never sends ``expires_in`` and whose tokens never fail sees no renewal.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from agentguard._clock import Clock
from agentguard._model import ConnectionStatus
from agentguard._secret import Secret
from agentguard.connect._refresh_policy import STORE_ROLE, expired
from agentguard.connect._sealing import ConnectionSealer, SealBroken
from agentguard.errors import StoreUnavailable
from agentguard.storage._connection_protocols import ConnectionStore
from agentguard.storage._outage import store_outage

__all__ = ["REJECTION_INTERVAL", "ConnectionRejections"]

logger = logging.getLogger("agentguard.connect")

REJECTION_INTERVAL = 60.0
"""Seconds after a (service, user) was marked for renewal on a 401 before another 401 may mark
it again (in this process)."""
_ATTEMPTS = 5
_CAPACITY = 10_000

Key = tuple[str, str]


class ConnectionRejections:
    """Marks a connection due for renewal when the vendor rejected its access token.

    Args:
        store: the connections.
        sealer: opens the stored access token to compare it with the rejected one.
        clock: every time here comes from it.
        interval: seconds between two marks of one (service, user) in this process.
        capacity: how many recent marks are remembered at most (the oldest are dropped).
    """

    def __init__(
        self,
        store: ConnectionStore,
        sealer: ConnectionSealer,
        clock: Clock,
        *,
        interval: float = REJECTION_INTERVAL,
        capacity: int = _CAPACITY,
    ) -> None:
        self.store = store
        self.sealer = sealer
        self.clock = clock
        self.interval = timedelta(seconds=interval)
        self.capacity = capacity
        self._marked: dict[Key, datetime] = {}

    def forget(self, key: Key) -> None:
        """Let ``key`` be marked again at once (the user reconnected)."""
        self._marked.pop(key, None)

    async def rejected(self, service: str, user_id: str, token: Secret) -> bool:
        """The vendor answered 401 to ``token``, sent for (service, user): mark the connection
        due for renewal if it still holds that token. Whether the next call sends another
        token (marked now, already due, or already renewed); ``False`` when it would send the
        same one or there is nothing to renew (no connection, a broken one, marked less than
        ``interval`` ago, a store that fails: logged). Never raises for the store."""
        key = (service, user_id)
        now = self.clock.now()
        last = self._marked.get(key)
        if last is not None and now - last < self.interval:
            return False
        try:
            for _ in range(_ATTEMPTS):
                with store_outage(STORE_ROLE, "get_connection"):
                    record = await self.store.get_connection(service, user_id)
                if (
                    record is None
                    or (record.service, record.user_id) != key
                    or record.status is not ConnectionStatus.ACTIVE
                ):
                    return False
                held = self.sealer.open(record, "access")
                if held is None or held != token:  # renewed or reconnected meanwhile
                    return True
                if expired(record, now):  # already due: the next call renews it
                    return True
                marked = record.model_copy(
                    update={"expires_at": now, "version": record.version + 1}
                )
                with store_outage(STORE_ROLE, "update_connection"):
                    if await self.store.update_connection(marked, version=record.version):
                        self._note(key, now)
                        logger.warning(
                            "%s: the service rejected connection %s's access token; it is "
                            "renewed on the next call",
                            service,
                            record.id,
                        )
                        return True
        except SealBroken as broken:  # the next call refuses it connection_broken
            logger.error(
                "%s: connection %s does not open (%s)", service, broken.connection_id, broken.cause
            )
            return False
        except StoreUnavailable:  # logged by store_outage; the 401 is answered as it is
            return False
        logger.warning("%s: the connection of user %s kept changing; not marked", service, user_id)
        return False

    def _note(self, key: Key, now: datetime) -> None:
        self._marked.pop(key, None)
        self._marked[key] = now
        if len(self._marked) <= self.capacity:
            return
        for each, when in list(self._marked.items()):
            if now - when >= self.interval:
                del self._marked[each]
        while len(self._marked) > self.capacity:  # oldest first: entries move to the end
            del self._marked[next(iter(self._marked))]
