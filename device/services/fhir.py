"""The FHIR R4 export of a signed report: a DiagnosticReport with its Observations contained.

The report's figures come from its summary (a signed report's frozen snapshot,
see ``device/services/reporting.py``), and so do the subject and the specimen: the
patient and sample as they were signed; a later change of the patient record is one
``record-changed-after-signing`` extension line, never a changed subject. Every model that produced the captures'
results is named twice: one ``urn:allscope:fhir:model`` extension line each (name,
variant, version, sha256, frames, threshold, validation figures), and a contained
``Device`` identified by the model file's sha256. When one model produced every
result, the Observations reference its Device. Reports signed before the captures
recorded their model name the one model their snapshot froze.

The differential (one Observation per white cell class, see ``fhir_differential.py``) and exactly what was
reviewed (labelled by whom, accepted as the AI labelled them, not reviewed) are in the Observations' method and
a ``urn:allscope:fhir:review`` extension; a signature below the minimum white cell count carries its override
reason (``urn:allscope:fhir:count-override``, also a note of the ``white-cells-counted`` Observation).
"""

from __future__ import annotations

import datetime as dt

from device.core.analysis import DISCLAIMER
from device.services.differential import override_line, summary_differential, summary_review
from device.services.fhir_differential import count_component, differential_observations, method_text, percentage_value
from device.services.report_model import model_line
from device.services.reporting import NotExportable, fhir_status, report_models, report_summary, signed_records
from device.store.records import Report

FHIR_SYSTEM = "urn:allscope"  # prefix of the device's own identifier systems and extension URLs
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
REPORT_CODE = ("18314-5", "Morphology [Interpretation] in Blood Narrative",
               "Peripheral blood smear: white cell morphology, blast screen (decision-supported)")
BLAST_PCT_CODE = ("26446-5", "Blasts/100 leukocytes in Blood", "Blasts / 100 white cells counted")


def _fhir_instant(value: dt.datetime | None) -> str | None:
    """Stored datetimes are naive UTC; FHIR wants the zone when a time is given."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return value.isoformat(timespec="seconds")


def _stored_time(value: str | None) -> dt.datetime | None:
    """A stored naive-UTC time as the snapshot keeps it (ISO text)."""
    return dt.datetime.fromisoformat(value) if value else None


def _code(system: str, code: str, display: str, text: str) -> dict:
    return {"coding": [{"system": system, "code": code, "display": display}], "text": text}


def fhir_diagnostic_report(report: Report, signer_name: str = "") -> dict:
    """A FHIR R4 DiagnosticReport (JSON dict) with its Observations contained."""
    if report.status not in ("signed", "amended"):
        raise NotExportable("only a signed report can be exported: this one is still a draft")
    patient, sample, notices = signed_records(report)  # the patient and sample as signed
    summary = report_summary(report)
    models = report_models(summary)
    status = fhir_status(report)
    subject = {"identifier": {"system": f"{FHIR_SYSTEM}:patient-identifier", "value": patient["identifier"]},
               "display": patient["name"]}
    effective = _fhir_instant(_stored_time(sample.get("collected_at") or sample.get("created_at")))
    method = {"text": method_text(summary)}

    devices = [_model_device(f"model-{i}", model) for i, model in enumerate(models, start=1)
               if model.get("recorded") is not False and model.get("sha256")]
    # Every observation is the sample's; when one model produced all of it, the observations name it.
    single = ({"device": {"reference": f"#{devices[0]['id']}"}}
              if len(devices) == 1 and len(models) == 1 else {})

    def observation(obs_id: str, code: dict, value: dict) -> dict:
        return {"resourceType": "Observation", "id": obs_id, "status": status, "code": code,
                "subject": subject, "effectiveDateTime": effective, "method": method, **single, **value}

    white_cells = summary_differential(summary)["white_cells"]
    override = override_line(report.override_reason, summary)
    contained = [
        observation("blast-percentage", _code(LOINC, *BLAST_PCT_CODE),
                    {**percentage_value(summary.get("blast_percentage")),
                     "component": [count_component(summary.get("blast_count") or 0)]}),
        observation("white-cells-counted",
                    _code(f"{FHIR_SYSTEM}:observation", "white-cells-counted", "White cells counted",
                          "White cells counted (every cell but those cut by the frame edge and those labelled "
                          "unusable)"),
                    {"valueInteger": int(white_cells), **({"note": [{"text": override}]} if override else {})}),
        observation("blasts-counted",
                    _code(f"{FHIR_SYSTEM}:observation", "blasts-counted", "Blasts counted", "Blasts counted"),
                    {"valueInteger": int(summary.get("blast_count") or 0)}),
        *differential_observations(summary, observation),
    ]
    signer = {"identifier": {"system": f"{FHIR_SYSTEM}:user", "value": report.signed_by or ""},
              "display": signer_name or report.signed_by or ""}
    extensions = [
        {"url": f"{FHIR_SYSTEM}:fhir:decision-support", "valueString": DISCLAIMER},
        *({"url": f"{FHIR_SYSTEM}:fhir:model", "valueString": model_line(model)} for model in models),
        *({"url": f"{FHIR_SYSTEM}:fhir:model-device", "valueReference": {"reference": f"#{device['id']}"}}
          for device in devices),
        {"url": f"{FHIR_SYSTEM}:fhir:report-version", "valueInteger": report.version},
        {"url": f"{FHIR_SYSTEM}:fhir:review", "valueString": summary_review(summary)["statement"]},
        *([{"url": f"{FHIR_SYSTEM}:fhir:count-override", "valueString": override}] if override else []),
        *({"url": f"{FHIR_SYSTEM}:fhir:record-changed-after-signing", "valueString": notice} for notice in notices),
    ]
    if report.supersedes_id:
        extensions.append({"url": f"{FHIR_SYSTEM}:fhir:amendment",
                           "valueString": f"Amends version {report.supersedes.version}: {report.amendment_reason}"})
    if report.status == "amended":
        newer = Report.get_or_none(Report.supersedes == report)
        extensions.append({"url": f"{FHIR_SYSTEM}:fhir:superseded-by",
                           "valueString": f"Superseded by version {newer.version}" if newer else "Superseded"})
    resource = {
        "resourceType": "DiagnosticReport",
        "id": f"allscope-report-{report.id}",
        "extension": extensions,
        "identifier": [{"system": f"{FHIR_SYSTEM}:report", "value": f"sample-{sample['id']}-v{report.version}"}],
        "status": status,
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "HM",
                                  "display": "Hematology"}]}],
        "code": _code(LOINC, *REPORT_CODE),
        "subject": subject,
        "effectiveDateTime": effective,
        "issued": _fhir_instant(report.signed_at),
        "performer": [signer],
        "resultsInterpreter": [signer],
        "specimen": [{"display": f"{sample['specimen_type']}, {sample['stain']} (sample {sample['id']})"}],
        "contained": contained + devices,
        "result": [{"reference": f"#{obs['id']}"} for obs in contained],
        "conclusion": report.conclusion,
    }
    return resource


def _model_device(device_id: str, model: dict) -> dict:
    """A contained Device naming one model that produced the report's results (by its file's sha256)."""
    device = {
        "resourceType": "Device", "id": device_id,
        "identifier": [{"system": f"{FHIR_SYSTEM}:model-sha256", "value": model["sha256"]}],
        "deviceName": [{"name": str(model.get("name") or "unnamed model"), "type": "model-name"}],
        "type": {"text": "Cell classification model (TFLite), decision support"},
        "note": [{"text": model_line(model)}],
    }
    if model.get("version"):
        device["version"] = [{"value": str(model["version"])}]
    return device
