"""The audit chain's pure parts and use cases over an in-memory fake (DESIGN D13, SEC-L-02/03/05)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, timezone
from types import TracebackType
from typing import Any, Self

import pytest
from cryptography.hazmat.primitives import hashes
from hypothesis import given
from hypothesis import strategies as st

from domain.kernel.audit import (
    GENESIS_HASH,
    AuditEvent,
    AuditRecord,
    ChainLink,
    ChainProblem,
    ChainVerdict,
    Outcome,
    redact,
)
from domain.kernel.audit_chain import (
    canonical_bytes,
    canonical_instant,
    link_hash,
    record_failure,
    seal_audit,
    verify_audit_chain,
)
from domain.privacy.scrub import REDACTED, scrub_text

NOW = datetime(2026, 11, 22, 1, 0, tzinfo=UTC)
ID_NUMBER = "11010519491231002X"  # the published sample citizen ID: valid check character


class Sha256:
    name = "sha256"

    def digest(self, data: bytes) -> bytes:
        return hashlib.sha256(data).digest()


class Sm3:
    """SM3 through ``cryptography``: the chain takes whichever digest the configured suite has."""

    name = "sm3"

    def digest(self, data: bytes) -> bytes:
        hasher = hashes.Hash(hashes.SM3())
        hasher.update(data)
        return hasher.finalize()


def _record(audit_id: int = 7, /, **changes: Any) -> AuditRecord:
    event = AuditEvent(
        action="patient.read",
        outcome=Outcome.SUCCESS,
        actor="account:0f1e",
        actor_role="patient",
        object_type="patient",
        object_id="a1b2",
        source_ip="10.0.0.1",
        device="app:ios",
        request_id="req-1",
        reason=None,
        details={"渠道": "小程序", "b": "2", "a": "1"},
    )
    return AuditRecord(id=audit_id, occurred_at=NOW, event=replace(event, **changes))


# --- canonical encoding and the link rule -------------------------------------------------------------


def test_canonical_bytes_are_sorted_compact_utf8_json_sec_l_03() -> None:
    encoded = canonical_bytes(_record())
    assert (
        encoded
        == (
            '{"action":"patient.read","actor":"account:0f1e","actor_role":"patient",'
            '"details":{"a":"1","b":"2","渠道":"小程序"},"device":"app:ios","id":7,'
            '"object_id":"a1b2","object_type":"patient","occurred_at":"2026-11-22T01:00:00.000000+00:00",'
            '"outcome":"success","reason":null,"request_id":"req-1","source_ip":"10.0.0.1","v":1}'
        ).encode()
    )
    assert json.loads(encoded) is not None


def test_canonical_instant_is_utc_with_microseconds() -> None:
    shanghai = timezone(timedelta(hours=8))
    assert canonical_instant(datetime(2026, 11, 22, 9, 0, 0, 5, tzinfo=shanghai)) == "2026-11-22T01:00:00.000005+00:00"
    with pytest.raises(ValueError, match="naive"):
        canonical_instant(datetime(2026, 11, 22))


def test_the_same_instant_in_another_zone_encodes_the_same() -> None:
    shanghai = timezone(timedelta(hours=8))
    moved = AuditRecord(id=7, occurred_at=NOW.astimezone(shanghai), event=_record().event)
    assert canonical_bytes(moved) == canonical_bytes(_record())


def test_details_order_does_not_change_the_encoding() -> None:
    reordered = _record(details={"a": "1", "渠道": "小程序", "b": "2"})
    assert canonical_bytes(reordered) == canonical_bytes(_record())


def test_link_hash_is_h_of_previous_hash_bytes_then_the_record() -> None:
    record = _record()
    expected = hashlib.sha256(bytes(32) + canonical_bytes(record)).hexdigest()
    assert link_hash(GENESIS_HASH, record, Sha256()) == expected
    following = link_hash(expected, _record(8), Sha256())
    assert following == hashlib.sha256(bytes.fromhex(expected) + canonical_bytes(_record(8))).hexdigest()


def test_link_hash_regression_vectors() -> None:
    """Pinned: a change to the canonical encoding would orphan every chain already written."""
    assert link_hash(GENESIS_HASH, _record(), Sha256()) == (
        "7bae6b3ff3fb41d6b9996cae9e728366507d4dc055d6fb680b0a42342708192a"
    )
    assert link_hash(GENESIS_HASH, _record(), Sm3()) == (
        "56c4b62ea62b327d4a3a8b2be9212decffeaffafbcf40e7c4a8e2f28a37b8622"
    )


def test_sm3_is_pluggable_and_differs_from_sha256_sec_l_03() -> None:
    sm3_abc = Sm3().digest(b"abc").hex()
    assert sm3_abc == "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"  # GB/T 32905 A.1
    assert link_hash(GENESIS_HASH, _record(), Sm3()) != link_hash(GENESIS_HASH, _record(), Sha256())
    assert len(link_hash(GENESIS_HASH, _record(), Sm3())) == 64


@given(
    field_name=st.sampled_from(["action", "actor", "object_id", "reason", "request_id"]),
    value=st.text(max_size=20),
)
def test_any_field_change_changes_the_link_sec_l_03(field_name: str, value: str) -> None:
    original = _record()
    changed = _record(**{field_name: value})
    if changed == original:
        return
    assert link_hash(GENESIS_HASH, changed, Sha256()) != link_hash(GENESIS_HASH, original, Sha256())


@given(previous=st.binary(min_size=32, max_size=32))
def test_the_previous_hash_is_bound(previous: bytes) -> None:
    if previous == bytes(32):
        return
    assert link_hash(previous.hex(), _record(), Sha256()) != link_hash(GENESIS_HASH, _record(), Sha256())


# --- SEC-L-05: no secrets, tokens or full ID numbers ---------------------------------------------------


def test_redact_masks_id_numbers_phones_and_drops_secrets_sec_l_05() -> None:
    event = AuditEvent(
        action="auth.login",
        outcome=Outcome.FAILURE,
        object_id=ID_NUMBER,
        reason=f"身份证 {ID_NUMBER} 手机 13812345678",
        details={
            "password": "hunter2",
            "accessToken": "abc",
            "Cookie": "sid=1",
            "note": "Bearer abc.def.ghi",
            "jwt": "eyJhbGciOi.eyJzdWIiOi.c2lnbmF0dXJl",
            "phone": "+86 13812345678",
        },
    )
    clean = redact(event)
    assert clean.object_id == "110***********002X"
    assert clean.reason == "身份证 110***********002X 手机 138****5678"
    assert clean.details == {
        "password": REDACTED,
        "accessToken": REDACTED,
        "Cookie": REDACTED,
        "note": f"Bearer {REDACTED}",
        "jwt": REDACTED,
        "phone": "138****5678",
    }
    assert redact(clean) == clean


def test_redact_keeps_opaque_ids_and_numbers_that_are_not_citizen_ids_sec_l_05() -> None:
    opaque = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
    not_an_id = "110105194912310021"  # wrong check character
    order_number = "4200001234202611221234567890"
    for text in (opaque, not_an_id, order_number, "booking.cancel", "10.0.0.1"):
        assert scrub_text(text) == text


@given(st.text(max_size=40))
def test_redaction_is_idempotent(text: str) -> None:
    once = scrub_text(text)
    assert scrub_text(once) == once


# --- use cases over an in-memory fake ------------------------------------------------------------------


@dataclass
class Store:
    records: dict[int, AuditRecord] = field(default_factory=dict)
    links: dict[int, ChainLink] = field(default_factory=dict)
    anchors: list[ChainLink] = field(default_factory=list)
    lock_holder: object | None = None
    next_id: int = 1


class FakeAuditRepository:
    """Writes are staged until the unit of work commits; reads see committed data and the unit's own."""

    def __init__(self, store: Store, owner: object) -> None:
        self._store = store
        self._owner = owner
        self.new_records: dict[int, AuditRecord] = {}
        self.new_links: dict[int, ChainLink] = {}

    async def record(self, event: AuditEvent, *, now: datetime) -> int:
        audit_id = self._store.next_id
        self._store.next_id += 1
        self.new_records[audit_id] = AuditRecord(id=audit_id, occurred_at=now, event=redact(event))
        return audit_id

    async def try_lock_sealer(self) -> bool:
        if self._store.lock_holder not in (None, self._owner):
            return False
        self._store.lock_holder = self._owner
        return True

    def _records(self) -> dict[int, AuditRecord]:
        return {**self._store.records, **self.new_records}

    def _links(self) -> dict[int, ChainLink]:
        return {**self._store.links, **self.new_links}

    async def unsealed(self, *, older_than: datetime, limit: int) -> Sequence[AuditRecord]:
        sealed = {link.audit_id for link in self._links().values()}
        pending = [r for r in self._records().values() if r.id not in sealed and r.occurred_at < older_than]
        return sorted(pending, key=lambda r: r.id)[:limit]

    async def chain_head(self) -> ChainLink | None:
        links = self._links()
        return links[max(links)] if links else None

    async def latest_anchor(self) -> ChainLink | None:
        return max(self._store.anchors, key=lambda a: a.seq, default=None)

    async def append_links(self, links: Sequence[ChainLink]) -> None:
        for link in links:
            assert link.seq not in self._links()
            self.new_links[link.seq] = link

    async def records_with_links(self, *, after_seq: int, limit: int) -> Sequence[tuple[ChainLink, AuditRecord | None]]:
        links = sorted((link for link in self._links().values() if link.seq > after_seq), key=lambda x: x.seq)
        records = self._records()
        return [(link, records.get(link.audit_id)) for link in links[:limit]]


class FakeUnitOfWork:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._repo = FakeAuditRepository(store, self)
        self.committed = False

    @property
    def audit(self) -> FakeAuditRepository:
        return self._repo

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._store.lock_holder is self:
            self._store.lock_holder = None

    async def commit(self) -> None:
        self._store.records.update(self._repo.new_records)
        self._store.links.update(self._repo.new_links)
        self.committed = True


def _factory(store: Store) -> FakeUnitOfWork:
    return FakeUnitOfWork(store)


async def _write(store: Store, count: int, *, at: datetime = NOW) -> list[int]:
    uow = FakeUnitOfWork(store)
    ids = [
        await uow.audit.record(AuditEvent(action=f"test.{n}", outcome=Outcome.SUCCESS), now=at) for n in range(count)
    ]
    await uow.commit()
    return ids


async def _seal(store: Store, *, digest: Sha256 | Sm3 | None = None, grace: float = 60, batch: int = 2) -> int:
    later = NOW + timedelta(minutes=5)
    return await seal_audit(lambda: _factory(store), digest or Sha256(), now=later, grace_seconds=grace, batch=batch)


async def _verify(store: Store, *, digest: Sha256 | Sm3 | None = None) -> ChainVerdict:
    return await verify_audit_chain(lambda: _factory(store), digest or Sha256(), batch=2)


async def test_sealing_chains_records_in_id_order_and_once_sec_l_03() -> None:
    store = Store()
    ids = await _write(store, 5)
    assert await _seal(store) == 5
    assert [store.links[seq].audit_id for seq in sorted(store.links)] == ids
    assert sorted(store.links) == [1, 2, 3, 4, 5]
    assert await _seal(store) == 0
    assert await _verify(store) == ChainVerdict(ok=True, checked=5)


async def test_records_younger_than_the_grace_wait() -> None:
    store = Store()
    await _write(store, 2)
    await _write(store, 1, at=NOW + timedelta(minutes=4, seconds=30))
    assert await _seal(store, grace=60) == 2
    assert await _seal(store, grace=0) == 1


async def test_a_busy_sealer_lock_makes_another_sealer_stop() -> None:
    store = Store()
    await _write(store, 3)
    store.lock_holder = object()
    assert await _seal(store) == 0
    assert store.links == {}


async def test_a_changed_record_is_reported_with_its_id_sec_l_03() -> None:
    store = Store()
    ids = await _write(store, 4)
    await _seal(store)
    victim = store.records[ids[2]]
    store.records[ids[2]] = replace(victim, event=replace(victim.event, outcome=Outcome.FAILURE))
    assert await _verify(store) == ChainVerdict(False, 2, ids[2], ChainProblem.HASH_MISMATCH)


async def test_a_missing_record_and_a_missing_link_are_reported_sec_l_03() -> None:
    store = Store()
    ids = await _write(store, 4)
    await _seal(store)
    del store.records[ids[1]]
    assert await _verify(store) == ChainVerdict(False, 1, ids[1], ChainProblem.RECORD_MISSING)

    store = Store()
    ids = await _write(store, 4)
    await _seal(store)
    del store.links[3]
    assert await _verify(store) == ChainVerdict(False, 2, ids[3], ChainProblem.SEQ_GAP)


async def test_verification_with_another_digest_fails() -> None:
    store = Store()
    await _write(store, 2)
    await _seal(store, digest=Sm3())
    assert (await _verify(store, digest=Sm3())).ok
    assert (await _verify(store, digest=Sha256())).problem is ChainProblem.HASH_MISMATCH


async def test_verification_and_sealing_start_from_the_latest_anchor() -> None:
    store = Store()
    ids = await _write(store, 4)
    await _seal(store)
    anchor = store.links[2]
    store.anchors.append(anchor)
    for seq in (1, 2):
        del store.links[seq]
    for audit_id in ids[:2]:
        del store.records[audit_id]
    assert await _verify(store) == ChainVerdict(True, 2)
    store.links.clear()
    for audit_id in ids[2:]:
        del store.records[audit_id]
    await _write(store, 1)
    assert await _seal(store) == 1
    assert store.links[3].hash_hex == link_hash(anchor.hash_hex, store.records[ids[-1] + 1], Sha256())
    assert await _verify(store) == ChainVerdict(True, 1)


async def test_record_failure_commits_its_own_unit_of_work_sec_l_02() -> None:
    store = Store()
    event = AuditEvent(action="auth.login", outcome=Outcome.FAILURE, reason="bad_password")
    await record_failure(lambda: _factory(store), event, now=NOW)
    assert [r.event for r in store.records.values()] == [event]


@pytest.mark.parametrize("batch", [0, -1])
async def test_batch_must_be_positive(batch: int) -> None:
    with pytest.raises(ValueError, match="batch"):
        await seal_audit(lambda: _factory(Store()), Sha256(), now=NOW, grace_seconds=0, batch=batch)
    with pytest.raises(ValueError, match="batch"):
        await verify_audit_chain(lambda: _factory(Store()), Sha256(), batch=batch)
