"""The workspace: the content-addressed store, the SQLite manifest (schema, records, migrations), decisions,
export, uploads and safe dataset extraction, file safety."""
