"""Small operational jobs shipped in the router image (stdlib only; never Pulumi or the IaC).

``python -m fleet_ops.acr_credentials``: keeps the AMD driver push Secret on AKS valid
(components/driver_credentials.py runs it as a Job during ``pulumi up`` and as a CronJob after).
"""
