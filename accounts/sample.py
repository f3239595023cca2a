"""The sample county's people signed in, for the tools that act as them: the simulator, the
demo, the benchmarks and the tests.

Guarantee: accounts are created through the account store (no password is ever set: each
session is opened directly, which needs the database's credentials, as `gridflow users` does);
session tokens live in this object's memory only and are handed to its caller.
"""

from __future__ import annotations

from accounts.people import county_people, import_people
from accounts.store import AccountStore


class SampleSessions:
    """`SampleSessions(store).bearer("gw0001")` → headers of a signed-in GW0001."""

    def __init__(self, store: AccountStore, client: str = "sample") -> None:
        assert store.ref is not None, "the store needs the reference data to import people"
        self.store = store
        self.client = client
        import_people(store, county_people(store.ref), f"{client}:import")
        self._tokens: dict[str, str] = {}

    def token(self, login: str) -> str:
        """A session token of the person (opened once, reused)."""
        login = login.lower()
        if login not in self._tokens:
            self._tokens[login] = self.store.open_session(login, self.client, self.client).token
        return self._tokens[login]

    def bearer(self, login: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(login)}"}

    def forget(self, login: str) -> None:
        self._tokens.pop(login.lower(), None)
