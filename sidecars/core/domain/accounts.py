"""The account a new pod's job runs as, checked where it lives before anything is written.

The config refuses `root` by name (interlink_provider.auth.accounts); this refuses an account
that *is* root under another name: one whose uid is 0 (`useradd -o -u 0`), and the sidecar's
own account when that is root and the caller named none. Only a site's explicit
`auth.allow_jobs_as_root` lets such jobs run. A refusal is a 403 with the reason, logged once
per account.
"""

from __future__ import annotations

import logging
import time

from interlink_provider.auth.accounts import ROOT_OPT_IN
from sidecars.core.domain.errors import Forbidden
from sidecars.core.kits.sitefs import SiteFiles

log = logging.getLogger(__name__)

KNOWN_SECONDS = 60.0  # how long an account's uid is trusted before it is looked up again


class JobAccounts:
    def __init__(self, files: SiteFiles, allow_root: bool = False) -> None:
        self.files = files
        self.allow_root = allow_root
        self._uids: dict[str | None, tuple[float, int | None]] = {}
        self._logged: set[str | None] = set()

    async def uid(self, account: str | None) -> int | None:
        now = time.monotonic()
        known = self._uids.get(account)
        if known is not None and now - known[0] < KNOWN_SECONDS:
            return known[1]
        uid = await self.files.account_uid(account)
        self._uids[account] = (now, uid)
        return uid

    async def check(self, account: str | None) -> None:
        """Forbidden when the job would run with uid 0 and the site did not opt in. An account
        that does not exist is left to the writing of the pod's directory, which names it."""
        if self.allow_root or await self.uid(account) != 0:
            return
        if account:
            reason = (
                f"local account {account!r} has uid 0 (it is root under another name): this site does not run "
                f"jobs as root; its admins must map you to an unprivileged account (or set {ROOT_OPT_IN})"
            )
        else:
            reason = (
                "no local account is named for this caller and the sidecar runs as root: this site does not run "
                "jobs as root; its admins must name an unprivileged account"
            )
        if account not in self._logged:
            self._logged.add(account)
            log.error("refusing jobs as %s: %s", account or "the sidecar's own account", reason)
        raise Forbidden(reason)
