"""The sandbox HIS: hospital information systems speaking FHIR R4 (docs/his-fhir-profile.md).

One FHIR base per hospital at ``/sandbox/his/{hospitalCode}/fhir``, with seeded data: three hospitals
(``H001`` a 三级甲等 general hospital, ``H002`` a 二级甲等 district hospital, ``H003`` a community health
centre), 28 departments, 63 doctors (four on leave), and clinic sessions for the next ``days_ahead`` days in
30-minute slots (APT-001), each slot's numbers split between on-site (现场) and the platform's pool.

FHIR routes (relative to the base): ``GET Organization|HealthcareService|Practitioner|PractitionerRole|
Schedule|Slot|Appointment|Patient`` searches (``_count`` and ``_offset`` paging), ``GET {type}/{id}``,
``GET metadata``, ``POST Schedule/{id}/$stop``, ``POST Appointment`` (lock or registration, idempotent by
``urn:hsp:request-key``), ``PUT Appointment/{id}``, ``POST Patient`` (conditional with ``If-None-Exist``),
``GET Invoice?subject=Patient/{patid}&status=issued``, ``GET Invoice/{id}`` and ``POST Invoice/{id}/$settle``
(idempotent by ``requestKey``; a refusal is final for its key). Locks expire on the shared clock, checked lazily
on every request. Every patient created gets one or two unpaid outpatient bills (诊间支付).

Test helpers under ``/sandbox/his/test``: ``GET hospitals``; ``PUT {code}/online`` ``{"online": false}``
(every FHIR request of the hospital answers 503); ``GET {code}/sessions?day=YYYY-MM-DD``;
``POST {code}/sessions/{id}/stop`` ``{"reason"}`` and ``POST {code}/slots/{id}/capacity``
``{"capacity"}``, both pushed as a signed rest-hook ``history`` Bundle to
``{callback_base_url}/callbacks/his/{code}``; billing: ``POST {code}/bills`` ``{"patid", "items": [{"code",
"quantity"}]}`` (a bill issued now), ``GET {code}/bills?patid=``, ``POST {code}/bills/{id}/cancel``
``{"reason"}`` (作废), ``PUT {code}/billing`` ``{"refuseNext": n, "unavailable": bool}`` (the next ``n``
settlements refused for good; Invoice requests answering 503).
"""

from sandbox.his.simulator import HisSimulator, HospitalState

__all__ = ["HisSimulator", "HospitalState"]
