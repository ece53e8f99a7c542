"""Results a hospital can file: DICOM Structured Reports, FHIR R4 Bundles, and DICOMweb.

Plain objects, no Flask and no torch: the inference service, the DICOM node and the tests
build reports with the same functions (`sr.build_sr`, `fhir.build_bundle`).
"""
