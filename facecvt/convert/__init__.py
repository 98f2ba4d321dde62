"""One module per target (listed in core/targets.py), each with `write(frozen, tmp_path, siblings, **options)`.

`facecvt.convert.base.write_artifact` calls them all the same way; the export workflow
(workflows/export_artifact.py) wraps that in the atomic write and the load check.
"""
