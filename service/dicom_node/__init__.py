"""The DICOM node: a Storage SCP and STOW-RS endpoint that queues series durably, has them
classified by the inference service, and sends the structured reports back to the PACS.

`scantune serve dicom` runs `service.dicom_node.app:create_app()` under gunicorn in one
worker: the app serves STOW-RS, /healthz, /readyz and /metrics, and starts the SCP and the
queue worker beside it.
"""
