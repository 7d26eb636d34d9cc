"""Connected accounts: users connect their own vendor accounts over OAuth (code + PKCE), and
agents act with them through their placeholder keys without ever seeing them.

A service with ``credentials="connected"`` takes its upstream credential from the calling
user's own connection, refreshed ahead of expiry under a single flight shared by every
instance; a user without a working connection is refused 403 ``connection_required``
(:class:`ConnectionRequired`), never served with another user's or a shared credential.
See docs/how-to/connect-accounts.md.
"""

from agentguard._model import ConnectedAccount, ConnectFlow, ConnectionStatus, FlowKind
from agentguard.connect._accounts import ConnectedAccounts
from agentguard.connect._errors import ConnectionRequired, VendorRefused, VendorUnavailable
from agentguard.connect._flow_errors import ConnectRefused
from agentguard.connect._flows import ConnectFlows
from agentguard.connect._settings import OAuthClientConfig
from agentguard.connect._tokens import VendorTokens
from agentguard.connect._vendor import VendorClient

__all__ = [
    "ConnectFlow",
    "ConnectFlows",
    "ConnectRefused",
    "ConnectedAccount",
    "ConnectedAccounts",
    "ConnectionRequired",
    "ConnectionStatus",
    "FlowKind",
    "OAuthClientConfig",
    "VendorClient",
    "VendorRefused",
    "VendorTokens",
    "VendorUnavailable",
]
