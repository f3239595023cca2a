"""The departments' workbench (部门工作台) and the supervisors' console (督办台): server-rendered
pages in Chinese over the ingest API's own parts, mounted into the API app by `workbench.app`.
"""
