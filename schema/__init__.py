"""Ordered SQL migrations (``V0001__name.sql`` …) and the migrator that applies and checks them.

Entry points: ``aegis.schema.migrator.migrate(dsn)`` / ``migrate_sync(dsn)``; see that module
for the rules a migration file must follow (unqualified names, never edited once applied).
"""
