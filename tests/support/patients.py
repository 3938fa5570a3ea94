"""Helpers for patient tests: valid ID numbers and a registry fake of the real-name verification port (the
FaceID adapter has its own contract tests against its simulator)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from domain.identity.resident_id import check_character
from domain.identity.verification import FaceCheckPendingError, FaceSession, VerificationOutcome, VerificationResult


def citizen_id(region: str, birth: str, seq: str) -> str:
    first17 = region + birth + seq
    return first17 + check_character(first17)


@dataclass
class FakeVerifier:
    """Answers like a registry: a population of (name, number) -> phone."""

    population: dict[tuple[str, str], str | None] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    faces: dict[str, VerificationOutcome | None] = field(default_factory=dict)

    def _result(self, outcome: VerificationOutcome) -> VerificationResult:
        return VerificationResult(outcome, "fake", None, datetime.now(UTC))

    async def verify_id(self, name: str, id_number: str) -> VerificationResult:
        self.calls.append("id2")
        names = {n for n, number in self.population if number == id_number}
        if not names:
            return self._result(VerificationOutcome.NO_RECORD)
        return self._result(VerificationOutcome.MATCH if name in names else VerificationOutcome.MISMATCH)

    async def verify_phone(self, name: str, id_number: str, phone: str) -> VerificationResult:
        self.calls.append("id3")
        if not any(number == id_number for _, number in self.population):
            return self._result(VerificationOutcome.NO_RECORD)
        ok = self.population.get((name, id_number)) == phone
        return self._result(VerificationOutcome.MATCH if ok else VerificationOutcome.MISMATCH)

    async def start_face(self, name: str, id_number: str, *, redirect_url: str | None) -> FaceSession:
        self.calls.append("face")
        token = f"face-{len(self.faces) + 1}"
        self.faces[token] = None
        return FaceSession(token, f"https://face.example/{token}", datetime.now(UTC) + timedelta(hours=2))

    def finish_face(self, token: str, *, passed: bool) -> None:
        """What the person does on the provider's page."""
        self.faces[token] = VerificationOutcome.MATCH if passed else VerificationOutcome.MISMATCH

    async def face_result(self, token: str) -> VerificationResult:
        outcome = self.faces[token]
        if outcome is None:
            raise FaceCheckPendingError("not finished")
        return self._result(outcome)
