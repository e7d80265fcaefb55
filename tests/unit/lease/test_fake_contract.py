"""The Authority contract on the fake (virtual time)."""

from tests.unit.lease.contract import AuthorityContract


class TestFakeAuthorityContract(AuthorityContract):
    pass
