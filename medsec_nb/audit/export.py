"""Audit records as a FHIR R4 AuditEvent Bundle (JSON) or as DICOM PS3.15 A.5 audit messages (XML)."""

from __future__ import annotations

import base64
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from typing import Any

from .record import EVENTS

DCM = "http://dicom.nema.org/resources/ontology/DCM"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
ACT_REASON_OID = "2.16.840.1.113883.5.8"
LOCAL_PURPOSE = "urn:medsec-nb:purpose-of-use"
LOCAL_ACTION = "urn:medsec-nb:audit-action"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
SECURITY_ROLE = "http://terminology.hl7.org/CodeSystem/extra-security-role-type"
OUTCOME = {"success": "0", "denied": "4", "failure": "8"}

#: HL7 v3 ActReason purpose-of-use codes, with their display names; other codes are local.
PURPOSES = {
    "TREAT": "treatment",
    "ETREAT": "emergency treatment",
    "HRESCH": "healthcare research",
    "CLINTRCH": "clinical trial research",
    "HOPERAT": "healthcare operations",
    "PUBHLTH": "public health",
    "TRAIN": "training",
    "HTEST": "test health data",
    "HPAYMT": "healthcare payment",
    "PATRQT": "patient requested",
}
#: DICOM EventActionCode of each action (others: E, execute).
ACTION_CODES = {
    "open": "R",
    "access": "R",
    "decrypt": "R",
    "verify": "R",
    "reveal-tag": "R",
    "export": "R",
    "add-recipient": "U",
    "derived": "C",
}
#: EventTypeCode (DCM, CID 403) of Security Alert (110113) records.
ALERT_TYPES = {"add-recipient": ("110135", "Object Security Attributes Changed")}
ALERT_DEFAULT = ("110132", "Use of Restricted Function")
MEDIA_URI = ("110037", "URI")


def _event_type(rec: dict[str, Any]) -> tuple[str, str] | None:
    if rec["event"] != "110113":
        return None
    return ALERT_TYPES.get(rec["action"], ALERT_DEFAULT)


def _requestor(rec: dict[str, Any]) -> str:
    """The verified OS user; ``who.hub_user`` is an unverified claim and is not exported."""
    user: str = rec["who"]["os_user"]  # written by context.who(): a string
    return user


def _outcome_text(rec: dict[str, Any]) -> str | None:
    detail = rec.get("detail") or {}
    text = detail.get("reason") or detail.get("error")
    return str(text) if text is not None else None


# ---------------------------------------------------------------- FHIR R4


def _coding(system: str, code: str, display: str | None = None) -> dict[str, str]:
    out = {"system": system, "code": code}
    if display:
        out["display"] = display
    return out


def _purpose_concept(rec: dict[str, Any]) -> dict[str, Any]:
    code = rec["why"]["purpose"]
    coding = _coding(ACT_REASON, code, PURPOSES[code]) if code in PURPOSES else _coding(LOCAL_PURPOSE, code)
    concept: dict[str, Any] = {"coding": [coding]}
    if rec["why"].get("text"):
        concept["text"] = rec["why"]["text"]
    return concept


def fhir_audit_event(rec: dict[str, Any]) -> dict[str, Any]:
    """One record as a FHIR R4 AuditEvent; its id is the record's hash."""
    where, who, study = rec["where"], rec["who"], rec.get("study") or {}
    subtypes = [_coding(LOCAL_ACTION, rec["action"])]
    alert = _event_type(rec)
    if alert:
        subtypes.insert(0, _coding(DCM, *alert))
    purpose = _purpose_concept(rec)
    user: dict[str, Any] = {
        "type": {"coding": [_coding(SECURITY_ROLE, "humanuser", "human user")]},
        "who": {"identifier": {"value": _requestor(rec)}, "display": _requestor(rec)},
        "requestor": True,
        "network": {"address": where["host"], "type": "1"},
        "purposeOfUse": [purpose],
    }
    app = {
        "type": {"coding": [_coding(DCM, "110150", "Application")]},
        "who": {"display": f"medsec-nb {where['version']}"},
        "altId": str(where["pid"]),
        "requestor": False,
        "network": {"address": where["host"], "type": "1"},
    }
    agents = [user, app]
    destination = (rec.get("detail") or {}).get("destination")
    if rec["event"] == "110106" and destination:
        agents.append(
            {
                "type": {"coding": [_coding(DCM, "110152", "Destination Role ID")]},
                "who": {"display": str(destination)},
                "requestor": False,
            }
        )
    entities = []
    if study.get("study_uid") or study.get("container_sha256"):
        what = (
            {"system": "urn:dicom:uid", "value": f"urn:oid:{study['study_uid']}"}
            if study.get("study_uid")
            else {"system": "urn:medsec-nb:container-sha256", "value": study["container_sha256"]}
        )
        details = [
            {"type": k, "valueString": str(study[k])}
            for k in ("container_sha256", "instances")
            if study.get(k) is not None
        ]
        entity: dict[str, Any] = {
            "what": {"identifier": what},
            "type": _coding(ENTITY_TYPE, "2", "System Object"),
            "role": _coding(OBJECT_ROLE, "3", "Report"),
        }
        if details:
            entity["detail"] = details
        entities.append(entity)
    if study.get("patient_pseudonym"):
        entities.append(
            {
                "what": {
                    "identifier": {"system": "urn:medsec-nb:patient-pseudonym", "value": study["patient_pseudonym"]}
                },
                "type": _coding(ENTITY_TYPE, "1", "Person"),
                "role": _coding(OBJECT_ROLE, "1", "Patient"),
            }
        )
    if who.get("key_id"):
        entities.append(
            {
                "what": {"identifier": {"system": "urn:medsec-nb:key-id", "value": who["key_id"]}},
                "type": _coding(ENTITY_TYPE, "2", "System Object"),
                "role": _coding(OBJECT_ROLE, "13", "Security Resource"),
            }
        )
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": rec["hash"],
        "type": _coding(DCM, rec["event"], EVENTS[rec["event"]]),
        "subtype": subtypes,
        "action": ACTION_CODES.get(rec["action"], "E"),
        "recorded": rec["time"],
        "outcome": OUTCOME[rec["outcome"]],
    }
    if _outcome_text(rec):
        event["outcomeDesc"] = _outcome_text(rec)
    event.update(
        {
            "purposeOfEvent": [purpose],
            "agent": agents,
            "source": {
                "site": where["host"],
                "observer": {"display": f"medsec-nb@{where['host']}"},
                "type": [_coding(SOURCE_TYPE, "4", "Application Server")],
            },
            "entity": entities,
        }
    )
    return event


def fhir_bundle(records: Iterable[dict[str, Any]], timestamp: str | None = None) -> dict[str, Any]:
    """A FHIR R4 Bundle of type ``collection`` holding one AuditEvent per record."""
    entries = [
        {"fullUrl": f"urn:uuid:{uuid.UUID(bytes=bytes.fromhex(r['hash'][:32]))}", "resource": fhir_audit_event(r)}
        for r in records
    ]
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "collection"}
    if timestamp:
        bundle["timestamp"] = timestamp
    bundle["entry"] = entries
    return bundle


# ---------------------------------------------------------------- DICOM PS3.15 A.5


def _code(parent: ET.Element, tag: str, code: str, system: str, text: str) -> ET.Element:
    return ET.SubElement(parent, tag, {"csd-code": code, "codeSystemName": system, "originalText": text})


def _b64(value: Any) -> str:
    return base64.b64encode(str(value).encode("utf-8")).decode("ascii")


def dicom_audit_message(rec: dict[str, Any]) -> ET.Element:
    """One record as a DICOM PS3.15 A.5.1 ``AuditMessage`` element."""
    where, who, study = rec["where"], rec["who"], rec.get("study") or {}
    msg = ET.Element("AuditMessage")
    msg.append(ET.Comment(f" medsec-nb audit record {rec['seq']}, hash {rec['hash']} "))
    ev = ET.SubElement(
        msg,
        "EventIdentification",
        {
            "EventActionCode": ACTION_CODES.get(rec["action"], "E"),
            "EventDateTime": rec["time"],
            "EventOutcomeIndicator": OUTCOME[rec["outcome"]],
        },
    )
    _code(ev, "EventID", rec["event"], "DCM", EVENTS[rec["event"]])
    alert = _event_type(rec)
    if alert:
        _code(ev, "EventTypeCode", alert[0], "DCM", alert[1])
    _code(ev, "EventTypeCode", rec["action"], "medsec-nb", rec["action"])
    if _outcome_text(rec):
        ET.SubElement(ev, "EventOutcomeDescription").text = _outcome_text(rec)
    purpose = rec["why"]["purpose"]
    _code(
        ev,
        "PurposeOfUse",
        purpose,
        *(
            (ACT_REASON_OID, PURPOSES[purpose])
            if purpose in PURPOSES
            else ("medsec-nb", rec["why"].get("text") or purpose)
        ),
    )
    user = {
        "UserID": _requestor(rec),
        "UserIsRequestor": "true",
        "NetworkAccessPointID": where["host"],
        "NetworkAccessPointTypeCode": "1",
    }
    ET.SubElement(msg, "ActiveParticipant", user)
    app = ET.SubElement(
        msg,
        "ActiveParticipant",
        {
            "UserID": "medsec-nb",
            "AlternativeUserID": str(where["pid"]),
            "UserIsRequestor": "false",
            "NetworkAccessPointID": where["host"],
            "NetworkAccessPointTypeCode": "1",
        },
    )
    _code(app, "RoleIDCode", "110150", "DCM", "Application")
    destination = (rec.get("detail") or {}).get("destination")
    if rec["event"] == "110106" and destination:
        dest = ET.SubElement(msg, "ActiveParticipant", {"UserID": str(destination), "UserIsRequestor": "false"})
        _code(dest, "RoleIDCode", "110152", "DCM", "Destination Role ID")
        _code(ET.SubElement(dest, "MediaIdentifier"), "MediaType", MEDIA_URI[0], "DCM", MEDIA_URI[1])
    source = ET.SubElement(msg, "AuditSourceIdentification", {"AuditSourceID": f"medsec-nb@{where['host']}"})
    ET.SubElement(source, "AuditSourceTypeCode", {"csd-code": "4"})
    if study.get("study_uid") or study.get("container_sha256"):
        oid, idcode = (
            (study["study_uid"], ("110180", "DCM", "Study Instance UID"))
            if study.get("study_uid")
            else (study["container_sha256"], ("container-sha256", "medsec-nb", "Container SHA-256"))
        )
        obj = ET.SubElement(
            msg,
            "ParticipantObjectIdentification",
            {"ParticipantObjectID": oid, "ParticipantObjectTypeCode": "2", "ParticipantObjectTypeCodeRole": "3"},
        )
        _code(obj, "ParticipantObjectIDTypeCode", *idcode)
        if study.get("study_uid") and study.get("container_sha256"):
            ET.SubElement(
                obj, "ParticipantObjectDetail", {"type": "ContainerSHA256", "value": _b64(study["container_sha256"])}
            )
        desc = ET.SubElement(obj, "ParticipantObjectDescription")
        if study.get("instances") is not None:
            ET.SubElement(desc, "SOPClass", {"NumberOfInstances": str(study["instances"])})
        ET.SubElement(desc, "Encrypted").text = "true"
    if study.get("patient_pseudonym"):
        pat = ET.SubElement(
            msg,
            "ParticipantObjectIdentification",
            {
                "ParticipantObjectID": study["patient_pseudonym"],
                "ParticipantObjectTypeCode": "1",
                "ParticipantObjectTypeCodeRole": "1",
            },
        )
        _code(pat, "ParticipantObjectIDTypeCode", "2", "RFC-3881", "Patient Number")
    if who.get("key_id"):
        key = ET.SubElement(
            msg,
            "ParticipantObjectIdentification",
            {
                "ParticipantObjectID": who["key_id"],
                "ParticipantObjectTypeCode": "2",
                "ParticipantObjectTypeCodeRole": "13",
            },
        )
        _code(key, "ParticipantObjectIDTypeCode", "key-id", "medsec-nb", "Key identifier")
    return msg


def dicom_xml(records: Iterable[dict[str, Any]]) -> bytes:
    """UTF-8 XML: an ``AuditMessages`` wrapper (ours, not DICOM's) around one PS3.15
    ``AuditMessage`` per record."""
    root = ET.Element("AuditMessages")
    root.extend(dicom_audit_message(r) for r in records)
    ET.indent(root)
    xml: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)  # bytes for any encoding but "unicode"
    return xml + b"\n"
